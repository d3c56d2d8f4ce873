//! HTTP/1.1 over one keep-alive connection, written for a load generator: no allocation per
//! request beyond the response buffer.

use std::fmt::Write as _;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

// ---------------------------------------------------------------------------------------------
// HTTP/1.1 over one keep-alive connection.

pub(crate) struct Conn {
    pub(crate) addr: SocketAddr,
    pub(crate) host: String,
    pub(crate) stream: Option<TcpStream>,
    pub(crate) buf: Vec<u8>,
    pub(crate) req: Vec<u8>,
}

pub(crate) struct Answer<'a> {
    pub(crate) status: u16,
    pub(crate) body: &'a [u8],
}

impl Conn {
    pub(crate) fn new(url: &str) -> Result<Conn, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{url}: only http:// URLs are supported"))?;
        let host = rest.trim_end_matches('/').to_owned();
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
            self.stream = Some(s);
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

pub(crate) async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), String> {
    buf.reserve(8192);
    match stream.read_buf(buf).await {
        Ok(0) => Err("connection closed by the server".into()),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("read: {e}")),
    }
}

/// Decodes a chunked body that starts at `buf[start..]` in place; returns the body's end.
pub(crate) async fn dechunk(
    stream: &mut TcpStream,
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
