//! JSON views per microversion (spec §2.2, §2.3, §2.5). A field appears only from
//! the microversion that introduced it: tempest's schemas are closed per band.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use super::microversion::Version;
use crate::manager::{ManageableSnapshot, ManageableVolume, PoolStats};
use crate::model::{AttachStatus, Snapshot, Volume, VolumeType};

/// What a view needs besides the record.
pub struct ViewContext<'a> {
    pub base_url: &'a str,
    /// The project segment the request's URL had; links use the same form.
    pub project: Option<&'a str>,
    pub version: Version,
    pub is_admin: bool,
    /// Type id → name, for `volume_type`.
    pub type_names: &'a BTreeMap<String, String>,
    /// Ids of the types with encryption specs (their volumes are `encrypted`).
    pub encrypted_types: &'a BTreeSet<String>,
}

/// Self and bookmark links, with the project segment only when the request had one
/// (as upstream's `_get_project_id_in_url`).
pub fn volume_links(ctx: &ViewContext, id: &str) -> Value {
    let project = ctx.project.map(|p| format!("{p}/")).unwrap_or_default();
    json!([
        {"rel": "self", "href": format!("{}/v3/{project}volumes/{id}", ctx.base_url)},
        {"rel": "bookmark", "href": format!("{}/{project}volumes/{id}", ctx.base_url)},
    ])
}

pub fn volume_summary(ctx: &ViewContext, v: &Volume) -> Value {
    json!({"id": v.id, "name": v.name, "links": volume_links(ctx, &v.id)})
}

/// `GET /volumes/{id}` and `/volumes/detail`: the volume with what Cinder's API
/// extensions add to show and detail only (tenant, host, migration name ids,
/// image metadata).
pub fn volume_detail(ctx: &ViewContext, v: &Volume) -> Value {
    let mut out = volume_created(ctx, v);
    let o = out.as_object_mut().expect("a JSON object");
    o.insert("os-vol-tenant-attr:tenant_id".into(), json!(v.project_id));
    if !v.image_metadata.is_empty() {
        o.insert("volume_image_metadata".into(), json!(v.image_metadata));
    }
    if ctx.is_admin {
        let migration = v.migration_status.as_ref().map(ToString::to_string);
        o.insert("os-vol-host-attr:host".into(), json!(v.host));
        o.insert("os-vol-mig-status-attr:migstat".into(), json!(migration));
        o.insert("os-vol-mig-status-attr:name_id".into(), Value::Null);
    }
    out
}

/// What create, update and manage answer: Cinder's volume view builder alone.
pub fn volume_created(ctx: &ViewContext, v: &Volume) -> Value {
    let mut metadata = v.metadata.clone();
    for key in ["readonly", "attached_mode"] {
        if let Some(value) = v.admin_metadata.get(key) {
            metadata.insert(key.to_string(), value.clone());
        }
    }
    let attachments: Vec<Value> = v
        .attachments
        .iter()
        .filter(|a| a.attach_status == AttachStatus::Attached)
        .map(|a| {
            json!({
                "id": v.id,
                "attachment_id": a.id,
                "volume_id": v.id,
                "server_id": a.instance_uuid,
                "host_name": if ctx.is_admin { a.attached_host.clone() } else { None },
                "device": a.mountpoint,
                "attached_at": a.attach_time,
            })
        })
        .collect();
    let mut out = json!({
        "id": v.id,
        "name": v.name,
        "description": v.description,
        "status": v.status.shown(),
        "size": v.size,
        "availability_zone": v.availability_zone,
        "created_at": v.created_at,
        "updated_at": v.updated_at,
        "volume_type": ctx.type_names.get(&v.volume_type_id).cloned().unwrap_or_else(|| v.volume_type_id.clone()),
        "snapshot_id": v.snapshot_id,
        "source_volid": v.source_volid,
        "metadata": metadata,
        "links": volume_links(ctx, &v.id),
        "user_id": v.user_id,
        "bootable": if v.bootable { "true" } else { "false" },
        "encrypted": ctx.encrypted_types.contains(&v.volume_type_id),
        "replication_status": Value::Null,
        "consistencygroup_id": Value::Null,
        "multiattach": v.multiattach,
        "attachments": attachments,
    });
    let o = out.as_object_mut().expect("a JSON object");
    if ctx.is_admin {
        o.insert("migration_status".into(), json!(v.migration_status.as_ref().map(ToString::to_string)));
    }
    let at = |minor| ctx.version.at_least(3, minor);
    if at(13) {
        o.insert("group_id".into(), json!(v.group_id));
    }
    if at(21) && ctx.is_admin {
        o.insert("provider_id".into(), Value::Null);
    }
    if at(48) {
        o.insert("service_uuid".into(), Value::Null);
        // Below 3.69 a null shared_targets is shown as true; ember never shares targets.
        o.insert("shared_targets".into(), json!(false));
    }
    if at(61) && ctx.is_admin {
        o.insert("cluster_name".into(), Value::Null);
    }
    if at(63) {
        o.insert("volume_type_id".into(), json!(v.volume_type_id));
    }
    if at(65) {
        o.insert("consumes_quota".into(), json!(true));
    }
    out
}

/// `GET /snapshots/{id}` and `/snapshots/detail`: with the extended snapshot
/// attributes Cinder adds to show and detail only.
pub fn snapshot_detail(ctx: &ViewContext, s: &Snapshot) -> Value {
    let mut out = snapshot_created(ctx, s);
    out["os-extended-snapshot-attributes:progress"] = json!(s.progress);
    out["os-extended-snapshot-attributes:project_id"] = json!(s.project_id);
    out
}

/// What create and update answer: the summary and the fields of later
/// microversions.
pub fn snapshot_created(ctx: &ViewContext, s: &Snapshot) -> Value {
    let mut out = snapshot_summary(s);
    let o = out.as_object_mut().expect("a JSON object");
    if ctx.version.at_least(3, 14) {
        o.insert("group_snapshot_id".into(), json!(s.group_snapshot_id));
    }
    if ctx.version.at_least(3, 41) {
        o.insert("user_id".into(), json!(s.user_id));
    }
    if ctx.version.at_least(3, 65) {
        o.insert("consumes_quota".into(), json!(true));
    }
    out
}

/// `GET /snapshots`: Cinder's summary, the same at every microversion.
pub fn snapshot_summary(s: &Snapshot) -> Value {
    json!({
        "id": s.id,
        "created_at": s.created_at,
        "updated_at": s.updated_at,
        "name": s.name,
        "description": s.description,
        "volume_id": s.volume_id,
        "status": s.status.as_str(),
        "size": s.volume_size,
        "metadata": s.metadata,
    })
}

/// What snapshot manage answers: Cinder's contrib snapshot view builder, which
/// carries none of the snapshots controller's extensions nor later
/// microversions' fields (tempest's `manage_snapshot` schema is closed).
pub fn snapshot_managed(s: &Snapshot) -> Value {
    snapshot_summary(s)
}

/// The extra specs Cinder shows callers who may not read them all
/// (`volume_extension:types_extra_specs:read_sensitive`, admin by default).
pub const USER_VISIBLE_EXTRA_SPECS: &[&str] = &["RESKEY:availability_zones", "multiattach", "replication_enabled"];

/// What of `specs` the caller may read.
pub fn visible_extra_specs(is_admin: bool, specs: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    specs
        .iter()
        .filter(|(k, _)| is_admin || USER_VISIBLE_EXTRA_SPECS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// `GET /types`, `/types/{id}`, `/types/default`: with `qos_specs_id` for admins
/// and the type-access extension's `is_public`.
pub fn volume_type(ctx: &ViewContext, t: &VolumeType) -> Value {
    let mut out = volume_type_created(ctx, t);
    if ctx.is_admin {
        out["qos_specs_id"] = json!(t.qos_specs_id);
    }
    out
}

/// What `POST /types` answers: the type-access extension extends create too.
pub fn volume_type_created(ctx: &ViewContext, t: &VolumeType) -> Value {
    let mut out = volume_type_updated(ctx, t);
    out["os-volume-type-access:is_public"] = json!(t.is_public);
    out
}

/// What `PUT /types/{id}` answers: the types-manage view alone.
pub fn volume_type_updated(ctx: &ViewContext, t: &VolumeType) -> Value {
    json!({
        "id": t.id,
        "name": t.name,
        "description": t.description,
        "is_public": t.is_public,
        "extra_specs": visible_extra_specs(ctx.is_admin, &t.extra_specs),
    })
}

pub fn manageable(m: &ManageableVolume, detail: bool) -> Value {
    let mut out = json!({
        "reference": {"source-name": m.name},
        "size": m.size_gib,
        "safe_to_manage": m.safe_to_manage,
    });
    if detail {
        out["reason_not_safe"] = json!(m.reason_not_safe);
        out["cinder_id"] = json!(m.cinder_id);
        out["extra_info"] = Value::Null;
    }
    out
}

/// One entry of `GET manageable_snapshots[/detail]` (Cinder's
/// views/manageable_snapshots.py).
pub fn manageable_snapshot(m: &ManageableSnapshot, detail: bool) -> Value {
    let mut out = json!({
        "reference": {"source-name": m.name},
        "size": m.size_gib,
        "safe_to_manage": m.safe_to_manage,
        "source_reference": m.source_name.as_ref().map(|name| json!({"source-name": name})),
    });
    if detail {
        out["reason_not_safe"] = json!(m.reason_not_safe);
        out["cinder_id"] = json!(m.cinder_id);
        out["extra_info"] = Value::Null;
    }
    out
}

/// One pool of `GET /scheduler-stats/get_pools`.
pub fn pool(slot: &crate::manager::PoolSlot, stats: &PoolStats, detail: bool) -> Value {
    let mut out = json!({"name": slot.host});
    if detail {
        out["capabilities"] = crate::manager::scheduler::capabilities(slot, stats);
    }
    out
}

/// The version document of `GET /` and `GET /v3/` (spec §1.3).
pub fn versions(base_url: &str) -> Value {
    json!({"versions": [{
        "id": "v3.0",
        "status": "CURRENT",
        "version": super::microversion::MAX.to_string(),
        "min_version": super::microversion::MIN.to_string(),
        "updated": "2023-08-31T00:00:00Z",
        "links": [
            {"rel": "describedby", "type": "text/html", "href": "https://docs.openstack.org/"},
            {"rel": "self", "href": format!("{base_url}/v3/")},
        ],
        "media-types": [{"base": "application/json", "type": "application/vnd.openstack.volume+json;version=3"}],
    }]})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::VolumeStatus;

    fn volume() -> Volume {
        Volume {
            id: "v1".into(),
            project_id: "p".into(),
            user_id: "u".into(),
            name: Some("n".into()),
            description: None,
            size: 1,
            status: VolumeStatus::Managing,
            previous_status: None,
            attach_status: AttachStatus::Detached,
            migration_status: None,
            volume_type_id: "t1".into(),
            availability_zone: "nova".into(),
            bootable: true,
            multiattach: false,
            snapshot_id: None,
            source_volid: None,
            host: "h@file#file".into(),
            group_id: None,
            created_at: "2026-01-01T00:00:00.000000".into(),
            updated_at: None,
            metadata: BTreeMap::from([("k".into(), "v".into())]),
            admin_metadata: BTreeMap::from([("readonly".into(), "True".into())]),
            image_metadata: BTreeMap::new(),
            attachments: vec![],
        }
    }

    fn keys(version: Version, admin: bool) -> Vec<String> {
        let names = BTreeMap::from([("t1".to_string(), "gold".to_string())]);
        let ctx = ViewContext {
            base_url: "http://x",
            project: Some("p"),
            version,
            is_admin: admin,
            type_names: &names,
            encrypted_types: &BTreeSet::new(),
        };
        let view = volume_detail(&ctx, &volume());
        let mut keys: Vec<String> = view.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        keys
    }

    #[test]
    fn fields_appear_only_from_their_microversion() {
        let base = keys(Version(3, 0), true);
        for late in [
            "group_id",
            "provider_id",
            "service_uuid",
            "shared_targets",
            "cluster_name",
            "volume_type_id",
            "consumes_quota",
        ] {
            assert!(!base.contains(&late.to_string()), "{late} at 3.0");
        }
        assert!(keys(Version(3, 13), true).contains(&"group_id".to_string()));
        assert!(!keys(Version(3, 20), true).contains(&"provider_id".to_string()));
        assert!(keys(Version(3, 21), true).contains(&"provider_id".to_string()));
        assert!(!keys(Version(3, 21), false).contains(&"provider_id".to_string()));
        assert!(keys(Version(3, 48), true).contains(&"shared_targets".to_string()));
        assert!(keys(Version(3, 61), true).contains(&"cluster_name".to_string()));
        assert!(!keys(Version(3, 62), true).contains(&"volume_type_id".to_string()));
        assert!(keys(Version(3, 63), true).contains(&"volume_type_id".to_string()));
        assert!(keys(Version(3, 65), true).contains(&"consumes_quota".to_string()));
        assert!(!keys(Version(3, 0), false).contains(&"os-vol-host-attr:host".to_string()));
    }

    #[test]
    fn snapshot_fields_by_band() {
        let names = BTreeMap::new();
        let snap = Snapshot {
            id: "s".into(),
            volume_id: "v".into(),
            project_id: "p".into(),
            user_id: "u".into(),
            name: None,
            description: None,
            status: crate::model::SnapshotStatus::Available,
            volume_size: 1,
            progress: "100%".into(),
            volume_type_id: "t".into(),
            group_snapshot_id: None,
            created_at: "2026-01-01T00:00:00.000000".into(),
            updated_at: None,
            metadata: BTreeMap::new(),
        };
        let at = |minor| {
            let ctx = ViewContext {
                base_url: "http://x",
                project: None,
                version: Version(3, minor),
                is_admin: true,
                type_names: &names,
                encrypted_types: &BTreeSet::new(),
            };
            snapshot_detail(&ctx, &snap)
        };
        assert!(at(13).get("group_snapshot_id").is_none() && at(14).get("group_snapshot_id").is_some());
        assert!(at(40).get("user_id").is_none() && at(41)["user_id"] == "u");
        assert!(at(64).get("consumes_quota").is_none() && at(65)["consumes_quota"] == true);
        assert_eq!(at(0)["os-extended-snapshot-attributes:progress"], "100%");
    }

    #[test]
    fn links_follow_the_request_url_form() {
        let names = BTreeMap::new();
        let ctx = ViewContext {
            base_url: "http://x",
            project: None,
            version: Version(3, 0),
            is_admin: false,
            type_names: &names,
            encrypted_types: &BTreeSet::new(),
        };
        let links = volume_links(&ctx, "v1");
        assert_eq!(links[0]["href"], "http://x/v3/volumes/v1");
        assert_eq!(links[1]["href"], "http://x/volumes/v1");
    }

    #[test]
    fn status_bootable_and_metadata_as_cinder_shows_them() {
        let names = BTreeMap::from([("t1".to_string(), "gold".to_string())]);
        let ctx = ViewContext {
            base_url: "http://x",
            project: Some("p"),
            version: Version(3, 0),
            is_admin: true,
            type_names: &names,
            encrypted_types: &BTreeSet::new(),
        };
        let view = volume_detail(&ctx, &volume());
        assert_eq!(view["status"], "creating");
        assert_eq!(view["bootable"], "true");
        assert_eq!(view["volume_type"], "gold");
        assert_eq!(view["metadata"]["readonly"], "True");
        assert_eq!(view["os-vol-host-attr:host"], "h@file#file");
        assert_eq!(view["links"][0]["href"], "http://x/v3/p/volumes/v1");
    }
}
