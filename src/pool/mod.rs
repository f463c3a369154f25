//! Storage pools: where volume and snapshot bytes live. `file` (sparse files and
//! loop devices) is the embedded default; `lvm` comes next behind the same trait.
//!
//! Every call is blocking (the manager runs them on blocking threads) and idempotent:
//! a job resumed after a crash calls the same step again and gets `AlreadyPresent`,
//! `Absent` or `Unchanged` instead of an error.

pub mod file;
pub mod lvm;
#[cfg(test)]
pub mod sim;

use std::path::PathBuf;

use crate::blockdev::BlockError;
use crate::blockdev::engine::{self, CopyError, CopyOptions, CopySummary};
pub use crate::model::VolumeSource as Source;

pub const GIB: u64 = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("{what} not found in the pool")]
    NotFound { what: String },
    #[error("{step} {path}: {source}")]
    Io {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Block(#[from] BlockError),
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Copy(#[from] CopyError),
}

impl PoolError {
    pub fn io(step: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        PoolError::Io { step, path: path.into(), source }
    }

    /// What may be shown to the volume's owner: the operating system's error, not
    /// the paths or commands behind it (those stay in the log and the job row).
    pub fn user_reason(&self) -> String {
        let os = |e: &std::io::Error| match e.raw_os_error() {
            Some(code) => nix::errno::Errno::from_raw(code).desc().to_string(),
            None => e.kind().to_string(),
        };
        match self {
            PoolError::NotFound { .. } => "the data to work on was not found in the storage pool".to_string(),
            PoolError::Io { source, .. } | PoolError::Block(BlockError::Io { source, .. }) => os(source),
            PoolError::Block(BlockError::Blkid { .. }) => "probing the device for signatures failed".to_string(),
            PoolError::Refused(_) => "the storage backend refused the operation".to_string(),
            PoolError::Copy(e) => e.user_reason(),
        }
    }
}

/// Writes `source` onto the device or file at `target` (the whole of it: past the
/// source's end it reads zeros), zero runs by `policy`.
fn write_device(
    target: &std::path::Path,
    policy: engine::ZeroPolicy,
    source: &mut dyn engine::Source,
    options: &CopyOptions,
) -> Result<CopySummary, PoolError> {
    let mut sink =
        engine::DeviceSink::open(target, policy).map_err(|e| PoolError::io("open for writing", target, e))?;
    let options = CopyOptions { dest_len: Some(sink.len()), ..options.clone() };
    Ok(engine::copy(source, &mut sink, &options)?)
}

/// Streams the device or file at `path` into `sink`.
fn read_device(
    path: &std::path::Path,
    sink: &mut dyn engine::Sink,
    options: &CopyOptions,
) -> Result<CopySummary, PoolError> {
    let mut source = engine::DeviceSource::open(path).map_err(|e| PoolError::io("open for reading", path, e))?;
    Ok(engine::copy(&mut source, sink, options)?)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    Created,
    AlreadyPresent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removed {
    Removed,
    Absent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resized {
    Resized { from: u64, to: u64 },
    Unchanged,
}

/// Bytes of the backing filesystem, and what volumes hold of it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Capacity {
    pub total_bytes: u64,
    pub free_bytes: u64,
    /// Bytes actually allocated by volumes and snapshots.
    pub allocated_bytes: u64,
    /// Thin pools: how full their data and metadata are, in hundredths of a percent
    /// (a pool whose metadata fills up stops serving writes).
    pub thin_data_hundredths: Option<u64>,
    pub thin_metadata_hundredths: Option<u64>,
}

/// Something in the pool that ember does not manage (yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manageable {
    pub name: String,
    pub size_bytes: u64,
    pub in_use: bool,
}

/// A snapshot in the pool, managed or not, and the volume it was taken of where
/// the backend records that (an LVM snapshot's origin; a file has no such mark).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExistingSnapshot {
    pub name: String,
    pub size_bytes: u64,
    /// The name of the origin volume in the pool, if the backend knows it.
    pub origin: Option<String>,
    pub in_use: bool,
}

pub trait Pool: Send + Sync {
    fn capacity(&self) -> Result<Capacity, PoolError>;
    /// Creates the volume of `size_gib` GiB from `source`.
    fn create_volume(&self, id: &str, size_gib: u64, source: &Source) -> Result<Created, PoolError>;
    /// Clears (per the pool's policy), wipes signatures, and removes the volume.
    fn delete_volume(&self, id: &str) -> Result<Removed, PoolError>;
    /// Grows the volume; attached devices learn the new size.
    fn extend_volume(&self, id: &str, new_size_gib: u64) -> Result<Resized, PoolError>;
    fn create_snapshot(&self, snapshot_id: &str, volume_id: &str) -> Result<Created, PoolError>;
    fn delete_snapshot(&self, snapshot_id: &str) -> Result<Removed, PoolError>;
    /// Puts the snapshot's bytes back into the volume, in place.
    fn revert_to_snapshot(&self, volume_id: &str, snapshot_id: &str) -> Result<(), PoolError>;
    /// The block device serving the volume (exports and device copies use it);
    /// the same device again if one is bound already.
    fn attach_device(&self, id: &str) -> Result<PathBuf, PoolError>;
    /// Releases what `attach_device` bound.
    fn detach_device(&self, id: &str) -> Result<Removed, PoolError>;
    /// The block device serving the volume now, if one is (nothing is bound).
    fn bound_device(&self, id: &str) -> Option<PathBuf>;
    /// Everything in the pool, managed or not; the manager tells them apart.
    fn list_existing(&self) -> Result<Vec<Manageable>, PoolError>;
    /// Name under which a volume with this id is kept (what unmanage leaves behind).
    fn volume_name(&self, id: &str) -> String;
    /// Takes `name` under management as volume `new_id`; returns its size in bytes.
    fn manage_existing(&self, name: &str, new_id: &str) -> Result<u64, PoolError>;
    /// Gives the volume up: it stays under `volume_name(id)`, no longer marked ember's.
    fn unmanage(&self, id: &str) -> Result<(), PoolError>;
    /// Gives volume `from`'s object to volume `to` (a migration's destination
    /// becomes the migrated volume). A resumed job finds it done.
    fn rename_volume(&self, from: &str, to: &str) -> Result<(), PoolError>;
    /// Every snapshot in the pool, managed or not.
    fn list_existing_snapshots(&self) -> Result<Vec<ExistingSnapshot>, PoolError>;
    /// Name under which a snapshot with this id is kept (what unmanage leaves behind).
    fn snapshot_name(&self, id: &str) -> String;
    /// Takes the snapshot `name` of volume `volume_id` under management as
    /// snapshot `new_id`; refuses one that is not of that volume. Returns its size
    /// in bytes. A resumed job finds the rename done and gets the same answer.
    fn manage_existing_snapshot(&self, name: &str, new_id: &str, volume_id: &str) -> Result<u64, PoolError>;
    /// Gives the snapshot up: it stays under `snapshot_name(id)`, no longer ember's.
    fn unmanage_snapshot(&self, id: &str) -> Result<(), PoolError>;
    /// Writes `source` over the volume through the copy engine; the volume past
    /// the source's end reads zeros. `fresh`: the volume was just created blank,
    /// so zero runs need no writing.
    fn write_volume(
        &self,
        id: &str,
        source: &mut dyn engine::Source,
        options: &CopyOptions,
        fresh: bool,
    ) -> Result<CopySummary, PoolError>;
    /// Streams the volume's bytes into `sink` through the copy engine.
    fn read_volume(
        &self,
        id: &str,
        sink: &mut dyn engine::Sink,
        options: &CopyOptions,
    ) -> Result<CopySummary, PoolError>;
}
