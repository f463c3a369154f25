//! os-volume_upload_image and os-reimage (spec §3.17, §3.25): the image data path.

use super::{ActionOutcome, invalid};
use crate::manager::{Caller, Manager, ManagerError, Result};
use crate::model::VolumeStatus;

impl Manager {
    pub(super) fn upload_image(&self, caller: &Caller, id: &str, force: bool) -> Result<ActionOutcome> {
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

    pub(super) fn reimage(&self, caller: &Caller, id: &str, reimage_reserved: bool) -> Result<ActionOutcome> {
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
}
