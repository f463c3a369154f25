//! The volume state machine: every action's preconditions and transitions (spec
//! §3), the per-volume locks, the durable jobs that do device work, and their
//! resumption at start.
//!
//! A mutating action runs in two halves (DESIGN decision 1). The first, inside one
//! store transaction, checks the preconditions, writes the transitional status and a
//! typed job row, queues the job on the locks of every resource it touches, and
//! returns: the API answers 202 only after that commit. The second runs the job's
//! steps once it holds its locks, on blocking threads, recording each completed
//! step, and in one more transaction writes the final status, ends the job and, if
//! it failed, leaves the owner a user message saying why. A crash in between leaves
//! the job row, and `recover` continues from its last completed step at the next
//! start.

mod actions;
mod attachments;
mod exports;
mod groups;
mod images;
mod jobs;
mod locks;
mod messages;
mod migration;
mod peers;
mod qos;
mod quotas;
pub mod scheduler;
mod services;
mod snapshots;
mod transfers;
pub mod types;
mod volumes;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub use actions::*;
pub use attachments::AttachmentView;
pub use exports::{ExportSettings, Exporter, connector_initiator, portal};
pub use groups::{CreateGroup, GroupSource, UpdateGroup, group_type_not_found};
pub use images::{DISK_FORMATS, RunningCopy, image_source};
pub use jobs::JobView;
pub use peers::{Destination, Frames, Peer, PeerError};
pub use qos::QosUpdate;
pub use quotas::{QuotaUsage, check_quota_keys};
pub use scheduler::capabilities;
pub use services::{ScrapeState, Service, VOLUME_BINARY};
pub use snapshots::*;
pub use volumes::*;

use crate::model::Volume;
use crate::pool::{Capacity, GIB, Pool, PoolError};
use crate::store::{Store, StoreError, Tx};

/// Who is asking, as the API resolved it. Policy is the API's business; the manager
/// only needs the project (to scope lookups), whether the caller is an admin, and
/// the request (messages about work it started name it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub user_id: String,
    pub project_id: String,
    pub is_admin: bool,
    pub request_id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    OverLimit(String),
    #[error("{0}")]
    NotImplemented(String),
    #[error("{0}")]
    PreconditionFailed(String),
    #[error("{0}")]
    Forbidden(String),
    /// The device or target work failed (Cinder's 500 "Unable to … from backend").
    #[error("{0}")]
    Backend(String),
    #[error(transparent)]
    Store(StoreError),
    #[error(transparent)]
    Pool(#[from] PoolError),
}

impl From<StoreError> for ManagerError {
    /// A lost compare-and-set means the status moved under the caller: a 400 it may
    /// retry, as Cinder answers a failed conditional update. Anything else is ours.
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::StaleStatus { kind, id, expected } => ManagerError::Invalid(format!(
                "Invalid {kind}: {kind} {id} changed status concurrently (was {expected}); try again."
            )),
            other => ManagerError::Store(other),
        }
    }
}

pub type Result<T> = std::result::Result<T, ManagerError>;

/// What the manager needs to know of its place in the deployment.
#[derive(Debug, Clone)]
pub struct Settings {
    pub availability_zone: String,
    /// How long a user message is kept at least (Cinder's `message_ttl`).
    pub message_ttl: Duration,
    /// The default quota class, before any `os-quota-class-sets` update.
    pub quota: crate::config::QuotaConfig,
    /// Data bytes per second a copy may write (None: no limit).
    pub copy_rate_limit: Option<u64>,
    /// qcow2 uploads are compressed (Cinder's `image_compress_on_upload`).
    pub compress_qcow2_uploads: bool,
    /// Where a qcow2 upload is assembled before it is streamed (`<data-dir>/tmp`).
    pub scratch_dir: std::path::PathBuf,
    /// The agents this one migrates volumes to and receives them from.
    pub peers: Vec<Peer>,
}

/// One of the agent's pools, as volumes are placed on it: its `host@backend#pool`
/// (what a volume's `host` names), the backend name a volume type's
/// `volume_backend_name` picks, and its over-subscription ratio.
pub struct PoolSlot {
    pub host: String,
    pub backend_name: String,
    pub max_over_subscription_ratio: f64,
    pub pool: Arc<dyn Pool>,
}

impl PoolSlot {
    /// `host@backend`: the volume service the pool belongs to.
    pub fn service_host(&self) -> &str {
        self.host.split('#').next().unwrap_or_default()
    }
}

pub struct Manager {
    store: Arc<Store>,
    /// The agent's pools, the default one first.
    pools: Vec<PoolSlot>,
    exporter: Exporter,
    settings: Settings,
    locks: Arc<locks::LockTable>,
    images: Arc<dyn crate::image::ImageStore>,
    /// The copies running now, by job (the jobs resource shows them).
    copies: std::sync::Mutex<BTreeMap<i64, RunningCopy>>,
    /// Set on shutdown: running jobs stop at their next step boundary, recording
    /// nothing more, and resume from the journal at the next start.
    stopping: std::sync::atomic::AtomicBool,
    /// Migration destinations a peer's call is working on now (peers.rs).
    receiving: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl Manager {
    /// A manager over the agent's pools, the first the default one.
    pub fn new(
        store: Arc<Store>,
        pools: Vec<PoolSlot>,
        exporter: Exporter,
        settings: Settings,
        images: Arc<dyn crate::image::ImageStore>,
    ) -> Arc<Manager> {
        assert!(!pools.is_empty(), "a manager needs a pool");
        Arc::new(Manager {
            store,
            pools,
            exporter,
            settings,
            locks: Arc::default(),
            images,
            copies: Default::default(),
            stopping: Default::default(),
            receiving: Default::default(),
        })
    }

    pub fn images(&self) -> &dyn crate::image::ImageStore {
        self.images.as_ref()
    }

    /// Asks running jobs to stop after their current step (shutdown): what they
    /// did not record they do again when the journal resumes them.
    pub fn stop(&self) {
        self.stopping.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    fn stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The default pool: where a volume goes that nothing places elsewhere.
    fn default_pool(&self) -> &PoolSlot {
        &self.pools[0]
    }

    /// The first pool `name` names: `host@backend#pool` exactly, or
    /// `host@backend` or `host` (the first pool of that backend, or of the agent).
    pub fn pool_named(&self, name: &str) -> Option<&PoolSlot> {
        self.pools.iter().find(|s| s.host == name).or_else(|| {
            self.pools.iter().find(|s| {
                let service = s.service_host();
                name == service || name == service.split('@').next().unwrap_or_default()
            })
        })
    }

    /// Where in `pools` the pool named by a volume's `host` is.
    fn slot_index(&self, host: &str) -> Option<usize> {
        self.pools.iter().position(|s| s.host == host)
    }

    /// What `f` lists of each pool, the default pool's first.
    fn in_every_pool<T>(&self, f: impl Fn(&PoolSlot) -> Result<Vec<T>>) -> Result<Vec<T>> {
        let mut all = Vec::new();
        for slot in &self.pools {
            all.extend(f(slot)?);
        }
        Ok(all)
    }

    /// The pool named by a volume's `host`.
    fn slot(&self, host: &str) -> Result<&PoolSlot> {
        self.slot_index(host).map(|i| &self.pools[i]).ok_or_else(|| unknown_pool(host))
    }

    /// The pool holding the volume `id` (by its record's `host`).
    fn pool_of(&self, id: &str) -> std::result::Result<&dyn Pool, jobs::StepError> {
        let host = self.store.read(|tx| tx.volume(id))?.map(|v| v.host);
        let host = host.ok_or_else(|| PoolError::NotFound { what: format!("volume {id}") })?;
        let index = self.slot_index(&host).ok_or_else(|| PoolError::Refused(unknown_pool(&host).to_string()))?;
        Ok(self.pools[index].pool.as_ref())
    }

    /// The pool holding the snapshot `id` (its volume's).
    fn pool_of_snapshot(&self, id: &str) -> std::result::Result<&dyn Pool, jobs::StepError> {
        let volume = self.store.read(|tx| tx.snapshot(id))?.map(|s| s.volume_id);
        self.pool_of(&volume.ok_or_else(|| PoolError::NotFound { what: format!("snapshot {id}") })?)
    }

    /// A volume the caller may see: another project's volume is "not found" (not
    /// "forbidden") for non-admins, as in Cinder.
    pub fn volume(&self, caller: &Caller, id: &str) -> Result<Volume> {
        self.store
            .read(|tx| tx.volume(id))?
            .filter(|v| caller.is_admin || v.project_id == caller.project_id)
            .ok_or_else(|| volume_not_found(id))
    }

    /// Each pool's capacity, read before the transaction that provisions:
    /// asking a pool may run lvm commands, which must not hold the store.
    fn capacities(&self) -> Capacities {
        Capacities(self.pools.iter().map(|slot| slot.pool.capacity().map_err(|e| e.to_string())).collect())
    }

    /// Refuses a size the pool `host` cannot guarantee (spec: fails cleanly,
    /// with a reason). Runs inside the transaction that provisions, so two
    /// creates cannot both take the last free GiB.
    fn check_capacity(&self, tx: &Tx, host: &str, capacities: &Capacities, extra_gib: i64) -> Result<()> {
        let (slot, capacity) = capacities.of(self, host)?;
        let provisioned = tx.provisioned_gib_on(&slot.host)?;
        let gib = |bytes: u64| bytes as f64 / GIB as f64;
        let limit = gib(capacity.total_bytes) * slot.max_over_subscription_ratio;
        let wanted = (provisioned + extra_gib) as f64;
        if wanted > limit {
            return Err(ManagerError::OverLimit(format!(
                "Requested {extra_gib} GiB exceeds the capacity of pool {}: {provisioned} GiB provisioned of \
                 {limit:.0} GiB allowed (max_over_subscription_ratio {}).",
                slot.host, slot.max_over_subscription_ratio
            )));
        }
        // Without over-subscription, every provisioned byte must be writable: the
        // free space has to cover what volumes have not written yet, plus this one.
        if slot.max_over_subscription_ratio <= 1.0 {
            let unwritten = (provisioned as f64 - gib(capacity.allocated_bytes)).max(0.0);
            let free = gib(capacity.free_bytes);
            if unwritten + extra_gib as f64 > free {
                return Err(ManagerError::OverLimit(format!(
                    "Requested {extra_gib} GiB exceeds the pool's free space: {free:.1} GiB free, \
                     {unwritten:.1} GiB already promised to existing volumes."
                )));
            }
        }
        Ok(())
    }
}

/// Each pool's capacity (or why it could not be read), in the order of `pools`.
pub(crate) struct Capacities(Vec<std::result::Result<Capacity, String>>);

impl Capacities {
    /// The pool `host` and its capacity.
    fn of<'m>(&self, m: &'m Manager, host: &str) -> Result<(&'m PoolSlot, &Capacity)> {
        let index = m.slot_index(host).ok_or_else(|| unknown_pool(host))?;
        let capacity = self.0[index]
            .as_ref()
            .map_err(|e| ManagerError::Backend(format!("The capacity of pool {host} could not be read: {e}")))?;
        Ok((&m.pools[index], capacity))
    }
}

/// The pool's capacity as Cinder's scheduler stats show it.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolStats {
    pub total_gib: f64,
    pub free_gib: f64,
    pub provisioned_gib: i64,
    pub allocated_gib: f64,
    pub max_over_subscription_ratio: f64,
    /// Thin pools: data and metadata use, percent.
    pub thin_data_percent: Option<f64>,
    pub thin_metadata_percent: Option<f64>,
}

impl Manager {
    /// Every pool's stats, the default pool first.
    pub fn pool_stats(&self) -> Result<Vec<(&PoolSlot, PoolStats)>> {
        self.pools.iter().map(|slot| Ok((slot, self.stats_of_pool(slot)?))).collect()
    }

    /// One pool's stats (its capacity asked of the pool, its provisioned GiB of the store).
    pub fn stats_of_pool(&self, slot: &PoolSlot) -> Result<PoolStats> {
        let capacity = slot.pool.capacity()?;
        let provisioned_gib = self.store.read(|tx| tx.provisioned_gib_on(&slot.host))?;
        Ok(stats_of(slot, &capacity, provisioned_gib))
    }
}

fn stats_of(slot: &PoolSlot, capacity: &Capacity, provisioned_gib: i64) -> PoolStats {
    let gib = |bytes: u64| (bytes as f64 / GIB as f64 * 100.0).round() / 100.0;
    PoolStats {
        total_gib: gib(capacity.total_bytes),
        free_gib: gib(capacity.free_bytes),
        provisioned_gib,
        allocated_gib: gib(capacity.allocated_bytes),
        thin_data_percent: capacity.thin_data_hundredths.map(|h| h as f64 / 100.0),
        thin_metadata_percent: capacity.thin_metadata_hundredths.map(|h| h as f64 / 100.0),
        max_over_subscription_ratio: slot.max_over_subscription_ratio,
    }
}

/// How many metadata items (of each kind) a volume may hold, and how many bytes
/// of keys and values in all. Cinder bounds each key (255) and value (255 for
/// metadata, 65,535 for image metadata) but not their number, so one volume's
/// show can be made megabytes long; ember refuses that with 413.
pub const MAX_METADATA_ITEMS: usize = 128;
pub const MAX_METADATA_BYTES: usize = 256 * 1024;

/// Refuses `map` (what a volume's metadata would be after a change) beyond the
/// limits above.
/// `whose` names it in the message ("Metadata of volume …").
pub fn check_metadata_limits(whose: &str, map: &BTreeMap<String, String>) -> Result<()> {
    let bytes: usize = map.iter().map(|(k, v)| k.len() + v.len()).sum();
    if map.len() > MAX_METADATA_ITEMS || bytes > MAX_METADATA_BYTES {
        return Err(ManagerError::OverLimit(format!(
            "{whose} would hold {} items in {bytes} bytes; at most {MAX_METADATA_ITEMS} items \
             and {MAX_METADATA_BYTES} bytes are allowed.",
            map.len()
        )));
    }
    Ok(())
}

/// A size in GiB as the pool takes it (sizes are validated positive).
fn gib(size: i64) -> u64 {
    u64::try_from(size).unwrap_or(0)
}

/// A volume's `host` naming no pool of this agent (a pool removed from the config).
fn unknown_pool(host: &str) -> ManagerError {
    ManagerError::Backend(format!("Pool {host} is not one of this agent's pools."))
}

pub fn volume_not_found(id: &str) -> ManagerError {
    ManagerError::NotFound(format!("Volume {id} could not be found."))
}

pub fn snapshot_not_found(id: &str) -> ManagerError {
    ManagerError::NotFound(format!("Snapshot {id} could not be found."))
}

pub fn type_not_found(id: &str) -> ManagerError {
    ManagerError::NotFound(format!("Volume type {id} could not be found."))
}

#[cfg(test)]
mod tests;
