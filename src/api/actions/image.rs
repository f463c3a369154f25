//! os-volume_upload_image and os-reimage (3.68).

use serde_json::Value;

use super::{Parsed, Policy, gate, object};
use crate::api::fault::ApiError;
use crate::api::microversion::Version;
use crate::api::schema::{boolean, field_error, nullable_string, required, string, uuid_like};
use crate::manager::VolumeAction as A;

pub(super) fn upload_image(name: &str, value: &Value, version: Version) -> Result<Parsed, ApiError> {
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
    Parsed::accepted(A::UploadImage { force }, policy)
}

pub(super) fn reimage(name: &str, value: &Value, version: Version) -> Result<Parsed, ApiError> {
    gate(version, 3, 68)?;
    let o = object(name, value, &["image_id", "reimage_reserved"])?;
    uuid_like("image_id", required(name, o, "image_id")?)?;
    let reimage_reserved =
        o.get("reimage_reserved").map(|v| boolean("reimage_reserved", v)).transpose()?.unwrap_or(false);
    let rule = if reimage_reserved { "volume:reimage_reserved" } else { "volume:reimage" };
    Parsed::accepted(A::Reimage { reimage_reserved }, Policy::Member(rule))
}
