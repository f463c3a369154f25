//! `qos-specs` in Cinder's shapes (`cinder/api/contrib/qos_specs_manage.py`,
//! `cinder/api/views/qos_specs.py`): create, list (filtered by `id`, `name`,
//! `consumer`), show, update (keys set or, null, removed; `consumer` too),
//! delete (`force` to disassociate first), delete_keys, associations, and
//! associate / disassociate (`vol_type_id`) / disassociate_all.

use std::collections::BTreeMap;

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use super::fault::ApiError;
use super::schema::{as_object, closed, field_error, required, string};
use super::{Reply, Req, bad_method};
use crate::manager::{Manager, QosUpdate};
use crate::model::{QosConsumer, QosSpecs};

type Result<T> = std::result::Result<T, ApiError>;

pub(super) fn route(m: &Manager, req: &Req, rest: &[&str]) -> Result<Reply> {
    match (&req.method, rest) {
        (&Method::GET, []) => list(m, req),
        (&Method::POST, []) => create(m, req),
        (&Method::GET, [id]) => Ok(Reply::ok(detail(req, &m.qos(id)?))),
        (&Method::PUT, [id]) => update(m, req, id),
        (&Method::DELETE, [id]) => {
            m.delete_qos(id, req.flag("force")?)?;
            Ok(Reply::empty(StatusCode::ACCEPTED))
        }
        (&Method::PUT, [id, "delete_keys"]) => delete_keys(m, req, id),
        (&Method::GET, [id, "associations"]) => {
            let items: Vec<Value> = m
                .qos_associations(id)?
                .into_iter()
                .map(|(type_id, name)| json!({"association_type": "volume_type", "name": name, "id": type_id}))
                .collect();
            Ok(Reply::ok(json!({"qos_associations": items})))
        }
        (&Method::GET, [id, what @ ("associate" | "disassociate")]) => {
            let type_id = req
                .param("vol_type_id")
                .filter(|t| !t.is_empty())
                .ok_or_else(|| ApiError::bad_request("Volume Type id must not be None."))?;
            m.associate_qos(id, type_id, *what == "associate")?;
            Ok(Reply::empty(StatusCode::ACCEPTED))
        }
        (&Method::GET, [id, "disassociate_all"]) => {
            m.disassociate_all_qos(id)?;
            Ok(Reply::empty(StatusCode::ACCEPTED))
        }
        _ => Err(bad_method()),
    }
}

/// Show, create and each item of the list.
fn view(q: &QosSpecs) -> Value {
    json!({"id": q.id, "name": q.name, "consumer": q.consumer.as_str(), "specs": q.specs})
}

fn detail(req: &Req, q: &QosSpecs) -> Value {
    json!({"qos_specs": view(q), "links": req.links("qos-specs", &q.id)})
}

fn list(m: &Manager, req: &Req) -> Result<Reply> {
    let wanted = |key: &str, value: &str| req.param(key).is_none_or(|w| w == value);
    let items: Vec<Value> = m
        .qos_specs()?
        .iter()
        .filter(|q| wanted("id", &q.id) && wanted("name", &q.name) && wanted("consumer", q.consumer.as_str()))
        .map(view)
        .collect();
    Ok(Reply::ok(json!({"qos_specs": items})))
}

fn consumer(value: &Value) -> Result<QosConsumer> {
    let text = value.as_str().unwrap_or_default();
    text.parse()
        .map_err(|_| field_error("consumer", value, "Valid consumer of QoS specs are: back-end, front-end, both"))
}

/// A spec key or value: a string of 1 to 255 characters (values may be empty).
fn spec_string(field: &str, value: &Value, min: usize) -> Result<String> {
    string(field, value, min, 255)
}

fn create(m: &Manager, req: &Req) -> Result<Reply> {
    let body = req.json()?;
    let o = as_object("body", &body)?;
    closed("body", o, &["qos_specs"])?;
    let q = as_object("qos_specs", required("body", o, "qos_specs")?)?;
    let name = string("name", required("qos_specs", q, "name")?, 1, 255)?;
    if name.trim() != name || name.is_empty() {
        return Err(field_error("name", &q["name"], "leading or trailing spaces are not allowed"));
    }
    let mut specs = BTreeMap::new();
    let mut by = QosConsumer::BackEnd;
    // openstacksdk nests the specs in `specs` (Cinder takes them flat only).
    let nested = match q.get("specs") {
        Some(Value::Object(inner)) => inner.iter().collect(),
        _ => Vec::new(),
    };
    let flat = q.iter().filter(|(k, v)| *k != "name" && !(*k == "specs" && v.is_object()));
    for (key, value) in flat.chain(nested) {
        if key == "consumer" {
            by = consumer(value)?;
        } else {
            spec_string(key, &Value::from(key.as_str()), 1)?;
            specs.insert(key.clone(), spec_string(key, value, 0)?);
        }
    }
    let created = m.create_qos(name, by, specs)?;
    Ok(Reply::ok(detail(req, &created)))
}

/// `PUT /qos-specs/{id}`: answers the body it was given, as Cinder does.
fn update(m: &Manager, req: &Req, id: &str) -> Result<Reply> {
    let body = req.json()?;
    let o = as_object("body", &body)?;
    closed("body", o, &["qos_specs"])?;
    let q = as_object("qos_specs", required("body", o, "qos_specs")?)?;
    let mut change = QosUpdate { consumer: None, specs: BTreeMap::new() };
    for (key, value) in q {
        spec_string(key, &Value::from(key.as_str()), 1)?;
        match (key.as_str(), value) {
            ("consumer", v) => change.consumer = Some(consumer(v)?),
            (_, Value::Null) => drop(change.specs.insert(key.clone(), None)),
            (_, v) => drop(change.specs.insert(key.clone(), Some(spec_string(key, v, 0)?))),
        }
    }
    m.update_qos(id, change)?;
    Ok(Reply::ok(body))
}

fn delete_keys(m: &Manager, req: &Req, id: &str) -> Result<Reply> {
    let body = req.json()?;
    let o = as_object("body", &body)?;
    closed("body", o, &["keys"])?;
    let keys = required("body", o, "keys")?;
    let items = keys.as_array().ok_or_else(|| field_error("keys", keys, "is not of type 'array'"))?;
    let mut names: Vec<String> = Vec::new();
    for item in items {
        let key = spec_string("keys", item, 1)?;
        if names.contains(&key) {
            return Err(field_error("keys", keys, "has non-unique elements"));
        }
        names.push(key);
    }
    m.delete_qos_keys(id, &names)?;
    Ok(Reply::empty(StatusCode::ACCEPTED))
}
