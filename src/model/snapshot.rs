//! Snapshots.

use std::collections::BTreeMap;

use super::string_enum;

string_enum! {
    SnapshotStatus {
        Error = "error", Available = "available", Creating = "creating", Deleting = "deleting",
        Deleted = "deleted", Updating = "updating", ErrorDeleting = "error_deleting",
        Unmanaging = "unmanaging", BackingUp = "backing-up", Restoring = "restoring",
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub id: String,
    pub volume_id: String,
    pub project_id: String,
    pub user_id: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub status: SnapshotStatus,
    pub volume_size: i64,
    pub progress: String,
    pub volume_type_id: String,
    /// The group snapshot this snapshot was taken for (3.14).
    pub group_snapshot_id: Option<String>,
    pub created_at: String,
    pub updated_at: Option<String>,
    pub metadata: BTreeMap<String, String>,
}
