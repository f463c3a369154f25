//! State-machine tests: the preconditions and transitions of every action that
//! works in the file pool, on a real SQLite store and real sparse files. Job ends,
//! resumes and lock rules on the simulated pool are in `jobs.rs`.

mod exports;
mod groups;
mod images;
mod jobs;
mod migration;
mod sim;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::config::FileConfig;
use crate::model::{AttachMode, AttachStatus, JobSpec, MigrationStatus, SnapshotStatus, VolumeStatus};
use crate::pool::file::FilePool;

struct Env {
    m: Arc<Manager>,
    pool: Arc<FilePool>,
    dir: PathBuf,
    admin: Caller,
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const V30: (u16, u16) = (3, 0);
const V342: (u16, u16) = (3, 42);

fn env_with(ratio: f64) -> Env {
    let dir = std::env::temp_dir().join(format!("ember-manager-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = Arc::new(Store::open(&dir.join("ember.db")).unwrap());
    let pool = Arc::new(FilePool::open(&dir, &FileConfig::default()).unwrap());
    let m = Manager::new(store, vec![slot(pool.clone(), ratio)], Exporter::default(), settings(), images(&dir));
    m.ensure_default_type().unwrap();
    let admin = caller("admin", "p1", true);
    Env { m, pool, dir, admin }
}

/// A `dir` image store under the test's directory.
fn images(dir: &std::path::Path) -> Arc<dyn crate::image::ImageStore> {
    Arc::new(crate::image::dir::DirStore::open(&dir.join("images")).unwrap())
}

/// A test agent's default pool: `node1@file#file`.
fn slot(pool: Arc<dyn crate::pool::Pool>, max_over_subscription_ratio: f64) -> crate::manager::PoolSlot {
    crate::manager::PoolSlot {
        host: "node1@file#file".into(),
        backend_name: "file".into(),
        max_over_subscription_ratio,
        pool,
    }
}

/// The settings of a test agent.
fn settings() -> Settings {
    Settings {
        availability_zone: "nova".into(),
        message_ttl: Duration::from_secs(3600),
        quota: crate::config::QuotaConfig::default(),
        copy_rate_limit: None,
        compress_qcow2_uploads: false,
        scratch_dir: std::env::temp_dir().join(format!("ember-scratch-{}", uuid::Uuid::new_v4())),
        peers: Vec::new(),
    }
}

fn caller(user: &str, project: &str, is_admin: bool) -> Caller {
    Caller {
        user_id: user.into(),
        project_id: project.into(),
        is_admin,
        request_id: format!("req-{}", uuid::Uuid::new_v4()),
    }
}

fn env() -> Env {
    // Sparse 1 GiB volumes: over-subscription keeps the tests independent of the
    // free space of the machine running them.
    env_with(1000.0)
}

impl Env {
    async fn settle(&self) {
        for _ in 0..2000 {
            if self.m.store.read(|tx| tx.running_jobs()).unwrap().is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("jobs did not finish");
    }

    async fn volume(&self, size: i64) -> Volume {
        let v = self.m.create_volume(&self.admin, CreateVolume { size: Some(size), ..Default::default() }).unwrap();
        assert_eq!(v.status, VolumeStatus::Creating);
        self.settle().await;
        self.get(&v.id)
    }

    fn get(&self, id: &str) -> Volume {
        self.m.volume(&self.admin, id).unwrap()
    }

    fn act(&self, id: &str, action: VolumeAction) -> Result<ActionOutcome> {
        self.m.volume_action(&self.admin, id, action, V30)
    }

    async fn snapshot(&self, volume_id: &str) -> crate::model::Snapshot {
        let s = self
            .m
            .create_snapshot(&self.admin, CreateSnapshot { volume_id: volume_id.into(), ..Default::default() }, false)
            .unwrap();
        self.settle().await;
        self.m.snapshot(&self.admin, &s.id).unwrap()
    }

    /// os-reset_status of the status alone.
    fn reset(&self, id: &str, status: VolumeStatus) {
        self.act(id, VolumeAction::ResetStatus { status: Some(status), attach_status: None, migration_status: None })
            .unwrap();
    }

    /// os-reset_status of the migration status alone (None is "none").
    fn reset_migration(&self, id: &str, migration: Option<&str>) {
        let migration_status = Some(migration.map(|m| m.parse::<MigrationStatus>().unwrap()));
        self.act(id, VolumeAction::ResetStatus { status: None, attach_status: None, migration_status }).unwrap();
    }

    fn attach(&self, id: &str, instance: &str, mode: AttachMode) -> Result<ActionOutcome> {
        self.act(
            id,
            VolumeAction::Attach {
                instance_uuid: Some(instance.into()),
                host_name: None,
                mountpoint: "/dev/vdb".into(),
                mode,
            },
        )
    }

    fn write_at(&self, id: &str, offset: u64, bytes: &[u8]) {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(self.pool.volume_path(id)).unwrap();
        f.write_all_at(bytes, offset).unwrap();
        f.sync_all().unwrap();
    }

    fn read_at(&self, id: &str, offset: u64, len: usize) -> Vec<u8> {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::open(self.pool.volume_path(id)).unwrap();
        let mut buf = vec![0; len];
        f.read_exact_at(&mut buf, offset).unwrap();
        buf
    }
}

fn is_invalid<T: std::fmt::Debug>(r: Result<T>) -> String {
    match r {
        Err(ManagerError::Invalid(m)) => m,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn create_makes_a_sparse_file_of_the_size() {
    let e = env();
    let v = e.volume(2).await;
    assert_eq!(v.status, VolumeStatus::Available);
    let meta = std::fs::metadata(e.pool.volume_path(&v.id)).unwrap();
    assert_eq!(meta.len(), 2 << 30);
    use std::os::unix::fs::MetadataExt;
    assert!(meta.blocks() < 64, "not sparse");
}

#[tokio::test(flavor = "multi_thread")]
async fn capacity_is_refused_cleanly_without_oversubscription() {
    let e = env_with(1.0);
    let err = e.m.create_volume(&e.admin, CreateVolume { size: Some(1 << 40), ..Default::default() }).unwrap_err();
    assert!(matches!(err, ManagerError::OverLimit(_)), "{err:?}");
    assert!(e.m.volumes(&e.admin, true).unwrap().is_empty(), "nothing may be left in the store");
}

#[tokio::test(flavor = "multi_thread")]
async fn reserve_unreserve_and_detaching_transitions() {
    let e = env();
    let v = e.volume(1).await;
    e.act(&v.id, VolumeAction::Reserve).unwrap();
    assert_eq!(e.get(&v.id).status, VolumeStatus::Attaching);
    assert!(is_invalid(e.act(&v.id, VolumeAction::Reserve)).contains("must be available to reserve"));
    e.act(&v.id, VolumeAction::Unreserve).unwrap();
    assert_eq!(e.get(&v.id).status, VolumeStatus::Available);
    // Unreserve and roll_detaching outside their status are silent no-ops.
    e.act(&v.id, VolumeAction::Unreserve).unwrap();
    e.act(&v.id, VolumeAction::RollDetaching).unwrap();
    assert_eq!(e.get(&v.id).status, VolumeStatus::Available);
    is_invalid(e.act(&v.id, VolumeAction::BeginDetaching));
    e.attach(&v.id, "11111111-1111-1111-1111-111111111111", AttachMode::Rw).unwrap();
    e.act(&v.id, VolumeAction::BeginDetaching).unwrap();
    assert_eq!(e.get(&v.id).status, VolumeStatus::Detaching);
    e.act(&v.id, VolumeAction::RollDetaching).unwrap();
    assert_eq!(e.get(&v.id).status, VolumeStatus::InUse);
}

#[tokio::test(flavor = "multi_thread")]
async fn attach_detach_bookkeeping() {
    let e = env();
    let v = e.volume(1).await;
    let server = "22222222-2222-2222-2222-222222222222";
    e.attach(&v.id, server, AttachMode::Rw).unwrap();
    let got = e.get(&v.id);
    assert_eq!((got.status, got.attach_status), (VolumeStatus::InUse, AttachStatus::Attached));
    assert_eq!(got.attachments.len(), 1);
    assert_eq!(got.admin_metadata.get("attached_mode").map(String::as_str), Some("rw"));
    assert_eq!(got.admin_metadata.get("readonly").map(String::as_str), Some("False"));
    // Same instance again: idempotent.
    e.attach(&v.id, server, AttachMode::Rw).unwrap();
    assert_eq!(e.get(&v.id).attachments.len(), 1);
    // Another instance on a non-multiattach volume: refused.
    let msg = is_invalid(e.attach(&v.id, "33333333-3333-3333-3333-333333333333", AttachMode::Rw));
    assert!(msg.starts_with("Error attaching volume - "), "{msg}");
    // Unknown attachment id: the 409 guard.
    let err = e.act(&v.id, VolumeAction::Detach { attachment_id: Some("nope".into()) }).unwrap_err();
    assert!(matches!(err, ManagerError::Conflict(_)), "{err:?}");
    e.act(&v.id, VolumeAction::Detach { attachment_id: None }).unwrap();
    let got = e.get(&v.id);
    assert_eq!((got.status, got.attach_status), (VolumeStatus::Available, AttachStatus::Detached));
    assert!(got.attachments.is_empty());
    assert!(!got.admin_metadata.contains_key("attached_mode"));
}

#[tokio::test(flavor = "multi_thread")]
async fn readonly_flag_and_attach_mode() {
    let e = env();
    let v = e.volume(1).await;
    e.act(&v.id, VolumeAction::UpdateReadonly(true)).unwrap();
    assert_eq!(e.get(&v.id).admin_metadata["readonly"], "True");
    is_invalid(e.attach(&v.id, "44444444-4444-4444-4444-444444444444", AttachMode::Rw));
    e.attach(&v.id, "44444444-4444-4444-4444-444444444444", AttachMode::Ro).unwrap();
    // Only an available volume may change its flag.
    is_invalid(e.act(&v.id, VolumeAction::UpdateReadonly(false)));
}

#[tokio::test(flavor = "multi_thread")]
async fn multiattach_type_allows_second_attachment_and_detach_needs_an_id() {
    let e = env();
    let t = e
        .m
        .create_volume_type("multi".into(), None, true, BTreeMap::from([("multiattach".into(), "<is> True".into())]))
        .unwrap();
    let v =
        e.m.create_volume(&e.admin, CreateVolume { size: Some(1), volume_type: Some(t.name), ..Default::default() })
            .unwrap();
    e.settle().await;
    assert!(e.get(&v.id).multiattach);
    e.attach(&v.id, "55555555-5555-5555-5555-555555555555", AttachMode::Rw).unwrap();
    e.act(&v.id, VolumeAction::Reserve).unwrap();
    e.attach(&v.id, "66666666-6666-6666-6666-666666666666", AttachMode::Rw).unwrap();
    let got = e.get(&v.id);
    assert_eq!(got.attachments.len(), 2);
    let err = e.act(&v.id, VolumeAction::Detach { attachment_id: None }).unwrap_err();
    assert!(matches!(err, ManagerError::Conflict(_)));
    let first = got.attachments[0].id.clone();
    e.act(&v.id, VolumeAction::Detach { attachment_id: Some(first) }).unwrap();
    assert_eq!(e.get(&v.id).status, VolumeStatus::InUse);
}

#[tokio::test(flavor = "multi_thread")]
async fn reset_status_rules() {
    let e = env();
    let v = e.volume(1).await;
    let reset = |status, attach_status| VolumeAction::ResetStatus { status, attach_status, migration_status: None };
    assert!(is_invalid(e.act(&v.id, reset(Some(VolumeStatus::Deleting), None))).contains("deleting"));
    is_invalid(e.act(&v.id, reset(Some(VolumeStatus::InUse), None)));
    for s in [VolumeStatus::Error, VolumeStatus::Available, VolumeStatus::Maintenance] {
        e.act(&v.id, reset(Some(s), None)).unwrap();
        assert_eq!(e.get(&v.id).status, s);
    }
    e.act(&v.id, reset(Some(VolumeStatus::Available), None)).unwrap();
    e.attach(&v.id, "77777777-7777-7777-7777-777777777777", AttachMode::Rw).unwrap();
    // Detaching through reset drops every attachment and recomputes the status.
    e.act(&v.id, reset(Some(VolumeStatus::Error), Some(AttachStatus::Detached))).unwrap();
    let got = e.get(&v.id);
    assert!(got.attachments.is_empty());
    assert_eq!((got.status, got.attach_status), (VolumeStatus::Available, AttachStatus::Detached));
    e.reset_migration(&v.id, Some("migrating"));
    assert_eq!(e.get(&v.id).migration_status, Some(MigrationStatus::Migrating));
    e.reset_migration(&v.id, None);
    assert_eq!(e.get(&v.id).migration_status, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn maintenance_blocks_metadata_actions() {
    let e = env();
    let v = e.volume(1).await;
    let meta = BTreeMap::from([("image_id".to_string(), "x".to_string())]);
    assert_eq!(
        e.act(&v.id, VolumeAction::SetImageMetadata(meta.clone())).unwrap(),
        ActionOutcome::Metadata(meta.clone())
    );
    let err = e.act(&v.id, VolumeAction::UnsetImageMetadata { key: "missing".into() }).unwrap_err();
    assert!(matches!(err, ManagerError::NotFound(_)));
    e.reset(&v.id, VolumeStatus::Maintenance);
    is_invalid(e.act(&v.id, VolumeAction::SetImageMetadata(meta)));
    is_invalid(e.act(&v.id, VolumeAction::UnsetImageMetadata { key: "image_id".into() }));
    is_invalid(e.act(&v.id, VolumeAction::SetBootable(true)));
    is_invalid(e.attach(&v.id, "88888888-8888-8888-8888-888888888888", AttachMode::Rw));
    assert_eq!(
        e.act(&v.id, VolumeAction::ShowImageMetadata).unwrap(),
        ActionOutcome::Metadata(BTreeMap::from([("image_id".into(), "x".into())]))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn extend_rules_and_effect() {
    let e = env();
    let v = e.volume(1).await;
    assert!(is_invalid(e.act(&v.id, VolumeAction::Extend { new_size: 1 })).contains("greater than current size"));
    e.act(&v.id, VolumeAction::Extend { new_size: 3 }).unwrap();
    assert_eq!(e.get(&v.id).status, VolumeStatus::Extending);
    e.settle().await;
    let got = e.get(&v.id);
    assert_eq!((got.status, got.size), (VolumeStatus::Available, 3));
    assert_eq!(std::fs::metadata(e.pool.volume_path(&v.id)).unwrap().len(), 3 << 30);
    e.attach(&v.id, "99999999-9999-9999-9999-999999999999", AttachMode::Rw).unwrap();
    is_invalid(e.act(&v.id, VolumeAction::Extend { new_size: 4 }));
    assert_eq!(e.get(&v.id).status, VolumeStatus::InUse, "a refused extend changes nothing");
    // From 3.42 an in-use volume extends, and stays in-use.
    e.m.volume_action(&e.admin, &v.id, VolumeAction::Extend { new_size: 4 }, V342).unwrap();
    e.settle().await;
    let got = e.get(&v.id);
    assert_eq!((got.status, got.size), (VolumeStatus::InUse, 4));
}

#[tokio::test(flavor = "multi_thread")]
async fn revert_restores_the_latest_snapshot() {
    let e = env();
    let v = e.volume(1).await;
    let revert = |id: &str| VolumeAction::Revert { snapshot_id: Some(id.into()) };
    is_invalid(e.act(&v.id, revert("nosuch")));
    e.write_at(&v.id, 4096, b"before snapshot");
    let s1 = e.snapshot(&v.id).await;
    assert_eq!((s1.status, s1.progress.as_str()), (SnapshotStatus::Available, "100%"));
    let s2 = e.snapshot(&v.id).await;
    e.write_at(&v.id, 4096, b"AFTER  SNAPSHOT");
    e.write_at(&v.id, 512 << 20, b"later data");
    assert!(is_invalid(e.act(&v.id, revert(&s1.id))).contains("not the latest"));
    e.reset(&v.id, VolumeStatus::Error);
    assert!(matches!(e.act(&v.id, revert(&s2.id)).unwrap_err(), ManagerError::Conflict(_)));
    e.reset(&v.id, VolumeStatus::Available);
    e.act(&v.id, revert(&s2.id)).unwrap();
    assert_eq!(e.get(&v.id).status, VolumeStatus::Reverting);
    e.settle().await;
    assert_eq!(e.get(&v.id).status, VolumeStatus::Available);
    assert_eq!(e.m.snapshot(&e.admin, &s2.id).unwrap().status, SnapshotStatus::Available);
    assert_eq!(e.read_at(&v.id, 4096, 15), b"before snapshot");
    assert_eq!(e.read_at(&v.id, 512 << 20, 10), vec![0u8; 10]);
    // After an extend the sizes differ: 400, as cinder-tempest-plugin expects.
    e.act(&v.id, VolumeAction::Extend { new_size: 2 }).unwrap();
    e.settle().await;
    assert!(is_invalid(e.act(&v.id, revert(&s2.id))).contains("size"));
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_rules_cascade_and_force() {
    let e = env();
    let v = e.volume(1).await;
    let s = e.snapshot(&v.id).await;
    assert!(is_invalid(e.m.delete_volume(&e.admin, &v.id, false, false)).contains("snapshots"));
    assert!(is_invalid(e.act(&v.id, VolumeAction::ForceDelete)).contains("snapshots"));
    e.m.delete_volume(&e.admin, &v.id, true, false).unwrap();
    e.settle().await;
    assert!(matches!(e.m.volume(&e.admin, &v.id), Err(ManagerError::NotFound(_))));
    assert!(matches!(e.m.snapshot(&e.admin, &s.id), Err(ManagerError::NotFound(_))));
    assert!(!e.pool.volume_path(&v.id).exists());
    assert!(!e.pool.snapshot_path(&s.id).exists());
    // force_delete ignores the status but not an attachment.
    let w = e.volume(1).await;
    e.reset(&w.id, VolumeStatus::Creating);
    is_invalid(e.m.delete_volume(&e.admin, &w.id, false, false));
    e.act(&w.id, VolumeAction::ForceDelete).unwrap();
    e.settle().await;
    assert!(e.m.volume(&e.admin, &w.id).is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn unmanage_then_manage_back() {
    let e = env();
    let v = e.volume(2).await;
    e.write_at(&v.id, 0, b"keep me");
    e.act(&v.id, VolumeAction::Unmanage).unwrap();
    e.settle().await;
    assert!(e.m.volume(&e.admin, &v.id).is_err());
    let name = format!("volume-{}", v.id);
    let listed = e.m.manageable_volumes().unwrap();
    let entry = listed.iter().find(|m| m.name == name).expect("listed");
    assert!(entry.safe_to_manage);
    assert_eq!(entry.size_gib, 2);
    let bad_host = ManageVolume { host: "other@file#file".into(), source_name: name.clone(), ..Default::default() };
    is_invalid(e.m.manage_volume(&e.admin, bad_host));
    let managed =
        e.m.manage_volume(
            &e.admin,
            ManageVolume { host: "node1@file#file".into(), source_name: name, ..Default::default() },
        )
        .unwrap();
    e.settle().await;
    let got = e.get(&managed.id);
    assert_eq!((got.status, got.size), (VolumeStatus::Available, 2));
    assert_eq!(e.read_at(&got.id, 0, 7), b"keep me");
    let again = e.m.manageable_volumes().unwrap();
    let entry = again.iter().find(|m| m.cinder_id.as_deref() == Some(got.id.as_str())).unwrap();
    assert_eq!(entry.reason_not_safe.as_deref(), Some("already managed"));
}

#[tokio::test(flavor = "multi_thread")]
async fn retype_on_the_same_pool_is_a_store_change() {
    let e = env();
    let v = e.volume(1).await;
    let gold = e.m.create_volume_type("gold".into(), None, true, BTreeMap::new()).unwrap();
    let retype = |t: &str, on_demand| VolumeAction::Retype { new_type: t.into(), on_demand };
    assert!(matches!(e.act(&v.id, retype("nosuch", false)).unwrap_err(), ManagerError::NotFound(_)));
    is_invalid(e.act(&v.id, retype(crate::model::DEFAULT_TYPE_NAME, false)));
    e.act(&v.id, retype("gold", false)).unwrap();
    e.settle().await;
    let got = e.get(&v.id);
    assert_eq!(
        (got.status, got.volume_type_id.as_str(), got.host.as_str()),
        (VolumeStatus::Available, gold.id.as_str(), "node1@file#file")
    );
    e.m.create_volume_type(
        "elsewhere".into(),
        None,
        true,
        BTreeMap::from([("volume_backend_name".into(), "lvm".into())]),
    )
    .unwrap();
    // No pool of this agent serves backend "lvm": refused whatever the policy.
    is_invalid(e.act(&v.id, retype("elsewhere", false)));
    is_invalid(e.act(&v.id, retype("elsewhere", true)));
}

#[tokio::test(flavor = "multi_thread")]
async fn clones_copy_bytes() {
    let e = env();
    let v = e.volume(1).await;
    e.write_at(&v.id, 8192, b"clone me");
    let s = e.snapshot(&v.id).await;
    let from_snap = e
        .m
        .create_volume(&e.admin, CreateVolume { snapshot_id: Some(s.id.clone()), size: Some(2), ..Default::default() })
        .unwrap();
    let from_vol =
        e.m.create_volume(&e.admin, CreateVolume { source_volid: Some(v.id.clone()), ..Default::default() }).unwrap();
    e.settle().await;
    assert_eq!(e.get(&from_snap.id).size, 2);
    assert_eq!(std::fs::metadata(e.pool.volume_path(&from_snap.id)).unwrap().len(), 2 << 30);
    assert_eq!(e.read_at(&from_snap.id, 8192, 8), b"clone me");
    assert_eq!(e.get(&from_vol.id).size, 1);
    assert_eq!(e.read_at(&from_vol.id, 8192, 8), b"clone me");
    is_invalid(
        e.m.create_volume(&e.admin, CreateVolume { snapshot_id: Some(s.id), size: Some(0), ..Default::default() })
            .map(|_| ()),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unfinished_jobs_resume_at_start() {
    let e = env();
    let v = e.volume(1).await;
    // What a crash after the API's commit leaves: the status and the job row, no
    // device work done.
    e.m.store
        .write(|tx| {
            let mut new = tx.volume(&v.id)?.unwrap();
            new.status = VolumeStatus::Extending;
            tx.update_volume(VolumeStatus::Available, &new)?;
            tx.insert_job(&JobSpec::ExtendVolume { volume: v.id.clone(), new_size_gib: 2 }, "req-1", "p1")
        })
        .unwrap();
    assert_eq!(e.m.recover().unwrap(), 1);
    e.settle().await;
    let got = e.get(&v.id);
    assert_eq!((got.status, got.size), (VolumeStatus::Available, 2));
    assert_eq!(std::fs::metadata(e.pool.volume_path(&v.id)).unwrap().len(), 2 << 30);
}

#[tokio::test(flavor = "multi_thread")]
async fn other_projects_see_not_found() {
    let e = env();
    let v = e.volume(1).await;
    let other = caller("u", "p2", false);
    assert!(matches!(e.m.volume(&other, &v.id), Err(ManagerError::NotFound(_))));
    assert!(matches!(e.m.volume_action(&other, &v.id, VolumeAction::Reserve, V30), Err(ManagerError::NotFound(_))));
    assert!(e.m.volumes(&other, true).unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn detaching_and_unreserve_follow_attachments_and_migration() {
    let e = env();
    let v = e.volume(1).await;
    e.attach(&v.id, "12121212-1212-1212-1212-121212121212", AttachMode::Rw).unwrap();
    // Unreserve from attaching goes back to in-use while an attachment exists.
    e.reset(&v.id, VolumeStatus::Attaching);
    e.act(&v.id, VolumeAction::Unreserve).unwrap();
    assert_eq!(e.get(&v.id).status, VolumeStatus::InUse);
    // Mid-migration, begin_detaching is a silent success that changes nothing.
    e.reset_migration(&v.id, Some("migrating"));
    e.act(&v.id, VolumeAction::BeginDetaching).unwrap();
    assert_eq!(e.get(&v.id).status, VolumeStatus::InUse);
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshot_delete_rules_and_admin_actions() {
    let e = env();
    let v = e.volume(1).await;
    let s = e.snapshot(&v.id).await;
    e.m.reset_snapshot_status(&e.admin, &s.id, SnapshotStatus::Creating).unwrap();
    is_invalid(e.m.delete_snapshot(&e.admin, &s.id, false));
    assert_eq!(
        e.m.snapshot(&e.admin, &s.id).unwrap().status,
        SnapshotStatus::Creating,
        "a refused delete changes nothing"
    );
    e.m.delete_snapshot(&e.admin, &s.id, true).unwrap();
    e.settle().await;
    assert!(matches!(e.m.snapshot(&e.admin, &s.id), Err(ManagerError::NotFound(_))));
    assert!(!e.pool.snapshot_path(&s.id).exists());
    // Snapshots of an in-use volume need force (or 3.66).
    e.attach(&v.id, "34343434-3434-3434-3434-343434343434", AttachMode::Rw).unwrap();
    let req = CreateSnapshot { volume_id: v.id.clone(), ..Default::default() };
    is_invalid(e.m.create_snapshot(&e.admin, req.clone(), false).map(|_| ()));
    e.m.create_snapshot(&e.admin, CreateSnapshot { force: true, ..req.clone() }, false).unwrap();
    e.m.create_snapshot(&e.admin, req, true).unwrap();
    e.settle().await;
    assert_eq!(e.m.snapshots(&e.admin, false).unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn types_protect_the_default_and_types_in_use() {
    let e = env();
    let default = e.m.volume_type(crate::model::DEFAULT_TYPE_NAME).unwrap();
    is_invalid(e.m.delete_volume_type(&default.id));
    let t = e.m.create_volume_type("silver".into(), None, true, BTreeMap::new()).unwrap();
    assert!(matches!(
        e.m.create_volume_type("silver".into(), None, true, BTreeMap::new()),
        Err(ManagerError::Conflict(_))
    ));
    e.m.create_volume(
        &e.admin,
        CreateVolume { size: Some(1), volume_type: Some("silver".into()), ..Default::default() },
    )
    .unwrap();
    e.settle().await;
    is_invalid(e.m.delete_volume_type(&t.id));
    e.m.set_extra_specs(&t.id, BTreeMap::from([("k".into(), "v".into())])).unwrap();
    e.m.delete_extra_spec(&t.id, "k").unwrap();
    assert!(matches!(e.m.delete_extra_spec(&t.id, "k"), Err(ManagerError::NotFound(_))));
}

/// On the file pool a snapshot file records no origin: the request names the
/// volume, and only a file of the volume's size is taken.
#[tokio::test(flavor = "multi_thread")]
async fn snapshot_files_unmanage_then_manage_back() {
    let e = env();
    let v = e.volume(1).await;
    let big = e.volume(2).await;
    e.write_at(&v.id, 4096, b"snapped");
    let s = e.snapshot(&v.id).await;
    e.m.unmanage_snapshot(&e.admin, &s.id).unwrap();
    e.settle().await;
    assert!(e.m.snapshot(&e.admin, &s.id).is_err());
    assert!(e.pool.snapshot_path(&s.id).exists(), "the file stays");
    let name = format!("snapshot-{}", s.id);
    let entry = e.m.manageable_snapshots().unwrap().into_iter().find(|m| m.name == name).expect("listed");
    assert!(entry.safe_to_manage && entry.source_name.is_none() && entry.size_gib == 1);
    let req =
        |volume: &str| ManageSnapshot { volume_id: volume.into(), source_name: name.clone(), ..Default::default() };
    is_invalid(e.m.manage_snapshot(&e.admin, req(&big.id)));
    let managed = e.m.manage_snapshot(&e.admin, req(&v.id)).unwrap();
    e.settle().await;
    assert_eq!(e.m.snapshot(&e.admin, &managed.id).unwrap().status, SnapshotStatus::Available);
    assert!(!e.pool.snapshot_path(&s.id).exists());
    e.write_at(&v.id, 4096, b"changed");
    e.act(&v.id, VolumeAction::Revert { snapshot_id: Some(managed.id.clone()) }).unwrap();
    e.settle().await;
    assert_eq!(e.read_at(&v.id, 4096, 7), b"snapped");
}
