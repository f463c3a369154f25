//! Exports (DESIGN decision 2, "reconcile, don't replay"): the store holds each
//! volume's desired export (`exports`) and the initiators it admits
//! (`export_acls`); `reconcile_volume` makes the target backend match, and every
//! job that touches an export does so through it. Actions change the desired
//! state in their transaction and run a job that reconciles; at start and
//! periodically `reconcile_all` repairs whatever differs (a rebooted host has an
//! empty configfs and tgtd, a crash may have left a half-built export), and
//! removes exports with ember's prefix that the store no longer wants.

use std::net::IpAddr;
use std::sync::Arc;

use serde_json::{Value, json};

use super::jobs::StepError;
use super::{Caller, Manager, ManagerError, Result};
use crate::config::{IscsiBackend, NvmeBackend, ProtocolChoice, TargetConfig};
use crate::model::{Chap, Export, Protocol, TargetBackend, Volume, VolumeType, now};
use crate::store::{StoreError, Tx};
use crate::target::{Created, Target, TargetError, chap_string};

/// The targets this agent exports with, and how it names and describes exports.
#[derive(Default)]
pub struct Exporter {
    pub iscsi: Option<Arc<dyn Target>>,
    pub nvme: Option<Arc<dyn Target>>,
    pub settings: ExportSettings,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExportSettings {
    pub default_protocol: Protocol,
    pub portal_ips: Vec<IpAddr>,
    pub iscsi_port: u16,
    pub nvme_port: u16,
    pub iqn_prefix: String,
    pub nqn_prefix: String,
    /// NVMe-oF `connection_info` format, 1 or 2 (spec §4.3).
    pub nvme_format: u8,
}

impl Default for ExportSettings {
    fn default() -> Self {
        ExportSettings::from(&TargetConfig::default())
    }
}

impl From<&TargetConfig> for ExportSettings {
    fn from(c: &TargetConfig) -> Self {
        ExportSettings {
            default_protocol: match c.protocol {
                ProtocolChoice::Iscsi => Protocol::Iscsi,
                ProtocolChoice::Nvmeof => Protocol::Nvmeof,
            },
            portal_ips: c.portal_ips.clone(),
            iscsi_port: c.iscsi_port,
            nvme_port: c.nvme_port,
            iqn_prefix: c.iqn_prefix.clone(),
            nqn_prefix: c.nqn_prefix.clone(),
            nvme_format: c.nvme_connection_info,
        }
    }
}

/// `ip:port`, IPv6 in brackets, as iSCSI portals and LIO's `np/` are written.
pub fn portal(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    }
}

impl Exporter {
    /// Opens the backends `config` asks for. `auto` takes what the host can serve
    /// and says what it skipped and why; a backend named explicitly must open.
    pub fn open(config: &TargetConfig) -> std::result::Result<Exporter, String> {
        use crate::target::{lio::LioTarget, nvmet, nvmet::NvmetTarget, tgt::TgtTarget};
        let iscsi_portals: Vec<String> = config.portal_ips.iter().map(|ip| portal(*ip, config.iscsi_port)).collect();
        let tgt = || -> std::result::Result<Arc<dyn Target>, TargetError> {
            Ok(Arc::new(TgtTarget::open(
                &config.iqn_prefix,
                config.tgt.control_port,
                config.tgt.start_tgtd,
                &iscsi_portals,
            )?))
        };
        let lio = || -> std::result::Result<Arc<dyn Target>, TargetError> {
            Ok(Arc::new(LioTarget::open(&config.iqn_prefix, &iscsi_portals)?))
        };
        let iscsi = match config.iscsi {
            IscsiBackend::None => None,
            IscsiBackend::Tgt => Some(tgt().map_err(|e| e.to_string())?),
            IscsiBackend::Lio => Some(lio().map_err(|e| e.to_string())?),
            IscsiBackend::Auto => match lio() {
                Ok(t) => Some(t),
                Err(lio_error) => match tgt() {
                    Ok(t) => {
                        tracing::info!(reason = %lio_error, "iSCSI through tgt: LIO is not available");
                        Some(t)
                    }
                    Err(tgt_error) => {
                        tracing::warn!(lio = %lio_error, tgt = %tgt_error, "no iSCSI target available");
                        None
                    }
                },
            },
        };
        let nvme_portals: Vec<nvmet::Portal> =
            config.portal_ips.iter().map(|ip| nvmet::Portal { ip: *ip, port: config.nvme_port }).collect();
        let nvmet = || -> std::result::Result<Arc<dyn Target>, TargetError> {
            Ok(Arc::new(NvmetTarget::open(&config.nqn_prefix, &nvme_portals)?))
        };
        let nvme = match config.nvme {
            NvmeBackend::None => None,
            NvmeBackend::Nvmet => Some(nvmet().map_err(|e| e.to_string())?),
            NvmeBackend::Auto => {
                nvmet().map_err(|e| tracing::info!(reason = %e, "no NVMe-oF target: nvmet is not available")).ok()
            }
        };
        Ok(Exporter { iscsi, nvme, settings: ExportSettings::from(config) })
    }

    pub fn targets(&self) -> impl Iterator<Item = &Arc<dyn Target>> {
        self.iscsi.iter().chain(self.nvme.iter())
    }

    fn for_protocol(&self, protocol: Protocol) -> Option<&Arc<dyn Target>> {
        match protocol {
            Protocol::Iscsi => self.iscsi.as_ref(),
            Protocol::Nvmeof => self.nvme.as_ref(),
        }
    }

    fn for_backend(&self, backend: TargetBackend) -> Option<&Arc<dyn Target>> {
        self.targets().find(|t| t.backend() == backend)
    }

    /// The IQN or NQN a volume is exported under by `backend`.
    pub fn target_name(&self, backend: TargetBackend, volume_id: &str) -> String {
        match backend.protocol() {
            Protocol::Iscsi => format!("{}volume-{volume_id}", self.settings.iqn_prefix),
            Protocol::Nvmeof => format!("{}{volume_id}", self.settings.nqn_prefix),
        }
    }
}

/// The protocol of a new export of a volume of `vtype`: its `ember:target_protocol`
/// extra spec, else the agent's default.
fn wanted_protocol(vtype: Option<&VolumeType>, default: Protocol) -> Result<Protocol> {
    match vtype.and_then(|t| t.extra_specs.get("ember:target_protocol")) {
        None => Ok(default),
        Some(p) => p.trim().parse().map_err(|_| {
            ManagerError::Invalid(format!(
                "Invalid volume type: ember:target_protocol is '{p}', not one of 'iscsi', 'nvmeof'."
            ))
        }),
    }
}

/// A volume type asks for DH-HMAC-CHAP on NVMe-oF with `ember:nvme_dhchap = "<is> True"`.
fn wants_dhchap(vtype: Option<&VolumeType>) -> bool {
    vtype
        .and_then(|t| t.extra_specs.get("ember:nvme_dhchap"))
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("<is> true"))
}

/// A DH-HMAC-CHAP secret in the NVMe representation nvme-cli and nvmet take:
/// `DHHC-1:00:<base64 of 32 random bytes and their CRC-32, little-endian>:`
/// (00: the secret is used as is, no transformation).
fn dhchap_key() -> std::io::Result<String> {
    use std::io::Read;
    let mut secret = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut secret)?;
    let mut bytes = secret.to_vec();
    bytes.extend_from_slice(&crc32(&secret).to_le_bytes());
    Ok(format!("DHHC-1:00:{}:", base64(&bytes)))
}

/// CRC-32 (IEEE 802.3, reflected), as the NVMe secret representation uses.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// Standard base64 with padding.
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// What a connector names its initiator by for `protocol`: the IQN (iSCSI,
/// lowercased: IQNs compare case-insensitively) or the host NQN.
pub fn connector_initiator(protocol: Protocol, connector: &Value) -> Option<String> {
    let key = match protocol {
        Protocol::Iscsi => "initiator",
        Protocol::Nvmeof => "nqn",
    };
    let value = connector.get(key).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty())?;
    Some(if protocol == Protocol::Iscsi { value.to_ascii_lowercase() } else { value.to_string() })
}

/// What `add_acl` changed, so a failed export can be rolled back exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Added {
    pub export: bool,
    pub acl: bool,
}

impl Manager {
    /// The volume's export, made (with new CHAP credentials) if it has none, and
    /// `initiator` admitted to it; in the caller's transaction.
    pub(super) fn add_acl(&self, tx: &Tx, v: &Volume, connector: &Value) -> Result<(Export, String, Added)> {
        let existing = tx.export(&v.id)?;
        let vtype = tx.volume_type(&v.volume_type_id)?;
        let protocol = match &existing {
            Some(e) => e.protocol(),
            None => wanted_protocol(vtype.as_ref(), self.exporter.settings.default_protocol)?,
        };
        let initiator = connector_initiator(protocol, connector).ok_or_else(|| {
            ManagerError::Invalid(format!(
                "Invalid input received: Connector doesn't have required information: {}",
                if protocol == Protocol::Iscsi { "initiator" } else { "nqn" }
            ))
        })?;
        let (export, new_export) = match existing {
            Some(e) => (e, false),
            None => {
                let target = self.exporter.for_protocol(protocol).ok_or_else(|| {
                    ManagerError::Invalid(format!(
                        "Invalid input received: this agent serves no {protocol} target (see `ember doctor` and [target])."
                    ))
                })?;
                let chap = (protocol == Protocol::Iscsi)
                    .then(|| -> std::io::Result<Chap> {
                        Ok(Chap { username: chap_string(20)?, secret: chap_string(16)? })
                    })
                    .transpose()
                    .map_err(|e| ManagerError::Invalid(format!("could not draw CHAP credentials: {e}")))?;
                let e = Export {
                    volume_id: v.id.clone(),
                    backend: target.backend(),
                    target_name: self.exporter.target_name(target.backend(), &v.id),
                    lun: target.lun(),
                    chap,
                    host_key: (protocol == Protocol::Nvmeof && wants_dhchap(vtype.as_ref()))
                        .then(dhchap_key)
                        .transpose()
                        .map_err(|e| ManagerError::Invalid(format!("could not draw a DH-HMAC-CHAP key: {e}")))?,
                    created_at: now(),
                };
                tx.insert_export(&e)?;
                (e, true)
            }
        };
        let new_acl = tx.add_export_acl(&v.id, &initiator)?;
        Ok((export, initiator, Added { export: new_export, acl: new_acl }))
    }

    /// Makes the target configuration of one volume match the store: its export
    /// built on its device with exactly its initiators, or no export of it at all
    /// (and no device bound for it). Blocking; the caller holds the volume's lock.
    pub(super) fn reconcile_volume(&self, volume_id: &str) -> std::result::Result<(), StepError> {
        let (export, acls) =
            self.store.read(|tx| Ok::<_, StoreError>((tx.export(volume_id)?, tx.export_acls(volume_id)?)))?;
        for target in self.exporter.targets() {
            let name = self.exporter.target_name(target.backend(), volume_id);
            let actual = target.configured()?.into_iter().find(|c| c.name == name);
            match &export {
                Some(e) if e.backend == target.backend() => {
                    let device = self.pool_of(volume_id)?.attach_device(volume_id)?;
                    let have = match target.create_export(e, &device)? {
                        Created::Created => Vec::new(),
                        Created::AlreadyPresent => actual.map(|a| a.initiators).unwrap_or_default(),
                    };
                    for initiator in acls.iter().filter(|i| !have.iter().any(|h| h.eq_ignore_ascii_case(i))) {
                        target.allow(e, initiator)?;
                    }
                    for initiator in have.iter().filter(|h| !acls.iter().any(|i| i.eq_ignore_ascii_case(h))) {
                        target.deny(&name, initiator)?;
                    }
                }
                _ => {
                    if actual.is_some() {
                        target.remove_export(&name)?;
                    }
                }
            }
        }
        if export.is_none() {
            self.pool_of(volume_id)?.detach_device(volume_id)?;
        }
        Ok(())
    }

    /// Takes the volume's export down without forgetting it (a revert needs the
    /// device to itself); `reconcile_volume` builds it again.
    pub(super) fn suspend_export(&self, volume_id: &str) -> std::result::Result<(), StepError> {
        for target in self.exporter.targets() {
            target.remove_export(&self.exporter.target_name(target.backend(), volume_id))?;
        }
        Ok(())
    }

    /// After the pool grew the volume: connected initiators see the new size.
    pub(super) fn refresh_export(&self, volume_id: &str) -> std::result::Result<(), StepError> {
        let Some(export) = self.store.read(|tx| tx.export(volume_id))? else {
            return Ok(());
        };
        let Some(target) = self.exporter.for_backend(export.backend) else {
            return Err(StepError::Target(TargetError::Unavailable(export.backend, "not opened by this agent".into())));
        };
        let device = self.pool_of(volume_id)?.attach_device(volume_id)?;
        target.refresh_size(&export, &device)?;
        Ok(())
    }

    /// `connection_info` for `connector` (spec §4): what os-brick attaches from.
    pub(super) fn connection_info(&self, v: &Volume, e: &Export, connector: &Value) -> super::Result<Value> {
        let s = &self.exporter.settings;
        let access_mode = match v.admin_metadata.get("attached_mode") {
            Some(mode) => mode.clone(),
            None if v.admin_metadata.get("readonly").is_some_and(|r| r == "True") => "ro".to_string(),
            None => "rw".to_string(),
        };
        let flag = |key: &str| connector.get(key).and_then(Value::as_bool).unwrap_or(false);
        let enforce_multipath = flag("enforce_multipath");
        let (driver, mut data) = match e.protocol() {
            Protocol::Iscsi => {
                let portals: Vec<String> = s.portal_ips.iter().map(|ip| portal(*ip, s.iscsi_port)).collect();
                let mut data = json!({
                    "target_discovered": false,
                    "target_portal": portals[0],
                    "target_iqn": e.target_name,
                    "target_lun": e.lun,
                    "volume_id": v.id,
                });
                if let Some(chap) = &e.chap {
                    data["auth_method"] = json!("CHAP");
                    data["auth_username"] = json!(chap.username);
                    data["auth_password"] = json!(chap.secret);
                }
                if flag("multipath") || portals.len() > 1 {
                    data["target_portals"] = json!(portals);
                    data["target_iqns"] = json!(vec![&e.target_name; portals.len()]);
                    data["target_luns"] = json!(vec![e.lun; portals.len()]);
                }
                ("iscsi", data)
            }
            Protocol::Nvmeof => {
                let port = s.nvme_port.to_string();
                let data = if s.nvme_format == 1 {
                    json!({
                        "target_portal": s.portal_ips[0].to_string(),
                        "target_port": port,
                        "nqn": e.target_name,
                        "transport_type": "tcp",
                        "ns_id": e.lun.to_string(),
                        "volume_nguid": v.id,
                    })
                } else {
                    let portals: Vec<Value> =
                        s.portal_ips.iter().map(|ip| json!([ip.to_string(), port, "tcp"])).collect();
                    json!({"target_nqn": e.target_name, "vol_uuid": v.id, "portals": portals, "ns_id": e.lun.to_string()})
                };
                let mut data = data;
                if let Some(key) = &e.host_key {
                    // The host's DH-HMAC-CHAP secret (nvme connect --dhchap-secret).
                    data["dhchap_secret"] = json!(key);
                }
                ("nvmeof", data)
            }
        };
        let (qos_specs, encrypted) = self.connection_type_fields(v)?;
        data["qos_specs"] = qos_specs;
        data["access_mode"] = json!(access_mode);
        data["encrypted"] = json!(encrypted);
        data["cacheable"] = json!(false);
        data["enforce_multipath"] = json!(enforce_multipath);
        Ok(json!({"driver_volume_type": driver, "data": data, "enforce_multipath": enforce_multipath}))
    }

    /// Repairs every difference between the exports the store wants and what the
    /// targets have: a missing or half-built export is built, a missing initiator
    /// admitted, one no longer wanted removed, and an export with ember's prefix
    /// that the store does not know is taken down. Each volume is fixed under its
    /// lock, behind any job already queued on it. Returns how many volumes needed
    /// a repair. Blocking.
    pub fn reconcile_exports(&self) -> Result<usize> {
        crate::metrics::metrics().reconcile_runs.inc();
        let wanted: Vec<(Export, Vec<String>)> = self.store.read(|tx| {
            tx.exports()?
                .into_iter()
                .map(|e| {
                    let acls = tx.export_acls(&e.volume_id)?;
                    Ok::<_, StoreError>((e, acls))
                })
                .collect::<std::result::Result<_, _>>()
        })?;
        let mut fix: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
        for target in self.exporter.targets() {
            let configured = target.configured().map_err(|e| ManagerError::Backend(e.to_string()))?;
            for (e, acls) in wanted.iter().filter(|(e, _)| e.backend == target.backend()) {
                let device = self.pool_of(&e.volume_id).ok().and_then(|p| p.bound_device(&e.volume_id));
                let same = configured.iter().find(|c| c.name == e.target_name).is_some_and(|c| {
                    c.device.is_some()
                        && c.device == device
                        && c.initiators.len() == acls.len()
                        && acls.iter().all(|a| c.initiators.iter().any(|i| i.eq_ignore_ascii_case(a)))
                });
                if !same {
                    fix.insert(e.volume_id.clone());
                }
            }
            for c in &configured {
                if wanted.iter().any(|(e, _)| e.backend == target.backend() && e.target_name == c.name) {
                    continue;
                }
                match self.volume_of(target.backend(), &c.name) {
                    Some(volume) => {
                        fix.insert(volume);
                    }
                    None => {
                        // Ember's prefix but no volume's name: nothing to lock.
                        tracing::warn!(export = %c.name, "removing an export of ember's that names no volume");
                        target.remove_export(&c.name).map_err(|e| ManagerError::Backend(e.to_string()))?;
                    }
                }
            }
        }
        crate::metrics::metrics().reconcile_drift.inc_by(fix.len() as u64);
        let handle = tokio::runtime::Handle::current();
        for volume in &fix {
            let ticket = self
                .locks
                .enqueue_transient(vec![(crate::model::Resource::Volume(volume.clone()), crate::model::Access::Write)]);
            handle.block_on(ticket.granted());
            match self.reconcile_volume(volume) {
                Ok(()) => tracing::info!(%volume, "export reconciled"),
                Err(e) => tracing::error!(%volume, error = %e, "could not reconcile the export"),
            }
        }
        Ok(fix.len())
    }

    /// The volume an export name of `backend` stands for, if it is one of ours.
    fn volume_of(&self, backend: TargetBackend, name: &str) -> Option<String> {
        let rest = match backend.protocol() {
            Protocol::Iscsi => name.strip_prefix(&self.exporter.settings.iqn_prefix)?.strip_prefix("volume-")?,
            Protocol::Nvmeof => name.strip_prefix(&self.exporter.settings.nqn_prefix)?,
        };
        uuid::Uuid::parse_str(rest).ok().map(|u| u.to_string())
    }

    /// The export of a volume the caller may see, with the initiators it admits.
    pub fn volume_export(&self, caller: &Caller, id: &str) -> Result<Option<(Export, Vec<String>)>> {
        self.volume(caller, id)?;
        Ok(self.store.read(|tx| match tx.export(id)? {
            Some(e) => Ok::<_, StoreError>(Some((e, tx.export_acls(id)?))),
            None => Ok(None),
        })?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dhchap_keys_have_nvmes_representation() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926, "the CRC-32 check value");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(b"fo"), "Zm8=");
        let key = dhchap_key().unwrap();
        assert!(key.starts_with("DHHC-1:00:") && key.ends_with(':'), "{key}");
        assert_eq!(key.len(), "DHHC-1:00:".len() + 48 + 1, "36 bytes in base64");
        assert_ne!(key, dhchap_key().unwrap());
    }
}
