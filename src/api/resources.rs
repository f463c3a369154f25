//! Routes and handlers: volumes (and their metadata), the action endpoint,
//! snapshots, volume types and extra specs, and manageable volumes.

use std::collections::BTreeMap;

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use super::actions::{self, Parsed};
use super::fault::ApiError;
use super::policy;
use super::schema::{
    self, boolean, closed, envelope, field_error, integer, meta_key, metadata, name, optional_metadata, required,
    spec_key, string, uuid_like,
};
use super::views::{self, ViewContext};
use super::{Reply, Req, bad_method};
use crate::manager::{
    ActionOutcome, CreateSnapshot, CreateVolume, ManageSnapshot, ManageVolume, Manager, MetadataChange, UpdateVolume,
};
use crate::model::{DEFAULT_TYPE_NAME, SnapshotStatus, Volume};

type Result<T> = std::result::Result<T, ApiError>;

pub fn route(m: &std::sync::Arc<Manager>, req: &Req, path: &[&str]) -> Result<Reply> {
    let method = &req.method;
    // The one policy check of every route (api/policy.rs): no route without a rule.
    let route = policy::lookup(method, path, req.version)?;
    let project = owner_project(m, req, route.owner, path)?;
    policy::authorize(&req.ctx, route.rule, &project)?;
    match path {
        ["volumes"] => match *method {
            Method::GET => list_volumes(m, req, false),
            Method::POST => create_volume(m, req),
            _ => Err(bad_method()),
        },
        ["volumes", "detail"] => only(method, Method::GET, || list_volumes(m, req, true)),
        ["volumes", "summary"] => only(method, Method::GET, || volume_summary(m, req)),
        ["volumes", id] => match *method {
            Method::GET => show_volume(m, req, id),
            Method::PUT => update_volume(m, req, id),
            Method::DELETE => delete_volume(m, req, id),
            _ => Err(bad_method()),
        },
        ["volumes", id, "action"] => only(method, Method::POST, || volume_action(m, req, id, &project)),
        ["volumes", id, "metadata"] => volume_metadata(m, req, id, None),
        ["volumes", id, "metadata", key] => volume_metadata(m, req, id, Some(key)),
        ["snapshots"] => match *method {
            Method::GET => list_snapshots(m, req, false),
            Method::POST => create_snapshot(m, req),
            _ => Err(bad_method()),
        },
        ["snapshots", "detail"] => only(method, Method::GET, || list_snapshots(m, req, true)),
        ["snapshots", id] => match *method {
            Method::GET => {
                let s = m.snapshot(&req.caller(), id)?;
                Ok(Reply::ok(json!({"snapshot": views::snapshot_detail(&view_ctx(m, req)?.view(), &s)})))
            }
            Method::PUT => update_snapshot(m, req, id),
            Method::DELETE => {
                m.delete_snapshot(&req.caller(), id, false)?;
                Ok(Reply::empty(StatusCode::ACCEPTED))
            }
            _ => Err(bad_method()),
        },
        ["snapshots", id, "metadata"] => snapshot_metadata(m, req, id, None),
        ["snapshots", id, "metadata", key] => snapshot_metadata(m, req, id, Some(key)),
        ["snapshots", id, "action"] => only(method, Method::POST, || snapshot_action(m, req, id, &project)),
        ["types"] => match *method {
            Method::GET => list_types(m, req),
            Method::POST => create_type(m, req),
            _ => Err(bad_method()),
        },
        ["types", "default"] => only(method, Method::GET, || {
            let t = m.volume_type(DEFAULT_TYPE_NAME)?;
            Ok(Reply::ok(json!({"volume_type": views::volume_type(&view_ctx(m, req)?.view(), &t)})))
        }),
        ["types", id] => match *method {
            Method::GET => {
                let t = m.visible_volume_type(&req.caller(), id)?;
                Ok(Reply::ok(json!({"volume_type": views::volume_type(&view_ctx(m, req)?.view(), &t)})))
            }
            Method::PUT => update_type(m, req, id),
            Method::DELETE => {
                m.delete_volume_type(id)?;
                Ok(Reply::empty(StatusCode::ACCEPTED))
            }
            _ => Err(bad_method()),
        },
        ["types", id, "action"] => only(method, Method::POST, || type_access_action(m, req, id)),
        ["types", id, "os-volume-type-access"] => only(method, Method::GET, || {
            let access: Vec<Value> = m
                .type_access(id)?
                .into_iter()
                .map(|project| json!({"volume_type_id": id, "project_id": project}))
                .collect();
            Ok(Reply::ok(json!({"volume_type_access": access})))
        }),
        ["types", id, "encryption", rest @ ..] => super::encryption::type_route(m, req, id, rest),
        ["volumes", id, "encryption"] => super::encryption::volume_metadata(m, req, id, None),
        ["volumes", id, "encryption", key] => super::encryption::volume_metadata(m, req, id, Some(key)),
        ["types", id, "extra_specs"] => extra_specs(m, req, id, None),
        ["types", id, "extra_specs", key] => extra_specs(m, req, id, Some(key)),
        // Upstream serves these from 3.8 only; ember serves them at every version,
        // because openstacksdk lists manageable volumes without a microversion
        // (README, "Differences").
        ["manageable_volumes"] | ["manageable_volumes", "detail"] => match (method, path.len()) {
            (&Method::GET, n) => list_manageable(m, req, n == 2),
            (&Method::POST, 1) => manage_volume(m, req),
            _ => Err(bad_method()),
        },
        // As manageable_volumes: every microversion (README, "Differences").
        ["manageable_snapshots"] | ["manageable_snapshots", "detail"] => match (method, path.len()) {
            (&Method::GET, n) => list_manageable_snapshots(m, req, n == 2),
            (&Method::POST, 1) => manage_snapshot(m, req),
            _ => Err(bad_method()),
        },
        ["os-snapshot-manage"] | ["os-snapshot-manage", "detail"] => match (method, path.len()) {
            (&Method::GET, n) => list_manageable_snapshots(m, req, n == 2),
            (&Method::POST, 1) => manage_snapshot(m, req),
            _ => Err(bad_method()),
        },
        ["os-volume-manage"] => only(method, Method::POST, || manage_volume(m, req)),
        ["os-volume-manage", "detail"] => only(method, Method::GET, || list_manageable(m, req, true)),
        ["attachments", rest @ ..] => super::attachments::route(m, req, rest),
        [collection @ ("os-volume-transfer" | "volume-transfers"), rest @ ..] => {
            super::transfers::route(m, req, collection, rest)
        }
        ["group_types", rest @ ..] => super::groups::group_types(m, req, rest),
        ["groups", rest @ ..] => super::groups::groups(m, req, rest, &project),
        ["group_snapshots", rest @ ..] => super::groups::group_snapshots(m, req, rest),
        ["messages"] => only(method, Method::GET, || super::messages::list(m, req)),
        ["messages", id] => match *method {
            Method::GET => super::messages::show(m, req, id),
            Method::DELETE => super::messages::delete(m, req, id),
            _ => Err(bad_method()),
        },
        ["os-quota-sets", project] => match *method {
            Method::GET => super::quotas::show(m, req, project),
            Method::PUT => super::quotas::update(m, req, project),
            Method::DELETE => super::quotas::delete(m, project),
            _ => Err(bad_method()),
        },
        ["os-quota-sets", project, "defaults"] => super::quotas::defaults(m, project),
        ["os-quota-class-sets", class] => match *method {
            Method::GET => super::quotas::show_class(m, class),
            Method::PUT => super::quotas::update_class(m, req, class),
            _ => Err(bad_method()),
        },
        ["limits"] => super::quotas::limits(m, req),
        ["os-services"] => super::services::list(m, req),
        ["os-services", what] => super::services::update(m, req, what),
        ["os-hosts", rest @ ..] => super::services::hosts(m, req, rest),
        ["capabilities", host] => super::services::capabilities(m, host),
        ["extensions", rest @ ..] => super::services::extensions(rest),
        ["qos-specs", rest @ ..] => super::qos::route(m, req, rest),
        ["os-availability-zone"] => Ok(Reply::ok(json!({"availabilityZoneInfo": [
            {"zoneName": m.settings().availability_zone, "zoneState": {"available": true}}
        ]}))),
        ["backups", ..] => Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "Volume backups are not supported yet: they arrive with the backup issue.",
        )),
        ["scheduler-stats", "get_pools"] => only(method, Method::GET, || {
            let detail = req.flag("detail")?;
            let pools: Vec<Value> =
                m.pool_stats()?.iter().map(|(slot, stats)| views::pool(slot, stats, detail)).collect();
            Ok(Reply::ok(json!({ "pools": pools })))
        }),
        _ => Err(ApiError::resource_not_found()),
    }
}

/// The project a route's rule is checked against; what the caller may not see is
/// "not found", before any policy is asked.
fn owner_project(m: &Manager, req: &Req, owner: policy::Owner, path: &[&str]) -> Result<String> {
    use policy::Owner as O;
    let caller = req.caller();
    Ok(match owner {
        O::Caller => caller.project_id,
        O::Volume(i) => m.volume(&caller, path[i])?.project_id,
        O::Snapshot(i) => m.snapshot(&caller, path[i])?.project_id,
        O::Message(i) => m.message(&caller, path[i])?.project_id,
        O::Attachment(i) => {
            let view = m.attachment(&caller, path[i])?;
            m.volume(&caller, &view.attachment.volume_id)?.project_id
        }
        O::VolumeType(i) => {
            m.visible_volume_type(&caller, path[i])?;
            caller.project_id
        }
        O::Project(i) => path[i].to_string(),
        O::Transfer(i) => m.transfer(&caller, path[i])?.project_id,
        O::Group(i) => m.group(&caller, path[i])?.project_id,
        O::GroupSnapshot(i) => m.group_snapshot(&caller, path[i])?.project_id,
    })
}

fn only(method: &Method, allowed: Method, f: impl FnOnce() -> Result<Reply>) -> Result<Reply> {
    if *method == allowed { f() } else { Err(bad_method()) }
}

fn view_ctx<'a>(m: &Manager, req: &'a Req) -> Result<ViewContextOwned<'a>> {
    let types = m.volume_types()?;
    let encrypted = types.iter().filter(|t| t.encrypted).map(|t| t.id.clone()).collect();
    let names = types.into_iter().map(|t| (t.id, t.name)).collect();
    Ok(ViewContextOwned { req, names, encrypted })
}

/// A `ViewContext` together with the type-name map it borrows.
struct ViewContextOwned<'a> {
    req: &'a Req,
    names: BTreeMap<String, String>,
    encrypted: std::collections::BTreeSet<String>,
}

impl ViewContextOwned<'_> {
    fn view(&self) -> ViewContext<'_> {
        ViewContext {
            base_url: &self.req.base_url,
            project: self.req.url_project.as_deref(),
            version: self.req.version,
            is_admin: self.req.ctx.is_admin,
            type_names: &self.names,
            encrypted_types: &self.encrypted,
        }
    }
}

// ---- volumes -------------------------------------------------------------------

fn show_volume(m: &Manager, req: &Req, id: &str) -> Result<Reply> {
    let v = m.volume(&req.caller(), id)?;
    let ctx = view_ctx(m, req)?;
    Ok(Reply::ok(json!({"volume": views::volume_detail(&ctx.view(), &v)})))
}

/// `GET /volumes/summary` (3.12; distinct metadata from 3.36): the caller's
/// volumes (all projects' with `all_tenants` for admins).
fn volume_summary(m: &Manager, req: &Req) -> Result<Reply> {
    let volumes = m.volumes(&req.caller(), req.flag("all_tenants")?)?;
    let mut summary = json!({
        "total_count": volumes.len(),
        "total_size": volumes.iter().map(|v| v.size).sum::<i64>(),
    });
    if req.version.at_least(3, 36) {
        let mut distinct: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (k, v) in volumes.iter().flat_map(|v| &v.metadata) {
            let values = distinct.entry(k.clone()).or_default();
            if !values.contains(v) {
                values.push(v.clone());
            }
        }
        summary["metadata"] = json!(distinct);
    }
    Ok(Reply::ok(json!({"volume-summary": summary})))
}

fn list_volumes(m: &Manager, req: &Req, detail: bool) -> Result<Reply> {
    let all = req.flag("all_tenants")?;
    let mut volumes = m.volumes(&req.caller(), all)?;
    if let Some(project) = req.param("project_id").filter(|_| all) {
        volumes.retain(|v| v.project_id == project);
    }
    if let Some(name) = req.param("name").or(req.param("display_name")) {
        volumes.retain(|v| v.name.as_deref() == Some(name));
    }
    if let Some(status) = req.param("status") {
        volumes.retain(|v| v.status.shown() == status);
    }
    if let Some(filter) = req.param("metadata") {
        let wanted = schema::dict_filter("metadata", filter)?;
        volumes.retain(|v| wanted.iter().all(|(k, want)| v.metadata.get(k) == Some(want)));
    }
    if let Some(bootable) = req.param("bootable") {
        let want = boolean("bootable", &json!(bootable))?;
        volumes.retain(|v| v.bootable == want);
    }
    // Cinder's VOLUME_LIST_GROUP (3.10): a group's volumes.
    if let Some(group) = req.param("group_id").filter(|_| req.version.at_least(3, 10)) {
        volumes.retain(|v| v.group_id.as_deref() == Some(group));
    }
    let ctx = view_ctx(m, req)?;
    let (page, count, next) =
        paginate(req, volumes, |v| v.id.clone(), volume_sort_key, VOLUME_SORT_KEYS, ("created_at", true))?;
    let view = ctx.view();
    let items: Vec<Value> = page
        .iter()
        .map(|v| if detail { views::volume_detail(&view, v) } else { views::volume_summary(&view, v) })
        .collect();
    let mut out = json!({"volumes": items});
    if let Some(marker) = next {
        let path = if detail { "volumes/detail" } else { "volumes" };
        out["volumes_links"] = json!([{"rel": "next", "href": next_link(req, path, &marker)}]);
    }
    if req.version.at_least(3, 45)
        && req.param("with_count").is_some_and(|v| boolean("with_count", &json!(v)).unwrap_or(false))
    {
        out["count"] = json!(count);
    }
    Ok(Reply::ok(out))
}

/// The link to the next page: the same URL form and query, with the new marker.
pub(super) fn next_link(req: &Req, path: &str, marker: &str) -> String {
    let project = req.url_project.as_deref().map(|p| format!("{p}/")).unwrap_or_default();
    let mut query: Vec<String> = req
        .query_pairs
        .iter()
        .filter(|(k, _)| k != "marker")
        .map(|(k, v)| format!("{}={}", super::percent_encode(k), super::percent_encode(v)))
        .collect();
    query.push(format!("marker={}", super::percent_encode(marker)));
    format!("{}/v3/{project}{path}?{}", req.base_url, query.join("&"))
}

/// The keys `volume_sort_key` knows.
const VOLUME_SORT_KEYS: &[&str] =
    &["created_at", "updated_at", "id", "name", "display_name", "size", "status", "bootable", "availability_zone"];

fn volume_sort_key(v: &Volume, key: &str) -> Option<String> {
    Some(match key {
        "created_at" => v.created_at.clone(),
        "updated_at" => v.updated_at.clone().unwrap_or_default(),
        "id" => v.id.clone(),
        "name" | "display_name" => v.name.clone().unwrap_or_default(),
        "size" => format!("{:020}", v.size),
        "status" => v.status.shown().to_string(),
        "bootable" => v.bootable.to_string(),
        "availability_zone" => v.availability_zone.clone(),
        _ => return None,
    })
}

/// Sorting (`sort=key:dir,...` or `sort_key`/`sort_dir`), `marker`, `limit` and
/// `offset`, as Cinder's common pagination. Returns the page, the total count and
/// the marker of the next page when the page is full.
pub(super) fn paginate<T>(
    req: &Req,
    mut items: Vec<T>,
    id_of: impl Fn(&T) -> String,
    sort_key: fn(&T, &str) -> Option<String>,
    sort_keys: &[&str],
    default_sort: (&str, bool),
) -> Result<(Vec<T>, usize, Option<String>)> {
    let mut keys: Vec<(String, bool)> = Vec::new();
    if let Some(sort) = req.param("sort") {
        for part in sort.split(',').filter(|p| !p.is_empty()) {
            let (k, d) = part.split_once(':').unwrap_or((part, "desc"));
            keys.push((k.trim().to_string(), sort_dir(d.trim())?));
        }
    } else if let Some(k) = req.param("sort_key") {
        keys.push((k.to_string(), sort_dir(req.param("sort_dir").unwrap_or("desc"))?));
    } else {
        let desc = req.param("sort_dir").map(sort_dir).transpose()?.unwrap_or(default_sort.1);
        keys.push((default_sort.0.to_string(), desc));
    }
    // Refused whether or not there is anything to sort, as Cinder does.
    if let Some((k, _)) = keys.iter().find(|(k, _)| !sort_keys.contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!("Invalid input received: Invalid sort key {k}")));
    }
    items.sort_by(|a, b| {
        for (k, desc) in &keys {
            let ord = sort_key(a, k).cmp(&sort_key(b, k));
            let ord = if *desc { ord.reverse() } else { ord };
            if ord.is_ne() {
                return ord;
            }
        }
        id_of(a).cmp(&id_of(b))
    });
    let count = items.len();
    if let Some(marker) = req.param("marker") {
        let at = items
            .iter()
            .position(|i| id_of(i) == marker)
            .ok_or_else(|| ApiError::not_found(format!("Marker {marker} could not be found.")))?;
        items.drain(..=at);
    }
    if let Some(offset) = req.param("offset") {
        let offset = integer("offset", &json!(offset), 0, i64::MAX)?;
        items.drain(..usize::try_from(offset).unwrap_or(usize::MAX).min(items.len()));
    }
    let mut next = None;
    if let Some(limit) = req.param("limit") {
        let limit = usize::try_from(integer("limit", &json!(limit), 0, i64::MAX)?).unwrap_or(usize::MAX);
        if items.len() > limit {
            items.truncate(limit);
        }
        if limit > 0 && items.len() == limit {
            next = items.last().map(&id_of);
        }
    }
    Ok((items, count, next))
}

fn sort_dir(d: &str) -> Result<bool> {
    match d {
        "desc" => Ok(true),
        "asc" => Ok(false),
        other => Err(ApiError::bad_request(format!("Invalid input received: Invalid sort direction {other}"))),
    }
}

fn create_volume(m: &std::sync::Arc<Manager>, req: &Req) -> Result<Reply> {
    let body = req.json()?;
    let v = envelope(&body, "volume", &["OS-SCH-HNT:scheduler_hints"])?;
    const KNOWN: &[&str] = &[
        "size",
        "name",
        "description",
        "display_name",
        "display_description",
        "volume_type",
        "metadata",
        "snapshot_id",
        "source_volid",
        "imageRef",
        "image_id",
        "availability_zone",
        "backup_id",
        "group_id",
        "consistencygroup_id",
        "multiattach",
        "source_replica",
        "scheduler_hints",
    ];
    if req.version.at_least(3, 53) {
        closed("volume", v, KNOWN)?;
    }
    let size = match v.get("size") {
        None | Some(Value::Null) => None,
        Some(s) => Some(integer("size", s, 1, 2_147_483_647)?),
    };
    let text = |keys: [&str; 2]| -> Result<Option<String>> {
        for k in keys {
            if let Some(value) = v.get(k) {
                return name(k, value);
            }
        }
        Ok(None)
    };
    let display_name = text(["name", "display_name"])?;
    let description = text(["description", "display_description"])?;
    let volume_type =
        v.get("volume_type").map(|t| schema::nullable_string("volume_type", t, 0, 255)).transpose()?.flatten();
    let meta = optional_metadata(v, "metadata")?;
    let id_field = |key: &str| -> Result<Option<String>> {
        match v.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(x) => uuid_like(key, x).map(Some),
        }
    };
    let snapshot_id = id_field("snapshot_id")?;
    let source_volid = id_field("source_volid")?;
    let zone = v
        .get("availability_zone")
        .map(|z| schema::nullable_string("availability_zone", z, 0, 255))
        .transpose()?
        .flatten();
    if let Some(x) = v.get("multiattach") {
        if boolean("multiattach", x)? {
            return Err(ApiError::bad_request(
                "Invalid input received: multiattach=True is not supported: use a volume type with multiattach=<is> True.",
            ));
        }
    }
    let sources = [snapshot_id.is_some(), source_volid.is_some()].iter().filter(|b| **b).count();
    if sources > 1 {
        return Err(ApiError::bad_request(
            "Invalid input received: snapshot_id and source_volid are mutually exclusive.",
        ));
    }
    // Cinder takes the group at every microversion, and consistencygroup_id
    // names a (generic) group too, group_id winning.
    let group_id = id_field("group_id")?.or(id_field("consistencygroup_id")?);
    if group_id.is_some() && volume_type.is_none() {
        return Err(ApiError::bad_request(
            "Invalid input received: volume_type must be provided when creating a volume in a group.",
        ));
    }
    // imageRef (and image_id, its older name) must be an image id; the
    // image itself is checked by the manager before anything is written.
    let image_id = match (id_field("imageRef")?, id_field("image_id")?) {
        (Some(a), Some(b)) if a != b => {
            return Err(ApiError::bad_request("Invalid input received: imageRef and image_id name different images."));
        }
        (a, b) => a.or(b),
    };
    if image_id.is_some() && (snapshot_id.is_some() || source_volid.is_some()) {
        return Err(ApiError::bad_request(
            "Invalid input received: imageRef is mutually exclusive with snapshot_id and source_volid.",
        ));
    }
    if image_id.is_some() && size.is_none() {
        return Err(field_error("size", &Value::Null, "size is required when creating a volume from an image"));
    }
    if v.get("backup_id").is_some_and(|x| !x.is_null()) {
        return Err(ApiError::new(StatusCode::NOT_IMPLEMENTED, "ember has no backup service."));
    }
    if size.is_none() && snapshot_id.is_none() && source_volid.is_none() {
        return Err(field_error(
            "size",
            &v.get("size").cloned().unwrap_or(Value::Null),
            "size is required for a blank volume",
        ));
    }
    let caller = req.caller();
    let created = m.create_volume(
        &caller,
        CreateVolume {
            size,
            name: display_name,
            description,
            volume_type,
            metadata: meta,
            snapshot_id,
            source_volid,
            availability_zone: zone,
            group_id,
            image_id,
        },
    )?;
    let ctx = view_ctx(m, req)?;
    Ok(Reply::accepted(Some(json!({"volume": views::volume_created(&ctx.view(), &created)}))))
}

fn update_volume(m: &Manager, req: &Req, id: &str) -> Result<Reply> {
    let body = req.json()?;
    let v = envelope(&body, "volume", &[])?;
    closed("volume", v, &["name", "description", "display_name", "display_description", "metadata"])?;
    if v.is_empty() {
        return Err(field_error("volume", &body["volume"], "{} does not have enough properties"));
    }
    let mut change = UpdateVolume::default();
    for (key, target) in [("name", 0), ("display_name", 0), ("description", 1), ("display_description", 1)] {
        if let Some(value) = v.get(key) {
            let text = name(key, value)?;
            if target == 0 { change.name = Some(text) } else { change.description = Some(text) }
        }
    }
    change.metadata = v.get("metadata").map(|x| metadata("metadata", x, meta_key, 255)).transpose()?;
    let updated = m.update_volume(&req.caller(), id, change)?;
    let ctx = view_ctx(m, req)?;
    Ok(Reply::ok(json!({"volume": views::volume_created(&ctx.view(), &updated)})))
}

fn delete_volume(m: &std::sync::Arc<Manager>, req: &Req, id: &str) -> Result<Reply> {
    let cascade = req.flag("cascade")?;
    let force = req.version.at_least(3, 23) && req.flag("force")?;
    if force {
        req.ctx.require_admin("volume:force_delete")?;
    }
    m.delete_volume(&req.caller(), id, cascade, force)?;
    Ok(Reply::empty(StatusCode::ACCEPTED))
}

fn volume_metadata(m: &Manager, req: &Req, id: &str, key: Option<&str>) -> Result<Reply> {
    let caller = req.caller();
    let v = m.volume(&caller, id)?;
    match (&req.method, key) {
        (&Method::GET, None) => {
            let mut reply = Reply::ok(json!({"metadata": v.metadata}));
            if req.version.at_least(3, 15) {
                reply.etag = Some(metadata_etag(&v.metadata));
            }
            Ok(reply)
        }
        (&Method::GET, Some(key)) => {
            let value = v
                .metadata
                .get(key)
                .ok_or_else(|| ApiError::not_found(format!("Volume {id} has no metadata with key {key}.")))?;
            Ok(Reply::ok(json!({"meta": {key: value}})))
        }
        (&Method::POST | &Method::PUT, None) => {
            let map = all_meta(req)?;
            let change =
                if req.method == Method::PUT { MetadataChange::Replace(map) } else { MetadataChange::Merge(map) };
            let replace = req.method == Method::PUT;
            let all =
                m.update_volume_metadata(
                    &caller,
                    id,
                    change,
                    |current| {
                        if replace { check_etag(req, current) } else { Ok(()) }
                    },
                )?;
            Ok(Reply::ok(json!({"metadata": all})))
        }
        (&Method::PUT, Some(key)) => {
            let map = one_meta(req, key)?;
            m.update_volume_metadata(&caller, id, MetadataChange::Merge(map.clone()), |current| {
                check_etag(req, current)
            })?;
            Ok(Reply::ok(json!({"meta": map})))
        }
        (&Method::DELETE, Some(key)) => {
            m.update_volume_metadata(&caller, id, MetadataChange::Delete(key.to_string()), |_| Ok(()))?;
            Ok(Reply::empty(StatusCode::OK))
        }
        _ => Err(bad_method()),
    }
}

/// The `{"metadata": {...}}` body of a metadata POST or PUT.
fn all_meta(req: &Req) -> Result<BTreeMap<String, String>> {
    let body = req.json()?;
    metadata("metadata", required_meta(&body, "metadata")?, meta_key, 255)
}

/// The `{"meta": {key: value}}` body of a PUT on one key, which it must name.
fn one_meta(req: &Req, key: &str) -> Result<BTreeMap<String, String>> {
    let body = req.json()?;
    let map = metadata("meta", required_meta(&body, "meta")?, meta_key, 255)?;
    if map.len() != 1 {
        return Err(ApiError::bad_request("Request body contains too many items."));
    }
    if !map.contains_key(key) {
        return Err(ApiError::bad_request("Request body and URI mismatch"));
    }
    Ok(map)
}

/// `/snapshots/{id}/metadata[/{key}]`.
fn snapshot_metadata(m: &Manager, req: &Req, id: &str, key: Option<&str>) -> Result<Reply> {
    let caller = req.caller();
    let change = match (&req.method, key) {
        (&Method::GET, None) => return Ok(Reply::ok(json!({"metadata": m.snapshot(&caller, id)?.metadata}))),
        (&Method::GET, Some(key)) => {
            let all = m.snapshot(&caller, id)?.metadata;
            let value = all.get(key).ok_or_else(|| ApiError::not_found("Metadata item was not found"))?;
            return Ok(Reply::ok(json!({"meta": {key: value}})));
        }
        (&Method::POST, None) => MetadataChange::Merge(all_meta(req)?),
        (&Method::PUT, None) => MetadataChange::Replace(all_meta(req)?),
        (&Method::PUT, Some(key)) => {
            let map = one_meta(req, key)?;
            m.update_snapshot_metadata(&caller, id, MetadataChange::Merge(map.clone()))?;
            return Ok(Reply::ok(json!({"meta": map})));
        }
        (&Method::DELETE, Some(key)) => {
            m.update_snapshot_metadata(&caller, id, MetadataChange::Delete(key.to_string()))?;
            return Ok(Reply::empty(StatusCode::OK));
        }
        _ => return Err(bad_method()),
    };
    Ok(Reply::ok(json!({"metadata": m.update_snapshot_metadata(&caller, id, change)?})))
}

/// The entity tag of a volume's metadata: a hash of its canonical JSON. Clients
/// only echo it back in If-Match, so any stable digest serves (FNV-1a, 64 bits).
fn metadata_etag(metadata: &BTreeMap<String, String>) -> String {
    let text = json!({"metadata": metadata}).to_string();
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    format!("{hash:016x}")
}

/// From 3.15 a metadata update carrying If-Match must match the current ETag
/// (412 otherwise): cinderclient relies on it to avoid lost updates.
fn check_etag(req: &Req, metadata: &BTreeMap<String, String>) -> crate::manager::Result<()> {
    let Some(if_match) = req.if_match.as_deref().filter(|_| req.version.at_least(3, 15)) else {
        return Ok(());
    };
    let current = metadata_etag(metadata);
    let matches = if_match
        .split(',')
        .map(|t| t.trim().trim_start_matches("W/").trim_matches('"'))
        .any(|t| t == "*" || t == current);
    if matches {
        Ok(())
    } else {
        Err(crate::manager::ManagerError::PreconditionFailed(
            "The volume's metadata changed since it was read (ETag mismatch).".to_string(),
        ))
    }
}

fn required_meta<'a>(body: &'a Value, key: &str) -> Result<&'a Value> {
    let top = body.as_object().ok_or_else(ApiError::malformed_body)?;
    closed("body", top, &[key])?;
    required("body", top, key)
}

/// `project` owns the volume; each action has its own rule.
fn volume_action(m: &std::sync::Arc<Manager>, req: &Req, id: &str, project: &str) -> Result<Reply> {
    let body = req.json()?;
    let Parsed { action, policy, code } = actions::parse(&body, req.version)?;
    let caller = req.caller();
    policy::authorize(&req.ctx, policy.rule(), project)?;
    let version = (req.version.0, req.version.1);
    match m.volume_action(&caller, id, action, version)? {
        ActionOutcome::Metadata(map) => Ok(Reply { status: code, body: Some(json!({"metadata": map})), etag: None }),
        ActionOutcome::Connection(info) => {
            Ok(Reply { status: code, body: Some(json!({"connection_info": info})), etag: None })
        }
        ActionOutcome::Done => Ok(Reply::empty(code)),
        ActionOutcome::SaveVolumeId(id) => {
            Ok(Reply { status: code, body: Some(json!({"save_volume_id": id})), etag: None })
        }
        ActionOutcome::Uploading(up) => {
            let ctx = view_ctx(m, req)?;
            let image = &up.image;
            let body = json!({"os-volume_upload_image": {
                "id": up.volume.id,
                "updated_at": up.volume.updated_at,
                "status": up.volume.status.as_str(),
                "display_description": up.volume.description,
                "size": up.volume.size,
                "volume_type": up.volume_type.as_ref().map(|t| views::volume_type(&ctx.view(), t)),
                "image_id": image.id,
                "container_format": image.container_format,
                "disk_format": image.disk_format,
                "image_name": image.name,
                "protected": image.protected,
                "visibility": image.visibility.as_str(),
            }});
            Ok(Reply { status: code, body: Some(body), etag: None })
        }
    }
}

/// What a manageable list sorts by: the object's name in the pool and its size.
trait Manageable {
    fn reference(&self) -> &str;
    fn size_gib(&self) -> u64;
}

impl Manageable for crate::manager::ManageableVolume {
    fn reference(&self) -> &str {
        &self.name
    }
    fn size_gib(&self) -> u64 {
        self.size_gib
    }
}

impl Manageable for crate::manager::ManageableSnapshot {
    fn reference(&self) -> &str {
        &self.name
    }
    fn size_gib(&self) -> u64 {
        self.size_gib
    }
}

fn manageable_key<T: Manageable>(x: &T, key: &str) -> Option<String> {
    Some(match key {
        "size" => format!("{:020}", x.size_gib()),
        "reference" => x.reference().to_string(),
        _ => return None,
    })
}

/// One page of what the pool holds, sorted by `reference` (the name, the
/// default) or `size`, as Cinder's manageable lists are.
fn manageable_page<T: Manageable>(req: &Req, all: Vec<T>) -> Result<Vec<T>> {
    let sort_keys = &["size", "reference"];
    let (page, _, _) =
        paginate(req, all, |x| x.reference().to_string(), manageable_key::<T>, sort_keys, ("reference", false))?;
    Ok(page)
}

fn list_manageable(m: &Manager, req: &Req, detail: bool) -> Result<Reply> {
    let page = manageable_page(req, m.manageable_volumes()?)?;
    let items: Vec<Value> = page.iter().map(|x| views::manageable(x, detail)).collect();
    Ok(Reply::ok(json!({"manageable-volumes": items})))
}

fn manage_volume(m: &std::sync::Arc<Manager>, req: &Req) -> Result<Reply> {
    let body = req.json()?;
    let v = envelope(&body, "volume", &[])?;
    closed(
        "volume",
        v,
        &["host", "cluster", "ref", "name", "description", "volume_type", "availability_zone", "metadata", "bootable"],
    )?;
    let host = string("host", required("volume", v, "host")?, 1, 255)?;
    let reference = schema::as_object("ref", required("volume", v, "ref")?)?;
    let source_name = reference
        .get("source-name")
        .ok_or_else(|| field_error("ref", &v["ref"], "'source-name' is required"))
        .and_then(|s| string("source-name", s, 1, 255))?;
    let opt = |key: &str| -> Result<Option<String>> {
        v.get(key).map(|x| schema::nullable_string(key, x, 0, 255)).transpose().map(Option::flatten)
    };
    let volume = m.manage_volume(
        &req.caller(),
        ManageVolume {
            host,
            source_name,
            name: opt("name")?,
            description: opt("description")?,
            volume_type: opt("volume_type")?,
            availability_zone: opt("availability_zone")?,
            metadata: optional_metadata(v, "metadata")?,
            bootable: match v.get("bootable") {
                None | Some(Value::Null) => false,
                Some(x) => boolean("bootable", x)?,
            },
        },
    )?;
    let ctx = view_ctx(m, req)?;
    Ok(Reply::accepted(Some(json!({"volume": views::volume_created(&ctx.view(), &volume)}))))
}

/// `host` is required, as Cinder's get_cluster_host asks (`cluster` names no
/// cluster here: ember is one backend); a host that is not this agent's is 404.
fn list_manageable_snapshots(m: &Manager, req: &Req, detail: bool) -> Result<Reply> {
    let host = match (req.param("host"), req.param("cluster")) {
        (Some(host), None) => host,
        (None, Some(_)) => {
            return Err(ApiError::bad_request("Invalid input received: this agent is not in a cluster; give host."));
        }
        _ => {
            return Err(ApiError::bad_request(
                "Invalid input received: One and only one of cluster and host must be set.",
            ));
        }
    };
    if !m.serves_host(host) {
        return Err(ApiError::new(StatusCode::NOT_FOUND, format!("Service {host} could not be found.")));
    }
    let page = manageable_page(req, m.manageable_snapshots()?)?;
    let items: Vec<Value> = page.iter().map(|x| views::manageable_snapshot(x, detail)).collect();
    Ok(Reply::ok(json!({"manageable-snapshots": items})))
}

/// Cinder's schema (schemas/snapshot_manage.py): `volume_id` and `ref` required,
/// `name`, `description`, `metadata` optional and nullable, nothing else. `ref`
/// names the pool's object by `source-name` (a string alone is taken as one, as
/// the LVM driver does) or by `source-id` (ember's snapshot id of a snapshot
/// unmanaged before: its name in the pool).
fn manage_snapshot(m: &std::sync::Arc<Manager>, req: &Req) -> Result<Reply> {
    let body = req.json()?;
    let s = envelope(&body, "snapshot", &[])?;
    closed("snapshot", s, &["volume_id", "ref", "name", "description", "metadata"])?;
    let volume_id = uuid_like("volume_id", required("snapshot", s, "volume_id")?)?;
    let reference = required("snapshot", s, "ref")?;
    let source_name = match reference {
        Value::String(_) => string("ref", reference, 1, 255)?,
        Value::Object(o) => match (o.get("source-name"), o.get("source-id")) {
            (Some(n), _) => string("source-name", n, 1, 255)?,
            (None, Some(id)) => m.snapshot_name(&uuid_like("source-id", id)?),
            (None, None) => {
                return Err(field_error("ref", reference, "'source-name' or 'source-id' is required"));
            }
        },
        Value::Null => {
            return Err(ApiError::bad_request(
                "Manage existing snapshot failed due to invalid backend reference None: a source-name is required.",
            ));
        }
        other => return Err(field_error("ref", other, "is not of type 'object', 'null', 'string'")),
    };
    let opt = |key: &str| -> Result<Option<String>> {
        s.get(key).map(|x| schema::nullable_string(key, x, 0, 255)).transpose().map(Option::flatten)
    };
    let metadata = match s.get("metadata") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(_) => optional_metadata(s, "metadata")?,
    };
    let snapshot = m.manage_snapshot(
        &req.caller(),
        ManageSnapshot { volume_id, source_name, name: opt("name")?, description: opt("description")?, metadata },
    )?;
    Ok(Reply::accepted(Some(json!({"snapshot": views::snapshot_managed(&snapshot)}))))
}

// ---- snapshots -----------------------------------------------------------------

fn list_snapshots(m: &Manager, req: &Req, detail: bool) -> Result<Reply> {
    let all = req.flag("all_tenants")?;
    let mut snaps = m.snapshots(&req.caller(), all)?;
    if let Some(name) = req.param("name") {
        snaps.retain(|s| s.name.as_deref() == Some(name));
    }
    if let Some(status) = req.param("status") {
        snaps.retain(|s| s.status.as_str() == status);
    }
    if let Some(volume_id) = req.param("volume_id") {
        snaps.retain(|s| s.volume_id == volume_id);
    }
    let (page, _, next) = paginate(
        req,
        snaps,
        |s| s.id.clone(),
        |s, k| {
            Some(match k {
                "created_at" => s.created_at.clone(),
                "updated_at" => s.updated_at.clone().unwrap_or_default(),
                "id" => s.id.clone(),
                "name" | "display_name" => s.name.clone().unwrap_or_default(),
                "status" => s.status.to_string(),
                "size" | "volume_size" => format!("{:020}", s.volume_size),
                "volume_id" => s.volume_id.clone(),
                _ => return None,
            })
        },
        &["created_at", "updated_at", "id", "name", "display_name", "status", "size", "volume_size", "volume_id"],
        ("created_at", true),
    )?;
    let ctx = view_ctx(m, req)?;
    let view = ctx.view();
    let items: Vec<Value> = page
        .iter()
        .map(|s| if detail { views::snapshot_detail(&view, s) } else { views::snapshot_summary(s) })
        .collect();
    let mut out = json!({"snapshots": items});
    if let Some(marker) = next {
        let path = if detail { "snapshots/detail" } else { "snapshots" };
        out["snapshots_links"] = json!([{"rel": "next", "href": next_link(req, path, &marker)}]);
    }
    Ok(Reply::ok(out))
}

fn create_snapshot(m: &std::sync::Arc<Manager>, req: &Req) -> Result<Reply> {
    let body = req.json()?;
    let s = envelope(&body, "snapshot", &[])?;
    closed(
        "snapshot",
        s,
        &["volume_id", "name", "description", "display_name", "display_description", "force", "metadata"],
    )?;
    // Cinder's schema allows null here, and the lookup of no volume is then 404.
    let volume_id = match required("snapshot", s, "volume_id")? {
        Value::Null => return Err(crate::manager::volume_not_found("None").into()),
        id => uuid_like("volume_id", id)?,
    };
    let force = match s.get("force") {
        None => None,
        Some(f) => Some(boolean("force", f)?),
    };
    if req.version.at_least(3, 66) && force == Some(false) {
        return Err(ApiError::bad_request(
            "Invalid input received: 'force' is deprecated from 3.66: snapshots of in-use volumes are always \
             allowed; leave it out or pass true.",
        ));
    }
    let text = |keys: [&str; 2]| -> Result<Option<String>> {
        for k in keys {
            if let Some(value) = s.get(k) {
                return name(k, value);
            }
        }
        Ok(None)
    };
    let req_body = CreateSnapshot {
        volume_id: volume_id.clone(),
        name: text(["name", "display_name"])?,
        description: text(["description", "display_description"])?,
        force: force.unwrap_or(false),
        metadata: optional_metadata(s, "metadata")?,
    };
    let caller = req.caller();
    let snap = m.create_snapshot(&caller, req_body, req.version.at_least(3, 66))?;
    let ctx = view_ctx(m, req)?;
    Ok(Reply::accepted(Some(json!({"snapshot": views::snapshot_created(&ctx.view(), &snap)}))))
}

fn update_snapshot(m: &Manager, req: &Req, id: &str) -> Result<Reply> {
    let body = req.json()?;
    let s = envelope(&body, "snapshot", &[])?;
    closed("snapshot", s, &["name", "description", "display_name", "display_description"])?;
    if s.is_empty() {
        return Err(field_error("snapshot", &body["snapshot"], "{} does not have enough properties"));
    }
    let pick = |keys: [&str; 2]| -> Result<Option<Option<String>>> {
        for k in keys {
            if let Some(value) = s.get(k) {
                return name(k, value).map(Some);
            }
        }
        Ok(None)
    };
    let (new_name, new_description) = (pick(["name", "display_name"])?, pick(["description", "display_description"])?);
    let snap = m.update_snapshot(&req.caller(), id, new_name, new_description)?;
    let ctx = view_ctx(m, req)?;
    Ok(Reply::ok(json!({"snapshot": views::snapshot_created(&ctx.view(), &snap)})))
}

fn snapshot_action(m: &std::sync::Arc<Manager>, req: &Req, id: &str, project: &str) -> Result<Reply> {
    let body = req.json()?;
    let top = body.as_object().ok_or_else(ApiError::malformed_body)?;
    if top.len() != 1 {
        return Err(ApiError::malformed_body());
    }
    let (action, value) = top.iter().next().ok_or_else(ApiError::malformed_body)?;
    let caller = req.caller();
    match action.as_str() {
        "os-reset_status" => {
            let o = schema::as_object(action, value)?;
            closed(action, o, &["status"])?;
            let status = string("status", required(action, o, "status")?, 1, 255)?.to_lowercase();
            let status: SnapshotStatus = status
                .parse()
                .map_err(|_| ApiError::bad_request(format!("Invalid input received: Invalid status '{status}'")))?;
            req.ctx.require_admin("volume_extension:snapshot_admin_actions:reset_status")?;
            m.reset_snapshot_status(&caller, id, status)?;
            Ok(Reply::empty(StatusCode::ACCEPTED))
        }
        // Cinder's schema (snapshot_manage.unmanage) takes any value, null included.
        "os-unmanage" => {
            req.ctx.require_admin("snapshot_extension:snapshot_unmanage")?;
            m.unmanage_snapshot(&caller, id)?;
            Ok(Reply::empty(StatusCode::ACCEPTED))
        }
        "os-force_delete" => {
            req.ctx.require_admin("volume_extension:snapshot_admin_actions:force_delete")?;
            m.delete_snapshot(&caller, id, true)?;
            Ok(Reply::empty(StatusCode::ACCEPTED))
        }
        "os-update_snapshot_status" => {
            let o = schema::as_object(action, value)?;
            closed(action, o, &["status", "progress"])?;
            let status = string("status", required(action, o, "status")?, 0, 255)?;
            let progress = o.get("progress").map(progress_percent).transpose()?.flatten();
            req.ctx.require_member("volume_extension:snapshot_actions:update_snapshot_status", project)?;
            m.update_snapshot_status(&caller, id, &status, progress)?;
            Ok(Reply::empty(StatusCode::ACCEPTED))
        }
        other => Err(ApiError::bad_request(format!(
            "There is no such action: {other}. Verify the request body and Content-Type header and try again."
        ))),
    }
}

/// Cinder's `progress` format: an integer percentage, `"0%"` to `"100%"`; empty
/// (or null) leaves the progress as it is.
fn progress_percent(value: &Value) -> Result<Option<String>> {
    let text = match value {
        Value::Null => return Ok(None),
        Value::String(s) if s.is_empty() => return Ok(None),
        Value::String(s) => s,
        other => return Err(field_error("progress", other, "progress must be an integer percentage")),
    };
    let number = text.strip_suffix('%').and_then(|n| n.parse::<u8>().ok()).filter(|n| *n <= 100);
    match number {
        Some(_) => Ok(Some(text.clone())),
        None => Err(ApiError::bad_request(
            "Invalid input received: progress must be an integer percentage between 0 and 100",
        )),
    }
}

// ---- volume types --------------------------------------------------------------

fn create_type(m: &Manager, req: &Req) -> Result<Reply> {
    let body = req.json()?;
    let t = envelope(&body, "volume_type", &[])?;
    closed("volume_type", t, &["name", "description", "extra_specs", "os-volume-type-access:is_public", "is_public"])?;
    let type_name = string("name", required("volume_type", t, "name")?, 1, 255)?.trim().to_string();
    if type_name.is_empty() {
        return Err(field_error("name", &t["name"], "name must not be blank"));
    }
    let description =
        t.get("description").map(|d| schema::nullable_string("description", d, 0, 255)).transpose()?.flatten();
    let is_public = match t.get("os-volume-type-access:is_public").or(t.get("is_public")) {
        None => true,
        Some(v) => boolean("os-volume-type-access:is_public", v)?,
    };
    let specs = match t.get("extra_specs") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(s) => metadata("extra_specs", s, spec_key, 255)?,
    };
    let created = m.create_volume_type(type_name, description, is_public, specs)?;
    let ctx = view_ctx(m, req)?;
    Ok(Reply::ok(json!({"volume_type": views::volume_type_created(&ctx.view(), &created)})))
}

/// Admins choose with `is_public` (absent: public and shared with their project;
/// `none`: all); everyone else sees public types and those shared with them.
fn list_types(m: &Manager, req: &Req) -> Result<Reply> {
    use crate::manager::types::TypeFilter;
    let filter = match req.param("is_public") {
        None => TypeFilter::PublicOrShared,
        Some(v) if v.eq_ignore_ascii_case("none") => TypeFilter::All,
        Some(v) if boolean("is_public", &json!(v))? => TypeFilter::PublicOrShared,
        Some(_) => TypeFilter::Private,
    };
    let ctx = view_ctx(m, req)?;
    let types: Vec<Value> =
        m.list_volume_types(&req.caller(), filter)?.iter().map(|t| views::volume_type(&ctx.view(), t)).collect();
    Ok(Reply::ok(json!({"volume_types": types})))
}

/// `addProjectAccess` / `removeProjectAccess` on a private type.
fn type_access_action(m: &Manager, req: &Req, id: &str) -> Result<Reply> {
    let body = req.json()?;
    let top = body.as_object().ok_or_else(ApiError::malformed_body)?;
    let (action, value) = match top.iter().next() {
        Some(pair) if top.len() == 1 => pair,
        _ => return Err(ApiError::malformed_body()),
    };
    let add = match action.as_str() {
        "addProjectAccess" => true,
        "removeProjectAccess" => false,
        other => {
            return Err(ApiError::bad_request(format!(
                "There is no such action: {other}. Verify the request body and Content-Type header and try again."
            )));
        }
    };
    let rule = if add { "addProjectAccess" } else { "removeProjectAccess" };
    req.ctx.require_admin(&format!("volume_extension:volume_type_access:{rule}"))?;
    let o = schema::as_object(action, value)?;
    closed(action, o, &["project"])?;
    let project = string("project", required(action, o, "project")?, 1, 255)?;
    m.set_type_access(id, &project, add)?;
    Ok(Reply::empty(StatusCode::ACCEPTED))
}

fn update_type(m: &Manager, req: &Req, id: &str) -> Result<Reply> {
    let body = req.json()?;
    let t = envelope(&body, "volume_type", &[])?;
    closed("volume_type", t, &["name", "description", "is_public"])?;
    if t.is_empty() {
        return Err(field_error("volume_type", &body["volume_type"], "{} does not have enough properties"));
    }
    let new_name = t.get("name").map(|n| schema::nullable_string("name", n, 1, 255)).transpose()?.flatten();
    let description = t.get("description").map(|d| schema::nullable_string("description", d, 0, 255)).transpose()?;
    let is_public = t.get("is_public").map(|p| boolean("is_public", p)).transpose()?;
    let updated = m.update_volume_type(id, new_name, description, is_public)?;
    let ctx = view_ctx(m, req)?;
    Ok(Reply::ok(json!({"volume_type": views::volume_type_updated(&ctx.view(), &updated)})))
}

fn extra_specs(m: &Manager, req: &Req, id: &str, key: Option<&str>) -> Result<Reply> {
    let t = m.visible_volume_type(&req.caller(), id)?;
    if t.id != id {
        return Err(crate::manager::type_not_found(id).into());
    }
    let readable = views::visible_extra_specs(req.ctx.is_admin, &t.extra_specs);
    match (&req.method, key) {
        (&Method::GET, None) => Ok(Reply::ok(json!({"extra_specs": readable}))),
        (&Method::GET, Some(key)) => {
            let value = readable
                .get(key)
                .ok_or_else(|| ApiError::not_found(format!("Volume Type {id} has no extra specs with key {key}.")))?;
            Ok(Reply::ok(json!({key: value})))
        }
        (&Method::POST, None) => {
            let body = req.json()?;
            let specs = metadata("extra_specs", required_meta(&body, "extra_specs")?, spec_key, 255)?;
            Ok(Reply::ok(json!({"extra_specs": m.set_extra_specs(id, specs)?})))
        }
        (&Method::PUT, Some(key)) => {
            let body = req.json()?;
            let specs = metadata("extra_specs", &body, spec_key, 255)?;
            if specs.len() != 1 {
                return Err(ApiError::bad_request("Request body contains too many items."));
            }
            if !specs.contains_key(key) {
                return Err(ApiError::bad_request("Request body and URI mismatch"));
            }
            Ok(Reply::ok(json!(m.set_extra_specs(id, specs)?)))
        }
        (&Method::DELETE, Some(key)) => {
            m.delete_extra_spec(id, key)?;
            Ok(Reply::empty(StatusCode::ACCEPTED))
        }
        _ => Err(bad_method()),
    }
}
