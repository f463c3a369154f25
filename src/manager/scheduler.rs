//! What the pool offers, as Cinder's scheduler sees it (`get_pools`'
//! capabilities), and Cinder's capabilities filter over a volume type's extra
//! specs (`cinder/scheduler/filters/capabilities_filter.py`, with the operators
//! of `extra_specs_ops.py`): a create whose type asks for what no pool has ends in
//! `error` with a user message, as "No valid backend was found" does upstream.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{PoolSlot, PoolStats};

/// The capabilities of one of the agent's pools (a JSON object).
pub fn capabilities(slot: &PoolSlot, stats: &PoolStats) -> Value {
    json!({
        "volume_backend_name": slot.backend_name,
        "vendor_name": "ember",
        "driver_version": env!("CARGO_PKG_VERSION"),
        "storage_protocol": "iSCSI",
        "total_capacity_gb": stats.total_gib,
        "free_capacity_gb": stats.free_gib,
        "provisioned_capacity_gb": stats.provisioned_gib,
        "allocated_capacity_gb": stats.allocated_gib,
        "max_over_subscription_ratio": stats.max_over_subscription_ratio,
        "reserved_percentage": 0,
        "thin_provisioning_support": true,
        "thin_pool_data_percent": stats.thin_data_percent,
        "thin_pool_metadata_percent": stats.thin_metadata_percent,
        "thick_provisioning_support": false,
        "multiattach": true,
        "timestamp": crate::model::now(),
    })
}

/// The first extra spec `caps` does not satisfy, as `key=value`. Scoped keys
/// (`vendor:key`) other than `capabilities:` are not the filter's business.
pub fn unmet_spec(specs: &BTreeMap<String, String>, caps: &Value) -> Option<String> {
    specs
        .iter()
        .find(|(key, wanted)| {
            let scope: Vec<&str> = key.split(':').collect();
            let path = match scope.as_slice() {
                ["capabilities", rest @ ..] => rest,
                [_, _, ..] => return false,
                all => all,
            };
            if path.is_empty() {
                return true; // a bare `capabilities:` names no capability
            }
            let found = path.iter().try_fold(caps, |cap, part| cap.get(*part));
            match found {
                None => true,
                Some(Value::Array(values)) => !values.iter().any(|v| matches(v, wanted)),
                Some(value) => !matches(value, wanted),
            }
        })
        .map(|(key, wanted)| format!("{key}={wanted}"))
}

/// `extra_specs_ops.match(value, req)`.
fn matches(value: &Value, req: &str) -> bool {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Null => return false,
        other => other.to_string(),
    };
    let mut words = req.split_whitespace();
    let Some(op) = words.next() else { return value.as_str() == Some(req) };
    let rest: Vec<&str> = words.collect();
    let number = |s: &str| s.parse::<f64>().ok();
    let compare =
        |f: fn(f64, f64) -> bool| rest.first().and_then(|w| Some(f(number(&text)?, number(w)?))).unwrap_or(false);
    match op {
        "<or>" => rest.iter().step_by(2).any(|w| *w == text),
        "<in>" => text.contains(&rest.join(" ")),
        "<is>" => rest.first().and_then(|w| Some(truth(&text)? == truth(w)?)).unwrap_or(false),
        "=" | ">=" => compare(|a, b| a >= b),
        "==" => compare(|a, b| a == b),
        "!=" => compare(|a, b| a != b),
        "<=" => compare(|a, b| a <= b),
        "s==" => rest.first().is_some_and(|w| text == *w),
        "s!=" => rest.first().is_some_and(|w| text != *w),
        "s<" => rest.first().is_some_and(|w| text.as_str() < *w),
        "s<=" => rest.first().is_some_and(|w| text.as_str() <= *w),
        "s>" => rest.first().is_some_and(|w| text.as_str() > *w),
        "s>=" => rest.first().is_some_and(|w| text.as_str() >= *w),
        // No operator: plain equality with a string capability (Python's ==).
        _ => value.as_str() == Some(req),
    }
}

/// oslo's `bool_from_string` (strict enough for specs).
fn truth(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "1" | "t" | "true" | "on" | "y" | "yes" => Some(true),
        "0" | "f" | "false" | "off" | "n" | "no" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps() -> Value {
        json!({
            "volume_backend_name": "ember", "storage_protocol": "iSCSI", "multiattach": true,
            "free_capacity_gb": 40.5, "thick_provisioning_support": false,
            "nested": {"level": "deep"}, "protocols": ["iSCSI", "NVMe-oF"],
        })
    }

    fn unmet(pairs: &[(&str, &str)]) -> Option<String> {
        unmet_spec(&pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), &caps())
    }

    #[test]
    fn specs_are_matched_as_cinders_capabilities_filter_does() {
        assert_eq!(unmet(&[("volume_backend_name", "ember"), ("multiattach", "<is> True")]), None);
        assert_eq!(unmet(&[("storage_protocol", "nope")]), Some("storage_protocol=nope".into()));
        assert_eq!(unmet(&[("volume_backend_name", "lvm-1")]), Some("volume_backend_name=lvm-1".into()));
        assert_eq!(unmet(&[("capabilities:storage_protocol", "<or> FC <or> iSCSI")]), None);
        assert_eq!(unmet(&[("free_capacity_gb", ">= 40")]), None);
        assert!(unmet(&[("free_capacity_gb", ">= 41")]).is_some());
        assert_eq!(unmet(&[("thick_provisioning_support", "<is> False")]), None);
        assert_eq!(unmet(&[("capabilities:nested:level", "deep")]), None);
        assert_eq!(unmet(&[("protocols", "NVMe-oF")]), None, "any value of a list capability");
        assert_eq!(unmet(&[("ember:target_protocol", "nvmeof"), ("RESKEY:availability_zones", "x")]), None);
        assert!(unmet(&[("no_such_capability", "1")]).is_some(), "an unscoped key the pool lacks");
        assert!(unmet(&[("multiattach", "True")]).is_some(), "a bool is not the string True (Python's ==)");
        assert_eq!(unmet(&[("storage_protocol", "<in> iSC")]), None);
    }
}
