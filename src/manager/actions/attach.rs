//! Attachment bookkeeping (spec §3.8, §3.9, §3.11, §3.18–3.21): os-attach,
//! os-detach, os-reserve, os-unreserve, os-begin_detaching, os-roll_detaching and
//! os-force_detach.

use std::collections::BTreeMap;

use super::{ActionOutcome, attachment_guard, derived_attach_state, invalid, refuse_maintenance, set_status};
use crate::manager::{Caller, Manager, ManagerError, Result};
use crate::model::{AttachMode, AttachStatus, Attachment, VolumeStatus, not_migrating, now};
use crate::store::MetaKind;

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
    pub(super) fn attach(
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
            refuse_maintenance(v)?;
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
                    "Invalid attaching mode '{mode}' for volume {id}: the volume is read-only."
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
            let mut new = v.clone();
            new.status = VolumeStatus::InUse;
            new.attach_status = AttachStatus::Attached;
            if same.is_some() {
                tx.update_volume(v.status, &new)?;
                return Ok(ActionOutcome::Done);
            }
            if v.status == VolumeStatus::InUse && !v.multiattach && not_migrating(v.migration_status.as_ref()) {
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
                attach_mode: mode,
                attach_time: Some(now()),
            })?;
            tx.set_volume_meta(
                id,
                MetaKind::Admin,
                &BTreeMap::from([("attached_mode".into(), mode.as_str().into())]),
                false,
            )?;
            tx.update_volume(v.status, &new)?;
            Ok(ActionOutcome::Done)
        })
        .map_err(attach_error)
    }

    pub(super) fn detach(&self, caller: &Caller, id: &str, attachment_id: Option<String>) -> Result<ActionOutcome> {
        self.change(caller, id, |tx, v| {
            attachment_guard(v, attachment_id.as_deref())?;
            refuse_maintenance(v)?;
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

    pub(super) fn reserve(&self, caller: &Caller, id: &str) -> Result<ActionOutcome> {
        self.change(caller, id, |tx, v| {
            let allowed = v.status == VolumeStatus::Available || (v.multiattach && v.status == VolumeStatus::InUse);
            if !allowed {
                return Err(invalid(format!(
                    "Invalid volume: Volume status must be available to reserve, but the status is {}.",
                    v.status
                )));
            }
            set_status(tx, v, VolumeStatus::Attaching)
        })
    }

    pub(super) fn unreserve(&self, caller: &Caller, id: &str) -> Result<ActionOutcome> {
        self.change(caller, id, |tx, v| {
            if v.status != VolumeStatus::Attaching {
                return Ok(ActionOutcome::Done);
            }
            let attached = v.attachments.iter().any(|a| a.attach_status != AttachStatus::Detached);
            set_status(tx, v, if attached { VolumeStatus::InUse } else { VolumeStatus::Available })
        })
    }

    pub(super) fn begin_detaching(&self, caller: &Caller, id: &str) -> Result<ActionOutcome> {
        self.change(caller, id, |tx, v| {
            if !not_migrating(v.migration_status.as_ref()) {
                return Ok(ActionOutcome::Done);
            }
            if v.status != VolumeStatus::InUse || v.attach_status != AttachStatus::Attached {
                return Err(invalid(
                    "Invalid volume: Unable to detach volume. Volume status must be 'in-use' and attach_status \
                     must be 'attached' to detach.",
                ));
            }
            set_status(tx, v, VolumeStatus::Detaching)
        })
    }

    pub(super) fn roll_detaching(&self, caller: &Caller, id: &str) -> Result<ActionOutcome> {
        self.change(caller, id, |tx, v| {
            if v.status != VolumeStatus::Detaching {
                return Ok(ActionOutcome::Done);
            }
            set_status(tx, v, VolumeStatus::InUse)
        })
    }

    pub(super) fn force_detach(
        &self,
        caller: &Caller,
        id: &str,
        attachment_id: Option<String>,
    ) -> Result<ActionOutcome> {
        let v = self.volume(caller, id)?;
        attachment_guard(&v, attachment_id.as_deref())?;
        Err(ManagerError::NotImplemented(
            "os-force_detach needs the export layer (iSCSI/NVMe-oF targets) to drop the connection; \
             it arrives with the target issue. Use os-detach for attachments without an export."
                .to_string(),
        ))
    }
}
