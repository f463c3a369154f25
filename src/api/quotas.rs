//! `os-quota-sets` (show with `usage`, defaults, update, delete),
//! `os-quota-class-sets` (show, update) and `GET /limits`, in Cinder's shapes.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::fault::ApiError;
use super::schema::envelope;
use super::{Reply, Req};
use crate::manager::{Manager, check_quota_keys};

type Result<T> = std::result::Result<T, ApiError>;

/// Cinder validates the project id of a quota set as a 1..255 string.
fn project_id(project: &str) -> Result<()> {
    if project.is_empty() || project.len() > 255 {
        return Err(ApiError::bad_request("Invalid input received: quota_set_name must be 1 to 255 characters."));
    }
    Ok(())
}

pub(super) fn show(m: &Manager, req: &Req, project: &str) -> Result<Reply> {
    project_id(project)?;
    let usage = req.flag("usage")?;
    let set = m.quota_set(project)?;
    let mut out: serde_json::Map<String, Value> = set
        .into_iter()
        .map(|(k, u)| {
            let v = if usage { json!({"limit": u.limit, "in_use": u.in_use, "reserved": 0}) } else { json!(u.limit) };
            (k, v)
        })
        .collect();
    out.insert("id".into(), json!(project));
    Ok(Reply::ok(json!({"quota_set": out})))
}

pub(super) fn defaults(m: &Manager, project: &str) -> Result<Reply> {
    project_id(project)?;
    Ok(Reply::ok(json!({"quota_set": with_id(m.quota_defaults()?, project)})))
}

fn with_id(limits: BTreeMap<String, i64>, id: &str) -> Value {
    let mut out: serde_json::Map<String, Value> = limits.into_iter().map(|(k, v)| (k, json!(v))).collect();
    out.insert("id".into(), json!(id));
    Value::Object(out)
}

/// The `quota_set` (or `quota_class_set`) of a PUT body, checked key by key.
fn requested(m: &Manager, req: &Req, wrapper: &str, class: bool) -> Result<BTreeMap<String, i64>> {
    let body = req.json()?;
    let set = envelope(&body, wrapper, &[])?;
    if set.is_empty() {
        return Err(super::schema::field_error(wrapper, &body[wrapper], "{} does not have enough properties"));
    }
    check_quota_keys(set, &m.quota_type_names()?, class)
        .map_err(|reason| ApiError::bad_request(format!("Invalid input received: {reason}")))
}

pub(super) fn update(m: &Manager, req: &Req, project: &str) -> Result<Reply> {
    project_id(project)?;
    let new = requested(m, req, "quota_set", false)?;
    let limits = m.update_quota_set(project, &new)?;
    Ok(Reply::ok(json!({"quota_set": limits})))
}

pub(super) fn delete(m: &Manager, project: &str) -> Result<Reply> {
    project_id(project)?;
    m.delete_quota_set(project)?;
    Ok(Reply::empty(StatusCode::OK))
}

pub(super) fn show_class(m: &Manager, class: &str) -> Result<Reply> {
    Ok(Reply::ok(json!({"quota_class_set": with_id(m.quota_class(class)?, class)})))
}

pub(super) fn update_class(m: &Manager, req: &Req, class: &str) -> Result<Reply> {
    if class.is_empty() || class.len() > 255 {
        return Err(ApiError::bad_request("Invalid input received: quota_class_name must be 1 to 255 characters."));
    }
    let new = requested(m, req, "quota_class_set", true)?;
    Ok(Reply::ok(json!({"quota_class_set": m.update_quota_class(class, &new)?})))
}

/// `GET /limits`: the caller's project's absolute limits and use; no rate limits.
pub(super) fn limits(m: &Manager, req: &Req) -> Result<Reply> {
    let set = m.quota_set(&req.ctx.project_id)?;
    let get = |k: &str| set.get(k).copied().unwrap_or(crate::manager::QuotaUsage { limit: -1, in_use: 0 });
    Ok(Reply::ok(json!({"limits": {"rate": [], "absolute": {
        "maxTotalVolumes": get("volumes").limit,
        "maxTotalSnapshots": get("snapshots").limit,
        "maxTotalVolumeGigabytes": get("gigabytes").limit,
        "maxTotalBackups": get("backups").limit,
        "maxTotalBackupGigabytes": get("backup_gigabytes").limit,
        "totalVolumesUsed": get("volumes").in_use,
        "totalSnapshotsUsed": get("snapshots").in_use,
        "totalGigabytesUsed": get("gigabytes").in_use,
        "totalBackupsUsed": get("backups").in_use,
        "totalBackupGigabytesUsed": get("backup_gigabytes").in_use,
    }}})))
}
