//! `/v3/attachments` (3.27+; `os-complete` from 3.44, `mode` from 3.54): the
//! attach API Nova uses. Create, update, complete and delete need the member role
//! of the volume's project, showing and listing the reader role; another
//! project's attachment is "not found".

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use super::fault::ApiError;
use super::resources::{next_link, paginate};
use super::schema::{self, closed, envelope, field_error, required, uuid_like};
use super::{Reply, Req, bad_method};
use crate::manager::{AttachmentView, Manager};
use crate::model::AttachMode;

type Result<T> = std::result::Result<T, ApiError>;

/// The filters Cinder accepts on attachments (resource_filters.json), and
/// Cinder's `instance_id` spelling of `instance_uuid`.
const FILTERS: &[&str] = &["volume_id", "instance_id", "status", "attach_status"];
const PAGING: &[&str] = &["marker", "limit", "offset", "sort", "sort_key", "sort_dir", "all_tenants"];

pub(super) fn route(m: &Manager, req: &Req, rest: &[&str]) -> Result<Reply> {
    match (rest, &req.method) {
        ([], &Method::GET) => list(m, req, false),
        ([], &Method::POST) => create(m, req),
        (["detail"], &Method::GET) => list(m, req, true),
        ([id], &Method::GET) => {
            let view = m.attachment(&req.caller(), id)?;
            Ok(Reply::ok(json!({"attachment": detail(&view)})))
        }
        ([id], &Method::PUT) => update(m, req, id),
        ([id], &Method::DELETE) => {
            let remaining = m.attachment_delete(&req.caller(), id)?;
            Ok(Reply::ok(json!({"attachments": remaining.iter().map(summary).collect::<Vec<_>>()})))
        }
        ([id, "action"], &Method::POST) => complete(m, req, id),
        ([] | ["detail"] | [_] | [_, "action"], _) => Err(bad_method()),
        _ => Err(ApiError::resource_not_found()),
    }
}

fn create(m: &Manager, req: &Req) -> Result<Reply> {
    let body = req.json()?;
    let a = envelope(&body, "attachment", &[])?;
    let mut allowed = vec!["volume_uuid", "instance_uuid", "connector"];
    if req.version.at_least(3, 54) {
        allowed.push("mode");
    }
    closed("attachment", a, &allowed)?;
    let volume_id = uuid_like("volume_uuid", required("attachment", a, "volume_uuid")?)?;
    let instance_uuid = match a.get("instance_uuid") {
        None | Some(Value::Null) => None,
        Some(v) => Some(uuid_like("instance_uuid", v)?),
    };
    // An empty connector is none (cinderclient sends {} to only reserve).
    let connector = match a.get("connector") {
        None | Some(Value::Null) => None,
        Some(Value::Object(o)) if o.is_empty() => None,
        Some(c @ Value::Object(_)) => Some(c.clone()),
        Some(other) => {
            return Err(field_error("connector", other, &format!("{other} is not of type 'object', 'null'")));
        }
    };
    let mode = match a.get("mode") {
        None => None,
        Some(v) => Some(
            v.as_str()
                .and_then(|s| s.parse::<AttachMode>().ok())
                .ok_or_else(|| field_error("mode", v, &format!("{v} is not one of ['rw', 'ro']")))?,
        ),
    };
    let caller = req.caller();
    let view = m.attachment_create(&caller, &volume_id, instance_uuid, connector, mode)?;
    Ok(Reply::ok(json!({"attachment": detail(&view)})))
}

fn update(m: &Manager, req: &Req, id: &str) -> Result<Reply> {
    let body = req.json()?;
    let a = envelope(&body, "attachment", &[])?;
    closed("attachment", a, &["connector"])?;
    let connector = required("attachment", a, "connector")?;
    let o = schema::as_object("connector", connector)?;
    if o.is_empty() {
        return Err(field_error("connector", connector, "{} does not have enough properties"));
    }
    let caller = req.caller();
    let updated = m.attachment_update(&caller, id, connector)?;
    Ok(Reply::ok(json!({"attachment": detail(&updated)})))
}

fn complete(m: &Manager, req: &Req, id: &str) -> Result<Reply> {
    let body = req.json()?;
    let top = body.as_object().ok_or_else(ApiError::malformed_body)?;
    if !top.contains_key("os-complete") {
        return Err(field_error("body", &body, "'os-complete' is a required property"));
    }
    closed("body", top, &["os-complete"])?;
    let caller = req.caller();
    m.attachment_complete(&caller, id)?;
    Ok(Reply::empty(StatusCode::NO_CONTENT))
}

fn list(m: &Manager, req: &Req, with_detail: bool) -> Result<Reply> {
    let all = req.flag("all_tenants")?;
    let mut views = m.attachments(&req.caller(), all)?;
    for (key, value) in &req.query_pairs {
        if PAGING.contains(&key.as_str()) {
            continue;
        }
        if !FILTERS.contains(&key.as_str()) {
            return Err(ApiError::bad_request(format!("Invalid input received: Invalid filter keys: {key}")));
        }
        views.retain(|v| field(v, key).as_deref() == Some(value.as_str()));
    }
    let (page, _, next) = paginate(req, views, |v| v.attachment.id.clone(), field, SORT_KEYS, ("created_at", true))?;
    let items: Vec<Value> = page.iter().map(|v| if with_detail { detail(v) } else { summary(v) }).collect();
    let mut out = json!({"attachments": items});
    if let Some(marker) = next {
        let path = if with_detail { "attachments/detail" } else { "attachments" };
        out["attachments_links"] = json!([{"rel": "next", "href": next_link(req, path, &marker)}]);
    }
    Ok(Reply::ok(out))
}

/// The keys `field` knows, by which attachments sort.
const SORT_KEYS: &[&str] =
    &["id", "volume_id", "instance_id", "instance_uuid", "status", "attach_status", "created_at", "attached_at"];

fn field(v: &AttachmentView, key: &str) -> Option<String> {
    let a = &v.attachment;
    Some(match key {
        "id" => a.id.clone(),
        "volume_id" => a.volume_id.clone(),
        "instance_id" | "instance_uuid" => a.instance_uuid.clone().unwrap_or_default(),
        "status" | "attach_status" => a.attach_status.to_string(),
        "created_at" | "attached_at" => a.attach_time.clone().unwrap_or_default(),
        _ => return None,
    })
}

/// Cinder's summary view.
fn summary(v: &AttachmentView) -> Value {
    let a = &v.attachment;
    json!({"id": a.id, "status": a.attach_status.as_str(), "instance": a.instance_uuid, "volume_id": a.volume_id})
}

/// Cinder's detail view: times as '' when unset.
fn detail(v: &AttachmentView) -> Value {
    let a = &v.attachment;
    let mut out = summary(v);
    out["attached_at"] = json!(a.attach_time.clone().unwrap_or_default());
    out["detached_at"] = json!(a.detach_time.clone().unwrap_or_default());
    out["attach_mode"] = json!(a.attach_mode.as_str());
    out["connection_info"] = v.connection_info.clone().unwrap_or_else(|| json!({}));
    out
}
