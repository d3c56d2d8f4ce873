//! Helpers for the Grid contract tests: one in-process member on 127.0.0.1:0, and a raw HTTP/1.1
//! client that shows exactly the status line, headers and bytes a server sends (reqwest would
//! hide or add headers, and cannot send the Java client's h2c upgrade offer verbatim).

use std::net::SocketAddr;
use std::time::Duration;

use gridraft::config::GridSettings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{eventually, TestCluster};

/// How long any single request may take before a test fails.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A [`TestCluster`] of one member, addressed by its two ports.
pub struct SingleMember {
    pub addr: SocketAddr,
    /// The peer port (Raft, admin, `/metrics`), guarded by the cluster secret.
    pub peer: SocketAddr,
    pub cluster: TestCluster,
}

impl SingleMember {
    pub async fn start() -> Self {
        Self::from(TestCluster::start(1).await).await
    }

    /// A member whose `[grid]` section is `grid`.
    pub async fn start_with(grid: GridSettings) -> Self {
        Self::from(TestCluster::builder(1).grid(grid).start().await).await
    }

    async fn from(cluster: TestCluster) -> Self {
        let (addr, peer) = (cluster.members[&1].public, cluster.members[&1].peer);
        wait_ready(addr, Duration::from_secs(30)).await;
        SingleMember {
            addr,
            peer,
            cluster,
        }
    }

    /// The peer port's `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.cluster.metrics_text(1).await
    }

    pub async fn stop(self) {
        self.cluster.shutdown().await;
    }
}

/// Polls `GET /readyz` until it answers 204.
pub async fn wait_ready(addr: SocketAddr, timeout: Duration) {
    eventually(
        timeout,
        &format!("GET http://{addr}/readyz to answer 204"),
        || async move {
            let conn = tokio::time::timeout(Duration::from_secs(2), Conn::open(addr))
                .await
                .ok()?;
            let resp = conn
                .ok()?
                .try_send(&Request::new("GET", "/readyz"))
                .await
                .ok()?;
            (resp.status == 204).then_some(())
        },
    )
    .await
}

/// A request written byte for byte as given: only `Host` and, with a body, `Content-Length` are
/// added. No `Content-Type` unless a test adds one, as the Java distributor sends none.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
}

impl Request {
    pub fn new(method: &str, path: &str) -> Self {
        Request {
            method: method.to_owned(),
            path: path.to_owned(),
            headers: Vec::new(),
            body: None,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }

    fn to_bytes(&self, addr: SocketAddr) -> Vec<u8> {
        let mut head = format!("{} {} HTTP/1.1\r\nHost: {addr}\r\n", self.method, self.path);
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if let Some(body) = &self.body {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(self.body.as_deref().unwrap_or_default());
        bytes
    }
}

/// A response as it came off the wire. Header names are lower-cased, in arrival order.
#[derive(Debug, Clone)]
pub struct Response {
    pub version: String,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("a UTF-8 body")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text()))
    }

    /// `value.error` and `value.message` of a W3C error body.
    pub fn w3c_error(&self) -> (String, String) {
        let v = self.json();
        let field = |k: &str| {
            v["value"][k]
                .as_str()
                .unwrap_or_else(|| panic!("no value.{k} in {v}"))
                .to_owned()
        };
        (field("error"), field("message"))
    }
}

/// One keep-alive HTTP/1.1 connection.
pub struct Conn {
    addr: SocketAddr,
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            addr,
            stream,
            buf: Vec::new(),
        })
    }

    pub async fn send(&mut self, req: &Request) -> Response {
        tokio::time::timeout(REQUEST_TIMEOUT, self.exchange(req))
            .await
            .unwrap_or_else(|_| panic!("{} {} timed out", req.method, req.path))
            .unwrap_or_else(|e| panic!("{} {} failed: {e}", req.method, req.path))
    }

    async fn try_send(mut self, req: &Request) -> std::io::Result<Response> {
        self.exchange(req).await
    }

    async fn exchange(&mut self, req: &Request) -> std::io::Result<Response> {
        self.stream.write_all(&req.to_bytes(self.addr)).await?;
        self.receive(&req.method).await
    }

    /// Writes bytes as they are: a request head or body a test builds by hand.
    pub async fn write_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Reads one response to a request made with `method`.
    pub async fn receive(&mut self, method: &str) -> std::io::Result<Response> {
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i;
            }
            self.fill()
                .await?
                .then_some(())
                .ok_or_else(|| eof("in the response head"))?;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        self.buf.drain(..head_end + 4);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default().to_owned();
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| invalid(format!("bad status line {status_line:?}")))?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let resp = Response {
            version,
            status,
            headers,
            body: Vec::new(),
        };
        let body =
            if method == "HEAD" || status == 204 || status == 304 || (100..200).contains(&status) {
                Vec::new()
            } else if let Some(len) = resp.header("content-length") {
                let len: usize = len
                    .parse()
                    .map_err(|_| invalid(format!("bad content-length {len:?}")))?;
                self.take(len).await?
            } else if resp
                .header("transfer-encoding")
                .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
            {
                self.chunked().await?
            } else {
                // Neither length nor chunking: the body runs until the server closes.
                while self.fill().await? {}
                std::mem::take(&mut self.buf)
            };
        Ok(Response { body, ..resp })
    }

    /// Reads more bytes into the buffer; false at end of stream.
    /// True when the server has closed the connection (everything it sent has been read).
    pub async fn closed_by_server(&mut self) -> std::io::Result<bool> {
        Ok(!self.fill().await? && self.buf.is_empty())
    }

    async fn fill(&mut self) -> std::io::Result<bool> {
        // A heap buffer: a stack array would live inside every test's future.
        self.buf.reserve(64 * 1024);
        Ok(self.stream.read_buf(&mut self.buf).await? > 0)
    }

    async fn take(&mut self, len: usize) -> std::io::Result<Vec<u8>> {
        while self.buf.len() < len {
            self.fill()
                .await?
                .then_some(())
                .ok_or_else(|| eof("in the body"))?;
        }
        Ok(self.buf.drain(..len).collect())
    }

    async fn line(&mut self) -> std::io::Result<String> {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return Ok(line);
            }
            self.fill()
                .await?
                .then_some(())
                .ok_or_else(|| eof("in a chunk header"))?;
        }
    }

    async fn chunked(&mut self) -> std::io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let size_line = self.line().await?;
            let size_hex = size_line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size_hex, 16)
                .map_err(|_| invalid(format!("bad chunk size {size_line:?}")))?;
            if size == 0 {
                while !self.line().await?.is_empty() {}
                return Ok(body);
            }
            body.extend(self.take(size).await?);
            self.take(2).await?;
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn eof(place: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        format!("connection closed {place}"),
    )
}

fn invalid(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg)
}

/// Sends one request on a fresh connection.
pub async fn send(addr: SocketAddr, req: &Request) -> Response {
    let mut conn = Conn::open(addr)
        .await
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    conn.send(req).await
}

pub async fn get(addr: SocketAddr, path: &str) -> Response {
    send(addr, &Request::new("GET", path)).await
}

pub async fn head(addr: SocketAddr, path: &str) -> Response {
    send(addr, &Request::new("HEAD", path)).await
}

pub async fn delete(addr: SocketAddr, path: &str) -> Response {
    send(addr, &Request::new("DELETE", path)).await
}

/// `POST /se/grid/session` with no Content-Type, as the distributor sends it.
pub async fn add(addr: SocketAddr, body: impl Into<Vec<u8>>) -> Response {
    send(addr, &Request::new("POST", "/se/grid/session").body(body)).await
}

/// A session body with the given fields; `caps`, `stereotype` and `start` are raw JSON.
pub fn session_json(id: &str, uri: &str, caps: &str, stereotype: &str, start: &str) -> String {
    format!(
        r#"{{"capabilities": {caps}, "sessionId": {}, "start": {start}, "stereotype": {stereotype}, "uri": {}}}"#,
        serde_json::Value::from(id),
        serde_json::Value::from(uri),
    )
}

/// A minimal valid session body.
pub fn simple_session(id: &str, uri: &str) -> String {
    session_json(
        id,
        uri,
        r#"{"browserName": "chrome"}"#,
        r#"{"browserName": "chrome"}"#,
        r#""2024-05-01T10:20:30.123400Z""#,
    )
}

/// Percent-encodes every byte outside the unreserved set, for putting an id into a path.
pub fn encode_id(id: &str) -> String {
    id.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub const ADDED: &str = "{\n  \"value\": true\n}";
pub const JSON_UTF8: &str = "application/json; charset=utf-8";

/// The session behind the GET example of docs/compatibility.md (with the extra top-level null
/// that is dropped).
pub const EXAMPLE_BODY: &str = r#"{"capabilities": {"acceptInsecureCerts": null, "timeouts": {"pageLoad": 300000}, "browserName": "chrome", "goog:chromeOptions": {"args": [], "x": null}}, "sessionId": "4c1b6d2e-0000-4000-8000-00000000a001", "start": "2024-05-01T10:20:30.123400Z", "stereotype": {"se:noVncPort": 7900, "browserName": "chrome"}, "uri": "http:\u002f\u002f10.0.0.5:5555"}"#;
pub const EXAMPLE_ID: &str = "4c1b6d2e-0000-4000-8000-00000000a001";
/// The 451 bytes of that GET answer.
pub const EXAMPLE_GET: &str = "{\n  \"value\": {\n    \"capabilities\": {\n      \"browserName\": \"chrome\",\n      \"goog:chromeOptions\": {\n        \"args\": [\n        ],\n        \"x\": null\n      },\n      \"timeouts\": {\n        \"pageLoad\": 300000\n      }\n    },\n    \"sessionId\": \"4c1b6d2e-0000-4000-8000-00000000a001\",\n    \"start\": \"2024-05-01T10:20:30.123400Z\",\n    \"stereotype\": {\n      \"browserName\": \"chrome\",\n      \"se:noVncPort\": 7900\n    },\n    \"uri\": \"http:\\u002f\\u002f10.0.0.5:5555\"\n  }\n}";

pub fn session_path(id: &str) -> String {
    format!("/se/grid/session/{}", encode_id(id))
}

pub fn now_nanos() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i128
}

/// Asserts a 404 `invalid session id` with JSON headers and returns its message.
pub fn assert_no_such_session(resp: &Response) -> String {
    assert_eq!(resp.status, 404, "body: {}", resp.text());
    assert_eq!(resp.header("content-type"), Some(JSON_UTF8));
    assert_eq!(resp.header("cache-control"), Some("none"));
    let (error, message) = resp.w3c_error();
    assert_eq!(error, "invalid session id");
    message
}

/// Asserts a 500 `unknown error` with JSON headers and returns its message.
pub fn assert_unknown_error(resp: &Response) -> String {
    assert_eq!(resp.status, 500, "body: {}", resp.text());
    assert_eq!(resp.header("content-type"), Some(JSON_UTF8));
    assert_eq!(resp.header("cache-control"), Some("none"));
    let (error, message) = resp.w3c_error();
    assert_eq!(error, "unknown error");
    message
}

/// Every field of record `(w, i)` encodes `w` and `i`, so a mixed read is detectable.
pub fn tagged_session(w: u64, i: u64) -> String {
    let caps = format!(
        r#"{{"writer": {w}, "i": {i}, "pad": "{}"}}"#,
        "p".repeat((w * 97 + i) as usize % 500)
    );
    let stereo = format!(r#"{{"writer": {w}, "i": {i}}}"#);
    session_json(
        "contended",
        &format!("http://node-{w}-{i}:5555"),
        &caps,
        &stereo,
        &(w * 1_000_000 + i).to_string(),
    )
}

/// The Java distributor's h2c upgrade offer, as it sends it on every request.
pub fn with_h2c_offer(req: Request) -> Request {
    req.header("Connection", "Upgrade, HTTP2-Settings")
        .header("Upgrade", "h2c")
        .header(
            "HTTP2-Settings",
            "AAEAAEAAAAIAAAAAAAMAAAAAAAQBAAAAAAUAAEAAAAYABgAA",
        )
        .header(
            "traceparent",
            "00-f5907d6a05f41532d2691265a04b3f77-83618084e747bc32-03",
        )
        .header("user-agent", "selenium/4.48.0 (java unix)")
}

/// Asserts that every field of a GET body of [`tagged_session`] comes from the same POST.
pub fn assert_untorn(body: &serde_json::Value) {
    let s = &body["value"];
    let tag = |v: &serde_json::Value| (v["writer"].as_u64().unwrap(), v["i"].as_u64().unwrap());
    let (w, i) = tag(&s["capabilities"]);
    assert_eq!(tag(&s["stereotype"]), (w, i), "torn read: {s}");
    assert_eq!(
        s["uri"],
        format!("http://node-{w}-{i}:5555"),
        "torn read: {s}"
    );
    let start = gridraft::session::parse_start(&s["start"]).unwrap();
    assert_eq!(
        start,
        i128::from(w * 1_000_000 + i) * 1_000_000,
        "torn read: {s}"
    );
}
