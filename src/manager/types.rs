//! Volume types and their extra specs. `__DEFAULT__` always exists.

use std::collections::BTreeMap;

use super::{Manager, ManagerError, Result, type_not_found};
use crate::model::{DEFAULT_TYPE_NAME, VolumeType};
use crate::store::StoreError;

impl Manager {
    /// Creates `__DEFAULT__` on first start.
    pub fn ensure_default_type(&self) -> Result<()> {
        self.store.write(|tx| {
            if tx.volume_type(DEFAULT_TYPE_NAME)?.is_none() {
                tx.save_volume_type(&VolumeType {
                    id: uuid::Uuid::new_v4().to_string(),
                    name: DEFAULT_TYPE_NAME.to_string(),
                    description: Some("Default Volume Type".to_string()),
                    is_public: true,
                    extra_specs: BTreeMap::new(),
                })?;
            }
            Ok::<_, StoreError>(())
        })?;
        Ok(())
    }

    pub fn volume_types(&self) -> Result<Vec<VolumeType>> {
        Ok(self.store.read(|tx| tx.volume_types())?)
    }

    pub fn volume_type(&self, id_or_name: &str) -> Result<VolumeType> {
        self.store.read(|tx| tx.volume_type(id_or_name))?.ok_or_else(|| type_not_found(id_or_name))
    }

    pub fn create_volume_type(
        &self,
        name: String,
        description: Option<String>,
        is_public: bool,
        extra_specs: BTreeMap<String, String>,
    ) -> Result<VolumeType> {
        self.store.write(|tx| {
            if tx.volume_type(&name)?.is_some() {
                return Err(ManagerError::Conflict(format!("Volume Type {name} already exists.")));
            }
            let t = VolumeType { id: uuid::Uuid::new_v4().to_string(), name, description, is_public, extra_specs };
            tx.save_volume_type(&t)?;
            tx.set_extra_specs(&t.id, &t.extra_specs)?;
            Ok(t)
        })
    }

    pub fn update_volume_type(
        &self,
        id: &str,
        name: Option<String>,
        description: Option<Option<String>>,
        is_public: Option<bool>,
    ) -> Result<VolumeType> {
        self.store.write(|tx| {
            let mut t = tx.volume_type(id)?.filter(|t| t.id == id).ok_or_else(|| type_not_found(id))?;
            if let Some(name) = name {
                if t.name == DEFAULT_TYPE_NAME && name != t.name {
                    return Err(ManagerError::Invalid("The default volume type cannot be renamed.".to_string()));
                }
                if tx.volume_type(&name)?.is_some_and(|other| other.id != t.id) {
                    return Err(ManagerError::Conflict(format!("Volume Type {name} already exists.")));
                }
                t.name = name;
            }
            if let Some(description) = description {
                t.description = description;
            }
            if let Some(is_public) = is_public {
                t.is_public = is_public;
            }
            tx.save_volume_type(&t)?;
            Ok(t)
        })
    }

    pub fn delete_volume_type(&self, id: &str) -> Result<()> {
        self.store.write(|tx| {
            let t = tx.volume_type(id)?.filter(|t| t.id == id).ok_or_else(|| type_not_found(id))?;
            if t.name == DEFAULT_TYPE_NAME {
                return Err(ManagerError::Invalid("Default volume type can not be deleted.".to_string()));
            }
            if tx.volume_type_in_use(id)? {
                return Err(ManagerError::Invalid(format!(
                    "Target volume type is still in use: volumes of type {} exist.",
                    t.name
                )));
            }
            tx.delete_volume_type(id)?;
            Ok(())
        })
    }

    pub fn set_extra_specs(&self, id: &str, specs: BTreeMap<String, String>) -> Result<BTreeMap<String, String>> {
        self.store.write(|tx| {
            let t = tx.volume_type(id)?.filter(|t| t.id == id).ok_or_else(|| type_not_found(id))?;
            tx.set_extra_specs(&t.id, &specs)?;
            Ok(specs)
        })
    }

    pub fn delete_extra_spec(&self, id: &str, key: &str) -> Result<()> {
        self.store.write(|tx| {
            let t = tx.volume_type(id)?.filter(|t| t.id == id).ok_or_else(|| type_not_found(id))?;
            if !tx.delete_extra_spec(&t.id, key)? {
                return Err(ManagerError::NotFound(format!("Volume Type {id} has no extra specs with key {key}.")));
            }
            Ok(())
        })
    }
}
