//! The records ember keeps, and the status vocabularies of spec §2.1.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!("unknown {} '{}'", stringify!($name), other)),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum! {
    /// Volume status. The first block is Cinder's enum (what reset_status accepts);
    /// the second holds strings Cinder's code writes outside the enum.
    VolumeStatus {
        Creating = "creating", Available = "available", Deleting = "deleting", Error = "error",
        ErrorDeleting = "error_deleting", ErrorManaging = "error_managing", Managing = "managing",
        Attaching = "attaching", InUse = "in-use", Detaching = "detaching",
        Maintenance = "maintenance", RestoringBackup = "restoring-backup",
        ErrorRestoring = "error_restoring", Reserved = "reserved",
        AwaitingTransfer = "awaiting-transfer", BackingUp = "backing-up",
        ErrorBackingUp = "error_backing-up", ErrorExtending = "error_extending",
        Downloading = "downloading", Uploading = "uploading", Retyping = "retyping",
        Extending = "extending",
        Reverting = "reverting", Unmanaging = "unmanaging", ErrorUnmanaging = "error_unmanaging",
        ErrorManagingDeleting = "error_managing_deleting",
    }
}

impl VolumeStatus {
    /// Whether `os-reset_status` may set it (Cinder's `VolumeStatus` enum).
    pub fn in_cinder_enum(self) -> bool {
        !matches!(
            self,
            VolumeStatus::Reverting
                | VolumeStatus::Unmanaging
                | VolumeStatus::ErrorUnmanaging
                | VolumeStatus::ErrorManagingDeleting
        )
    }

    /// The status shown to API callers (spec §2.1: managing shows as creating, ...).
    pub fn shown(self) -> &'static str {
        match self {
            VolumeStatus::Managing => "creating",
            VolumeStatus::ErrorManaging => "error",
            VolumeStatus::ErrorManagingDeleting => "deleting",
            other => other.as_str(),
        }
    }
}

string_enum! {
    AttachStatus {
        Attached = "attached", Attaching = "attaching", Detached = "detached",
        Reserved = "reserved", ErrorAttaching = "error_attaching",
        ErrorDetaching = "error_detaching", Deleted = "deleted", Detaching = "detaching",
    }
}

string_enum! {
    SnapshotStatus {
        Error = "error", Available = "available", Creating = "creating", Deleting = "deleting",
        Deleted = "deleted", Updating = "updating", ErrorDeleting = "error_deleting",
        Unmanaging = "unmanaging", BackingUp = "backing-up", Restoring = "restoring",
    }
}

/// Migration statuses that mean "not migrating" (Cinder's AVAILABLE_MIGRATION_STATUS).
pub fn not_migrating(migration_status: Option<&str>) -> bool {
    matches!(migration_status, None | Some("deleting" | "error" | "success"))
}

#[derive(Debug, Clone, PartialEq)]
pub struct Volume {
    pub id: String,
    pub project_id: String,
    pub user_id: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub size: i64,
    pub status: VolumeStatus,
    pub previous_status: Option<String>,
    pub attach_status: AttachStatus,
    pub migration_status: Option<String>,
    pub volume_type_id: String,
    pub availability_zone: String,
    pub bootable: bool,
    pub multiattach: bool,
    pub snapshot_id: Option<String>,
    pub source_volid: Option<String>,
    pub host: String,
    pub created_at: String,
    pub updated_at: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub admin_metadata: BTreeMap<String, String>,
    pub image_metadata: BTreeMap<String, String>,
    pub attachments: Vec<Attachment>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Attachment {
    pub id: String,
    pub volume_id: String,
    pub instance_uuid: Option<String>,
    pub attached_host: Option<String>,
    pub mountpoint: Option<String>,
    pub attach_status: AttachStatus,
    pub attach_mode: String,
    pub attach_time: Option<String>,
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
    pub created_at: String,
    pub updated_at: Option<String>,
    pub metadata: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VolumeType {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub is_public: bool,
    pub extra_specs: BTreeMap<String, String>,
}

impl VolumeType {
    /// `multiattach` extra spec in Cinder's "<is> True" form.
    pub fn multiattach(&self) -> bool {
        self.extra_specs.get("multiattach").is_some_and(|v| v.trim().eq_ignore_ascii_case("<is> true"))
    }
}

pub const DEFAULT_TYPE_NAME: &str = "__DEFAULT__";

/// A unit of durable work (DESIGN decision 1): written with the transitional status
/// in one transaction, removed with the final status in another.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: i64,
    pub kind: JobKind,
    pub volume_id: Option<String>,
    pub snapshot_id: Option<String>,
    pub args: serde_json::Value,
}

string_enum! {
    JobKind {
        CreateVolume = "create_volume", DeleteVolume = "delete_volume",
        ExtendVolume = "extend_volume", RevertVolume = "revert_volume",
        CreateSnapshot = "create_snapshot", DeleteSnapshot = "delete_snapshot",
        UnmanageVolume = "unmanage_volume", ManageVolume = "manage_volume",
        RetypeVolume = "retype_volume",
    }
}
