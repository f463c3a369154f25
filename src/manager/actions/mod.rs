//! The 24 volume actions (spec §3): preconditions and transitions. Bodies arrive
//! validated by the API's schemas; policy has been checked there too.
//!
//! One file per theme, each action one method:
//! - `attach.rs`: attach, detach, reserve, unreserve, begin/roll detaching, force detach
//! - `metadata.rs`: image metadata, bootable, read-only flag
//! - `change.rs`: extend, revert to snapshot, retype (work on the volume's bytes or type)
//! - `admin.rs`: reset status, force delete, migration and its completion, extend completion
//! - `connection.rs`: initialize and terminate connection
//! - `image.rs`: upload to image, reimage

mod admin;
mod attach;
mod change;
mod connection;
mod image;
pub(crate) use image::image_caller;
pub use image::{UploadImage, Uploading};
mod metadata;

use std::collections::BTreeMap;

use super::jobs::Outcome;
use super::{Caller, Manager, ManagerError, Result};
use crate::model::{AttachMode, AttachStatus, Attachment, MigrationStatus, Volume, VolumeStatus};
use crate::store::Tx;

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
        migration_status: Option<Option<MigrationStatus>>,
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
        /// Null (or absent) means every initiator of the volume.
        connector: serde_json::Value,
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
    UploadImage(image::UploadImage),
    Reserve,
    Unreserve,
    BeginDetaching,
    RollDetaching,
    TerminateConnection {
        connector: serde_json::Value,
    },
    InitializeConnection {
        connector: serde_json::Value,
    },
    UpdateReadonly(bool),
    Reimage {
        image_id: String,
        reimage_reserved: bool,
    },
    ExtendVolumeCompletion,
}

/// What an action answers besides its status code.
#[derive(Debug, Clone, PartialEq)]
pub enum ActionOutcome {
    Done,
    Metadata(BTreeMap<String, String>),
    /// os-initialize_connection: `connection_info` (spec §4).
    Connection(serde_json::Value),
    /// os-volume_upload_image: what its 202 shows.
    Uploading(Box<image::Uploading>),
    /// os-migrate_volume_completion: the id that survives.
    SaveVolumeId(String),
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
            A::SetImageMetadata(map) => self.set_image_metadata(caller, id, map),
            A::UnsetImageMetadata { key } => self.unset_image_metadata(caller, id, &key),
            A::ShowImageMetadata => self.show_image_metadata(caller, id),
            A::Attach { instance_uuid, host_name, mountpoint, mode } => {
                self.attach(caller, id, instance_uuid, host_name, mountpoint, mode)
            }
            A::Detach { attachment_id } => self.detach(caller, id, attachment_id),
            A::Unmanage => self.unmanage_volume(caller, id),
            A::ForceDetach { attachment_id, connector } => self.force_detach(caller, id, attachment_id, &connector),
            A::Retype { new_type, on_demand } => self.retype(caller, id, &new_type, on_demand),
            A::MigrateVolume { destination } => self.migrate_volume(caller, id, &destination),
            A::MigrateVolumeCompletion { new_volume, error } => {
                self.migrate_volume_completion(caller, id, &new_volume, error).map(ActionOutcome::SaveVolumeId)
            }
            A::ForceDelete => self.force_delete(caller, id),
            A::SetBootable(bootable) => self.set_bootable(caller, id, bootable),
            A::UploadImage(req) => self.upload_image(caller, id, req),
            A::Reserve => self.reserve(caller, id),
            A::Unreserve => self.unreserve(caller, id),
            A::BeginDetaching => self.begin_detaching(caller, id),
            A::RollDetaching => self.roll_detaching(caller, id),
            A::TerminateConnection { connector } => self.terminate_connection(caller, id, &connector),
            A::InitializeConnection { connector } => self.initialize_connection(caller, id, &connector),
            A::UpdateReadonly(readonly) => self.update_readonly(caller, id, readonly),
            A::Reimage { image_id, reimage_reserved } => self.reimage(caller, id, &image_id, reimage_reserved),
            A::ExtendVolumeCompletion => self.extend_volume_completion(caller, id),
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

pub(super) fn invalid(msg: impl Into<String>) -> ManagerError {
    ManagerError::Invalid(msg.into())
}

/// The 409 of the attachment-deletion guard (Cinder bug #2004555).
fn nova_conflict(instance: Option<&str>) -> ManagerError {
    ManagerError::Conflict(format!(
        "ConflictNovaUsingAttachment: Detach volume from instance {} using the Compute API",
        instance.unwrap_or("None")
    ))
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

fn set_status(tx: &Tx, v: &Volume, status: VolumeStatus) -> Result<ActionOutcome> {
    let mut new = v.clone();
    new.status = status;
    tx.update_volume(v.status, &new)?;
    Ok(ActionOutcome::Done)
}

/// Statuses in which device work is under way; attaching or exporting there
/// would race it.
pub(super) fn busy(status: VolumeStatus) -> bool {
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

/// The outcome of a job run before the action answers, as the action's result.
pub(super) fn ran(outcome: Outcome, what: &str) -> Result<()> {
    match outcome {
        Outcome::Done => Ok(()),
        Outcome::Failed(f) => Err(ManagerError::Backend(format!("{what}: {}.", f.error.user_reason()))),
        Outcome::Cancelled => Err(ManagerError::Conflict(format!("{what}: cancelled by os-reset_status."))),
        Outcome::Interrupted => Err(ManagerError::Backend(format!("{what}: the agent is shutting down."))),
    }
}

fn refuse_maintenance(v: &Volume) -> Result<()> {
    if v.status == VolumeStatus::Maintenance {
        return Err(invalid(format!("Invalid volume: Volume {} is in maintenance.", v.id)));
    }
    Ok(())
}

/// "None" where Cinder prints a missing migration status.
fn migration_text(v: &Volume) -> String {
    v.migration_status.as_ref().map_or_else(|| "None".to_string(), ToString::to_string)
}
