//! os-attach, os-detach, os-force_detach, os-reserve, os-unreserve,
//! os-begin_detaching and os-roll_detaching.

use serde_json::Value;

use super::{Parsed, Policy, connector, object};
use crate::api::fault::ApiError;
use crate::api::microversion::Version;
use crate::api::schema::{field_error, nullable_string, required, string, uuid_like};
use crate::manager::VolumeAction as A;
use crate::model::AttachMode;

pub(super) fn attach(name: &str, value: &Value, _: Version) -> Result<Parsed, ApiError> {
    let o = object(name, value, &["instance_uuid", "mountpoint", "host_name", "mode"])?;
    let mountpoint = string("mountpoint", required(name, o, "mountpoint")?, 1, 255)?;
    let instance_uuid = o.get("instance_uuid").map(|v| uuid_like("instance_uuid", v)).transpose()?;
    let host_name = o.get("host_name").map(|v| string("host_name", v, 0, 255)).transpose()?;
    if instance_uuid.is_none() && host_name.is_none() {
        return Err(field_error(name, value, "'instance_uuid' or 'host_name' is required"));
    }
    let mode = match o.get("mode") {
        None => AttachMode::Rw,
        Some(v) => v
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| field_error("mode", v, &format!("{v} is not one of ['rw', 'ro']")))?,
    };
    Parsed::accepted(
        A::Attach { instance_uuid, host_name, mountpoint, mode },
        Policy::Member("volume_extension:volume_actions:attach"),
    )
}

pub(super) fn detach(name: &str, value: &Value, _: Version) -> Result<Parsed, ApiError> {
    let attachment_id = if value.is_null() {
        None
    } else {
        let o = object(name, value, &["attachment_id"])?;
        o.get("attachment_id").map(|v| nullable_string("attachment_id", v, 0, 255)).transpose()?.flatten()
    };
    Parsed::accepted(A::Detach { attachment_id }, Policy::Member("volume_extension:volume_actions:detach"))
}

pub(super) fn force_detach(name: &str, value: &Value, _: Version) -> Result<Parsed, ApiError> {
    let o = object(name, value, &["attachment_id", "connector"])?;
    let attachment_id =
        o.get("attachment_id").map(|v| nullable_string("attachment_id", v, 0, 255)).transpose()?.flatten();
    let connector = o.get("connector").map(|c| connector(c, true)).transpose()?.unwrap_or(Value::Null);
    Parsed::accepted(
        A::ForceDetach { attachment_id, connector },
        Policy::Admin("volume_extension:volume_admin_actions:force_detach"),
    )
}

pub(super) fn reserve(_: &str, _: &Value, _: Version) -> Result<Parsed, ApiError> {
    Parsed::accepted(A::Reserve, Policy::Member("volume_extension:volume_actions:reserve"))
}

pub(super) fn unreserve(_: &str, _: &Value, _: Version) -> Result<Parsed, ApiError> {
    Parsed::accepted(A::Unreserve, Policy::Member("volume_extension:volume_actions:unreserve"))
}

pub(super) fn begin_detaching(_: &str, _: &Value, _: Version) -> Result<Parsed, ApiError> {
    Parsed::accepted(A::BeginDetaching, Policy::Member("volume_extension:volume_actions:begin_detaching"))
}

pub(super) fn roll_detaching(_: &str, _: &Value, _: Version) -> Result<Parsed, ApiError> {
    Parsed::accepted(A::RollDetaching, Policy::Member("volume_extension:volume_actions:roll_detaching"))
}
