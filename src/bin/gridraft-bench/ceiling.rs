//! `--mode ceiling-server`: the machine's ceiling for a full GET.
//!
//! A constant-answer HTTP/1.1 server (hyper, keep-alive, `TCP_NODELAY`) that answers
//! `GET /se/grid/session/{id}` with the bytes gridraft answers for a session the load generator
//! pre-loads, the asked id spliced in, and does nothing else: no lookup, no router, no Raft.
//! Measured with the same workload as gridraft, it shows what a full GET costs the machine
//! (client, kernel, HTTP) before gridraft does any work of its own.
//!
//! The body is built by gridraft's own parser and renderer from the add body `doc.rs` builds, so
//! its size and shape are gridraft's; the headers are gridraft's too (`content-length` and
//! `date` only: gridraft, like Java, sends no `Content-Type` on session routes). Each listen
//! address gets its own runtime on its own OS thread (a current-thread runtime with the default
//! `--threads 1`), the rule the members of a three-member cluster run under in scripts/bench.sh
//! (`--worker-threads 1`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use percent_encoding::percent_decode_str;

use crate::doc::{preload_token, session_doc};

/// Stands for the asked id in the rendered body (JSON writes it unescaped).
const ID_MARKER: &str = "@@ASKED-ID@@";

/// The pre-loaded session whose node address the answer carries: the middle of the 1 000
/// scripts/bench.sh loads (only the address's length depends on it; full GETs don't check it).
const NODE_SEQ: u64 = 500;

/// gridraft's full-GET answer for a pre-loaded session, cut where the session's id goes.
struct Answer {
    pieces: Vec<Vec<u8>>,
    /// The bytes of all pieces together.
    fixed_len: usize,
}

impl Answer {
    fn new(caps_bytes: usize) -> Result<Answer, String> {
        let body = gridraft_body(ID_MARKER, caps_bytes)?;
        let pieces: Vec<Vec<u8>> = body.split(ID_MARKER).map(|p| p.into()).collect();
        let answer = Answer {
            fixed_len: pieces.iter().map(Vec::len).sum(),
            pieces,
        };
        // The splice must give gridraft's bytes for any id (including one JSON escapes).
        let sample = "ceiling/check-p7";
        if answer.body(sample) != gridraft_body(sample, caps_bytes)?.into_bytes() {
            return Err("the spliced answer differs from gridraft's rendering".into());
        }
        Ok(answer)
    }

    /// The answer for `id` (decoded): the pieces with the id, escaped as gridraft writes it,
    /// between them. The same few copies for every request.
    fn body(&self, id: &str) -> Vec<u8> {
        let mut quoted = String::with_capacity(id.len() + 2);
        gridraft::json::write_string(id, &mut quoted);
        let id = &quoted.as_bytes()[1..quoted.len() - 1];
        let mut out = Vec::with_capacity(self.fixed_len + id.len() * (self.pieces.len() - 1));
        for (i, piece) in self.pieces.iter().enumerate() {
            if i > 0 {
                out.extend_from_slice(id);
            }
            out.extend_from_slice(piece);
        }
        out
    }
}

/// What gridraft answers to a full GET of the pre-loaded session `id`: the add body the load
/// generator sends for it, parsed and rendered by gridraft's own code.
fn gridraft_body(id: &str, caps_bytes: usize) -> Result<String, String> {
    let doc = session_doc(
        id.to_owned(),
        NODE_SEQ,
        preload_token(id),
        caps_bytes,
        false,
    );
    let session = gridraft::session::parse_add_body(&doc.add_body)
        .map_err(|e| format!("gridraft refuses the bench's session: {e}"))?;
    Ok(session.render_get_body())
}

/// Serves `addrs` until killed, `threads` runtime threads per address (1: current-thread).
pub(crate) fn serve(addrs: &[SocketAddr], threads: usize, caps_bytes: usize) -> Result<(), String> {
    if addrs.is_empty() {
        return Err("--mode ceiling-server needs --listen ADDR[,ADDR...]".into());
    }
    let answer = Arc::new(Answer::new(caps_bytes)?);
    // Bound here, so a busy port fails the start and the line below means "ready".
    let listeners = addrs
        .iter()
        .map(|a| std::net::TcpListener::bind(a).map_err(|e| format!("listen {a}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    eprintln!(
        "ceiling-server: answers of {} bytes + {} x the id's on {}, {threads} thread(s) each",
        answer.fixed_len,
        answer.pieces.len() - 1,
        addrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut ports = Vec::new();
    for (listener, addr) in listeners.into_iter().zip(addrs) {
        let answer = answer.clone();
        let thread = std::thread::Builder::new()
            .name(format!("ceiling-{}", addr.port()))
            .spawn(move || serve_port(listener, threads, answer))
            .map_err(|e| e.to_string())?;
        ports.push(thread);
    }
    // A port's thread only returns on a failure.
    for port in ports {
        port.join().map_err(|_| "a port's thread panicked")??;
    }
    Ok(())
}

/// One address on its own runtime: accept, and serve each connection with hyper's HTTP/1.1
/// defaults (gridraft's settings: keep-alive on, no timer).
fn serve_port(
    listener: std::net::TcpListener,
    threads: usize,
    answer: Arc<Answer>,
) -> Result<(), String> {
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    let rt = builder.enable_all().build().map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener).map_err(|e| e.to_string())?;
        let http1 = http1::Builder::new();
        loop {
            let tcp = match listener.accept().await {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    // Out of descriptors and the like: wait for connections to close.
                    eprintln!("ceiling-server: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let answer = answer.clone();
            let service = service_fn(move |req| {
                let resp = respond(&answer, &req);
                async move { Ok::<_, Infallible>(resp) }
            });
            let conn = http1.serve_connection(TokioIo::new(tcp), service);
            tokio::spawn(async move {
                // Resets and malformed requests are the client's business.
                let _ = conn.await;
            });
        }
    })
}

/// `GET /se/grid/session/{id}`: the answer for `id`; `GET /readyz`: 204 (so scripts wait for
/// it as for gridraft); anything else: an empty 404.
fn respond(answer: &Answer, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() == Method::GET {
        let path = req.uri().path();
        if let Some(raw) = path.strip_prefix("/se/grid/session/") {
            if !raw.is_empty() && !raw.contains('/') {
                let id = percent_decode_str(raw).decode_utf8_lossy();
                return Response::new(Full::new(Bytes::from(answer.body(&id))));
            }
        } else if path == "/readyz" {
            return empty(StatusCode::NO_CONTENT);
        }
    }
    empty(StatusCode::NOT_FOUND)
}

fn empty(status: StatusCode) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = status;
    resp
}
