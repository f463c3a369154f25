//! Volumes, their attachments and volume types.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use super::string_enum;

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
    /// How an attachment uses the volume.
    AttachMode { Rw = "rw", Ro = "ro" }
}

/// Where a migration stands (spec §2.1); a destination volume carries
/// `target:<source id>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MigrationStatus {
    Migrating,
    Error,
    Success,
    Completing,
    Starting,
    Deleting,
    Target(String),
}

impl MigrationStatus {
    /// The values `os-reset_status` accepts (besides "none", which clears it).
    pub const RESETTABLE: &'static [&'static str] = &["migrating", "error", "success", "completing", "starting"];
}

impl FromStr for MigrationStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "migrating" => MigrationStatus::Migrating,
            "error" => MigrationStatus::Error,
            "success" => MigrationStatus::Success,
            "completing" => MigrationStatus::Completing,
            "starting" => MigrationStatus::Starting,
            "deleting" => MigrationStatus::Deleting,
            other => match other.strip_prefix("target:") {
                Some(id) if !id.is_empty() => MigrationStatus::Target(id.to_string()),
                _ => return Err(format!("unknown MigrationStatus '{other}'")),
            },
        })
    }
}

impl fmt::Display for MigrationStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MigrationStatus::Migrating => f.write_str("migrating"),
            MigrationStatus::Error => f.write_str("error"),
            MigrationStatus::Success => f.write_str("success"),
            MigrationStatus::Completing => f.write_str("completing"),
            MigrationStatus::Starting => f.write_str("starting"),
            MigrationStatus::Deleting => f.write_str("deleting"),
            MigrationStatus::Target(id) => write!(f, "target:{id}"),
        }
    }
}

/// Migration statuses that mean "not migrating" (Cinder's AVAILABLE_MIGRATION_STATUS).
pub fn not_migrating(migration_status: Option<&MigrationStatus>) -> bool {
    matches!(
        migration_status,
        None | Some(MigrationStatus::Deleting | MigrationStatus::Error | MigrationStatus::Success)
    )
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
    pub previous_status: Option<VolumeStatus>,
    pub attach_status: AttachStatus,
    pub migration_status: Option<MigrationStatus>,
    pub volume_type_id: String,
    pub availability_zone: String,
    pub bootable: bool,
    pub multiattach: bool,
    pub snapshot_id: Option<String>,
    pub source_volid: Option<String>,
    pub host: String,
    /// The generic volume group the volume belongs to (3.13).
    pub group_id: Option<String>,
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
    pub attach_mode: AttachMode,
    pub attach_time: Option<String>,
    pub detach_time: Option<String>,
    /// The connector the attachment was made with (JSON, as the caller sent it).
    pub connector: Option<String>,
    /// Who the export admits for it: the connector's IQN or host NQN.
    pub initiator: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VolumeType {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub is_public: bool,
    pub extra_specs: BTreeMap<String, String>,
    /// The QoS specs associated with the type (admins see the id).
    pub qos_specs_id: Option<String>,
    /// Whether the type has encryption specs (its volumes report `encrypted`).
    pub encrypted: bool,
}

/// A volume type's encryption specs (`/types/{id}/encryption`): what the
/// hypervisor's encryptor uses (`provider`: luks, plain, or an encryptor class).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeEncryption {
    pub type_id: String,
    pub encryption_id: String,
    pub provider: String,
    /// `front-end` (the hypervisor) or `back-end`.
    pub control_location: String,
    pub cipher: Option<String>,
    pub key_size: Option<i64>,
    pub created_at: String,
    pub updated_at: Option<String>,
}

impl VolumeType {
    /// `multiattach` extra spec in Cinder's "<is> True" form.
    pub fn multiattach(&self) -> bool {
        self.extra_specs.get("multiattach").is_some_and(|v| v.trim().eq_ignore_ascii_case("<is> true"))
    }
}

pub const DEFAULT_TYPE_NAME: &str = "__DEFAULT__";

/// What a new volume is made from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum VolumeSource {
    Blank,
    Snapshot { id: String },
    Volume { id: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migration_status_round_trips() {
        for text in ["migrating", "error", "success", "completing", "starting", "deleting", "target:abc"] {
            assert_eq!(text.parse::<MigrationStatus>().unwrap().to_string(), text);
        }
        assert!("target:".parse::<MigrationStatus>().is_err());
        assert!("bogus".parse::<MigrationStatus>().is_err());
        assert!(not_migrating(Some(&MigrationStatus::Success)));
        assert!(!not_migrating(Some(&MigrationStatus::Target("x".into()))));
    }
}
