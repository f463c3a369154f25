//! Synchronous changes to what the volume says about itself (spec §3.5–3.7, §3.16,
//! §3.24): image metadata, the bootable flag and the read-only flag.

use std::collections::BTreeMap;

use super::{ActionOutcome, invalid, refuse_maintenance};
use crate::manager::{Caller, Manager, ManagerError, Result, check_metadata_limits};
use crate::model::{Volume, VolumeStatus};
use crate::store::MetaKind;

fn refuse_maintenance_or_uploading(v: &Volume) -> Result<()> {
    if matches!(v.status, VolumeStatus::Maintenance | VolumeStatus::Uploading) {
        return Err(invalid(format!(
            "Invalid volume: Volume {} status must not be maintenance or uploading, but it is {}.",
            v.id, v.status
        )));
    }
    Ok(())
}

impl Manager {
    pub(super) fn set_image_metadata(
        &self,
        caller: &Caller,
        id: &str,
        map: BTreeMap<String, String>,
    ) -> Result<ActionOutcome> {
        self.change(caller, id, |tx, v| {
            refuse_maintenance_or_uploading(v)?;
            let mut merged = v.image_metadata.clone();
            merged.extend(map.iter().map(|(k, val)| (k.clone(), val.clone())));
            check_metadata_limits(&format!("Image metadata of volume {id}"), &merged)?;
            tx.set_volume_meta(id, MetaKind::Image, &map, false)?;
            Ok(ActionOutcome::Metadata(tx.volume(id)?.map(|v| v.image_metadata).unwrap_or_default()))
        })
    }

    pub(super) fn unset_image_metadata(&self, caller: &Caller, id: &str, key: &str) -> Result<ActionOutcome> {
        self.change(caller, id, |tx, v| {
            if !v.image_metadata.contains_key(key) {
                return Err(ManagerError::NotFound(format!(
                    "Glance metadata for volume/snapshot {id} cannot be found."
                )));
            }
            refuse_maintenance_or_uploading(v)?;
            tx.delete_volume_meta(id, MetaKind::Image, key)?;
            Ok(ActionOutcome::Done)
        })
    }

    pub(super) fn show_image_metadata(&self, caller: &Caller, id: &str) -> Result<ActionOutcome> {
        Ok(ActionOutcome::Metadata(self.volume(caller, id)?.image_metadata))
    }

    pub(super) fn set_bootable(&self, caller: &Caller, id: &str, bootable: bool) -> Result<ActionOutcome> {
        self.change(caller, id, |tx, v| {
            refuse_maintenance(v)?;
            let mut new = v.clone();
            new.bootable = bootable;
            tx.update_volume(v.status, &new)?;
            Ok(ActionOutcome::Done)
        })
    }

    pub(super) fn update_readonly(&self, caller: &Caller, id: &str, readonly: bool) -> Result<ActionOutcome> {
        self.change(caller, id, |tx, v| {
            if v.status != VolumeStatus::Available {
                return Err(invalid(format!(
                    "Invalid volume: Volume {id} status must be available to update readonly flag, but it is {}.",
                    v.status
                )));
            }
            let flag = if readonly { "True" } else { "False" };
            tx.set_volume_meta(id, MetaKind::Admin, &BTreeMap::from([("readonly".into(), flag.into())]), false)?;
            Ok(ActionOutcome::Done)
        })
    }
}
