//! The calls other ember agents make of this one (`/ember/v1/peer/...`):
//! receiving a migration (manager/peers.rs).
//!
//! They stand outside Cinder's policy table: a caller is a configured peer
//! (its name in `X-Ember-Peer`, the pair's token in `X-Ember-Peer-Token`) or is
//! refused 401, whatever the API's auth strategy; no Cinder token opens them.
//!
//! - `GET pools`: this agent's pools and their backend names (a peer's retype)
//! - `POST volumes` {"volume": Destination}: the destination record and a blank volume
//! - `PUT volumes/{id}/data`: the stream (chunked, framed), answered with what was written
//! - `POST volumes/{id}/adopt` {"source_id"}: the destination becomes the volume
//! - `DELETE volumes/{id}`: a failed migration's destination deleted
//! - `GET jobs/{id}`: how this agent's migration job to the caller stands

use std::io::{self, Read};
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, ApiState, Early, Encoded, MAX_BODY, Reply, bad_method};
use crate::manager::{Destination, Manager, Peer};

pub(super) fn is_peer_path(path: &str) -> bool {
    path == "/ember/v1/peer" || path.starts_with("/ember/v1/peer/")
}

pub(super) async fn pipeline(
    state: &ApiState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Result<Encoded, Early> {
    let manager = Arc::clone(&state.manager);
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let Some(peer) = manager.peer_calling(header("x-ember-peer"), header("x-ember-peer-token")).cloned() else {
        tracing::warn!(claimed = header("x-ember-peer"), "a peer call without a valid peer credential refused");
        return Err(
            ApiError::new(StatusCode::UNAUTHORIZED, "The request you have made requires authentication.").into()
        );
    };
    let segments: Vec<String> = uri.path().split('/').filter(|s| !s.is_empty()).skip(3).map(str::to_string).collect();
    let span = tracing::Span::current();
    if let (&Method::PUT, ["volumes", id, "data"]) =
        (method, segments.iter().map(String::as_str).collect::<Vec<_>>().as_slice())
    {
        let id = id.to_string();
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let pump = tokio::spawn(pump(body, tx, state.body_timeout));
        let written = tokio::task::spawn_blocking(move || {
            let _request = span.enter();
            let mut reader = BodyReader { rx, current: Bytes::new() };
            manager.receive_migration(&peer, &id, &mut reader)
        })
        .await;
        pump.abort();
        let written = written.map_err(|_| internal())?.map_err(ApiError::from)?;
        let body = json!({"bytes": written.bytes, "data_bytes": written.data_bytes, "checksum": written.checksum});
        return Ok(Reply::ok(body).encode());
    }
    let body = match tokio::time::timeout(state.body_timeout, axum::body::to_bytes(body, MAX_BODY)).await {
        Ok(Ok(body)) => body,
        _ => return Err(ApiError::bad_request("The request body did not arrive whole or in time.").into()),
    };
    tokio::task::spawn_blocking({
        let method = method.clone();
        move || {
            let _request = span.enter();
            let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
            route(&manager, &peer, &method, &segments, &body).map(Reply::encode)
        }
    })
    .await
    .map_err(|_| internal())?
    .map_err(Early::Fault)
}

fn internal() -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "The server has either erred or is incapable of performing the requested operation.",
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    volume: Destination,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdoptBody {
    source_id: String,
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("Invalid peer request body: {e}")))
}

fn route(m: &Manager, peer: &Peer, method: &Method, segments: &[&str], body: &[u8]) -> Result<Reply, ApiError> {
    match (method, segments) {
        (&Method::POST, ["volumes"]) => {
            m.accept_migration(peer, &parse::<CreateBody>(body)?.volume)?;
            Ok(Reply { status: StatusCode::CREATED, body: Some(json!({})), etag: None })
        }
        (&Method::POST, ["volumes", id, "adopt"]) => {
            m.adopt_migration(peer, id, &parse::<AdoptBody>(body)?.source_id)?;
            Ok(Reply::ok(json!({})))
        }
        (&Method::DELETE, ["volumes", id]) => {
            m.abort_migration(peer, id)?;
            Ok(Reply::empty(StatusCode::NO_CONTENT))
        }
        (&Method::GET, ["pools"]) => Ok(Reply::ok(m.pools_for_peer())),
        (&Method::GET, ["jobs", id]) => {
            let id = id.parse().map_err(|_| ApiError::not_found(format!("Job {id} could not be found.")))?;
            Ok(Reply::ok(m.peer_job(peer, id)?))
        }
        (_, ["pools"] | ["volumes"] | ["volumes", _] | ["volumes", _, "adopt" | "data"] | ["jobs", _]) => {
            Err(bad_method())
        }
        _ => Err(ApiError::resource_not_found()),
    }
}

/// Moves the request body's frames to the blocking writer; each must arrive
/// within `timeout` (a peer that stopped sending is a cut stream).
async fn pump(mut body: Body, tx: tokio::sync::mpsc::Sender<io::Result<Bytes>>, timeout: std::time::Duration) {
    loop {
        let next = match tokio::time::timeout(timeout, body.frame()).await {
            Ok(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => Ok(data),
                Err(_) => continue, // trailers
            },
            Ok(Some(Err(e))) => Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("the stream broke: {e}"))),
            Ok(None) => return,
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "the stream stopped moving")),
        };
        let failed = next.is_err();
        if tx.send(next).await.is_err() || failed {
            return;
        }
    }
}

/// The body as the copy engine reads it (on a blocking thread).
struct BodyReader {
    rx: tokio::sync::mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(data)) => self.current = data,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}
