//! Migration to a pool of another agent (a peer, `[[peers]]`), and the peer's
//! half: receiving it.
//!
//! The source agent (A) runs the job (JobSpec::MigrateToPeer): it asks the
//! peer (B) to create the destination (a record with `migration_status:
//! target:<source id>` and a blank volume on the named pool), streams the
//! source into it, compares the checksum B computed of what arrived with its
//! own of what it read, and only then gives up the source: its bytes go, B
//! adopts the destination under the source's id (the pool object renamed, the
//! record re-made with the source's metadata), and A's record goes. A failure
//! before the source is given up asks B to delete the destination (best
//! effort); B also asks A, at its start and every five minutes, about each
//! target it holds, and deletes those whose job failed with the source kept.
//!
//! Every call carries this agent's name and the pair's token (never logged);
//! B refuses anything else (api/peer.rs).
//!
//! The stream (`PUT .../data`, chunked) is frames in increasing offset order:
//! `D` offset:u64 len:u32 and the bytes, `Z` offset:u64 len:u64 (a zero run,
//! nothing more crosses), and `E` at the end; big-endian. A stream that ends
//! without `E` is cut, never a short copy.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::jobs::{StepError, gave_up_source};
use super::{Caller, Manager, ManagerError, Result};
use crate::blockdev::engine::{Chunk, CopyOptions, CopySummary, Sink, Source};
use crate::config::PeerConfig;
use crate::image::http::{self, Endpoint, Streaming};
use crate::model::{AttachStatus, Job, JobSpec, JobState, MigrationStatus, Volume, VolumeSource, VolumeStatus, now};
use crate::pool::PoolError;
use crate::store::Tx;

/// Admin metadata of a destination: the peer that asked for it and its job
/// (what reconciliation asks about). Dropped when the volume is adopted.
const FROM_PEER: &str = "ember_migration_peer";
const FROM_JOB: &str = "ember_migration_job";

/// Another agent, as this one calls it.
#[derive(Clone)]
pub struct Peer {
    pub name: String,
    url: String,
    endpoint: Endpoint,
    token: String,
    timeout: Duration,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer").field("name", &self.name).field("url", &self.url).finish_non_exhaustive()
    }
}

/// Why a call to a peer failed. None of them holds the token.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("no peer named {0} is configured on this agent")]
    Unknown(String),
    #[error("peer {peer} ({url}) could not be reached: {error}")]
    Unreachable { peer: String, url: String, error: io::Error },
    #[error("the stream to peer {peer} broke: {error}")]
    Broke { peer: String, error: io::Error },
    #[error("peer {0} refused this agent's credential")]
    Credential(String),
    #[error("peer {peer} refused: {message}")]
    Refused { peer: String, status: u16, message: String },
}

impl Peer {
    pub fn from_config(c: &PeerConfig) -> std::result::Result<Peer, String> {
        Ok(Peer {
            name: c.name.clone(),
            url: c.url.clone(),
            endpoint: Endpoint::parse(&c.url)?,
            token: c.token.clone(),
            timeout: Duration::from_secs(c.timeout),
        })
    }

    /// Whether `token` is this peer's (in constant time).
    pub fn admits(&self, token: &str) -> bool {
        let (a, b) = (self.token.as_bytes(), token.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }

    fn headers<'a>(&'a self, me: &'a str) -> [(&'a str, &'a str); 4] {
        [
            ("X-Ember-Peer", me),
            ("X-Ember-Peer-Token", self.token.as_str()),
            ("Content-Type", "application/json"),
            ("Accept", "application/json"),
        ]
    }

    fn unreachable(&self, error: io::Error) -> PeerError {
        PeerError::Unreachable { peer: self.name.clone(), url: self.url.clone(), error }
    }

    /// One JSON call; what a 2xx answer holds.
    fn call(&self, me: &str, method: &str, path: &str, body: Option<&Value>) -> std::result::Result<Value, PeerError> {
        let bytes = body.map(|b| serde_json::to_vec(b).unwrap_or_default());
        let body = bytes.as_deref().map_or(http::Body::None, http::Body::Bytes);
        let response = http::request(&self.endpoint, self.timeout, method, path, &self.headers(me), body)
            .map_err(|e| self.unreachable(e))?;
        self.answer(response)
    }

    fn answer(&self, response: http::Response) -> std::result::Result<Value, PeerError> {
        let status = response.status;
        let text = response.text(1 << 20).map_err(|e| self.unreachable(e))?;
        match status {
            200..=299 => Ok(serde_json::from_str(&text).unwrap_or(Value::Null)),
            401 => Err(PeerError::Credential(self.name.clone())),
            _ => {
                // A Cinder fault body: {"<kind>": {"message": ..., "code": ...}}.
                let message = serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| v.as_object()?.values().next()?.get("message")?.as_str().map(str::to_string))
                    .unwrap_or_else(|| format!("HTTP {status}"));
                Err(PeerError::Refused { peer: self.name.clone(), status, message })
            }
        }
    }
}

/// What a peer is asked to create: the destination of a migration, with what
/// the volume will keep once adopted.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    pub id: String,
    pub source_id: String,
    /// The source agent's job (what reconciliation asks about).
    pub job: i64,
    /// `host@backend#pool` (or `host@backend`) of the peer's pool.
    pub host: String,
    pub size: i64,
    pub project_id: String,
    pub user_id: String,
    pub name: Option<String>,
    pub description: Option<String>,
    /// The volume type, by name (ids are each agent's own).
    pub volume_type: String,
    pub bootable: bool,
    pub created_at: String,
    pub metadata: BTreeMap<String, String>,
    pub admin_metadata: BTreeMap<String, String>,
    pub image_metadata: BTreeMap<String, String>,
}

/// The source side's stream: each piece the copy engine hands over becomes a
/// frame; `finish` ends the body and reads the peer's summary of what it wrote.
struct PeerSink<'a> {
    peer: &'a Peer,
    stream: Option<Streaming>,
    written: Option<CopySummary>,
    /// Why the stream failed, for the job's error: the engine only sees an I/O error.
    failure: Option<PeerError>,
}

impl PeerSink<'_> {
    fn stream(&mut self) -> io::Result<&mut Streaming> {
        self.stream.as_mut().ok_or_else(|| io::Error::other("the stream to the peer has ended"))
    }

    /// Keeps `failure` as the cause; the engine is told it as an I/O error.
    fn failed(&mut self, failure: PeerError) -> io::Error {
        let e = io::Error::other(failure.to_string());
        self.failure = Some(failure);
        e
    }

    fn broke(&mut self, error: io::Error) -> io::Error {
        self.failed(PeerError::Broke { peer: self.peer.name.clone(), error })
    }
}

impl Sink for PeerSink<'_> {
    fn write(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let len = u32::try_from(data.len()).map_err(|_| io::Error::other("a piece of 4 GiB or more"))?;
        let mut head = [0u8; 13];
        head[0] = b'D';
        head[1..9].copy_from_slice(&offset.to_be_bytes());
        head[9..13].copy_from_slice(&len.to_be_bytes());
        let sent = self.stream()?.chunk(&[&head, data]);
        sent.map_err(|e| self.broke(e))
    }

    fn zero(&mut self, offset: u64, len: u64) -> io::Result<()> {
        let mut head = [0u8; 17];
        head[0] = b'Z';
        head[1..9].copy_from_slice(&offset.to_be_bytes());
        head[9..17].copy_from_slice(&len.to_be_bytes());
        let sent = self.stream()?.chunk(&[&head]);
        sent.map_err(|e| self.broke(e))
    }

    fn finish(&mut self) -> io::Result<()> {
        self.stream()?.chunk(&[b"E"]).map_err(|e| self.broke(e))?;
        let stream = self.stream.take().ok_or_else(|| io::Error::other("the stream to the peer has ended"))?;
        let response = stream.finish().map_err(|e| self.broke(e))?;
        let answer = self.peer.answer(response).map_err(|e| self.failed(e))?;
        let summary = || -> Option<CopySummary> {
            Some(CopySummary {
                bytes: answer.get("bytes")?.as_u64()?,
                data_bytes: answer.get("data_bytes")?.as_u64()?,
                checksum: answer.get("checksum")?.as_str()?.to_string(),
            })
        };
        self.written = Some(summary().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, format!("peer {} answered no copy summary", self.peer.name))
        })?);
        Ok(())
    }
}

/// The peer side's stream: frames back into the copy engine's pieces.
pub struct Frames<R> {
    inner: R,
    len: u64,
    /// Where the next frame may start at the earliest.
    pos: u64,
    /// The data frame being handed out: its next offset and bytes left.
    data: Option<(u64, u64)>,
    ended: bool,
}

impl<R: Read + Send> Frames<R> {
    pub fn new(inner: R, len: u64) -> Self {
        Frames { inner, len, pos: 0, data: None, ended: false }
    }

    fn u64(&mut self) -> io::Result<u64> {
        let mut b = [0u8; 8];
        self.inner.read_exact(&mut b).map_err(cut)?;
        Ok(u64::from_be_bytes(b))
    }

    /// A frame's span, refused out of order or past the volume's end.
    fn span(&mut self, offset: u64, len: u64) -> io::Result<()> {
        if offset < self.pos || offset.checked_add(len).is_none_or(|end| end > self.len) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a frame at {offset} (+{len}) is out of order or past the end ({})", self.len),
            ));
        }
        self.pos = offset + len;
        Ok(())
    }

    /// Reads what is left of the body (after a failed write: the sender gets
    /// the answer, not a reset connection).
    fn drain(&mut self) {
        let _ = io::copy(&mut self.inner, &mut io::sink());
    }
}

fn cut(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        io::Error::new(io::ErrorKind::UnexpectedEof, "the stream ended before its end mark: it was cut")
    } else {
        e
    }
}

impl<R: Read + Send> Source for Frames<R> {
    fn len(&self) -> u64 {
        self.len
    }

    fn next(&mut self, buf: &mut [u8]) -> io::Result<Option<Chunk>> {
        loop {
            if let Some((offset, left)) = self.data.filter(|&(_, left)| left > 0) {
                let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                self.inner.read_exact(&mut buf[..n]).map_err(cut)?;
                self.data = Some((offset + n as u64, left - n as u64));
                return Ok(Some(Chunk::Data { offset, len: n }));
            }
            if self.ended {
                return Ok(None);
            }
            let mut tag = [0u8; 1];
            self.inner.read_exact(&mut tag).map_err(cut)?;
            match tag[0] {
                b'D' => {
                    let offset = self.u64()?;
                    let mut len = [0u8; 4];
                    self.inner.read_exact(&mut len).map_err(cut)?;
                    let len = u64::from(u32::from_be_bytes(len));
                    self.span(offset, len)?;
                    self.data = Some((offset, len));
                }
                b'Z' => {
                    let (offset, len) = (self.u64()?, self.u64()?);
                    self.span(offset, len)?;
                    return Ok(Some(Chunk::Zero { offset, len }));
                }
                b'E' => self.ended = true,
                other => {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, format!("unknown frame tag {other:#x}")));
                }
            }
        }
    }
}

impl Manager {
    /// This agent's name to its peers: the host part of its pools' host strings.
    fn own_name(&self) -> &str {
        self.default_pool().host.split('@').next().unwrap_or_default()
    }

    fn peer(&self, name: &str) -> std::result::Result<&Peer, PeerError> {
        self.settings.peers.iter().find(|p| p.name == name).ok_or_else(|| PeerError::Unknown(name.to_string()))
    }

    /// The peer a destination `host@backend#pool` (or cluster) names, if any.
    pub(super) fn peer_for(&self, destination: &str) -> Option<&Peer> {
        let host = destination.split(['@', '#']).next().unwrap_or_default();
        self.settings.peers.iter().find(|p| p.name == host)
    }

    /// The peer whose name and token a request carries; None for anything else.
    pub fn peer_calling(&self, name: &str, token: &str) -> Option<&Peer> {
        self.settings.peers.iter().find(|p| p.name == name && p.admits(token))
    }

    /// Inside the request's transaction: the source marked and the job
    /// journaled; the destination is the peer's to create (the job's first step).
    pub(super) fn begin_peer_migration(
        &self,
        tx: &Tx,
        caller: &Caller,
        v: &Volume,
        (peer, host): (&str, &str),
        new_type: Option<&crate::model::VolumeType>,
    ) -> Result<super::jobs::Pending> {
        let peer = self.peer(peer).map_err(|e| ManagerError::Invalid(e.to_string()))?;
        let (status, multiattach) = match new_type {
            Some(t) => (VolumeStatus::Retyping, t.multiattach()),
            None => (VolumeStatus::Maintenance, v.multiattach),
        };
        super::migration::mark_source(tx, v, status, multiattach)?;
        tracing::info!(volume = %v.id, from = %v.host, to = %host, peer = %peer.name, "migration to a peer starts");
        let spec = JobSpec::MigrateToPeer {
            volume: v.id.clone(),
            new_volume: uuid::Uuid::new_v4().to_string(),
            peer: peer.name.clone(),
            host: host.to_string(),
            new_type_name: new_type.map(|t| t.name.clone()),
        };
        Ok(self.enqueue(tx, caller, &v.project_id, spec)?)
    }

    /// Step: the destination made on the peer (again, after a crash: the peer
    /// answers a repeat as done).
    pub(super) fn remote_create(
        &self,
        job: &Job,
        peer: &str,
        volume: &str,
        new_volume: &str,
        host: &str,
        new_type_name: Option<&str>,
    ) -> std::result::Result<(), StepError> {
        let peer = self.peer(peer)?;
        let (v, type_name) = self.store.read(|tx| {
            let v = tx.volume(volume)?.ok_or_else(|| PoolError::NotFound { what: format!("volume {volume}") })?;
            let name = tx.volume_type(&v.volume_type_id)?.map(|t| t.name);
            Ok::<_, StepError>((v, name))
        })?;
        let destination = Destination {
            id: new_volume.to_string(),
            source_id: v.id.clone(),
            job: job.id,
            host: host.to_string(),
            size: v.size,
            project_id: v.project_id,
            user_id: v.user_id,
            name: v.name,
            description: v.description,
            volume_type: new_type_name
                .map(str::to_string)
                .or(type_name)
                .unwrap_or_else(|| crate::model::DEFAULT_TYPE_NAME.to_string()),
            bootable: v.bootable,
            created_at: v.created_at,
            metadata: v.metadata,
            admin_metadata: v.admin_metadata,
            image_metadata: v.image_metadata,
        };
        peer.call(self.own_name(), "POST", "/ember/v1/peer/volumes", Some(&json!({ "volume": destination })))?;
        Ok(())
    }

    /// Step: the source streamed to the peer's destination, and what the peer
    /// wrote compared with what was read.
    pub(super) fn remote_copy(
        &self,
        job: &Job,
        peer: &str,
        from: &str,
        to: &str,
    ) -> std::result::Result<(), StepError> {
        let peer = self.peer(peer)?;
        super::migration::now_migrating(self, from)?;
        let source = self.pool_of(from)?;
        let copy = self.register_copy(job, from, to);
        let path = format!("/ember/v1/peer/volumes/{to}/data");
        let stream = Streaming::start(&peer.endpoint, peer.timeout, "PUT", &path, &peer.headers(self.own_name()))
            .map_err(|e| peer.unreachable(e))?;
        let mut sink = PeerSink { peer, stream: Some(stream), written: None, failure: None };
        let read = source.read_volume(from, &mut sink, &copy.options);
        // The peer's side of a failure is its cause (the reading side's is its own).
        let read = match (read, sink.failure.take()) {
            (Err(PoolError::Copy(crate::blockdev::engine::CopyError::Write(_))), Some(failure)) => {
                return Err(failure.into());
            }
            (read, _) => read?,
        };
        let written = sink.written.ok_or_else(|| PoolError::Refused("the peer's answer went missing".into()))?;
        super::migration::verify(&read, &written)?;
        tracing::info!(
            volume = from, destination = to, peer = %peer.name, bytes = read.bytes, data_bytes = read.data_bytes,
            checksum = %read.checksum, "migration stream verified by the peer"
        );
        Ok(())
    }

    /// Step: the peer adopts the destination under the source's id. A peer that
    /// cannot be reached, or is still busy with a stream that broke, is asked
    /// again for a while: the source is gone by now.
    pub(super) fn remote_adopt(&self, peer: &str, from: &str, to: &str) -> std::result::Result<(), StepError> {
        let peer = self.peer(peer)?;
        let path = format!("/ember/v1/peer/volumes/{from}/adopt");
        let body = json!({ "source_id": to });
        let mut attempt = 0;
        loop {
            match peer.call(self.own_name(), "POST", &path, Some(&body)) {
                Ok(_) => return Ok(()),
                Err(e @ (PeerError::Unreachable { .. } | PeerError::Refused { status: 409, .. }))
                    if attempt < 30 && !self.stopping() =>
                {
                    attempt += 1;
                    tracing::warn!(volume = to, error = %e, attempt, "the peer did not adopt the volume; asking again");
                    std::thread::sleep(Duration::from_secs(2));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// After a failure before the source was given up: the peer's destination
    /// deleted (best effort; the peer's reconciliation catches what this misses).
    pub(super) fn discard_remote(&self, peer: &str, new_volume: &str) {
        let Ok(peer) = self.peer(peer) else { return };
        let path = format!("/ember/v1/peer/volumes/{new_volume}");
        for attempt in 0..10 {
            match peer.call(self.own_name(), "DELETE", &path, None) {
                Ok(_) => return,
                // Still receiving the stream that just broke: a moment later.
                Err(PeerError::Refused { status: 409, .. }) if attempt < 9 => {
                    std::thread::sleep(Duration::from_secs(1))
                }
                Err(e) => {
                    tracing::error!(destination = new_volume, error = %e, "could not delete a failed migration's destination on its peer; its reconciliation will");
                    return;
                }
            }
        }
    }

    /// This agent's pools, as a peer places a retype on them.
    pub fn pools_for_peer(&self) -> Value {
        let pools: Vec<Value> =
            self.pools.iter().map(|s| json!({"name": s.host, "backend_name": s.backend_name})).collect();
        json!({ "pools": pools })
    }

    /// The first peer pool serving `backend` (a volume type's
    /// `volume_backend_name`), asked of each peer in turn; peers that cannot
    /// be asked are passed over (logged).
    pub(super) fn peer_pool_serving(&self, backend: &str) -> Option<(String, String)> {
        for peer in &self.settings.peers {
            match peer.call(self.own_name(), "GET", "/ember/v1/peer/pools", None) {
                Ok(answer) => {
                    let pools = answer.get("pools").and_then(Value::as_array).cloned().unwrap_or_default();
                    let found = pools.iter().find(|p| p.get("backend_name").and_then(Value::as_str) == Some(backend));
                    if let Some(host) = found.and_then(|p| p.get("name")?.as_str()) {
                        return Some((peer.name.clone(), host.to_string()));
                    }
                }
                Err(e) => tracing::warn!(peer = %peer.name, error = %e, "could not list a peer's pools"),
            }
        }
        None
    }

    /// A peer asking how its migration job `id` stands (for a target it holds).
    pub fn peer_job(&self, from: &Peer, id: i64) -> Result<Value> {
        let status = self.store.read(|tx| tx.job(id))?;
        let job = status.as_ref().and_then(|s| s.row.decode().ok().map(|j| (s, j)));
        match job {
            Some((status, job)) if matches!(&job.spec, JobSpec::MigrateToPeer { peer, .. } if *peer == from.name) => {
                let failed = status.state == JobState::Failed.as_str();
                let step = usize::try_from(status.row.step).unwrap_or(0);
                Ok(json!({ "state": status.state, "source_kept": !(failed && gave_up_source(&job.spec, step)) }))
            }
            _ => Err(ManagerError::NotFound(format!("Job {id} of peer {} could not be found.", from.name))),
        }
    }

    /// A peer's destination: the record (`creating`, `target:<source>`) and a
    /// blank volume on the pool it names. A repeat of the same request is done.
    pub fn accept_migration(&self, from: &Peer, d: &Destination) -> Result<()> {
        let slot = self
            .pool_named(&d.host)
            .ok_or_else(|| ManagerError::Invalid(format!("No pool named {} on this agent.", d.host)))?;
        let size_gib = u64::try_from(d.size).ok().filter(|&s| s > 0);
        let size_gib = size_gib.ok_or_else(|| ManagerError::Invalid(format!("Invalid size {}.", d.size)))?;
        let capacities = self.capacities();
        let inserted = self.store.write(|tx| {
            if let Some(existing) = tx.volume(&d.id)? {
                return match is_target_of(&existing, from) == Some(d.source_id.as_str()) {
                    true => Ok(false),
                    false => Err(ManagerError::Conflict(format!("Volume {} already exists on this agent.", d.id))),
                };
            }
            if tx.volume(&d.source_id)?.is_some() {
                return Err(ManagerError::Conflict(format!("Volume {} already exists on this agent.", d.source_id)));
            }
            let vtype = tx.volume_type(&d.volume_type)?.ok_or_else(|| {
                ManagerError::Invalid(format!("No volume type named {} on this agent.", d.volume_type))
            })?;
            self.check_capacity(tx, &slot.host, &capacities, d.size)?;
            let mut admin_metadata = d.admin_metadata.clone();
            admin_metadata.insert(FROM_PEER.to_string(), from.name.clone());
            admin_metadata.insert(FROM_JOB.to_string(), d.job.to_string());
            tx.insert_volume(&Volume {
                id: d.id.clone(),
                project_id: d.project_id.clone(),
                user_id: d.user_id.clone(),
                name: d.name.clone(),
                description: d.description.clone(),
                size: d.size,
                status: VolumeStatus::Creating,
                previous_status: None,
                attach_status: AttachStatus::Detached,
                migration_status: Some(MigrationStatus::Target(d.source_id.clone())),
                multiattach: vtype.multiattach(),
                volume_type_id: vtype.id,
                availability_zone: self.settings.availability_zone.clone(),
                bootable: d.bootable,
                snapshot_id: None,
                source_volid: None,
                host: slot.host.clone(),
                group_id: None,
                created_at: d.created_at.clone(),
                updated_at: Some(now()),
                metadata: d.metadata.clone(),
                admin_metadata,
                image_metadata: d.image_metadata.clone(),
                attachments: Vec::new(),
            })?;
            Ok(true)
        })?;
        if let Err(e) = slot.pool.create_volume(&d.id, size_gib, &VolumeSource::Blank) {
            if inserted {
                self.store.write(|tx| tx.delete_volume(&d.id))?;
            }
            return Err(ManagerError::Backend(format!("The destination could not be created: {}", e.user_reason())));
        }
        tracing::info!(destination = %d.id, source = %d.source_id, peer = %from.name, host = %slot.host, "migration destination created for a peer");
        Ok(())
    }

    /// A peer's stream written into its destination; what was written.
    pub fn receive_migration(&self, from: &Peer, id: &str, body: &mut (dyn Read + Send)) -> Result<CopySummary> {
        let target = self.store.read(|tx| tx.volume(id))?;
        let Some(target) = target.filter(|v| is_target_of(v, from).is_some()) else {
            return Err(ManagerError::NotFound(format!("Migration destination {id} could not be found.")));
        };
        let _receiving = self.receiving(id)?;
        let pool = self.slot(&target.host)?.pool.as_ref();
        let mut frames = Frames::new(body, super::gib(target.size) * crate::pool::GIB);
        match pool.write_volume(id, &mut frames, &CopyOptions::default(), true) {
            Ok(written) => Ok(written),
            Err(e) => {
                frames.drain();
                tracing::error!(destination = id, peer = %from.name, error = %e, "a migration stream from a peer failed");
                Err(ManagerError::Backend(format!("Writing the destination failed: {}", e.user_reason())))
            }
        }
    }

    /// The peer's source is gone: the destination becomes the volume, under
    /// the source's id. A repeat once done is done.
    pub fn adopt_migration(&self, from: &Peer, id: &str, source_id: &str) -> Result<()> {
        let (target, adopted) = self.store.read(|tx| Ok::<_, ManagerError>((tx.volume(id)?, tx.volume(source_id)?)))?;
        let target = match target {
            Some(t) if is_target_of(&t, from) == Some(source_id) => t,
            None if adopted.is_some_and(|v| self.slot_index(&v.host).is_some()) => return Ok(()),
            _ => {
                return Err(ManagerError::NotFound(format!(
                    "Migration destination {id} of {source_id} could not be found."
                )));
            }
        };
        let _busy = self.receiving(id)?;
        self.slot(&target.host)?.pool.rename_volume(id, source_id)?;
        self.store.write(|tx| {
            tx.delete_volume(id)?;
            let mut admin_metadata = target.admin_metadata.clone();
            admin_metadata.remove(FROM_PEER);
            admin_metadata.remove(FROM_JOB);
            tx.insert_volume(&Volume {
                id: source_id.to_string(),
                status: VolumeStatus::Available,
                migration_status: Some(MigrationStatus::Success),
                admin_metadata,
                updated_at: Some(now()),
                ..target.clone()
            })
        })?;
        tracing::info!(volume = source_id, peer = %from.name, host = %target.host, "volume adopted from a peer");
        Ok(())
    }

    /// The peer gave up its migration: its destination goes. Only targets of
    /// that peer: anything else is refused.
    pub fn abort_migration(&self, from: &Peer, id: &str) -> Result<()> {
        let Some(target) = self.store.read(|tx| tx.volume(id))? else { return Ok(()) };
        if is_target_of(&target, from).is_none() {
            return Err(ManagerError::Conflict(format!(
                "Volume {id} is not a migration destination of {}.",
                from.name
            )));
        }
        let _busy = self.receiving(id)?;
        self.slot(&target.host)?.pool.delete_volume(id)?;
        self.store.write(|tx| tx.delete_volume(id))?;
        tracing::info!(destination = id, peer = %from.name, "a peer's failed migration destination deleted");
        Ok(())
    }

    /// Marks `id` as busy with a peer's call (one at a time); unmarked on drop.
    fn receiving(&self, id: &str) -> Result<Receiving<'_>> {
        let mut busy = self.receiving.lock().unwrap_or_else(|p| p.into_inner());
        if !busy.insert(id.to_string()) {
            return Err(ManagerError::Conflict(format!("Migration destination {id} is busy with another call.")));
        }
        Ok(Receiving { manager: self, id: id.to_string() })
    }

    /// Each destination a peer made here whose job failed with the source
    /// kept is deleted; one whose source is gone is kept (it holds the only
    /// copy) and reported. Returns how many went.
    pub fn reconcile_peer_targets(&self) -> Result<usize> {
        if self.settings.peers.is_empty() {
            return Ok(0);
        }
        let targets: Vec<Volume> = self
            .store
            .read(|tx| tx.volumes(None))?
            .into_iter()
            .filter(|v| {
                matches!(v.migration_status, Some(MigrationStatus::Target(_)))
                    && v.admin_metadata.contains_key(FROM_PEER)
            })
            .collect();
        let mut deleted = 0;
        for t in targets {
            let (name, job) = (&t.admin_metadata[FROM_PEER], t.admin_metadata.get(FROM_JOB));
            let Ok(peer) = self.peer(name) else {
                tracing::warn!(destination = %t.id, peer = %name, "a migration destination of a peer no longer configured");
                continue;
            };
            let path = format!("/ember/v1/peer/jobs/{}", job.map_or("-", String::as_str));
            let answer = match peer.call(self.own_name(), "GET", &path, None) {
                Ok(answer) => answer,
                Err(e) => {
                    tracing::warn!(destination = %t.id, error = %e, "could not ask a peer about its migration");
                    continue;
                }
            };
            let state = answer.get("state").and_then(Value::as_str).unwrap_or_default();
            let kept = answer.get("source_kept").and_then(Value::as_bool).unwrap_or(false);
            match (state, kept) {
                ("running", _) => {}
                ("failed" | "cancelled", true) => match self.abort_migration(peer, &t.id) {
                    Ok(()) => deleted += 1,
                    Err(e) => {
                        tracing::warn!(destination = %t.id, error = %e, "could not delete an orphaned migration destination")
                    }
                },
                _ => tracing::error!(
                    destination = %t.id, peer = %name, state, "a migration destination whose source is gone: kept, it may hold the only copy"
                ),
            }
        }
        Ok(deleted)
    }
}

/// The source id of a destination `from` made, if `v` is one.
fn is_target_of<'v>(v: &'v Volume, from: &Peer) -> Option<&'v str> {
    match &v.migration_status {
        Some(MigrationStatus::Target(source)) if v.admin_metadata.get(FROM_PEER) == Some(&from.name) => Some(source),
        _ => None,
    }
}

struct Receiving<'a> {
    manager: &'a Manager,
    id: String,
}

impl Drop for Receiving<'_> {
    fn drop(&mut self) {
        self.manager.receiving.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(bytes: &[u8], len: u64) -> io::Result<Vec<Chunk>> {
        let mut f = Frames::new(bytes, len);
        let mut buf = [0u8; 4];
        let mut out = Vec::new();
        while let Some(c) = f.next(&mut buf)? {
            out.push(c);
        }
        Ok(out)
    }

    fn d(offset: u64, data: &[u8]) -> Vec<u8> {
        let mut v = vec![b'D'];
        v.extend(offset.to_be_bytes());
        v.extend(u32::try_from(data.len()).unwrap().to_be_bytes());
        v.extend(data);
        v
    }

    fn z(offset: u64, len: u64) -> Vec<u8> {
        let mut v = vec![b'Z'];
        v.extend(offset.to_be_bytes());
        v.extend(len.to_be_bytes());
        v
    }

    #[test]
    fn frames_decode_in_buffer_sized_pieces_and_a_cut_stream_is_an_error() {
        let stream = [d(0, b"abcdef"), z(6, 100), d(200, b"xy"), b"E".to_vec()].concat();
        let chunks = frames(&stream, 1000).unwrap();
        assert_eq!(
            chunks,
            [
                Chunk::Data { offset: 0, len: 4 },
                Chunk::Data { offset: 4, len: 2 },
                Chunk::Zero { offset: 6, len: 100 },
                Chunk::Data { offset: 200, len: 2 },
            ]
        );
        // Without the end mark, or cut inside a frame: never a short copy.
        let cut = frames(&stream[..stream.len() - 1], 1000).unwrap_err();
        assert_eq!(cut.kind(), io::ErrorKind::UnexpectedEof);
        assert!(frames(&stream[..5], 1000).is_err());
    }

    #[test]
    fn frames_out_of_order_past_the_end_or_unknown_are_refused() {
        for bad in [
            [d(10, b"ab"), d(0, b"cd"), b"E".to_vec()].concat(),
            [d(998, b"abc"), b"E".to_vec()].concat(),
            [z(0, u64::MAX), b"E".to_vec()].concat(),
            b"Q".to_vec(),
        ] {
            assert_eq!(frames(&bad, 1000).unwrap_err().kind(), io::ErrorKind::InvalidData);
        }
    }

    #[test]
    fn tokens_are_compared_whole() {
        let c = PeerConfig {
            name: "b".into(),
            url: "http://127.0.0.2:8776".into(),
            token: "0123456789abcdef".into(),
            timeout: 5,
        };
        let p = Peer::from_config(&c).unwrap();
        assert!(p.admits("0123456789abcdef"));
        for bad in ["0123456789abcdeF", "0123456789abcde", "0123456789abcdef0", ""] {
            assert!(!p.admits(bad), "{bad}");
        }
        assert!(!format!("{p:?}{c:?}").contains("0123456789abcdef"), "the token is never shown");
    }
}
