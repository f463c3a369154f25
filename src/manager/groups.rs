//! Generic volume groups (`cinder/group/api.py`, the generic implementation):
//! group types and their specs, groups of volumes, group snapshots, and groups
//! made from a group snapshot or another group.
//!
//! A group holds no device of its own: its members are ordinary volumes and
//! snapshots, made and removed by the ordinary volume and snapshot jobs
//! (`jobs.rs`). A group or group snapshot waiting on its members (`creating`,
//! `deleting`) is settled by `settle`, in the transaction that ends each member's
//! job: once no member is still busy it becomes available (or error, if a member
//! failed), or, being deleted with no member left, goes. Work without members
//! (create, update, an empty delete) changes the records in one transaction.

use std::collections::BTreeMap;

use super::jobs::Pending;
use super::{Caller, CreateSnapshot, CreateVolume, Manager, ManagerError, Result};
use crate::model::{
    AttachStatus, Group, GroupSnapshot, GroupSnapshotStatus, GroupStatus, GroupType, JobSpec, SnapshotStatus,
    VolumeStatus, VolumeType, now,
};
use crate::store::{Specs, StoreError, Tx};

pub fn group_type_not_found(id: &str) -> ManagerError {
    ManagerError::NotFound(format!("Group type {id} could not be found."))
}

pub fn group_not_found(id: &str) -> ManagerError {
    ManagerError::NotFound(format!("Group {id} could not be found."))
}

pub fn group_snapshot_not_found(id: &str) -> ManagerError {
    ManagerError::NotFound(format!("GroupSnapshot {id} could not be found."))
}

/// A validated `POST /groups` body.
#[derive(Debug, Clone, Default)]
pub struct CreateGroup {
    pub name: Option<String>,
    pub description: Option<String>,
    pub group_type: String,
    pub volume_types: Vec<String>,
    pub availability_zone: Option<String>,
}

/// What `create-from-src` copies.
#[derive(Debug, Clone)]
pub enum GroupSource {
    GroupSnapshot(String),
    Group(String),
}

/// A validated `PUT /groups/{id}` body (volume ids already split).
#[derive(Debug, Clone, Default)]
pub struct UpdateGroup {
    pub name: Option<String>,
    pub description: Option<String>,
    pub add_volumes: Vec<String>,
    pub remove_volumes: Vec<String>,
}

/// Cinder's VALID_ADD_VOL_TO_GROUP_STATUS and VALID_REMOVE_VOL_FROM_GROUP_STATUS.
const ADDABLE: &[VolumeStatus] = &[VolumeStatus::Available, VolumeStatus::InUse];
const REMOVABLE: &[VolumeStatus] =
    &[VolumeStatus::Available, VolumeStatus::InUse, VolumeStatus::Error, VolumeStatus::ErrorDeleting];

fn status_list<T: std::fmt::Display>(all: &[T]) -> String {
    format!("[{}]", all.iter().map(|s| format!("'{s}'")).collect::<Vec<_>>().join(", "))
}

impl Manager {
    // ---- group types -----------------------------------------------------------

    /// Public types, and for an admin the private ones too (ember has no group
    /// type access lists: a private group type is the admins').
    pub fn group_types(&self, caller: &Caller) -> Result<Vec<GroupType>> {
        let all = self.store.read(|tx| tx.group_types())?;
        Ok(all.into_iter().filter(|t| t.is_public || caller.is_admin).collect())
    }

    pub fn group_type(&self, caller: &Caller, id: &str) -> Result<GroupType> {
        self.store.read(|tx| visible_group_type(tx, caller, id))
    }

    pub fn create_group_type(
        &self,
        name: &str,
        description: Option<String>,
        is_public: bool,
        specs: &BTreeMap<String, String>,
    ) -> Result<GroupType> {
        self.store.write(|tx| {
            if tx.group_types()?.iter().any(|t| t.name == name) {
                return Err(ManagerError::Conflict(format!("Group Type {name} already exists.")));
            }
            let t = GroupType {
                id: uuid::Uuid::new_v4().to_string(),
                name: name.to_string(),
                description,
                is_public,
                group_specs: specs.clone(),
            };
            tx.save_group_type(&t)?;
            tx.set_specs(Specs::GroupType, &t.id, specs)?;
            Ok(t)
        })
    }

    pub fn update_group_type(
        &self,
        id: &str,
        name: Option<String>,
        description: Option<String>,
        is_public: Option<bool>,
    ) -> Result<GroupType> {
        self.store.write(|tx| {
            let mut t = tx.group_type(id)?.filter(|t| t.id == id).ok_or_else(|| group_type_not_found(id))?;
            if let Some(name) = name {
                if tx.group_types()?.iter().any(|other| other.name == name && other.id != id) {
                    return Err(ManagerError::Conflict(format!("Group Type {name} already exists.")));
                }
                t.name = name;
            }
            if description.is_some() {
                t.description = description;
            }
            if let Some(is_public) = is_public {
                t.is_public = is_public;
            }
            tx.save_group_type(&t)?;
            Ok(t)
        })
    }

    /// Refused (400, as Cinder answers GroupTypeInUse) while a group has the type.
    pub fn delete_group_type(&self, id: &str) -> Result<()> {
        self.store.write(|tx| {
            let t = tx.group_type(id)?.filter(|t| t.id == id).ok_or_else(|| group_type_not_found(id))?;
            if tx.group_type_in_use(&t.id)? {
                return Err(ManagerError::Invalid("Target group type is still in use.".to_string()));
            }
            tx.delete_group_type(&t.id)?;
            Ok(())
        })
    }

    pub fn set_group_specs(&self, id: &str, specs: &BTreeMap<String, String>) -> Result<()> {
        self.store.write(|tx| {
            let t = tx.group_type(id)?.filter(|t| t.id == id).ok_or_else(|| group_type_not_found(id))?;
            tx.set_specs(Specs::GroupType, &t.id, specs)?;
            Ok(())
        })
    }

    pub fn delete_group_spec(&self, id: &str, key: &str) -> Result<()> {
        self.store.write(|tx| {
            let t = tx.group_type(id)?.filter(|t| t.id == id).ok_or_else(|| group_type_not_found(id))?;
            if !tx.delete_spec(Specs::GroupType, &t.id, key)? {
                return Err(ManagerError::NotFound(format!("Group Type {id} has no specs with key {key}.")));
            }
            Ok(())
        })
    }

    // ---- groups ----------------------------------------------------------------

    pub fn groups(&self, caller: &Caller, all_projects: bool) -> Result<Vec<Group>> {
        let project = (!(all_projects && caller.is_admin)).then_some(caller.project_id.as_str());
        Ok(self.store.read(|tx| tx.groups(project))?)
    }

    pub fn group(&self, caller: &Caller, id: &str) -> Result<Group> {
        self.store.read(|tx| visible_group(tx, caller, id))
    }

    pub fn group_volume_ids(&self, id: &str) -> Result<Vec<String>> {
        Ok(self.store.read(|tx| tx.group_volume_ids(id))?)
    }

    /// A new, empty group: nothing on the devices, so it is available at once.
    pub fn create_group(&self, caller: &Caller, req: CreateGroup) -> Result<Group> {
        self.check_group_zone(req.availability_zone.as_deref())?;
        self.store.write(|tx| {
            let gtype = visible_group_type(tx, caller, &req.group_type)?;
            let mut volume_types = Vec::new();
            for name in &req.volume_types {
                let t = super::types::visible_type(tx, caller, name)?
                    .ok_or_else(|| ManagerError::NotFound(format!("Volume type {name} could not be found.")))?;
                if !volume_types.contains(&t.id) {
                    volume_types.push(t.id);
                }
            }
            let group =
                self.new_group(caller, GroupStatus::Available, &gtype.id, volume_types, &req.name, &req.description);
            self.check_group_quota(tx, &caller.project_id)?;
            tx.insert_group(&group)?;
            Ok(group)
        })
    }

    /// `create-from-src`: a new group of the source's types whose volumes are made
    /// from the group snapshot's snapshots or cloned from the source group's
    /// volumes, each by the ordinary create job; the group is `creating` until the
    /// last of them ends (`settle`).
    pub fn create_group_from_src(
        self: &std::sync::Arc<Self>,
        caller: &Caller,
        source: GroupSource,
        name: Option<String>,
        description: Option<String>,
    ) -> Result<Group> {
        let capacity = self.capacities();
        let (group, jobs) = self.store.write(|tx| {
            let (origin, members) = match &source {
                GroupSource::GroupSnapshot(id) => {
                    let gs = visible_group_snapshot(tx, caller, id)?;
                    if gs.status != GroupSnapshotStatus::Available {
                        return Err(ManagerError::Invalid(format!(
                            "Invalid GroupSnapshot: Group snapshot {id} status must be available, but it is {}.",
                            gs.status
                        )));
                    }
                    let snaps = tx.group_snapshot_members(id)?;
                    if snaps.is_empty() {
                        return Err(ManagerError::Invalid(
                            "Invalid Group: Group snapshot is empty. No group will be created.".to_string(),
                        ));
                    }
                    let origin = tx.group(&gs.group_id)?.ok_or_else(|| group_not_found(&gs.group_id))?;
                    let members: Vec<CreateVolume> = snaps
                        .iter()
                        .map(|s| CreateVolume {
                            size: Some(s.volume_size),
                            volume_type: Some(s.volume_type_id.clone()),
                            snapshot_id: Some(s.id.clone()),
                            ..CreateVolume::default()
                        })
                        .collect();
                    (origin, members)
                }
                GroupSource::Group(id) => {
                    let origin = visible_group(tx, caller, id)?;
                    if origin.status != GroupStatus::Available {
                        return Err(ManagerError::Invalid(format!(
                            "Invalid Group: Source group {id} status must be available, but it is {}.",
                            origin.status
                        )));
                    }
                    let mut members = Vec::new();
                    for vid in tx.group_volume_ids(id)? {
                        let v = tx.volume(&vid)?.ok_or_else(|| super::volume_not_found(&vid))?;
                        members.push(CreateVolume {
                            size: Some(v.size),
                            volume_type: Some(v.volume_type_id.clone()),
                            source_volid: Some(v.id.clone()),
                            ..CreateVolume::default()
                        });
                    }
                    if members.is_empty() {
                        return Err(ManagerError::Invalid(
                            "Invalid Group: Source Group is empty. No group will be created.".to_string(),
                        ));
                    }
                    (origin, members)
                }
            };
            let mut group = self.new_group(
                caller,
                GroupStatus::Creating,
                &origin.group_type_id,
                origin.volume_types.clone(),
                &name,
                &description,
            );
            match &source {
                GroupSource::GroupSnapshot(id) => group.group_snapshot_id = Some(id.clone()),
                GroupSource::Group(id) => group.source_group_id = Some(id.clone()),
            }
            self.check_group_quota(tx, &caller.project_id)?;
            tx.insert_group(&group)?;
            let mut jobs = Vec::new();
            for member in members {
                let req = CreateVolume { group_id: Some(group.id.clone()), ..member };
                let (_, job) = self.create_volume_in(tx, caller, &req, &capacity)?;
                jobs.extend(job);
            }
            // Members the scheduler left in error have no job to settle the group.
            settle_group(tx, &group.id)?;
            Ok((tx.group(&group.id)?.unwrap_or(group), jobs))
        })?;
        for job in jobs {
            self.start(job);
        }
        Ok(group)
    }

    /// Name, description, and members added or removed (the record only: a
    /// generic group has nothing on the devices). Cinder's checks and texts.
    pub fn update_group(&self, caller: &Caller, id: &str, req: UpdateGroup) -> Result<()> {
        self.store.write(|tx| {
            let group = visible_group(tx, caller, id)?;
            let both: Vec<&String> = req.add_volumes.iter().filter(|v| req.remove_volumes.contains(v)).collect();
            if !both.is_empty() {
                return Err(ManagerError::Invalid(format!(
                    "Invalid volume: UUIDs {both:?} are in both add and remove volume list."
                )));
            }
            let members = tx.group_volume_ids(id)?;
            let add: Vec<&String> = req.add_volumes.iter().filter(|v| !members.contains(v)).collect();
            for vid in &add {
                self.check_addable(tx, &group, vid)?;
            }
            for vid in &req.remove_volumes {
                check_removable(tx, &group, &members, vid)?;
            }
            let name = req.name.clone().filter(|n| Some(n) != group.name.as_ref());
            let description = req.description.clone().filter(|d| Some(d) != group.description.as_ref());
            if name.is_none() && description.is_none() && add.is_empty() && req.remove_volumes.is_empty() {
                return Err(ManagerError::Invalid(format!(
                    "Invalid Group: Cannot update group {id} because no valid name, description, add_volumes, or \
                     remove_volumes were provided."
                )));
            }
            let changes_members = !add.is_empty() || !req.remove_volumes.is_empty();
            if changes_members && group.status != GroupStatus::Available {
                return Err(ManagerError::Invalid("Invalid Group: Group status must be available.".to_string()));
            }
            let mut new = group.clone();
            new.name = name.or(group.name.clone());
            new.description = description.or(group.description.clone());
            if !changes_members {
                // Cinder: a name or description update leaves the group available.
                new.status = GroupStatus::Available;
            }
            tx.update_group(group.status, &new)?;
            for vid in add {
                tx.set_volume_group(vid, Some(id))?;
            }
            for vid in &req.remove_volumes {
                tx.set_volume_group(vid, None)?;
            }
            Ok(())
        })
    }

    /// The group's `delete` action. With `delete_volumes` its volumes are deleted
    /// by the ordinary delete job and the group goes with the last of them; without
    /// it a group with volumes is refused.
    pub fn delete_group(self: &std::sync::Arc<Self>, caller: &Caller, id: &str, delete_volumes: bool) -> Result<()> {
        let jobs = self.store.write(|tx| {
            let group = visible_group(tx, caller, id)?;
            if !delete_volumes && !matches!(group.status, GroupStatus::Available | GroupStatus::Error) {
                return Err(ManagerError::Invalid(format!(
                    "Invalid Group: Group status must be available or error, but current status is: {}",
                    group.status
                )));
            }
            if !tx.group_snapshots(None, Some(id))?.is_empty() {
                return Err(ManagerError::Invalid("Invalid Group: Group has existing snapshots.".to_string()));
            }
            let members = tx.group_volume_ids(id)?;
            if !members.is_empty() && !delete_volumes {
                return Err(ManagerError::Invalid(format!(
                    "Invalid Group: Group {id} still contains volumes. The delete-volumes flag is required to delete \
                     it."
                )));
            }
            if tx
                .groups(None)?
                .iter()
                .any(|g| g.status == GroupStatus::Creating && g.source_group_id.as_deref() == Some(id))
            {
                return Err(ManagerError::Invalid(format!(
                    "Invalid Group: Cannot delete group {id}. It is the source for an ongoing group creation."
                )));
            }
            let mut jobs = Vec::new();
            for vid in &members {
                jobs.push(self.delete_member_volume(tx, caller, id, vid)?);
            }
            if members.is_empty() {
                tx.delete_group(id)?;
            } else {
                tx.update_group(group.status, &Group { status: GroupStatus::Deleting, ..group.clone() })?;
            }
            Ok::<_, ManagerError>(jobs)
        })?;
        for job in jobs {
            self.start(job);
        }
        Ok(())
    }

    /// One member of a group being deleted: Cinder refuses attached members and
    /// members with snapshots; ember also those busy with other work.
    fn delete_member_volume(&self, tx: &Tx, caller: &Caller, group_id: &str, vid: &str) -> Result<Pending> {
        let v = tx.volume(vid)?.ok_or_else(|| super::volume_not_found(vid))?;
        if v.attach_status == AttachStatus::Attached {
            return Err(ManagerError::Invalid(format!(
                "Invalid Group: Volume in group {group_id} is attached. Need to detach first."
            )));
        }
        if !tx.snapshots(None, Some(vid))?.is_empty() {
            return Err(ManagerError::Invalid(
                "Invalid Group: Volume in group still has dependent snapshots.".to_string(),
            ));
        }
        if !matches!(v.status, VolumeStatus::Available | VolumeStatus::Error | VolumeStatus::ErrorDeleting) {
            return Err(ManagerError::Invalid(format!(
                "Invalid Group: Volume {vid} in group {group_id} must be available or in error to be deleted, but \
                 it is {}.",
                v.status
            )));
        }
        self.assert_not_frozen(tx)?;
        let new = crate::model::Volume { status: VolumeStatus::Deleting, previous_status: Some(v.status), ..v.clone() };
        tx.update_volume(v.status, &new)?;
        tx.delete_export(vid)?;
        let spec = JobSpec::DeleteVolume { volume: vid.to_string(), snapshots: Vec::new() };
        Ok(self.enqueue(tx, caller, &v.project_id, spec)?)
    }

    /// Admin `reset_status` (3.20): any of Cinder's group statuses.
    pub fn reset_group_status(&self, caller: &Caller, id: &str, status: &str) -> Result<()> {
        let status: GroupStatus = status.parse().map_err(|_| {
            ManagerError::Invalid(format!(
                "Group status: {status} is invalid, valid statuses are: {}.",
                status_list(GroupStatus::ALL)
            ))
        })?;
        self.store.write(|tx| {
            let group = visible_group(tx, caller, id)?;
            tx.update_group(group.status, &Group { status, ..group.clone() })?;
            Ok(())
        })
    }

    /// A volume created into `group_id` must be of one of the group's types, and
    /// the group must not be on its way out.
    pub(super) fn check_group_member_type(
        &self,
        tx: &Tx,
        caller: &Caller,
        group_id: &str,
        vtype: &VolumeType,
    ) -> Result<()> {
        let group = visible_group(tx, caller, group_id)?;
        if matches!(group.status, GroupStatus::Deleting | GroupStatus::ErrorDeleting | GroupStatus::Deleted) {
            return Err(ManagerError::Invalid(format!(
                "Invalid Group: Group {group_id} status must not be {}.",
                group.status
            )));
        }
        if !group.volume_types.contains(&vtype.id) {
            return Err(ManagerError::Invalid(format!(
                "Invalid input received: Invalid volume_type provided: {} (requested type must be supported by this \
                 group).",
                vtype.name
            )));
        }
        Ok(())
    }

    fn check_addable(&self, tx: &Tx, group: &Group, vid: &str) -> Result<()> {
        let gid = &group.id;
        let refuse = |why: String| {
            Err(ManagerError::Invalid(format!("Invalid volume: Cannot add volume {vid} to group {gid} {why}")))
        };
        let Some(v) = tx.volume(vid)? else {
            return refuse("because volume cannot be found.".to_string());
        };
        if let Some(other) = &v.group_id {
            return refuse(format!("because it is already in group {other}."));
        }
        if v.project_id != group.project_id {
            return refuse("as they belong to different projects.".to_string());
        }
        if !group.volume_types.contains(&v.volume_type_id) {
            return refuse(format!("because volume type {} is not supported by the group.", v.volume_type_id));
        }
        if !ADDABLE.contains(&v.status) {
            return refuse(format!(
                "because volume is in an invalid state: {}. Valid states are: {}.",
                v.status,
                status_list(ADDABLE)
            ));
        }
        Ok(())
    }

    fn new_group(
        &self,
        caller: &Caller,
        status: GroupStatus,
        group_type_id: &str,
        volume_types: Vec<String>,
        name: &Option<String>,
        description: &Option<String>,
    ) -> Group {
        Group {
            id: uuid::Uuid::new_v4().to_string(),
            project_id: caller.project_id.clone(),
            user_id: caller.user_id.clone(),
            name: name.clone(),
            description: description.clone(),
            status,
            group_type_id: group_type_id.to_string(),
            volume_types,
            availability_zone: self.settings.availability_zone.clone(),
            group_snapshot_id: None,
            source_group_id: None,
            created_at: now(),
        }
    }

    fn check_group_zone(&self, zone: Option<&str>) -> Result<()> {
        match zone {
            Some(zone) if zone != self.settings.availability_zone => {
                Err(ManagerError::Invalid(format!("Invalid input received: Availability zone '{zone}' is invalid.")))
            }
            _ => Ok(()),
        }
    }

    // ---- group snapshots ---------------------------------------------------------

    pub fn group_snapshots(&self, caller: &Caller, all_projects: bool) -> Result<Vec<GroupSnapshot>> {
        let project = (!(all_projects && caller.is_admin)).then_some(caller.project_id.as_str());
        Ok(self.store.read(|tx| tx.group_snapshots(project, None))?)
    }

    pub fn group_snapshot(&self, caller: &Caller, id: &str) -> Result<GroupSnapshot> {
        self.store.read(|tx| visible_group_snapshot(tx, caller, id))
    }

    /// One snapshot of each member volume (available or in-use), by the ordinary
    /// snapshot job; `creating` until the last ends (`settle`).
    pub fn create_group_snapshot(
        self: &std::sync::Arc<Self>,
        caller: &Caller,
        group_id: &str,
        name: Option<String>,
        description: Option<String>,
    ) -> Result<GroupSnapshot> {
        let capacity = self.capacities();
        let (gs, jobs) = self.store.write(|tx| {
            let group = visible_group(tx, caller, group_id)?;
            if group.status != GroupStatus::Available {
                return Err(ManagerError::Invalid(format!(
                    "Invalid Group: Group {group_id} status must be available, but current status is: {}.",
                    group.status
                )));
            }
            let members = tx.group_volume_ids(group_id)?;
            let gs = GroupSnapshot {
                id: uuid::Uuid::new_v4().to_string(),
                group_id: group_id.to_string(),
                project_id: caller.project_id.clone(),
                user_id: caller.user_id.clone(),
                name: name.clone(),
                description: description.clone(),
                status: if members.is_empty() { GroupSnapshotStatus::Available } else { GroupSnapshotStatus::Creating },
                group_type_id: group.group_type_id.clone(),
                created_at: now(),
            };
            tx.insert_group_snapshot(&gs)?;
            let mut jobs = Vec::new();
            for vid in &members {
                let v = tx.volume(vid)?.ok_or_else(|| super::volume_not_found(vid))?;
                if !matches!(v.status, VolumeStatus::Available | VolumeStatus::InUse) {
                    return Err(ManagerError::Invalid(format!(
                        "Invalid volume: Volume {vid} status must be available or in-use, but current status is: \
                         {}.",
                        v.status
                    )));
                }
                let req = CreateSnapshot {
                    volume_id: v.id.clone(),
                    name: name.clone(),
                    description: description.clone(),
                    ..CreateSnapshot::default()
                };
                let (_, job) = self.create_snapshot_in(tx, caller, &v, &req, Some(&gs.id), &capacity)?;
                jobs.push(job);
            }
            Ok((gs, jobs))
        })?;
        for job in jobs {
            self.start(job);
        }
        Ok(gs)
    }

    /// Deletes the group snapshot's snapshots by the ordinary delete job; it goes
    /// with the last of them.
    pub fn delete_group_snapshot(self: &std::sync::Arc<Self>, caller: &Caller, id: &str) -> Result<()> {
        let jobs = self.store.write(|tx| {
            let gs = visible_group_snapshot(tx, caller, id)?;
            let source_of_creation = tx
                .groups(None)?
                .iter()
                .any(|g| g.status == GroupStatus::Creating && g.group_snapshot_id.as_deref() == Some(id));
            if !matches!(gs.status, GroupSnapshotStatus::Available | GroupSnapshotStatus::Error) || source_of_creation {
                return Err(ManagerError::Invalid(
                    "Invalid GroupSnapshot: GroupSnapshot status must be available or error, and no Group can be \
                     currently using it as source for its creation."
                        .to_string(),
                ));
            }
            let members = tx.group_snapshot_members(id)?;
            let mut jobs = Vec::new();
            for s in &members {
                jobs.push(self.delete_snapshot_in(tx, caller, s)?);
            }
            if members.is_empty() {
                tx.delete_group_snapshot(id)?;
            } else {
                tx.set_group_snapshot_status(id, gs.status, GroupSnapshotStatus::Deleting)?;
            }
            Ok::<_, ManagerError>(jobs)
        })?;
        for job in jobs {
            self.start(job);
        }
        Ok(())
    }

    /// Admin `reset_status` (3.19).
    pub fn reset_group_snapshot_status(&self, caller: &Caller, id: &str, status: &str) -> Result<()> {
        let status: GroupSnapshotStatus = status.parse().map_err(|_| {
            ManagerError::Invalid(format!(
                "Group snapshot status: {status} is invalid, valid statuses are: {}.",
                status_list(GroupSnapshotStatus::ALL)
            ))
        })?;
        self.store.write(|tx| {
            let gs = visible_group_snapshot(tx, caller, id)?;
            tx.set_group_snapshot_status(id, gs.status, status)?;
            Ok(())
        })
    }

    fn check_group_quota(&self, tx: &Tx, project: &str) -> Result<()> {
        let delta = super::quotas::QuotaDelta { groups: 1, ..Default::default() };
        self.check_quota(tx, project, &delta)
    }
}

fn check_removable(tx: &Tx, group: &Group, members: &[String], vid: &str) -> Result<()> {
    let gid = &group.id;
    if !members.iter().any(|m| m == vid) {
        return Err(ManagerError::Invalid(format!(
            "Invalid volume: Cannot remove volume {vid} from group {gid} because it is not in the group."
        )));
    }
    let v = tx.volume(vid)?.ok_or_else(|| super::volume_not_found(vid))?;
    if !REMOVABLE.contains(&v.status) {
        return Err(ManagerError::Invalid(format!(
            "Invalid volume: Cannot remove volume {vid} from group {gid} because volume is in an invalid state: {}. \
             Valid states are: {}.",
            v.status,
            status_list(REMOVABLE)
        )));
    }
    Ok(())
}

/// A group type the caller may see by id or name (private ones are the admins').
fn visible_group_type(tx: &Tx, caller: &Caller, id: &str) -> Result<GroupType> {
    tx.group_type(id)?.filter(|t| t.is_public || caller.is_admin).ok_or_else(|| group_type_not_found(id))
}

pub(super) fn visible_group(tx: &Tx, caller: &Caller, id: &str) -> Result<Group> {
    tx.group(id)?.filter(|g| caller.is_admin || g.project_id == caller.project_id).ok_or_else(|| group_not_found(id))
}

fn visible_group_snapshot(tx: &Tx, caller: &Caller, id: &str) -> Result<GroupSnapshot> {
    tx.group_snapshot(id)?
        .filter(|g| caller.is_admin || g.project_id == caller.project_id)
        .ok_or_else(|| group_snapshot_not_found(id))
}

/// The group or group snapshot a job's volume or snapshot belongs to, read before
/// the job's end removes the member's row.
#[derive(Debug, Default)]
pub(super) struct Touched {
    group: Option<String>,
    group_snapshot: Option<String>,
}

impl Touched {
    pub(super) fn of(tx: &Tx, spec: &JobSpec) -> std::result::Result<Touched, StoreError> {
        Ok(match spec {
            JobSpec::CreateVolume { volume, .. } | JobSpec::DeleteVolume { volume, .. } => {
                Touched { group: tx.volume(volume)?.and_then(|v| v.group_id), ..Touched::default() }
            }
            JobSpec::CreateSnapshot { snapshot, .. } | JobSpec::DeleteSnapshot { snapshot, .. } => Touched {
                group_snapshot: tx.snapshot(snapshot)?.and_then(|s| s.group_snapshot_id),
                ..Touched::default()
            },
            _ => Touched::default(),
        })
    }

    /// After the member's job ended, in the same transaction.
    pub(super) fn settle(&self, tx: &Tx) -> std::result::Result<(), StoreError> {
        if let Some(id) = &self.group {
            settle_group(tx, id)?;
        }
        if let Some(id) = &self.group_snapshot {
            settle_group_snapshot(tx, id)?;
        }
        Ok(())
    }
}

/// A creating group is available once no member is creating (error if one
/// failed); a deleting one goes once its last member did (error_deleting if one
/// could not be deleted). Also after an admin reset of a member, whose job the
/// reset cancelled and which therefore never ends.
pub(super) fn settle_group(tx: &Tx, id: &str) -> std::result::Result<(), StoreError> {
    let Some(group) = tx.group(id)? else { return Ok(()) };
    let mut statuses = Vec::new();
    for vid in tx.group_volume_ids(id)? {
        statuses.extend(tx.volume(&vid)?.map(|v| v.status));
    }
    let next = match group.status {
        GroupStatus::Creating if !statuses.contains(&VolumeStatus::Creating) => {
            Some(if statuses.contains(&VolumeStatus::Error) { GroupStatus::Error } else { GroupStatus::Available })
        }
        GroupStatus::Deleting if statuses.is_empty() => return tx.delete_group(id),
        GroupStatus::Deleting if !statuses.contains(&VolumeStatus::Deleting) => Some(GroupStatus::ErrorDeleting),
        _ => None,
    };
    match next {
        Some(status) => tx.update_group(group.status, &Group { status, ..group.clone() }),
        None => Ok(()),
    }
}

pub(super) fn settle_group_snapshot(tx: &Tx, id: &str) -> std::result::Result<(), StoreError> {
    let Some(gs) = tx.group_snapshot(id)? else { return Ok(()) };
    let statuses: Vec<SnapshotStatus> = tx.group_snapshot_members(id)?.into_iter().map(|s| s.status).collect();
    let next = match gs.status {
        GroupSnapshotStatus::Creating if !statuses.contains(&SnapshotStatus::Creating) => {
            Some(if statuses.contains(&SnapshotStatus::Error) {
                GroupSnapshotStatus::Error
            } else {
                GroupSnapshotStatus::Available
            })
        }
        GroupSnapshotStatus::Deleting if statuses.is_empty() => return tx.delete_group_snapshot(id),
        GroupSnapshotStatus::Deleting if !statuses.contains(&SnapshotStatus::Deleting) => {
            Some(GroupSnapshotStatus::ErrorDeleting)
        }
        _ => None,
    };
    match next {
        Some(status) => tx.set_group_snapshot_status(id, gs.status, status),
        None => Ok(()),
    }
}
