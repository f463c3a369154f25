//! Targets: how volumes reach hypervisors. Trait `Target` and its backends: `tgt`
//! (tgtadm against tgtd, a userspace iSCSI target that works where the kernel has
//! none), `lio` (the kernel's iSCSI target, plain writes under configfs) and
//! `nvmet` (the kernel's NVMe-oF target, plain writes under configfs).
//!
//! Like `Pool`, every call is blocking and idempotent (`Created`/`Removed`). A
//! backend only ever changes or removes what carries ember's name prefix (DESIGN
//! decision 3), and serialises its own changes (decision 4): one writer per
//! configfs tree and per tgtd. What should exist is the manager's business (the
//! store); a backend reports what does exist (`configured`) and applies changes.

pub mod configfs;
pub mod lio;
pub mod nvmet;
#[cfg(test)]
pub mod sim;
pub mod tgt;

use std::path::{Path, PathBuf};

use crate::cmd::CmdError;
use crate::model::{Export, TargetBackend};
pub use crate::pool::{Created, Removed};

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error(transparent)]
    Cmd(#[from] CmdError),
    #[error("{step} {path}: {source}")]
    Io {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Refused(String),
    #[error("{0} is not available on this host: {1}")]
    Unavailable(TargetBackend, String),
    /// The backend is there but lacks what the export asks for.
    #[error("{0}")]
    Unsupported(String),
}

impl TargetError {
    pub fn io(step: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TargetError::Io { step, path: path.into(), source }
    }

    /// What may be shown to the volume's owner.
    pub fn user_reason(&self) -> String {
        match self {
            TargetError::Io { source, .. } => match source.raw_os_error() {
                Some(code) => format!("the target refused: {}", nix::errno::Errno::from_raw(code).desc()),
                None => "the target refused the change".to_string(),
            },
            TargetError::Unavailable(backend, _) => format!("the {backend} target is not available on this host"),
            TargetError::Unsupported(what) => what.clone(),
            TargetError::Cmd(_) | TargetError::Refused(_) => "the target refused the change".to_string(),
        }
    }
}

/// One export of ember's as the backend has it configured now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Configured {
    /// The IQN or subsystem NQN.
    pub name: String,
    /// The device it serves (None while it has no LUN / namespace).
    pub device: Option<PathBuf>,
    /// The initiators (IQNs) or host NQNs it admits.
    pub initiators: Vec<String>,
}

pub trait Target: Send + Sync {
    fn backend(&self) -> TargetBackend;

    /// The LUN (or namespace id) a new export of this backend serves its volume on.
    fn lun(&self) -> u32;

    /// Every export with ember's prefix that is configured now.
    fn configured(&self) -> Result<Vec<Configured>, TargetError>;

    /// Builds the export of `export` on `device`, without any initiator (those come
    /// with `allow`). AlreadyPresent when it stands on that device already; one on
    /// another device is built again. A failure leaves nothing of it behind.
    fn create_export(&self, export: &Export, device: &Path) -> Result<Created, TargetError>;

    /// Removes the export named `name`, with its initiators.
    fn remove_export(&self, name: &str) -> Result<Removed, TargetError>;

    /// Admits `initiator` (with the export's credentials).
    fn allow(&self, export: &Export, initiator: &str) -> Result<Created, TargetError>;

    /// No longer admits `initiator`.
    fn deny(&self, name: &str, initiator: &str) -> Result<Removed, TargetError>;

    /// Makes the device's new size visible to connected initiators without
    /// disturbing their I/O (after the pool grew it).
    fn refresh_size(&self, export: &Export, device: &Path) -> Result<(), TargetError>;
}

/// Whether a backend could serve on this host, as `ember doctor` reports it.
pub struct Availability {
    pub name: &'static str,
    /// What it would use, or why it cannot and how to fix that.
    pub ready: Result<String, String>,
}

/// What each backend of `[target]` would find on this host; starts and changes
/// nothing (unlike opening the backends, which may start tgtd).
pub fn availability(config: &crate::config::TargetConfig) -> Vec<Availability> {
    let configfs = Path::new(configfs::ROOT);
    let lio = if configfs.join("target/core").is_dir() {
        Ok("configfs has target_core".to_string())
    } else {
        Err("needs configfs with target_core: mount -t configfs none /sys/kernel/config; \
             modprobe target_core_mod target_core_iblock iscsi_target_mod"
            .to_string())
    };
    let control = config.tgt.control_port;
    let tgt = match crate::cmd::resolve("tgtadm") {
        Err(e) => Err(format!("{e}: apt-get install tgt")),
        Ok(tgtadm) => {
            let port = control.to_string();
            let mut args = vec!["--lld", "iscsi", "--op", "show", "--mode", "system"];
            if control != 0 {
                args.splice(0..0, ["-C", port.as_str()]);
            }
            match crate::cmd::run(&tgtadm, &args, std::time::Duration::from_secs(5)) {
                Ok(_) => Ok(format!("tgtd answers (control port {control})")),
                Err(_) if config.tgt.start_tgtd && crate::cmd::resolve("tgtd").is_ok() => {
                    Ok("tgtd is not running; ember starts it".to_string())
                }
                Err(e) => Err(format!("tgtd does not answer ({e}); start it, or set [target.tgt] start_tgtd")),
            }
        }
    };
    let nvmet = if configfs.join("nvmet/subsystems").is_dir() {
        Ok("configfs has nvmet".to_string())
    } else {
        Err("needs configfs with nvmet: modprobe nvmet nvmet_tcp".to_string())
    };
    vec![
        Availability { name: "lio", ready: lio },
        Availability { name: "tgt", ready: tgt },
        Availability { name: "nvmet", ready: nvmet },
    ]
}

/// The characters and lengths of Cinder's CHAP credentials (spec §4.2): no 0/O,
/// 1/l/I look-alikes.
const CHAP_ALPHABET: &[u8] = b"23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

/// A random string of `len` characters of Cinder's CHAP alphabet, from the
/// kernel's random source.
pub fn chap_string(len: usize) -> std::io::Result<String> {
    use std::io::Read;
    let mut random = std::fs::File::open("/dev/urandom")?;
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        random.read_exact(&mut buf)?;
        // 57 symbols: bytes above the last whole multiple are dropped, so each
        // symbol is equally likely.
        let limit = 256 / CHAP_ALPHABET.len() * CHAP_ALPHABET.len();
        for byte in buf.iter().map(|b| usize::from(*b)).filter(|b| *b < limit) {
            if out.len() < len {
                out.push(char::from(CHAP_ALPHABET[byte % CHAP_ALPHABET.len()]));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chap_strings_use_cinders_alphabet() {
        let (a, b) = (chap_string(20).unwrap(), chap_string(20).unwrap());
        assert_eq!((a.len(), chap_string(16).unwrap().len()), (20, 16));
        assert_ne!(a, b);
        assert!(a.bytes().chain(b.bytes()).all(|c| CHAP_ALPHABET.contains(&c)), "{a} {b}");
    }
}
