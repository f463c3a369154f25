//! Durable jobs: the device half of every asynchronous action, and their
//! resumption after a crash. Each job holds its volume's lock while it works, runs
//! the pool step on a blocking thread, and ends in one transaction that writes the
//! final status and removes the job row.

use std::sync::Arc;

use super::{Manager, ManagerError};
use crate::manager::actions::derived_attach_state;
use crate::pool::{PoolError, Source};
use crate::store::{Job, JobKind, SnapshotStatus, StoreError, Tx, Volume, VolumeStatus};

impl Manager {
    pub(super) fn spawn_job(self: &Arc<Self>, job: Job) {
        let manager = Arc::clone(self);
        tokio::spawn(async move { manager.run_job(job).await });
    }

    /// Resumes every job a previous run left unfinished. Every step is idempotent,
    /// so resuming is running it again; a job whose volume an admin has since reset
    /// to another status is dropped instead.
    pub fn recover(self: &Arc<Self>) -> Result<usize, ManagerError> {
        let jobs = self.store.read(|tx| tx.jobs())?;
        let count = jobs.len();
        for job in jobs {
            tracing::info!(job = job.id, kind = %job.kind, volume = ?job.volume_id, "resuming unfinished job");
            self.spawn_job(job);
        }
        Ok(count)
    }

    async fn run_job(self: Arc<Self>, job: Job) {
        let lock_id = job.volume_id.clone().or_else(|| job.snapshot_id.clone()).unwrap_or_default();
        let _guard = self.locks.lock(&lock_id).await;
        let pool = Arc::clone(&self.pool);
        let work_job = job.clone();
        let outcome = tokio::task::spawn_blocking(move || do_work(pool.as_ref(), &work_job)).await;
        let outcome = match outcome {
            Ok(result) => result,
            Err(join) => Err(PoolError::Refused(format!("job panicked: {join}"))),
        };
        if let Err(e) = &outcome {
            tracing::error!(job = job.id, kind = %job.kind, volume = ?job.volume_id, error = %e, "job failed");
        } else {
            tracing::info!(job = job.id, kind = %job.kind, volume = ?job.volume_id, "job done");
        }
        let finished = self.store.write(|tx| {
            finish(tx, &job, &outcome)?;
            tx.finish_job(job.id)
        });
        if let Err(e) = finished {
            tracing::error!(job = job.id, error = %e, "could not record the end of a job; it will resume at next start");
        }
    }
}

fn volume_id(job: &Job) -> &str {
    job.volume_id.as_deref().unwrap_or_default()
}

fn snapshot_id(job: &Job) -> &str {
    job.snapshot_id.as_deref().unwrap_or_default()
}

fn arg_str<'a>(job: &'a Job, path: &[&str]) -> Option<&'a str> {
    let mut v = &job.args;
    for key in path {
        v = v.get(key)?;
    }
    v.as_str()
}

fn arg_u64(job: &Job, key: &str) -> u64 {
    job.args.get(key).and_then(|v| v.as_u64()).unwrap_or(0)
}

/// The device work of a job: blocking, idempotent.
fn do_work(pool: &dyn crate::pool::Pool, job: &Job) -> Result<(), PoolError> {
    let id = volume_id(job);
    match job.kind {
        JobKind::CreateVolume => {
            let source = if let Some(snap) = arg_str(job, &["source", "snapshot"]) {
                Source::Snapshot(snap.to_string())
            } else if let Some(vol) = arg_str(job, &["source", "volume"]) {
                Source::Volume(vol.to_string())
            } else {
                Source::Blank
            };
            pool.create_volume(id, arg_u64(job, "size"), &source).map(drop)
        }
        JobKind::DeleteVolume => {
            let snapshots = job.args.get("snapshots").and_then(|s| s.as_array()).cloned().unwrap_or_default();
            for snap in snapshots.iter().filter_map(|s| s.as_str()) {
                pool.delete_snapshot(snap)?;
            }
            pool.delete_volume(id).map(drop)
        }
        JobKind::ExtendVolume => pool.extend_volume(id, arg_u64(job, "new_size")).map(drop),
        JobKind::RevertVolume => pool.revert_to_snapshot(id, snapshot_id(job)),
        JobKind::CreateSnapshot => pool.create_snapshot(snapshot_id(job), id).map(drop),
        JobKind::DeleteSnapshot => pool.delete_snapshot(snapshot_id(job)).map(drop),
        // The volume stays where it is, under its name, for manage to find.
        JobKind::UnmanageVolume => pool.unmanage(id),
        JobKind::ManageVolume => {
            let name = arg_str(job, &["name"]).unwrap_or_default();
            pool.manage_existing(name, id).map(drop)
        }
        // Same pool, different type: nothing on the device changes (spec §3.12).
        JobKind::RetypeVolume => Ok(()),
    }
}

/// Writes the end state of a job. A volume or snapshot that is no longer in the
/// job's transitional status was reset by an admin meanwhile: it is left as it is.
fn finish(tx: &Tx, job: &Job, outcome: &Result<(), PoolError>) -> Result<(), StoreError> {
    let ok = outcome.is_ok();
    let vid = volume_id(job);
    let volume = tx.volume(vid)?;
    let set_volume = |expected: VolumeStatus, edit: &dyn Fn(&mut crate::store::Volume)| -> Result<(), StoreError> {
        match &volume {
            Some(v) if v.status == expected => {
                let mut new = v.clone();
                edit(&mut new);
                tx.update_volume(expected, &new)
            }
            _ => Ok(()),
        }
    };
    let snapshot = job.snapshot_id.as_deref().map(|s| tx.snapshot(s)).transpose()?.flatten();
    let set_snapshot =
        |expected: SnapshotStatus, status: SnapshotStatus, progress: Option<&str>| -> Result<(), StoreError> {
            match &snapshot {
                Some(s) if s.status == expected => {
                    let mut new = s.clone();
                    new.status = status;
                    if let Some(p) = progress {
                        new.progress = p.to_string();
                    }
                    tx.update_snapshot(expected, &new)
                }
                _ => Ok(()),
            }
        };
    match job.kind {
        JobKind::CreateVolume => set_volume(VolumeStatus::Creating, &|v| {
            v.status = if ok { VolumeStatus::Available } else { VolumeStatus::Error };
        }),
        JobKind::ManageVolume => set_volume(VolumeStatus::Managing, &|v| {
            v.status = if ok { VolumeStatus::Available } else { VolumeStatus::ErrorManaging };
        }),
        // Once the bytes are gone the rows go too, even if an admin reset the status
        // meanwhile: a record pointing at nothing would be worse than either.
        JobKind::DeleteVolume => {
            if ok {
                for snap in tx.snapshots(None, Some(vid))? {
                    tx.delete_snapshot(&snap.id)?;
                }
                tx.delete_volume(vid)
            } else {
                for snap in tx.snapshots(None, Some(vid))? {
                    if snap.status == SnapshotStatus::Deleting && tx.snapshot(&snap.id)?.is_some() {
                        let mut new = snap.clone();
                        new.status = SnapshotStatus::ErrorDeleting;
                        tx.update_snapshot(SnapshotStatus::Deleting, &new)?;
                    }
                }
                set_volume(VolumeStatus::Deleting, &|v| v.status = VolumeStatus::ErrorDeleting)
            }
        }
        JobKind::ExtendVolume => {
            let new_size = job.args.get("new_size").and_then(|s| s.as_i64()).unwrap_or_default();
            match &volume {
                Some(v) if v.status == VolumeStatus::Extending => {
                    let mut new = v.clone();
                    if ok {
                        new.size = new_size;
                        new.status = derived_attach_state(&v.attachments).1;
                    } else {
                        new.status = VolumeStatus::ErrorExtending;
                    }
                    tx.update_volume(v.status, &new)
                }
                // Reset meanwhile: the status is the admin's, but the size must
                // still say what the file now holds.
                Some(v) if ok && v.size < new_size => {
                    tx.update_volume(v.status, &Volume { size: new_size, ..v.clone() })
                }
                _ => Ok(()),
            }
        }
        JobKind::RevertVolume => {
            set_snapshot(SnapshotStatus::Restoring, SnapshotStatus::Available, None)?;
            set_volume(VolumeStatus::Reverting, &|v| {
                v.status = if ok { VolumeStatus::Available } else { VolumeStatus::Error };
            })
        }
        JobKind::CreateSnapshot => {
            if ok {
                set_snapshot(SnapshotStatus::Creating, SnapshotStatus::Available, Some("100%"))
            } else {
                set_snapshot(SnapshotStatus::Creating, SnapshotStatus::Error, None)
            }
        }
        JobKind::DeleteSnapshot => match &snapshot {
            Some(s) if ok => tx.delete_snapshot(&s.id),
            _ => set_snapshot(SnapshotStatus::Deleting, SnapshotStatus::ErrorDeleting, None),
        },
        JobKind::UnmanageVolume => match &volume {
            Some(v) if v.status == VolumeStatus::Unmanaging && ok => tx.delete_volume(vid),
            _ => set_volume(VolumeStatus::Unmanaging, &|v| v.status = VolumeStatus::ErrorUnmanaging),
        },
        JobKind::RetypeVolume => {
            let new_type = job.args.get("new_type_id").and_then(|s| s.as_str()).unwrap_or_default().to_string();
            set_volume(VolumeStatus::Retyping, &|v| {
                if ok {
                    v.volume_type_id = new_type.clone();
                }
                v.status = v.previous_status.as_deref().and_then(|s| s.parse().ok()).unwrap_or(VolumeStatus::Available);
            })
        }
    }
}
