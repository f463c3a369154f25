//! Volume lifecycle: create (blank, from a snapshot, from a volume), update,
//! metadata, delete (with cascade and force), and manage/unmanage.

use std::collections::BTreeMap;

use super::quotas::QuotaDelta;
use super::{ActionOutcome, Caller, Manager, ManagerError, Result, gib, type_not_found, volume_not_found};
use crate::model::{
    AttachStatus, DEFAULT_TYPE_NAME, JobSpec, MessageAction, MessageResource, SnapshotStatus, Volume, VolumeSource,
    VolumeStatus, VolumeType, not_migrating, now,
};
use crate::store::{MetaKind, Tx};

/// A validated `POST /volumes` body.
#[derive(Debug, Clone, Default)]
pub struct CreateVolume {
    pub size: Option<i64>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub volume_type: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub snapshot_id: Option<String>,
    pub source_volid: Option<String>,
    pub availability_zone: Option<String>,
    /// The group the volume joins (3.13); its type must be one of the group's.
    pub group_id: Option<String>,
    /// The image whose bytes the volume is made of (`imageRef`).
    pub image_id: Option<String>,
}

/// A validated `PUT /volumes/{id}` body.
#[derive(Debug, Clone, Default)]
pub struct UpdateVolume {
    pub name: Option<Option<String>>,
    pub description: Option<Option<String>>,
    pub metadata: Option<BTreeMap<String, String>>,
}

/// Statuses from which a volume may be deleted or unmanaged (spec §2.6, §3.10).
const DELETABLE: &[VolumeStatus] = &[
    VolumeStatus::Available,
    VolumeStatus::Error,
    VolumeStatus::ErrorRestoring,
    VolumeStatus::ErrorExtending,
    VolumeStatus::ErrorManaging,
];

impl Manager {
    pub fn volumes(&self, caller: &Caller, all_projects: bool) -> Result<Vec<Volume>> {
        let project = (!(all_projects && caller.is_admin)).then_some(caller.project_id.as_str());
        Ok(self.store.read(|tx| tx.volumes(project))?)
    }

    pub fn create_volume(self: &std::sync::Arc<Self>, caller: &Caller, req: CreateVolume) -> Result<Volume> {
        self.check_zone(req.availability_zone.as_deref())?;
        // The image is looked at before the transaction (the store may be remote).
        if let Some(image_id) = &req.image_id {
            let size = req.size.ok_or_else(|| {
                ManagerError::Invalid("Volume size must be given when creating a volume from an image.".to_string())
            })?;
            self.check_image(&super::actions::image_caller(caller), image_id, size)?;
        }
        let capacity = self.capacities();
        let (volume, job) = self.store.write(|tx| self.create_volume_in(tx, caller, &req, &capacity))?;
        if let Some(job) = job {
            self.start(job);
        }
        Ok(volume)
    }

    /// The record and (unless the scheduler leaves it in error) the journaled job
    /// of a new volume, inside the caller's transaction: `POST /volumes`, and each
    /// member of a group made from a source.
    pub(super) fn create_volume_in(
        &self,
        tx: &Tx,
        caller: &Caller,
        req: &CreateVolume,
        capacity: &super::Capacities,
    ) -> Result<(Volume, Option<super::jobs::Pending>)> {
        {
            // A clone takes its source's size (at least) and, unless told otherwise, its type.
            // Its job reads the source under a lock, so a delete of the source waits.
            let (source, source_size, source_type) = if let Some(snapshot_id) = &req.snapshot_id {
                let snap = self.visible_snapshot(tx, caller, snapshot_id)?;
                if snap.status != SnapshotStatus::Available {
                    return Err(ManagerError::Invalid(format!(
                        "Originating snapshot status must be one of 'available' values, but it is {}.",
                        snap.status
                    )));
                }
                // A clone is made by its source's pool, so it stays there.
                let origin = tx.volume(&snap.volume_id)?.map(|v| v.host);
                (
                    VolumeSource::Snapshot { id: snap.id },
                    Some(("snapshot", snap.volume_size, origin)),
                    Some(snap.volume_type_id),
                )
            } else if let Some(source_id) = &req.source_volid {
                let src = self.visible(tx, caller, source_id)?;
                if !matches!(src.status, VolumeStatus::Available | VolumeStatus::InUse) {
                    return Err(ManagerError::Invalid(format!(
                        "Unable to clone volumes that are in an error state or busy: source status is {}.",
                        src.status
                    )));
                }
                (
                    VolumeSource::Volume { id: src.id },
                    Some(("source volume", src.size, Some(src.host))),
                    Some(src.volume_type_id),
                )
            } else {
                (VolumeSource::Blank, None, None)
            };
            let size = req.size.or(source_size.as_ref().map(|(_, s, _)| *s)).ok_or_else(|| {
                ManagerError::Invalid("Volume size must be given when creating a blank volume.".to_string())
            })?;
            if let Some((what, min, _)) = source_size.as_ref().filter(|(_, min, _)| size < *min) {
                return Err(ManagerError::Invalid(format!(
                    "Volume size '{size}GB' cannot be smaller than the {what} size {min}GB. They must be >= the \
                     original {what} size."
                )));
            }
            // A type asked for must be one the project may use; a source's type
            // is inherited as it is.
            let type_ref = req.volume_type.clone().or(source_type).unwrap_or_else(|| DEFAULT_TYPE_NAME.to_string());
            let vtype = match &req.volume_type {
                Some(_) => super::types::visible_type(tx, caller, &type_ref)?,
                None => tx.volume_type(&type_ref)?,
            };
            let vtype = vtype.ok_or_else(|| {
                ManagerError::NotFound(format!("Volume type with name {type_ref} could not be found."))
            })?;
            if let Some(group_id) = &req.group_id {
                self.check_group_member_type(tx, caller, group_id, &vtype)?;
            }
            let volume = Volume {
                snapshot_id: req.snapshot_id.clone(),
                source_volid: req.source_volid.clone(),
                group_id: req.group_id.clone(),
                ..self.new_volume(
                    caller,
                    VolumeStatus::Creating,
                    size,
                    &vtype,
                    &req.name,
                    &req.description,
                    &req.metadata,
                )?
            };
            let delta = QuotaDelta::new_volume(&vtype.name, size);
            self.check_quota(tx, &caller.project_id, &delta)?;
            // Cinder's scheduler: a type asking for what no pool offers leaves
            // the volume in error, with a message saying why.
            let only = source_size.as_ref().map(|(_, _, origin)| origin.as_deref().unwrap_or_default());
            let placed = match self.service_disabled(tx)? {
                Some(why) => Err(why),
                None => self.place(tx, &vtype, only, capacity)?,
            };
            let host = match placed {
                Ok(host) => host,
                Err(unmet) => {
                    let volume = Volume { status: VolumeStatus::Error, ..volume };
                    tx.insert_volume(&volume)?;
                    let reason = format!("No valid backend was found. {unmet}.");
                    super::jobs::insert_message(
                        tx,
                        &self.settings,
                        &volume.project_id,
                        &caller.request_id,
                        MessageResource::Volume,
                        Some(&volume.id),
                        MessageAction::SCHEDULE_ALLOCATE_VOLUME,
                        &reason,
                    )?;
                    tracing::warn!(volume = %volume.id, volume_type = %vtype.name, %unmet, "no pool satisfies the volume type");
                    return Ok((volume, None));
                }
            };
            self.check_capacity(tx, &host, capacity, size)?;
            let volume = Volume { host, ..volume };
            tx.insert_volume(&volume)?;
            let spec = match &req.image_id {
                Some(image) => JobSpec::CreateVolumeFromImage {
                    volume: volume.id.clone(),
                    size_gib: gib(size),
                    image: image.clone(),
                },
                None => JobSpec::CreateVolume { volume: volume.id.clone(), size_gib: gib(size), source },
            };
            let job = self.enqueue(tx, caller, &volume.project_id, spec)?;
            Ok((volume, Some(job)))
        }
    }

    /// Cinder's scheduler over this agent's pools: of those the type's extra
    /// specs are satisfied by (`only`: a clone stays on its source's pool), the
    /// one with the most virtual free GiB (Cinder's capacity weigher); or why
    /// none fits.
    fn place(
        &self,
        tx: &Tx,
        vtype: &crate::model::VolumeType,
        only: Option<&str>,
        capacities: &super::Capacities,
    ) -> Result<std::result::Result<String, String>> {
        let mut best: Option<(f64, &str)> = None;
        let mut unmet = Vec::new();
        for slot in self.pools.iter().filter(|s| only.is_none_or(|host| s.host == host)) {
            let capacity = match capacities.of(self, &slot.host) {
                Ok((_, c)) => c,
                Err(e) => {
                    unmet.push(format!("{}: {e}", slot.host));
                    continue;
                }
            };
            let stats = super::stats_of(slot, capacity, tx.provisioned_gib_on(&slot.host)?);
            let caps = super::scheduler::capabilities(slot, &stats);
            if let Some(spec) = super::scheduler::unmet_spec(&vtype.extra_specs, &caps) {
                unmet.push(spec);
                continue;
            }
            let free = stats.total_gib * stats.max_over_subscription_ratio - stats.provisioned_gib as f64;
            if best.is_none_or(|(most, _)| free > most) {
                best = Some((free, &slot.host));
            }
        }
        Ok(match best {
            Some((_, host)) => Ok(host.to_string()),
            None if only.is_some() && unmet.is_empty() => Err("The source's pool is not one of this agent's".into()),
            None => {
                unmet.dedup();
                Err(format!("No pool offers what volume type {} asks for: {}", vtype.name, unmet.join(", ")))
            }
        })
    }

    pub fn update_volume(&self, caller: &Caller, id: &str, req: UpdateVolume) -> Result<Volume> {
        self.store.write(|tx| {
            let old = self.visible(tx, caller, id)?;
            let mut new = old.clone();
            if let Some(name) = req.name {
                new.name = name;
            }
            if let Some(description) = req.description {
                new.description = description;
            }
            tx.update_volume(old.status, &new)?;
            if let Some(metadata) = &req.metadata {
                super::check_metadata_limits(&format!("Metadata of volume {id}"), metadata)?;
                tx.set_volume_meta(id, MetaKind::User, metadata, true)?;
            }
            Ok::<_, ManagerError>(tx.volume(id)?.unwrap_or(new))
        })
    }

    /// Sets (merge, or replace all) or deletes user metadata; refused while the
    /// volume is in maintenance or uploading, as Cinder does.
    pub fn update_volume_metadata(
        &self,
        caller: &Caller,
        id: &str,
        change: MetadataChange,
        precondition: impl FnOnce(&BTreeMap<String, String>) -> Result<()>,
    ) -> Result<BTreeMap<String, String>> {
        self.store.write(|tx| {
            let v = self.visible(tx, caller, id)?;
            // Checked inside the transaction, so no other update slips in between.
            precondition(&v.metadata)?;
            if matches!(v.status, VolumeStatus::Maintenance | VolumeStatus::Uploading) {
                return Err(ManagerError::Invalid(format!(
                    "Invalid volume: Volume {id} status must not be maintenance or uploading to change its metadata, \
                     but it is {}.",
                    v.status
                )));
            }
            let after = match &change {
                MetadataChange::Merge(map) => {
                    let mut merged = v.metadata.clone();
                    merged.extend(map.iter().map(|(k, val)| (k.clone(), val.clone())));
                    merged
                }
                MetadataChange::Replace(map) => map.clone(),
                MetadataChange::Delete(_) => BTreeMap::new(),
            };
            super::check_metadata_limits(&format!("Metadata of volume {id}"), &after)?;
            match &change {
                MetadataChange::Merge(map) => tx.set_volume_meta(id, MetaKind::User, map, false)?,
                MetadataChange::Replace(map) => tx.set_volume_meta(id, MetaKind::User, map, true)?,
                MetadataChange::Delete(key) => {
                    if !tx.delete_volume_meta(id, MetaKind::User, key)? {
                        return Err(ManagerError::NotFound(format!("Volume {id} has no metadata with key {key}.")));
                    }
                }
            }
            Ok(tx.volume(id)?.map(|v| v.metadata).unwrap_or_default())
        })
    }

    /// `DELETE /volumes/{id}`: `force` (3.23+, admin) skips the status check, as
    /// os-force_delete does; `cascade` takes the snapshots along.
    pub fn delete_volume(
        self: &std::sync::Arc<Self>,
        caller: &Caller,
        id: &str,
        cascade: bool,
        force: bool,
    ) -> Result<()> {
        let job = self.store.write(|tx| {
            let v = self.visible(tx, caller, id)?;
            self.assert_not_frozen(tx)?;
            let snapshots = tx.snapshots(None, Some(id))?;
            let mut reasons = Vec::new();
            if !force && !DELETABLE.contains(&v.status) {
                reasons.push(format!(
                    "status must be available or error or error_restoring or error_extending or error_managing, \
                     but it is {}",
                    v.status
                ));
            }
            if v.attach_status == AttachStatus::Attached {
                reasons.push("volume is attached".to_string());
            }
            if !not_migrating(v.migration_status.as_ref()) {
                reasons.push("volume is migrating".to_string());
            }
            if !snapshots.is_empty() && !cascade {
                reasons.push("volume has snapshots".to_string());
            }
            // Cinder's conditional update expects no group; a member leaves its
            // group first (or goes with the group's delete-volumes).
            if let Some(group) = &v.group_id {
                reasons.push(format!("volume belongs to group {group}"));
            }
            if let Some(s) = snapshots.iter().find(|s| s.group_snapshot_id.is_some()) {
                reasons.push(format!("snapshot {} is part of a group snapshot", s.id));
            }
            if cascade && !force {
                if let Some(busy) =
                    snapshots.iter().find(|s| !matches!(s.status, SnapshotStatus::Available | SnapshotStatus::Error))
                {
                    reasons.push(format!("snapshot {} is {}", busy.id, busy.status));
                }
            }
            if !reasons.is_empty() {
                return Err(ManagerError::Invalid(format!(
                    "Invalid volume: Volume {id} cannot be deleted: {}.",
                    reasons.join("; ")
                )));
            }
            for snap in &snapshots {
                let mut s = snap.clone();
                s.status = SnapshotStatus::Deleting;
                tx.update_snapshot(snap.status, &s)?;
            }
            let mut new = v.clone();
            new.status = VolumeStatus::Deleting;
            new.previous_status = Some(v.status);
            tx.update_volume(v.status, &new)?;
            // The export is no longer wanted; the job takes it down first.
            tx.delete_export(id)?;
            let spec = JobSpec::DeleteVolume {
                volume: id.to_string(),
                snapshots: snapshots.iter().map(|s| s.id.clone()).collect(),
            };
            Ok::<_, ManagerError>(self.enqueue(tx, caller, &v.project_id, spec)?)
        })?;
        self.start(job);
        Ok(())
    }

    /// os-unmanage: the volume leaves the store; its file stays in the pool under
    /// the volume's name, where manageable_volumes finds it again.
    pub fn unmanage_volume(self: &std::sync::Arc<Self>, caller: &Caller, id: &str) -> Result<ActionOutcome> {
        let job = self.store.write(|tx| {
            let v = self.visible(tx, caller, id)?;
            let snapshots = tx.snapshots(None, Some(id))?;
            if !DELETABLE.contains(&v.status)
                || v.attach_status == AttachStatus::Attached
                || !not_migrating(v.migration_status.as_ref())
                || !snapshots.is_empty()
                || v.group_id.is_some()
            {
                return Err(ManagerError::Invalid(format!(
                    "Invalid volume: Volume {id} cannot be unmanaged: it must be available or in an error state, \
                     detached, not migrating, in no group and without snapshots (status {}, attach_status {}, {} \
                     snapshots).",
                    v.status,
                    v.attach_status,
                    snapshots.len()
                )));
            }
            let mut new = v.clone();
            new.status = VolumeStatus::Unmanaging;
            new.previous_status = Some(v.status);
            tx.update_volume(v.status, &new)?;
            tx.delete_export(id)?;
            let spec = JobSpec::UnmanageVolume { volume: id.to_string() };
            Ok::<_, ManagerError>(self.enqueue(tx, caller, &v.project_id, spec)?)
        })?;
        self.start(job);
        Ok(ActionOutcome::Done)
    }

    /// What the pools hold, each marked safe to manage or not (spec §5.7).
    pub fn manageable_volumes(&self) -> Result<Vec<ManageableVolume>> {
        self.in_every_pool(|slot| self.manageable_volumes_in(slot))
    }

    fn manageable_volumes_in(&self, slot: &super::PoolSlot) -> Result<Vec<ManageableVolume>> {
        let existing = slot.pool.list_existing()?;
        let known = self.store.read(|tx| tx.volumes(None))?;
        Ok(existing
            .into_iter()
            .map(|m| {
                let managed = known.iter().find(|v| v.host == slot.host && slot.pool.volume_name(&v.id) == m.name);
                let reason = if managed.is_some() {
                    Some("already managed".to_string())
                } else if m.in_use {
                    Some("volume in use".to_string())
                } else {
                    None
                };
                ManageableVolume {
                    size_gib: m.size_bytes.div_ceil(crate::pool::GIB).max(1),
                    cinder_id: managed.map(|v| v.id.clone()),
                    safe_to_manage: reason.is_none(),
                    reason_not_safe: reason,
                    name: m.name,
                }
            })
            .collect())
    }

    /// Takes a file of the pool under management (POST manageable_volumes).
    pub fn manage_volume(self: &std::sync::Arc<Self>, caller: &Caller, req: ManageVolume) -> Result<Volume> {
        let Some(slot) = self.pool_named(&req.host) else {
            return Err(ManagerError::Invalid(format!(
                "No available service named '{}': this agent is {}.",
                req.host,
                self.default_pool().host
            )));
        };
        let candidate =
            self.manageable_volumes_in(slot)?.into_iter().find(|m| m.name == req.source_name).ok_or_else(|| {
                ManagerError::NotFound(format!(
                    "Manage existing volume failed: '{}' not found in the pool.",
                    req.source_name
                ))
            })?;
        if let Some(reason) = &candidate.reason_not_safe {
            return Err(ManagerError::Invalid(format!(
                "Manage existing volume failed: '{}' is not safe to manage: {reason}.",
                req.source_name
            )));
        }
        self.check_zone(req.availability_zone.as_deref())?;
        let (volume, job) = self.store.write(|tx| {
            let type_ref = req.volume_type.clone().unwrap_or_else(|| DEFAULT_TYPE_NAME.to_string());
            let vtype = super::types::visible_type(tx, caller, &type_ref)?.ok_or_else(|| type_not_found(&type_ref))?;
            let size =
                i64::try_from(candidate.size_gib).map_err(|_| ManagerError::Invalid("volume too large".to_string()))?;
            let volume = Volume {
                bootable: req.bootable,
                host: slot.host.clone(),
                ..self.new_volume(
                    caller,
                    VolumeStatus::Managing,
                    size,
                    &vtype,
                    &req.name,
                    &req.description,
                    &req.metadata,
                )?
            };
            let delta = QuotaDelta::new_volume(&vtype.name, size);
            self.check_quota(tx, &volume.project_id, &delta)?;
            tx.insert_volume(&volume)?;
            let spec = JobSpec::ManageVolume { volume: volume.id.clone(), source_name: req.source_name.clone() };
            let job = self.enqueue(tx, caller, &volume.project_id, spec)?;
            Ok::<_, ManagerError>((volume, job))
        })?;
        self.start(job);
        Ok(volume)
    }

    /// A new record of this agent's, owned by the caller, in `status`.
    #[allow(clippy::too_many_arguments)]
    fn new_volume(
        &self,
        caller: &Caller,
        status: VolumeStatus,
        size: i64,
        vtype: &VolumeType,
        name: &Option<String>,
        description: &Option<String>,
        metadata: &BTreeMap<String, String>,
    ) -> Result<Volume> {
        super::check_metadata_limits("Metadata of the new volume", metadata)?;
        Ok(Volume {
            id: uuid::Uuid::new_v4().to_string(),
            project_id: caller.project_id.clone(),
            user_id: caller.user_id.clone(),
            name: name.clone(),
            description: description.clone(),
            size,
            status,
            previous_status: None,
            attach_status: AttachStatus::Detached,
            migration_status: None,
            volume_type_id: vtype.id.clone(),
            availability_zone: self.settings.availability_zone.clone(),
            bootable: false,
            multiattach: vtype.multiattach(),
            snapshot_id: None,
            source_volid: None,
            host: self.default_pool().host.clone(),
            group_id: None,
            created_at: now(),
            updated_at: None,
            metadata: metadata.clone(),
            admin_metadata: BTreeMap::new(),
            image_metadata: BTreeMap::new(),
            attachments: Vec::new(),
        })
    }

    /// The one availability zone this agent serves.
    fn check_zone(&self, zone: Option<&str>) -> Result<()> {
        match zone {
            Some(zone) if zone != self.settings.availability_zone => {
                Err(ManagerError::Invalid(format!("Availability zone '{zone}' is invalid.")))
            }
            _ => Ok(()),
        }
    }

    /// The volume if the caller may see it, inside a transaction.
    pub(super) fn visible(&self, tx: &Tx, caller: &Caller, id: &str) -> Result<Volume> {
        tx.volume(id)?
            .filter(|v| caller.is_admin || v.project_id == caller.project_id)
            .ok_or_else(|| volume_not_found(id))
    }
}

#[derive(Debug, Clone)]
pub enum MetadataChange {
    Merge(BTreeMap<String, String>),
    Replace(BTreeMap<String, String>),
    Delete(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ManageableVolume {
    pub name: String,
    pub size_gib: u64,
    pub safe_to_manage: bool,
    pub reason_not_safe: Option<String>,
    pub cinder_id: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct ManageVolume {
    pub host: String,
    pub source_name: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub volume_type: Option<String>,
    pub availability_zone: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub bootable: bool,
}
