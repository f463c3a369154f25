//! Admin actions (spec §3.3, §3.13–3.15): os-reset_status, os-force_delete,
//! os-migrate_volume, os-migrate_volume_completion and
//! os-extend_volume_completion.

use super::{ActionOutcome, derived_attach_state, invalid, migration_text};
use crate::manager::{Caller, Manager, ManagerError, Result};
use crate::model::{AttachStatus, MigrationStatus, VolumeStatus, not_migrating};
use crate::store::MetaKind;

impl Manager {
    pub(super) fn reset_status(
        &self,
        caller: &Caller,
        id: &str,
        status: Option<VolumeStatus>,
        attach_status: Option<AttachStatus>,
        migration_status: Option<Option<MigrationStatus>>,
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
            // An admin override ends any unfinished work on the volume: a job still
            // waiting for its locks does not run, and a restart does not resume one.
            tx.cancel_jobs_of(id, "cancelled by os-reset_status")?;
            if let Some(group) = &v.group_id {
                crate::manager::groups::settle_group(tx, group)?;
            }
            Ok(ActionOutcome::Done)
        })
    }

    pub(super) fn force_delete(self: &std::sync::Arc<Self>, caller: &Caller, id: &str) -> Result<ActionOutcome> {
        let v = self.volume(caller, id)?;
        let has_snapshots = !self.store.read(|tx| tx.snapshots(None, Some(id)))?.is_empty();
        if v.attach_status == AttachStatus::Attached || !not_migrating(v.migration_status.as_ref()) || has_snapshots {
            return Err(invalid(format!(
                "Invalid volume: Volume {id} cannot be force-deleted: it must not be attached, migrating or have \
                 snapshots (attach_status {}, migration_status {}, snapshots: {has_snapshots}).",
                v.attach_status,
                migration_text(&v)
            )));
        }
        self.delete_volume(caller, id, false, true).map(|()| ActionOutcome::Done)
    }

    pub(super) fn extend_volume_completion(&self, caller: &Caller, id: &str) -> Result<ActionOutcome> {
        let v = self.volume(caller, id)?;
        if v.status != VolumeStatus::Extending {
            return Err(invalid(format!("Invalid volume: Volume {id} is not being extended (status {}).", v.status)));
        }
        Err(ManagerError::NotImplemented(
            "os-extend_volume_completion serves drivers that extend asynchronously outside the agent; \
             ember's pools finish extends themselves."
                .to_string(),
        ))
    }
}
