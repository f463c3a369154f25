//! QoS specs and their association with volume types (`cinder/volume/qos_specs.py`).
//! A type points at one QoS spec at most. Only front-end specs can be associated:
//! the hypervisor enforces them from `connection_info`; ember's targets (LIO, tgt,
//! nvmet) have no per-volume throttle, so a type never promises back-end limits
//! nothing would enforce (README, "Differences").

use std::collections::BTreeMap;

use super::{Manager, ManagerError, Result};
use crate::model::{QosConsumer, QosSpecs, Volume, now};
use crate::store::Tx;

fn qos_not_found(id: &str) -> ManagerError {
    ManagerError::NotFound(format!("No such QoS spec {id}."))
}

fn unenforceable(q: &QosSpecs) -> ManagerError {
    ManagerError::Invalid(format!(
        "Invalid volume type: QoS specs {} are consumed by the {} but ember's targets cannot throttle a volume; \
         use consumer front-end, which the hypervisor enforces.",
        q.id,
        if q.consumer == QosConsumer::Both { "back-end too" } else { "back-end" },
    ))
}

fn one(tx: &Tx, id: &str) -> Result<QosSpecs> {
    tx.qos_specs(Some(id))?.pop().ok_or_else(|| qos_not_found(id))
}

/// A change of a QoS spec: `consumer` if given, and keys set (or, None, removed).
pub struct QosUpdate {
    pub consumer: Option<QosConsumer>,
    pub specs: BTreeMap<String, Option<String>>,
}

impl Manager {
    pub fn create_qos(&self, name: String, consumer: QosConsumer, specs: BTreeMap<String, String>) -> Result<QosSpecs> {
        self.store.write(|tx| {
            if tx.qos_name_taken(&name)? {
                return Err(ManagerError::Conflict(format!("QoS Specs {name} already exists.")));
            }
            let q = QosSpecs { id: uuid::Uuid::new_v4().to_string(), name, consumer, specs, created_at: now() };
            tx.insert_qos(&q)?;
            Ok(q)
        })
    }

    pub fn qos_specs(&self) -> Result<Vec<QosSpecs>> {
        Ok(self.store.read(|tx| tx.qos_specs(None))?)
    }

    pub fn qos(&self, id: &str) -> Result<QosSpecs> {
        self.store.read(|tx| one(tx, id))
    }

    pub fn update_qos(&self, id: &str, change: QosUpdate) -> Result<QosSpecs> {
        self.store.write(|tx| {
            let mut q = one(tx, id)?;
            q.consumer = change.consumer.unwrap_or(q.consumer);
            for (key, value) in change.specs {
                match value {
                    Some(v) => q.specs.insert(key, v),
                    None => q.specs.remove(&key),
                };
            }
            if q.consumer != QosConsumer::FrontEnd && !tx.qos_associations(id)?.is_empty() {
                return Err(unenforceable(&q));
            }
            tx.update_qos(&q)?;
            Ok(q)
        })
    }

    /// Removes `keys`; one it does not have is "not found" and nothing changes.
    pub fn delete_qos_keys(&self, id: &str, keys: &[String]) -> Result<()> {
        self.store.write(|tx| {
            let mut q = one(tx, id)?;
            for key in keys {
                if q.specs.remove(key).is_none() {
                    return Err(ManagerError::NotFound(format!("QoS spec {key} is not found in {id}.")));
                }
            }
            tx.update_qos(&q)?;
            Ok(())
        })
    }

    /// Deletes the QoS specs; associated with a type only with `force` (which
    /// disassociates them first).
    pub fn delete_qos(&self, id: &str, force: bool) -> Result<()> {
        self.store.write(|tx| {
            one(tx, id)?;
            if !force && !tx.qos_associations(id)?.is_empty() {
                return Err(ManagerError::Invalid("Qos specs still in use.".to_string()));
            }
            tx.delete_qos(id)?;
            Ok(())
        })
    }

    /// (type id, type name) of the types using the QoS specs.
    pub fn qos_associations(&self, id: &str) -> Result<Vec<(String, String)>> {
        self.store.read(|tx| {
            one(tx, id)?;
            Ok(tx.qos_associations(id)?)
        })
    }

    /// Associates the QoS specs with a type, or (`associate` false) ends it.
    pub fn associate_qos(&self, id: &str, type_id: &str, associate: bool) -> Result<()> {
        self.store.write(|tx| {
            let q = one(tx, id)?;
            let t = super::types::type_by_id(tx, type_id)?;
            match (associate, t.qos_specs_id.as_deref()) {
                (true, Some(other)) if other != id => Err(ManagerError::Invalid(format!(
                    "Invalid volume type: Type {type_id} is already associated with another qos specs: {other}"
                ))),
                (true, _) if q.consumer != QosConsumer::FrontEnd => Err(unenforceable(&q)),
                (true, _) => Ok(tx.set_type_qos(type_id, Some(id))?),
                (false, Some(current)) if current == id => Ok(tx.set_type_qos(type_id, None)?),
                (false, _) => Ok(()),
            }
        })
    }

    pub fn disassociate_all_qos(&self, id: &str) -> Result<()> {
        self.store.write(|tx| {
            one(tx, id)?;
            for (type_id, _) in tx.qos_associations(id)? {
                tx.set_type_qos(&type_id, None)?;
            }
            Ok(())
        })
    }

    /// What the volume's type adds to `connection_info['data']`: `qos_specs`
    /// (the type's front-end specs scaled to the volume's size, or null) and
    /// `encrypted` (the type has encryption specs; the hypervisor encrypts).
    pub(super) fn connection_type_fields(&self, v: &Volume) -> Result<(serde_json::Value, bool)> {
        self.store.read(|tx| {
            let Some(t) = tx.volume_type(&v.volume_type_id)? else { return Ok((serde_json::Value::Null, false)) };
            let qos = match &t.qos_specs_id {
                Some(id) => Some(one(tx, id)?).filter(|q| q.for_hypervisor()).map(|q| q.connection_specs(v.size)),
                None => None,
            };
            Ok((qos.unwrap_or(serde_json::Value::Null), t.encrypted))
        })
    }
}
