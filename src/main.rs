//! The `gridraft` binary: parse flags, load settings, run.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use gridraft::cli::{Cli, ClusterAction, ClusterArgs, Command, ProbeArgs, ServeArgs};
use gridraft::peer::{AddMember, RemoveMember};
use gridraft::{member, telemetry};

/// jemalloc rather than glibc's allocator: on the write path glibc's `malloc` and `free` took a
/// fifth of the CPU (log batches of ~100 KiB and session bodies of a few KB coming and going;
/// profile in docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The serve flags of a bare `gridraft`: none on the command line, so only the environment.
fn serve_args_from_env() -> ServeArgs {
    match Cli::parse_from(["gridraft", "serve"]).command {
        Some(Command::Serve(args)) => args,
        _ => ServeArgs::default(),
    }
}

fn main() -> ExitCode {
    use gridraft::backup::command::{backup_command, restore_command};
    use gridraft::mirror::migrate::{export_command, import_command};
    let cli = Cli::parse();
    let result = match cli.command {
        // Bare `gridraft` is `gridraft serve`: the same `GRIDRAFT_*` variables apply.
        None => serve(serve_args_from_env()),
        Some(Command::Serve(args)) => serve(args),
        Some(Command::PrintConfig(args)) => print_config(args),
        Some(Command::Cluster(args)) => block_on(cluster(args)),
        Some(Command::Import(args)) => block_on(async { Ok(import_command(&args).await?) }),
        Some(Command::Export(args)) => block_on(async { Ok(export_command(&args).await?) }),
        Some(Command::Backup(args)) => block_on(async { Ok(backup_command(&args).await?) }),
        Some(Command::Restore(args)) => restore_command(&args).map_err(anyhow::Error::from),
        Some(Command::Probe(args)) => block_on(probe(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gridraft: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The async runtime: `workers` threads, or one per CPU core when 0.
fn runtime(workers: usize) -> Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if workers > 0 {
        builder.worker_threads(workers);
    }
    builder
        .enable_all()
        .build()
        .context("start the async runtime")
}

/// Runs a command other than `serve` on a runtime of the default size.
fn block_on(command: impl std::future::Future<Output = Result<()>>) -> Result<()> {
    runtime(0)?.block_on(command)
}

/// Settings are read before the runtime starts: they say how many threads it has.
fn serve(args: ServeArgs) -> Result<()> {
    let settings = args.load()?;
    let cfg = settings.validate()?;
    runtime(cfg.worker_threads)?.block_on(run_member(cfg))
}

async fn run_member(cfg: gridraft::config::Resolved) -> Result<()> {
    telemetry::init_logging(&cfg.log_format);
    let public = gridraft::api::server::bind(cfg.listen)
        .with_context(|| format!("bind the public listener on {}", cfg.listen))?;
    let peer = gridraft::api::server::bind(cfg.peer_listen)
        .with_context(|| format!("bind the peer listener on {}", cfg.peer_listen))?;
    let member = member::start(&cfg, public, peer).await?;
    let mut fatal = member.fatal();
    let health = &cfg.health;
    tokio::select! {
        () = wait_for_signal() => {
            tracing::info!("signal received; stopping");
            member.stop().await;
            Ok(())
        }
        cause = fatal.wait(), if health.exit_on_fatal => {
            // /readyz already answers 503: the drain lets the load balancer see it before the
            // port closes, then a restart (docker, systemd) brings the member back.
            tracing::info!(drain = ?health.fatal_drain, "raft has stopped: exiting after the drain");
            tokio::select! {
                () = tokio::time::sleep(health.fatal_drain) => {}
                () = wait_for_signal() => {}
            }
            member.stop().await;
            anyhow::bail!("raft has stopped on this member: {cause}")
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install the SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// `gridraft probe`: the image's HEALTHCHECK (no curl in the image). Any 2xx is healthy.
async fn probe(args: ProbeArgs) -> Result<()> {
    let timeout = gridraft::config::parse_duration(&args.timeout)
        .map_err(|e| anyhow::anyhow!("--timeout: {e}"))?;
    let mut client = reqwest::Client::builder().timeout(timeout);
    if let Some(ca) = &args.ca_file {
        let identity = match (&args.cert_file, &args.key_file) {
            (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
            _ => None,
        };
        client = client.use_preconfigured_tls(gridraft::tls::client_config(ca, identity)?);
    }
    let client = client.build().context("build the HTTP client")?;
    let status = client
        .get(&args.url)
        .send()
        .await
        .with_context(|| format!("GET {}", args.url))?
        .status();
    anyhow::ensure!(status.is_success(), "GET {}: {status}", args.url);
    Ok(())
}

fn print_config(args: ServeArgs) -> Result<()> {
    let settings = args.load()?;
    settings.validate()?;
    print!("{}", settings.to_redacted_toml());
    Ok(())
}

async fn cluster(args: ClusterArgs) -> Result<()> {
    let client = args.client().map_err(anyhow::Error::msg)?;
    let post = reqwest::Method::POST;
    let answer = match args.action {
        ClusterAction::Status => {
            client
                .admin(
                    &args.peer,
                    reqwest::Method::GET,
                    "/admin/status",
                    None::<&()>,
                )
                .await?
        }
        ClusterAction::Init => {
            client
                .admin(&args.peer, post, "/admin/init", None::<&()>)
                .await?
        }
        ClusterAction::Add { id, addr } => {
            client
                .admin(
                    &args.peer,
                    post,
                    "/admin/add",
                    Some(&AddMember { id, addr }),
                )
                .await?
        }
        ClusterAction::Remove { id } => {
            client
                .admin(
                    &args.peer,
                    post,
                    "/admin/remove",
                    Some(&RemoveMember { id }),
                )
                .await?
        }
    };
    println!("{}", serde_json::to_string_pretty(&answer)?);
    Ok(())
}
