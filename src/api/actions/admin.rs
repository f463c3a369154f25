//! Admin actions: os-reset_status, os-force_delete, os-unmanage,
//! os-migrate_volume, os-migrate_volume_completion, os-extend_volume_completion.

use serde_json::Value;

use super::{Parsed, Policy, object};
use crate::api::fault::ApiError;
use crate::api::microversion::Version;
use crate::api::schema::{boolean, field_error, nullable_string, required, uuid_like};
use crate::manager::VolumeAction as A;
use crate::model::{AttachStatus, MigrationStatus, VolumeStatus};

pub(super) fn reset_status(name: &str, value: &Value, _: Version) -> Result<Parsed, ApiError> {
    let o = object(name, value, &["status", "attach_status", "migration_status"])?;
    let text = |key: &str| -> Result<Option<String>, ApiError> {
        o.get(key)
            .map(|v| nullable_string(key, v, 0, 255))
            .transpose()
            .map(|s| s.flatten().filter(|s| !s.is_empty()).map(|s| s.to_lowercase()))
    };
    let (status, attach, migration) = (text("status")?, text("attach_status")?, text("migration_status")?);
    if status.is_none() && attach.is_none() && migration.is_none() {
        return Err(ApiError::bad_request("Must specify 'status', 'attach_status' or 'migration_status' for update."));
    }
    let status = status
        .map(|s| {
            s.parse::<VolumeStatus>()
                .ok()
                .filter(|s| s.in_cinder_enum())
                .ok_or_else(|| ApiError::bad_request(format!("Invalid input received: Invalid status '{s}'")))
        })
        .transpose()?;
    let attach_status = attach
        .map(|s| match s.as_str() {
            "attached" => Ok(AttachStatus::Attached),
            "detached" => Ok(AttachStatus::Detached),
            _ => Err(ApiError::bad_request(format!("Invalid input received: Invalid attach status '{s}'"))),
        })
        .transpose()?;
    let migration_status = migration
        .map(|s| match s.as_str() {
            "none" => Ok(None),
            known if MigrationStatus::RESETTABLE.contains(&known) => {
                known.parse().map(Some).map_err(ApiError::bad_request)
            }
            _ => Err(ApiError::bad_request(format!("Invalid input received: Invalid migration status '{s}'"))),
        })
        .transpose()?;
    Parsed::accepted(
        A::ResetStatus { status, attach_status, migration_status },
        Policy::Admin("volume_extension:volume_admin_actions:reset_status"),
    )
}

pub(super) fn force_delete(_: &str, _: &Value, _: Version) -> Result<Parsed, ApiError> {
    Parsed::accepted(A::ForceDelete, Policy::Admin("volume_extension:volume_admin_actions:force_delete"))
}

pub(super) fn unmanage(_: &str, _: &Value, _: Version) -> Result<Parsed, ApiError> {
    Parsed::accepted(A::Unmanage, Policy::Admin("volume_extension:volume_unmanage"))
}

pub(super) fn migrate_volume(name: &str, value: &Value, version: Version) -> Result<Parsed, ApiError> {
    let mut allowed = vec!["host", "force_host_copy", "lock_volume"];
    if version.at_least(3, 16) {
        allowed.push("cluster");
    }
    let o = object(name, value, &allowed)?;
    let host = o.get("host").map(|v| nullable_string("host", v, 0, 255)).transpose()?.flatten();
    let cluster = o.get("cluster").map(|v| nullable_string("cluster", v, 0, 255)).transpose()?.flatten();
    for key in ["force_host_copy", "lock_volume"] {
        if let Some(v) = o.get(key) {
            boolean(key, v)?;
        }
    }
    let destination = if version.at_least(3, 16) {
        match (host, cluster) {
            (Some(h), None) => h,
            (None, Some(c)) => c,
            _ => return Err(ApiError::bad_request("One and only one of cluster and host must be set.")),
        }
    } else {
        host.ok_or_else(|| field_error(name, value, "'host' is a required property"))?
    };
    Parsed::accepted(
        A::MigrateVolume { destination },
        Policy::Admin("volume_extension:volume_admin_actions:migrate_volume"),
    )
}

pub(super) fn migrate_volume_completion(name: &str, value: &Value, _: Version) -> Result<Parsed, ApiError> {
    let o = object(name, value, &["new_volume", "error"])?;
    let new_volume = uuid_like("new_volume", required(name, o, "new_volume")?)?;
    let error = match o.get("error") {
        None | Some(Value::Null) => false,
        Some(v) => boolean("error", v)?,
    };
    Parsed::ok(
        A::MigrateVolumeCompletion { new_volume, error },
        Policy::Admin("volume_extension:volume_admin_actions:migrate_volume_completion"),
    )
}

pub(super) fn extend_volume_completion(name: &str, value: &Value, _: Version) -> Result<Parsed, ApiError> {
    let o = object(name, value, &["error"])?;
    if let Some(v) = o.get("error") {
        if !v.is_null() {
            boolean("error", v)?;
        }
    }
    Parsed::accepted(
        A::ExtendVolumeCompletion,
        Policy::Admin("volume_extension:volume_admin_actions:extend_volume_completion"),
    )
}
