//! Service and host views, in Cinder's shapes: `os-services` (list filtered by
//! `host` / `binary`, enable, disable, disable-log-reason, freeze, thaw, and the
//! log levels at 3.32: `cinder/api/v3/services.py`), `os-hosts`
//! (`cinder/api/contrib/hosts.py`), `capabilities/{host}` and `extensions`.

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::fault::ApiError;
use super::schema::{as_object, closed, nullable_string, required, string};
use super::{Reply, Req, bad_method};
use crate::logging;
use crate::manager::{Manager, Service, VOLUME_BINARY};

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
        "frozen": s.frozen,
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

/// `PUT /os-services/{what}`.
pub(super) fn update(m: &Manager, req: &Req, what: &str) -> Result<Reply> {
    match what {
        "enable" | "disable" | "disable-log-reason" => enable(m, req, what),
        "freeze" | "thaw" => freeze(m, req, what == "freeze"),
        "set-log" => set_log(m, req),
        "get-log" => get_log(m, req),
        _ => Err(ApiError::resource_not_found()),
    }
}

fn enable(m: &Manager, req: &Req, what: &str) -> Result<Reply> {
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

/// `freeze` / `thaw` (`{"host": …}`; ember runs no clusters, so a `cluster`
/// names none): 200 with no body, as Cinder answers.
fn freeze(m: &Manager, req: &Req, frozen: bool) -> Result<Reply> {
    let body = req.json()?;
    let o = as_object("body", &body)?;
    closed("body", o, &["host", "cluster"])?;
    if let Some(cluster) = nullable_string("cluster", o.get("cluster").unwrap_or(&Value::Null), 1, 255)? {
        return Err(ApiError::not_found(format!("Cluster {cluster} could not be found.")));
    }
    let host = nullable_string("host", o.get("host").unwrap_or(&Value::Null), 1, 255)?.ok_or_else(|| {
        ApiError::bad_request("Invalid input received: One and only one of cluster and host must be set.")
    })?;
    m.set_frozen(&host, frozen)?;
    Ok(Reply::empty(StatusCode::OK))
}

/// What a log-level request names: (whether the API's own loggers, whether the
/// volume service's) — one process is both here, so both answer alike.
fn log_targets(m: &Manager, o: &serde_json::Map<String, Value>) -> Result<(bool, bool)> {
    let binary = match o.get("binary") {
        None => String::new(),
        Some(b) => string("binary", b, 0, 255)?,
    };
    let (api, volume) = match binary.as_str() {
        "" | "*" => (true, true),
        "cinder-api" => (true, false),
        VOLUME_BINARY => (false, true),
        "cinder-scheduler" | "cinder-backup" => (false, false),
        other => {
            return Err(ApiError::bad_request(format!(
                "Invalid input for field/attribute binary. Value: {other}. '{other}' is not one of ['cinder-scheduler', \
                 'cinder-volume', 'cinder-backup', 'cinder-api', '', '*']"
            )));
        }
    };
    let server = nullable_string("server", o.get("server").unwrap_or(&Value::Null), 0, 255)?.unwrap_or_default();
    let service_host = m.service_host();
    let node = service_host.split('@').next().unwrap_or_default();
    let on_server = |host: &str| server.is_empty() || server == host || server == node;
    Ok((api && on_server(node), volume && on_server(&service_host)))
}

fn log_prefix(o: &serde_json::Map<String, Value>) -> Result<Option<String>> {
    nullable_string("prefix", o.get("prefix").unwrap_or(&Value::Null), 0, 255)
}

/// `set-log` (3.32): every logger under `prefix` at `level`; 202, no body.
fn set_log(m: &Manager, req: &Req) -> Result<Reply> {
    let body = req.json()?;
    let o = as_object("body", &body)?;
    closed("body", o, &["binary", "server", "prefix", "level"])?;
    let (api, volume) = log_targets(m, o)?;
    let prefix = log_prefix(o)?;
    let level = nullable_string("level", o.get("level").unwrap_or(&Value::Null), 0, 255)?.unwrap_or_default();
    let level = logging::parse_level(&level).map_err(ApiError::bad_request)?;
    if api || volume {
        logging::set_level(prefix.as_deref(), level)
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    }
    Ok(Reply::empty(StatusCode::ACCEPTED))
}

/// `get-log` (3.32): the levels of the loggers under `prefix`, per service.
fn get_log(m: &Manager, req: &Req) -> Result<Reply> {
    let body = req.json()?;
    let o = as_object("body", &body)?;
    closed("body", o, &["binary", "server", "prefix"])?;
    let (api, volume) = log_targets(m, o)?;
    let levels = logging::levels(log_prefix(o)?.as_deref());
    let host = m.service_host();
    let node = host.split('@').next().unwrap_or_default();
    let mut out = Vec::new();
    if api {
        out.push(json!({"host": node, "binary": "cinder-api", "levels": levels}));
    }
    if volume {
        out.push(json!({"host": host, "binary": VOLUME_BINARY, "levels": levels}));
    }
    Ok(Reply::ok(json!({"log_levels": out})))
}

// ---- os-hosts ---------------------------------------------------------------------

/// `os-hosts`: the (deprecated upstream, still served) host summary. Cinder
/// lists only enabled services; ember lists its one service either way, so that
/// `PUT` can enable it again (README, "Differences").
pub(super) fn hosts(m: &Manager, req: &Req, rest: &[&str]) -> Result<Reply> {
    let services = m.services()?;
    let in_zone = |s: &&Service| req.param("zone").is_none_or(|z| z.is_empty() || z == s.zone);
    match (&req.method, rest) {
        (&axum::http::Method::GET, []) => {
            let hosts: Vec<Value> = services.iter().filter(in_zone).map(host_view).collect();
            Ok(Reply::ok(json!({"hosts": hosts})))
        }
        (&axum::http::Method::GET, [host]) => {
            let s = services.iter().find(|s| s.host == *host).ok_or_else(|| host_not_found(host))?;
            host_usage(m, &s.host)
        }
        (&axum::http::Method::PUT, [host]) => {
            let s = services.iter().find(|s| s.host == *host).ok_or_else(|| host_not_found(host))?;
            update_host(m, req, s)
        }
        _ => Err(bad_method()),
    }
}

fn host_not_found(host: &str) -> ApiError {
    ApiError::not_found(format!("Host {host} could not be found."))
}

fn host_view(s: &Service) -> Value {
    json!({
        "host_name": s.host,
        "service": s.binary,
        "zone": s.zone,
        "service-status": "available",
        "service-state": if s.disabled { "disabled" } else { "enabled" },
        "last-update": s.updated_at,
    })
}

/// Volumes and snapshots on the host: the total, then each project's (counts
/// and GiB as strings, as Cinder answers them).
fn host_usage(m: &Manager, host: &str) -> Result<Reply> {
    let usage = m.project_usage()?;
    let resource = |project: &str, v: i64, vg: i64, s: i64, sg: i64| {
        json!({"resource": {
            "host": host, "project": project,
            "volume_count": v.to_string(), "total_volume_gb": vg.to_string(),
            "snapshot_count": s.to_string(), "total_snapshot_gb": sg.to_string(),
        }})
    };
    let sum = |f: fn(&crate::store::ProjectUsage) -> i64| usage.iter().map(f).sum::<i64>();
    let mut out = vec![resource(
        "(total)",
        sum(|u| u.volumes),
        sum(|u| u.volume_gib),
        sum(|u| u.snapshots),
        sum(|u| u.snapshot_gib),
    )];
    out.extend(usage.iter().map(|u| resource(&u.project_id, u.volumes, u.volume_gib, u.snapshots, u.snapshot_gib)));
    Ok(Reply::ok(json!({"host": out})))
}

/// `PUT /os-hosts/{host}` `{"status": "enable" | "disable"}` (keys and values
/// in any case): Cinder's HostAPI raises NotImplemented here; ember enables or
/// disables its service, as `os-services` does.
fn update_host(m: &Manager, req: &Req, s: &Service) -> Result<Reply> {
    let body = req.json()?;
    let o = as_object("body", &body)?;
    let mut enabled = None;
    for (key, value) in o {
        if key.trim().to_lowercase() != "status" {
            return Err(ApiError::bad_request(format!("Invalid update setting: '{key}'")));
        }
        let text = value.as_str().map(|v| v.trim().to_lowercase());
        enabled = Some(match text.as_deref() {
            Some("enable") => true,
            Some("disable") => false,
            _ => {
                return Err(ApiError::bad_request(format!("Invalid status: '{}'", value.as_str().unwrap_or_default())));
            }
        });
    }
    let Some(enabled) = enabled else { return Ok(Reply::ok(json!({}))) };
    let s = m.set_service_disabled(&s.host, s.binary, !enabled, None)?;
    Ok(Reply::ok(json!({"host": s.host, "status": if s.disabled { "disabled" } else { "enabled" }})))
}

// ---- capabilities and extensions ---------------------------------------------------

/// `GET /capabilities/{host}`: what the backend offers, in Cinder's summary
/// view (`cinder/api/views/capabilities.py`), with the standard properties.
pub(super) fn capabilities(m: &Manager, host: &str) -> Result<Reply> {
    let Some(slot) = m.pool_named(host) else {
        return Err(ApiError::not_found(format!("Can't find service: {host}")));
    };
    let service = slot.service_host();
    let caps = crate::manager::capabilities(slot, &m.stats_of_pool(slot)?);
    let property =
        |title: &str, description: &str| json!({"title": title, "description": description, "type": "boolean"});
    Ok(Reply::ok(json!({
        "namespace": format!("OS::Storage::Capabilities::{service}"),
        "vendor_name": caps["vendor_name"],
        "volume_backend_name": caps["volume_backend_name"],
        "pool_name": slot.host.split('#').nth(1),
        "driver_version": caps["driver_version"],
        "storage_protocol": caps["storage_protocol"],
        "display_name": Value::Null,
        "description": Value::Null,
        "visibility": Value::Null,
        "replication_targets": [],
        "properties": {
            "thin_provisioning": property("Thin Provisioning", "Sets thin provisioning."),
            "compression": property("Compression", "Enables compression."),
            "qos": property("QoS", "Enables QoS."),
            "replication_enabled": property("Replication", "Enables replication."),
        },
    })))
}

/// The API extensions ember serves: (alias, name, updated, description), as
/// Cinder's extension descriptors name them.
const EXTENSIONS: &[(&str, &str, &str, &str)] = &[
    ("capabilities", "Capabilities", "2015-08-31T00:00:00+00:00", "Capabilities support."),
    ("encryption", "VolumeTypeEncryption", "2013-07-01T00:00:00+00:00", "Encryption support for volume types."),
    ("os-admin-actions", "AdminActions", "2012-08-25T00:00:00+00:00", "Enable admin actions."),
    ("os-availability-zone", "AvailabilityZones", "2013-06-27T00:00:00+00:00", "Describe Availability Zones."),
    ("os-extended-services", "ExtendedServices", "2014-01-10T00:00:00-00:00", "Extended services support."),
    (
        "os-extended-snapshot-attributes",
        "ExtendedSnapshotAttributes",
        "2012-06-19T00:00:00+00:00",
        "Extended SnapshotAttributes support.",
    ),
    ("os-hosts", "Hosts", "2011-06-29T00:00:00+00:00", "Admin-only host administration."),
    ("os-quota-class-sets", "QuotaClasses", "2012-03-12T00:00:00+00:00", "Quota classes management support."),
    ("os-quota-sets", "Quotas", "2011-08-08T00:00:00+00:00", "Quota management support."),
    ("os-services", "Services", "2012-10-28T00:00:00-00:00", "Services support."),
    ("os-snapshot-actions", "SnapshotActions", "2013-07-16T00:00:00+00:00", "Enable snapshot manager actions."),
    ("os-types-extra-specs", "TypesExtraSpecs", "2011-08-24T00:00:00+00:00", "Type extra specs support."),
    ("os-types-manage", "TypesManage", "2011-08-24T00:00:00+00:00", "Types manage support."),
    (
        "os-used-limits",
        "UsedLimits",
        "2013-10-03T00:00:00+00:00",
        "Provide data on limited resources that are being used.",
    ),
    (
        "os-vol-host-attr",
        "VolumeHostAttribute",
        "2011-11-03T00:00:00+00:00",
        "Expose host as an attribute of a volume.",
    ),
    (
        "os-vol-image-meta",
        "VolumeImageMetadata",
        "2012-12-07T00:00:00+00:00",
        "Show image metadata associated with the volume.",
    ),
    (
        "os-vol-mig-status-attr",
        "VolumeMigStatusAttribute",
        "2013-08-08T00:00:00+00:00",
        "Expose migration_status as an attribute of a volume.",
    ),
    (
        "os-vol-tenant-attr",
        "VolumeTenantAttribute",
        "2011-11-03T00:00:00+00:00",
        "Expose the internal project_id as an attribute of a volume.",
    ),
    ("os-volume-actions", "VolumeActions", "2012-05-31T00:00:00+00:00", "Enable volume actions."),
    (
        "os-volume-encryption-metadata",
        "VolumeEncryptionMetadata",
        "2013-07-10T00:00:00+00:00",
        "Volume encryption metadata retrieval support.",
    ),
    (
        "os-volume-manage",
        "VolumeManage",
        "2014-02-10T00:00:00+00:00",
        "Allows existing backend storage to be 'managed' by Cinder.",
    ),
    ("os-volume-transfer", "VolumeTransfer", "2013-05-29T00:00:00+00:00", "Volume transfer management support."),
    ("os-volume-type-access", "VolumeTypeAccess", "2014-06-26T00:00:00Z", "Volume type access support."),
    ("os-volume-unmanage", "VolumeUnmanage", "2012-05-31T00:00:00+00:00", "Enable volume unmanage operation."),
    ("qos-specs", "Qos_specs_manage", "2013-08-02T00:00:00+00:00", "QoS specs support."),
    ("scheduler-stats", "Scheduler_stats", "2014-09-07T00:00:00+00:00", "Scheduler stats support."),
];

fn extension_view(&(alias, name, updated, description): &(&str, &str, &str, &str)) -> Value {
    json!({"alias": alias, "name": name, "updated": updated, "description": description, "links": []})
}

/// `GET /extensions` and `GET /extensions/{alias}`.
pub(super) fn extensions(rest: &[&str]) -> Result<Reply> {
    match rest {
        [] => Ok(Reply::ok(json!({"extensions": EXTENSIONS.iter().map(extension_view).collect::<Vec<_>>()}))),
        [alias] => EXTENSIONS
            .iter()
            .find(|e| e.0 == *alias)
            .map(|e| Reply::ok(json!({"extension": extension_view(e)})))
            .ok_or_else(ApiError::resource_not_found),
        _ => Err(ApiError::resource_not_found()),
    }
}
