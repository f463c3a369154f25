//! The 24 volume actions (spec §3) at the HTTP edge: a body is
//! `{"<action>": <value>}`, exactly one key. Each action's parser, in the file of
//! its theme, owns everything the API knows about it: the schema of its value,
//! its microversion gate, its policy rule and the code a success answers. The
//! manager's side lives in `manager/actions/`, under the same theme names.

mod admin;
mod attach;
mod change;
mod connection;
mod image;
mod metadata;

use axum::http::StatusCode;
use serde_json::Value;

use super::fault::ApiError;
use super::microversion::Version;
use super::schema;
use crate::manager::VolumeAction;

/// Which policy rule guards an action, and at what level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Admin(&'static str),
    Member(&'static str),
    Reader(&'static str),
}

impl Policy {
    /// The rule as the policy table states rules (api/policy.rs).
    pub fn rule(self) -> super::policy::Rule {
        use super::policy::{Level, Rule};
        match self {
            Policy::Admin(name) => Rule { name, level: Level::Admin },
            Policy::Member(name) => Rule { name, level: Level::Member },
            Policy::Reader(name) => Rule { name, level: Level::Reader },
        }
    }
}

/// An action as parsed: what to do, who may, and what a success answers.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub action: VolumeAction,
    pub policy: Policy,
    /// 202 for work accepted (most actions), 200 where Cinder answers at once.
    pub code: StatusCode,
}

impl Parsed {
    fn accepted(action: VolumeAction, policy: Policy) -> Result<Parsed, ApiError> {
        Ok(Parsed { action, policy, code: StatusCode::ACCEPTED })
    }

    fn ok(action: VolumeAction, policy: Policy) -> Result<Parsed, ApiError> {
        Ok(Parsed { action, policy, code: StatusCode::OK })
    }
}

/// A parser: the action's name (for error messages), its value, the request's version.
type Parser = fn(&str, &Value, Version) -> Result<Parsed, ApiError>;

/// Every action ember knows, by the key of its body.
const ACTIONS: &[(&str, Parser)] = &[
    ("os-extend", change::extend),
    ("revert", change::revert),
    ("os-retype", change::retype),
    ("os-reset_status", admin::reset_status),
    ("os-force_delete", admin::force_delete),
    ("os-unmanage", admin::unmanage),
    ("os-migrate_volume", admin::migrate_volume),
    ("os-migrate_volume_completion", admin::migrate_volume_completion),
    ("os-extend_volume_completion", admin::extend_volume_completion),
    ("os-set_image_metadata", metadata::set_image_metadata),
    ("os-unset_image_metadata", metadata::unset_image_metadata),
    ("os-show_image_metadata", metadata::show_image_metadata),
    ("os-set_bootable", metadata::set_bootable),
    ("os-update_readonly_flag", metadata::update_readonly_flag),
    ("os-attach", attach::attach),
    ("os-detach", attach::detach),
    ("os-force_detach", attach::force_detach),
    ("os-reserve", attach::reserve),
    ("os-unreserve", attach::unreserve),
    ("os-begin_detaching", attach::begin_detaching),
    ("os-roll_detaching", attach::roll_detaching),
    ("os-initialize_connection", connection::initialize_connection),
    ("os-terminate_connection", connection::terminate_connection),
    ("os-volume_upload_image", image::upload_image),
    ("os-reimage", image::reimage),
];

/// Parses an action body at `version`.
pub fn parse(body: &Value, version: Version) -> Result<Parsed, ApiError> {
    let top = body.as_object().ok_or_else(ApiError::malformed_body)?;
    if top.len() != 1 {
        return Err(ApiError::malformed_body());
    }
    let (name, value) = top.iter().next().ok_or_else(ApiError::malformed_body)?;
    let parser = ACTIONS.iter().find(|(known, _)| known == name).map(|(_, p)| p).ok_or_else(|| {
        ApiError::bad_request(format!(
            "There is no such action: {name}. Verify the request body and Content-Type header and try again."
        ))
    })?;
    parser(name, value, version)
}

/// Below its microversion an action does not exist: 404, as Cinder answers.
fn gate(version: Version, major: u16, minor: u16) -> Result<(), ApiError> {
    if version.at_least(major, minor) { Ok(()) } else { Err(ApiError::resource_not_found()) }
}

/// The action's value as an object with only `allowed` keys.
fn object<'a>(name: &str, value: &'a Value, allowed: &[&str]) -> Result<&'a schema::Obj, ApiError> {
    let o = schema::as_object(name, value)?;
    schema::closed(name, o, allowed)?;
    Ok(o)
}

/// A connector: an object (or, where the schema allows, a string or null).
fn connector(value: &Value, nullable: bool) -> Result<Value, ApiError> {
    match value {
        Value::Object(_) | Value::String(_) => Ok(value.clone()),
        Value::Null if nullable => Ok(Value::Null),
        _ => Err(schema::field_error("connector", value, &format!("{value} is not of type 'object', 'string'"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AttachStatus, VolumeStatus};
    use serde_json::json;

    const V30: Version = Version(3, 0);
    const LATEST: Version = Version(3, 71);

    fn code(body: Value, v: Version) -> u16 {
        parse(&body, v).map(|_| 200).unwrap_or_else(|e| e.status.as_u16())
    }

    #[test]
    fn every_action_has_one_parser() {
        let mut names: Vec<&str> = ACTIONS.iter().map(|(n, _)| *n).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ACTIONS.len(), "an action is listed twice");
        assert_eq!(names.len(), 25, "the 24 actions of spec §3 and os-extend_volume_completion");
    }

    #[test]
    fn reply_codes_live_with_the_action() {
        let at = |body: Value| parse(&body, LATEST).unwrap().code;
        assert_eq!(at(json!({"os-set_bootable": {"bootable": true}})), StatusCode::OK);
        assert_eq!(at(json!({"os-show_image_metadata": null})), StatusCode::OK);
        assert_eq!(at(json!({"os-set_image_metadata": {"metadata": {"k": "v"}}})), StatusCode::OK);
        assert_eq!(at(json!({"os-unset_image_metadata": {"key": "k"}})), StatusCode::OK);
        assert_eq!(at(json!({"os-extend": {"new_size": 2}})), StatusCode::ACCEPTED);
        assert_eq!(at(json!({"os-reserve": null})), StatusCode::ACCEPTED);
        assert_eq!(at(json!({"os-update_readonly_flag": {"readonly": true}})), StatusCode::ACCEPTED);
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
        assert_eq!(code(json!({"os-reset_status": {"migration_status": "target:x"}}), V30), 400);
        let p = parse(&json!({"os-reset_status": {"migration_status": "none"}}), V30).unwrap();
        assert_eq!(p.policy, Policy::Admin("volume_extension:volume_admin_actions:reset_status"));
        assert_eq!(
            p.action,
            VolumeAction::ResetStatus { status: None, attach_status: None, migration_status: Some(None) }
        );
        let p = parse(&json!({"os-reset_status": {"status": "Available", "attach_status": "detached"}}), V30).unwrap();
        assert_eq!(
            p.action,
            VolumeAction::ResetStatus {
                status: Some(VolumeStatus::Available),
                attach_status: Some(AttachStatus::Detached),
                migration_status: None
            }
        );
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
