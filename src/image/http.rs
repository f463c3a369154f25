//! A small blocking HTTP/1.1 client for the Glance store: one request per
//! connection, bodies sent with a length or chunked, responses read by length,
//! chunked or to the end. Plain `http://` only (ember's other peers are on the
//! management network; README "Images" says how to front Glance's TLS); it
//! keeps the dependency tree free of a TLS stack and an async client.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// `http://host:port` and the path prefix under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub prefix: String,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            format!("'{url}': only http:// endpoints are supported (put a TLS terminator in front of Glance)")
        })?;
        let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse::<u16>().map_err(|_| format!("'{url}': bad port '{p}'"))?),
            None => (authority, 80),
        };
        if host.is_empty() {
            return Err(format!("'{url}': no host"));
        }
        let prefix = format!("/{}", path.trim_end_matches('/')).trim_end_matches('/').to_string();
        Ok(Endpoint { host: host.trim_matches(['[', ']']).to_string(), port, prefix })
    }
}

/// What to send as the body.
pub enum Body<'a> {
    None,
    Bytes(&'a [u8]),
    /// Streamed with `Transfer-Encoding: chunked`.
    Stream(&'a mut dyn Read),
}

/// A response: its status and the body to read.
pub struct Response {
    pub status: u16,
    /// Names lowercased, in the order sent.
    pub headers: Vec<(String, String)>,
    pub body: Box<dyn Read + Send>,
}

impl Response {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The whole body, at most `limit` bytes (an answer that is not an image).
    pub fn text(mut self, limit: u64) -> io::Result<String> {
        let mut out = String::new();
        (&mut self.body).take(limit).read_to_string(&mut out)?;
        Ok(out)
    }
}

pub fn request(
    ep: &Endpoint,
    timeout: Duration,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Body,
) -> io::Result<Response> {
    let (mut out, stream) = open(ep, timeout, method, path, headers)?;
    match body {
        Body::None => write!(out, "Content-Length: 0\r\n\r\n")?,
        Body::Bytes(b) => {
            write!(out, "Content-Length: {}\r\n\r\n", b.len())?;
            out.write_all(b)?;
        }
        Body::Stream(r) => {
            write!(out, "Transfer-Encoding: chunked\r\n\r\n")?;
            let mut streaming = Streaming { out, stream };
            // 256 KiB chunks: uwsgi (Glance's WSGI server) refuses chunks of
            // its `chunked-input-limit`, 1 MiB, and more.
            let mut buf = vec![0u8; 256 << 10];
            loop {
                let n = match r.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                streaming.chunk(&[&buf[..n]])?;
            }
            return streaming.finish();
        }
    }
    out.flush()?;
    read_response(stream, method)
}

/// A request whose chunked body the caller sends piece by piece (a peer's
/// stream, written as the copy engine hands it over), then `finish`es.
pub struct Streaming {
    out: io::BufWriter<TcpStream>,
    stream: TcpStream,
}

impl Streaming {
    pub fn start(
        ep: &Endpoint,
        timeout: Duration,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> io::Result<Streaming> {
        let (mut out, stream) = open(ep, timeout, method, path, headers)?;
        write!(out, "Transfer-Encoding: chunked\r\n\r\n")?;
        Ok(Streaming { out, stream })
    }

    /// One chunk holding `parts`, in order.
    pub fn chunk(&mut self, parts: &[&[u8]]) -> io::Result<()> {
        let n: usize = parts.iter().map(|p| p.len()).sum();
        if n == 0 {
            return Ok(());
        }
        write!(self.out, "{n:x}\r\n")?;
        for p in parts {
            self.out.write_all(p)?;
        }
        self.out.write_all(b"\r\n")
    }

    /// Ends the body and reads the answer.
    pub fn finish(mut self) -> io::Result<Response> {
        self.out.write_all(b"0\r\n\r\n")?;
        self.out.flush()?;
        read_response(self.stream, "PUT")
    }
}

/// Connects and writes the request line and headers, all but the body's.
fn open(
    ep: &Endpoint,
    timeout: Duration,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> io::Result<(io::BufWriter<TcpStream>, TcpStream)> {
    let addr = (ep.host.as_str(), ep.port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{} does not resolve", ep.host)))?;
    let stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut out = io::BufWriter::with_capacity(1 << 20, stream.try_clone()?);
    write!(out, "{method} {}{path} HTTP/1.1\r\nHost: {}:{}\r\nConnection: close\r\n", ep.prefix, ep.host, ep.port)?;
    for (k, v) in headers {
        if v.contains(['\r', '\n']) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("header {k} holds a line break")));
        }
        write!(out, "{k}: {v}\r\n")?;
    }
    Ok((out, stream))
}

fn read_response(stream: TcpStream, method: &str) -> io::Result<Response> {
    let mut reader = BufReader::with_capacity(1 << 20, stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("not an HTTP status line: {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the response ended in its headers"));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if headers.len() > 200 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "too many response headers"));
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let find = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let body: Box<dyn Read + Send> = if method == "HEAD" || status == 204 || status == 304 {
        Box::new(io::empty())
    } else if find("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        Box::new(Chunked { inner: reader, left: 0, done: false })
    } else if let Some(len) = find("content-length") {
        let len = len.parse::<u64>().map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad Content-Length"))?;
        Box::new(Exact { inner: reader.take(len), want: len })
    } else {
        Box::new(reader)
    };
    Ok(Response { status, headers, body })
}

/// A body of a known length: ending early is an error, not a short image.
struct Exact<R> {
    inner: io::Take<R>,
    want: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() && self.inner.limit() > 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the body ended {} bytes short of {}", self.inner.limit(), self.want),
            ));
        }
        Ok(n)
    }
}

/// A chunked body, decoded.
struct Chunked<R> {
    inner: R,
    left: u64,
    done: bool,
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            let mut line = String::new();
            self.inner.read_line(&mut line)?;
            let size = line.trim().split(';').next().unwrap_or("");
            self.left = u64::from_str_radix(size, 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("bad chunk size {line:?}")))?;
            if self.left == 0 {
                // Trailers, up to the blank line.
                loop {
                    line.clear();
                    if self.inner.read_line(&mut line)? == 0 || line.trim().is_empty() {
                        break;
                    }
                }
                self.done = true;
                return Ok(0);
            }
        }
        let want = usize::try_from(self.left).unwrap_or(usize::MAX).min(buf.len());
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "a chunked body ended inside a chunk"));
        }
        self.left -= n as u64;
        if self.left == 0 {
            let mut crlf = [0u8; 2];
            self.inner.read_exact(&mut crlf)?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_and_refuse_what_is_not_plain_http() {
        let ep = Endpoint::parse("http://127.0.0.1:9292").unwrap();
        assert_eq!((ep.host.as_str(), ep.port, ep.prefix.as_str()), ("127.0.0.1", 9292, ""));
        let ep = Endpoint::parse("http://glance.example/image/").unwrap();
        assert_eq!((ep.host.as_str(), ep.port, ep.prefix.as_str()), ("glance.example", 80, "/image"));
        for bad in ["https://g:9292", "g:9292", "http://:9292", "http://g:port"] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn chunked_bodies_decode_and_short_ones_fail() {
        let mut c = Chunked { inner: &b"5\r\nhello\r\n6;x=y\r\n ember\r\n0\r\n\r\n"[..], left: 0, done: false };
        let mut s = String::new();
        c.read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello ember");
        let mut cut = Chunked { inner: &b"5\r\nhel"[..], left: 0, done: false };
        assert!(cut.read_to_string(&mut String::new()).is_err());
        let mut short = Exact { inner: (&b"abc"[..]).take(5), want: 5 };
        assert!(short.read_to_end(&mut Vec::new()).is_err());
    }
}
