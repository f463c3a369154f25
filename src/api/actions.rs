//! Schemas of the 24 volume actions (spec §3) and their microversion gates: a body
//! is `{"<action>": <value>}`, exactly one key; the value is validated into a typed
//! `VolumeAction` before the manager sees it.

use serde_json::Value;

use super::fault::ApiError;
use super::microversion::Version;
use super::schema::{self, boolean, closed, field_error, integer, nullable_string, required, string, uuid_like};
use crate::manager::{AttachMode, VolumeAction};
use crate::store::{AttachStatus, VolumeStatus};

/// Which policy rule guards an action, and at what level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Admin(&'static str),
    Member(&'static str),
    Reader(&'static str),
}

const MAX_SIZE: i64 = 2_147_483_647;

/// Parses an action body at `version`; returns the action and its policy.
pub fn parse(body: &Value, version: Version) -> Result<(VolumeAction, Policy), ApiError> {
    let top = body.as_object().ok_or_else(ApiError::malformed_body)?;
    if top.len() != 1 {
        return Err(ApiError::malformed_body());
    }
    let (name, value) = top.iter().next().ok_or_else(ApiError::malformed_body)?;
    let gate = |major, minor| {
        if version.at_least(major, minor) { Ok(()) } else { Err(ApiError::resource_not_found()) }
    };
    use VolumeAction as A;
    let parsed = match name.as_str() {
        "os-extend" => {
            let o = object(name, value, &["new_size"])?;
            let new_size = integer("new_size", required(name, o, "new_size")?, 1, MAX_SIZE)?;
            (A::Extend { new_size }, Policy::Member("volume:extend"))
        }
        "os-reset_status" => {
            let o = object(name, value, &["status", "attach_status", "migration_status"])?;
            let text = |key: &str| -> Result<Option<String>, ApiError> {
                o.get(key)
                    .map(|v| nullable_string(key, v, 0, 255))
                    .transpose()
                    .map(|s| s.flatten().filter(|s| !s.is_empty()).map(|s| s.to_lowercase()))
            };
            let (status, attach, migration) = (text("status")?, text("attach_status")?, text("migration_status")?);
            if status.is_none() && attach.is_none() && migration.is_none() {
                return Err(ApiError::bad_request(
                    "Must specify 'status', 'attach_status' or 'migration_status' for update.",
                ));
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
                    "migrating" | "error" | "success" | "completing" | "starting" => Ok(Some(s)),
                    _ => Err(ApiError::bad_request(format!("Invalid input received: Invalid migration status '{s}'"))),
                })
                .transpose()?;
            (
                A::ResetStatus { status, attach_status, migration_status },
                Policy::Admin("volume_extension:volume_admin_actions:reset_status"),
            )
        }
        "revert" => {
            gate(3, 40)?;
            let o = schema::as_object(name, value)?;
            let snapshot_id =
                o.get("snapshot_id").map(|v| nullable_string("snapshot_id", v, 0, 255)).transpose()?.flatten();
            (A::Revert { snapshot_id }, Policy::Member("volume:revert_to_snapshot"))
        }
        "os-set_image_metadata" => {
            let o = object(name, value, &["metadata"])?;
            let map = schema::metadata("metadata", required(name, o, "metadata")?, schema::meta_key, 65535)?;
            (A::SetImageMetadata(map), Policy::Member("volume_extension:volume_image_metadata:set"))
        }
        "os-unset_image_metadata" => {
            let o = object(name, value, &["key"])?;
            let key = string("key", required(name, o, "key")?, 1, 255)?;
            (A::UnsetImageMetadata { key }, Policy::Member("volume_extension:volume_image_metadata:remove"))
        }
        "os-show_image_metadata" => (A::ShowImageMetadata, Policy::Reader("volume:get_volume_metadata")),
        "os-attach" => {
            let o = object(name, value, &["instance_uuid", "mountpoint", "host_name", "mode"])?;
            let mountpoint = string("mountpoint", required(name, o, "mountpoint")?, 1, 255)?;
            let instance_uuid = o.get("instance_uuid").map(|v| uuid_like("instance_uuid", v)).transpose()?;
            let host_name = o.get("host_name").map(|v| string("host_name", v, 0, 255)).transpose()?;
            if instance_uuid.is_none() && host_name.is_none() {
                return Err(field_error(name, value, "'instance_uuid' or 'host_name' is required"));
            }
            let mode = match o.get("mode") {
                None => AttachMode::Rw,
                Some(v) => match v.as_str() {
                    Some("rw") => AttachMode::Rw,
                    Some("ro") => AttachMode::Ro,
                    _ => return Err(field_error("mode", v, &format!("{v} is not one of ['rw', 'ro']"))),
                },
            };
            (
                A::Attach { instance_uuid, host_name, mountpoint, mode },
                Policy::Member("volume_extension:volume_actions:attach"),
            )
        }
        "os-detach" => {
            let attachment_id = if value.is_null() {
                None
            } else {
                let o = object(name, value, &["attachment_id"])?;
                o.get("attachment_id").map(|v| nullable_string("attachment_id", v, 0, 255)).transpose()?.flatten()
            };
            (A::Detach { attachment_id }, Policy::Member("volume_extension:volume_actions:detach"))
        }
        "os-unmanage" => (A::Unmanage, Policy::Admin("volume_extension:volume_unmanage")),
        "os-force_detach" => {
            let o = object(name, value, &["attachment_id", "connector"])?;
            let attachment_id =
                o.get("attachment_id").map(|v| nullable_string("attachment_id", v, 0, 255)).transpose()?.flatten();
            if let Some(c) = o.get("connector") {
                connector(c, true)?;
            }
            (A::ForceDetach { attachment_id }, Policy::Admin("volume_extension:volume_admin_actions:force_detach"))
        }
        "os-retype" => {
            let o = object(name, value, &["new_type", "migration_policy"])?;
            let new_type = string("new_type", required(name, o, "new_type")?, 0, 255)?;
            let on_demand = match o.get("migration_policy") {
                None | Some(Value::Null) => false,
                Some(v) => match v.as_str() {
                    Some("on-demand") => true,
                    Some("never") => false,
                    _ => {
                        return Err(field_error(
                            "migration_policy",
                            v,
                            &format!("{v} is not one of ['on-demand', 'never', None]"),
                        ));
                    }
                },
            };
            (A::Retype { new_type, on_demand }, Policy::Member("volume:retype"))
        }
        "os-migrate_volume" => {
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
            (A::MigrateVolume { destination }, Policy::Admin("volume_extension:volume_admin_actions:migrate_volume"))
        }
        "os-migrate_volume_completion" => {
            let o = object(name, value, &["new_volume", "error"])?;
            let new_volume = uuid_like("new_volume", required(name, o, "new_volume")?)?;
            let error = match o.get("error") {
                None | Some(Value::Null) => false,
                Some(v) => boolean("error", v)?,
            };
            (
                A::MigrateVolumeCompletion { new_volume, error },
                Policy::Admin("volume_extension:volume_admin_actions:migrate_volume_completion"),
            )
        }
        "os-force_delete" => (A::ForceDelete, Policy::Admin("volume_extension:volume_admin_actions:force_delete")),
        "os-set_bootable" => {
            let o = object(name, value, &["bootable"])?;
            let bootable = boolean("bootable", required(name, o, "bootable")?)?;
            (A::SetBootable(bootable), Policy::Member("volume:update"))
        }
        "os-volume_upload_image" => {
            let mut allowed = vec!["image_name", "force", "disk_format", "container_format"];
            if version.at_least(3, 1) {
                allowed.extend(["visibility", "protected"]);
            }
            let o = object(name, value, &allowed)?;
            string("image_name", required(name, o, "image_name")?, 1, 255)?;
            let force = o.get("force").map(|v| boolean("force", v)).transpose()?.unwrap_or(false);
            if let Some(v) = o.get("disk_format") {
                let ok = ["raw", "vmdk", "vdi", "qcow2", "vhd", "vhdx", "ploop"];
                if !v.as_str().is_some_and(|s| ok.contains(&s)) {
                    return Err(field_error("disk_format", v, &format!("{v} is not one of {ok:?}")));
                }
            }
            if let Some(v) = o.get("container_format") {
                nullable_string("container_format", v, 0, 255)?;
            }
            let mut policy = Policy::Member("volume_extension:volume_actions:upload_image");
            if let Some(v) = o.get("visibility") {
                let ok = ["community", "public", "private", "shared"];
                if !v.as_str().is_some_and(|s| ok.contains(&s)) {
                    return Err(field_error("visibility", v, &format!("{v} is not one of {ok:?}")));
                }
                if v == "public" {
                    policy = Policy::Admin("volume_extension:volume_actions:upload_public");
                }
            }
            if let Some(v) = o.get("protected") {
                boolean("protected", v)?;
            }
            (A::UploadImage { force }, policy)
        }
        "os-reserve" => (A::Reserve, Policy::Member("volume_extension:volume_actions:reserve")),
        "os-unreserve" => (A::Unreserve, Policy::Member("volume_extension:volume_actions:unreserve")),
        "os-begin_detaching" => (A::BeginDetaching, Policy::Member("volume_extension:volume_actions:begin_detaching")),
        "os-roll_detaching" => (A::RollDetaching, Policy::Member("volume_extension:volume_actions:roll_detaching")),
        "os-terminate_connection" => {
            let o = object(name, value, &["connector"])?;
            connector(required(name, o, "connector")?, true)?;
            (A::TerminateConnection, Policy::Member("volume_extension:volume_actions:terminate_connection"))
        }
        "os-initialize_connection" => {
            let o = object(name, value, &["connector"])?;
            let c = connector(required(name, o, "connector")?, false)?;
            (
                A::InitializeConnection { connector: c },
                Policy::Member("volume_extension:volume_actions:initialize_connection"),
            )
        }
        "os-update_readonly_flag" => {
            let o = object(name, value, &["readonly"])?;
            let readonly = boolean("readonly", required(name, o, "readonly")?)?;
            (A::UpdateReadonly(readonly), Policy::Member("volume:update_readonly_flag"))
        }
        "os-reimage" => {
            gate(3, 68)?;
            let o = object(name, value, &["image_id", "reimage_reserved"])?;
            uuid_like("image_id", required(name, o, "image_id")?)?;
            let reimage_reserved =
                o.get("reimage_reserved").map(|v| boolean("reimage_reserved", v)).transpose()?.unwrap_or(false);
            let rule = if reimage_reserved { "volume:reimage_reserved" } else { "volume:reimage" };
            (A::Reimage { reimage_reserved }, Policy::Member(rule))
        }
        "os-extend_volume_completion" => {
            let o = object(name, value, &["error"])?;
            if let Some(v) = o.get("error") {
                if !v.is_null() {
                    boolean("error", v)?;
                }
            }
            (A::ExtendVolumeCompletion, Policy::Admin("volume_extension:volume_admin_actions:extend_volume_completion"))
        }
        other => {
            return Err(ApiError::bad_request(format!(
                "There is no such action: {other}. Verify the request body and Content-Type header and try again."
            )));
        }
    };
    Ok(parsed)
}

fn object<'a>(name: &str, value: &'a Value, allowed: &[&str]) -> Result<&'a schema::Obj, ApiError> {
    let o = schema::as_object(name, value)?;
    closed(name, o, allowed)?;
    Ok(o)
}

/// A connector: an object (or, where the schema allows, a string or null).
fn connector(value: &Value, nullable: bool) -> Result<Value, ApiError> {
    match value {
        Value::Object(_) | Value::String(_) => Ok(value.clone()),
        Value::Null if nullable => Ok(Value::Null),
        _ => Err(field_error("connector", value, &format!("{value} is not of type 'object', 'string'"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const V30: Version = Version(3, 0);
    const LATEST: Version = Version(3, 71);

    fn code(body: Value, v: Version) -> u16 {
        parse(&body, v).map(|_| 200).unwrap_or_else(|e| e.status.as_u16())
    }

    #[test]
    fn empty_actions_take_anything() {
        for name in [
            "os-reserve",
            "os-unreserve",
            "os-begin_detaching",
            "os-roll_detaching",
            "os-force_delete",
            "os-unmanage",
            "os-show_image_metadata",
        ] {
            for value in [json!(null), json!({}), json!({"x": 1}), json!(3)] {
                assert_eq!(code(json!({ name: value }), V30), 200, "{name} {value}");
            }
        }
    }

    #[test]
    fn envelope_rules() {
        assert_eq!(code(json!({}), V30), 400);
        assert_eq!(code(json!({"os-reserve": null, "os-unreserve": null}), V30), 400);
        assert_eq!(code(json!([1]), V30), 400);
        let e = parse(&json!({"os-bogus": {}}), V30).unwrap_err();
        assert!(e.message.starts_with("There is no such action: os-bogus."));
    }

    #[test]
    fn extend_sizes() {
        assert_eq!(code(json!({"os-extend": {"new_size": 2}}), V30), 200);
        assert_eq!(code(json!({"os-extend": {"new_size": "2"}}), V30), 200);
        for bad in [json!(0), json!("abc"), json!(null), json!(-1), json!(2.5), json!(2147483648u64)] {
            assert_eq!(code(json!({"os-extend": {"new_size": bad}}), V30), 400, "{bad}");
        }
        assert_eq!(code(json!({"os-extend": {}}), V30), 400);
        assert_eq!(code(json!({"os-extend": {"new_size": 2, "x": 1}}), V30), 400);
    }

    #[test]
    fn microversion_gates() {
        let revert = json!({"revert": {"snapshot_id": "x"}});
        assert_eq!(code(revert.clone(), Version(3, 39)), 404);
        assert_eq!(code(revert, Version(3, 40)), 200);
        assert_eq!(code(json!({"revert": {"snapshot_id": null, "extra": 1}}), LATEST), 200);
        let reimage = json!({"os-reimage": {"image_id": "6f1c2a3b-4d5e-4f60-8a9b-0c1d2e3f4a5b"}});
        assert_eq!(code(reimage.clone(), Version(3, 67)), 404);
        assert_eq!(code(reimage, Version(3, 68)), 200);
        let upload = json!({"os-volume_upload_image": {"image_name": "i", "visibility": "private"}});
        assert_eq!(code(upload.clone(), V30), 400);
        assert_eq!(code(upload, Version(3, 1)), 200);
        let migrate = json!({"os-migrate_volume": {"host": "a", "cluster": "b"}});
        assert_eq!(code(migrate.clone(), V30), 400);
        assert_eq!(code(migrate, Version(3, 16)), 400);
        assert_eq!(code(json!({"os-migrate_volume": {"cluster": "b"}}), Version(3, 16)), 200);
    }

    #[test]
    fn reset_status_values() {
        assert_eq!(code(json!({"os-reset_status": {}}), V30), 400);
        assert_eq!(code(json!({"os-reset_status": {"status": "ERROR"}}), V30), 200);
        assert_eq!(code(json!({"os-reset_status": {"status": "reverting"}}), V30), 400);
        assert_eq!(code(json!({"os-reset_status": {"status": "bogus"}}), V30), 400);
        assert_eq!(code(json!({"os-reset_status": {"attach_status": "attaching"}}), V30), 400);
        let (a, p) = parse(&json!({"os-reset_status": {"migration_status": "none"}}), V30).unwrap();
        assert_eq!(p, Policy::Admin("volume_extension:volume_admin_actions:reset_status"));
        assert_eq!(a, VolumeAction::ResetStatus { status: None, attach_status: None, migration_status: Some(None) });
    }

    #[test]
    fn attach_requires_mountpoint_and_target() {
        let id = "6f1c2a3b-4d5e-4f60-8a9b-0c1d2e3f4a5b";
        assert_eq!(code(json!({"os-attach": {"instance_uuid": id, "mountpoint": "/dev/vdb"}}), V30), 200);
        assert_eq!(code(json!({"os-attach": {"host_name": "h", "mountpoint": "/dev/vdb", "mode": "ro"}}), V30), 200);
        assert_eq!(code(json!({"os-attach": {"mountpoint": "/dev/vdb"}}), V30), 400);
        assert_eq!(code(json!({"os-attach": {"instance_uuid": id}}), V30), 400);
        assert_eq!(code(json!({"os-attach": {"instance_uuid": "x", "mountpoint": "/dev/vdb"}}), V30), 400);
        assert_eq!(code(json!({"os-attach": {"host_name": "h", "mountpoint": "/dev/vdb", "mode": "wo"}}), V30), 400);
    }

    #[test]
    fn booleans_in_actions() {
        assert_eq!(code(json!({"os-set_bootable": {"bootable": "True"}}), V30), 200);
        assert_eq!(code(json!({"os-set_bootable": {"bootable": "maybe"}}), V30), 400);
        assert_eq!(code(json!({"os-set_bootable": {}}), V30), 400);
        assert_eq!(code(json!({"os-update_readonly_flag": {"readonly": "off"}}), V30), 200);
        assert_eq!(code(json!({"os-update_readonly_flag": {"readonly": 1}}), V30), 400);
    }

    #[test]
    fn connection_actions_validate_connectors() {
        assert_eq!(code(json!({"os-initialize_connection": {"connector": {"initiator": "iqn.x"}}}), V30), 200);
        assert_eq!(code(json!({"os-initialize_connection": {"connector": null}}), V30), 400);
        assert_eq!(code(json!({"os-initialize_connection": {}}), V30), 400);
        assert_eq!(code(json!({"os-terminate_connection": {"connector": null}}), V30), 200);
        assert_eq!(code(json!({"os-force_detach": {}}), V30), 200);
        assert_eq!(code(json!({"os-force_detach": {"connector": 5}}), V30), 400);
    }
}
