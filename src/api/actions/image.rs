//! os-volume_upload_image and os-reimage (3.68).

use serde_json::Value;

use super::{Parsed, Policy, gate, object};
use crate::api::fault::ApiError;
use crate::api::microversion::Version;
use crate::api::schema::{boolean, field_error, nullable_string, required, string, uuid_like};
use crate::image::Visibility;
use crate::manager::{UploadImage, VolumeAction as A};

pub(super) fn upload_image(name: &str, value: &Value, version: Version) -> Result<Parsed, ApiError> {
    let mut allowed = vec!["image_name", "force", "disk_format", "container_format"];
    if version.at_least(3, 1) {
        allowed.extend(["visibility", "protected"]);
    }
    let o = object(name, value, &allowed)?;
    let image_name = string("image_name", required(name, o, "image_name")?, 1, 255)?;
    let force = o.get("force").map(|v| boolean("force", v)).transpose()?.unwrap_or(false);
    let mut disk_format = "raw".to_string();
    if let Some(v) = o.get("disk_format") {
        let ok = ["raw", "vmdk", "vdi", "qcow2", "vhd", "vhdx", "ploop"];
        match v.as_str().filter(|s| ok.contains(s)) {
            Some(s) => disk_format = s.to_string(),
            None => return Err(field_error("disk_format", v, &format!("{v} is not one of {ok:?}"))),
        }
    }
    let container_format = match o.get("container_format") {
        Some(v) => nullable_string("container_format", v, 0, 255)?.unwrap_or_else(|| "bare".to_string()),
        None => "bare".to_string(),
    };
    let mut policy = Policy::Member("volume_extension:volume_actions:upload_image");
    let mut visibility = Visibility::Private;
    if let Some(v) = o.get("visibility") {
        visibility = v
            .as_str()
            .and_then(Visibility::parse)
            .ok_or_else(|| field_error("visibility", v, &format!("{v} is not one of {:?}", Visibility::NAMES)))?;
        if visibility == Visibility::Public {
            policy = Policy::Admin("volume_extension:volume_actions:upload_public");
        }
    }
    let protected = o.get("protected").map(|v| boolean("protected", v)).transpose()?.unwrap_or(false);
    let req = UploadImage { image_name, force, disk_format, container_format, visibility, protected };
    Parsed::accepted(A::UploadImage(req), policy)
}

pub(super) fn reimage(name: &str, value: &Value, version: Version) -> Result<Parsed, ApiError> {
    gate(version, 3, 68)?;
    let o = object(name, value, &["image_id", "reimage_reserved"])?;
    let image_id = uuid_like("image_id", required(name, o, "image_id")?)?;
    let reimage_reserved =
        o.get("reimage_reserved").map(|v| boolean("reimage_reserved", v)).transpose()?.unwrap_or(false);
    let rule = if reimage_reserved { "volume:reimage_reserved" } else { "volume:reimage" };
    Parsed::accepted(A::Reimage { image_id, reimage_reserved }, Policy::Member(rule))
}
