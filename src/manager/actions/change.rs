//! Actions that change the volume's bytes or type (spec §3.2, §3.4, §3.12):
//! os-extend, revert to snapshot and os-retype. Each commits its transitional
//! status and a job in one transaction; the job does the device work.

use super::{ActionOutcome, invalid, migration_text};
use crate::manager::{Caller, Manager, ManagerError, Result, gib, type_not_found};
use crate::model::{JobSpec, SnapshotStatus, VolumeStatus, not_migrating};

impl Manager {
    pub(super) fn extend(
        self: &std::sync::Arc<Self>,
        caller: &Caller,
        id: &str,
        new_size: i64,
        attached_ok: bool,
    ) -> Result<ActionOutcome> {
        let capacity = self.capacities();
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
            let type_name = crate::manager::quotas::type_name(tx, &v.volume_type_id)?;
            let delta = crate::manager::quotas::QuotaDelta {
                type_name: &type_name,
                gigabytes: new_size - v.size,
                volume_size: Some(new_size),
                ..Default::default()
            };
            self.check_quota(tx, &v.project_id, &delta)?;
            self.check_capacity(tx, &v.host, &capacity, new_size - v.size)?;
            let mut new = v.clone();
            new.status = VolumeStatus::Extending;
            new.previous_status = Some(v.status);
            tx.update_volume(v.status, &new)?;
            let spec = JobSpec::ExtendVolume { volume: id.to_string(), new_size_gib: gib(new_size) };
            Ok(self.enqueue(tx, caller, &v.project_id, spec)?)
        })?;
        self.start(job);
        Ok(ActionOutcome::Done)
    }

    pub(super) fn revert(
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
            new.previous_status = Some(v.status);
            tx.update_volume(v.status, &new)?;
            let mut snap = latest.clone();
            snap.status = SnapshotStatus::Restoring;
            tx.update_snapshot(latest.status, &snap)?;
            let spec = JobSpec::RevertVolume { volume: id.to_string(), snapshot: snapshot_id };
            Ok(self.enqueue(tx, caller, &v.project_id, spec)?)
        })?;
        self.start(job);
        Ok(ActionOutcome::Done)
    }

    pub(super) fn retype(
        self: &std::sync::Arc<Self>,
        caller: &Caller,
        id: &str,
        new_type: &str,
        on_demand: bool,
    ) -> Result<ActionOutcome> {
        let capacities = self.capacities();
        let remote = self.remote_pool_for_retype(caller, new_type);
        let job = self.store.write(|tx| {
            let v = self.visible(tx, caller, id)?;
            let target = crate::manager::types::visible_type(tx, caller, new_type)?
                .ok_or_else(|| type_not_found(new_type))?;
            if !matches!(v.status, VolumeStatus::Available | VolumeStatus::InUse)
                || !not_migrating(v.migration_status.as_ref())
            {
                return Err(invalid(format!(
                    "Invalid volume: Volume {id} status must be available or in-use and not migrating to retype, \
                     but it is {} (migration status {}).",
                    v.status,
                    migration_text(&v)
                )));
            }
            if target.id == v.volume_type_id {
                return Err(invalid("Invalid input received: Retype requires a different volume type."));
            }
            // Cinder's conditional update expects no group: a member's type is
            // one the group allows, and must stay so.
            if let Some(group) = &v.group_id {
                return Err(invalid(format!(
                    "Invalid volume: Volume {id} is part of group {group}; retype needs it out of the group."
                )));
            }
            if target.multiattach() != v.multiattach && v.status != VolumeStatus::Available {
                return Err(invalid(
                    "Invalid volume: Retyping to or from a multiattach type is only possible while the volume is available.",
                ));
            }
            // A type another pool serves needs the volume moved there.
            let destination = self.retype_destination(&v, &target, remote.clone())?;
            if destination.is_some() && !on_demand {
                return Err(invalid(format!(
                    "Invalid input received: Retype to type {} needs a migration to another pool, but \
                     migration_policy is 'never'.",
                    target.name
                )));
            }
            // The totals do not change; the new type's own quotas must hold it.
            let delta = crate::manager::quotas::QuotaDelta {
                type_name: &target.name,
                volumes: 1,
                gigabytes: v.size,
                per_type_only: true,
                ..Default::default()
            };
            self.check_quota(tx, &v.project_id, &delta)?;
            if let Some(destination) = destination {
                super::super::migration::check_detached(&v)?;
                if !tx.snapshots(None, Some(id))?.is_empty() {
                    return Err(invalid(format!(
                        "Invalid volume: Volume {id} has snapshots; a retype that moves it to another pool needs \
                         none."
                    )));
                }
                use super::super::migration::Destination;
                return match destination {
                    Destination::Local(host) => {
                        let capacities = &capacities;
                        self.begin_migration(tx, caller, &v, &host, Some(&target), VolumeStatus::Retyping, capacities)
                    }
                    Destination::Peer((peer, host)) => {
                        self.begin_peer_migration(tx, caller, &v, (&peer, &host), Some(&target))
                    }
                };
            }
            let mut new = v.clone();
            new.status = VolumeStatus::Retyping;
            new.previous_status = Some(v.status);
            new.multiattach = target.multiattach();
            tx.update_volume(v.status, &new)?;
            let spec = JobSpec::RetypeVolume { volume: id.to_string(), new_type: target.id };
            Ok(self.enqueue(tx, caller, &v.project_id, spec)?)
        })?;
        self.start(job);
        Ok(ActionOutcome::Done)
    }
}
