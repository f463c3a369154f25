//! os-volume_upload_image and os-reimage (spec §3.17, §3.25): the image data path.
//! Every check runs before the status moves; the copy itself is a job.

use super::{ActionOutcome, invalid};
use crate::image::{self, ImageRecord, NewImage, Visibility};
use crate::manager::{Caller, Manager, ManagerError, Result};
use crate::model::{JobSpec, Volume, VolumeStatus, VolumeType};

/// A validated os-volume_upload_image body.
#[derive(Debug, Clone, PartialEq)]
pub struct UploadImage {
    pub image_name: String,
    pub force: bool,
    pub disk_format: String,
    pub container_format: String,
    pub visibility: Visibility,
    pub protected: bool,
}

/// What the 202 of an upload shows (spec §3.17).
#[derive(Debug, Clone, PartialEq)]
pub struct Uploading {
    pub volume: Volume,
    pub volume_type: Option<VolumeType>,
    pub image: ImageRecord,
}

/// The image store's view of an API caller.
pub(crate) fn image_caller(caller: &Caller) -> image::Caller<'_> {
    image::Caller { project_id: &caller.project_id, is_admin: caller.is_admin, token: None }
}

impl Manager {
    pub(super) fn upload_image(
        self: &std::sync::Arc<Self>,
        caller: &Caller,
        id: &str,
        req: UploadImage,
    ) -> Result<ActionOutcome> {
        let v = self.volume(caller, id)?;
        // enable_force_upload is off in ember: force is ignored, as upstream does by default.
        let _ = req.force;
        if v.status != VolumeStatus::Available {
            return Err(invalid(format!(
                "Invalid volume: Volume {id} status must be available, but current status is: {}.",
                v.status
            )));
        }
        if !crate::manager::DISK_FORMATS.contains(&req.disk_format.as_str()) {
            return Err(invalid(format!(
                "Invalid input received: ember uploads raw and qcow2 images; disk_format {} is not supported.",
                req.disk_format
            )));
        }
        if !["bare", "ovf"].contains(&req.container_format.as_str()) {
            return Err(invalid(format!(
                "Invalid input received: container_format {} is not supported (bare, ovf).",
                req.container_format
            )));
        }
        let vtype = self.store.read(|tx| tx.volume_type(&v.volume_type_id))?;
        if vtype.as_ref().is_some_and(|t| t.encrypted) && (req.container_format != "bare" || req.disk_format != "raw") {
            return Err(invalid(
                "Invalid input received: an encrypted volume uploads only as a raw, bare image.".to_string(),
            ));
        }
        let new = NewImage {
            name: req.image_name.clone(),
            disk_format: req.disk_format.clone(),
            container_format: req.container_format.clone(),
            visibility: req.visibility,
            protected: req.protected,
            min_disk: crate::manager::gib(v.size),
            properties: Default::default(),
        };
        // Cinder: a failure to create the image is the request's 400.
        let image = self.images.create(&image_caller(caller), &new).map_err(|e| match ManagerError::from(e) {
            ManagerError::Backend(m) => invalid(format!("Invalid input received: the image could not be created: {m}")),
            other => other,
        })?;
        let queued = self.store.write(|tx| {
            let v = self.visible(tx, caller, id)?;
            if v.status != VolumeStatus::Available {
                return Err(invalid(format!("Invalid volume: Volume {id} status must be available.")));
            }
            let mut new = v.clone();
            new.status = VolumeStatus::Uploading;
            new.previous_status = Some(v.status);
            tx.update_volume(v.status, &new)?;
            let spec =
                JobSpec::UploadImage { volume: id.to_string(), image: image.id.clone(), disk_format: req.disk_format };
            let job = self.enqueue(tx, caller, &v.project_id, spec)?;
            Ok::<_, ManagerError>((job, tx.volume(id)?.unwrap_or(new)))
        });
        let (job, volume) = match queued {
            Ok(q) => q,
            Err(e) => {
                self.discard_image(&caller.project_id, &image.id);
                return Err(e);
            }
        };
        self.start(job);
        Ok(ActionOutcome::Uploading(Box::new(Uploading { volume, volume_type: vtype, image })))
    }

    pub(super) fn reimage(
        self: &std::sync::Arc<Self>,
        caller: &Caller,
        id: &str,
        image_id: &str,
        reimage_reserved: bool,
    ) -> Result<ActionOutcome> {
        let v = self.volume(caller, id)?;
        if v.attachments.len() > 1 {
            return Err(ManagerError::Conflict(format!(
                "Volume {id} has more than one attachment; it cannot be reimaged."
            )));
        }
        let allowed = |status: VolumeStatus| {
            matches!(status, VolumeStatus::Available | VolumeStatus::Error)
                || (reimage_reserved && status == VolumeStatus::Reserved)
        };
        if !allowed(v.status) {
            return Err(invalid(format!(
                "Invalid volume: Volume {id} status must be available or error{}, but it is {}.",
                if reimage_reserved { " or reserved" } else { "" },
                v.status
            )));
        }
        let image = self.check_image(&image_caller(caller), image_id, v.size)?;
        let job = self.store.write(|tx| {
            let v = self.visible(tx, caller, id)?;
            if !allowed(v.status) || v.attachments.len() > 1 {
                return Err(invalid(format!("Invalid volume: Volume {id} changed status concurrently; try again.")));
            }
            let mut new = v.clone();
            new.status = VolumeStatus::Downloading;
            new.previous_status = Some(v.status);
            tx.update_volume(v.status, &new)?;
            let spec = JobSpec::Reimage { volume: id.to_string(), image: image.id.clone() };
            Ok::<_, ManagerError>(self.enqueue(tx, caller, &v.project_id, spec)?)
        })?;
        self.start(job);
        Ok(ActionOutcome::Done)
    }
}
