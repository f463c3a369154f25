//! `/v3/messages` (3.3+): user messages about failed asynchronous work, as Cinder
//! serves them. Listing and showing need the project reader role, deleting the
//! member role; an admin sees every project's. Pagination and sorting from 3.5,
//! the filters of Cinder's resource_filters.json from 3.31.

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::fault::ApiError;
use super::resources::{next_link, paginate};
use super::{Reply, Req};
use crate::manager::Manager;
use crate::model::Message;

type Result<T> = std::result::Result<T, ApiError>;

/// The filters Cinder accepts on messages (etc/cinder/resource_filters.json).
const FILTERS: &[&str] = &["resource_uuid", "resource_type", "event_id", "request_id", "message_level"];
/// Query keys that are not filters.
const PAGING: &[&str] = &["marker", "limit", "offset", "sort", "sort_key", "sort_dir"];

/// The keys `field` knows, by which messages sort.
const SORT_KEYS: &[&str] = &[
    "id",
    "created_at",
    "expires_at",
    "guaranteed_until",
    "event_id",
    "request_id",
    "resource_type",
    "resource_uuid",
    "message_level",
];

fn field(m: &Message, key: &str) -> Option<String> {
    Some(match key {
        "id" => m.id.clone(),
        "created_at" => m.created_at.clone(),
        "expires_at" | "guaranteed_until" => m.expires_at.clone(),
        "event_id" => m.event_id.clone(),
        "request_id" => m.request_id.clone(),
        "resource_type" => m.resource_type.to_string(),
        "resource_uuid" => m.resource_uuid.clone().unwrap_or_default(),
        "message_level" => m.message_level.clone(),
        _ => return None,
    })
}

pub(super) fn list(m: &Manager, req: &Req) -> Result<Reply> {
    let mut messages = m.messages(&req.caller())?;
    if req.version.at_least(3, 31) {
        for (key, value) in &req.query_pairs {
            if PAGING.contains(&key.as_str()) {
                continue;
            }
            if !FILTERS.contains(&key.as_str()) {
                return Err(ApiError::bad_request(format!("Invalid input received: Invalid filter keys: {key}")));
            }
            messages.retain(|msg| field(msg, key).as_deref() == Some(value.as_str()));
        }
    }
    let view = |msg: &Message| message_view(req, msg);
    if !req.version.at_least(3, 5) {
        messages.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
        return Ok(Reply::ok(json!({"messages": messages.iter().map(view).collect::<Vec<_>>()})));
    }
    let (page, _, next) = paginate(req, messages, |msg| msg.id.clone(), field, SORT_KEYS, ("created_at", true))?;
    let mut out = json!({"messages": page.iter().map(view).collect::<Vec<_>>()});
    if let Some(marker) = next {
        out["messages_links"] = json!([{"rel": "next", "href": next_link(req, "messages", &marker)}]);
    }
    Ok(Reply::ok(out))
}

pub(super) fn show(m: &Manager, req: &Req, id: &str) -> Result<Reply> {
    let msg = m.message(&req.caller(), id)?;
    Ok(Reply::ok(json!({"message": message_view(req, &msg)})))
}

pub(super) fn delete(m: &Manager, req: &Req, id: &str) -> Result<Reply> {
    m.delete_message(&req.caller(), id)?;
    Ok(Reply::empty(StatusCode::NO_CONTENT))
}

/// Cinder's message view: resource fields only when set.
fn message_view(req: &Req, m: &Message) -> Value {
    let mut out = json!({
        "id": m.id,
        "event_id": m.event_id,
        "user_message": m.user_message,
        "message_level": m.message_level,
        "created_at": m.created_at,
        "guaranteed_until": m.expires_at,
        "request_id": m.request_id,
        "links": req.links("messages", &m.id),
        "resource_type": m.resource_type.as_str(),
    });
    if let Some(uuid) = &m.resource_uuid {
        out["resource_uuid"] = json!(uuid);
    }
    out
}
