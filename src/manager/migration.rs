//! Volume migration between the pools of this agent (spec §3.12–3.14).
//!
//! The request (os-migrate_volume, or a retype with `migration_policy:
//! on-demand` to a type another pool serves) puts the source in `maintenance`
//! (or keeps it `retyping`), `migration_status: starting`, and adds the
//! destination record on the other pool with `migration_status:
//! target:<source id>`. The job then creates the destination blank, copies the
//! source into it through the copy engine (the source reads only what it holds,
//! zero runs cross as zero runs, the destination writes with O_DIRECT), and
//! compares the checksum of what was read with that of what was written. Only
//! then is the source given up: its bytes are deleted, the destination's pool
//! object takes the source's name, and one transaction gives the source record
//! the destination's host (and new type), so the surviving id keeps its
//! attachments and metadata (Cinder's completion swap), and drops the
//! destination record.
//!
//! A failure before the source is given up deletes the destination and restores
//! the source (`migration_status: error`); a crash anywhere resumes the job
//! (a copy cut short is made again from the start: the destination was created
//! blank and the source cannot change while it is in maintenance).

use std::sync::Arc;

use super::actions::invalid;
use super::jobs::{Pending, StepError};
use super::{Caller, Capacities, Manager, ManagerError, Result};
use crate::blockdev::engine::{self, CopyOptions, CopySummary};
use crate::model::{AttachStatus, JobSpec, MigrationStatus, Volume, VolumeStatus, VolumeType, not_migrating, now};
use crate::pool::PoolError;
use crate::store::{StoreError, Tx};

/// Where a retype moves a volume: a pool of this agent, or (peer, pool) of a peer.
pub(super) enum Destination {
    Local(String),
    Peer((String, String)),
}

/// How a migration job ended.
pub(super) enum Ended {
    Done,
    /// Failed before the source's bytes were touched.
    SourceKept,
    /// Failed once they may be gone: the destination holds the only copy.
    SourceGone,
}

impl Manager {
    /// os-migrate_volume (admin): to the pool `destination` names
    /// (`host@backend#pool`, `host@backend`, or a cluster of the same form).
    /// `lock_volume` is implied: ember moves no volume a guest may write to.
    pub(super) fn migrate_volume(
        self: &Arc<Self>,
        caller: &Caller,
        id: &str,
        destination: &str,
    ) -> Result<super::ActionOutcome> {
        let capacities = self.capacities();
        let job = self.store.write(|tx| {
            let v = self.visible(tx, caller, id)?;
            let snapshots = tx.snapshots(None, Some(id))?;
            if !matches!(v.status, VolumeStatus::Available | VolumeStatus::InUse)
                || !not_migrating(v.migration_status.as_ref())
                || !snapshots.is_empty()
                || v.group_id.is_some()
            {
                return Err(invalid(format!(
                    "Invalid volume: Volume {id} must be available or in-use, not migrating, in no group and \
                     without snapshots to migrate (status {}, {} snapshots).",
                    v.status,
                    snapshots.len()
                )));
            }
            if let Some(peer) = self.peer_for(destination) {
                if let Some(why) = self.service_disabled(tx)? {
                    return Err(invalid(format!("No available service named '{destination}': {why}")));
                }
                check_detached(&v)?;
                return self.begin_peer_migration(tx, caller, &v, (&peer.name, destination), None);
            }
            let Some(dest) = self.pool_named(destination) else {
                return Err(invalid(format!("No available service named '{destination}'")));
            };
            if dest.host == v.host {
                return Err(invalid(format!("Invalid host: Destination {destination} is the volume's current host.")));
            }
            if let Some(why) = self.service_disabled(tx)? {
                return Err(invalid(format!("No available service named '{destination}': {why}")));
            }
            check_detached(&v)?;
            let host = dest.host.clone();
            self.begin_migration(tx, caller, &v, &host, None, VolumeStatus::Maintenance, &capacities)
        })?;
        self.start(job);
        Ok(super::ActionOutcome::Done)
    }

    /// The pool a retype to `target` needs, when it is not the volume's own:
    /// the one of this agent that serves the type's `volume_backend_name`, or
    /// else `remote`, a peer's (peer name, pool) that does (asked before the
    /// transaction: `remote_pool_for_retype`).
    pub(super) fn retype_destination(
        &self,
        v: &Volume,
        target: &VolumeType,
        remote: Option<(String, String)>,
    ) -> Result<Option<Destination>> {
        let Some(backend) = target.extra_specs.get("volume_backend_name") else {
            return Ok(None);
        };
        if *backend == self.slot(&v.host)?.backend_name {
            return Ok(None);
        }
        match (self.pools.iter().find(|s| s.backend_name == *backend), remote) {
            (Some(slot), _) => Ok(Some(Destination::Local(slot.host.clone()))),
            (None, Some(remote)) => Ok(Some(Destination::Peer(remote))),
            (None, None) => Err(invalid(format!(
                "Invalid input received: No pool of this agent or of its peers serves backend {backend} of type {}.",
                target.name
            ))),
        }
    }

    /// For a retype to `new_type` that no pool of this agent serves: a
    /// peer's pool that does (network calls: before any transaction).
    pub(super) fn remote_pool_for_retype(&self, caller: &Caller, new_type: &str) -> Option<(String, String)> {
        if self.settings.peers.is_empty() {
            return None;
        }
        let target = self.store.read(|tx| super::types::visible_type(tx, caller, new_type)).ok().flatten()?;
        let backend = target.extra_specs.get("volume_backend_name")?;
        if self.pools.iter().any(|s| s.backend_name == *backend) {
            return None;
        }
        self.peer_pool_serving(backend)
    }

    /// Inside the request's transaction: the source marked (`status`, saving
    /// the one it had), the destination record on `host`, and the job.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn begin_migration(
        &self,
        tx: &Tx,
        caller: &Caller,
        v: &Volume,
        host: &str,
        new_type: Option<&VolumeType>,
        status: VolumeStatus,
        capacities: &Capacities,
    ) -> Result<Pending> {
        self.check_capacity(tx, host, capacities, v.size)?;
        // A retype shows the new type's multiattach at once, as Cinder's API sets it.
        mark_source(tx, v, status, new_type.map_or(v.multiattach, VolumeType::multiattach))?;
        let dest = Volume {
            id: uuid::Uuid::new_v4().to_string(),
            status: VolumeStatus::Creating,
            previous_status: None,
            migration_status: Some(MigrationStatus::Target(v.id.clone())),
            volume_type_id: new_type.map_or_else(|| v.volume_type_id.clone(), |t| t.id.clone()),
            host: host.to_string(),
            snapshot_id: None,
            source_volid: None,
            attachments: Vec::new(),
            attach_status: AttachStatus::Detached,
            created_at: now(),
            updated_at: None,
            ..v.clone()
        };
        tx.insert_volume(&dest)?;
        tracing::info!(volume = %v.id, from = %v.host, to = %host, destination = %dest.id, "migration starts");
        let spec = JobSpec::MigrateVolume {
            volume: v.id.clone(),
            new_volume: dest.id,
            size_gib: super::gib(v.size),
            new_type: new_type.map(|t| t.id.clone()),
        };
        Ok(self.enqueue(tx, caller, &v.project_id, spec)?)
    }

    /// os-migrate_volume_completion (admin). For two volumes not migrating,
    /// Nova's swap: the attachments move from the old to the new, whose id is
    /// saved. For a migration ember runs, `error` cancels it while it copies
    /// (the destination is deleted, the source restored); without `error` there
    /// is nothing to do by hand: the job completes it once the copy is verified.
    pub(super) fn migrate_volume_completion(
        &self,
        caller: &Caller,
        id: &str,
        new_volume: &str,
        error: bool,
    ) -> Result<String> {
        let old = self.volume(caller, id)?;
        let new = self.volume(caller, new_volume)?;
        match (&old.migration_status, &new.migration_status) {
            (None, None) => {
                if !error {
                    self.move_attachments(&old, &new)?;
                }
                return Ok(new.id);
            }
            (None, Some(_)) => return Err(invalid("Invalid volume: Source volume not mid-migration.")),
            (Some(_), None) => return Err(invalid("Invalid volume: Destination volume not mid-migration.")),
            (Some(_), Some(dest)) if *dest != MigrationStatus::Target(id.to_string()) => {
                return Err(invalid(
                    "Invalid volume: Destination has migration_status target:<other>, expected target:<source id>.",
                ));
            }
            (Some(_), Some(_)) => {}
        }
        let job = self
            .store
            .read(|tx| tx.running_job_statuses())?
            .into_iter()
            .find(|j| j.row.kind == "migrate_volume" && j.row.volume_id.as_deref() == Some(id));
        let Some(job) = job else {
            return Err(invalid(format!("Invalid volume: No migration of volume {id} is running.")));
        };
        if !error {
            return Err(invalid(format!(
                "Invalid volume: Migration of volume {id} is in progress (job {}); ember completes it itself once \
                 its copy is verified.",
                job.row.id
            )));
        }
        if !self.cancel_copy(job.row.id) {
            return Err(invalid(format!(
                "Invalid volume: Migration of volume {id} (job {}) is not copying now; it cannot be stopped.",
                job.row.id
            )));
        }
        tracing::warn!(volume = id, job = job.row.id, user = %caller.user_id, "migration cancelled by its completion with error");
        Ok(old.id)
    }

    /// Nova's swap, recorded: `old`'s attachments become `new`'s.
    fn move_attachments(&self, old: &Volume, new: &Volume) -> Result<()> {
        self.store.write(|tx| {
            let attachments = tx.volume(&old.id)?.map(|v| v.attachments).unwrap_or_default();
            let moving: Vec<_> = attachments.iter().filter(|a| a.attach_status != AttachStatus::Detached).collect();
            if moving.is_empty() {
                return Ok(());
            }
            for a in &moving {
                tx.delete_attachment(&a.id)?;
                let id = uuid::Uuid::new_v4().to_string();
                tx.upsert_attachment(&crate::model::Attachment { id, volume_id: new.id.clone(), ..(*a).clone() })?;
            }
            // Each as its attachments now say (one busy with other work keeps its status).
            for id in [&old.id, &new.id] {
                let settled =
                    tx.volume(id)?.filter(|v| matches!(v.status, VolumeStatus::Available | VolumeStatus::InUse));
                if let Some(v) = settled {
                    let attached = v.attachments.iter().any(|a| a.attach_status != AttachStatus::Detached);
                    let (attach_status, status) = if attached {
                        (AttachStatus::Attached, VolumeStatus::InUse)
                    } else {
                        (AttachStatus::Detached, VolumeStatus::Available)
                    };
                    tx.update_volume(v.status, &Volume { attach_status, status, ..v.clone() })?;
                }
            }
            Ok::<_, ManagerError>(())
        })
    }

    /// The copy step: the source streamed into the destination, and the two
    /// checksums compared.
    pub(super) fn migrate_copy(
        &self,
        job: &crate::model::Job,
        from: &str,
        to: &str,
    ) -> std::result::Result<(), StepError> {
        now_migrating(self, from)?;
        let (source, dest) = (self.pool_of(from)?, self.pool_of(to)?);
        let bytes = self.volume_bytes(from)?;
        let copy = self.register_copy(job, from, to);
        let options = &copy.options;
        let (mut into_pipe, mut out_of_pipe) = engine::pipe(bytes);
        let (read, written) = std::thread::scope(|scope| {
            let reader = scope.spawn(move || {
                let read = source.read_volume(from, &mut into_pipe, options);
                // Dropped here whatever happened: a failed read hangs up.
                drop(into_pipe);
                read
            });
            let written = dest.write_volume(to, &mut out_of_pipe, &CopyOptions::default(), true);
            // A failed write hangs up the other way: the reader stops too.
            drop(out_of_pipe);
            let read = reader.join().unwrap_or_else(|_| Err(PoolError::Refused("the volume reader panicked".into())));
            (read, written)
        });
        // A side that failed hangs up on the other: report the cause, not the hang-up.
        let (read, written) = match (read, written) {
            (Ok(read), Ok(written)) => (read, written),
            (Err(e), Ok(_)) | (Ok(_), Err(e)) => return Err(e.into()),
            (Err(read), Err(written)) => return Err(if hung_up(&read) { written } else { read }.into()),
        };
        verify(&read, &written)?;
        tracing::info!(
            volume = from, destination = to, bytes = read.bytes, data_bytes = read.data_bytes,
            checksum = %read.checksum, "migration copy verified"
        );
        Ok(())
    }

    /// After a failure before the source was given up: the destination's pool
    /// object goes (best effort, logged; its record goes in `finish`).
    pub(super) fn discard_destination(&self, new_volume: &str) {
        match self.pool_of(new_volume) {
            Ok(pool) => {
                if let Err(e) = pool.delete_volume(new_volume) {
                    tracing::error!(destination = new_volume, error = %e, "could not delete a failed migration's destination");
                }
            }
            Err(e) => {
                tracing::error!(destination = new_volume, error = %e, "no pool for a failed migration's destination")
            }
        }
    }
}

/// The source of a migration, marked: `status` (the one it had saved),
/// `migration_status: starting`. An export no attachment holds (a connection
/// initialized, never attached) goes: it could not follow the volume.
pub(super) fn mark_source(tx: &Tx, v: &Volume, status: VolumeStatus, multiattach: bool) -> Result<()> {
    let source = Volume {
        status,
        previous_status: Some(v.status),
        migration_status: Some(MigrationStatus::Starting),
        multiattach,
        ..v.clone()
    };
    tx.update_volume(v.status, &source)?;
    tx.delete_export(&v.id)?;
    Ok(())
}

/// The copy step begins: the source's `migration_status` says `migrating`.
pub(super) fn now_migrating(m: &Manager, id: &str) -> std::result::Result<(), StoreError> {
    m.store.write(|tx| match tx.volume(id)? {
        Some(v) if v.migration_status == Some(MigrationStatus::Starting) => {
            tx.update_volume(v.status, &Volume { migration_status: Some(MigrationStatus::Migrating), ..v.clone() })
        }
        _ => Ok(()),
    })
}

/// The destination holds what was read, by checksum and data byte count.
pub(super) fn verify(read: &CopySummary, written: &CopySummary) -> std::result::Result<(), PoolError> {
    if read.checksum != written.checksum || read.data_bytes != written.data_bytes {
        return Err(PoolError::Refused(format!(
            "the destination does not hold what was read: {} data bytes with sha256 {} read, {} with {} written",
            read.data_bytes, read.checksum, written.data_bytes, written.checksum
        )));
    }
    Ok(())
}

/// The reading side's error when the writing side stopped first (the pipe's
/// BrokenPipe): a consequence, not a cause.
fn hung_up(e: &PoolError) -> bool {
    matches!(e, PoolError::Copy(engine::CopyError::Write(io)) if io.kind() == std::io::ErrorKind::BrokenPipe)
}

/// An attached volume's export cannot follow it to another pool without the
/// hypervisor (Nova's swap-volume, which ember has no part in): refused.
pub(super) fn check_detached(v: &Volume) -> Result<()> {
    if v.status == VolumeStatus::InUse || v.attach_status != AttachStatus::Detached {
        return Err(invalid(format!(
            "Invalid volume: Volume {} is attached; ember migrates detached volumes only (an attached volume moves \
             through Nova's swap-volume).",
            v.id
        )));
    }
    Ok(())
}

/// Settles a migration job: on success the identity swap, on a failure before
/// the source was given up the source restored and the destination record
/// gone, after it both left in `error` (the destination holds the only copy).
pub(super) fn finish(tx: &Tx, spec: &JobSpec, ended: Ended) -> std::result::Result<(), StoreError> {
    let (volume, new_volume, new_type, to_peer) = match spec {
        JobSpec::MigrateVolume { volume, new_volume, new_type, .. } => (volume, new_volume, new_type, false),
        JobSpec::MigrateToPeer { volume, new_volume, .. } => (volume, new_volume, &None, true),
        _ => return Ok(()),
    };
    // A peer's destination is the peer's record, not this agent's.
    let dest = if to_peer { None } else { tx.volume(new_volume)? };
    let Some(source) = tx.volume(volume)? else {
        return Ok(());
    };
    let restored = source.previous_status.unwrap_or(VolumeStatus::Available);
    match ended {
        // The peer adopted it: nothing of it is left here.
        Ended::Done if to_peer => tx.delete_volume(volume),
        Ended::Done => {
            let Some(dest) = dest else { return Ok(()) };
            tx.delete_volume(&dest.id)?;
            let moved = Volume {
                host: dest.host,
                volume_type_id: new_type.clone().unwrap_or(source.volume_type_id.clone()),
                status: restored,
                migration_status: Some(MigrationStatus::Success),
                ..source.clone()
            };
            tx.update_volume(source.status, &moved)
        }
        Ended::SourceKept => {
            if dest.is_some() {
                tx.delete_volume(new_volume)?;
            }
            let back = Volume { status: restored, migration_status: Some(MigrationStatus::Error), ..source.clone() };
            tx.update_volume(source.status, &back)
        }
        Ended::SourceGone => {
            if let Some(dest) = dest {
                tx.update_volume(dest.status, &Volume { status: VolumeStatus::Error, ..dest.clone() })?;
            }
            let lost = Volume {
                status: VolumeStatus::Error,
                migration_status: Some(MigrationStatus::Error),
                ..source.clone()
            };
            tx.update_volume(source.status, &lost)
        }
    }
}
