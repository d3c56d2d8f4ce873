//! Typed client for the peer port: write forwarding, ReadIndex, lookups, admin, and the
//! transport of Raft's RPCs (see `raft::network`). Used by members, by the `gridraft cluster`
//! CLI and by tests.
//!
//! A member's client sends every member-to-member request ([`Rpc`]) on a peer stream
//! ([`Links`]) and falls back to the HTTP route of the same name for a member that does not
//! accept streams (an earlier version). Admin calls, backups and the CLI use HTTP.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::link::{LinkError, Links};
use super::metrics::PeerMetrics;
use super::wire::Rpc;
use super::*;
use crate::map::{Applied, Proposal};
use crate::raft::network::NetworkFaults;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("request to {addr} failed: {source}")]
    Http {
        addr: String,
        source: reqwest::Error,
    },
    #[error("{addr} answered {status}: {body}")]
    Status {
        addr: String,
        status: u16,
        body: String,
    },
    #[error("{addr} sent an undecodable answer: {detail}")]
    Decode { addr: String, detail: String },
    #[error(transparent)]
    Rejected(#[from] Reject),
    /// A member-to-member request got no answer (see [`NoAnswer`]).
    #[error("request to {addr} failed: {source}")]
    NoAnswer { addr: String, source: NoAnswer },
}

/// A request to another member that got no answer: it could not be delivered, the connection
/// was lost with it in flight, or it timed out.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{cause}")]
pub struct NoAnswer {
    /// The connection was refused (or a test made it look so): the member is down or cut off.
    pub refused: bool,
    /// The innermost cause ("Connection refused (os error 111)", "timed out").
    pub cause: String,
}

impl NoAnswer {
    /// A test marked the address unreachable ([`NetworkFaults`]): refused without a request.
    fn injected() -> Self {
        NoAnswer {
            refused: true,
            cause: "connection refused (injected network fault)".into(),
        }
    }

    fn link(e: LinkError) -> Self {
        NoAnswer {
            refused: e.is_refused(),
            cause: e.to_string(),
        }
    }

    fn http(e: &reqwest::Error) -> Self {
        NoAnswer {
            refused: e.is_connect(),
            cause: root_cause(e),
        }
    }
}

/// The innermost cause of a request error ("Connection refused (os error 111)", "timed out"),
/// without reqwest's and hyper's wrapping layers.
fn root_cause(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".into();
    }
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

impl ClientError {
    /// The peer refused the connection (or a test made it look so): it is down or cut off.
    pub fn is_refused(&self) -> bool {
        match self {
            ClientError::Http { source, .. } => source.is_connect(),
            ClientError::NoAnswer { source, .. } => source.refused,
            _ => false,
        }
    }
}

/// The HTTP client a member reaches peer ports with: kept-alive connections without Nagle's
/// delay, over mutual TLS when `tls` is given.
pub fn http_client(tls: Option<&crate::tls::PeerTls>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(30));
    if let Some(tls) = tls {
        builder = builder.use_preconfigured_tls(tls.http_client_config());
    }
    builder.build().expect("the peer HTTP client builds")
}

#[derive(Clone)]
pub struct PeerClient {
    http: reqwest::Client,
    /// Empty when the cluster has none (peer TLS authenticates members): then not sent.
    secret: Arc<str>,
    /// `http`, or `https` with peer TLS.
    scheme: &'static str,
    /// Mutual TLS to peer ports, for streams (the HTTP client has it built in).
    tls: Option<Arc<crate::tls::PeerTls>>,
    faults: NetworkFaults,
    cluster_id: Option<Arc<str>>,
    /// Peer streams, for a member's client; `None` sends everything over HTTP.
    links: Option<Links>,
    /// Time and failures of the requests [`Self::exchange`] sends.
    metrics: PeerMetrics,
}

impl PeerClient {
    pub fn new(http: reqwest::Client, secret: Arc<str>) -> Self {
        PeerClient {
            http,
            secret,
            scheme: "http",
            tls: None,
            faults: NetworkFaults::default(),
            cluster_id: None,
            links: None,
            metrics: PeerMetrics::new(),
        }
    }

    /// The series of this client's member-to-member requests, for the member's `/metrics`.
    pub fn metrics(&self) -> &PeerMetrics {
        &self.metrics
    }

    /// Reaches peer ports over mutual TLS with `tls`'s certificate and CA, on streams and
    /// HTTP alike (call it before [`Self::with_streams`]).
    pub fn with_tls(mut self, tls: Arc<crate::tls::PeerTls>) -> Self {
        self.http = http_client(Some(&tls));
        self.scheme = "https";
        self.tls = Some(tls);
        self
    }

    /// Sends member-to-member requests on peer streams (see [`Links`]), presenting the secret
    /// and cluster id this client has when called (call it after [`Self::with_cluster_id`]).
    pub fn with_streams(mut self) -> Self {
        let tls = self.tls.as_ref().map(|t| t.connector());
        self.links = Some(Links::new(&self.secret, self.cluster_id.as_deref(), tls));
        self
    }

    /// Closes this client's peer streams (the member stops).
    pub fn close_streams(&self) {
        if let Some(links) = &self.links {
            links.close_all();
        }
    }

    /// Whether a peer stream to `addr` is open now (false for a client without streams).
    pub fn stream_open(&self, addr: &str) -> bool {
        self.links.as_ref().is_some_and(|l| l.is_open(addr))
    }

    /// The cluster id this client sends, if any.
    pub fn cluster_id(&self) -> Option<&str> {
        self.cluster_id.as_deref()
    }

    /// Sends `id` (this member's cluster id, see [`CLUSTER_ID_HEADER`]) with every request.
    pub fn with_cluster_id(mut self, id: Option<Arc<str>>) -> Self {
        self.cluster_id = id;
        self
    }

    /// Shares `faults` (a test hook): requests to an address in it fail at once as refused.
    pub fn with_faults(mut self, faults: NetworkFaults) -> Self {
        self.faults = faults;
        self
    }

    /// Sends `body` as `rpc` to the member at `addr`, on its stream or else over HTTP, and
    /// returns the answer's status and body. The one way member-to-member requests leave; each
    /// is timed, or counted as a failure, in [`PeerMetrics`].
    pub(crate) async fn exchange(
        &self,
        addr: &str,
        rpc: Rpc,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<(u16, bytes::Bytes), NoAnswer> {
        let sent = Instant::now();
        let answer = self.deliver(addr, rpc, body, timeout).await;
        self.metrics.observe(addr, rpc, sent, answer.is_ok());
        answer
    }

    async fn deliver(
        &self,
        addr: &str,
        rpc: Rpc,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<(u16, bytes::Bytes), NoAnswer> {
        if self.faults.is_unreachable(addr) {
            return Err(NoAnswer::injected());
        }
        if let Some(links) = &self.links {
            match links.call(addr, rpc, &body, timeout).await {
                Ok(answer) => return Ok(answer),
                Err(LinkError::Unsupported) => {}
                Err(LinkError::Hello { status, text }) => return Ok((status, text.into())),
                Err(e) => return Err(NoAnswer::link(e)),
            }
        }
        let req = self
            .authorized(
                self.http
                    .post(format!("{}://{addr}{}", self.scheme, rpc.path())),
            )
            .timeout(timeout)
            .body(body);
        let resp = req.send().await.map_err(|e| NoAnswer::http(&e))?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| NoAnswer::http(&e))?;
        Ok((status, bytes))
    }

    /// `req` with the cluster secret and this member's cluster id.
    fn authorized(&self, mut req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        if !self.secret.is_empty() {
            req = req.bearer_auth(&*self.secret);
        }
        match &self.cluster_id {
            Some(id) => req.header(CLUSTER_ID_HEADER, &**id),
            None => req,
        }
    }

    /// Sends a proposal to `addr` (the leader's peer address) and returns what applying it did.
    pub async fn forward_write(
        &self,
        addr: &str,
        p: &Proposal,
        timeout: Duration,
    ) -> Result<Applied, ClientError> {
        let body = bincode::serialize(p).expect("proposals always encode");
        self.bincode_call(addr, Rpc::Write, body, timeout).await
    }

    /// Asks the leader at `addr` for a read index confirmed by a quorum, and the stamp it sent
    /// with it (none from a member of an earlier version). `from` is this member's id and its
    /// vote, read after every read in the batch arrived: when the two members make a quorum,
    /// the request itself confirms the leadership and the leader answers without a heartbeat
    /// round (see [`ReadIndexFrom`]).
    pub async fn ask_read_index(
        &self,
        addr: &str,
        from: Option<&ReadIndexFrom>,
        timeout: Duration,
    ) -> Result<(u64, Option<super::ReadIndexStamp>), ClientError> {
        let body = from.map(ReadIndexFrom::encode).unwrap_or_default();
        let bytes = self.ok_call(addr, Rpc::ReadIndex, body, timeout).await?;
        let (result, stamp) =
            super::decode_read_index_answer(&bytes).map_err(|e| ClientError::Decode {
                addr: addr.into(),
                detail: e.to_string(),
            })?;
        Ok((result?, stamp))
    }

    /// Looks a session up on the leader at `addr`, linearizably.
    pub async fn lookup(
        &self,
        addr: &str,
        id: &str,
        kind: LookupKind,
        timeout: Duration,
    ) -> Result<PeerLookup, ClientError> {
        let body = bincode::serialize(&(id, kind)).expect("lookups always encode");
        self.bincode_call(addr, Rpc::Lookup, body, timeout).await
    }

    pub async fn timeout_now(&self, addr: &str) -> Result<(), ClientError> {
        self.bincode_call(addr, Rpc::TimeoutNow, Vec::new(), Duration::from_secs(2))
            .await
    }

    pub async fn info(&self, addr: &str) -> Result<PeerInfo, ClientError> {
        self.json_call(addr, reqwest::Method::GET, INFO_PATH, None::<&()>)
            .await
    }

    /// Starts `GET /admin/backup` on `addr`: the answer, to be read as a stream, once its status
    /// says the member took the image.
    pub async fn backup(&self, addr: &str) -> Result<reqwest::Response, ClientError> {
        let req = self
            .http
            .get(format!("{}://{addr}{BACKUP_PATH}", self.scheme));
        let resp = self.start(addr, req).await?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            return Err(ClientError::Status {
                addr: addr.into(),
                status: status.as_u16(),
                body,
            });
        }
        Ok(resp)
    }

    /// Calls an admin route and returns its JSON answer.
    pub async fn admin<B: Serialize>(
        &self,
        addr: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<serde_json::Value, ClientError> {
        self.json_call(addr, method, path, body).await
    }

    /// The body of a request's answer with a 2xx status.
    async fn ok_call(
        &self,
        addr: &str,
        rpc: Rpc,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<bytes::Bytes, ClientError> {
        let (status, bytes) = self
            .exchange(addr, rpc, body, timeout)
            .await
            .map_err(|source| ClientError::NoAnswer {
                addr: addr.into(),
                source,
            })?;
        if !(200..300).contains(&status) {
            return Err(ClientError::Status {
                addr: addr.into(),
                status,
                body: String::from_utf8_lossy(&bytes).into_owned(),
            });
        }
        Ok(bytes)
    }

    async fn bincode_call<T: DeserializeOwned>(
        &self,
        addr: &str,
        rpc: Rpc,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<T, ClientError> {
        let bytes = self.ok_call(addr, rpc, body, timeout).await?;
        let result: Result<T, Reject> =
            bincode::deserialize(&bytes).map_err(|e| ClientError::Decode {
                addr: addr.into(),
                detail: e.to_string(),
            })?;
        Ok(result?)
    }

    async fn json_call<B: Serialize, T: DeserializeOwned>(
        &self,
        addr: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let mut req = self
            .http
            .request(method, format!("{}://{addr}{path}", self.scheme))
            .timeout(Duration::from_secs(120));
        if let Some(b) = body {
            req = req.json(b);
        }
        let bytes = self.send(addr, req).await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
            addr: addr.into(),
            detail: e.to_string(),
        })
    }

    /// Sends `req` to `addr` with the cluster secret; the body of a 2xx answer, else the error.
    async fn send(
        &self,
        addr: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<bytes::Bytes, ClientError> {
        let resp = self.start(addr, req).await?;
        let http = |source| ClientError::Http {
            addr: addr.into(),
            source,
        };
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(http)?;
        if !status.is_success() {
            return Err(ClientError::Status {
                addr: addr.into(),
                status: status.as_u16(),
                body: String::from_utf8_lossy(&bytes).into_owned(),
            });
        }
        Ok(bytes)
    }

    /// Sends `req` to `addr` with the cluster secret and this member's cluster id.
    async fn start(
        &self,
        addr: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        if self.faults.is_unreachable(addr) {
            return Err(ClientError::NoAnswer {
                addr: addr.into(),
                source: NoAnswer::injected(),
            });
        }
        self.authorized(req)
            .send()
            .await
            .map_err(|source| ClientError::Http {
                addr: addr.into(),
                source,
            })
    }
}
