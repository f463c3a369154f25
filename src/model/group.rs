//! Generic volume groups (Cinder's `groups`, 3.13): group types with their specs,
//! groups of volumes of the group's volume types, and group snapshots (3.14),
//! one snapshot of each member volume.

use std::collections::BTreeMap;

use super::string_enum;

string_enum! {
    /// Cinder's `GroupStatus` (what reset_status accepts).
    GroupStatus {
        Error = "error", Available = "available", Creating = "creating", Deleting = "deleting",
        Deleted = "deleted", Updating = "updating", InUse = "in-use", ErrorDeleting = "error_deleting",
    }
}

string_enum! {
    /// Cinder's `GroupSnapshotStatus`.
    GroupSnapshotStatus {
        Error = "error", Available = "available", Creating = "creating", Deleting = "deleting",
        Deleted = "deleted", Updating = "updating", ErrorDeleting = "error_deleting",
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct GroupType {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub is_public: bool,
    pub group_specs: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub id: String,
    pub project_id: String,
    pub user_id: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub status: GroupStatus,
    pub group_type_id: String,
    /// The volume types a member may have, in the order given.
    pub volume_types: Vec<String>,
    pub availability_zone: String,
    /// What the group was made from (create-from-src, 3.14).
    pub group_snapshot_id: Option<String>,
    pub source_group_id: Option<String>,
    pub created_at: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GroupSnapshot {
    pub id: String,
    pub group_id: String,
    pub project_id: String,
    pub user_id: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub status: GroupSnapshotStatus,
    pub group_type_id: String,
    pub created_at: String,
}
