//! Quotas as Cinder keeps them (`cinder/quota.py`, DbQuotaDriver): hard limits
//! per project on volumes, snapshots and gigabytes (volumes' and snapshots'
//! sizes), in total and per volume type (`volumes_<type>`, `snapshots_<type>`,
//! `gigabytes_<type>`), plus `per_volume_gigabytes`; -1 is unlimited. A project
//! without its own limit has the `default` class's, and that class has `[quota]`'s
//! until an admin changes it. What is in use is counted from the store inside the
//! transaction that would add to it, so two creates cannot both take the last one.

use std::collections::BTreeMap;

use super::{Manager, ManagerError, Result};
use crate::store::{QuotaCounted, QuotaTable, StoreError, Tx, TypeUsage};

/// The resources every quota set has (backups are counted as none: ember has
/// none yet).
const RESOURCES: &[&str] =
    &["volumes", "snapshots", "gigabytes", "per_volume_gigabytes", "backups", "backup_gigabytes", "groups"];
/// Those that also exist per volume type.
const PER_TYPE: &[&str] = &["volumes", "snapshots", "gigabytes"];
/// Keys a quota set may carry that are not quotas.
const NOT_QUOTAS: &[&str] = &["id", "tenant_id"];
const DEFAULT_CLASS: &str = "default";

/// One resource of `os-quota-sets?usage=true`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaUsage {
    pub limit: i64,
    pub in_use: i64,
}

/// What a request would add to a project's usage.
#[derive(Debug, Clone, Default)]
pub(super) struct QuotaDelta<'a> {
    pub type_name: &'a str,
    pub volumes: i64,
    pub snapshots: i64,
    pub gigabytes: i64,
    pub groups: i64,
    /// The size of the one volume being made or grown, for per_volume_gigabytes.
    pub volume_size: Option<i64>,
    /// Only the type's own quotas (a retype moves a volume between types).
    pub per_type_only: bool,
}

impl<'a> QuotaDelta<'a> {
    /// One new volume of `size` GiB and type `type_name` (create, manage).
    pub fn new_volume(type_name: &'a str, size: i64) -> Self {
        QuotaDelta { type_name, volumes: 1, gigabytes: size, volume_size: Some(size), ..QuotaDelta::default() }
    }
}

/// Refuses keys that are no quota (for the types that exist) and values that are
/// not integers from -1 to 2^31-1, as Cinder's `quota_set` format checker does.
pub fn check_quota_keys(
    requested: &serde_json::Map<String, serde_json::Value>,
    type_names: &[String],
    class: bool,
) -> std::result::Result<BTreeMap<String, i64>, String> {
    let known = |key: &str| {
        RESOURCES.contains(&key) || PER_TYPE.iter().any(|r| type_names.iter().any(|t| key == format!("{r}_{t}")))
    };
    let bad: Vec<&str> =
        requested.keys().map(String::as_str).filter(|k| !known(k) && (class || !NOT_QUOTAS.contains(k))).collect();
    if !bad.is_empty() {
        let what = if class { "quota class set" } else { "quota set" };
        return Err(format!("Bad key(s) in {what}: {}", bad.join(", ")));
    }
    let mut out = BTreeMap::new();
    for (key, value) in requested.iter().filter(|(k, _)| known(k)) {
        let n = match value {
            serde_json::Value::Number(n) => n.as_i64(),
            serde_json::Value::String(s) => s.trim().parse::<i64>().ok(),
            _ => None,
        }
        .ok_or_else(|| format!("{key} must be an integer."))?;
        if n < -1 {
            return Err(format!("{key} must be >= -1"));
        }
        if n > i64::from(i32::MAX) {
            return Err(format!("{key} must be <= {}", i32::MAX));
        }
        out.insert(key.clone(), n);
    }
    Ok(out)
}

/// The name quota keys use for a volume type (its id when it is gone).
pub(super) fn type_name(tx: &Tx, type_id: &str) -> std::result::Result<String, StoreError> {
    Ok(tx.volume_type(type_id)?.map_or_else(|| type_id.to_string(), |t| t.name))
}

/// Volume type id → name, for the per-type quota keys.
type TypeNames = BTreeMap<String, String>;

impl Manager {
    fn type_names(tx: &Tx) -> std::result::Result<TypeNames, StoreError> {
        tx.volume_type_names()
    }

    /// The default class: `[quota]`, under what admins set for the class.
    fn class_limits(
        &self,
        tx: &Tx,
        names: &TypeNames,
        class: &str,
    ) -> std::result::Result<BTreeMap<String, i64>, StoreError> {
        let mut limits: BTreeMap<String, i64> =
            self.settings.quota.limits().into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        for name in names.values() {
            for r in PER_TYPE {
                limits.insert(format!("{r}_{name}"), -1);
            }
        }
        // Every class falls back to the default one, as Cinder's driver does.
        limits.extend(tx.quota_limits(QuotaTable::Class, DEFAULT_CLASS)?);
        if class != DEFAULT_CLASS {
            limits.extend(tx.quota_limits(QuotaTable::Class, class)?);
        }
        Ok(limits)
    }

    fn project_limits(
        &self,
        tx: &Tx,
        names: &TypeNames,
        project: &str,
    ) -> std::result::Result<BTreeMap<String, i64>, StoreError> {
        let mut limits = self.class_limits(tx, names, DEFAULT_CLASS)?;
        limits.extend(tx.quota_limits(QuotaTable::Project, project)?);
        Ok(limits)
    }

    fn in_use(
        &self,
        tx: &Tx,
        names: &TypeNames,
        project: &str,
    ) -> std::result::Result<BTreeMap<String, i64>, StoreError> {
        let mut used: BTreeMap<String, i64> = RESOURCES.iter().map(|r| (r.to_string(), 0)).collect();
        for name in names.values() {
            for r in PER_TYPE {
                used.insert(format!("{r}_{name}"), 0);
            }
        }
        for (kind, of) in [("volumes", QuotaCounted::Volumes), ("snapshots", QuotaCounted::Snapshots)] {
            for TypeUsage { type_id, count, gib } in tx.quota_usage(project, of)? {
                let name = names.get(&type_id).cloned().unwrap_or(type_id);
                for (key, n) in [
                    (kind.to_string(), count),
                    (format!("{kind}_{name}"), count),
                    ("gigabytes".to_string(), gib),
                    (format!("gigabytes_{name}"), gib),
                ] {
                    *used.entry(key).or_insert(0) += n;
                }
            }
        }
        used.insert("groups".to_string(), tx.group_count(project)?);
        Ok(used)
    }

    /// Refuses what would take `project` past a limit, with Cinder's 413 texts.
    pub(super) fn check_quota(&self, tx: &Tx, project: &str, delta: &QuotaDelta) -> Result<()> {
        let names = Self::type_names(tx)?;
        let limits = self.project_limits(tx, &names, project)?;
        let limit = |key: &str| limits.get(key).copied().unwrap_or(-1);
        if let Some(size) = delta.volume_size {
            let max = limit("per_volume_gigabytes");
            if max >= 0 && size > max {
                return Err(ManagerError::OverLimit(format!(
                    "Requested volume size {size}G is larger than maximum allowed limit {max}G."
                )));
            }
        }
        let used = self.in_use(tx, &names, project)?;
        let t = delta.type_name;
        for (key, add) in [
            ("volumes".to_string(), delta.volumes),
            (format!("volumes_{t}"), delta.volumes),
            ("snapshots".to_string(), delta.snapshots),
            (format!("snapshots_{t}"), delta.snapshots),
            ("gigabytes".to_string(), delta.gigabytes),
            (format!("gigabytes_{t}"), delta.gigabytes),
            ("groups".to_string(), delta.groups),
        ] {
            let (max, now) = (limit(&key), used.get(&key).copied().unwrap_or(0));
            let total = !key.contains('_');
            if add <= 0 || max < 0 || now + add <= max || (delta.per_type_only && total) {
                continue;
            }
            return Err(ManagerError::OverLimit(if key.starts_with("gigabytes") {
                format!(
                    "Requested volume or snapshot exceeds allowed {key} quota. Requested {add}G, quota is {max}G \
                     and {now}G has been consumed."
                )
            } else if key == "groups" {
                format!("Maximum number of groups allowed ({max}) exceeded")
            } else if key.starts_with("snapshots") {
                format!("Maximum number of snapshots allowed ({max}) exceeded for quota '{key}'.")
            } else {
                format!("Maximum number of volumes allowed ({max}) exceeded for quota '{key}'.")
            }));
        }
        Ok(())
    }

    /// `GET /os-quota-sets/{project}`: limits, or with usage each resource's limit
    /// and what is in use.
    pub fn quota_set(&self, project: &str) -> Result<BTreeMap<String, QuotaUsage>> {
        Ok(self.store.read(|tx| {
            let names = Self::type_names(tx)?;
            let (limits, used) = (self.project_limits(tx, &names, project)?, self.in_use(tx, &names, project)?);
            Ok::<_, StoreError>(
                limits
                    .into_iter()
                    .map(|(k, limit)| {
                        let in_use = used.get(&k).copied().unwrap_or(0);
                        (k, QuotaUsage { limit, in_use })
                    })
                    .collect(),
            )
        })?)
    }

    pub fn quota_defaults(&self) -> Result<BTreeMap<String, i64>> {
        Ok(self.store.read(|tx| self.class_limits(tx, &Self::type_names(tx)?, DEFAULT_CLASS))?)
    }

    pub fn quota_class(&self, class: &str) -> Result<BTreeMap<String, i64>> {
        Ok(self.store.read(|tx| self.class_limits(tx, &Self::type_names(tx)?, class))?)
    }

    pub fn quota_type_names(&self) -> Result<Vec<String>> {
        Ok(self.store.read(Self::type_names)?.into_values().collect())
    }

    /// `PUT /os-quota-sets/{project}`: no limit below what is in use already.
    pub fn update_quota_set(&self, project: &str, new: &BTreeMap<String, i64>) -> Result<BTreeMap<String, i64>> {
        self.store.write(|tx| {
            let names = Self::type_names(tx)?;
            let used = self.in_use(tx, &names, project)?;
            for (key, &limit) in new {
                let now = used.get(key).copied().unwrap_or(0);
                if key != "per_volume_gigabytes" && limit != -1 && limit < now {
                    return Err(ManagerError::Invalid(format!(
                        "Quota {key} limit must be equal or greater than existing resources. Current usage is \
                         {now} and the requested limit is {limit}."
                    )));
                }
            }
            for (key, &limit) in new {
                tx.set_quota_limit(QuotaTable::Project, project, key, limit)?;
            }
            Ok(self.project_limits(tx, &names, project)?)
        })
    }

    /// `DELETE /os-quota-sets/{project}`: back to the default class.
    pub fn delete_quota_set(&self, project: &str) -> Result<()> {
        Ok(self.store.write(|tx| tx.delete_project_quotas(project))?)
    }

    pub fn update_quota_class(&self, class: &str, new: &BTreeMap<String, i64>) -> Result<BTreeMap<String, i64>> {
        self.store.write(|tx| {
            for (key, &limit) in new {
                tx.set_quota_limit(QuotaTable::Class, class, key, limit)?;
            }
            Ok(self.class_limits(tx, &Self::type_names(tx)?, class)?)
        })
    }
}
