//! The LIO backend: the kernel's iSCSI target, driven by plain writes under
//! `/sys/kernel/config/target` (no targetcli, no rtslib).
//!
//! Creation order, for a volume with IQN `N` on device `D`:
//! 1. `core/iblock_0/N`: the iblock backstore; `control` ← `udev_path=D` (what
//!    iblock opens) and `udev_path` ← `D` (what configfs shows back: the control
//!    write alone leaves that attribute empty), `enable` ← 1,
//!    `wwn/vpd_unit_serial` ← the volume id (without a unit serial the initiator
//!    gets no WWN and os-brick waits ~10 s for one).
//! 2. `iscsi/N/tpgt_1`: the target and its portal group; `lun/lun_0` with a link
//!    to the backstore; `np/<ip>:<port>` per portal; `attrib/authentication` ← 1,
//!    `attrib/generate_node_acls` ← 0 (only listed initiators), `enable` ← 1.
//! 3. Per initiator `I` (`allow`): `acls/I` with `auth/userid` and `auth/password`
//!    (one-way CHAP, written without a newline), then `acls/I/lun_0` linked to the
//!    TPG's `lun/lun_0`.
//!
//! Teardown is the reverse: disable the TPG, unmap and remove every ACL, unlink
//! and remove the LUNs, remove the portals, the TPG, the target, and last the
//! backstore. Anything found half-built is torn down and built again. An
//! iblock LUN reports a grown device's size by itself: the initiator rescans.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::configfs::{self, ROOT};
use super::{Configured, Created, Removed, Target, TargetError};
use crate::model::{Export, TargetBackend};

const LUN: u32 = 0;
const LUN_DIR: &str = "lun_0";
/// The name of the link from a LUN (or mapped LUN) to what it serves.
const LINK: &str = "ember";

pub struct LioTarget {
    root: PathBuf,
    prefix: String,
    /// "ip:port" (IPv6 in brackets).
    portals: Vec<String>,
    writer: Mutex<()>,
}

impl LioTarget {
    /// LIO needs configfs mounted and target_core loaded (mkdir of `iscsi/` loads
    /// iscsi_target_mod on demand).
    pub fn open(prefix: &str, portals: &[String]) -> Result<LioTarget, TargetError> {
        let root = Path::new(ROOT).join("target");
        if !root.join("core").is_dir() {
            return Err(TargetError::Unavailable(
                TargetBackend::Lio,
                format!("{} is missing (configfs not mounted, or target_core_mod not loaded)", root.display()),
            ));
        }
        configfs::mkdir(&root.join("iscsi"))
            .map_err(|e| TargetError::Unavailable(TargetBackend::Lio, e.to_string()))?;
        Ok(LioTarget { root, prefix: prefix.to_string(), portals: portals.to_vec(), writer: Mutex::new(()) })
    }

    fn backstore(&self, name: &str) -> PathBuf {
        self.root.join("core/iblock_0").join(name)
    }

    fn tpg(&self, name: &str) -> PathBuf {
        self.root.join("iscsi").join(name).join("tpgt_1")
    }

    fn ours(&self, name: &str) -> Result<(), TargetError> {
        if name.starts_with(&self.prefix) && !name.contains('/') {
            Ok(())
        } else {
            Err(TargetError::Refused(format!("{name} does not carry ember's prefix {}: left alone", self.prefix)))
        }
    }

    /// The device the backstore serves, if it exists.
    /// The device the backstore serves: its `udev_path`, or for one built before
    /// ember wrote that attribute, the `UDEV PATH:` iblock's `info` reports.
    fn device_of(&self, name: &str) -> Result<Option<PathBuf>, TargetError> {
        let store = self.backstore(name);
        if !store.join("udev_path").exists() {
            return Ok(None);
        }
        let device = configfs::read(&store.join("udev_path"))?;
        if !device.is_empty() {
            return Ok(Some(PathBuf::from(device)));
        }
        let info = configfs::read(&store.join("info")).unwrap_or_default();
        let from_info = info.split("UDEV PATH:").nth(1).and_then(|rest| rest.split_whitespace().next());
        Ok(from_info.map(PathBuf::from))
    }

    fn build(&self, export: &Export, device: &Path) -> Result<(), TargetError> {
        let name = &export.target_name;
        let store = self.backstore(name);
        configfs::mkdir(&self.root.join("core/iblock_0"))?;
        configfs::mkdir(&store)?;
        configfs::write(&store.join("control"), &format!("udev_path={}", device.display()))?;
        configfs::write(&store.join("udev_path"), &device.display().to_string())?;
        configfs::write(&store.join("enable"), "1")?;
        configfs::write(&store.join("wwn/vpd_unit_serial"), &export.volume_id)?;
        let tpg = self.tpg(name);
        configfs::mkdir(&self.root.join("iscsi").join(name))?;
        configfs::mkdir(&tpg)?;
        let lun = tpg.join("lun").join(LUN_DIR);
        configfs::mkdir(&lun)?;
        configfs::link(&store, &lun.join(LINK))?;
        for portal in &self.portals {
            configfs::mkdir(&tpg.join("np").join(portal))?;
        }
        configfs::write(&tpg.join("attrib/authentication"), "1")?;
        configfs::write(&tpg.join("attrib/generate_node_acls"), "0")?;
        configfs::write(&tpg.join("enable"), "1")?;
        Ok(())
    }

    fn unmap(&self, tpg: &Path, initiator: &str) -> Result<bool, TargetError> {
        let acl = tpg.join("acls").join(initiator);
        if !acl.exists() {
            return Ok(false);
        }
        for mapped in configfs::entries(&acl)?.into_iter().filter(|e| e.starts_with("lun_")) {
            let dir = acl.join(&mapped);
            for link in configfs::entries(&dir)? {
                if dir.join(&link).is_symlink() {
                    configfs::unlink(&dir.join(&link))?;
                }
            }
            configfs::rmdir(&dir)?;
        }
        configfs::rmdir(&acl)
    }

    fn teardown(&self, name: &str) -> Result<bool, TargetError> {
        let target = self.root.join("iscsi").join(name);
        let mut found = target.exists();
        for tpg_name in configfs::entries(&target)?.into_iter().filter(|e| e.starts_with("tpgt_")) {
            let tpg = target.join(&tpg_name);
            if tpg.join("enable").exists() {
                configfs::write(&tpg.join("enable"), "0")?;
            }
            for initiator in configfs::entries(&tpg.join("acls"))? {
                self.unmap(&tpg, &initiator)?;
            }
            for lun in configfs::entries(&tpg.join("lun"))? {
                let dir = tpg.join("lun").join(&lun);
                for link in configfs::entries(&dir)? {
                    if dir.join(&link).is_symlink() {
                        configfs::unlink(&dir.join(&link))?;
                    }
                }
                configfs::rmdir(&dir)?;
            }
            for portal in configfs::entries(&tpg.join("np"))? {
                configfs::rmdir(&tpg.join("np").join(portal))?;
            }
            configfs::rmdir(&tpg)?;
        }
        configfs::rmdir(&target)?;
        found |= configfs::rmdir(&self.backstore(name))?;
        Ok(found)
    }
}

impl Target for LioTarget {
    fn backend(&self) -> TargetBackend {
        TargetBackend::Lio
    }

    fn lun(&self) -> u32 {
        LUN
    }

    fn configured(&self) -> Result<Vec<Configured>, TargetError> {
        let mut names: Vec<String> = configfs::entries(&self.root.join("iscsi"))?;
        // A backstore whose target is gone (a crash mid-teardown) is ours to report too.
        names.extend(configfs::entries(&self.root.join("core/iblock_0"))?);
        names.retain(|n| n.starts_with(&self.prefix));
        names.sort();
        names.dedup();
        names
            .into_iter()
            .map(|name| {
                Ok(Configured {
                    device: self.device_of(&name)?,
                    initiators: configfs::entries(&self.tpg(&name).join("acls"))?,
                    name,
                })
            })
            .collect()
    }

    fn create_export(&self, export: &Export, device: &Path) -> Result<Created, TargetError> {
        let name = &export.target_name;
        self.ours(name)?;
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let tpg = self.tpg(name);
        let complete = tpg.join("lun").join(LUN_DIR).join(LINK).exists()
            && self.portals.iter().all(|p| tpg.join("np").join(p).exists())
            && configfs::read(&tpg.join("enable")).is_ok_and(|e| e == "1");
        if complete && self.device_of(name)?.as_deref() == Some(device) {
            return Ok(Created::AlreadyPresent);
        }
        // Half-built, or on another device: start again from nothing.
        self.teardown(name)?;
        if let Err(e) = self.build(export, device) {
            if let Err(undo) = self.teardown(name) {
                tracing::error!(target = %name, error = %undo, "could not tear down a half-built LIO export");
            }
            return Err(e);
        }
        Ok(Created::Created)
    }

    fn remove_export(&self, name: &str) -> Result<Removed, TargetError> {
        self.ours(name)?;
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        Ok(if self.teardown(name)? { Removed::Removed } else { Removed::Absent })
    }

    fn allow(&self, export: &Export, initiator: &str) -> Result<Created, TargetError> {
        let name = &export.target_name;
        self.ours(name)?;
        if initiator.contains('/') || initiator.is_empty() {
            return Err(TargetError::Refused(format!("'{initiator}' is not an initiator name")));
        }
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let tpg = self.tpg(name);
        if !tpg.exists() {
            return Err(TargetError::Refused(format!("{name} is not exported")));
        }
        let acl = tpg.join("acls").join(initiator);
        let mapped = acl.join(LUN_DIR);
        if mapped.join(LINK).exists() {
            return Ok(Created::AlreadyPresent);
        }
        let result = (|| {
            configfs::mkdir(&acl)?;
            if let Some(chap) = &export.chap {
                configfs::write(&acl.join("auth/userid"), &chap.username)?;
                configfs::write(&acl.join("auth/password"), &chap.secret)?;
            }
            configfs::mkdir(&mapped)?;
            configfs::link(&tpg.join("lun").join(LUN_DIR), &mapped.join(LINK))?;
            Ok(())
        })();
        if let Err(e) = result {
            let _ = self.unmap(&tpg, initiator);
            return Err(e);
        }
        Ok(Created::Created)
    }

    fn deny(&self, name: &str, initiator: &str) -> Result<Removed, TargetError> {
        self.ours(name)?;
        if initiator.contains('/') || initiator.is_empty() {
            return Ok(Removed::Absent);
        }
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        Ok(if self.unmap(&self.tpg(name), initiator)? { Removed::Removed } else { Removed::Absent })
    }

    fn refresh_size(&self, _export: &Export, _device: &Path) -> Result<(), TargetError> {
        // iblock reads the device's size on every READ CAPACITY (shared/vm/FACTS.md).
        Ok(())
    }
}
