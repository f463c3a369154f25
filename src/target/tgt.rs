//! The tgt backend: iSCSI exports served by tgtd, the userspace target (Debian's
//! `tgt`), driven with `tgtadm`. It needs no kernel target modules, so it is the
//! embedded default for iSCSI.
//!
//! One target per volume, named by its IQN (ember's prefix + `volume-<id>`), with
//! tid chosen free under the writer lock. Creation order: target → LUN 1 on the
//! volume's block device (LUN 0 is tgtd's controller) with `scsi_id`/`scsi_sn` =
//! the volume's name and id (the initiator's WWN) → the volume's CHAP account
//! (`incominguser`), created if missing and bound to the target. Initiators are
//! admitted one by one by name (`bind --initiator-name`), never `ALL`. Teardown:
//! `delete --force` of the target (its LUN and bindings go with it), then its
//! accounts. A failure while building deletes what was built.
//!
//! tgtd keeps nothing across its own restart or a reboot; reconciliation builds it
//! again from the store. When tgtd is not running and `start_tgtd` is set, ember
//! starts it detached in its own process group, listening on the configured
//! portals, so it outlives ember (ember never stops it). On hosts with systemd,
//! Debian's `tgt.service` is the better owner of tgtd.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Configured, Created, Removed, Target, TargetError};
use crate::cmd;
use crate::model::{Export, TargetBackend};

const TIMEOUT: Duration = Duration::from_secs(30);
/// tgtd's controller takes LUN 0.
const LUN: u32 = 1;

pub struct TgtTarget {
    tgtadm: PathBuf,
    /// `tgtadm -C`: which tgtd (0 is the default one).
    control_port: u16,
    prefix: String,
    writer: Mutex<()>,
}

/// What `tgtadm --op show --mode target` says of one target.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Shown {
    tid: u32,
    name: String,
    /// (lun, backing store path) of the LUNs that have one.
    luns: Vec<(u32, PathBuf)>,
    accounts: Vec<String>,
    acls: Vec<String>,
}

/// Parses the listing of every target (the format of tgt 1.0.x).
fn parse_targets(text: &str) -> Result<Vec<Shown>, TargetError> {
    #[derive(PartialEq)]
    enum Section {
        Other,
        Luns,
        Accounts,
        Acls,
    }
    let bad = |line: &str| TargetError::Refused(format!("unexpected tgtadm output: {line:?}"));
    let mut out: Vec<Shown> = Vec::new();
    let mut section = Section::Other;
    let mut lun: Option<u32> = None;
    for line in text.lines() {
        let trimmed = line.trim();
        if let Some(rest) = line.strip_prefix("Target ") {
            let (tid, name) = rest.split_once(": ").ok_or_else(|| bad(line))?;
            out.push(Shown {
                tid: tid.parse().map_err(|_| bad(line))?,
                name: name.trim().to_string(),
                ..Shown::default()
            });
            section = Section::Other;
            continue;
        }
        let Some(target) = out.last_mut() else { continue };
        match trimmed {
            "LUN information:" => section = Section::Luns,
            "Account information:" => section = Section::Accounts,
            "ACL information:" => section = Section::Acls,
            "System information:" | "I_T nexus information:" => section = Section::Other,
            _ => match section {
                Section::Luns => {
                    if let Some(n) = trimmed.strip_prefix("LUN: ") {
                        lun = Some(n.parse().map_err(|_| bad(line))?);
                    } else if let Some(path) = trimmed.strip_prefix("Backing store path: ") {
                        if let (Some(n), false) = (lun, path == "None") {
                            target.luns.push((n, PathBuf::from(path)));
                        }
                    }
                }
                // Outgoing (mutual CHAP) accounts are marked; ember makes none.
                Section::Accounts if !trimmed.is_empty() => {
                    target.accounts.push(trimmed.trim_end_matches(" (outgoing)").to_string());
                }
                Section::Acls if !trimmed.is_empty() => target.acls.push(trimmed.to_string()),
                _ => {}
            },
        }
    }
    Ok(out)
}

impl TgtTarget {
    /// Connects to tgtd (control port `control_port`), starting it on `portals`
    /// when it is not running and `start` allows.
    pub fn open(prefix: &str, control_port: u16, start: bool, portals: &[String]) -> Result<TgtTarget, TargetError> {
        let unavailable = |why: String| TargetError::Unavailable(TargetBackend::Tgt, why);
        let tgtadm = cmd::resolve("tgtadm").map_err(|e| unavailable(format!("{e} (Debian package tgt)")))?;
        let target = TgtTarget { tgtadm, control_port, prefix: prefix.to_string(), writer: Mutex::new(()) };
        if target.running() {
            return Ok(target);
        }
        if !start {
            return Err(unavailable(format!("tgtd (control port {control_port}) is not running")));
        }
        let tgtd = cmd::resolve("tgtd").map_err(|e| unavailable(format!("{e} (Debian package tgt)")))?;
        let mut command = std::process::Command::new(&tgtd);
        if control_port != 0 {
            command.args(["-C", &control_port.to_string()]);
        }
        let listen: Vec<String> = portals.iter().map(|p| format!("portal={p}")).collect();
        command
            .args(["--iscsi", &listen.join(",")])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        // Its own process group: a signal to ember's group (Ctrl-C, a service
        // manager's stop) must not reach the target serving the hypervisors.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        tracing::info!(tgtd = %tgtd.display(), control_port, portals = ?portals, "starting tgtd");
        // tgtd forks into the background; the parent's exit is all there is to wait for.
        let status = command.status().map_err(|e| unavailable(format!("start {}: {e}", tgtd.display())))?;
        if !status.success() {
            return Err(unavailable(format!("{} exited with {status}", tgtd.display())));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while !target.running() {
            if Instant::now() > deadline {
                return Err(unavailable("tgtd started but does not answer tgtadm".to_string()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(target)
    }

    fn running(&self) -> bool {
        self.tgtadm(&["--op", "show", "--mode", "system"], &[]).is_ok()
    }

    /// `tgtadm [-C port] --lld iscsi ARGS`; `secrets` are redacted from errors.
    fn tgtadm(&self, args: &[&str], secrets: &[&str]) -> Result<String, TargetError> {
        let port = self.control_port.to_string();
        let mut argv: Vec<&str> = Vec::with_capacity(args.len() + 4);
        if self.control_port != 0 {
            argv.extend(["-C", port.as_str()]);
        }
        argv.extend(["--lld", "iscsi"]);
        argv.extend(args);
        Ok(cmd::run_redacted(&self.tgtadm, &argv, secrets, TIMEOUT)?)
    }

    fn shown(&self) -> Result<Vec<Shown>, TargetError> {
        parse_targets(&self.tgtadm(&["--op", "show", "--mode", "target"], &[])?)
    }

    fn find(&self, name: &str) -> Result<Option<Shown>, TargetError> {
        Ok(self.shown()?.into_iter().find(|t| t.name == name))
    }

    fn ours(&self, name: &str) -> Result<(), TargetError> {
        if name.starts_with(&self.prefix) {
            Ok(())
        } else {
            Err(TargetError::Refused(format!("{name} does not carry ember's prefix {}: left alone", self.prefix)))
        }
    }

    fn accounts(&self) -> Result<Vec<String>, TargetError> {
        let text = self.tgtadm(&["--op", "show", "--mode", "account"], &[])?;
        Ok(text
            .lines()
            .skip(1)
            .map(|l| l.trim().trim_end_matches(" (outgoing)").to_string())
            .filter(|l| !l.is_empty())
            .collect())
    }

    fn delete_target(&self, tid: u32) -> Result<(), TargetError> {
        self.tgtadm(&["--op", "delete", "--mode", "target", "--tid", &tid.to_string(), "--force"], &[]).map(drop)
    }

    /// Deletes accounts no target uses any more.
    fn drop_unbound_accounts(&self, candidates: &[String]) -> Result<(), TargetError> {
        let bound: Vec<String> = self.shown()?.into_iter().flat_map(|t| t.accounts).collect();
        for user in candidates.iter().filter(|u| !bound.contains(u)) {
            self.tgtadm(&["--op", "delete", "--mode", "account", "--user", user], &[])?;
        }
        Ok(())
    }

    fn build(&self, tid: u32, export: &Export, device: &Path) -> Result<(), TargetError> {
        let tid = tid.to_string();
        let device = device.to_str().ok_or_else(|| TargetError::Refused(format!("{device:?} is not UTF-8")))?;
        let lun = LUN.to_string();
        self.tgtadm(&["--op", "new", "--mode", "target", "--tid", &tid, "--targetname", &export.target_name], &[])?;
        self.tgtadm(
            &["--op", "new", "--mode", "logicalunit", "--tid", &tid, "--lun", &lun, "--backing-store", device],
            &[],
        )?;
        // The WWN initiators see (os-brick waits for one): stable, the volume's.
        let ids = format!("scsi_id=volume-{0},scsi_sn={0}", export.volume_id);
        self.tgtadm(&["--op", "update", "--mode", "logicalunit", "--tid", &tid, "--lun", &lun, "--params", &ids], &[])?;
        if let Some(chap) = &export.chap {
            if !self.accounts()?.contains(&chap.username) {
                self.tgtadm(
                    &["--op", "new", "--mode", "account", "--user", &chap.username, "--password", &chap.secret],
                    &[&chap.secret],
                )?;
            }
            self.tgtadm(&["--op", "bind", "--mode", "account", "--tid", &tid, "--user", &chap.username], &[])?;
        }
        Ok(())
    }
}

impl Target for TgtTarget {
    fn backend(&self) -> TargetBackend {
        TargetBackend::Tgt
    }

    fn lun(&self) -> u32 {
        LUN
    }

    fn configured(&self) -> Result<Vec<Configured>, TargetError> {
        Ok(self
            .shown()?
            .into_iter()
            .filter(|t| t.name.starts_with(&self.prefix))
            .map(|t| Configured {
                device: t.luns.iter().find(|(n, _)| *n == LUN).map(|(_, p)| p.clone()),
                name: t.name,
                initiators: t.acls,
            })
            .collect())
    }

    fn create_export(&self, export: &Export, device: &Path) -> Result<Created, TargetError> {
        self.ours(&export.target_name)?;
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let all = self.shown()?;
        if let Some(existing) = all.iter().find(|t| t.name == export.target_name) {
            let on_device = existing.luns.iter().any(|(n, p)| *n == LUN && p == device);
            let with_account = export.chap.as_ref().is_none_or(|c| existing.accounts.contains(&c.username));
            if on_device && with_account {
                return Ok(Created::AlreadyPresent);
            }
            // Half-built by a crash, or on a device that changed: build it again.
            self.delete_target(existing.tid)?;
        }
        let tid = all.iter().map(|t| t.tid).max().unwrap_or(0) + 1;
        if let Err(e) = self.build(tid, export, device) {
            let _ = self.delete_target(tid);
            if let Some(chap) = &export.chap {
                let _ = self.drop_unbound_accounts(std::slice::from_ref(&chap.username));
            }
            return Err(e);
        }
        Ok(Created::Created)
    }

    fn remove_export(&self, name: &str) -> Result<Removed, TargetError> {
        self.ours(name)?;
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let Some(existing) = self.find(name)? else {
            return Ok(Removed::Absent);
        };
        self.delete_target(existing.tid)?;
        self.drop_unbound_accounts(&existing.accounts)?;
        Ok(Removed::Removed)
    }

    fn allow(&self, export: &Export, initiator: &str) -> Result<Created, TargetError> {
        self.ours(&export.target_name)?;
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let existing = self
            .find(&export.target_name)?
            .ok_or_else(|| TargetError::Refused(format!("{} is not exported", export.target_name)))?;
        if existing.acls.iter().any(|a| a.eq_ignore_ascii_case(initiator)) {
            return Ok(Created::AlreadyPresent);
        }
        let tid = existing.tid.to_string();
        self.tgtadm(&["--op", "bind", "--mode", "target", "--tid", &tid, "--initiator-name", initiator], &[])?;
        Ok(Created::Created)
    }

    fn deny(&self, name: &str, initiator: &str) -> Result<Removed, TargetError> {
        self.ours(name)?;
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let Some(existing) = self.find(name)? else {
            return Ok(Removed::Absent);
        };
        let Some(acl) = existing.acls.iter().find(|a| a.eq_ignore_ascii_case(initiator)) else {
            return Ok(Removed::Absent);
        };
        let tid = existing.tid.to_string();
        self.tgtadm(&["--op", "unbind", "--mode", "target", "--tid", &tid, "--initiator-name", acl], &[])?;
        Ok(Removed::Removed)
    }

    /// Growing the device changes nothing in tgtd; re-reading the path does, and
    /// `online=0,path=…,online=1` in one update keeps connected sessions (only a
    /// login in that instant sees NOT READY). Deleting and re-adding the LUN would
    /// fail their I/O (shared/vm/FACTS.md).
    fn refresh_size(&self, export: &Export, device: &Path) -> Result<(), TargetError> {
        self.ours(&export.target_name)?;
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let existing = self
            .find(&export.target_name)?
            .ok_or_else(|| TargetError::Refused(format!("{} is not exported", export.target_name)))?;
        let params = format!("online=0,path={},online=1", device.display());
        let (tid, lun) = (existing.tid.to_string(), LUN.to_string());
        self.tgtadm(
            &["--op", "update", "--mode", "logicalunit", "--tid", &tid, "--lun", &lun, "--params", &params],
            &[],
        )
        .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHOW: &str = "Target 1: iqn.2010-10.org.openstack:volume-a
    System information:
        Driver: iscsi
        State: ready
    I_T nexus information:
        I_T nexus: 3
            Initiator: iqn.1994-05.com.example:h1 alias: h1
            Connection: 0
                IP Address: 127.0.0.1
    LUN information:
        LUN: 0
            Type: controller
            Backing store path: None
            Backing store flags: 
        LUN: 1
            Type: disk
            SCSI ID: volume-a
            Size: 67 MB, Block size: 512
            Backing store type: rdwr
            Backing store path: /dev/loop3
            Backing store flags: 
    Account information:
        user1
        mutual (outgoing)
    ACL information:
        iqn.1994-05.com.example:h1
        iqn.1994-05.com.example:h2
Target 12: iqn.other:foreign
    System information:
    LUN information:
        LUN: 0
            Backing store path: None
    Account information:
    ACL information:
        ALL
";

    #[test]
    fn parses_tgtadm_listings() {
        let t = parse_targets(SHOW).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!((t[0].tid, t[0].name.as_str()), (1, "iqn.2010-10.org.openstack:volume-a"));
        assert_eq!(t[0].luns, [(1, PathBuf::from("/dev/loop3"))]);
        assert_eq!(t[0].accounts, ["user1", "mutual"]);
        assert_eq!(t[0].acls, ["iqn.1994-05.com.example:h1", "iqn.1994-05.com.example:h2"]);
        assert_eq!((t[1].tid, t[1].luns.len(), t[1].acls.as_slice()), (12, 0, ["ALL".to_string()].as_slice()));
        assert!(parse_targets("").unwrap().is_empty());
        assert!(parse_targets("Target x: iqn").is_err());
    }
}
