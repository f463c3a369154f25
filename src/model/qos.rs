//! QoS specs (`qos-specs`): named sets of limits a volume type points at. Front-end
//! specs travel in `connection_info['data']['qos_specs']` and the hypervisor
//! enforces them (libvirt's iotune); ember's targets cannot throttle, so back-end
//! specs are never attached to a type here.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::string_enum;

string_enum! {
    /// Who enforces the specs (Cinder's `QoSConsumerField`; `back-end` by default).
    QosConsumer { BackEnd = "back-end", FrontEnd = "front-end", Both = "both" }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QosSpecs {
    pub id: String,
    pub name: String,
    pub consumer: QosConsumer,
    pub specs: BTreeMap<String, String>,
    pub created_at: String,
}

/// The limits libvirt takes, which Cinder also accepts per GiB of the volume
/// (`<limit>_per_gb`, with `_per_gb_min` and `_max` bounds).
const TUNABLES: &[&str] =
    &["read_iops_sec", "read_bytes_sec", "write_iops_sec", "write_bytes_sec", "total_iops_sec", "total_bytes_sec"];

impl QosSpecs {
    pub fn for_hypervisor(&self) -> bool {
        matches!(self.consumer, QosConsumer::FrontEnd | QosConsumer::Both)
    }

    /// What `connection_info` carries for a volume of `size_gib` (Cinder's
    /// `_parse_connection_options`): the specs as stored, each per-GiB limit
    /// turned into the absolute one, bounded below by its `_per_gb_min` and
    /// above by its `_max`. A per-GiB value that is not a number is passed on
    /// as it is, for the hypervisor to refuse.
    pub fn connection_specs(&self, size_gib: i64) -> Value {
        let mut out: serde_json::Map<String, Value> = self.specs.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        let number = |key: String| self.specs.get(&key).and_then(|v| v.trim().parse::<i64>().ok());
        for limit in TUNABLES {
            let Some(per_gb) = number(format!("{limit}_per_gb")) else { continue };
            let floor = number(format!("{limit}_per_gb_min")).unwrap_or(0);
            let scaled = per_gb.saturating_mul(size_gib).max(floor);
            let value = number(format!("{limit}_max")).map_or(scaled, |max| scaled.min(max));
            for gone in [format!("{limit}_per_gb"), format!("{limit}_per_gb_min"), format!("{limit}_max")] {
                out.remove(&gone);
            }
            out.insert(limit.to_string(), json!(value));
        }
        Value::Object(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_gib_limits_scale_with_the_volume_within_their_bounds() {
        let specs = |pairs: &[(&str, &str)]| QosSpecs {
            id: "q".into(),
            name: "n".into(),
            consumer: QosConsumer::FrontEnd,
            specs: pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            created_at: String::new(),
        };
        let q = specs(&[("total_iops_sec_per_gb", "10"), ("total_iops_sec_per_gb_min", "50"), ("read_bytes_sec", "7")]);
        assert_eq!(q.connection_specs(2), json!({"total_iops_sec": 50, "read_bytes_sec": "7"}));
        assert_eq!(q.connection_specs(20), json!({"total_iops_sec": 200, "read_bytes_sec": "7"}));
        let capped = specs(&[("write_iops_sec_per_gb", "10"), ("write_iops_sec_max", "300")]);
        assert_eq!(capped.connection_specs(100), json!({"write_iops_sec": 300}));
        let by = |consumer| QosSpecs { consumer, ..specs(&[]) }.for_hypervisor();
        assert!(by(QosConsumer::FrontEnd) && by(QosConsumer::Both) && !by(QosConsumer::BackEnd));
    }
}
