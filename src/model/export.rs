//! Exports: how a volume is reachable by hypervisors (DESIGN decision 2). The store
//! holds the desired exports and the initiators each one admits; the target layer
//! makes the kernel's or tgtd's configuration match.

use std::fmt;

use super::string_enum;

string_enum! {
    /// The wire protocol of an export, as `connection_info.driver_volume_type` names it.
    Protocol { Iscsi = "iscsi", Nvmeof = "nvmeof" }
}

string_enum! {
    /// What serves an export: tgtd (userspace iSCSI), LIO (kernel iSCSI) or nvmet
    /// (kernel NVMe-oF/TCP).
    TargetBackend { Tgt = "tgt", Lio = "lio", Nvmet = "nvmet" }
}

impl TargetBackend {
    pub fn protocol(self) -> Protocol {
        match self {
            TargetBackend::Tgt | TargetBackend::Lio => Protocol::Iscsi,
            TargetBackend::Nvmet => Protocol::Nvmeof,
        }
    }
}

/// One-way CHAP credentials of an iSCSI export (spec §4.2): generated once,
/// shown only in `connection_info`. `Debug` never prints the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Chap {
    pub username: String,
    pub secret: String,
}

impl fmt::Debug for Chap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chap").field("username", &self.username).field("secret", &"<redacted>").finish()
    }
}

/// The desired export of one volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    pub volume_id: String,
    pub backend: TargetBackend,
    /// The IQN (iSCSI) or subsystem NQN (NVMe-oF).
    pub target_name: String,
    /// LUN (tgt 1, LIO 0) or namespace id (nvmet).
    pub lun: u32,
    /// iSCSI only.
    pub chap: Option<Chap>,
    /// NVMe-oF only, opt-in per volume type: the DH-HMAC-CHAP key a host must present.
    pub host_key: Option<String>,
    pub created_at: String,
}

impl Export {
    pub fn protocol(&self) -> Protocol {
        self.backend.protocol()
    }
}
