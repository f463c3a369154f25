//! os-initialize_connection and os-terminate_connection (spec §3.22, §3.23, §4):
//! the legacy attach flow's export half. Both change the desired export in their
//! transaction and run the job that reconciles the target before they answer.

use serde_json::Value;

use super::{ActionOutcome, attachment_guard, busy, invalid, ran, refuse_maintenance};
use crate::manager::{Caller, Manager, Result, connector_initiator};
use crate::model::{AttachStatus, JobSpec, VolumeStatus};

impl Manager {
    /// Builds the volume's export if it has none, admits the connector's initiator
    /// and answers `connection_info`. Status and attachments do not change. A
    /// failure takes back what this call added and leaves nothing half-built.
    pub(super) fn initialize_connection(&self, caller: &Caller, id: &str, connector: &Value) -> Result<ActionOutcome> {
        let (pending, export) = self.store.write(|tx| {
            let v = self.visible(tx, caller, id)?;
            refuse_maintenance(&v)?;
            if busy(v.status) || v.status == VolumeStatus::Error {
                return Err(invalid(format!(
                    "Invalid volume: Volume {id} is {}; it cannot be exported now.",
                    v.status
                )));
            }
            let (export, initiator, added) = self.add_acl(tx, &v, connector)?;
            let spec = JobSpec::ExportVolume {
                volume: id.to_string(),
                initiator,
                new_export: added.export,
                new_acl: added.acl,
            };
            Ok((self.enqueue(tx, caller, &v.project_id, spec)?, export))
        })?;
        ran(self.run_now(pending), "Unable to fetch connection information from backend")?;
        let v = self.volume(caller, id)?;
        Ok(ActionOutcome::Connection(self.connection_info(&v, &export, connector)?))
    }

    /// The connector's initiator loses access, unless another attachment of the
    /// volume connects from it; the export stays (os-detach removes it). A volume
    /// still `attaching` is unreserved.
    pub(super) fn terminate_connection(&self, caller: &Caller, id: &str, connector: &Value) -> Result<ActionOutcome> {
        let pending = self.store.write(|tx| {
            let v = self.visible(tx, caller, id)?;
            attachment_guard(&v, None)?;
            let mut removed = false;
            if let Some(export) = tx.export(id)? {
                if let Some(initiator) = connector_initiator(export.protocol(), connector) {
                    let in_use = v.attachments.iter().any(|a| a.initiator.as_deref() == Some(initiator.as_str()));
                    if !in_use {
                        removed = tx.remove_export_acl(id, &initiator)?;
                    }
                }
            }
            if v.status == VolumeStatus::Attaching {
                let mut new = v.clone();
                let attached = v.attachments.iter().any(|a| a.attach_status == AttachStatus::Attached);
                new.status = if attached { VolumeStatus::InUse } else { VolumeStatus::Available };
                tx.update_volume(v.status, &new)?;
            }
            if !removed {
                return Ok::<_, crate::manager::ManagerError>(None);
            }
            Ok(Some(self.enqueue(tx, caller, &v.project_id, JobSpec::ReconcileExport { volume: id.to_string() })?))
        })?;
        if let Some(p) = pending {
            ran(self.run_now(p), "Unable to terminate volume connection from backend")?;
        }
        Ok(ActionOutcome::Done)
    }
}
