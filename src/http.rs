//! The HTTP front door: the accept loop that serves the API router, with the
//! limits a daemon facing untrusted clients needs and `axum::serve` lacks:
//!
//! - a cap on open connections, below the process's file limit so jobs, devices
//!   and SQLite keep descriptors; a connection over the cap is answered 503 at
//!   once and closed, never left hanging;
//! - a header-read timeout (slowloris), an idle timeout on kept-alive connections,
//!   and (in the API pipeline) a body-read timeout;
//! - accept errors (EMFILE and friends) logged at most once a second, with a short
//!   pause so a full descriptor table does not spin the loop;
//! - graceful shutdown: no new connections, in-flight requests get a bounded
//!   moment to finish.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// The limits of `[http]`, resolved.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
}

/// Raises the soft open-file limit to the hard one (a storage daemon holds many
/// connections, devices and files) and returns it.
pub fn raise_file_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(e) => {
                tracing::warn!(soft, hard, error = %e, "could not raise the open-file limit");
                soft
            }
        },
        Ok((soft, _)) => soft,
        Err(_) => 1024,
    }
}

/// A connection that fails its reads once nothing arrived for `idle`: hyper then
/// closes it. (While a response is being written the timer keeps running, but a
/// reply is written long before an idle timeout.)
struct IdleTimeout {
    inner: TcpStream,
    idle: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl IdleTimeout {
    fn new(inner: TcpStream, idle: Duration) -> Self {
        IdleTimeout { inner, idle, sleep: Box::pin(tokio::time::sleep(idle)) }
    }

    fn touch(&mut self) {
        self.sleep.as_mut().reset(tokio::time::Instant::now() + self.idle);
    }
}

impl AsyncRead for IdleTimeout {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    self.touch();
                }
                Poll::Ready(result)
            }
            Poll::Pending => match self.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "idle"))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for IdleTimeout {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.touch();
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// What a connection over the cap gets: a Cinder fault, then the door.
const BUSY: &str = "{\"serviceUnavailable\": {\"code\": 503, \"message\": \"Too many connections; try again.\"}}";

/// At most one line a second about a recurring trouble.
struct Throttle(Option<Instant>);

impl Throttle {
    fn ready(&mut self) -> bool {
        let now = Instant::now();
        if self.0.is_some_and(|last| now.duration_since(last) < Duration::from_secs(1)) {
            return false;
        }
        self.0 = Some(now);
        true
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then gives open
/// connections `grace` to finish.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let (mut accept_errors, mut refusals) = (Throttle(None), Throttle(None));
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    if accept_errors.ready() {
                        tracing::error!(error = %e, "accept failed (out of file descriptors?)");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            if refusals.ready() {
                tracing::warn!(max = limits.max_connections, "connection cap reached: answering 503");
            }
            tokio::spawn(async move {
                let mut stream = stream;
                let reply = format!(
                    "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n\
                     Connection: close\r\nContent-Length: {}\r\n\r\n{BUSY}",
                    BUSY.len()
                );
                let _ = tokio::time::timeout(Duration::from_secs(2), stream.write_all(reply.as_bytes())).await;
                let _ = stream.shutdown().await;
            });
            continue;
        };
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(IdleTimeout::new(stream, limits.idle_timeout));
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .keep_alive(true)
            .serve_connection(io, service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!("connections still open after {grace:?}; exiting anyway");
    }
}
