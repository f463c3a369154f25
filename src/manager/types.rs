//! Volume types and their extra specs. `__DEFAULT__` always exists.

use std::collections::BTreeMap;

use super::{Caller, Manager, ManagerError, Result, type_not_found};
use crate::model::{DEFAULT_TYPE_NAME, VolumeType};
use crate::store::{Specs, StoreError, Tx};

/// Which types a listing shows (Cinder's `is_public` filter; admins only, others
/// always get `PublicOrShared`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypeFilter {
    /// Public types and the private ones shared with the caller's project.
    PublicOrShared,
    /// Private types only.
    Private,
    All,
}

/// A type the caller's project may see and use: public, shared with it, or any
/// for an admin. Another project's private type is "not found", as in Cinder.
pub(super) fn visible_type(tx: &Tx, caller: &Caller, id_or_name: &str) -> Result<Option<VolumeType>> {
    let Some(t) = tx.volume_type(id_or_name)? else { return Ok(None) };
    Ok((t.is_public || caller.is_admin || tx.has_type_access(&t.id, &caller.project_id)?).then_some(t))
}

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
                    qos_specs_id: None,
                    encrypted: false,
                })?;
            }
            Ok::<_, StoreError>(())
        })?;
        Ok(())
    }

    pub fn volume_types(&self) -> Result<Vec<VolumeType>> {
        Ok(self.store.read(|tx| tx.volume_types())?)
    }

    /// The types a listing shows the caller.
    pub fn list_volume_types(&self, caller: &Caller, filter: TypeFilter) -> Result<Vec<VolumeType>> {
        let filter = if caller.is_admin { filter } else { TypeFilter::PublicOrShared };
        self.store.read(|tx| {
            let mut shown = Vec::new();
            for t in tx.volume_types()? {
                let keep = match filter {
                    TypeFilter::All => true,
                    TypeFilter::Private => !t.is_public,
                    TypeFilter::PublicOrShared => t.is_public || tx.has_type_access(&t.id, &caller.project_id)?,
                };
                if keep {
                    shown.push(t);
                }
            }
            Ok(shown)
        })
    }

    pub fn visible_volume_type(&self, caller: &Caller, id_or_name: &str) -> Result<VolumeType> {
        self.store.read(|tx| visible_type(tx, caller, id_or_name))?.ok_or_else(|| type_not_found(id_or_name))
    }

    /// The projects a private type is shared with; a public type has no list.
    pub fn type_access(&self, id: &str) -> Result<Vec<String>> {
        self.store.read(|tx| {
            let t = type_by_id(tx, id)?;
            if t.is_public {
                return Err(ManagerError::NotFound("Access list not available for public volume types.".into()));
            }
            Ok(tx.type_access(&t.id)?)
        })
    }

    /// Shares a private type with `project` (`add`) or stops sharing it.
    pub fn set_type_access(&self, id: &str, project: &str, add: bool) -> Result<()> {
        self.store.write(|tx| {
            let t = type_by_id(tx, id)?;
            if t.is_public {
                return Err(ManagerError::Invalid(
                    "Invalid volume type: Type access modification is not applicable to public volume type.".into(),
                ));
            }
            if add && !tx.add_type_access(&t.id, project)? {
                return Err(ManagerError::Conflict(format!(
                    "Volume type access for {id} / {project} combination already exists."
                )));
            }
            if !add && !tx.remove_type_access(&t.id, project)? {
                return Err(ManagerError::NotFound(format!(
                    "Volume type access not found for {id} / {project} combination."
                )));
            }
            Ok(())
        })
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
            let id = uuid::Uuid::new_v4().to_string();
            let t = VolumeType { id, name, description, is_public, extra_specs, qos_specs_id: None, encrypted: false };
            tx.save_volume_type(&t)?;
            tx.set_specs(Specs::VolumeType, &t.id, &t.extra_specs)?;
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
            let mut t = type_by_id(tx, id)?;
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
            let t = type_by_id(tx, id)?;
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
            let t = type_by_id(tx, id)?;
            tx.set_specs(Specs::VolumeType, &t.id, &specs)?;
            Ok(specs)
        })
    }

    pub fn delete_extra_spec(&self, id: &str, key: &str) -> Result<()> {
        self.store.write(|tx| {
            let t = type_by_id(tx, id)?;
            if !tx.delete_spec(Specs::VolumeType, &t.id, key)? {
                return Err(ManagerError::NotFound(format!("Volume Type {id} has no extra specs with key {key}.")));
            }
            Ok(())
        })
    }
}

/// The type with this id (not name); 404 otherwise.
pub(super) fn type_by_id(tx: &Tx, id: &str) -> Result<VolumeType> {
    tx.volume_type(id)?.filter(|t| t.id == id).ok_or_else(|| type_not_found(id))
}

/// A change of a type's encryption specs (`None`: left as it is).
#[derive(Debug, Clone, Default)]
pub struct EncryptionChange {
    pub provider: Option<String>,
    pub control_location: Option<String>,
    pub cipher: Option<Option<String>>,
    pub key_size: Option<Option<i64>>,
}

fn encryption_not_found(type_id: &str) -> ManagerError {
    ManagerError::NotFound(format!("Volume type encryption for type {type_id} does not exist."))
}

impl Manager {
    /// The type's encryption specs (None: it has none); an unknown type is 404.
    pub fn type_encryption(&self, type_id: &str) -> Result<Option<crate::model::TypeEncryption>> {
        self.store.read(|tx| {
            type_by_id(tx, type_id)?;
            Ok(tx.type_encryption(type_id)?)
        })
    }

    /// Creates (`create`) or changes a type's encryption specs. Refused while
    /// volumes of the type exist (their encryption could no longer be read), and
    /// for `back-end` encryption, which no ember pool performs: only the
    /// hypervisor (`front-end`) encrypts here.
    pub fn set_type_encryption(
        &self,
        type_id: &str,
        change: EncryptionChange,
        create: bool,
    ) -> Result<crate::model::TypeEncryption> {
        self.store.write(|tx| {
            type_by_id(tx, type_id)?;
            let verb = if create { "create" } else { "update" };
            if tx.volume_type_in_use(type_id)? {
                return Err(ManagerError::Invalid(format!("Cannot {verb} encryption specs. Volume type in use.")));
            }
            let mut e = match (tx.type_encryption(type_id)?, create) {
                (Some(_), true) => {
                    return Err(ManagerError::Invalid(format!(
                        "Volume type encryption for type {type_id} already exists."
                    )));
                }
                (None, false) => return Err(encryption_not_found(type_id)),
                (Some(e), false) => e,
                (None, true) => crate::model::TypeEncryption {
                    type_id: type_id.to_string(),
                    encryption_id: uuid::Uuid::new_v4().to_string(),
                    provider: String::new(),
                    control_location: String::new(),
                    cipher: None,
                    key_size: None,
                    created_at: crate::model::now(),
                    updated_at: None,
                },
            };
            e.provider = change.provider.unwrap_or(e.provider);
            e.control_location = change.control_location.unwrap_or(e.control_location);
            e.cipher = change.cipher.unwrap_or(e.cipher);
            e.key_size = change.key_size.unwrap_or(e.key_size);
            if e.control_location == "back-end" {
                return Err(ManagerError::Invalid(
                    "Invalid input received: control_location back-end: ember's pools do not encrypt; use \
                     front-end, where the hypervisor encrypts."
                        .to_string(),
                ));
            }
            if !create {
                e.updated_at = Some(crate::model::now());
            }
            tx.save_type_encryption(&e)?;
            Ok(e)
        })
    }

    pub fn delete_type_encryption(&self, type_id: &str) -> Result<()> {
        self.store.write(|tx| {
            type_by_id(tx, type_id)?;
            if tx.volume_type_in_use(type_id)? {
                return Err(ManagerError::Invalid("Cannot delete encryption specs. Volume type in use.".to_string()));
            }
            tx.type_encryption(type_id)?.ok_or_else(|| encryption_not_found(type_id))?;
            tx.delete_type_encryption(type_id)?;
            Ok(())
        })
    }
}
