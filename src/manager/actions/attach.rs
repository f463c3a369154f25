//! Attachment bookkeeping (spec §3.8, §3.9, §3.11, §3.18–3.21): os-attach,
//! os-detach, os-reserve, os-unreserve, os-begin_detaching, os-roll_detaching and
//! os-force_detach.

use std::collections::BTreeMap;

use super::{
    ActionOutcome, attachment_guard, busy, derived_attach_state, invalid, ran, refuse_maintenance, set_status,
};
use crate::manager::{Caller, Manager, ManagerError, Result};
use crate::model::{AttachMode, AttachStatus, Attachment, JobSpec, VolumeStatus, not_migrating, now};
use crate::store::MetaKind;

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
                detach_time: None,
                connector: None,
                initiator: None,
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

    /// Removes the attachment; the last one takes the export with it (spec §3.9).
    pub(super) fn detach(&self, caller: &Caller, id: &str, attachment_id: Option<String>) -> Result<ActionOutcome> {
        let pending = self.store.write(|tx| {
            let v = self.visible(tx, caller, id)?;
            attachment_guard(&v, attachment_id.as_deref())?;
            refuse_maintenance(&v)?;
            let target = match &attachment_id {
                Some(aid) => v.attachments.iter().find(|a| a.id == *aid),
                None => v.attachments.first(),
            };
            let mut new = v.clone();
            let remaining: Vec<Attachment> = match target {
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
                    Vec::new()
                }
                Some(a) => {
                    tx.delete_attachment(&a.id)?;
                    let remaining: Vec<Attachment> = v.attachments.iter().filter(|b| b.id != a.id).cloned().collect();
                    let (attach, status) = derived_attach_state(&remaining);
                    new.attach_status = attach;
                    new.status = status;
                    remaining
                }
            };
            if remaining.is_empty() {
                tx.delete_volume_meta(id, MetaKind::Admin, "attached_mode")?;
            }
            tx.update_volume(v.status, &new)?;
            self.unexport_if_unused(tx, caller, &v.id, &v.project_id, &remaining)
        })?;
        if let Some(p) = pending {
            ran(self.run_now(p), "Unable to remove the export from the backend")?;
        }
        Ok(ActionOutcome::Done)
    }

    /// With no attachment left, the volume's export is no longer wanted: a job
    /// to take it down.
    pub(super) fn unexport_if_unused(
        &self,
        tx: &crate::store::Tx,
        caller: &Caller,
        id: &str,
        owner: &str,
        remaining: &[Attachment],
    ) -> Result<Option<super::super::jobs::Pending>> {
        if !remaining.is_empty() || !tx.delete_export(id)? {
            return Ok(None);
        }
        Ok(Some(self.enqueue(tx, caller, owner, JobSpec::ReconcileExport { volume: id.to_string() })?))
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

    /// os-force_detach (admin, any status): the connector's initiator (every
    /// initiator for a null connector) loses access, the attachment goes, and with
    /// the last attachment the export.
    pub(super) fn force_detach(
        &self,
        caller: &Caller,
        id: &str,
        attachment_id: Option<String>,
        connector: &serde_json::Value,
    ) -> Result<ActionOutcome> {
        let pending = self.store.write(|tx| {
            let v = self.visible(tx, caller, id)?;
            attachment_guard(&v, attachment_id.as_deref())?;
            if let Some(export) = tx.export(id)? {
                match crate::manager::connector_initiator(export.protocol(), connector) {
                    Some(initiator) => {
                        tx.remove_export_acl(id, &initiator)?;
                    }
                    None => {
                        for initiator in tx.export_acls(id)? {
                            tx.remove_export_acl(id, &initiator)?;
                        }
                    }
                }
            }
            let gone = match &attachment_id {
                Some(aid) => v.attachments.iter().find(|a| a.id == *aid),
                None => v.attachments.first(),
            };
            let remaining: Vec<Attachment> =
                v.attachments.iter().filter(|a| Some(a.id.as_str()) != gone.map(|g| g.id.as_str())).cloned().collect();
            if let Some(a) = gone {
                tx.delete_attachment(&a.id)?;
            }
            let mut new = v.clone();
            (new.attach_status, new.status) = derived_attach_state(&remaining);
            if remaining.is_empty() {
                tx.delete_volume_meta(id, MetaKind::Admin, "attached_mode")?;
            }
            tx.update_volume(v.status, &new)?;
            match self.unexport_if_unused(tx, caller, id, &v.project_id, &remaining)? {
                Some(p) => Ok::<_, ManagerError>(Some(p)),
                None if tx.export(id)?.is_some() => {
                    Ok(Some(self.enqueue(tx, caller, &v.project_id, JobSpec::ReconcileExport { volume: id.into() })?))
                }
                None => Ok(None),
            }
        })?;
        if let Some(p) = pending {
            ran(self.run_now(p), "Unable to terminate volume connection from backend")?;
        }
        Ok(ActionOutcome::Done)
    }
}
