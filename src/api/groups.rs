//! Generic volume groups: `group_types` and their `group_specs` (3.11), `groups`
//! (3.13; create-from-src 3.14, volume lists 3.25, reset_status 3.20) and
//! `group_snapshots` (3.14; reset_status 3.19). Bodies checked as Cinder's
//! schemas (`cinder/api/schemas/group*.py`) do; views per operation and
//! microversion (`cinder/api/v3/views/group*.py`).

use std::collections::BTreeMap;

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use super::fault::ApiError;
use super::policy::{self, Level, Rule};
use super::resources::paginate;
use super::schema::{
    as_object, boolean, closed, envelope, field_error, meta_key, metadata, name, nullable_string, required, string,
    uuid_like,
};
use super::{Reply, Req, bad_method};
use crate::manager::{CreateGroup, GroupSource, Manager, UpdateGroup};
use crate::model::{Group, GroupSnapshot, GroupType};

type Result<T> = std::result::Result<T, ApiError>;
type Obj = serde_json::Map<String, Value>;

// ---- group types ---------------------------------------------------------------

pub(super) fn group_types(m: &Manager, req: &Req, rest: &[&str]) -> Result<Reply> {
    let caller = req.caller();
    match (rest, &req.method) {
        ([], &Method::GET) => list_group_types(m, req),
        ([], &Method::POST) => create_group_type(m, req),
        (["default"], &Method::GET) => Err(ApiError::not_found("Default group type can not be found.")),
        ([id], &Method::GET) => Ok(Reply::ok(json!({"group_type": group_type(req, &m.group_type(&caller, id)?)}))),
        ([id], &Method::PUT) => update_group_type(m, req, id),
        ([id], &Method::DELETE) => {
            m.delete_group_type(id)?;
            Ok(Reply::empty(StatusCode::ACCEPTED))
        }
        ([id, "group_specs"], _) => group_specs(m, req, id, None),
        ([id, "group_specs", key], _) => group_specs(m, req, id, Some(key)),
        _ => Err(bad_method()),
    }
}

/// Cinder's `_get_group_types`: everyone sees the public types; an admin may ask
/// for the private ones (`is_public=false`) or all (`is_public=none`).
fn list_group_types(m: &Manager, req: &Req) -> Result<Reply> {
    let wanted = match req.param("is_public") {
        Some(v) if req.ctx.is_admin && v.eq_ignore_ascii_case("none") => None,
        Some(v) if req.ctx.is_admin => Some(boolean("is_public", &json!(v))?),
        _ => Some(true),
    };
    let all: Vec<Value> = m
        .group_types(&req.caller())?
        .iter()
        .filter(|t| wanted.is_none_or(|public| t.is_public == public))
        .map(|t| group_type(req, t))
        .collect();
    Ok(Reply::ok(json!({"group_types": all})))
}

fn optional_text(obj: &Obj, key: &str) -> Result<Option<String>> {
    obj.get(key).map(|v| nullable_string(key, v, 0, 255)).transpose().map(Option::flatten)
}

fn specs_of(field: &str, value: &Value) -> Result<BTreeMap<String, String>> {
    metadata(field, value, meta_key, 255)
}

fn create_group_type(m: &Manager, req: &Req) -> Result<Reply> {
    let body = req.json()?;
    let t = envelope(&body, "group_type", &[])?;
    closed("group_type", t, &["name", "description", "is_public", "group_specs"])?;
    let type_name = string("name", required("group_type", t, "name")?, 1, 255)?.trim().to_string();
    if type_name.is_empty() {
        return Err(field_error("name", &t["name"], "name must not be blank"));
    }
    let description = optional_text(t, "description")?;
    let is_public = t.get("is_public").map(|v| boolean("is_public", v)).transpose()?.unwrap_or(true);
    let specs = match t.get("group_specs") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(s) => specs_of("group_specs", s)?,
    };
    let created = m.create_group_type(&type_name, description, is_public, &specs)?;
    Ok(Reply::accepted(Some(json!({"group_type": group_type(req, &created)}))))
}

fn update_group_type(m: &Manager, req: &Req, id: &str) -> Result<Reply> {
    let body = req.json()?;
    let t = envelope(&body, "group_type", &[])?;
    closed("group_type", t, &["name", "description", "is_public"])?;
    let new_name = optional_text(t, "name")?;
    if new_name.as_ref().is_some_and(|n| n.trim().is_empty()) {
        return Err(ApiError::bad_request("Group type name can not be empty."));
    }
    let description = optional_text(t, "description")?;
    let is_public = t.get("is_public").filter(|v| !v.is_null()).map(|v| boolean("is_public", v)).transpose()?;
    if new_name.is_none() && description.is_none() && is_public.is_none() {
        return Err(ApiError::bad_request("Specify group type name, description or a combination thereof."));
    }
    let updated = m.update_group_type(id, new_name.map(|n| n.trim().to_string()), description, is_public)?;
    Ok(Reply::ok(json!({"group_type": group_type(req, &updated)})))
}

/// Every spec route is admin-only by Cinder's default policy (the table checked).
fn group_specs(m: &Manager, req: &Req, id: &str, key: Option<&str>) -> Result<Reply> {
    let t = m.group_type(&req.caller(), id)?;
    if t.id != id {
        return Err(crate::manager::group_type_not_found(id).into());
    }
    match (&req.method, key) {
        (&Method::GET, None) => Ok(Reply::ok(json!({"group_specs": t.group_specs}))),
        (&Method::GET, Some(key)) => {
            let value = t
                .group_specs
                .get(key)
                .ok_or_else(|| ApiError::not_found(format!("Group Type {id} has no specs with key {key}.")))?;
            Ok(Reply::ok(json!({key: value})))
        }
        (&Method::POST, None) => {
            let body = req.json()?;
            let specs = specs_of("group_specs", &Value::Object(envelope(&body, "group_specs", &[])?.clone()))?;
            m.set_group_specs(id, &specs)?;
            Ok(Reply::accepted(Some(json!({"group_specs": specs}))))
        }
        (&Method::PUT, Some(key)) => {
            let body = req.json()?;
            let specs = specs_of("group_specs", &body)?;
            if specs.len() != 1 {
                return Err(ApiError::bad_request("Request body contains too many items."));
            }
            if !specs.contains_key(key) {
                return Err(ApiError::bad_request("Request body and URI mismatch"));
            }
            m.set_group_specs(id, &specs)?;
            Ok(Reply::ok(json!(specs)))
        }
        (&Method::DELETE, Some(key)) => {
            m.delete_group_spec(id, key)?;
            Ok(Reply::empty(StatusCode::ACCEPTED))
        }
        _ => Err(bad_method()),
    }
}

/// Index, show, create and update alike; the specs only for admins
/// (`group:access_group_types_specs`).
fn group_type(req: &Req, t: &GroupType) -> Value {
    let mut out = json!({"id": t.id, "name": t.name, "description": t.description, "is_public": t.is_public});
    if req.ctx.is_admin {
        out["group_specs"] = json!(t.group_specs);
    }
    out
}

// ---- groups --------------------------------------------------------------------

/// `project` is the owner the policy table resolved (for the per-action rules).
pub(super) fn groups(m: &std::sync::Arc<Manager>, req: &Req, rest: &[&str], project: &str) -> Result<Reply> {
    let caller = req.caller();
    match (rest, &req.method) {
        ([], &Method::GET) => list_groups(m, req, false),
        ([], &Method::POST) => create_group(m, req),
        (["detail"], &Method::GET) => list_groups(m, req, true),
        (["action"], &Method::POST) => create_group_from_src(m, req),
        ([id], &Method::GET) => {
            let g = m.group(&caller, id)?;
            Ok(Reply::ok(json!({"group": group_detail(m, req, &g)?})))
        }
        ([id], &Method::PUT) => update_group(m, req, id),
        ([id, "action"], &Method::POST) => group_action(m, req, id, project),
        _ => Err(bad_method()),
    }
}

/// Cinder's sort keys for groups and group snapshots (newest first by default).
const SORT_KEYS: &[&str] = &["created_at", "id", "name", "status"];

/// The value of one of `SORT_KEYS` among a record's (created_at, id, name, status).
fn record_sort_key(key: &str, created_at: &str, id: &str, name: &Option<String>, status: &str) -> Option<String> {
    Some(match key {
        "created_at" => created_at.to_string(),
        "id" => id.to_string(),
        "name" => name.clone().unwrap_or_default(),
        "status" => status.to_string(),
        _ => return None,
    })
}

fn group_sort_key(g: &Group, key: &str) -> Option<String> {
    record_sort_key(key, &g.created_at, &g.id, &g.name, g.status.as_str())
}

fn group_snapshot_sort_key(g: &GroupSnapshot, key: &str) -> Option<String> {
    record_sort_key(key, &g.created_at, &g.id, &g.name, g.status.as_str())
}

/// Sorted and paged as Cinder's common pagination; without next links, which
/// tempest's closed list schemas do not allow.
fn list_groups(m: &Manager, req: &Req, with_detail: bool) -> Result<Reply> {
    let all = req.flag("all_tenants")?;
    let groups = m.groups(&req.caller(), all)?;
    let (page, _, _) = paginate(req, groups, |g| g.id.clone(), group_sort_key, SORT_KEYS, ("created_at", true))?;
    let mut items = Vec::new();
    for g in page {
        items.push(if with_detail { group_detail(m, req, &g)? } else { group_summary(&g) });
    }
    Ok(Reply::ok(json!({"groups": items})))
}

fn create_group(m: &Manager, req: &Req) -> Result<Reply> {
    let body = req.json()?;
    let g = envelope(&body, "group", &[])?;
    closed("group", g, &["group_type", "volume_types", "name", "description", "availability_zone"])?;
    let group_type = string("group_type", required("group", g, "group_type")?, 1, 255)?;
    let types_value = required("group", g, "volume_types")?;
    let types = types_value
        .as_array()
        .ok_or_else(|| field_error("volume_types", types_value, &format!("{types_value} is not of type 'array'")))?;
    if types.is_empty() {
        return Err(field_error("volume_types", types_value, "[] is too short"));
    }
    let volume_types = types.iter().map(|t| string("volume_types", t, 1, 255)).collect::<Result<Vec<_>>>()?;
    let created = m.create_group(
        &req.caller(),
        CreateGroup {
            name: g.get("name").map(|v| name("name", v)).transpose()?.flatten(),
            description: g.get("description").map(|v| name("description", v)).transpose()?.flatten(),
            group_type,
            volume_types,
            availability_zone: optional_text(g, "availability_zone")?,
        },
    )?;
    Ok(Reply::accepted(Some(json!({"group": group_summary(&created)}))))
}

fn create_group_from_src(m: &std::sync::Arc<Manager>, req: &Req) -> Result<Reply> {
    let body = req.json()?;
    let src = envelope(&body, "create-from-src", &[])?;
    closed("create-from-src", src, &["group_snapshot_id", "source_group_id", "name", "description"])?;
    let id_of = |key: &str| src.get(key).filter(|v| !v.is_null()).map(|v| uuid_like(key, v)).transpose();
    let source = match (id_of("group_snapshot_id")?, id_of("source_group_id")?) {
        (Some(gs), None) => GroupSource::GroupSnapshot(gs),
        (None, Some(g)) => GroupSource::Group(g),
        (None, None) => {
            return Err(ApiError::bad_request(
                "Invalid input received: Either 'group_snapshot_id' or 'source_group_id' must be provided to create \
                 group from source.",
            ));
        }
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "Invalid input received: Cannot create group from both a group snapshot and a source group.",
            ));
        }
    };
    let new_name = src.get("name").map(|v| name("name", v)).transpose()?.flatten();
    let description = src.get("description").map(|v| name("description", v)).transpose()?.flatten();
    let created = m.create_group_from_src(&req.caller(), source, new_name, description)?;
    Ok(Reply::accepted(Some(json!({"group": group_summary(&created)}))))
}

/// Comma-separated volume ids, as Cinder takes them (empty entries dropped).
fn volume_ids(field: &str, value: Option<&Value>) -> Result<Vec<String>> {
    let Some(text) = value.map(|v| nullable_string(field, v, 0, 65535)).transpose()?.flatten() else {
        return Ok(Vec::new());
    };
    Ok(text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect())
}

fn update_group(m: &Manager, req: &Req, id: &str) -> Result<Reply> {
    let body = req.json()?;
    let g = envelope(&body, "group", &[])?;
    closed("group", g, &["name", "description", "add_volumes", "remove_volumes"])?;
    let change = UpdateGroup {
        name: g.get("name").map(|v| name("name", v)).transpose()?.flatten(),
        description: g.get("description").map(|v| name("description", v)).transpose()?.flatten(),
        add_volumes: volume_ids("add_volumes", g.get("add_volumes"))?,
        remove_volumes: volume_ids("remove_volumes", g.get("remove_volumes"))?,
    };
    m.update_group(&req.caller(), id, change)?;
    Ok(Reply::empty(StatusCode::ACCEPTED))
}

/// The one action of the body: its own rule and microversion.
fn single_action(body: &Value) -> Result<(&str, &Obj)> {
    let top = body.as_object().ok_or_else(ApiError::malformed_body)?;
    if top.len() != 1 {
        return Err(ApiError::malformed_body());
    }
    let (action, value) = top.iter().next().ok_or_else(ApiError::malformed_body)?;
    Ok((action.as_str(), as_object(action, value)?))
}

fn no_such_action(name: &str) -> ApiError {
    ApiError::bad_request(format!(
        "There is no such action: {name}. Verify the request body and Content-Type header and try again."
    ))
}

fn reset_status_of(action: &str, o: &Obj) -> Result<String> {
    closed(action, o, &["status"])?;
    Ok(string("status", required(action, o, "status")?, 1, 255)?.to_lowercase())
}

fn group_action(m: &std::sync::Arc<Manager>, req: &Req, id: &str, project: &str) -> Result<Reply> {
    let body = req.json()?;
    let (action, o) = single_action(&body)?;
    let caller = req.caller();
    match action {
        "delete" => {
            closed(action, o, &["delete-volumes"])?;
            let delete_volumes = o.get("delete-volumes").map(|v| boolean("delete-volumes", v)).transpose()?;
            policy::authorize(&req.ctx, Rule { name: "group:delete", level: Level::Member }, project)?;
            m.delete_group(&caller, id, delete_volumes.unwrap_or(false))?;
        }
        "reset_status" if req.version.at_least(3, 20) => {
            let status = reset_status_of(action, o)?;
            policy::authorize(&req.ctx, Rule { name: "group:reset_status", level: Level::Admin }, project)?;
            m.reset_group_status(&caller, id, &status)?;
        }
        other => return Err(no_such_action(other)),
    }
    Ok(Reply::empty(StatusCode::ACCEPTED))
}

/// `POST /groups` and create-from-src answer it, and `GET /groups`.
fn group_summary(g: &Group) -> Value {
    json!({"id": g.id, "name": g.name})
}

/// Show and detail: the fields of each microversion band; the member volumes
/// at 3.25 with `list_volume`, the project at 3.58 for admins.
fn group_detail(m: &Manager, req: &Req, g: &Group) -> Result<Value> {
    let mut out = json!({
        "id": g.id,
        "status": g.status.as_str(),
        "availability_zone": g.availability_zone,
        "created_at": g.created_at,
        "name": g.name,
        "description": g.description,
        "group_type": g.group_type_id,
        "volume_types": g.volume_types,
    });
    if req.version.at_least(3, 14) {
        out["group_snapshot_id"] = json!(g.group_snapshot_id);
        out["source_group_id"] = json!(g.source_group_id);
    }
    if req.version.at_least(3, 25) && req.flag("list_volume")? {
        out["volumes"] = json!(m.group_volume_ids(&g.id)?);
    }
    if req.version.at_least(3, 38) {
        out["replication_status"] = Value::Null;
    }
    if req.version.at_least(3, 58) && req.ctx.is_admin {
        out["project_id"] = json!(g.project_id);
    }
    Ok(out)
}

// ---- group snapshots -----------------------------------------------------------

pub(super) fn group_snapshots(m: &std::sync::Arc<Manager>, req: &Req, rest: &[&str]) -> Result<Reply> {
    let caller = req.caller();
    match (rest, &req.method) {
        ([], &Method::GET) => list_group_snapshots(m, req, false),
        ([], &Method::POST) => create_group_snapshot(m, req),
        (["detail"], &Method::GET) => list_group_snapshots(m, req, true),
        ([id], &Method::GET) => {
            let gs = m.group_snapshot(&caller, id)?;
            Ok(Reply::ok(json!({"group_snapshot": group_snapshot_detail(req, &gs)})))
        }
        ([id], &Method::DELETE) => {
            m.delete_group_snapshot(&caller, id)?;
            Ok(Reply::empty(StatusCode::ACCEPTED))
        }
        ([id, "action"], &Method::POST) => {
            let body = req.json()?;
            match single_action(&body)? {
                // The table's rule (admin, 3.19) was checked: it is the only action.
                ("reset_status", o) => {
                    let status = reset_status_of("reset_status", o)?;
                    m.reset_group_snapshot_status(&caller, id, &status)?;
                    Ok(Reply::empty(StatusCode::ACCEPTED))
                }
                (other, _) => Err(no_such_action(other)),
            }
        }
        _ => Err(bad_method()),
    }
}

fn list_group_snapshots(m: &Manager, req: &Req, with_detail: bool) -> Result<Reply> {
    let all = req.flag("all_tenants")?;
    let found = m.group_snapshots(&req.caller(), all)?;
    let (page, _, _) =
        paginate(req, found, |g| g.id.clone(), group_snapshot_sort_key, SORT_KEYS, ("created_at", true))?;
    let items: Vec<Value> = page
        .iter()
        .map(|gs| if with_detail { group_snapshot_detail(req, gs) } else { group_snapshot_summary(gs) })
        .collect();
    Ok(Reply::ok(json!({"group_snapshots": items})))
}

fn create_group_snapshot(m: &std::sync::Arc<Manager>, req: &Req) -> Result<Reply> {
    let body = req.json()?;
    let g = envelope(&body, "group_snapshot", &[])?;
    closed("group_snapshot", g, &["group_id", "name", "description"])?;
    let group_id = uuid_like("group_id", required("group_snapshot", g, "group_id")?)?;
    let new_name = g.get("name").map(|v| name("name", v)).transpose()?.flatten();
    let description = g.get("description").map(|v| name("description", v)).transpose()?.flatten();
    let created = m.create_group_snapshot(&req.caller(), &group_id, new_name, description)?;
    Ok(Reply::accepted(Some(json!({"group_snapshot": group_snapshot_summary(&created)}))))
}

/// Create and `GET /group_snapshots`: with the group type (Cinder's CG migration).
fn group_snapshot_summary(gs: &GroupSnapshot) -> Value {
    json!({"id": gs.id, "name": gs.name, "group_type_id": gs.group_type_id})
}

fn group_snapshot_detail(req: &Req, gs: &GroupSnapshot) -> Value {
    let mut out = json!({
        "id": gs.id,
        "group_id": gs.group_id,
        "group_type_id": gs.group_type_id,
        "status": gs.status.as_str(),
        "created_at": gs.created_at,
        "name": gs.name,
        "description": gs.description,
    });
    if req.version.at_least(3, 58) && req.ctx.is_admin {
        out["project_id"] = json!(gs.project_id);
    }
    out
}
