//! The attachments API (spec §2.4, 3.27+): how Nova attaches since Queens. An
//! attachment is reserved (create without a connector), connected (a connector,
//! at create or update: the export is built and the connector's initiator
//! admitted, status `attaching`), completed (`os-complete`, 3.44: `attached`,
//! the volume `in-use`) and deleted (its initiator loses access unless another
//! attachment connects from it; the last one takes the export with it). It
//! shares the export code and the job that reconciles the target with the
//! legacy flow, and keeps the volume's status and attach_status derived from its
//! attachments, as that flow does.

use serde_json::Value;

use super::actions::{busy, derived_attach_state, ran};
use super::{Caller, Manager, ManagerError, Result};
use crate::model::{AttachMode, AttachStatus, Attachment, JobSpec, Volume, VolumeStatus, not_migrating, now};
use crate::store::{MetaKind, Tx};

fn attachment_not_found(id: &str) -> ManagerError {
    ManagerError::NotFound(format!("VolumeAttachment {id} could not be found."))
}

/// An attachment with what its API views show beside the record.
#[derive(Debug, Clone, PartialEq)]
pub struct AttachmentView {
    pub attachment: Attachment,
    /// The flat `connection_info` Cinder stores on a connected attachment.
    pub connection_info: Option<Value>,
}

impl Manager {
    /// The attachment and its volume, if the caller may see the volume.
    fn visible_attachment(&self, tx: &Tx, caller: &Caller, id: &str) -> Result<(Attachment, Volume)> {
        let a = tx.attachment(id)?.ok_or_else(|| attachment_not_found(id))?;
        let v = self.visible(tx, caller, &a.volume_id).map_err(|_| attachment_not_found(id))?;
        Ok((a, v))
    }

    pub fn attachment(&self, caller: &Caller, id: &str) -> Result<AttachmentView> {
        let (a, v) = self.store.read(|tx| self.visible_attachment(tx, caller, id))?;
        self.view(&v, a)
    }

    /// The project's attachments (every project's for an admin asking for all).
    pub fn attachments(&self, caller: &Caller, all_projects: bool) -> Result<Vec<AttachmentView>> {
        let project = (!(all_projects && caller.is_admin)).then_some(caller.project_id.as_str());
        let rows = self.store.read(|tx| {
            let mut out = Vec::new();
            for a in tx.all_attachments(project)? {
                if let Some(v) = tx.volume(&a.volume_id)? {
                    out.push((a, v));
                }
            }
            Ok::<_, ManagerError>(out)
        })?;
        rows.into_iter().map(|(a, v)| self.view(&v, a)).collect()
    }

    fn view(&self, v: &Volume, a: Attachment) -> Result<AttachmentView> {
        let export = self.store.read(|tx| tx.export(&v.id))?;
        let connection_info = match (&a.connector, export) {
            (Some(text), Some(e)) if a.attach_status != AttachStatus::Reserved => {
                let connector: Value = serde_json::from_str(text).unwrap_or(Value::Null);
                Some(self.flat_connection_info(v, &e, &connector, &a)?)
            }
            _ => None,
        };
        Ok(AttachmentView { attachment: a, connection_info })
    }

    /// Cinder's attachment `connection_info`: the data keys, `driver_volume_type`
    /// and the attachment's id, in one object.
    fn flat_connection_info(
        &self,
        v: &Volume,
        e: &crate::model::Export,
        connector: &Value,
        a: &Attachment,
    ) -> Result<Value> {
        let mut volume = v.clone();
        volume.admin_metadata.insert("attached_mode".into(), a.attach_mode.as_str().into());
        let info = self.connection_info(&volume, e, connector)?;
        let mut flat = info["data"].clone();
        flat["driver_volume_type"] = info["driver_volume_type"].clone();
        flat["attachment_id"] = Value::from(a.id.clone());
        Ok(flat)
    }

    /// POST /attachments: reserves the volume for `instance_uuid`; with a
    /// connector, connects it at once.
    pub fn attachment_create(
        &self,
        caller: &Caller,
        volume_id: &str,
        instance_uuid: Option<String>,
        connector: Option<Value>,
        mode: Option<AttachMode>,
    ) -> Result<AttachmentView> {
        let attachment_id = self.store.write(|tx| {
            let v = self.visible(tx, caller, volume_id)?;
            if v.status.as_str().contains("error") {
                return Err(ManagerError::Invalid(format!(
                    "Invalid volume: Volume attachments can not be created if the volume is in an error state. The \
                     Volume {volume_id} currently has a status of: {} ",
                    v.status
                )));
            }
            let reservable = matches!(v.status, VolumeStatus::Available | VolumeStatus::Downloading)
                || (v.multiattach && v.status == VolumeStatus::InUse);
            // Nova re-attaching the same instance (a live migration) may reserve again.
            let same_instance = instance_uuid.is_some()
                && matches!(v.status, VolumeStatus::InUse | VolumeStatus::Reserved)
                && v.attachments.iter().any(|a| a.instance_uuid == instance_uuid);
            if !reservable && !same_instance {
                return Err(ManagerError::Invalid(format!(
                    "Invalid volume: Volume {volume_id} status must be available or downloading{} to reserve, but \
                     the current status is {}.",
                    if v.multiattach { " or in-use" } else { "" },
                    v.status
                )));
            }
            let readonly = v.admin_metadata.get("readonly").is_some_and(|r| r == "True");
            let a = Attachment {
                id: uuid::Uuid::new_v4().to_string(),
                volume_id: volume_id.to_string(),
                instance_uuid,
                attached_host: None,
                mountpoint: None,
                attach_status: AttachStatus::Reserved,
                attach_mode: if readonly { AttachMode::Ro } else { mode.unwrap_or(AttachMode::Rw) },
                attach_time: None,
                detach_time: None,
                connector: None,
                initiator: None,
            };
            tx.upsert_attachment(&a)?;
            self.settle_volume(tx, &v)?;
            Ok(a.id)
        })?;
        let Some(connector) = connector.filter(|c| !c.is_null()) else {
            return self.attachment(caller, &attachment_id);
        };
        match self.attachment_update(caller, &attachment_id, &connector) {
            Ok(view) => Ok(view),
            Err(e) => {
                // One request: a refused connection leaves no reservation behind.
                self.store.write(|tx| {
                    if let Some(a) = tx.attachment(&attachment_id)? {
                        tx.delete_attachment(&a.id)?;
                        if let Some(v) = tx.volume(&a.volume_id)? {
                            self.settle_volume(tx, &v)?;
                        }
                    }
                    Ok::<_, ManagerError>(())
                })?;
                Err(e)
            }
        }
    }

    /// PUT /attachments/{id}: connects the attachment from `connector`: the
    /// export stands and admits the connector's initiator; `attaching`.
    pub fn attachment_update(&self, caller: &Caller, id: &str, connector: &Value) -> Result<AttachmentView> {
        let pending = self.store.write(|tx| {
            let (a, v) = self.visible_attachment(tx, caller, id)?;
            if v.status.as_str().contains("error") {
                return Err(ManagerError::Conflict(format!(
                    "Volume attachments can not be updated if the volume is in an error state. The Volume {} \
                     currently has a status of: {}",
                    v.id, v.status
                )));
            }
            if busy(v.status) {
                return Err(ManagerError::Invalid(format!(
                    "Invalid volume: Volume {} is {}; it cannot be attached now.",
                    v.id, v.status
                )));
            }
            let host = connector.get("host").and_then(Value::as_str);
            if !v.multiattach && not_migrating(v.migration_status.as_ref()) {
                let other_host = v
                    .attachments
                    .iter()
                    .any(|b| b.id != a.id && b.connector.is_some() && b.attached_host.as_deref() != host);
                if other_host {
                    return Err(ManagerError::Conflict(format!("duplicate connectors detected on volume {}", v.id)));
                }
            }
            let (_, initiator, added) = self.add_acl(tx, &v, connector)?;
            let mut updated = a.clone();
            updated.connector = Some(connector.to_string());
            updated.initiator = Some(initiator.clone());
            updated.attach_status = AttachStatus::Attaching;
            updated.attached_host = host.map(str::to_string);
            updated.mountpoint = Some(connector.get("mountpoint").and_then(Value::as_str).unwrap_or("na").to_string());
            updated.attach_time = Some(now());
            tx.upsert_attachment(&updated)?;
            tx.set_volume_meta(
                &v.id,
                MetaKind::Admin,
                &std::collections::BTreeMap::from([("attached_mode".into(), updated.attach_mode.as_str().into())]),
                false,
            )?;
            self.settle_volume(tx, &v)?;
            let spec =
                JobSpec::ExportVolume { volume: v.id.clone(), initiator, new_export: added.export, new_acl: added.acl };
            Ok(self.enqueue(tx, caller, &v.project_id, spec)?)
        })?;
        if let Err(e) = ran(self.run_now(pending), "Unable to update the attachment") {
            // The export's part is rolled back by the job; the attachment says it failed.
            self.store.write(|tx| {
                if let Some(mut a) = tx.attachment(id)? {
                    a.attach_status = AttachStatus::ErrorAttaching;
                    tx.upsert_attachment(&a)?;
                    if let Some(v) = tx.volume(&a.volume_id)? {
                        self.settle_volume(tx, &v)?;
                    }
                }
                Ok::<_, ManagerError>(())
            })?;
            return Err(e);
        }
        self.attachment(caller, id)
    }

    /// POST /attachments/{id}/action os-complete (3.44): attached, in-use.
    pub fn attachment_complete(&self, caller: &Caller, id: &str) -> Result<()> {
        self.store.write(|tx| {
            let (mut a, v) = self.visible_attachment(tx, caller, id)?;
            a.attach_status = AttachStatus::Attached;
            tx.upsert_attachment(&a)?;
            let mut new = v.clone();
            new.status = VolumeStatus::InUse;
            new.attach_status = AttachStatus::Attached;
            tx.update_volume(v.status, &new)?;
            Ok(())
        })
    }

    /// DELETE /attachments/{id}: the attachment goes, its initiator loses access
    /// unless another attachment connects from it, the last one takes the export
    /// with it. Returns the volume's remaining attachments.
    pub fn attachment_delete(&self, caller: &Caller, id: &str) -> Result<Vec<AttachmentView>> {
        let (volume_id, pending) = self.store.write(|tx| {
            let (a, v) = self.visible_attachment(tx, caller, id)?;
            let remaining: Vec<Attachment> = v.attachments.iter().filter(|b| b.id != a.id).cloned().collect();
            tx.delete_attachment(&a.id)?;
            let mut changed = false;
            if let Some(initiator) = &a.initiator {
                if !remaining.iter().any(|b| b.initiator.as_ref() == Some(initiator)) {
                    changed |= tx.remove_export_acl(&v.id, initiator)?;
                }
            }
            if remaining.is_empty() {
                tx.delete_volume_meta(&v.id, MetaKind::Admin, "attached_mode")?;
                changed |= tx.delete_export(&v.id)?;
            }
            let fresh = tx.volume(&v.id)?.ok_or_else(|| super::volume_not_found(&v.id))?;
            self.settle_volume(tx, &fresh)?;
            let pending = if changed {
                let spec = JobSpec::ReconcileExport { volume: v.id.clone() };
                Some(self.enqueue(tx, caller, &v.project_id, spec)?)
            } else {
                None
            };
            Ok::<_, ManagerError>((v.id.clone(), pending))
        })?;
        if let Some(p) = pending {
            ran(self.run_now(p), "Unable to terminate volume connection from backend")?;
        }
        let v = self.volume(caller, &volume_id)?;
        v.attachments.clone().into_iter().map(|a| self.view(&v, a)).collect()
    }

    /// The volume's status and attach_status as its attachments say (spec §2.1),
    /// unless device work owns the status.
    fn settle_volume(&self, tx: &Tx, v: &Volume) -> Result<()> {
        let current = tx.volume(&v.id)?.ok_or_else(|| super::volume_not_found(&v.id))?;
        if busy(current.status) {
            return Ok(());
        }
        let (attach_status, status) = derived_attach_state(&current.attachments);
        if (attach_status, status) != (current.attach_status, current.status) {
            let mut new = current.clone();
            (new.attach_status, new.status) = (attach_status, status);
            tx.update_volume(current.status, &new)?;
        }
        Ok(())
    }
}
