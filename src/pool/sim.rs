//! A simulated pool (test builds only), after stratisd's `sim_engine`: the `Pool`
//! trait over in-memory volumes, with failures, delays and hangs injected per
//! method and per call, so the manager's every job end, every resume after a crash
//! and every lock rule can be tested without root, in milliseconds.
//!
//! Bytes are modelled by what they hold (`Bytes::Data(n)`), and copies are not
//! atomic: a copy reads its source when it starts and again when it ends, and
//! yields `Bytes::Torn` if the source changed or vanished in between, which is the
//! data loss a missing lock causes on a real pool.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::blockdev::engine::{self, Chunk};

use super::{
    Capacity, CopyOptions, CopySummary, Created, ExistingSnapshot, GIB, Manageable, Pool, PoolError, Removed, Resized,
    Source,
};

/// The `Pool` methods, as faults and the call log name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Capacity,
    CreateVolume,
    DeleteVolume,
    ExtendVolume,
    CreateSnapshot,
    DeleteSnapshot,
    Revert,
    AttachDevice,
    DetachDevice,
    ListExisting,
    Manage,
    Unmanage,
    ListExistingSnapshots,
    ManageSnapshot,
    UnmanageSnapshot,
    WriteVolume,
    ReadVolume,
    RenameVolume,
}

/// What an injected fault does to the call it hits.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Fails the call before it changes anything.
    Fail(String),
    /// Sleeps, then runs the call (in the middle of a copy: see the module doc).
    Delay(Duration),
    /// Blocks before the call changes anything, until `release`; then fails. With
    /// the runtime dropped meanwhile, this is a crash before the step.
    HangBefore,
    /// Runs the call, then blocks until `release`: a crash after the device work
    /// and before the store heard of it.
    HangAfter,
}

/// What a volume or snapshot holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bytes {
    Zeros,
    Data(u64),
    /// A copy whose source changed or disappeared while it was read.
    Torn,
    /// What the copy engine wrote, by its checksum.
    Copied(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimVolume {
    pub size: u64,
    pub bytes: Bytes,
}

/// One entry of the call log: a call began or ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Start(Op, String),
    End(Op, String),
}

#[derive(Default)]
struct State {
    volumes: BTreeMap<String, SimVolume>,
    snapshots: BTreeMap<String, SimVolume>,
    /// Things in the pool that are no volume of ember's, by name.
    foreign: BTreeMap<String, SimVolume>,
    /// Each snapshot's origin volume id (managed snapshots).
    origins: BTreeMap<String, String>,
    /// Snapshots in the pool that are no snapshot of ember's: name -> (bytes, origin name).
    foreign_snapshots: BTreeMap<String, (SimVolume, String)>,
    attached: BTreeMap<String, PathBuf>,
    calls: HashMap<Op, usize>,
    /// (op, nth call or every call, fault)
    faults: Vec<(Op, Option<usize>, Fault)>,
    hung: usize,
    released: bool,
    log: Vec<Event>,
}

pub struct SimPool {
    state: Mutex<State>,
    changed: Condvar,
    pub total_bytes: u64,
}

impl Default for SimPool {
    fn default() -> Self {
        SimPool { state: Mutex::default(), changed: Condvar::new(), total_bytes: 1 << 50 }
    }
}

fn volume_name(id: &str) -> String {
    format!("volume-{id}")
}

fn snapshot_name(id: &str) -> String {
    format!("snapshot-{id}")
}

impl SimPool {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Injects `fault` into the `nth` call of `op` (1-based; counted from now on
    /// included), or into every call with None.
    pub fn inject(&self, op: Op, nth: Option<usize>, fault: Fault) {
        let mut s = self.lock();
        let at = nth.map(|n| s.calls.get(&op).copied().unwrap_or(0) + n);
        s.faults.push((op, at, fault));
    }

    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// Waits until `n` calls are blocked in a hang.
    pub fn wait_hung(&self, n: usize) {
        let mut s = self.lock();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while s.hung < n {
            assert!(std::time::Instant::now() < deadline, "{n} hung calls expected, {} seen", s.hung);
            s = self.changed.wait_timeout(s, Duration::from_millis(50)).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    /// Lets every hung call return (its caller is gone after a simulated crash) and
    /// waits until they have; later hangs block again.
    pub fn release(&self) {
        let mut s = self.lock();
        s.released = true;
        self.changed.notify_all();
        while s.hung > 0 {
            s = self.changed.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        s.released = false;
    }

    pub fn volume(&self, id: &str) -> Option<SimVolume> {
        self.lock().volumes.get(id).cloned()
    }

    pub fn snapshot(&self, id: &str) -> Option<SimVolume> {
        self.lock().snapshots.get(id).cloned()
    }

    /// Writes to a volume, as a guest would.
    pub fn write(&self, id: &str, value: u64) {
        if let Some(v) = self.lock().volumes.get_mut(id) {
            v.bytes = Bytes::Data(value);
        }
    }

    /// Puts something that is not ember's into the pool, for manage to take.
    pub fn add_foreign(&self, name: &str, size: u64) {
        self.lock().foreign.insert(name.to_string(), SimVolume { size, bytes: Bytes::Data(0xf0) });
    }

    /// A snapshot nobody manages, named `name`, of the volume named `origin`.
    pub fn add_foreign_snapshot(&self, name: &str, size: u64, origin: &str) {
        self.lock()
            .foreign_snapshots
            .insert(name.to_string(), (SimVolume { size, bytes: Bytes::Data(0x5a) }, origin.to_string()));
    }

    pub fn calls(&self, op: Op) -> usize {
        self.lock().calls.get(&op).copied().unwrap_or(0)
    }

    pub fn log(&self) -> Vec<Event> {
        self.lock().log.clone()
    }

    /// Counts the call and applies the fault planned for it, if any; returns the
    /// fault left to apply after the call (HangAfter).
    fn enter(&self, op: Op, id: &str) -> Result<Option<Fault>, PoolError> {
        let fault = {
            let mut s = self.lock();
            let n = {
                let c = s.calls.entry(op).or_insert(0);
                *c += 1;
                *c
            };
            s.log.push(Event::Start(op, id.to_string()));
            s.faults.iter().find(|(o, at, _)| *o == op && at.is_none_or(|a| a == n)).map(|(_, _, f)| f.clone())
        };
        match fault {
            Some(Fault::Fail(msg)) => {
                self.exit(op, id);
                Err(PoolError::Refused(msg))
            }
            Some(Fault::HangBefore) => {
                self.hang();
                self.exit(op, id);
                Err(PoolError::Refused("released after a simulated crash".into()))
            }
            // Copies sleep between their two reads of the source; the rest before acting.
            Some(Fault::Delay(d)) if !matches!(op, Op::CreateVolume | Op::CreateSnapshot | Op::Revert) => {
                std::thread::sleep(d);
                Ok(None)
            }
            other => Ok(other),
        }
    }

    fn exit(&self, op: Op, id: &str) {
        self.lock().log.push(Event::End(op, id.to_string()));
    }

    /// Ends a call: a HangAfter blocks here, after the effect.
    fn leave<T>(&self, op: Op, id: &str, after: Option<Fault>, result: T) -> T {
        if matches!(after, Some(Fault::HangAfter)) {
            self.hang();
        }
        self.exit(op, id);
        result
    }

    fn hang(&self) {
        let mut s = self.lock();
        s.hung += 1;
        self.changed.notify_all();
        while !s.released {
            s = self.changed.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        s.hung -= 1;
        self.changed.notify_all();
    }

    /// Reads `source` at the start and, after the planned delay, at the end.
    fn copy(&self, read: impl Fn(&State) -> Option<SimVolume>, fault: &Option<Fault>) -> Result<Bytes, PoolError> {
        let first = read(&self.lock()).ok_or_else(|| PoolError::NotFound { what: "copy source".into() })?;
        if let Some(Fault::Delay(d)) = fault {
            std::thread::sleep(*d);
        }
        let last = read(&self.lock());
        Ok(if last.as_ref() == Some(&first) { first.bytes } else { Bytes::Torn })
    }
}

impl Pool for SimPool {
    fn capacity(&self) -> Result<Capacity, PoolError> {
        let after = self.enter(Op::Capacity, "")?;
        let s = self.lock();
        let allocated: u64 = s.volumes.values().chain(s.snapshots.values()).map(|v| v.size).sum();
        drop(s);
        self.leave(
            Op::Capacity,
            "",
            after,
            Ok(Capacity {
                total_bytes: self.total_bytes,
                free_bytes: self.total_bytes.saturating_sub(allocated),
                allocated_bytes: allocated,
                thin_data_hundredths: None,
                thin_metadata_hundredths: None,
            }),
        )
    }

    fn create_volume(&self, id: &str, size_gib: u64, source: &Source) -> Result<Created, PoolError> {
        let after = self.enter(Op::CreateVolume, id)?;
        if self.lock().volumes.contains_key(id) {
            return self.leave(Op::CreateVolume, id, after, Ok(Created::AlreadyPresent));
        }
        let bytes = match source {
            Source::Blank => {
                if let Some(Fault::Delay(d)) = &after {
                    std::thread::sleep(*d);
                }
                Ok(Bytes::Zeros)
            }
            Source::Volume { id: src } => self.copy(|s| s.volumes.get(src).cloned(), &after),
            Source::Snapshot { id: src } => self.copy(|s| s.snapshots.get(src).cloned(), &after),
        };
        let result = bytes.map(|bytes| {
            self.lock().volumes.insert(id.to_string(), SimVolume { size: size_gib * GIB, bytes });
            Created::Created
        });
        self.leave(Op::CreateVolume, id, after, result)
    }

    fn delete_volume(&self, id: &str) -> Result<Removed, PoolError> {
        let after = self.enter(Op::DeleteVolume, id)?;
        let mut s = self.lock();
        s.attached.remove(id);
        let removed = if s.volumes.remove(id).is_some() { Removed::Removed } else { Removed::Absent };
        drop(s);
        self.leave(Op::DeleteVolume, id, after, Ok(removed))
    }

    fn extend_volume(&self, id: &str, new_size_gib: u64) -> Result<Resized, PoolError> {
        let after = self.enter(Op::ExtendVolume, id)?;
        let mut s = self.lock();
        let result = match s.volumes.get_mut(id) {
            None => Err(PoolError::NotFound { what: volume_name(id) }),
            Some(v) if v.size >= new_size_gib * GIB => Ok(Resized::Unchanged),
            Some(v) => {
                let from = v.size;
                v.size = new_size_gib * GIB;
                Ok(Resized::Resized { from, to: v.size })
            }
        };
        drop(s);
        self.leave(Op::ExtendVolume, id, after, result)
    }

    fn create_snapshot(&self, snapshot_id: &str, volume_id: &str) -> Result<Created, PoolError> {
        let after = self.enter(Op::CreateSnapshot, snapshot_id)?;
        if self.lock().snapshots.contains_key(snapshot_id) {
            return self.leave(Op::CreateSnapshot, snapshot_id, after, Ok(Created::AlreadyPresent));
        }
        let result = self.copy(|s| s.volumes.get(volume_id).cloned(), &after).map(|bytes| {
            let mut s = self.lock();
            let size = s.volumes.get(volume_id).map(|v| v.size).unwrap_or(0);
            s.snapshots.insert(snapshot_id.to_string(), SimVolume { size, bytes });
            s.origins.insert(snapshot_id.to_string(), volume_id.to_string());
            Created::Created
        });
        self.leave(Op::CreateSnapshot, snapshot_id, after, result)
    }

    fn delete_snapshot(&self, snapshot_id: &str) -> Result<Removed, PoolError> {
        let after = self.enter(Op::DeleteSnapshot, snapshot_id)?;
        let removed =
            if self.lock().snapshots.remove(snapshot_id).is_some() { Removed::Removed } else { Removed::Absent };
        self.leave(Op::DeleteSnapshot, snapshot_id, after, Ok(removed))
    }

    fn revert_to_snapshot(&self, volume_id: &str, snapshot_id: &str) -> Result<(), PoolError> {
        let after = self.enter(Op::Revert, volume_id)?;
        let result = self.copy(|s| s.snapshots.get(snapshot_id).cloned(), &after).and_then(|bytes| {
            match self.lock().volumes.get_mut(volume_id) {
                Some(v) => {
                    v.bytes = bytes;
                    Ok(())
                }
                None => Err(PoolError::NotFound { what: volume_name(volume_id) }),
            }
        });
        self.leave(Op::Revert, volume_id, after, result)
    }

    fn attach_device(&self, id: &str) -> Result<PathBuf, PoolError> {
        let after = self.enter(Op::AttachDevice, id)?;
        let mut s = self.lock();
        let result = if s.volumes.contains_key(id) {
            Ok(s.attached.entry(id.to_string()).or_insert_with(|| PathBuf::from(format!("/dev/sim/{id}"))).clone())
        } else {
            Err(PoolError::NotFound { what: volume_name(id) })
        };
        drop(s);
        self.leave(Op::AttachDevice, id, after, result)
    }

    fn detach_device(&self, id: &str) -> Result<Removed, PoolError> {
        let after = self.enter(Op::DetachDevice, id)?;
        let removed = if self.lock().attached.remove(id).is_some() { Removed::Removed } else { Removed::Absent };
        self.leave(Op::DetachDevice, id, after, Ok(removed))
    }

    fn bound_device(&self, id: &str) -> Option<PathBuf> {
        self.lock().attached.get(id).cloned()
    }

    fn list_existing(&self) -> Result<Vec<Manageable>, PoolError> {
        let after = self.enter(Op::ListExisting, "")?;
        let s = self.lock();
        let mut out: Vec<Manageable> = s
            .volumes
            .iter()
            .map(|(id, v)| Manageable {
                name: volume_name(id),
                size_bytes: v.size,
                in_use: s.attached.contains_key(id),
            })
            .chain(s.foreign.iter().map(|(name, v)| Manageable {
                name: name.clone(),
                size_bytes: v.size,
                in_use: false,
            }))
            .collect();
        drop(s);
        out.sort_by(|a, b| a.name.cmp(&b.name));
        self.leave(Op::ListExisting, "", after, Ok(out))
    }

    fn volume_name(&self, id: &str) -> String {
        volume_name(id)
    }

    fn manage_existing(&self, name: &str, new_id: &str) -> Result<u64, PoolError> {
        let after = self.enter(Op::Manage, new_id)?;
        let mut s = self.lock();
        let result = match s.foreign.remove(name) {
            Some(mut v) => {
                v.size = v.size.div_ceil(GIB).max(1) * GIB;
                let size = v.size;
                s.volumes.insert(new_id.to_string(), v);
                Ok(size)
            }
            // Taken over by an earlier run of this job.
            None => s.volumes.get(new_id).map(|v| v.size).ok_or_else(|| PoolError::NotFound { what: name.to_string() }),
        };
        drop(s);
        self.leave(Op::Manage, new_id, after, result)
    }

    fn rename_volume(&self, from: &str, to: &str) -> Result<(), PoolError> {
        let after = self.enter(Op::RenameVolume, from)?;
        let mut s = self.lock();
        let result = match s.volumes.remove(from) {
            Some(v) => {
                s.volumes.insert(to.to_string(), v);
                Ok(())
            }
            None if s.volumes.contains_key(to) => Ok(()),
            None => Err(PoolError::NotFound { what: from.to_string() }),
        };
        drop(s);
        self.leave(Op::RenameVolume, from, after, result)
    }

    fn unmanage(&self, id: &str) -> Result<(), PoolError> {
        let after = self.enter(Op::Unmanage, id)?;
        let mut s = self.lock();
        if let Some(v) = s.volumes.remove(id) {
            s.foreign.insert(volume_name(id), v);
        }
        drop(s);
        self.leave(Op::Unmanage, id, after, Ok(()))
    }

    fn list_existing_snapshots(&self) -> Result<Vec<ExistingSnapshot>, PoolError> {
        let after = self.enter(Op::ListExistingSnapshots, "")?;
        let s = self.lock();
        let mut out: Vec<ExistingSnapshot> = s
            .snapshots
            .iter()
            .map(|(id, v)| ExistingSnapshot {
                name: snapshot_name(id),
                size_bytes: v.size,
                origin: s.origins.get(id).map(|v| volume_name(v)),
                in_use: false,
            })
            .chain(s.foreign_snapshots.iter().map(|(name, (v, origin))| ExistingSnapshot {
                name: name.clone(),
                size_bytes: v.size,
                origin: Some(origin.clone()),
                in_use: false,
            }))
            .collect();
        drop(s);
        out.sort_by(|a, b| a.name.cmp(&b.name));
        self.leave(Op::ListExistingSnapshots, "", after, Ok(out))
    }

    fn snapshot_name(&self, id: &str) -> String {
        snapshot_name(id)
    }

    fn manage_existing_snapshot(&self, name: &str, new_id: &str, volume_id: &str) -> Result<u64, PoolError> {
        let after = self.enter(Op::ManageSnapshot, new_id)?;
        let mut s = self.lock();
        let result = match s.foreign_snapshots.get(name).cloned() {
            Some((_, origin)) if origin != volume_name(volume_id) => {
                Err(PoolError::Refused(format!("{name} is a snapshot of {origin}, not of volume {volume_id}")))
            }
            Some((v, _)) => {
                s.foreign_snapshots.remove(name);
                let size = v.size;
                s.snapshots.insert(new_id.to_string(), v);
                s.origins.insert(new_id.to_string(), volume_id.to_string());
                Ok(size)
            }
            // Taken over by an earlier run of this job.
            None => {
                s.snapshots.get(new_id).map(|v| v.size).ok_or_else(|| PoolError::NotFound { what: name.to_string() })
            }
        };
        drop(s);
        self.leave(Op::ManageSnapshot, new_id, after, result)
    }

    fn unmanage_snapshot(&self, id: &str) -> Result<(), PoolError> {
        let after = self.enter(Op::UnmanageSnapshot, id)?;
        let mut s = self.lock();
        if let Some(v) = s.snapshots.remove(id) {
            let origin = s.origins.remove(id).map(|v| volume_name(&v)).unwrap_or_default();
            s.foreign_snapshots.insert(snapshot_name(id), (v, origin));
        }
        drop(s);
        self.leave(Op::UnmanageSnapshot, id, after, Ok(()))
    }

    /// Runs the real engine from `source` into a sink that keeps only the checksum.
    fn write_volume(
        &self,
        id: &str,
        source: &mut dyn engine::Source,
        options: &CopyOptions,
        _fresh: bool,
    ) -> Result<CopySummary, PoolError> {
        let after = self.enter(Op::WriteVolume, id)?;
        let size =
            self.lock().volumes.get(id).map(|v| v.size).ok_or_else(|| PoolError::NotFound { what: id.into() })?;
        let options = CopyOptions { dest_len: Some(size), ..options.clone() };
        let result = engine::copy(source, &mut engine::WriterSink::new(std::io::sink()), &options);
        if let Ok(summary) = &result {
            if let Some(v) = self.lock().volumes.get_mut(id) {
                v.bytes = Bytes::Copied(summary.checksum.clone());
            }
        }
        self.leave(Op::WriteVolume, id, after, result.map_err(PoolError::from))
    }

    /// The volume as 64 KiB of a byte pattern (its `Data` value), then zeros.
    fn read_volume(
        &self,
        id: &str,
        sink: &mut dyn engine::Sink,
        options: &CopyOptions,
    ) -> Result<CopySummary, PoolError> {
        let after = self.enter(Op::ReadVolume, id)?;
        let v = self.volume(id).ok_or_else(|| PoolError::NotFound { what: id.into() })?;
        let fill = match v.bytes {
            Bytes::Data(n) => (n % 255) as u8 + 1,
            _ => 0x42,
        };
        struct Pattern {
            size: u64,
            fill: u8,
            at: u64,
        }
        impl engine::Source for Pattern {
            fn len(&self) -> u64 {
                self.size
            }
            fn next(&mut self, buf: &mut [u8]) -> std::io::Result<Option<Chunk>> {
                let chunk = match self.at {
                    0 => {
                        buf[..engine::GRANULE].fill(self.fill);
                        Chunk::Data { offset: 0, len: engine::GRANULE }
                    }
                    at if at < self.size => Chunk::Zero { offset: at, len: self.size - at },
                    _ => return Ok(None),
                };
                self.at = match chunk {
                    Chunk::Data { len, .. } => len as u64,
                    Chunk::Zero { .. } => self.size,
                };
                Ok(Some(chunk))
            }
        }
        let result = engine::copy(&mut Pattern { size: v.size, fill, at: 0 }, sink, options);
        self.leave(Op::ReadVolume, id, after, result.map_err(PoolError::from))
    }
}
