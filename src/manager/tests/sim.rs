//! The simulated agent of the job and export tests: a real store, the simulated
//! pool (and, when asked, a simulated iSCSI target), and the current life of the
//! manager over them; a crash drops that life mid-step while store, pool and
//! target live on, as the disk and the kernel's targets do.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{caller, images, settings};
use crate::manager::{Caller, CreateSnapshot, CreateVolume, ExportSettings, Exporter, Manager, PoolSlot, VolumeAction};
use crate::model::{JobState, Message, Snapshot, TargetBackend, Volume, VolumeStatus};
use crate::pool::sim::SimPool;
use crate::store::Store;
use crate::target::sim::SimTarget;

pub const V342: (u16, u16) = (3, 42);

/// A store, a simulated pool, and the current life of the agent over them.
pub struct Sim {
    pub dir: std::path::PathBuf,
    pub store: Arc<Store>,
    pub pool: Arc<SimPool>,
    /// A second pool (`OTHER`), when the agent has one.
    pub other: Option<Arc<SimPool>>,
    /// The iSCSI target, when the agent has one.
    pub target: Option<Arc<SimTarget>>,
    rt: Option<tokio::runtime::Runtime>,
    pub m: Arc<Manager>,
    pub admin: Caller,
}

fn exporter(target: &Option<Arc<SimTarget>>) -> Exporter {
    Exporter {
        iscsi: target.clone().map(|t| t as Arc<dyn crate::target::Target>),
        nvme: None,
        settings: ExportSettings::default(),
    }
}

/// `host@backend#pool` of the second pool.
pub const OTHER: &str = "node1@other#other";

/// A life of the agent over the store, the pools and the target.
fn life(
    sim_store: &Arc<Store>,
    pool: &Arc<SimPool>,
    other: &Option<Arc<SimPool>>,
    target: &Option<Arc<SimTarget>>,
    dir: &std::path::Path,
) -> Arc<Manager> {
    let mut pools = vec![super::slot(pool.clone(), 1.0)];
    pools.extend(other.iter().map(|o| PoolSlot {
        host: OTHER.into(),
        backend_name: "other".into(),
        max_over_subscription_ratio: 1.0,
        pool: o.clone(),
    }));
    Manager::new(sim_store.clone(), pools, exporter(target), settings(), images(dir))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

impl Sim {
    pub fn new() -> Sim {
        Self::build(None, None)
    }

    /// With a simulated iSCSI target (tgt-like: LUN 1) named with Cinder's prefix.
    pub fn with_target() -> Sim {
        Self::build(Some(Arc::new(SimTarget::new(TargetBackend::Tgt, &ExportSettings::default().iqn_prefix))), None)
    }

    /// With a second pool, `OTHER` (backend `other`).
    pub fn with_two_pools() -> Sim {
        Self::build(None, Some(Arc::new(SimPool::default())))
    }

    fn build(target: Option<Arc<SimTarget>>, other: Option<Arc<SimPool>>) -> Sim {
        let dir = std::env::temp_dir().join(format!("ember-sim-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = Arc::new(Store::open(&dir.join("ember.db")).unwrap());
        let pool = Arc::new(SimPool::default());
        let rt = runtime();
        let m = life(&store, &pool, &other, &target, &dir);
        m.ensure_default_type().unwrap();
        Sim { dir, store, pool, other, target, rt: Some(rt), m, admin: caller("admin", "p1", true) }
    }

    pub fn target(&self) -> &SimTarget {
        self.target.as_deref().expect("a Sim with a target")
    }

    /// Runs `f` where jobs can be spawned.
    pub fn on<T>(&self, f: impl FnOnce(&Arc<Manager>) -> T) -> T {
        let _inside = self.rt.as_ref().unwrap().enter();
        f(&self.m)
    }

    /// kill -9 and start again: running jobs stop where they are, hung pool calls
    /// return into nothing, and a new manager resumes the journal.
    pub fn crash_and_restart(&mut self) -> usize {
        // The process dies: nothing the old life does after this point counts.
        self.m.stop();
        self.rt.take().unwrap().shutdown_background();
        self.pool.release();
        self.pool.clear_faults();
        self.rt = Some(runtime());
        if let Some(other) = &self.other {
            other.release();
            other.clear_faults();
        }
        self.m = life(&self.store, &self.pool, &self.other, &self.target, &self.dir);
        self.on(|m| m.recover()).unwrap()
    }

    pub fn settle(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.store.read(|tx| tx.running_jobs()).unwrap().is_empty() {
            assert!(Instant::now() < deadline, "jobs did not finish");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    pub fn volume(&self, id: &str) -> Option<Volume> {
        self.store.read(|tx| tx.volume(id)).unwrap()
    }

    pub fn status(&self, id: &str) -> VolumeStatus {
        self.volume(id).unwrap().status
    }

    pub fn snapshot(&self, id: &str) -> Option<Snapshot> {
        self.store.read(|tx| tx.snapshot(id)).unwrap()
    }

    pub fn create(&self, req: CreateVolume) -> Volume {
        self.on(|m| m.create_volume(&self.admin, req)).unwrap()
    }

    /// An available volume of `size` GiB holding `Data(value)`.
    pub fn ready_volume(&self, size: i64, value: u64) -> Volume {
        let v = self.create(CreateVolume { size: Some(size), ..Default::default() });
        self.settle();
        self.pool.write(&v.id, value);
        self.volume(&v.id).unwrap()
    }

    pub fn take_snapshot(&self, volume: &str) -> Snapshot {
        let req = CreateSnapshot { volume_id: volume.into(), ..Default::default() };
        let s = self.on(|m| m.create_snapshot(&self.admin, req, false)).unwrap();
        self.settle();
        self.snapshot(&s.id).unwrap()
    }

    /// An action at 3.42 (revert, in-use extend).
    pub fn act(&self, id: &str, action: VolumeAction) -> crate::manager::Result<crate::manager::ActionOutcome> {
        self.on(|m| m.volume_action(&self.admin, id, action, V342))
    }

    pub fn delete(&self, id: &str, cascade: bool) {
        self.on(|m| m.delete_volume(&self.admin, id, cascade, false)).unwrap();
    }

    pub fn messages(&self) -> Vec<Message> {
        self.m.messages(&self.admin).unwrap()
    }

    /// (state, last_error) of every job row, oldest first.
    pub fn job_states(&self) -> Vec<(JobState, Option<String>)> {
        self.store.read(|tx| tx.job_history()).unwrap()
    }

    pub fn last_job(&self) -> (JobState, Option<String>) {
        self.job_states().pop().unwrap()
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.pool.release();
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
