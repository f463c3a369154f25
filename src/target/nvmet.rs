//! The nvmet backend: the kernel's NVMe-oF target over TCP, driven by plain writes
//! under `/sys/kernel/config/nvmet`.
//!
//! Creation order, for a volume with subsystem NQN `N` on device `D`:
//! 1. `subsystems/N` with `attr_allow_any_host` ← 0 (Cinder allows any host; ember
//!    admits only the hosts it was asked to) and a stable `attr_serial`.
//! 2. `subsystems/N/namespaces/<nsid>`: `device_path` ← D, `device_uuid` ← the
//!    volume id (os-brick finds the device by it), `device_nguid` ← the same
//!    (stable across rebuilds), `enable` ← 1.
//! 3. Per portal, the port `ports/<id>` with that address (found, or made with the
//!    first free id), and the link `ports/<id>/subsystems/N`.
//! 4. Per host NQN `H` (`allow`): `hosts/H` (shared by every subsystem; with the
//!    export's DH-HMAC-CHAP key when its volume type asks for one: nvmet keeps one
//!    key per host, so a host that already holds another key is refused) and the
//!    link `subsystems/N/allowed_hosts/H`.
//!
//! Teardown is the reverse: unlink the subsystem from its ports, unlink its hosts
//! (a host no subsystem links any more goes), disable and remove the namespace,
//! remove the subsystem, and a port of ember's portals that serves nothing more.
//! After the pool grows a device, `revalidate_size` makes the target send the
//! host an event and it rescans (without it the host never notices).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::configfs::{self, ROOT};
use super::{Configured, Created, Removed, Target, TargetError};
use crate::model::{Export, TargetBackend};

/// Cinder's `nvmet_ns_id` default.
const NSID: u32 = 10;

/// One TCP listening address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Portal {
    pub ip: std::net::IpAddr,
    pub port: u16,
}

pub struct NvmetTarget {
    root: PathBuf,
    prefix: String,
    portals: Vec<Portal>,
    writer: Mutex<()>,
}

impl NvmetTarget {
    pub fn open(prefix: &str, portals: &[Portal]) -> Result<NvmetTarget, TargetError> {
        let root = Path::new(ROOT).join("nvmet");
        if !root.join("subsystems").is_dir() {
            return Err(TargetError::Unavailable(
                TargetBackend::Nvmet,
                format!("{} is missing (configfs not mounted, or nvmet not loaded)", root.display()),
            ));
        }
        Ok(NvmetTarget { root, prefix: prefix.to_string(), portals: portals.to_vec(), writer: Mutex::new(()) })
    }

    fn subsystem(&self, name: &str) -> PathBuf {
        self.root.join("subsystems").join(name)
    }

    fn ours(&self, name: &str) -> Result<(), TargetError> {
        if name.starts_with(&self.prefix) && !name.contains('/') {
            Ok(())
        } else {
            Err(TargetError::Refused(format!("{name} does not carry ember's prefix {}: left alone", self.prefix)))
        }
    }

    /// The port serving `portal` over TCP, if one exists.
    fn find_port(&self, portal: &Portal) -> Result<Option<PathBuf>, TargetError> {
        for id in configfs::entries(&self.root.join("ports"))? {
            let port = self.root.join("ports").join(&id);
            let attr = |a: &str| configfs::read(&port.join(a)).unwrap_or_default();
            if attr("addr_trtype") == "tcp"
                && attr("addr_traddr") == portal.ip.to_string()
                && attr("addr_trsvcid") == portal.port.to_string()
            {
                return Ok(Some(port));
            }
        }
        Ok(None)
    }

    fn port(&self, portal: &Portal) -> Result<PathBuf, TargetError> {
        if let Some(port) = self.find_port(portal)? {
            return Ok(port);
        }
        let used: Vec<u32> =
            configfs::entries(&self.root.join("ports"))?.iter().filter_map(|s| s.parse().ok()).collect();
        let id = (1..).find(|n| !used.contains(n)).unwrap_or(1);
        let port = self.root.join("ports").join(id.to_string());
        configfs::mkdir(&port)?;
        let family = if portal.ip.is_ipv4() { "ipv4" } else { "ipv6" };
        configfs::write(&port.join("addr_trtype"), "tcp")?;
        configfs::write(&port.join("addr_adrfam"), family)?;
        configfs::write(&port.join("addr_traddr"), &portal.ip.to_string())?;
        configfs::write(&port.join("addr_trsvcid"), &portal.port.to_string())?;
        Ok(port)
    }

    fn build(&self, export: &Export, device: &Path) -> Result<(), TargetError> {
        let sub = self.subsystem(&export.target_name);
        configfs::mkdir(&sub)?;
        configfs::write(&sub.join("attr_allow_any_host"), "0")?;
        let serial: String = export.volume_id.chars().filter(|c| c.is_ascii_hexdigit()).take(20).collect();
        configfs::write(&sub.join("attr_serial"), &serial)?;
        let ns = sub.join("namespaces").join(export.lun.to_string());
        configfs::mkdir(&ns)?;
        configfs::write(&ns.join("device_path"), &device.display().to_string())?;
        configfs::write(&ns.join("device_uuid"), &export.volume_id)?;
        configfs::write(&ns.join("device_nguid"), &export.volume_id)?;
        configfs::write(&ns.join("enable"), "1")?;
        for portal in &self.portals {
            let port = self.port(portal)?;
            configfs::link(&sub, &port.join("subsystems").join(&export.target_name))?;
        }
        Ok(())
    }

    /// Subsystems (any, ember's or not) that admit `host`.
    fn host_in_use(&self, host: &str) -> Result<bool, TargetError> {
        for sub in configfs::entries(&self.root.join("subsystems"))? {
            if self.root.join("subsystems").join(sub).join("allowed_hosts").join(host).exists() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn unlink_host(&self, name: &str, host: &str) -> Result<bool, TargetError> {
        let removed = configfs::unlink(&self.subsystem(name).join("allowed_hosts").join(host))?;
        if removed && !self.host_in_use(host)? {
            configfs::rmdir(&self.root.join("hosts").join(host))?;
        }
        Ok(removed)
    }

    fn teardown(&self, name: &str) -> Result<bool, TargetError> {
        let sub = self.subsystem(name);
        if !sub.exists() {
            return Ok(false);
        }
        for id in configfs::entries(&self.root.join("ports"))? {
            let port = self.root.join("ports").join(&id);
            if configfs::unlink(&port.join("subsystems").join(name))?
                && configfs::entries(&port.join("subsystems"))?.is_empty()
                && self.portals.iter().any(|p| self.find_port(p).ok().flatten().as_deref() == Some(port.as_path()))
            {
                configfs::rmdir(&port)?;
            }
        }
        for host in configfs::entries(&sub.join("allowed_hosts"))? {
            self.unlink_host(name, &host)?;
        }
        for ns in configfs::entries(&sub.join("namespaces"))? {
            let dir = sub.join("namespaces").join(ns);
            configfs::write(&dir.join("enable"), "0")?;
            configfs::rmdir(&dir)?;
        }
        configfs::rmdir(&sub)
    }
}

impl Target for NvmetTarget {
    fn backend(&self) -> TargetBackend {
        TargetBackend::Nvmet
    }

    fn lun(&self) -> u32 {
        NSID
    }

    fn configured(&self) -> Result<Vec<Configured>, TargetError> {
        configfs::entries(&self.root.join("subsystems"))?
            .into_iter()
            .filter(|n| n.starts_with(&self.prefix))
            .map(|name| {
                let sub = self.subsystem(&name);
                let device = configfs::entries(&sub.join("namespaces"))?
                    .first()
                    .map(|ns| configfs::read(&sub.join("namespaces").join(ns).join("device_path")))
                    .transpose()?
                    .filter(|d| !d.is_empty())
                    .map(PathBuf::from);
                Ok(Configured { device, initiators: configfs::entries(&sub.join("allowed_hosts"))?, name })
            })
            .collect()
    }

    fn create_export(&self, export: &Export, device: &Path) -> Result<Created, TargetError> {
        let name = &export.target_name;
        self.ours(name)?;
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let sub = self.subsystem(name);
        let ns = sub.join("namespaces").join(export.lun.to_string());
        let linked = self
            .portals
            .iter()
            .all(|p| self.find_port(p).ok().flatten().is_some_and(|port| port.join("subsystems").join(name).exists()));
        if linked
            && configfs::read(&ns.join("enable")).is_ok_and(|e| e == "1")
            && configfs::read(&ns.join("device_path")).is_ok_and(|d| Path::new(&d) == device)
        {
            return Ok(Created::AlreadyPresent);
        }
        // Half-built, or on another device: start again (the manager admits its
        // hosts again once the export stands).
        self.teardown(name)?;
        if let Err(e) = self.build(export, device) {
            if let Err(undo) = self.teardown(name) {
                tracing::error!(subsystem = %name, error = %undo, "could not tear down a half-built nvmet export");
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

    fn allow(&self, export: &Export, host: &str) -> Result<Created, TargetError> {
        let name = &export.target_name;
        self.ours(name)?;
        if host.contains('/') || host.is_empty() {
            return Err(TargetError::Refused(format!("'{host}' is not a host NQN")));
        }
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let sub = self.subsystem(name);
        if !sub.exists() {
            return Err(TargetError::Refused(format!("{name} is not exported")));
        }
        let link = sub.join("allowed_hosts").join(host);
        if link.exists() {
            return Ok(Created::AlreadyPresent);
        }
        let entry = self.root.join("hosts").join(host);
        let created = configfs::mkdir(&entry)?;
        let result = (|| {
            if let Some(key) = &export.host_key {
                if !entry.join("dhchap_key").exists() {
                    return Err(TargetError::Unsupported(
                        "this kernel's nvmet has no DH-HMAC-CHAP (CONFIG_NVME_TARGET_AUTH)".to_string(),
                    ));
                }
                // nvmet keeps one key per host, for every subsystem it connects to.
                let current = configfs::read(&entry.join("dhchap_key")).unwrap_or_default();
                if !current.is_empty() && current != *key {
                    return Err(TargetError::Refused(format!(
                        "host {host} already has another DH-HMAC-CHAP key (nvmet keeps one per host)"
                    )));
                }
                configfs::write(&entry.join("dhchap_hash"), "hmac(sha256)")?;
                configfs::write(&entry.join("dhchap_key"), key)?;
            }
            configfs::link(&entry, &link).map(drop)
        })();
        if let Err(e) = result {
            if created {
                let _ = configfs::rmdir(&entry);
            }
            return Err(e);
        }
        Ok(Created::Created)
    }

    fn deny(&self, name: &str, host: &str) -> Result<Removed, TargetError> {
        self.ours(name)?;
        if host.contains('/') || host.is_empty() {
            return Ok(Removed::Absent);
        }
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        Ok(if self.unlink_host(name, host)? { Removed::Removed } else { Removed::Absent })
    }

    fn refresh_size(&self, export: &Export, _device: &Path) -> Result<(), TargetError> {
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let attr =
            self.subsystem(&export.target_name).join("namespaces").join(export.lun.to_string()).join("revalidate_size");
        configfs::write(&attr, "1")
    }
}
