//! The 24 volume actions (spec §3): preconditions and transitions. Bodies arrive
//! validated by the API's schemas; policy has been checked there too.

use std::collections::BTreeMap;

use serde_json::json;

use super::{Caller, Manager, ManagerError, Result, type_not_found};
use crate::store::{
    AttachStatus, Attachment, JobKind, MetaKind, SnapshotStatus, Tx, Volume, VolumeStatus, not_migrating, now,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachMode {
    Rw,
    Ro,
}

impl AttachMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AttachMode::Rw => "rw",
            AttachMode::Ro => "ro",
        }
    }
}

/// One validated action body.
#[derive(Debug, Clone, PartialEq)]
pub enum VolumeAction {
    Extend {
        new_size: i64,
    },
    ResetStatus {
        status: Option<VolumeStatus>,
        attach_status: Option<AttachStatus>,
        /// `Some(None)` is "none": clear it.
        migration_status: Option<Option<String>>,
    },
    Revert {
        snapshot_id: Option<String>,
    },
    SetImageMetadata(BTreeMap<String, String>),
    UnsetImageMetadata {
        key: String,
    },
    ShowImageMetadata,
    Attach {
        instance_uuid: Option<String>,
        host_name: Option<String>,
        mountpoint: String,
        mode: AttachMode,
    },
    Detach {
        attachment_id: Option<String>,
    },
    Unmanage,
    ForceDetach {
        attachment_id: Option<String>,
    },
    Retype {
        new_type: String,
        on_demand: bool,
    },
    MigrateVolume {
        destination: String,
    },
    MigrateVolumeCompletion {
        new_volume: String,
        error: bool,
    },
    ForceDelete,
    SetBootable(bool),
    UploadImage {
        force: bool,
    },
    Reserve,
    Unreserve,
    BeginDetaching,
    RollDetaching,
    TerminateConnection,
    InitializeConnection {
        connector: serde_json::Value,
    },
    UpdateReadonly(bool),
    Reimage {
        reimage_reserved: bool,
    },
    ExtendVolumeCompletion,
}

/// What an action answers besides its status code.
#[derive(Debug, Clone, PartialEq)]
pub enum ActionOutcome {
    Done,
    Metadata(BTreeMap<String, String>),
}

/// Derives (attach_status, status) from the attachments (spec §2.1): the lowest
/// non-error attachment status in alphabetical order; none means detached.
pub fn derived_attach_state(attachments: &[Attachment]) -> (AttachStatus, VolumeStatus) {
    let mut live: Vec<&str> = attachments
        .iter()
        .map(|a| a.attach_status.as_str())
        .filter(|s| !s.starts_with("error") && *s != "detached" && *s != "deleted")
        .collect();
    live.sort_unstable();
    match live.first().copied() {
        None => (AttachStatus::Detached, VolumeStatus::Available),
        Some("attached") => (AttachStatus::Attached, VolumeStatus::InUse),
        Some("attaching") => (AttachStatus::Attaching, VolumeStatus::Attaching),
        Some("detaching") => (AttachStatus::Detaching, VolumeStatus::Detaching),
        Some(_) => (AttachStatus::Reserved, VolumeStatus::Reserved),
    }
}

fn invalid(msg: impl Into<String>) -> ManagerError {
    ManagerError::Invalid(msg.into())
}

/// The 409 of the attachment-deletion guard (Cinder bug #2004555).
fn nova_conflict(instance: Option<&str>) -> ManagerError {
    ManagerError::Conflict(format!(
        "ConflictNovaUsingAttachment: Detach volume from instance {} using the Compute API",
        instance.unwrap_or("None")
    ))
}

/// Statuses in which device work is under way; attaching there would race it.
fn busy(status: VolumeStatus) -> bool {
    matches!(
        status,
        VolumeStatus::Creating
            | VolumeStatus::Deleting
            | VolumeStatus::Extending
            | VolumeStatus::Reverting
            | VolumeStatus::Retyping
            | VolumeStatus::Managing
            | VolumeStatus::Unmanaging
            | VolumeStatus::Downloading
            | VolumeStatus::Uploading
    )
}

impl Manager {
    /// Runs one action on a volume the caller may see.
    pub fn volume_action(
        self: &std::sync::Arc<Self>,
        caller: &Caller,
        id: &str,
        action: VolumeAction,
        microversion: (u16, u16),
    ) -> Result<ActionOutcome> {
        use VolumeAction as A;
        match action {
            A::Extend { new_size } => self.extend(caller, id, new_size, microversion >= (3, 42)),
            A::ResetStatus { status, attach_status, migration_status } => {
                self.reset_status(caller, id, status, attach_status, migration_status)
            }
            A::Revert { snapshot_id } => self.revert(caller, id, snapshot_id),
            A::SetImageMetadata(map) => self.change(caller, id, |tx, v| {
                refuse_maintenance_or_uploading(v)?;
                tx.set_volume_meta(id, MetaKind::Image, &map, false)?;
                Ok(ActionOutcome::Metadata(tx.volume(id)?.map(|v| v.image_metadata).unwrap_or_default()))
            }),
            A::UnsetImageMetadata { key } => self.change(caller, id, |tx, v| {
                if !v.image_metadata.contains_key(&key) {
                    return Err(ManagerError::NotFound(format!(
                        "Glance metadata for volume/snapshot {id} cannot be found."
                    )));
                }
                refuse_maintenance_or_uploading(v)?;
                tx.delete_volume_meta(id, MetaKind::Image, &key)?;
                Ok(ActionOutcome::Done)
            }),
            A::ShowImageMetadata => Ok(ActionOutcome::Metadata(self.volume(caller, id)?.image_metadata)),
            A::Attach { instance_uuid, host_name, mountpoint, mode } => {
                self.attach(caller, id, instance_uuid, host_name, mountpoint, mode)
            }
            A::Detach { attachment_id } => self.detach(caller, id, attachment_id),
            A::Unmanage => self.unmanage_volume(caller, id).map(|()| ActionOutcome::Done),
            A::ForceDelete => self.force_delete(caller, id),
            A::SetBootable(bootable) => self.change(caller, id, |tx, v| {
                if v.status == VolumeStatus::Maintenance {
                    return Err(invalid(format!("Invalid volume: Volume {id} is in maintenance.")));
                }
                let mut new = v.clone();
                new.bootable = bootable;
                tx.update_volume(v.status, &new)?;
                Ok(ActionOutcome::Done)
            }),
            A::UpdateReadonly(readonly) => self.change(caller, id, |tx, v| {
                if v.status != VolumeStatus::Available {
                    return Err(invalid(format!(
                        "Invalid volume: Volume {id} status must be available to update readonly flag, but it is {}.",
                        v.status
                    )));
                }
                let flag = if readonly { "True" } else { "False" };
                tx.set_volume_meta(id, MetaKind::Admin, &BTreeMap::from([("readonly".into(), flag.into())]), false)?;
                Ok(ActionOutcome::Done)
            }),
            A::Reserve => self.change(caller, id, |tx, v| {
                let allowed = v.status == VolumeStatus::Available || (v.multiattach && v.status == VolumeStatus::InUse);
                if !allowed {
                    return Err(invalid(format!(
                        "Invalid volume: Volume status must be available to reserve, but the status is {}.",
                        v.status
                    )));
                }
                set_status(tx, v, VolumeStatus::Attaching)
            }),
            A::Unreserve => self.change(caller, id, |tx, v| {
                if v.status != VolumeStatus::Attaching {
                    return Ok(ActionOutcome::Done);
                }
                let attached = v.attachments.iter().any(|a| a.attach_status != AttachStatus::Detached);
                set_status(tx, v, if attached { VolumeStatus::InUse } else { VolumeStatus::Available })
            }),
            A::BeginDetaching => self.change(caller, id, |tx, v| {
                if !not_migrating(v.migration_status.as_deref()) {
                    return Ok(ActionOutcome::Done);
                }
                if v.status != VolumeStatus::InUse || v.attach_status != AttachStatus::Attached {
                    return Err(invalid(
                        "Invalid volume: Unable to detach volume. Volume status must be 'in-use' and attach_status \
                         must be 'attached' to detach.",
                    ));
                }
                set_status(tx, v, VolumeStatus::Detaching)
            }),
            A::RollDetaching => self.change(caller, id, |tx, v| {
                if v.status != VolumeStatus::Detaching {
                    return Ok(ActionOutcome::Done);
                }
                set_status(tx, v, VolumeStatus::InUse)
            }),
            A::Retype { new_type, on_demand } => self.retype(caller, id, &new_type, on_demand),
            A::MigrateVolume { destination } => self.migrate_volume(caller, id, &destination),
            A::MigrateVolumeCompletion { new_volume, error } => {
                self.migrate_volume_completion(caller, id, &new_volume, error)
            }
            A::ForceDetach { attachment_id } => {
                let v = self.volume(caller, id)?;
                attachment_guard(&v, attachment_id.as_deref())?;
                Err(ManagerError::NotImplemented(
                    "os-force_detach needs the export layer (iSCSI/NVMe-oF targets) to drop the connection; \
                     it arrives with the target issue. Use os-detach for attachments without an export."
                        .to_string(),
                ))
            }
            A::UploadImage { force } => {
                let v = self.volume(caller, id)?;
                // enable_force_upload is off in ember: force is ignored, as upstream does by default.
                let _ = force;
                if v.status != VolumeStatus::Available {
                    return Err(invalid(format!(
                        "Invalid volume: Volume {id} status must be available, but current status is: {}.",
                        v.status
                    )));
                }
                Err(ManagerError::NotImplemented(
                    "os-volume_upload_image needs the image store (dir or Glance) and the streaming copy engine; \
                     they arrive with the image issue."
                        .to_string(),
                ))
            }
            A::Reimage { reimage_reserved } => {
                let v = self.volume(caller, id)?;
                if v.attachments.len() > 1 {
                    return Err(ManagerError::Conflict(format!(
                        "Volume {id} has more than one attachment; it cannot be reimaged."
                    )));
                }
                let allowed = matches!(v.status, VolumeStatus::Available | VolumeStatus::Error)
                    || (reimage_reserved && v.status == VolumeStatus::Reserved);
                if !allowed {
                    return Err(invalid(format!(
                        "Invalid volume: Volume {id} status must be available or error{}, but it is {}.",
                        if reimage_reserved { " or reserved" } else { "" },
                        v.status
                    )));
                }
                Err(ManagerError::NotImplemented(
                    "os-reimage needs the image store and the streaming copy engine; they arrive with the image issue."
                        .to_string(),
                ))
            }
            A::TerminateConnection => {
                let v = self.volume(caller, id)?;
                if v.attachments.len() > 1 {
                    return Err(nova_conflict(v.attachments[0].instance_uuid.as_deref()));
                }
                Err(ManagerError::NotImplemented(
                    "os-terminate_connection needs the export layer (iSCSI/NVMe-oF targets); it arrives with the \
                     target issue."
                        .to_string(),
                ))
            }
            A::InitializeConnection { connector } => {
                let v = self.volume(caller, id)?;
                if v.status == VolumeStatus::Maintenance {
                    return Err(invalid(format!("Invalid volume: Volume {id} is in maintenance.")));
                }
                let has = |key: &str| connector.get(key).is_some_and(|v| v.is_string());
                if !has("initiator") && !has("nqn") {
                    return Err(invalid(
                        "Invalid input received: Connector doesn't have required information: initiator (iSCSI) \
                         or nqn (NVMe-oF).",
                    ));
                }
                Err(ManagerError::NotImplemented(
                    "os-initialize_connection needs the export layer (tgt, LIO or nvmet targets); it arrives with \
                     the target issue."
                        .to_string(),
                ))
            }
            A::ExtendVolumeCompletion => {
                let v = self.volume(caller, id)?;
                if v.status != VolumeStatus::Extending {
                    return Err(invalid(format!(
                        "Invalid volume: Volume {id} is not being extended (status {}).",
                        v.status
                    )));
                }
                Err(ManagerError::NotImplemented(
                    "os-extend_volume_completion serves drivers that extend asynchronously outside the agent; \
                     ember's pools finish extends themselves."
                        .to_string(),
                ))
            }
        }
    }

    /// A synchronous action: `f` runs in one write transaction with the volume.
    fn change(
        &self,
        caller: &Caller,
        id: &str,
        f: impl FnOnce(&Tx, &Volume) -> Result<ActionOutcome>,
    ) -> Result<ActionOutcome> {
        self.store.write(|tx| {
            let v = self.visible(tx, caller, id)?;
            f(tx, &v)
        })
    }

    fn extend(
        self: &std::sync::Arc<Self>,
        caller: &Caller,
        id: &str,
        new_size: i64,
        attached_ok: bool,
    ) -> Result<ActionOutcome> {
        let capacity = self.pool.capacity()?;
        let job = self.store.write(|tx| {
            let v = self.visible(tx, caller, id)?;
            if new_size <= v.size {
                return Err(invalid(format!(
                    "Invalid input received: New size for extend must be greater than current size. \
                     (current: {}, extended: {new_size}).",
                    v.size
                )));
            }
            let in_use_ok = attached_ok && v.status == VolumeStatus::InUse;
            if v.status != VolumeStatus::Available && !in_use_ok {
                return Err(invalid(format!(
                    "Invalid volume: Volume {id} status must be '{}' to extend, but current status is: {}.",
                    if attached_ok { "available' or 'in-use" } else { "available" },
                    v.status
                )));
            }
            if in_use_ok {
                return Err(ManagerError::NotImplemented(
                    "Extending an in-use volume needs the export layer to tell connected initiators \
                     (tgt/LIO/nvmet); it arrives with the target issue."
                        .to_string(),
                ));
            }
            self.check_capacity(tx, &capacity, new_size - v.size)?;
            let mut new = v.clone();
            new.status = VolumeStatus::Extending;
            new.previous_status = Some(v.status.to_string());
            tx.update_volume(v.status, &new)?;
            Ok(tx.insert_job(JobKind::ExtendVolume, Some(id), None, json!({"new_size": new_size}))?)
        })?;
        self.spawn_job(job);
        Ok(ActionOutcome::Done)
    }

    fn reset_status(
        &self,
        caller: &Caller,
        id: &str,
        status: Option<VolumeStatus>,
        attach_status: Option<AttachStatus>,
        migration_status: Option<Option<String>>,
    ) -> Result<ActionOutcome> {
        self.change(caller, id, |tx, v| {
            if status == Some(VolumeStatus::Deleting) {
                return Err(invalid("Invalid input received: Cannot reset-state to deleting"));
            }
            if status == Some(VolumeStatus::InUse) && v.attachments.is_empty() {
                return Err(invalid(format!(
                    "Invalid volume: Cannot reset status to in-use: volume {id} has no attachments."
                )));
            }
            let mut new = v.clone();
            if let Some(s) = status {
                new.status = s;
            }
            if let Some(a) = attach_status {
                new.attach_status = a;
            }
            if let Some(m) = migration_status {
                new.migration_status = m;
            }
            if attach_status == Some(AttachStatus::Detached) && !v.attachments.is_empty() {
                for a in &v.attachments {
                    tx.delete_attachment(&a.id)?;
                }
                tx.delete_volume_meta(id, MetaKind::Admin, "attached_mode")?;
                let (attach, derived) = derived_attach_state(&[]);
                new.attach_status = attach;
                new.status = derived;
            }
            tx.update_volume(v.status, &new)?;
            // An admin override ends any unfinished work on the volume: a later
            // restart must not resume it against the state just set.
            tx.finish_jobs_of(id)?;
            Ok(ActionOutcome::Done)
        })
    }

    fn revert(
        self: &std::sync::Arc<Self>,
        caller: &Caller,
        id: &str,
        snapshot_id: Option<String>,
    ) -> Result<ActionOutcome> {
        let job = self.store.write(|tx| {
            let v = self.visible(tx, caller, id)?;
            let snapshots = tx.snapshots(None, Some(id))?;
            let Some(latest) = snapshots.last() else {
                return Err(invalid(format!("Invalid volume: Volume {id} has no snapshots to revert to.")));
            };
            let Some(snapshot_id) = snapshot_id else {
                return Err(invalid("Invalid input received: snapshot_id is required to revert a volume."));
            };
            if latest.id != snapshot_id {
                return Err(invalid(format!(
                    "Invalid snapshot: snapshot {snapshot_id} is not the latest one of volume {id} ({}).",
                    latest.id
                )));
            }
            if v.size != latest.volume_size {
                return Err(invalid(format!(
                    "Invalid volume: Volume {id} size ({} GiB) differs from snapshot {snapshot_id} size ({} GiB).",
                    v.size, latest.volume_size
                )));
            }
            if v.status != VolumeStatus::Available {
                return Err(ManagerError::Conflict(format!(
                    "Volume {id} status must be available to revert, but it is {}.",
                    v.status
                )));
            }
            if latest.status != SnapshotStatus::Available {
                return Err(ManagerError::Conflict(format!(
                    "Snapshot {snapshot_id} status must be available to revert, but it is {}.",
                    latest.status
                )));
            }
            let mut new = v.clone();
            new.status = VolumeStatus::Reverting;
            new.previous_status = Some(v.status.to_string());
            tx.update_volume(v.status, &new)?;
            let mut snap = latest.clone();
            snap.status = SnapshotStatus::Restoring;
            tx.update_snapshot(latest.status, &snap)?;
            Ok(tx.insert_job(JobKind::RevertVolume, Some(id), Some(&snapshot_id), json!({}))?)
        })?;
        self.spawn_job(job);
        Ok(ActionOutcome::Done)
    }

    fn attach(
        &self,
        caller: &Caller,
        id: &str,
        instance_uuid: Option<String>,
        host_name: Option<String>,
        mountpoint: String,
        mode: AttachMode,
    ) -> Result<ActionOutcome> {
        let attach_error = |e: ManagerError| match e {
            ManagerError::Invalid(msg) => ManagerError::Invalid(format!("Error attaching volume - {msg}")),
            other => other,
        };
        self.change(caller, id, |tx, v| {
            if v.status == VolumeStatus::Maintenance {
                return Err(invalid(format!("Invalid volume: Volume {id} is in maintenance.")));
            }
            // ember refuses to attach while device work runs on the volume (upstream
            // does not check; see README "Differences").
            if busy(v.status) {
                return Err(invalid(format!(
                    "Invalid volume: Volume {id} is {}; it cannot be attached now.",
                    v.status
                )));
            }
            if !v.admin_metadata.contains_key("readonly") {
                tx.set_volume_meta(id, MetaKind::Admin, &BTreeMap::from([("readonly".into(), "False".into())]), false)?;
            }
            let readonly = v.admin_metadata.get("readonly").is_some_and(|r| r == "True");
            if readonly && mode != AttachMode::Ro {
                return Err(invalid(format!(
                    "Invalid attaching mode '{}' for volume {id}: the volume is read-only.",
                    mode.as_str()
                )));
            }
            if v.status == VolumeStatus::Attaching {
                if let Some(recorded) = v.admin_metadata.get("attached_mode") {
                    if recorded != mode.as_str() {
                        return Err(invalid(format!("InvalidVolume: being attached by different mode ({recorded})")));
                    }
                }
            }
            let same = v.attachments.iter().find(|a| match (&instance_uuid, &a.instance_uuid) {
                (Some(want), Some(have)) => want.eq_ignore_ascii_case(have),
                (None, None) => a.attached_host == host_name,
                _ => false,
            });
            if same.is_some() {
                let mut new = v.clone();
                new.status = VolumeStatus::InUse;
                new.attach_status = AttachStatus::Attached;
                tx.update_volume(v.status, &new)?;
                return Ok(ActionOutcome::Done);
            }
            if v.status == VolumeStatus::InUse && !v.multiattach && not_migrating(v.migration_status.as_deref()) {
                return Err(invalid(format!(
                    "InvalidVolume: volume {id} is already attached and multiple attachments are not enabled"
                )));
            }
            tx.upsert_attachment(&Attachment {
                id: uuid::Uuid::new_v4().to_string(),
                volume_id: id.to_string(),
                instance_uuid: instance_uuid.clone(),
                attached_host: host_name.clone(),
                mountpoint: Some(mountpoint.clone()),
                attach_status: AttachStatus::Attached,
                attach_mode: mode.as_str().to_string(),
                attach_time: Some(now()),
            })?;
            tx.set_volume_meta(
                id,
                MetaKind::Admin,
                &BTreeMap::from([("attached_mode".into(), mode.as_str().into())]),
                false,
            )?;
            let mut new = v.clone();
            new.status = VolumeStatus::InUse;
            new.attach_status = AttachStatus::Attached;
            tx.update_volume(v.status, &new)?;
            Ok(ActionOutcome::Done)
        })
        .map_err(attach_error)
    }

    fn detach(&self, caller: &Caller, id: &str, attachment_id: Option<String>) -> Result<ActionOutcome> {
        self.change(caller, id, |tx, v| {
            attachment_guard(v, attachment_id.as_deref())?;
            if v.status == VolumeStatus::Maintenance {
                return Err(invalid(format!("Invalid volume: Volume {id} is in maintenance.")));
            }
            let target = match &attachment_id {
                Some(aid) => v.attachments.iter().find(|a| a.id == *aid),
                None => v.attachments.first(),
            };
            let mut new = v.clone();
            match target {
                None => {
                    // Nothing attached: a detach only settles an in-between status.
                    if matches!(
                        v.status,
                        VolumeStatus::InUse
                            | VolumeStatus::Detaching
                            | VolumeStatus::Attaching
                            | VolumeStatus::Reserved
                    ) {
                        new.status = VolumeStatus::Available;
                    }
                    new.attach_status = AttachStatus::Detached;
                }
                Some(a) => {
                    // No export exists before the target layer lands; once it does,
                    // removing it is part of this step (spec §3.9).
                    tx.delete_attachment(&a.id)?;
                    let remaining: Vec<Attachment> = v.attachments.iter().filter(|b| b.id != a.id).cloned().collect();
                    if remaining.is_empty() {
                        tx.delete_volume_meta(id, MetaKind::Admin, "attached_mode")?;
                    }
                    let (attach, status) = derived_attach_state(&remaining);
                    new.attach_status = attach;
                    new.status = status;
                }
            }
            tx.update_volume(v.status, &new)?;
            Ok(ActionOutcome::Done)
        })
    }

    fn force_delete(self: &std::sync::Arc<Self>, caller: &Caller, id: &str) -> Result<ActionOutcome> {
        let v = self.volume(caller, id)?;
        let has_snapshots = !self.store.read(|tx| tx.snapshots(None, Some(id)))?.is_empty();
        if v.attach_status == AttachStatus::Attached || !not_migrating(v.migration_status.as_deref()) || has_snapshots {
            return Err(invalid(format!(
                "Invalid volume: Volume {id} cannot be force-deleted: it must not be attached, migrating or have \
                 snapshots (attach_status {}, migration_status {}, snapshots: {has_snapshots}).",
                v.attach_status,
                v.migration_status.as_deref().unwrap_or("None")
            )));
        }
        self.delete_volume(caller, id, false, true).map(|()| ActionOutcome::Done)
    }

    fn retype(
        self: &std::sync::Arc<Self>,
        caller: &Caller,
        id: &str,
        new_type: &str,
        on_demand: bool,
    ) -> Result<ActionOutcome> {
        let job = self.store.write(|tx| {
            let v = self.visible(tx, caller, id)?;
            let target = tx.volume_type(new_type)?.ok_or_else(|| type_not_found(new_type))?;
            if !matches!(v.status, VolumeStatus::Available | VolumeStatus::InUse)
                || !not_migrating(v.migration_status.as_deref())
            {
                return Err(invalid(format!(
                    "Invalid volume: Volume {id} status must be available or in-use and not migrating to retype, \
                     but it is {} (migration status {}).",
                    v.status,
                    v.migration_status.as_deref().unwrap_or("None")
                )));
            }
            if target.id == v.volume_type_id {
                return Err(invalid("Invalid input received: Retype requires a different volume type."));
            }
            if target.multiattach() != v.multiattach && v.status != VolumeStatus::Available {
                return Err(invalid(
                    "Invalid volume: Retyping to or from a multiattach type is only possible while the volume is available.",
                ));
            }
            if let Some(backend) = target.extra_specs.get("volume_backend_name") {
                if *backend != self.settings.backend_name {
                    return Err(if on_demand {
                        ManagerError::NotImplemented(format!(
                            "Retype to type {} needs a migration to backend {backend}; volume migration arrives \
                             with the migration issue.",
                            target.name
                        ))
                    } else {
                        invalid(format!(
                            "Invalid input received: Retype to type {} needs a migration to backend {backend}, \
                             but migration_policy is 'never'.",
                            target.name
                        ))
                    });
                }
            }
            let mut new = v.clone();
            new.status = VolumeStatus::Retyping;
            new.previous_status = Some(v.status.to_string());
            new.multiattach = target.multiattach();
            tx.update_volume(v.status, &new)?;
            Ok(tx.insert_job(JobKind::RetypeVolume, Some(id), None, json!({"new_type_id": target.id}))?)
        })?;
        self.spawn_job(job);
        Ok(ActionOutcome::Done)
    }

    fn migrate_volume(&self, caller: &Caller, id: &str, destination: &str) -> Result<ActionOutcome> {
        let v = self.volume(caller, id)?;
        let snapshots = self.store.read(|tx| tx.snapshots(None, Some(id)))?;
        if !matches!(v.status, VolumeStatus::Available | VolumeStatus::InUse)
            || !not_migrating(v.migration_status.as_deref())
            || !snapshots.is_empty()
        {
            return Err(invalid(format!(
                "Invalid volume: Volume {id} must be available or in-use, not migrating and without snapshots to \
                 migrate (status {}, {} snapshots).",
                v.status,
                snapshots.len()
            )));
        }
        let ours = &self.settings.host;
        let backend_of_ours = ours.split('#').next().unwrap_or(ours);
        let backend_of_dest = destination.split('#').next().unwrap_or(destination);
        if backend_of_dest == backend_of_ours {
            return Err(invalid(format!("Invalid host: Destination {destination} is the volume's current host.")));
        }
        // A single-backend agent knows no other service to migrate to.
        Err(invalid(format!("No available service named '{destination}'")))
    }

    fn migrate_volume_completion(
        &self,
        caller: &Caller,
        id: &str,
        new_volume: &str,
        _error: bool,
    ) -> Result<ActionOutcome> {
        let old = self.volume(caller, id)?;
        let new = self.volume(caller, new_volume)?;
        match (&old.migration_status, &new.migration_status) {
            (None, None) => {}
            (None, Some(_)) => return Err(invalid("Invalid volume: Source volume not mid-migration.")),
            (Some(_), None) => return Err(invalid("Invalid volume: Destination volume not mid-migration.")),
            (Some(_), Some(dest)) => {
                if *dest != format!("target:{id}") {
                    return Err(invalid(
                        "Invalid volume: Destination has migration_status target:<other>, expected \
                                        target:<source id>.",
                    ));
                }
            }
        }
        Err(ManagerError::NotImplemented(
            "os-migrate_volume_completion completes a generic volume migration, which arrives with the migration \
             issue."
                .to_string(),
        ))
    }
}

fn refuse_maintenance_or_uploading(v: &Volume) -> Result<()> {
    if matches!(v.status, VolumeStatus::Maintenance | VolumeStatus::Uploading) {
        return Err(invalid(format!(
            "Invalid volume: Volume {} status must not be maintenance or uploading, but it is {}.",
            v.id, v.status
        )));
    }
    Ok(())
}

fn set_status(tx: &Tx, v: &Volume, status: VolumeStatus) -> Result<ActionOutcome> {
    let mut new = v.clone();
    new.status = status;
    tx.update_volume(v.status, &new)?;
    Ok(ActionOutcome::Done)
}

/// Cinder's attachment-deletion guard (bug #2004555): an unknown attachment id, or
/// several attachments and no id, is a 409.
fn attachment_guard(v: &Volume, attachment_id: Option<&str>) -> Result<()> {
    match attachment_id {
        Some(aid) => {
            if !v.attachments.iter().any(|a| a.id == aid) {
                return Err(nova_conflict(None));
            }
        }
        None => {
            if v.attachments.len() > 1 {
                return Err(nova_conflict(v.attachments[0].instance_uuid.as_deref()));
            }
        }
    }
    Ok(())
}
