//! Volume type encryption (`/types/{id}/encryption`,
//! `cinder/api/contrib/volume_type_encryption.py`) and a volume's encryption
//! metadata (`/volumes/{id}/encryption`, `volume_encryption_metadata.py`). The
//! hypervisor encrypts (front-end); ember stores the specs, marks the type's
//! volumes `encrypted` and says so in `connection_info`. There is no key
//! manager behind ember yet, so `encryption_key_id` is null (README).

use axum::http::{Method, StatusCode};
use serde_json::{Map, Value, json};

use super::fault::ApiError;
use super::schema::{as_object, closed, field_error, nullable_string, required, string};
use super::{Reply, Req, bad_method};
use crate::manager::Manager;
use crate::manager::types::EncryptionChange;
use crate::model::TypeEncryption;

type Result<T> = std::result::Result<T, ApiError>;

/// `/types/{type_id}/encryption[/{key or id}]`.
pub(super) fn type_route(m: &Manager, req: &Req, type_id: &str, rest: &[&str]) -> Result<Reply> {
    match (&req.method, rest) {
        (&Method::GET, []) => {
            let specs = m.type_encryption(type_id)?.map(|e| specs_view(&e)).unwrap_or_else(|| json!({}));
            Ok(Reply::ok(specs))
        }
        (&Method::POST, []) => {
            let (change, _) = parse(req, true)?;
            let e = m.set_type_encryption(type_id, change, true)?;
            let mut out = stored(&e);
            out["volume_type_id"] = json!(e.type_id);
            out["encryption_id"] = json!(e.encryption_id);
            Ok(Reply::ok(json!({"encryption": out})))
        }
        (&Method::GET, [key]) => {
            let specs = m.type_encryption(type_id)?.map(|e| specs_view(&e));
            let value = specs.as_ref().and_then(|s| s.get(*key)).ok_or_else(|| {
                ApiError::not_found(format!("Volume type encryption for type {type_id} does not exist."))
            })?;
            Ok(Reply::ok(json!({ *key: value })))
        }
        (&Method::PUT, [_]) => {
            let (change, given) = parse(req, false)?;
            m.set_type_encryption(type_id, change, false)?;
            Ok(Reply::ok(json!({"encryption": given})))
        }
        (&Method::DELETE, [_]) => {
            m.delete_type_encryption(type_id)?;
            Ok(Reply::empty(StatusCode::ACCEPTED))
        }
        _ => Err(bad_method()),
    }
}

/// What the encryptor needs: provider, control location, cipher, key size.
fn stored(e: &TypeEncryption) -> Value {
    json!({"provider": e.provider, "control_location": e.control_location, "cipher": e.cipher, "key_size": e.key_size})
}

/// `GET /types/{id}/encryption`: the record, as Cinder's row reads.
fn specs_view(e: &TypeEncryption) -> Value {
    let mut out = stored(e);
    for (k, v) in [
        ("volume_type_id", json!(e.type_id)),
        ("encryption_id", json!(e.encryption_id)),
        ("created_at", json!(e.created_at)),
        ("updated_at", json!(e.updated_at)),
        ("deleted", json!(false)),
        ("deleted_at", Value::Null),
    ] {
        out[k] = v;
    }
    out
}

/// `{"encryption": {...}}`: provider and control_location required on create;
/// `key_size` an integer (or digits) of at least 0, or null. Returns the change
/// and the fields as given (key_size as a number), which update answers.
fn parse(req: &Req, create: bool) -> Result<(EncryptionChange, Map<String, Value>)> {
    let body = req.json()?;
    let o = as_object("body", &body)?;
    closed("body", o, &["encryption"])?;
    let e = as_object("encryption", required("body", o, "encryption")?)?;
    closed("encryption", e, &["provider", "control_location", "cipher", "key_size"])?;
    if create {
        required("encryption", e, "provider")?;
        required("encryption", e, "control_location")?;
    }
    let mut given = e.clone();
    let mut change = EncryptionChange::default();
    if let Some(p) = e.get("provider") {
        change.provider = Some(string("provider", p, 0, 255)?);
    }
    if let Some(c) = e.get("control_location") {
        let location = c.as_str().filter(|l| ["front-end", "back-end"].contains(l));
        let location =
            location.ok_or_else(|| field_error("control_location", c, "is not one of ['front-end', 'back-end']"))?;
        change.control_location = Some(location.to_string());
    }
    if let Some(c) = e.get("cipher") {
        change.cipher = Some(nullable_string("cipher", c, 0, 255)?);
    }
    if let Some(k) = e.get("key_size") {
        let size = match k {
            Value::Null => None,
            Value::Number(n) => Some(n.as_i64().filter(|n| (0..=i64::from(i32::MAX)).contains(n))),
            Value::String(s) => Some(s.trim().parse::<i64>().ok().filter(|n| (0..=i64::from(i32::MAX)).contains(n))),
            _ => Some(None),
        };
        let size = match size {
            None => None,
            Some(Some(n)) => Some(n),
            Some(None) => return Err(field_error("key_size", k, "must be an integer of at least 0")),
        };
        given.insert("key_size".into(), json!(size));
        change.key_size = Some(size);
    }
    Ok((change, given))
}

/// `GET /volumes/{id}/encryption[/{key}]`.
pub(super) fn volume_metadata(m: &Manager, req: &Req, volume_id: &str, key: Option<&str>) -> Result<Reply> {
    let v = m.volume(&req.caller(), volume_id)?;
    let mut out = json!({"encryption_key_id": Value::Null});
    if let Some(e) = m.type_encryption(&v.volume_type_id)? {
        for (k, value) in stored(&e).as_object().into_iter().flatten() {
            out[k] = value.clone();
        }
    }
    match key {
        None => Ok(Reply::ok(out)),
        Some(k) => out.get(k).cloned().map(Reply::ok).ok_or_else(ApiError::resource_not_found),
    }
}
