//! Durable jobs: the device half of every asynchronous action, and their
//! resumption after a crash.
//!
//! `enqueue` journals a typed job inside the action's transaction and queues it
//! on the locks of every resource it names (`locks.rs`); once the transaction
//! committed, `start` runs it in the background (the action answers 202) or
//! `run_now` runs it before the action answers (initialize/terminate connection,
//! detach: their callers need the outcome). The runner waits for its locks, then
//! runs the job's steps after the last completed one, each an idempotent pool or
//! target call on a blocking thread, recording progress after each; and it ends
//! the job in one transaction that writes the final status, the job's state and
//! reason, and, on failure, a user message for the owner of the volume.

use std::sync::Arc;

use super::locks::Ticket;
use super::{Caller, Manager, ManagerError};
use crate::manager::actions::derived_attach_state;
use crate::model::{
    Job, JobSpec, JobState, Message, MessageAction, MessageResource, SnapshotStatus, Volume, VolumeSource,
    VolumeStatus, now, timestamp,
};
use crate::pool::PoolError;
use crate::store::{JobRow, MetaKind, StoreError, Tx};
use crate::target::TargetError;

/// A journaled job, queued on its locks, not yet started.
pub(super) struct Pending {
    job: Job,
    ticket: Ticket,
}

/// One idempotent unit of a job's device work.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    CreateVolume {
        volume: String,
        size_gib: u64,
        source: VolumeSource,
    },
    DeleteSnapshot(String),
    DeleteVolume(String),
    ExtendVolume {
        volume: String,
        new_size_gib: u64,
    },
    Revert {
        volume: String,
        snapshot: String,
    },
    CreateSnapshot {
        snapshot: String,
        volume: String,
    },
    Manage {
        volume: String,
        source_name: String,
    },
    Unmanage(String),
    ManageSnapshot {
        snapshot: String,
        volume: String,
        source_name: String,
    },
    UnmanageSnapshot(String),
    /// The volume's target configuration made to match the store (exports.rs).
    ReconcileExport(String),
    /// The volume's export taken down, still wanted (rebuilt by a reconcile).
    SuspendExport(String),
    /// Connected initiators told the volume's new size.
    RefreshExport(String),
    /// The image's bytes onto the volume, then its glance metadata and bootable
    /// flag; `fresh`: the volume was just created blank.
    Download {
        volume: String,
        image: String,
        fresh: bool,
    },
    /// The volume's bytes into the queued image.
    Upload {
        volume: String,
        image: String,
        disk_format: String,
    },
    /// A migration's copy of `from` into `to`, verified (migration.rs).
    MigrateCopy {
        from: String,
        to: String,
    },
    /// `from`'s pool object given to volume `to`.
    RenameVolume {
        from: String,
        to: String,
    },
    /// A migration's destination `new_volume` made on a peer's pool `host` (peers.rs).
    RemoteCreate {
        peer: String,
        volume: String,
        new_volume: String,
        host: String,
        new_type_name: Option<String>,
    },
    /// `from` streamed into the peer's `to`, verified.
    RemoteCopy {
        peer: String,
        from: String,
        to: String,
    },
    /// The peer's `from` adopted as volume `to`.
    RemoteAdopt {
        peer: String,
        from: String,
        to: String,
    },
}

/// The steps of a job, in order.
fn steps(spec: &JobSpec) -> Vec<Step> {
    match spec.clone() {
        JobSpec::CreateVolume { volume, size_gib, source } => vec![Step::CreateVolume { volume, size_gib, source }],
        // The export goes first (the delete removed it from the store), then the
        // snapshots: a volume is never removed while a snapshot of it exists.
        JobSpec::DeleteVolume { volume, snapshots } => std::iter::once(Step::ReconcileExport(volume.clone()))
            .chain(snapshots.into_iter().map(Step::DeleteSnapshot))
            .chain([Step::DeleteVolume(volume)])
            .collect(),
        JobSpec::ExtendVolume { volume, new_size_gib } => {
            vec![Step::ExtendVolume { volume: volume.clone(), new_size_gib }, Step::RefreshExport(volume)]
        }
        // Merging an LVM snapshot needs the origin closed: the export steps aside
        // and comes back on the same name, with the same credentials.
        JobSpec::RevertVolume { volume, snapshot } => vec![
            Step::SuspendExport(volume.clone()),
            Step::Revert { volume: volume.clone(), snapshot },
            Step::ReconcileExport(volume),
        ],
        JobSpec::CreateSnapshot { snapshot, volume } => vec![Step::CreateSnapshot { snapshot, volume }],
        JobSpec::DeleteSnapshot { snapshot, .. } => vec![Step::DeleteSnapshot(snapshot)],
        JobSpec::ManageVolume { volume, source_name } => vec![Step::Manage { volume, source_name }],
        // The volume stays where it is, under its name, for manage to find.
        JobSpec::UnmanageVolume { volume } => vec![Step::ReconcileExport(volume.clone()), Step::Unmanage(volume)],
        JobSpec::ManageSnapshot { snapshot, volume, source_name } => {
            vec![Step::ManageSnapshot { snapshot, volume, source_name }]
        }
        // The snapshot stays where it is, under its name, for manage to find.
        JobSpec::UnmanageSnapshot { snapshot, .. } => vec![Step::UnmanageSnapshot(snapshot)],
        // Same pool, different type: nothing on the device changes (spec §3.12).
        JobSpec::RetypeVolume { .. } => vec![],
        JobSpec::ExportVolume { volume, .. } | JobSpec::ReconcileExport { volume } => {
            vec![Step::ReconcileExport(volume)]
        }
        JobSpec::CreateVolumeFromImage { volume, size_gib, image } => vec![
            Step::CreateVolume { volume: volume.clone(), size_gib, source: VolumeSource::Blank },
            Step::Download { volume, image, fresh: true },
        ],
        JobSpec::Reimage { volume, image } => vec![Step::Download { volume, image, fresh: false }],
        JobSpec::UploadImage { volume, image, disk_format } => vec![Step::Upload { volume, image, disk_format }],
        // The source is given up only after its copy is verified: from its
        // DeleteVolume on it may be without its bytes (`gave_up_source`).
        JobSpec::MigrateVolume { volume, new_volume, size_gib, .. } => vec![
            Step::CreateVolume { volume: new_volume.clone(), size_gib, source: VolumeSource::Blank },
            Step::MigrateCopy { from: volume.clone(), to: new_volume.clone() },
            Step::ReconcileExport(volume.clone()),
            Step::DeleteVolume(volume.clone()),
            Step::RenameVolume { from: new_volume, to: volume },
        ],
        JobSpec::MigrateToPeer { volume, new_volume, peer, host, new_type_name } => vec![
            Step::RemoteCreate {
                peer: peer.clone(),
                volume: volume.clone(),
                new_volume: new_volume.clone(),
                host,
                new_type_name,
            },
            Step::RemoteCopy { peer: peer.clone(), from: volume.clone(), to: new_volume.clone() },
            Step::ReconcileExport(volume.clone()),
            Step::DeleteVolume(volume.clone()),
            Step::RemoteAdopt { peer, from: new_volume, to: volume },
        ],
    }
}

/// Why a step failed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Image(#[from] crate::image::ImageError),
    /// A copy a crash or stop cut short: it is not continued where it stopped
    /// (the bytes before that point are not known to be durable), so the job
    /// fails and may be retried.
    #[error("interrupted by a restart of the agent")]
    Interrupted,
    #[error(transparent)]
    Peer(#[from] super::PeerError),
}

impl StepError {
    /// What may be shown to the volume's owner.
    pub fn user_reason(&self) -> String {
        match self {
            StepError::Pool(e) => e.user_reason(),
            StepError::Target(e) => e.user_reason(),
            StepError::Store(_) => "the agent could not record its work".to_string(),
            StepError::Image(crate::image::ImageError::Invalid(m)) => m.clone(),
            StepError::Image(crate::image::ImageError::NotFound(id)) => format!("image {id} was not found"),
            StepError::Image(_) => "the image service failed".to_string(),
            StepError::Interrupted => "the copy was interrupted by a restart of the agent; try again".to_string(),
            // Names the peer and what it said; never its token.
            StepError::Peer(e) => e.to_string(),
        }
    }
}

impl Step {
    fn run(&self, m: &Manager, job: &Job) -> Result<(), StepError> {
        match self {
            Step::CreateVolume { volume, size_gib, source } => {
                m.pool_of(volume)?.create_volume(volume, *size_gib, source).map(drop)?
            }
            Step::DeleteSnapshot(snapshot) => m.pool_of_snapshot(snapshot)?.delete_snapshot(snapshot).map(drop)?,
            Step::DeleteVolume(volume) => m.pool_of(volume)?.delete_volume(volume).map(drop)?,
            Step::ExtendVolume { volume, new_size_gib } => {
                m.pool_of(volume)?.extend_volume(volume, *new_size_gib).map(drop)?
            }
            Step::Revert { volume, snapshot } => m.pool_of(volume)?.revert_to_snapshot(volume, snapshot)?,
            Step::CreateSnapshot { snapshot, volume } => {
                m.pool_of(volume)?.create_snapshot(snapshot, volume).map(drop)?
            }
            Step::Manage { volume, source_name } => {
                m.pool_of(volume)?.manage_existing(source_name, volume).map(drop)?
            }
            Step::Unmanage(volume) => m.pool_of(volume)?.unmanage(volume)?,
            Step::ManageSnapshot { snapshot, volume, source_name } => {
                m.pool_of(volume)?.manage_existing_snapshot(source_name, snapshot, volume).map(drop)?
            }
            Step::UnmanageSnapshot(snapshot) => m.pool_of_snapshot(snapshot)?.unmanage_snapshot(snapshot)?,
            Step::ReconcileExport(volume) => m.reconcile_volume(volume)?,
            Step::SuspendExport(volume) => m.suspend_export(volume)?,
            Step::RefreshExport(volume) => m.refresh_export(volume)?,
            Step::Download { .. } | Step::Upload { .. } if job.resumed => return Err(StepError::Interrupted),
            Step::Download { volume, image, fresh } => {
                let status = if *fresh { VolumeStatus::Creating } else { VolumeStatus::Downloading };
                m.store.write(|tx| match tx.volume(volume)? {
                    // Cinder shows a create from an image as `downloading` while it copies.
                    Some(v) if v.status == status && *fresh => {
                        tx.update_volume(status, &Volume { status: VolumeStatus::Downloading, ..v.clone() })
                    }
                    _ => Ok(()),
                })?;
                let (record, _) = m.download(job, volume, image, *fresh)?;
                m.store.write(|tx| {
                    tx.set_volume_meta(volume, MetaKind::Image, &super::images::glance_metadata(&record), true)?;
                    match tx.volume(volume)? {
                        Some(v) => tx.update_volume(v.status, &Volume { bootable: true, ..v.clone() }),
                        None => Ok(()),
                    }
                })?;
            }
            Step::Upload { volume, image, disk_format } => {
                m.upload(job, volume, image, disk_format)?;
            }
            Step::MigrateCopy { from, to } => m.migrate_copy(job, from, to)?,
            Step::RenameVolume { from, to } => m.pool_of(from)?.rename_volume(from, to)?,
            Step::RemoteCreate { peer, volume, new_volume, host, new_type_name } => {
                m.remote_create(job, peer, volume, new_volume, host, new_type_name.as_deref())?
            }
            Step::RemoteCopy { peer, from, to } => m.remote_copy(job, peer, from, to)?,
            Step::RemoteAdopt { peer, from, to } => m.remote_adopt(peer, from, to)?,
        }
        Ok(())
    }

    fn name(&self) -> String {
        match self {
            Step::CreateVolume { volume, .. } => format!("create volume {volume}"),
            Step::DeleteSnapshot(s) => format!("delete snapshot {s}"),
            Step::DeleteVolume(v) => format!("delete volume {v}"),
            Step::ExtendVolume { volume, new_size_gib } => format!("extend volume {volume} to {new_size_gib} GiB"),
            Step::Revert { volume, snapshot } => format!("revert volume {volume} to snapshot {snapshot}"),
            Step::CreateSnapshot { snapshot, .. } => format!("create snapshot {snapshot}"),
            Step::Manage { volume, source_name } => format!("manage {source_name} as volume {volume}"),
            Step::Unmanage(v) => format!("unmanage volume {v}"),
            Step::ManageSnapshot { snapshot, source_name, .. } => {
                format!("manage {source_name} as snapshot {snapshot}")
            }
            Step::UnmanageSnapshot(s) => format!("unmanage snapshot {s}"),
            Step::ReconcileExport(v) => format!("reconcile the export of volume {v}"),
            Step::SuspendExport(v) => format!("suspend the export of volume {v}"),
            Step::RefreshExport(v) => format!("show volume {v}'s new size through its export"),
            Step::Download { volume, image, .. } => format!("write image {image} onto volume {volume}"),
            Step::MigrateCopy { from, to } => format!("copy volume {from} into {to} and verify it"),
            Step::RenameVolume { from, to } => format!("give volume {from}'s pool object to volume {to}"),
            Step::RemoteCreate { peer, new_volume, host, .. } => {
                format!("create volume {new_volume} on {host} of peer {peer}")
            }
            Step::RemoteCopy { peer, from, to } => {
                format!("stream volume {from} into {to} on peer {peer} and verify it")
            }
            Step::RemoteAdopt { peer, from, to } => format!("have peer {peer} adopt volume {from} as {to}"),
            Step::Upload { volume, image, disk_format } => {
                format!("upload volume {volume} to {disk_format} image {image}")
            }
        }
    }
}

/// Why a job failed: the step, and its error.
#[derive(Debug)]
pub struct Failure {
    pub step: String,
    /// The failed step's index.
    pub at: usize,
    pub error: StepError,
}

/// How a job ended.
#[derive(Debug)]
pub(super) enum Outcome {
    Done,
    Failed(Failure),
    /// Cancelled (by an admin reset) before it ran.
    Cancelled,
    /// Stopped by a shutdown; the journal resumes it.
    Interrupted,
}

impl Manager {
    /// Journals `spec` inside the caller's transaction, as work of `owner`'s
    /// (the project whose volume it is), and queues it on its locks. Start it with
    /// `start` once the transaction committed; if it does not commit, dropping the
    /// `Pending` leaves the queues.
    pub(super) fn enqueue(&self, tx: &Tx, caller: &Caller, owner: &str, spec: JobSpec) -> Result<Pending, StoreError> {
        let job = tx.insert_job(&spec, &caller.request_id, owner)?;
        let ticket = self.locks.enqueue(job.id, spec.locks());
        Ok(Pending { job, ticket })
    }

    pub(super) fn start(self: &Arc<Self>, pending: Pending) {
        let manager = Arc::clone(self);
        tokio::spawn(async move { manager.run(pending).await });
    }

    /// Resumes every job a previous run left unfinished, in journal order: all are
    /// queued on their locks before any starts. A row that does not decode is not
    /// guessed at: it fails, its volume goes to `error`, and its owner gets a
    /// message. Also reaps expired messages and long-ended jobs.
    pub fn recover(self: &Arc<Self>) -> Result<usize, ManagerError> {
        self.housekeeping()?;
        let pending = self.store.write(|tx| {
            let mut pending = Vec::new();
            for row in tx.running_jobs()? {
                match row.decode() {
                    Ok(job) => {
                        tracing::info!(
                            job = job.id,
                            kind = job.spec.kind(),
                            step = job.step,
                            "resuming unfinished job"
                        );
                        let ticket = self.locks.enqueue(job.id, job.spec.locks());
                        pending.push(Pending { job, ticket });
                    }
                    Err(reason) => fail_undecodable(tx, &row, &reason, &self.settings)?,
                }
            }
            Ok::<_, StoreError>(pending)
        })?;
        let count = pending.len();
        for p in pending {
            self.start(p);
        }
        Ok(count)
    }

    /// Drops messages past their guarantee and jobs that ended a week ago.
    pub fn housekeeping(&self) -> Result<(), ManagerError> {
        let week_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7 * 86_400);
        let (messages, jobs) = self
            .store
            .write(|tx| Ok::<_, StoreError>((tx.reap_messages(&now())?, tx.prune_jobs(&timestamp(week_ago))?)))?;
        if messages + jobs > 0 {
            tracing::info!(messages, jobs, "reaped expired messages and ended jobs");
        }
        Ok(())
    }

    async fn run(self: Arc<Self>, Pending { job, ticket }: Pending) {
        ticket.granted().await;
        let manager = Arc::clone(&self);
        if let Err(join) = tokio::task::spawn_blocking(move || manager.work(&job)).await {
            tracing::error!(error = %join, "a job's worker panicked; it resumes at next start");
        }
        drop(ticket);
    }

    /// Runs a journaled job before the caller answers: waits for its locks (this
    /// is a blocking thread, as request handlers are), works, and says how it ended.
    pub(super) fn run_now(&self, Pending { job, ticket }: Pending) -> Outcome {
        tokio::runtime::Handle::current().block_on(ticket.granted());
        let outcome = self.work(&job);
        drop(ticket);
        outcome
    }

    /// A job, holding its locks, from its first unfinished step to its end
    /// (blocking).
    fn work(&self, job: &Job) -> Outcome {
        // An admin reset while the job waited cancels it: its work must not run
        // against the state the admin set.
        match self.store.read(|tx| tx.job_state(job.id)) {
            Ok(Some(JobState::Running)) => {}
            other => {
                tracing::info!(job = job.id, kind = job.spec.kind(), state = ?other, "job no longer wanted; not run");
                return Outcome::Cancelled;
            }
        }
        // Every line the job's steps log names the job, its kind, its volume and
        // the request that asked for it.
        let _span = tracing::info_span!(
            "job",
            job = job.id,
            action = job.spec.kind(),
            volume = job.spec.volume(),
            request_id = %job.request_id
        )
        .entered();
        let timer = crate::metrics::metrics().job_started(job.spec.kind());
        let outcome = self.run_steps(job);
        timer.end(match outcome {
            Outcome::Done => "done",
            Outcome::Failed(_) => "failed",
            Outcome::Cancelled => "cancelled",
            Outcome::Interrupted => "interrupted",
        });
        outcome
    }

    /// The job's steps from its first unfinished one, and how it ended.
    fn run_steps(&self, job: &Job) -> Outcome {
        let all = steps(&job.spec);
        let mut failure = None;
        for (index, step) in all.iter().enumerate().skip(job.step) {
            if self.stopping() {
                return Outcome::Interrupted;
            }
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| step.run(self, job)))
                .unwrap_or_else(|_| Err(StepError::Pool(PoolError::Refused("step panicked".to_string()))));
            if self.stopping() {
                // Shutting down: whatever this step did, the resumed job does again.
                return Outcome::Interrupted;
            }
            if let Err(error) = result {
                failure = Some(Failure { step: step.name(), at: index, error });
                break;
            }
            if index + 1 < all.len() {
                if let Err(e) = self.store.write(|tx| tx.set_job_step(job.id, index + 1)) {
                    // Not fatal: the step is idempotent and runs again on resume.
                    tracing::warn!(job = job.id, error = %e, "could not record a completed step");
                }
            }
        }
        match &failure {
            None => tracing::info!(job = job.id, kind = job.spec.kind(), volume = job.spec.volume(), "job done"),
            Some(f) => tracing::error!(
                job = job.id, kind = job.spec.kind(), volume = job.spec.volume(), step = %f.step, error = %f.error,
                "job failed"
            ),
        }
        // A failed upload leaves no half-made image behind, and is gone before
        // the volume is seen restored.
        match (&failure, &job.spec) {
            (Some(_), JobSpec::UploadImage { image, .. }) => self.discard_image(&job.project_id, image),
            // A migration that failed before giving up its source leaves no destination.
            (Some(f), JobSpec::MigrateVolume { new_volume, .. }) if !gave_up_source(&job.spec, f.at) => {
                self.discard_destination(new_volume)
            }
            (Some(f), JobSpec::MigrateToPeer { peer, new_volume, .. }) if !gave_up_source(&job.spec, f.at) => {
                self.discard_remote(peer, new_volume)
            }
            _ => {}
        }
        let ended = self.store.write(|tx| {
            // The member's group is read before its row may go, settled after.
            let touched = super::groups::Touched::of(tx, &job.spec)?;
            finish(tx, &job.spec, failure.as_ref().map(|f| f.at))?;
            touched.settle(tx)?;
            match &failure {
                None => tx.end_job(job.id, JobState::Done, None),
                Some(f) => {
                    tx.end_job(job.id, JobState::Failed, Some(&format!("{}: {}", f.step, f.error)))?;
                    let reason = format!("{} (job {})", f.error.user_reason(), job.id);
                    leave_message(tx, job, &self.settings, &reason)
                }
            }
        });
        if let Err(e) = ended {
            tracing::error!(job = job.id, error = %e, "could not record the end of a job; it will resume at next start");
        }
        match failure {
            None => Outcome::Done,
            Some(f) => {
                // What the failed request added is out of the store again: take it
                // out of the target too, so nothing half-built remains.
                if let JobSpec::ExportVolume { volume, .. } = &job.spec {
                    if let Err(e) = self.reconcile_volume(volume) {
                        tracing::error!(job = job.id, %volume, error = %e, "could not roll back a failed export");
                    }
                }
                Outcome::Failed(f)
            }
        }
    }
}

/// A job as the jobs resource shows it (`GET /ember/v1/jobs/{id}`).
#[derive(Debug, Clone)]
pub struct JobView {
    pub status: crate::store::JobStatus,
    /// How many steps the job has (`status.row.step` of them are done).
    pub steps: usize,
    /// Its copy, while one runs.
    pub copy: Option<super::RunningCopy>,
}

impl Manager {
    fn job_view(&self, status: crate::store::JobStatus) -> JobView {
        let steps = status.row.decode().map(|j| steps(&j.spec).len()).unwrap_or(0);
        let copy = self.running_copies().into_iter().find(|c| c.job == status.row.id);
        JobView { status, steps, copy }
    }

    /// The running jobs the caller may see (an admin: all; others: their project's).
    pub fn running_job_views(&self, caller: &Caller) -> Result<Vec<JobView>, ManagerError> {
        let running = self.store.read(|tx| tx.running_job_statuses())?;
        Ok(running
            .into_iter()
            .filter(|s| caller.is_admin || s.row.project_id == caller.project_id)
            .map(|s| self.job_view(s))
            .collect())
    }

    /// One job the caller may see (another project's is not found).
    pub fn job_view_of(&self, caller: &Caller, id: i64) -> Result<JobView, ManagerError> {
        self.store
            .read(|tx| tx.job(id))?
            .filter(|s| caller.is_admin || s.row.project_id == caller.project_id)
            .map(|s| self.job_view(s))
            .ok_or_else(|| ManagerError::NotFound(format!("Job {id} could not be found.")))
    }

    /// Cancels a running job's copy (admin): the job then fails as its kind
    /// fails (a reimage or create from image ends in `error`, an upload restores
    /// the volume and deletes the image).
    pub fn cancel_job(&self, caller: &Caller, id: i64) -> Result<(), ManagerError> {
        let view = self.job_view_of(caller, id)?;
        if view.status.state != JobState::Running.as_str() {
            return Err(ManagerError::Conflict(format!("Job {id} is {}, not running.", view.status.state)));
        }
        if !self.cancel_copy(id) {
            return Err(ManagerError::Conflict(format!(
                "Job {id} is running no copy; only copies (images, clones, migrations) can be cancelled."
            )));
        }
        tracing::warn!(job = id, user = %caller.user_id, request_id = %caller.request_id, "job cancelled by an admin");
        Ok(())
    }
}

/// A user message about `job`'s failure, for the project whose volume it is.
fn leave_message(tx: &Tx, job: &Job, settings: &super::Settings, reason: &str) -> Result<(), StoreError> {
    let (resource, action) = job.spec.message_action();
    let uuid = match resource {
        MessageResource::Snapshot => job.spec.snapshot(),
        MessageResource::Volume => Some(job.spec.volume()),
    };
    insert_message(tx, settings, &job.project_id, &job.request_id, resource, uuid, action, reason)
}

#[allow(clippy::too_many_arguments)]
pub(super) fn insert_message(
    tx: &Tx,
    settings: &super::Settings,
    project_id: &str,
    request_id: &str,
    resource: MessageResource,
    resource_uuid: Option<&str>,
    action: MessageAction,
    reason: &str,
) -> Result<(), StoreError> {
    let (event_id, user_message) = Message::describe(resource, action, reason);
    let created = std::time::SystemTime::now();
    tx.insert_message(&Message {
        id: uuid::Uuid::new_v4().to_string(),
        project_id: project_id.to_string(),
        request_id: request_id.to_string(),
        resource_type: resource,
        resource_uuid: resource_uuid.map(str::to_string),
        event_id,
        message_level: "ERROR".to_string(),
        user_message,
        created_at: timestamp(created),
        expires_at: timestamp(created + settings.message_ttl),
    })
}

/// A journal row this ember cannot read: it ends as failed with the reason, its
/// volume (and snapshot) go to `error`, and the owner is told.
fn fail_undecodable(tx: &Tx, row: &JobRow, reason: &str, settings: &super::Settings) -> Result<(), StoreError> {
    tracing::error!(job = row.id, kind = %row.kind, volume = ?row.volume_id, %reason, "unreadable job in the journal");
    tx.end_job(row.id, JobState::Failed, Some(reason))?;
    if let Some(volume) = row.volume_id.as_deref().map(|id| tx.volume(id)).transpose()?.flatten() {
        tx.update_volume(volume.status, &Volume { status: VolumeStatus::Error, ..volume.clone() })?;
    }
    if let Some(snap) = row.snapshot_id.as_deref().map(|id| tx.snapshot(id)).transpose()?.flatten() {
        let mut new = snap.clone();
        new.status = SnapshotStatus::Error;
        tx.update_snapshot(snap.status, &new)?;
    }
    insert_message(
        tx,
        settings,
        &row.project_id,
        &row.request_id,
        MessageResource::Volume,
        row.volume_id.as_deref(),
        MessageAction::RESUME_JOB,
        &format!("this ember could not read its journal entry (job {})", row.id),
    )
}

/// Whether a migration that failed at step `failed_at` may have lost its
/// source's bytes: it reached the step that deletes them.
pub(super) fn gave_up_source(spec: &JobSpec, failed_at: usize) -> bool {
    let (JobSpec::MigrateVolume { volume, .. } | JobSpec::MigrateToPeer { volume, .. }) = spec else { return false };
    let release = steps(spec).iter().position(|s| matches!(s, Step::DeleteVolume(v) if v == volume));
    release.is_some_and(|release| failed_at >= release)
}

/// The final statuses of a job that ended: done (`failed_at` None) or failed
/// at that step. A volume or snapshot that is no longer in the job's
/// transitional status was reset by an admin meanwhile: it is left as it is.
fn finish(tx: &Tx, spec: &JobSpec, failed_at: Option<usize>) -> Result<(), StoreError> {
    let ok = failed_at.is_none();
    let volume_in = |id: &str, expected: VolumeStatus| -> Result<Option<Volume>, StoreError> {
        Ok(tx.volume(id)?.filter(|v| v.status == expected))
    };
    let settle = |id: &str, expected: VolumeStatus, edit: &dyn Fn(&mut Volume)| -> Result<(), StoreError> {
        match volume_in(id, expected)? {
            Some(v) => {
                let mut new = v.clone();
                edit(&mut new);
                tx.update_volume(expected, &new)
            }
            None => Ok(()),
        }
    };
    let settle_snapshot = |id: &str, expected: SnapshotStatus, status: SnapshotStatus| -> Result<(), StoreError> {
        match tx.snapshot(id)?.filter(|s| s.status == expected) {
            Some(s) => {
                let mut new = s.clone();
                new.status = status;
                if status == SnapshotStatus::Available && expected == SnapshotStatus::Creating {
                    new.progress = "100%".to_string();
                }
                tx.update_snapshot(expected, &new)
            }
            None => Ok(()),
        }
    };
    let outcome = |good: VolumeStatus, bad: VolumeStatus| if ok { good } else { bad };
    match spec {
        JobSpec::CreateVolume { volume, .. } => settle(volume, VolumeStatus::Creating, &|v| {
            v.status = outcome(VolumeStatus::Available, VolumeStatus::Error);
        }),
        JobSpec::ManageVolume { volume, .. } => settle(volume, VolumeStatus::Managing, &|v| {
            v.status = outcome(VolumeStatus::Available, VolumeStatus::ErrorManaging);
        }),
        // Once the bytes are gone the rows go too, even if an admin reset the status
        // meanwhile: a record pointing at nothing would be worse than either.
        JobSpec::DeleteVolume { volume, .. } => {
            if ok {
                for snap in tx.snapshots(None, Some(volume))? {
                    tx.delete_snapshot(&snap.id)?;
                }
                tx.delete_volume(volume)
            } else {
                for snap in tx.snapshots(None, Some(volume))? {
                    settle_snapshot(&snap.id, SnapshotStatus::Deleting, SnapshotStatus::ErrorDeleting)?;
                }
                settle(volume, VolumeStatus::Deleting, &|v| v.status = VolumeStatus::ErrorDeleting)
            }
        }
        JobSpec::ExtendVolume { volume, new_size_gib } => {
            let new_size = i64::try_from(*new_size_gib).unwrap_or(i64::MAX);
            match tx.volume(volume)? {
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
                // still say what the device now holds.
                Some(v) if ok && v.size < new_size => {
                    tx.update_volume(v.status, &Volume { size: new_size, ..v.clone() })
                }
                _ => Ok(()),
            }
        }
        JobSpec::RevertVolume { volume, snapshot } => {
            settle_snapshot(snapshot, SnapshotStatus::Restoring, SnapshotStatus::Available)?;
            settle(volume, VolumeStatus::Reverting, &|v| {
                v.status = outcome(VolumeStatus::Available, VolumeStatus::Error);
            })
        }
        JobSpec::CreateSnapshot { snapshot, .. } => {
            let status = if ok { SnapshotStatus::Available } else { SnapshotStatus::Error };
            settle_snapshot(snapshot, SnapshotStatus::Creating, status)
        }
        JobSpec::DeleteSnapshot { snapshot, .. } => match tx.snapshot(snapshot)? {
            Some(s) if ok => tx.delete_snapshot(&s.id),
            _ => settle_snapshot(snapshot, SnapshotStatus::Deleting, SnapshotStatus::ErrorDeleting),
        },
        JobSpec::UnmanageVolume { volume } => match volume_in(volume, VolumeStatus::Unmanaging)? {
            Some(_) if ok => tx.delete_volume(volume),
            _ => settle(volume, VolumeStatus::Unmanaging, &|v| v.status = VolumeStatus::ErrorUnmanaging),
        },
        // Cinder: a failed manage leaves the snapshot in `error`, a failed unmanage
        // (a delete that keeps the bytes) in `error_deleting`.
        JobSpec::ManageSnapshot { snapshot, .. } => {
            let status = if ok { SnapshotStatus::Available } else { SnapshotStatus::Error };
            settle_snapshot(snapshot, SnapshotStatus::Creating, status)
        }
        JobSpec::UnmanageSnapshot { snapshot, .. } => match tx.snapshot(snapshot)? {
            Some(s) if ok && s.status == SnapshotStatus::Unmanaging => tx.delete_snapshot(&s.id),
            _ => settle_snapshot(snapshot, SnapshotStatus::Unmanaging, SnapshotStatus::ErrorDeleting),
        },
        JobSpec::RetypeVolume { volume, new_type } => settle(volume, VolumeStatus::Retyping, &|v| {
            if ok {
                v.volume_type_id = new_type.clone();
            }
            v.status = v.previous_status.unwrap_or(VolumeStatus::Available);
        }),
        // A failed export takes back what its request added to the desired state.
        JobSpec::ExportVolume { volume, initiator, new_export, new_acl } => {
            if !ok {
                if *new_export {
                    tx.delete_export(volume)?;
                } else if *new_acl {
                    tx.remove_export_acl(volume, initiator)?;
                }
            }
            Ok(())
        }
        JobSpec::ReconcileExport { .. } => Ok(()),
        // The create ran as `creating`, then `downloading` once the copy began.
        JobSpec::CreateVolumeFromImage { volume, .. } => {
            for status in [VolumeStatus::Downloading, VolumeStatus::Creating] {
                settle(volume, status, &|v| v.status = outcome(VolumeStatus::Available, VolumeStatus::Error))?;
            }
            Ok(())
        }
        JobSpec::Reimage { volume, .. } => settle(volume, VolumeStatus::Downloading, &|v| {
            // A reimaged volume is whole again: one that was in error is available.
            v.status = match v.previous_status {
                _ if !ok => VolumeStatus::Error,
                Some(VolumeStatus::Reserved) => VolumeStatus::Reserved,
                _ => VolumeStatus::Available,
            };
        }),
        // Done or not, the volume is as it was: available or in-use by its attachments.
        JobSpec::UploadImage { volume, .. } => {
            settle(volume, VolumeStatus::Uploading, &|v| v.status = derived_attach_state(&v.attachments).1)
        }
        JobSpec::MigrateVolume { .. } | JobSpec::MigrateToPeer { .. } => {
            use super::migration::Ended;
            let ended = match failed_at {
                None => Ended::Done,
                Some(at) if gave_up_source(spec, at) => Ended::SourceGone,
                Some(_) => Ended::SourceKept,
            };
            super::migration::finish(tx, spec, ended)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cascade_delete_removes_the_export_then_snapshots_then_the_volume() {
        let spec = JobSpec::DeleteVolume { volume: "v".into(), snapshots: vec!["s1".into(), "s2".into()] };
        assert_eq!(
            steps(&spec),
            [
                Step::ReconcileExport("v".into()),
                Step::DeleteSnapshot("s1".into()),
                Step::DeleteSnapshot("s2".into()),
                Step::DeleteVolume("v".into())
            ]
        );
    }
}
