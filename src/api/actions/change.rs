//! os-extend, revert (3.40) and os-retype: schemas, gates, policies, codes.

use serde_json::Value;

use super::{Parsed, Policy, gate, object};
use crate::api::fault::ApiError;
use crate::api::microversion::Version;
use crate::api::schema::{self, field_error, integer, nullable_string, required, string};
use crate::manager::VolumeAction as A;

const MAX_SIZE: i64 = 2_147_483_647;

pub(super) fn extend(name: &str, value: &Value, _: Version) -> Result<Parsed, ApiError> {
    let o = object(name, value, &["new_size"])?;
    let new_size = integer("new_size", required(name, o, "new_size")?, 1, MAX_SIZE)?;
    Parsed::accepted(A::Extend { new_size }, Policy::Member("volume:extend"))
}

pub(super) fn revert(name: &str, value: &Value, version: Version) -> Result<Parsed, ApiError> {
    gate(version, 3, 40)?;
    let o = schema::as_object(name, value)?;
    let snapshot_id = o.get("snapshot_id").map(|v| nullable_string("snapshot_id", v, 0, 255)).transpose()?.flatten();
    Parsed::accepted(A::Revert { snapshot_id }, Policy::Member("volume:revert_to_snapshot"))
}

pub(super) fn retype(name: &str, value: &Value, _: Version) -> Result<Parsed, ApiError> {
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
    Parsed::accepted(A::Retype { new_type, on_demand }, Policy::Member("volume:retype"))
}
