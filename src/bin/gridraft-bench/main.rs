//! `gridraft-bench`: a load generator for any Selenium Grid SessionMap (gridraft, Java's
//! `LocalSessionMap` or `RedisBackedSessionMap` server) and, for comparison, etcd's JSON gateway.
//!
//! Each worker owns one keep-alive HTTP/1.1 connection per target URL and sends one request at a
//! time on it (closed loop at a fixed concurrency, or open loop at a target rate with latency
//! measured from the intended send time, so a stall is not hidden). With several URLs every
//! request goes to the next one, so a session added through one member is read through the
//! others: a Grid behind a load balancer does the same. Every answer is checked: a wrong status,
//! a missing session or another session's (or an older add's) body is an error and is reported.
//!
//! The client is a minimal HTTP/1.1 implementation on raw sockets (content-length and chunked
//! bodies) because on a small machine the client shares the cores with the servers it measures:
//! every microsecond it spends is taken from them.
//!
//! `--mode ceiling-server` is the other side: a constant-answer server giving gridraft's full-GET
//! answer with no work behind it, the machine's ceiling for that workload (`ceiling.rs`).

mod ceiling;
mod doc;
mod http;
mod ops;
mod server_cpu;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser, ValueEnum};
use serde_json::json;

use doc::{preload_token, rand_u64, session_doc, SessionDoc};
use http::Conn;
use ops::{perform, Failure, Op, OPS};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Per session: one add, `--gets` full GETs, one `/uri`, one DELETE (what a Grid does).
    Mix,
    /// Lookups of `--population` pre-loaded sessions (`--read-kind`).
    Read,
    /// Adds only, cycling over `--population` ids (a re-add replaces, so memory stays bounded).
    Write,
    /// Load `--population` live sessions as fast as possible, then exit.
    Preload,
    /// Add and remove `--population` new sessions as fast as possible, then exit.
    Churn,
    /// Not a load generator: answer full GETs on `--listen` with gridraft's answer for a
    /// pre-loaded session (the asked id spliced in) and nothing else, until killed.
    CeilingServer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ReadKind {
    /// `GET /se/grid/session/{id}`: the whole session, as the router fetches it per command.
    Full,
    /// `GET /se/grid/session/{id}/uri`.
    Uri,
}

#[derive(Debug, Parser)]
#[command(
    name = "gridraft-bench",
    about = "Load generator for Selenium Grid session maps"
)]
struct Args {
    /// Target base URL(s), comma separated; requests rotate over them (every mode but
    /// `ceiling-server`).
    #[arg(long, value_delimiter = ',')]
    url: Vec<String>,
    /// `ceiling-server` only: addresses to answer on, comma separated; each gets its own runtime.
    #[arg(long, value_delimiter = ',')]
    listen: Vec<std::net::SocketAddr>,
    /// Drive etcd's v3 JSON gateway (`/v3/kv/put`, `/v3/kv/range`, linearizable) instead.
    #[arg(long)]
    etcd: bool,
    #[arg(long, value_enum, default_value = "mix")]
    mode: Mode,
    #[arg(long, value_enum, default_value = "full")]
    read_kind: ReadKind,
    /// Requests in flight (one per worker).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Target request rate over all workers (open loop); 0 = as fast as answers come (closed loop).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Measured seconds, after the warm-up.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds run (and verified) but not measured.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Full GETs per session in `mix` mode.
    #[arg(long, default_value_t = 20)]
    gets: usize,
    /// Sessions loaded before `read` (and ids cycled by `write`, loaded by `preload`).
    #[arg(long, default_value_t = 1000)]
    population: u64,
    /// `read`: the population was already loaded (by `--mode preload` with the same `--id-prefix`).
    #[arg(long)]
    skip_preload: bool,
    /// `preload`: the first `N` sessions are already loaded; load the rest of `--population`.
    #[arg(long, default_value_t = 0)]
    skip_to: u64,
    /// Prefix of the ids of pre-loaded sessions; random when not given.
    #[arg(long)]
    id_prefix: Option<String>,
    /// Approximate size of a session's capabilities in bytes (real ones are 2–10 KiB).
    #[arg(long, default_value_t = 3000)]
    caps_bytes: usize,
    /// Client runtime threads (default: the number of cores); `ceiling-server`: threads per
    /// listen address (default 1, a current-thread runtime on one OS thread).
    #[arg(long)]
    threads: Option<usize>,
    /// Name of the system under test, copied into the report.
    #[arg(long, default_value = "")]
    label: String,
    /// Write the report as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// The CA (PEM) that signed the servers' certificates, for `https://` URLs.
    #[arg(long)]
    ca_file: Option<std::path::PathBuf>,
    /// Processes of the system under test, comma separated: their CPU (user + system, all
    /// threads) during the measured seconds is reported, in total and per request.
    #[arg(long, value_delimiter = ',')]
    server_pids: Vec<u32>,
}

fn main() {
    let args = Args::parse();
    // The server mode takes `--listen`, every other mode `--url`.
    let serving = args.mode == Mode::CeilingServer;
    let wrong = match (serving, args.url.is_empty(), args.listen.is_empty()) {
        (true, _, true) => Some((ErrorKind::MissingRequiredArgument, "--listen is required")),
        (true, false, _) => Some((
            ErrorKind::ArgumentConflict,
            "--url is not for --mode ceiling-server",
        )),
        (false, true, _) => Some((ErrorKind::MissingRequiredArgument, "--url is required")),
        (false, _, false) => Some((
            ErrorKind::ArgumentConflict,
            "--listen is for --mode ceiling-server only",
        )),
        _ => None,
    };
    if let Some((kind, message)) = wrong {
        Args::command().error(kind, message).exit();
    }
    if serving {
        let served = ceiling::serve(&args.listen, args.threads.unwrap_or(1), args.caps_bytes);
        if let Err(e) = served {
            eprintln!("gridraft-bench: {e}");
            std::process::exit(1);
        }
        return;
    }
    if let Some(ca) = &args.ca_file {
        match gridraft::tls::client_config(ca, None) {
            Ok(config) => {
                let _ = http::TLS.set(tokio_rustls::TlsConnector::from(std::sync::Arc::new(
                    config,
                )));
            }
            Err(e) => {
                eprintln!("gridraft-bench: --ca-file: {e}");
                std::process::exit(1);
            }
        }
    }
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("build the client runtime");
    match rt.block_on(run(args)) {
        Ok(ok) => std::process::exit(if ok { 0 } else { 2 }),
        Err(e) => {
            eprintln!("gridraft-bench: {e}");
            std::process::exit(1);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Workers and the report.

struct Shared {
    args: Args,
    prefix: String,
    start: Instant,
    warm_end: Instant,
    end: Instant,
    stop: AtomicBool,
    next_seq: AtomicU64,
    /// `read` mode: each pre-loaded session's document, rendered once (see [`READ_DOCS_MAX`]);
    /// empty otherwise.
    read_docs: Vec<SessionDoc>,
}

/// Up to this population, `read` mode renders every pre-loaded session's document once before
/// the clock starts, instead of once per read: rendering a whole session body to know what an
/// answer must contain cost the load generator a third of its time, on the cores it shares with
/// the servers. Larger populations (the scale runs) render per read, as their memory would.
const READ_DOCS_MAX: u64 = 10_000;

#[derive(Default)]
struct Tally {
    lat: [Vec<u32>; 4],
    errors: [u64; 4],
    examples: Vec<String>,
    io: u64,
    status: u64,
    missing: u64,
    wrong: u64,
    sessions: u64,
}

impl Tally {
    fn fail(&mut self, f: Failure) {
        let (counter, msg) = match f {
            Failure::Io(m) => (&mut self.io, m),
            Failure::Status(m) => (&mut self.status, m),
            Failure::Missing(m) => (&mut self.missing, m),
            Failure::Wrong(m) => (&mut self.wrong, m),
        };
        *counter += 1;
        if self.examples.len() < 5 {
            self.examples.push(msg);
        }
    }

    fn merge(&mut self, o: Tally) {
        for i in 0..4 {
            self.lat[i].extend_from_slice(&o.lat[i]);
            self.errors[i] += o.errors[i];
        }
        self.io += o.io;
        self.status += o.status;
        self.missing += o.missing;
        self.wrong += o.wrong;
        self.sessions += o.sessions;
        for e in o.examples {
            if self.examples.len() < 10 {
                self.examples.push(e);
            }
        }
    }
}

struct Worker {
    shared: Arc<Shared>,
    conns: Vec<Conn>,
    rr: usize,
    tally: Tally,
    /// Open loop: when the next request is due.
    next_due: Option<Instant>,
    interval: Duration,
}

impl Worker {
    async fn op(&mut self, op: Op, doc: &SessionDoc) -> bool {
        let sent = match self.next_due {
            Some(due) => {
                let now = Instant::now();
                if due > now {
                    tokio::time::sleep_until(due.into()).await;
                }
                self.next_due = Some(due + self.interval);
                due
            }
            None => Instant::now(),
        };
        let n = self.conns.len();
        let conn = &mut self.conns[self.rr % n];
        self.rr = self.rr.wrapping_add(1);
        let result = perform(conn, self.shared.args.etcd, op, doc).await;
        let done = Instant::now();
        if sent >= self.shared.warm_end && done <= self.shared.end {
            let us = done.duration_since(sent).as_nanos().div_ceil(1000);
            self.tally.lat[op as usize].push(u32::try_from(us).unwrap_or(u32::MAX));
            if let Err(f) = result {
                self.tally.errors[op as usize] += 1;
                self.tally.fail(f);
            }
        } else if let Err(f) = result {
            // Failures during the warm-up are reported too, never hidden.
            self.tally.errors[op as usize] += 1;
            self.tally.fail(f);
        }
        let over = done >= self.shared.end || self.shared.stop.load(Ordering::Relaxed);
        !over
    }

    async fn run(mut self) -> Tally {
        let args = &self.shared.args;
        let (mode, gets, etcd, caps, pop) = (
            args.mode,
            args.gets,
            args.etcd,
            args.caps_bytes,
            args.population,
        );
        let read_op = if args.read_kind == ReadKind::Full {
            Op::Get
        } else {
            Op::Uri
        };
        loop {
            let seq = self.shared.next_seq.fetch_add(1, Ordering::Relaxed);
            match mode {
                Mode::Mix => {
                    let id = format!("{}-m{seq:x}", self.shared.prefix);
                    let token = format!("tok-{id}-{:x}", rand_u64());
                    let doc = session_doc(id, seq, token, caps, etcd);
                    if !self.op(Op::Add, &doc).await {
                        return self.tally;
                    }
                    for _ in 0..gets {
                        if !self.op(Op::Get, &doc).await {
                            return self.tally;
                        }
                    }
                    if !self.op(Op::Uri, &doc).await || !self.op(Op::Delete, &doc).await {
                        return self.tally;
                    }
                    self.tally.sessions += 1;
                }
                Mode::Read => {
                    let i = rand_u64() % pop;
                    let shared = self.shared.clone();
                    let rendered;
                    let doc = match shared.read_docs.get(i as usize) {
                        Some(doc) => doc,
                        None => {
                            rendered = preload_doc(&shared, i);
                            &rendered
                        }
                    };
                    if !self.op(read_op, doc).await {
                        return self.tally;
                    }
                }
                Mode::Write => {
                    let doc = preload_doc(&self.shared, seq % pop);
                    if !self.op(Op::Add, &doc).await {
                        return self.tally;
                    }
                }
                Mode::Preload | Mode::Churn => unreachable!("handled by preload()"),
                Mode::CeilingServer => unreachable!("handled by main()"),
            }
        }
    }
}

/// The `i`-th pre-loaded session. Its token is derived from `i`, so a reader can check an answer
/// without having loaded the session itself.
fn preload_doc(shared: &Shared, i: u64) -> SessionDoc {
    let id = format!("{}-p{i}", shared.prefix);
    let token = preload_token(&id);
    session_doc(id, i, token, shared.args.caps_bytes, shared.args.etcd)
}

async fn preload(shared: &Arc<Shared>, urls: &[String]) -> Result<(Tally, f64), String> {
    let started = Instant::now();
    let churn = shared.args.mode == Mode::Churn;
    let next = Arc::new(AtomicU64::new(if churn { 0 } else { shared.args.skip_to }));
    let total = shared.args.population;
    let mut tasks = Vec::new();
    for w in 0..shared.args.concurrency {
        let shared = shared.clone();
        let next = next.clone();
        let url = urls[w % urls.len()].clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::new(&url)?;
            let mut tally = Tally::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return Ok::<_, String>(tally);
                }
                let doc = if churn {
                    let id = format!("{}-c{i}", shared.prefix);
                    let token = format!("tok-{id}");
                    session_doc(id, i, token, shared.args.caps_bytes, shared.args.etcd)
                } else {
                    preload_doc(&shared, i)
                };
                if churn {
                    if let Err(f) = perform(&mut conn, shared.args.etcd, Op::Add, &doc).await {
                        tally.errors[0] += 1;
                        tally.fail(f);
                    }
                    if let Err(f) = perform(&mut conn, shared.args.etcd, Op::Delete, &doc).await {
                        tally.errors[3] += 1;
                        tally.fail(f);
                    }
                    continue;
                }
                if let Err(f) = perform(&mut conn, shared.args.etcd, Op::Add, &doc).await {
                    tally.errors[0] += 1;
                    tally.fail(f);
                }
                if i > 0 && i.is_multiple_of(100_000) {
                    eprintln!(
                        "preload: {i} sessions, {:.0}/s",
                        i as f64 / started.elapsed().as_secs_f64()
                    );
                }
            }
        }));
    }
    let mut tally = Tally::default();
    for t in tasks {
        tally.merge(t.await.map_err(|e| e.to_string())??);
    }
    Ok((tally, started.elapsed().as_secs_f64()))
}

async fn run(args: Args) -> Result<bool, String> {
    let prefix = args
        .id_prefix
        .clone()
        .unwrap_or_else(|| format!("{:016x}", rand_u64()));
    let urls = args.url.clone();
    let now = Instant::now();
    let shared = Arc::new(Shared {
        prefix,
        start: now,
        warm_end: now,
        end: now,
        stop: AtomicBool::new(false),
        next_seq: AtomicU64::new(0),
        read_docs: Vec::new(),
        args,
    });
    let needs_preload = matches!(shared.args.mode, Mode::Preload | Mode::Churn)
        || (matches!(shared.args.mode, Mode::Read) && !shared.args.skip_preload);
    let mut preload_report = serde_json::Value::Null;
    if needs_preload {
        let (tally, secs) = preload(&shared, &urls).await?;
        let errors = tally.io + tally.status + tally.missing + tally.wrong;
        eprintln!(
            "preload: {} sessions in {secs:.2}s ({:.0}/s), {errors} errors",
            shared.args.population,
            shared.args.population as f64 / secs
        );
        for e in &tally.examples {
            eprintln!("  error: {e}");
        }
        preload_report = json!({"sessions": shared.args.population, "seconds": secs,
            "rate": shared.args.population as f64 / secs, "errors": errors});
        if matches!(shared.args.mode, Mode::Preload | Mode::Churn) {
            let mode = format!("{:?}", shared.args.mode).to_lowercase();
            let report =
                json!({"label": shared.args.label, "mode": mode, "preload": preload_report});
            println!("{}", serde_json::to_string_pretty(&report).expect("json"));
            if let Some(path) = &shared.args.json {
                std::fs::write(path, serde_json::to_vec_pretty(&report).expect("json"))
                    .map_err(|e| e.to_string())?;
            }
            return Ok(errors == 0);
        }
    }
    let read_docs = if shared.args.mode == Mode::Read && shared.args.population <= READ_DOCS_MAX {
        (0..shared.args.population)
            .map(|i| preload_doc(&shared, i))
            .collect()
    } else {
        Vec::new()
    };
    // Re-anchor the clock after the preload.
    let start = Instant::now();
    let shared = {
        let mut s = Arc::try_unwrap(shared).map_err(|_| "preload tasks still hold the state")?;
        s.read_docs = read_docs;
        s.start = start;
        s.warm_end = start + Duration::from_secs_f64(s.args.warmup);
        s.end = s.warm_end + Duration::from_secs_f64(s.args.duration);
        Arc::new(s)
    };
    let conc = shared.args.concurrency;
    let interval = if shared.args.rate > 0.0 {
        Duration::from_secs_f64(conc as f64 / shared.args.rate)
    } else {
        Duration::ZERO
    };
    let cost = tokio::spawn(server_cpu::measure(
        shared.args.server_pids.clone(),
        server_cpu::ticks_per_second(),
        shared.warm_end,
        shared.end,
    ));
    let mut tasks = Vec::new();
    for w in 0..conc {
        let conns = (0..urls.len())
            .map(|u| Conn::new(&urls[(w + u) % urls.len()]))
            .collect::<Result<Vec<_>, _>>()?;
        let worker = Worker {
            shared: shared.clone(),
            conns,
            rr: 0,
            tally: Tally::default(),
            // Spread the workers' first sends over one interval.
            next_due: (shared.args.rate > 0.0)
                .then(|| start + interval.mul_f64(w as f64 / conc as f64)),
            interval,
        };
        tasks.push(tokio::spawn(worker.run()));
    }
    let mut tally = Tally::default();
    for t in tasks {
        tally.merge(t.await.map_err(|e| e.to_string())?);
    }
    let cost = cost.await.map_err(|e| e.to_string())?;
    let measured = shared.args.duration;
    report(&shared, tally, measured, preload_report, cost)
}

fn pct(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    f64::from(sorted[rank.clamp(1, sorted.len()) - 1]) / 1000.0
}

fn summary(mut lat: Vec<u32>, secs: f64) -> serde_json::Value {
    lat.sort_unstable();
    let n = lat.len();
    let mean = if n == 0 {
        0.0
    } else {
        lat.iter().map(|&v| f64::from(v)).sum::<f64>() / n as f64 / 1000.0
    };
    json!({
        "requests": n,
        "rps": n as f64 / secs,
        "p50_ms": pct(&lat, 50.0),
        "p99_ms": pct(&lat, 99.0),
        "p999_ms": pct(&lat, 99.9),
        "mean_ms": mean,
        "max_ms": lat.last().map_or(0.0, |&v| f64::from(v) / 1000.0),
    })
}

fn report(
    shared: &Shared,
    tally: Tally,
    secs: f64,
    preload: serde_json::Value,
    cost: server_cpu::Cost,
) -> Result<bool, String> {
    let args = &shared.args;
    let all: Vec<u32> = tally.lat.iter().flatten().copied().collect();
    let mut ops = serde_json::Map::new();
    for op in OPS {
        let lat = tally.lat[op as usize].clone();
        if !lat.is_empty() {
            let mut s = summary(lat, secs);
            s["errors"] = json!(tally.errors[op as usize]);
            ops.insert(op.name().into(), s);
        }
    }
    let errors = tally.io + tally.status + tally.missing + tally.wrong;
    let requests = all.len();
    let per_request = |cpu: f64| {
        let us = if requests == 0 {
            0.0
        } else {
            cpu / requests as f64 * 1e6
        };
        (cpu, us)
    };
    let cpu_per_request = cost.server.map(per_request);
    let client_per_request = cost.client.map(per_request);
    let report = json!({
        "label": args.label,
        "target": if args.etcd { "etcd" } else { "sessionmap" },
        "urls": args.url,
        "mode": format!("{:?}", args.mode).to_lowercase(),
        "read_kind": format!("{:?}", args.read_kind).to_lowercase(),
        "concurrency": args.concurrency,
        "rate": args.rate,
        "gets_per_session": args.gets,
        "population": args.population,
        "caps_bytes": args.caps_bytes,
        "seconds": secs,
        "total": summary(all, secs),
        "ops": ops,
        "sessions_per_s": tally.sessions as f64 / secs,
        "errors": {"total": errors, "io": tally.io, "status": tally.status, "missing": tally.missing, "wrong": tally.wrong,
                   "examples": tally.examples},
        "preload": preload,
        "server_cpu": cpu_per_request.map(|(cpu, us)| {
            json!({"seconds": cpu, "pids": args.server_pids, "us_per_request": us})
        }),
        "client_cpu": client_per_request.map(|(cpu, us)| json!({"seconds": cpu, "us_per_request": us})),
        "machine": cost.machine.map(|m| {
            json!({"cores_busy": m.busy, "cores_idle": m.idle, "cores_stolen": m.stolen})
        }),
    });
    let t = &report["total"];
    println!(
        "{:<24} {:>10.0} req/s  p50 {:>7.3} ms  p99 {:>7.3} ms  p99.9 {:>7.3} ms  errors {}",
        if args.label.is_empty() {
            "total"
        } else {
            &args.label
        },
        t["rps"].as_f64().unwrap_or(0.0),
        t["p50_ms"].as_f64().unwrap_or(0.0),
        t["p99_ms"].as_f64().unwrap_or(0.0),
        t["p999_ms"].as_f64().unwrap_or(0.0),
        errors
    );
    if let Some((cpu, us)) = cpu_per_request {
        println!("  server CPU {cpu:.2} s, {us:.1} us per request");
    }
    if let (Some(m), Some((_, us))) = (cost.machine, client_per_request) {
        println!(
            "  cores: {:.2} busy, {:.2} idle, {:.2} stolen; load generator {us:.1} us per request",
            m.busy, m.idle, m.stolen
        );
    }
    for (name, s) in &ops {
        println!(
            "  {name:<22} {:>10.0} req/s  p50 {:>7.3} ms  p99 {:>7.3} ms  p99.9 {:>7.3} ms  errors {}",
            s["rps"].as_f64().unwrap_or(0.0),
            s["p50_ms"].as_f64().unwrap_or(0.0),
            s["p99_ms"].as_f64().unwrap_or(0.0),
            s["p999_ms"].as_f64().unwrap_or(0.0),
            s["errors"]
        );
    }
    for e in &tally.examples {
        println!("  error: {e}");
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report).expect("json"))
            .map_err(|e| e.to_string())?;
    }
    let _ = shared.start;
    Ok(errors == 0)
}
