//! os-set_image_metadata, os-unset_image_metadata, os-show_image_metadata,
//! os-set_bootable and os-update_readonly_flag.

use serde_json::Value;

use super::{Parsed, Policy, object};
use crate::api::fault::ApiError;
use crate::api::microversion::Version;
use crate::api::schema::{self, boolean, required, string};
use crate::manager::VolumeAction as A;

pub(super) fn set_image_metadata(name: &str, value: &Value, _: Version) -> Result<Parsed, ApiError> {
    let o = object(name, value, &["metadata"])?;
    let map = schema::metadata("metadata", required(name, o, "metadata")?, schema::meta_key, 65535)?;
    Parsed::ok(A::SetImageMetadata(map), Policy::Member("volume_extension:volume_image_metadata:set"))
}

pub(super) fn unset_image_metadata(name: &str, value: &Value, _: Version) -> Result<Parsed, ApiError> {
    let o = object(name, value, &["key"])?;
    let key = string("key", required(name, o, "key")?, 1, 255)?;
    Parsed::ok(A::UnsetImageMetadata { key }, Policy::Member("volume_extension:volume_image_metadata:remove"))
}

pub(super) fn show_image_metadata(_: &str, _: &Value, _: Version) -> Result<Parsed, ApiError> {
    Parsed::ok(A::ShowImageMetadata, Policy::Reader("volume:get_volume_metadata"))
}

pub(super) fn set_bootable(name: &str, value: &Value, _: Version) -> Result<Parsed, ApiError> {
    let o = object(name, value, &["bootable"])?;
    let bootable = boolean("bootable", required(name, o, "bootable")?)?;
    Parsed::ok(A::SetBootable(bootable), Policy::Member("volume:update"))
}

pub(super) fn update_readonly_flag(name: &str, value: &Value, _: Version) -> Result<Parsed, ApiError> {
    let o = object(name, value, &["readonly"])?;
    let readonly = boolean("readonly", required(name, o, "readonly")?)?;
    Parsed::accepted(A::UpdateReadonly(readonly), Policy::Member("volume:update_readonly_flag"))
}
