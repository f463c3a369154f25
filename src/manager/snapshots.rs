//! Snapshots: create (volume available, or in-use with force / from 3.66), update,
//! delete, and the admin actions os-reset_status and os-force_delete.

use std::collections::BTreeMap;

use super::{Caller, Manager, ManagerError, Result, snapshot_not_found};
use crate::model::{JobSpec, Snapshot, SnapshotStatus, VolumeStatus, not_migrating, now};
use crate::store::Tx;

#[derive(Debug, Clone, Default)]
pub struct CreateSnapshot {
    pub volume_id: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub force: bool,
    pub metadata: BTreeMap<String, String>,
}

/// A new record of a snapshot of `v`, `creating`, of `project` and `user`.
fn new_snapshot(
    v: &crate::model::Volume,
    project: &str,
    user: &str,
    name: &Option<String>,
    description: &Option<String>,
    metadata: &BTreeMap<String, String>,
) -> Snapshot {
    Snapshot {
        id: uuid::Uuid::new_v4().to_string(),
        volume_id: v.id.clone(),
        project_id: project.to_string(),
        user_id: user.to_string(),
        name: name.clone(),
        description: description.clone(),
        status: SnapshotStatus::Creating,
        volume_size: v.size,
        progress: "0%".to_string(),
        volume_type_id: v.volume_type_id.clone(),
        group_snapshot_id: None,
        created_at: now(),
        updated_at: None,
        metadata: metadata.clone(),
    }
}

impl Manager {
    /// One more snapshot of `v`'s size, within the volume's project's quotas.
    fn check_snapshot_quota(&self, tx: &Tx, v: &crate::model::Volume) -> Result<()> {
        let type_name = super::quotas::type_name(tx, &v.volume_type_id)?;
        let delta =
            super::quotas::QuotaDelta { type_name: &type_name, snapshots: 1, gigabytes: v.size, ..Default::default() };
        self.check_quota(tx, &v.project_id, &delta)
    }

    pub fn snapshot(&self, caller: &Caller, id: &str) -> Result<Snapshot> {
        self.store.read(|tx| self.visible_snapshot(tx, caller, id))
    }

    /// The snapshot if the caller may see it, inside a transaction.
    pub(super) fn visible_snapshot(&self, tx: &Tx, caller: &Caller, id: &str) -> Result<Snapshot> {
        tx.snapshot(id)?
            .filter(|s| caller.is_admin || s.project_id == caller.project_id)
            .ok_or_else(|| snapshot_not_found(id))
    }

    pub fn snapshots(&self, caller: &Caller, all_projects: bool) -> Result<Vec<Snapshot>> {
        let project = (!(all_projects && caller.is_admin)).then_some(caller.project_id.as_str());
        Ok(self.store.read(|tx| tx.snapshots(project, None))?)
    }

    pub fn create_snapshot(
        self: &std::sync::Arc<Self>,
        caller: &Caller,
        req: CreateSnapshot,
        force_allowed_in_use: bool,
    ) -> Result<Snapshot> {
        let capacity = self.capacities();
        let (snapshot, job) = self.store.write(|tx| {
            let v = self.visible(tx, caller, &req.volume_id)?;
            let in_use_ok = (req.force || force_allowed_in_use) && v.status == VolumeStatus::InUse;
            if v.status != VolumeStatus::Available && !in_use_ok {
                return Err(ManagerError::Invalid(format!(
                    "Invalid volume: Volume {} status must be available{}, but current status is: {}.",
                    v.id,
                    if req.force || force_allowed_in_use { " or in-use" } else { "" },
                    v.status
                )));
            }
            if !not_migrating(v.migration_status.as_ref()) {
                return Err(ManagerError::Invalid(format!("Invalid volume: Volume {} is migrating.", v.id)));
            }
            self.create_snapshot_in(tx, caller, &v, &req, None, &capacity)
        })?;
        self.start(job);
        Ok(snapshot)
    }

    /// The record and journaled job of a new snapshot of `v` (whose status the
    /// caller checked), within the project's quotas and the pool's capacity, inside
    /// the caller's transaction: `POST /snapshots`, and each member of a group
    /// snapshot.
    pub(super) fn create_snapshot_in(
        &self,
        tx: &Tx,
        caller: &Caller,
        v: &crate::model::Volume,
        req: &CreateSnapshot,
        group_snapshot_id: Option<&str>,
        capacity: &super::Capacities,
    ) -> Result<(Snapshot, super::jobs::Pending)> {
        self.assert_not_frozen(tx)?;
        self.check_snapshot_quota(tx, v)?;
        self.check_capacity(tx, &v.host, capacity, v.size)?;
        let snapshot = Snapshot {
            group_snapshot_id: group_snapshot_id.map(str::to_string),
            ..new_snapshot(v, &caller.project_id, &caller.user_id, &req.name, &req.description, &req.metadata)
        };
        tx.insert_snapshot(&snapshot)?;
        let spec = JobSpec::CreateSnapshot { snapshot: snapshot.id.clone(), volume: v.id.clone() };
        let job = self.enqueue(tx, caller, &v.project_id, spec)?;
        Ok((snapshot, job))
    }

    pub fn update_snapshot(
        &self,
        caller: &Caller,
        id: &str,
        name: Option<Option<String>>,
        description: Option<Option<String>>,
    ) -> Result<Snapshot> {
        self.store.write(|tx| {
            let old = self.visible_snapshot(tx, caller, id)?;
            let mut new = old.clone();
            if let Some(name) = name {
                new.name = name;
            }
            if let Some(description) = description {
                new.description = description;
            }
            tx.update_snapshot(old.status, &new)?;
            Ok(tx.snapshot(id)?.unwrap_or(new))
        })
    }

    /// Sets (merge, or replace all) or deletes a snapshot's metadata, bounded as a
    /// volume's is.
    pub fn update_snapshot_metadata(
        &self,
        caller: &Caller,
        id: &str,
        change: super::MetadataChange,
    ) -> Result<BTreeMap<String, String>> {
        use super::MetadataChange as C;
        self.store.write(|tx| {
            let s = self.visible_snapshot(tx, caller, id)?;
            let after = match &change {
                C::Merge(map) => s.metadata.clone().into_iter().chain(map.clone()).collect(),
                C::Replace(map) => map.clone(),
                C::Delete(_) => BTreeMap::new(),
            };
            super::check_metadata_limits(&format!("Metadata of snapshot {id}"), &after)?;
            match &change {
                C::Merge(map) => tx.set_snapshot_meta(id, map)?,
                C::Replace(map) => {
                    tx.clear_snapshot_meta(id)?;
                    tx.set_snapshot_meta(id, map)?;
                }
                C::Delete(key) => {
                    if !tx.delete_snapshot_meta(id, key)? {
                        return Err(ManagerError::NotFound(format!("Snapshot {id} has no metadata with key {key}.")));
                    }
                }
            }
            Ok(tx.snapshot(id)?.map(|s| s.metadata).unwrap_or_default())
        })
    }

    /// DELETE (status available or error) and os-force_delete (any status).
    pub fn delete_snapshot(self: &std::sync::Arc<Self>, caller: &Caller, id: &str, force: bool) -> Result<()> {
        let job = self.store.write(|tx| {
            let old = self.visible_snapshot(tx, caller, id)?;
            self.assert_not_frozen(tx)?;
            if !force && !matches!(old.status, SnapshotStatus::Available | SnapshotStatus::Error) {
                return Err(ManagerError::Invalid(format!(
                    "Invalid snapshot: Snapshot {id} status must be available or error to delete, but it is {}.",
                    old.status
                )));
            }
            if old.group_snapshot_id.is_some() {
                return Err(ManagerError::Invalid(format!(
                    "Invalid snapshot: Snapshot {id} must not be part of a group."
                )));
            }
            self.delete_snapshot_in(tx, caller, &old)
        })?;
        self.start(job);
        Ok(())
    }

    /// `os-update_snapshot_status`: what creates a snapshot outside the agent (a
    /// hypervisor's assisted snapshot) reports its end, as Cinder allows it:
    /// `creating` → creating/available/error, `deleting` → deleting/error_deleting.
    /// While one of ember's own jobs works on the snapshot, the job decides.
    pub fn update_snapshot_status(
        &self,
        caller: &Caller,
        id: &str,
        status: &str,
        progress: Option<String>,
    ) -> Result<()> {
        use SnapshotStatus as S;
        self.store.write(|tx| {
            let old = self.visible_snapshot(tx, caller, id)?;
            let allowed: &[S] = match old.status {
                S::Creating => &[S::Creating, S::Available, S::Error],
                S::Deleting => &[S::Deleting, S::ErrorDeleting],
                other => {
                    return Err(ManagerError::Invalid(format!(
                        "Snapshot status {other} not allowed for update_snapshot_status"
                    )));
                }
            };
            let Some(new_status) = allowed.iter().copied().find(|s| s.as_str() == status) else {
                return Err(ManagerError::Invalid(format!(
                    "Provided snapshot status {status} not allowed for snapshot with status {}.",
                    old.status
                )));
            };
            if tx.snapshot_has_running_job(id)? {
                return Err(ManagerError::Invalid(format!(
                    "Invalid snapshot: snapshot {id} is {} by ember's own job; its status follows the job.",
                    if old.status == S::Creating { "being created" } else { "being deleted" }
                )));
            }
            let mut new = old.clone();
            new.status = new_status;
            if let Some(progress) = progress {
                new.progress = progress;
            }
            tx.update_snapshot(old.status, &new)?;
            Ok(())
        })
    }

    /// Marks the snapshot deleting and journals its delete, inside the caller's
    /// transaction (a snapshot's delete, and each member of a group snapshot's).
    pub(super) fn delete_snapshot_in(&self, tx: &Tx, caller: &Caller, old: &Snapshot) -> Result<super::jobs::Pending> {
        self.assert_not_frozen(tx)?;
        let mut new = old.clone();
        new.status = SnapshotStatus::Deleting;
        tx.update_snapshot(old.status, &new)?;
        let spec = JobSpec::DeleteSnapshot { snapshot: old.id.clone(), volume: old.volume_id.clone() };
        Ok(self.enqueue(tx, caller, &old.project_id, spec)?)
    }

    pub fn reset_snapshot_status(&self, caller: &Caller, id: &str, status: SnapshotStatus) -> Result<()> {
        self.store.write(|tx| {
            let old = self.visible_snapshot(tx, caller, id)?;
            let mut new = old.clone();
            new.status = status;
            tx.update_snapshot(old.status, &new)?;
            if let Some(gs) = &old.group_snapshot_id {
                super::groups::settle_group_snapshot(tx, gs)?;
            }
            Ok(())
        })
    }
}

/// A managed snapshot needs its volume as a new one does (Cinder's
/// create_snapshot_in_db with force): available or in-use, not migrating.
fn can_take_snapshot(v: &crate::model::Volume) -> Result<()> {
    if !matches!(v.status, VolumeStatus::Available | VolumeStatus::InUse) {
        return Err(ManagerError::Invalid(format!(
            "Invalid volume: Volume {} status must be available or in-use, but current status is: {}.",
            v.id, v.status
        )));
    }
    if !not_migrating(v.migration_status.as_ref()) {
        return Err(ManagerError::Invalid(format!("Invalid volume: Volume {} is migrating.", v.id)));
    }
    Ok(())
}

/// A snapshot in the pool, as GET manageable_snapshots lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct ManageableSnapshot {
    pub name: String,
    pub size_gib: u64,
    pub safe_to_manage: bool,
    pub reason_not_safe: Option<String>,
    pub cinder_id: Option<String>,
    /// The origin volume's name in the pool, where the backend records it.
    pub source_name: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct ManageSnapshot {
    pub volume_id: String,
    pub source_name: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub metadata: BTreeMap<String, String>,
}

impl Manager {
    /// Whether `host` names a pool of this agent (`host`, `host@backend` or `host@backend#pool`).
    pub fn serves_host(&self, host: &str) -> bool {
        self.pool_named(host).is_some()
    }

    /// The name of the snapshot with this id in the pool (what its unmanage
    /// leaves): its volume's pool, the default one for a snapshot no longer known.
    pub fn snapshot_name(&self, id: &str) -> String {
        self.pool_of_snapshot(id).unwrap_or(self.default_pool().pool.as_ref()).snapshot_name(id)
    }

    /// The pools' snapshots, each marked safe to manage or not (Cinder's
    /// get_manageable_snapshots).
    pub fn manageable_snapshots(&self) -> Result<Vec<ManageableSnapshot>> {
        self.in_every_pool(|slot| self.manageable_snapshots_in(slot))
    }

    fn manageable_snapshots_in(&self, slot: &super::PoolSlot) -> Result<Vec<ManageableSnapshot>> {
        let existing = slot.pool.list_existing_snapshots()?;
        let known = self.store.read(|tx| tx.snapshots(None, None))?;
        Ok(existing
            .into_iter()
            .map(|s| {
                let managed = known.iter().find(|k| slot.pool.snapshot_name(&k.id) == s.name);
                let reason = if managed.is_some() {
                    Some("already managed".to_string())
                } else if s.in_use {
                    Some("snapshot in use".to_string())
                } else {
                    None
                };
                ManageableSnapshot {
                    size_gib: s.size_bytes.div_ceil(crate::pool::GIB).max(1),
                    cinder_id: managed.map(|k| k.id.clone()),
                    safe_to_manage: reason.is_none(),
                    reason_not_safe: reason,
                    source_name: s.origin,
                    name: s.name,
                }
            })
            .collect())
    }

    /// POST os-snapshot-manage / manageable_snapshots: a snapshot record in
    /// `creating`, and a job that renames and tags the pool's object.
    pub fn manage_snapshot(self: &std::sync::Arc<Self>, caller: &Caller, req: ManageSnapshot) -> Result<Snapshot> {
        // The volume first, as Cinder checks it before the backend sees the ref.
        let volume = self.store.read(|tx| self.visible(tx, caller, &req.volume_id))?;
        can_take_snapshot(&volume)?;
        let slot = self.slot(&volume.host)?;
        let candidate =
            self.manageable_snapshots_in(slot)?.into_iter().find(|m| m.name == req.source_name).ok_or_else(|| {
                ManagerError::NotFound(format!(
                    "Manage existing snapshot failed: '{}' not found in the pool.",
                    req.source_name
                ))
            })?;
        if let Some(reason) = &candidate.reason_not_safe {
            return Err(ManagerError::Invalid(format!(
                "Manage existing snapshot failed: '{}' is not safe to manage: {reason}.",
                req.source_name
            )));
        }
        let volume_name = slot.pool.volume_name(&volume.id);
        match &candidate.source_name {
            Some(origin) if *origin != volume_name => {
                return Err(ManagerError::Invalid(format!(
                    "Manage existing snapshot failed: '{}' is a snapshot of '{origin}', not of volume {} ({volume_name}).",
                    req.source_name, volume.id
                )));
            }
            Some(_) => {}
            // The pool records no origin (a file): it must hold the volume's bytes.
            None if i64::try_from(candidate.size_gib).ok() != Some(volume.size) => {
                return Err(ManagerError::Invalid(format!(
                    "Manage existing snapshot failed: '{}' holds {} GiB but volume {} has {} GiB.",
                    req.source_name, candidate.size_gib, volume.id, volume.size
                )));
            }
            None => {}
        }
        super::check_metadata_limits("Metadata of the new snapshot", &req.metadata)?;
        let (snapshot, job) = self.store.write(|tx| {
            let v = self.visible(tx, caller, &req.volume_id)?;
            can_take_snapshot(&v)?;
            if tx.snapshots(None, None)?.iter().any(|k| slot.pool.snapshot_name(&k.id) == req.source_name) {
                return Err(ManagerError::Invalid(format!(
                    "Manage existing snapshot failed: '{}' is not safe to manage: already managed.",
                    req.source_name
                )));
            }
            self.check_snapshot_quota(tx, &v)?;
            let snapshot = new_snapshot(&v, &v.project_id, &caller.user_id, &req.name, &req.description, &req.metadata);
            tx.insert_snapshot(&snapshot)?;
            let spec = JobSpec::ManageSnapshot {
                snapshot: snapshot.id.clone(),
                volume: v.id.clone(),
                source_name: req.source_name.clone(),
            };
            let job = self.enqueue(tx, caller, &v.project_id, spec)?;
            Ok::<_, ManagerError>((snapshot, job))
        })?;
        self.start(job);
        Ok(snapshot)
    }

    /// Snapshot os-unmanage: as a delete (available or error), except that the
    /// pool keeps the bytes under the snapshot's name, no longer marked ember's.
    pub fn unmanage_snapshot(self: &std::sync::Arc<Self>, caller: &Caller, id: &str) -> Result<()> {
        let job = self.store.write(|tx| {
            // Unmanaging changes nothing on the backend: a frozen one allows it, as
            // Cinder's delete with unmanage_only skips assert_not_frozen.
            let old = self.visible_snapshot(tx, caller, id)?;
            if !matches!(old.status, SnapshotStatus::Available | SnapshotStatus::Error) {
                return Err(ManagerError::Invalid(format!(
                    "Invalid snapshot: Snapshot {id} status must be available or error to unmanage, but it is {}.",
                    old.status
                )));
            }
            if old.group_snapshot_id.is_some() {
                return Err(ManagerError::Invalid(format!(
                    "Invalid snapshot: Snapshot {id} must not be part of a group."
                )));
            }
            let mut new = old.clone();
            new.status = SnapshotStatus::Unmanaging;
            tx.update_snapshot(old.status, &new)?;
            let spec = JobSpec::UnmanageSnapshot { snapshot: id.to_string(), volume: old.volume_id.clone() };
            Ok::<_, ManagerError>(self.enqueue(tx, caller, &old.project_id, spec)?)
        })?;
        self.start(job);
        Ok(())
    }
}
