//! HTTP/1.1 over one keep-alive connection, written for a load generator: no allocation per
//! request beyond the response buffer. `https://` URLs go over TLS (`--ca-file`).

use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// The TLS client of `https://` URLs, set once from `--ca-file`.
pub(crate) static TLS: OnceLock<TlsConnector> = OnceLock::new();

/// A connection, plain or TLS.
pub(crate) enum Stream {
    Plain(TcpStream),
    /// rustls reads at most 4 KiB per call, so a full GET's answer (one record of about 5 KiB)
    /// would take two `recv`s where the plain client takes one: the socket is read through a
    /// buffer of [`TLS_READ_BUFFER`] instead, so that both clients make the same calls.
    Tls(Box<TlsStream<BufReader<TcpStream>>>),
}

/// The read buffer under a TLS connection: a full record (16 KiB of plaintext) in one `recv`.
const TLS_READ_BUFFER: usize = 17 * 1024;

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP/1.1 over one keep-alive connection.

pub(crate) struct Conn {
    pub(crate) addr: SocketAddr,
    pub(crate) host: String,
    pub(crate) stream: Option<Stream>,
    pub(crate) buf: Vec<u8>,
    pub(crate) req: Vec<u8>,
    /// For an `https://` URL: the TLS client and the name to verify.
    tls: Option<(TlsConnector, rustls::pki_types::ServerName<'static>)>,
}

pub(crate) struct Answer<'a> {
    pub(crate) status: u16,
    pub(crate) body: &'a [u8],
}

impl Conn {
    pub(crate) fn new(url: &str) -> Result<Conn, String> {
        let (rest, https) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
            (Some(rest), _) => (rest, false),
            (None, Some(rest)) => (rest, true),
            _ => {
                return Err(format!(
                    "{url}: only http:// and https:// URLs are supported"
                ))
            }
        };
        let host = rest.trim_end_matches('/').to_owned();
        let tls = match https {
            false => None,
            true => {
                let connector = TLS
                    .get()
                    .ok_or_else(|| format!("{url}: an https URL needs --ca-file"))?;
                let name = host.rsplit_once(':').map_or(host.as_str(), |(h, _)| h);
                let name = rustls::pki_types::ServerName::try_from(name.to_owned())
                    .map_err(|e| format!("{url}: {e}"))?;
                Some((connector.clone(), name))
            }
        };
        let addr = std::net::ToSocketAddrs::to_socket_addrs(&host)
            .map_err(|e| format!("{url}: {e}"))?
            .next()
            .ok_or_else(|| format!("{url}: no address"))?;
        Ok(Conn {
            addr,
            host,
            stream: None,
            buf: Vec::with_capacity(16 * 1024),
            req: Vec::with_capacity(8 * 1024),
            tls,
        })
    }

    pub(crate) async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        json: bool,
    ) -> Result<Answer<'_>, String> {
        self.req.clear();
        let _ = write!(
            Wr(&mut self.req),
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n",
            self.host
        );
        if json {
            self.req
                .extend_from_slice(b"Content-Type: application/json\r\n");
        }
        if let Some(b) = body {
            let _ = write!(Wr(&mut self.req), "Content-Length: {}\r\n\r\n", b.len());
            self.req.extend_from_slice(b);
        } else {
            self.req.extend_from_slice(b"\r\n");
        }
        // A pooled connection the server closed while idle fails on first use: retry once on a
        // fresh one (every operation here is idempotent).
        let fresh = self.stream.is_none();
        match self.exchange(method == "HEAD").await {
            Ok((status, start, end)) => Ok(Answer {
                status,
                body: &self.buf[start..end],
            }),
            Err(_) if !fresh => {
                self.stream = None;
                let (status, start, end) = self.exchange(method == "HEAD").await?;
                Ok(Answer {
                    status,
                    body: &self.buf[start..end],
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Sends `self.req` and reads one answer into `self.buf`; returns status and body range.
    pub(crate) async fn exchange(&mut self, head: bool) -> Result<(u16, usize, usize), String> {
        if self.stream.is_none() {
            let s = TcpStream::connect(self.addr)
                .await
                .map_err(|e| format!("connect {}: {e}", self.addr))?;
            s.set_nodelay(true).map_err(|e| e.to_string())?;
            self.stream = Some(match &self.tls {
                None => Stream::Plain(s),
                Some((connector, name)) => {
                    let tls = connector
                        .connect(name.clone(), BufReader::with_capacity(TLS_READ_BUFFER, s))
                        .await
                        .map_err(|e| format!("TLS handshake with {}: {e}", self.addr))?;
                    Stream::Tls(Box::new(tls))
                }
            });
        }
        let result = self.exchange_on_stream(head).await;
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    pub(crate) async fn exchange_on_stream(
        &mut self,
        head: bool,
    ) -> Result<(u16, usize, usize), String> {
        let stream = self.stream.as_mut().expect("connected above");
        stream
            .write_all(&self.req)
            .await
            .map_err(|e| format!("write: {e}"))?;
        self.buf.clear();
        let (status, header_len, framing, close) = loop {
            read_more(stream, &mut self.buf).await?;
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut headers);
            match resp
                .parse(&self.buf)
                .map_err(|e| format!("bad answer: {e}"))?
            {
                httparse::Status::Partial => continue,
                httparse::Status::Complete(n) => {
                    let mut framing = Framing::UntilClose;
                    let mut close = false;
                    for h in resp.headers.iter() {
                        if h.name.eq_ignore_ascii_case("content-length") {
                            let len = std::str::from_utf8(h.value)
                                .ok()
                                .and_then(|v| v.trim().parse().ok())
                                .ok_or("bad content-length")?;
                            framing = Framing::Length(len);
                        } else if h.name.eq_ignore_ascii_case("transfer-encoding")
                            && h.value.eq_ignore_ascii_case(b"chunked")
                        {
                            framing = Framing::Chunked;
                        } else if h.name.eq_ignore_ascii_case("connection")
                            && h.value.eq_ignore_ascii_case(b"close")
                        {
                            close = true;
                        }
                    }
                    let status = resp.code.unwrap_or(0);
                    if head || status == 204 || status == 304 {
                        framing = Framing::Length(0);
                    }
                    break (status, n, framing, close);
                }
            }
        };
        let (start, end) = match framing {
            Framing::Length(len) => {
                while self.buf.len() < header_len + len {
                    read_more(stream, &mut self.buf).await?;
                }
                (header_len, header_len + len)
            }
            Framing::Chunked => {
                let end = dechunk(stream, &mut self.buf, header_len).await?;
                (header_len, end)
            }
            Framing::UntilClose => {
                while stream
                    .read_buf(&mut self.buf)
                    .await
                    .map_err(|e| e.to_string())?
                    > 0
                {}
                self.stream = None;
                (header_len, self.buf.len())
            }
        };
        if close {
            self.stream = None;
        }
        Ok((status, start, end))
    }
}

pub(crate) enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

pub(crate) struct Wr<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Wr<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

pub(crate) async fn read_more(stream: &mut Stream, buf: &mut Vec<u8>) -> Result<(), String> {
    buf.reserve(8192);
    match stream.read_buf(buf).await {
        Ok(0) => Err("connection closed by the server".into()),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("read: {e}")),
    }
}

/// Decodes a chunked body that starts at `buf[start..]` in place; returns the body's end.
pub(crate) async fn dechunk(
    stream: &mut Stream,
    buf: &mut Vec<u8>,
    start: usize,
) -> Result<usize, String> {
    let mut out = start; // decoded body so far: buf[start..out]
    let mut pos = start; // next unread chunk header
    loop {
        let line_end = loop {
            if let Some(i) = memchr::memmem::find(&buf[pos..], b"\r\n") {
                break pos + i;
            }
            read_more(stream, buf).await?;
        };
        let size_text = std::str::from_utf8(&buf[pos..line_end]).map_err(|_| "bad chunk size")?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        let data = line_end + 2;
        while buf.len() < data + size + 2 {
            read_more(stream, buf).await?;
        }
        if size == 0 {
            // Trailers are not used by the servers measured here; skip the final CRLF.
            buf.truncate(out);
            return Ok(out);
        }
        buf.copy_within(data..data + size, out);
        out += size;
        pos = data + size + 2;
    }
}
