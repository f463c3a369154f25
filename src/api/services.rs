//! `os-services`: list (filtered by `host` / `binary`), enable, disable and
//! disable-log-reason, in Cinder's shapes (`cinder/api/contrib/services.py`).

use serde_json::{Value, json};

use super::fault::ApiError;
use super::schema::{closed, required, string};
use super::{Reply, Req};
use crate::manager::{Manager, Service};

type Result<T> = std::result::Result<T, ApiError>;

pub(super) fn list(m: &Manager, req: &Req) -> Result<Reply> {
    let items: Vec<Value> = m
        .services()?
        .iter()
        .filter(|s| req.param("host").is_none_or(|h| h == s.host))
        .filter(|s| req.param("binary").is_none_or(|b| b == s.binary))
        .map(|s| view(req, s))
        .collect();
    Ok(Reply::ok(json!({"services": items})))
}

fn view(req: &Req, s: &Service) -> Value {
    let mut out = json!({
        "binary": s.binary,
        "host": s.host,
        "zone": s.zone,
        "status": if s.disabled { "disabled" } else { "enabled" },
        "state": "up",
        "updated_at": s.updated_at,
        "disabled_reason": s.disabled_reason,
        "frozen": false,
        "replication_status": "disabled",
        "active_backend_id": Value::Null,
    });
    if req.version.at_least(3, 7) {
        out["cluster"] = Value::Null;
    }
    if req.version.at_least(3, 49) {
        out["backend_state"] = json!("up");
    }
    out
}

/// `PUT /os-services/{enable|disable|disable-log-reason}`.
pub(super) fn update(m: &Manager, req: &Req, what: &str) -> Result<Reply> {
    let body = req.json()?;
    let o = body.as_object().ok_or_else(ApiError::malformed_body)?;
    let with_reason = what == "disable-log-reason";
    closed("body", o, if with_reason { &["host", "binary", "disabled_reason"] } else { &["host", "binary"] })?;
    let host = string("host", required("body", o, "host")?, 1, 255)?;
    let binary = string("binary", required("body", o, "binary")?, 1, 255)?;
    let reason = match with_reason {
        true => Some(string("disabled_reason", required("body", o, "disabled_reason")?, 1, 255)?.trim().to_string()),
        false => None,
    };
    let s = m.set_service_disabled(&host, &binary, what != "enable", reason.as_deref())?;
    let mut out = json!({
        "host": s.host,
        "service": s.binary,
        "binary": s.binary,
        "disabled": s.disabled,
        "status": if s.disabled { "disabled" } else { "enabled" },
    });
    if what != "disable" {
        out["disabled_reason"] = json!(s.disabled_reason);
    }
    Ok(Reply::ok(out))
}
