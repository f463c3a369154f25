//! `os-volume-transfer` (every version) and `volume-transfers` (3.55, with
//! `no_snapshots`): create, list, detail, show, delete, accept. Views per
//! microversion (`cinder/api/v3/views/transfers.py`).

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use super::fault::ApiError;
use super::schema::{boolean, closed, envelope, required, string, uuid_like};
use super::{Reply, Req, bad_method};
use crate::manager::Manager;
use crate::model::Transfer;

type Result<T> = std::result::Result<T, ApiError>;

/// `collection` is the path's first segment, which links repeat.
pub(super) fn route(m: &Manager, req: &Req, collection: &str, rest: &[&str]) -> Result<Reply> {
    let caller = req.caller();
    match (rest, &req.method) {
        ([], &Method::GET) => list(m, req, collection, false),
        ([], &Method::POST) => create(m, req, collection),
        (["detail"], &Method::GET) => list(m, req, collection, true),
        ([id], &Method::GET) => Ok(Reply::ok(json!({"transfer": detail(req, collection, &m.transfer(&caller, id)?)}))),
        ([id], &Method::DELETE) => {
            m.delete_transfer(&caller, id)?;
            Ok(Reply::empty(StatusCode::ACCEPTED))
        }
        ([id, "accept"], &Method::POST) => {
            let body = req.json()?;
            let accept = envelope(&body, "accept", &[])?;
            closed("accept", accept, &["auth_key"])?;
            let key = string("auth_key", required("accept", accept, "auth_key")?, 1, 255)?;
            let t = m.accept_transfer(&caller, id, key.trim())?;
            Ok(Reply::accepted(Some(json!({"transfer": summary(req, collection, &t)}))))
        }
        _ => Err(bad_method()),
    }
}

fn create(m: &Manager, req: &Req, collection: &str) -> Result<Reply> {
    let body = req.json()?;
    let t = envelope(&body, "transfer", &[])?;
    let mut allowed = vec!["volume_id", "name"];
    if collection == "volume-transfers" {
        allowed.push("no_snapshots");
    }
    closed("transfer", t, &allowed)?;
    let volume_id = uuid_like("volume_id", required("transfer", t, "volume_id")?)?;
    let name = match t.get("name") {
        None | Some(Value::Null) => None,
        Some(n) => Some(string("name", n, 0, 255)?.to_string()),
    };
    let no_snapshots = t.get("no_snapshots").map(|v| boolean("no_snapshots", v)).transpose()?.unwrap_or(false);
    let created = m.create_transfer(&req.caller(), &volume_id, name, no_snapshots)?;
    let mut out = detail(req, collection, &created);
    out["auth_key"] = json!(created.auth_key);
    Ok(Reply::accepted(Some(json!({"transfer": out}))))
}

fn list(m: &Manager, req: &Req, collection: &str, with_detail: bool) -> Result<Reply> {
    let all = req.flag("all_tenants")?;
    let items: Vec<Value> = m
        .transfers(&req.caller(), all)?
        .iter()
        .map(|t| if with_detail { detail(req, collection, t) } else { summary(req, collection, t) })
        .collect();
    Ok(Reply::ok(json!({"transfers": items})))
}

/// The summary (list, accept): id, name, volume and links.
fn summary(req: &Req, collection: &str, t: &Transfer) -> Value {
    json!({"id": t.id, "name": t.name, "volume_id": t.volume_id, "links": req.links(collection, &t.id)})
}

/// Show, detail and create: the summary with its creation time and, on
/// `volume-transfers` only (the
/// contrib `os-volume-transfer` keeps the old view), `no_snapshots` and from 3.57
/// the transfer record's projects and whether it was accepted.
fn detail(req: &Req, collection: &str, t: &Transfer) -> Value {
    let mut out = summary(req, collection, t);
    out["created_at"] = json!(t.created_at);
    if collection != "volume-transfers" {
        return out;
    }
    if req.version.at_least(3, 55) {
        out["no_snapshots"] = json!(t.no_snapshots);
    }
    if req.version.at_least(3, 57) {
        out["source_project_id"] = json!(t.project_id);
        out["destination_project_id"] = Value::Null;
        out["accepted"] = json!(false);
    }
    out
}
