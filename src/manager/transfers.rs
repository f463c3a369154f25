//! Volume transfers (`cinder/transfer/api.py`): the owner offers an available
//! volume (status `awaiting-transfer`), any project's member accepts it with the
//! transfer's id and auth key, and the volume (with its snapshots, unless the
//! offer said `no_snapshots`) becomes the acceptor's, within the acceptor's quotas.

use super::quotas::{QuotaDelta, type_name};
use super::{Caller, Manager, ManagerError, Result};
use crate::model::{SnapshotStatus, Transfer, Volume, VolumeStatus, now};

fn transfer_not_found(id: &str) -> ManagerError {
    ManagerError::NotFound(format!("Transfer {id} could not be found."))
}

/// Cinder's `volume_transfer_key_length`.
const AUTH_KEY_LENGTH: usize = 16;

impl Manager {
    pub fn create_transfer(
        &self,
        caller: &Caller,
        volume_id: &str,
        name: Option<String>,
        no_snapshots: bool,
    ) -> Result<Transfer> {
        let auth_key = crate::target::chap_string(AUTH_KEY_LENGTH)
            .map_err(|e| ManagerError::Backend(format!("read random bytes for the auth key: {e}")))?;
        self.store.write(|tx| {
            let v = self.visible(tx, caller, volume_id)?;
            if v.status != VolumeStatus::Available {
                return Err(ManagerError::Invalid("Invalid volume: status must be available".to_string()));
            }
            if !no_snapshots {
                if let Some(s) =
                    tx.snapshots(None, Some(volume_id))?.iter().find(|s| s.status != SnapshotStatus::Available)
                {
                    return Err(ManagerError::Invalid(format!(
                        "Invalid snapshot: snapshot: {} status must be available",
                        s.id
                    )));
                }
            }
            let t = Transfer {
                id: uuid::Uuid::new_v4().to_string(),
                volume_id: volume_id.to_string(),
                project_id: v.project_id.clone(),
                user_id: caller.user_id.clone(),
                name: name.clone(),
                auth_key: auth_key.clone(),
                no_snapshots,
                created_at: now(),
            };
            tx.update_volume(v.status, &Volume { status: VolumeStatus::AwaitingTransfer, ..v.clone() })?;
            tx.insert_transfer(&t)?;
            Ok(t)
        })
    }

    /// The caller's project's open transfers (every project's for an admin with
    /// `all_tenants`).
    pub fn transfers(&self, caller: &Caller, all: bool) -> Result<Vec<Transfer>> {
        let project = (!(caller.is_admin && all)).then_some(caller.project_id.as_str());
        Ok(self.store.read(|tx| tx.transfers(project))?)
    }

    pub fn transfer(&self, caller: &Caller, id: &str) -> Result<Transfer> {
        self.store
            .read(|tx| tx.transfer(id))?
            .filter(|t| caller.is_admin || t.project_id == caller.project_id)
            .ok_or_else(|| transfer_not_found(id))
    }

    /// Withdraws an offer: the volume is available again.
    pub fn delete_transfer(&self, caller: &Caller, id: &str) -> Result<()> {
        self.store.write(|tx| {
            let t = tx
                .transfer(id)?
                .filter(|t| caller.is_admin || t.project_id == caller.project_id)
                .ok_or_else(|| transfer_not_found(id))?;
            if let Some(v) = tx.volume(&t.volume_id)?.filter(|v| v.status == VolumeStatus::AwaitingTransfer) {
                tx.update_volume(v.status, &Volume { status: VolumeStatus::Available, ..v.clone() })?;
            }
            tx.delete_transfer(id)?;
            Ok(())
        })
    }

    /// Takes the volume into the caller's project. The transfer is found by id
    /// whatever its project (that is the point); a wrong key is 400.
    pub fn accept_transfer(&self, caller: &Caller, id: &str, auth_key: &str) -> Result<Transfer> {
        self.store.write(|tx| {
            let t = tx.transfer(id)?.ok_or_else(|| transfer_not_found(id))?;
            if !t.key_matches(auth_key) {
                return Err(ManagerError::Invalid(format!(
                    "Invalid auth key: Attempt to transfer {id} with invalid auth key."
                )));
            }
            let v = tx.volume(&t.volume_id)?.ok_or_else(|| super::volume_not_found(&t.volume_id))?;
            if v.status != VolumeStatus::AwaitingTransfer {
                return Err(ManagerError::Invalid(format!(
                    "Invalid volume: Volume {} status must be awaiting-transfer, but it is {}.",
                    v.id, v.status
                )));
            }
            let snapshots = if t.no_snapshots { Vec::new() } else { tx.snapshots(None, Some(&v.id))? };
            let type_name = type_name(tx, &v.volume_type_id)?;
            let snapshot_count = i64::try_from(snapshots.len()).unwrap_or(i64::MAX);
            let delta = QuotaDelta {
                type_name: &type_name,
                volumes: 1,
                snapshots: snapshot_count,
                gigabytes: v.size + snapshots.iter().map(|s| s.volume_size).sum::<i64>(),
                volume_size: Some(v.size),
                ..QuotaDelta::default()
            };
            self.check_quota(tx, &caller.project_id, &delta)?;
            let moved = Volume {
                status: VolumeStatus::Available,
                project_id: caller.project_id.clone(),
                user_id: caller.user_id.clone(),
                ..v.clone()
            };
            tx.update_volume(v.status, &moved)?;
            for s in &snapshots {
                tx.move_snapshot(&s.id, &caller.project_id, &caller.user_id)?;
            }
            tx.delete_transfer(id)?;
            tracing::info!(transfer = id, volume = %v.id, from = %t.project_id, to = %caller.project_id, "volume transferred");
            Ok(t)
        })
    }
}
