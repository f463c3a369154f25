//! `ember doctor`: what this host can do for the configuration, each check `ok`
//! or `MISSING` with the command that fixes it. A check the configuration needs
//! (the pool's, and the target backends named explicitly) is required: when one
//! fails, the doctor exits non-zero. The others (udev rules, the lvm.conf filter,
//! the clock, backends `auto` may do without) only advise.

use std::path::Path;

use serde_json::{Value, json};

use crate::cmd;
use crate::config::{Config, IscsiBackend, LvmConfig, LvmType, NvmeBackend, PoolConfig};

pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    /// Whether the configuration cannot work without it.
    pub required: bool,
    pub detail: String,
    /// The command that fixes it, when it fails.
    pub fix: Option<String>,
}

impl Check {
    pub fn to_json(&self) -> Value {
        json!({"name": self.name, "ok": self.ok, "required": self.required, "detail": self.detail, "fix": self.fix})
    }

    /// `name  ok|MISSING  detail (fix: …)`, with `(optional)` where not required.
    pub fn line(&self) -> String {
        let status = if self.ok { "ok" } else { "MISSING" };
        let mut out = format!("{:<16} {:<8} {}", self.name, status, self.detail);
        if let (false, Some(fix)) = (self.ok, &self.fix) {
            out.push_str(&format!(" (fix: {fix})"));
        }
        if !self.required && !self.ok {
            out.push_str(" [optional]");
        }
        out
    }
}

struct Checks(Vec<Check>);

impl Checks {
    fn add(&mut self, name: &'static str, required: bool, result: Result<String, (String, String)>) {
        let check = match result {
            Ok(detail) => Check { name, ok: true, required, detail, fix: None },
            Err((detail, fix)) => Check { name, ok: false, required, detail, fix: Some(fix) },
        };
        self.0.push(check);
    }
}

fn filesystem_known(name: &str) -> bool {
    std::fs::read_to_string("/proc/filesystems")
        .map(|t| t.lines().any(|l| l.split_whitespace().last() == Some(name)))
        .unwrap_or(false)
}

fn module_loaded(name: &str) -> bool {
    Path::new("/sys/module").join(name).exists()
}

/// Every check the configuration calls for, in order.
pub fn checks(cfg: &Config) -> Vec<Check> {
    let mut c = Checks(Vec::new());
    let root = nix::unistd::geteuid().is_root();
    c.add(
        "root",
        true,
        if root {
            Ok("running as root".into())
        } else {
            Err(("loop devices, LVM and configfs need root".into(), "run ember as root (the systemd unit does)".into()))
        },
    );
    data_dir(&mut c, &cfg.data_dir);
    let libblkid = crate::blockdev::blkid::probe(Path::new("/proc/self/exe")).is_ok();
    c.add(
        "libblkid",
        true,
        if libblkid {
            Ok("signature probing through libblkid".into())
        } else {
            Err(("libblkid cannot probe".into(), "apt-get install libblkid1".into()))
        },
    );
    clock(&mut c);
    for pool in cfg.pool_configs() {
        match &pool {
            PoolConfig::File(f) => file_pool(&mut c, f.path.as_deref().unwrap_or(&cfg.data_dir)),
            PoolConfig::Lvm(lvm) => lvm_pool(&mut c, lvm),
        }
    }
    targets(&mut c, cfg);
    c.0
}

fn data_dir(c: &mut Checks, dir: &Path) {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let shown = dir.display().to_string();
    let created = std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).is_ok();
    let writable = created && nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK).is_ok();
    c.add(
        "data dir",
        true,
        if writable {
            Ok(format!("{shown} is writable"))
        } else {
            Err((format!("{shown} must be creatable and writable"), format!("install -d -m 0700 {shown}")))
        },
    );
    if let Ok(meta) = std::fs::metadata(dir) {
        let mode = meta.permissions().mode() & 0o777;
        let private = mode & 0o077 == 0;
        c.add(
            "permissions",
            false,
            if private {
                Ok(format!("{mode:o}: only root reads the store and secrets"))
            } else {
                Err((
                    format!("{mode:o}: others can read the store, CHAP secrets and transfer keys"),
                    format!("chmod 700 {shown}"),
                ))
            },
        );
    }
}

/// Whether the kernel's clock is synchronized (NTP): token expiry, messages and
/// job timestamps depend on it.
fn clock(c: &mut Checks) {
    // SAFETY: timex is plain data; all zeros is a valid value (modes 0: read only).
    let mut t: libc::timex = unsafe { std::mem::zeroed() };
    // SAFETY: adjtimex with modes 0 only reads the kernel's clock state into `t`.
    let state = unsafe { libc::adjtimex(&mut t) };
    let synced = state >= 0 && state != libc::TIME_ERROR && t.status & libc::STA_UNSYNC == 0;
    c.add(
        "clock",
        false,
        if synced {
            Ok("synchronized".into())
        } else {
            Err((
                "the clock is not synchronized".into(),
                "apt-get install systemd-timesyncd && timedatectl set-ntp true".into(),
            ))
        },
    );
}

fn free_space(c: &mut Checks, dir: &Path) {
    match nix::sys::statvfs::statvfs(dir) {
        Ok(s) => {
            let free = s.blocks_available().saturating_mul(s.fragment_size());
            let gib = free as f64 / f64::from(1u32 << 30);
            let enough = free >= 1 << 30;
            c.add(
                "free space",
                true,
                if enough {
                    Ok(format!("{gib:.1} GiB free in {}", dir.display()))
                } else {
                    Err((
                        format!("{gib:.1} GiB free in {}", dir.display()),
                        "free space or move data_dir to a larger filesystem".into(),
                    ))
                },
            );
        }
        Err(e) => {
            c.add("free space", true, Err((format!("statvfs {}: {e}", dir.display()), "make data_dir exist".into())))
        }
    }
}

fn udev_rules(c: &mut Checks, file: &'static str, name: &'static str) {
    let paths = [
        format!("/etc/udev/rules.d/{file}"),
        format!("/lib/udev/rules.d/{file}"),
        format!("/usr/lib/udev/rules.d/{file}"),
    ];
    let found = paths.iter().find(|p| Path::new(p).exists());
    c.add(
        name,
        false,
        match found {
            Some(p) => Ok(format!("{p} keeps the host's storage stack off ember's devices")),
            None => Err((
                format!("{file} is not installed: the host may scan guests' disks"),
                format!("install -m 0644 udev/{file} /etc/udev/rules.d/ && udevadm control --reload"),
            )),
        },
    );
}

fn file_pool(c: &mut Checks, dir: &Path) {
    let loop_ok = Path::new("/dev/loop-control").exists();
    c.add(
        "loop",
        true,
        if loop_ok {
            Ok("/dev/loop-control".into())
        } else {
            Err(("the file pool attaches volumes as loop devices".into(), "modprobe loop".into()))
        },
    );
    free_space(c, dir);
    udev_rules(c, "60-ember.rules", "udev rules");
}

fn lvm_pool(c: &mut Checks, lvm: &LvmConfig) {
    let dm = Path::new("/dev/mapper/control").exists();
    c.add(
        "device-mapper",
        true,
        if dm {
            Ok("/dev/mapper/control".into())
        } else {
            Err(("the lvm pool needs device-mapper".into(), "modprobe dm_mod".into()))
        },
    );
    let tool = cmd::resolve("lvm");
    c.add(
        "lvm2",
        true,
        match &tool {
            Ok(p) => Ok(p.display().to_string()),
            Err(e) => Err((e.to_string(), "apt-get install lvm2".into())),
        },
    );
    let vg = lvm.volume_group.as_str();
    if let Ok(lvm_bin) = &tool {
        let probe = cmd::run(
            lvm_bin,
            &["vgs", "--noheadings", "--units", "g", "-o", "vg_free", vg],
            std::time::Duration::from_secs(20),
        );
        c.add(
            "volume group",
            true,
            match probe {
                Ok(out) => Ok(format!("{vg}: {} free", out.trim())),
                Err(_) => Err((format!("volume group {vg} is not usable"), format!("vgcreate {vg} /dev/<disk>"))),
            },
        );
        if lvm.lvm_type == LvmType::Thin {
            let thin = cmd::run(
                lvm_bin,
                &["lvs", "--noheadings", "-o", "lv_name", &format!("{vg}/{}", lvm.thin_pool)],
                std::time::Duration::from_secs(20),
            );
            c.add(
                "thin pool",
                true,
                match (thin, lvm.create_thin_pool) {
                    (Ok(_), _) => Ok(format!("{vg}/{}", lvm.thin_pool)),
                    (Err(_), Some(share)) => {
                        Ok(format!("{vg}/{} is created at start from {:.0}% of the VG", lvm.thin_pool, share * 100.0))
                    }
                    (Err(_), None) => Err((
                        format!("thin pool {vg}/{} does not exist", lvm.thin_pool),
                        format!("lvcreate -T -l 90%VG {vg}/{} (or set create_thin_pool)", lvm.thin_pool),
                    )),
                },
            );
        }
    }
    if lvm.lvm_type == LvmType::Thin {
        let tools = cmd::resolve("thin_check");
        c.add(
            "thin tools",
            true,
            match tools {
                Ok(p) => Ok(format!("{} (LVM checks thin pools with it)", p.display())),
                Err(_) => Err((
                    "thin_check is missing: LVM cannot activate thin pools".into(),
                    "apt-get install thin-provisioning-tools".into(),
                )),
            },
        );
    }
    let conf = std::fs::read_to_string("/etc/lvm/lvm.conf").unwrap_or_default();
    let filtered = conf
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .any(|l| l.contains("global_filter") && l.contains("volume-"));
    let mangled = vg.replace('-', "--");
    c.add("lvm.conf filter", false, if filtered || lvm.lvm_system_dir.is_some() { Ok("the host's LVM does not scan ember's volumes".into()) } else { Err(("/etc/lvm/lvm.conf has no global_filter rejecting ember's volumes: the host may activate guests' PVs".into(), format!("devices {{ global_filter = [ \"r|^/dev/mapper/{mangled}-volume--.*|\", \"r|^/dev/{vg}/volume-.*|\", \"a|.*|\" ] }} in /etc/lvm/lvm.conf"))) });
    udev_rules(c, "57-ember-lvm.rules", "udev rules");
}

fn targets(c: &mut Checks, cfg: &Config) {
    let t = &cfg.target;
    let want_lio = matches!(t.iscsi, IscsiBackend::Lio | IscsiBackend::Auto);
    let want_nvmet = matches!(t.nvme, NvmeBackend::Nvmet | NvmeBackend::Auto);
    if want_lio || want_nvmet {
        let required = t.iscsi == IscsiBackend::Lio || t.nvme == NvmeBackend::Nvmet;
        c.add(
            "configfs",
            required,
            if filesystem_known("configfs") && Path::new(crate::target::configfs::ROOT).is_dir() {
                Ok(crate::target::configfs::ROOT.to_string())
            } else {
                Err((
                    "LIO and nvmet are configured through configfs".into(),
                    "modprobe configfs && mount -t configfs none /sys/kernel/config".into(),
                ))
            },
        );
    }
    if want_lio {
        let required = t.iscsi == IscsiBackend::Lio;
        for (name, module) in
            [("target_core", "target_core_mod"), ("iblock", "target_core_iblock"), ("iscsi_target", "iscsi_target_mod")]
        {
            c.add(
                name,
                required,
                if module_loaded(module) {
                    Ok(format!("{module} is loaded"))
                } else {
                    Err((format!("LIO needs {module}"), format!("modprobe {module}")))
                },
            );
        }
    }
    if want_nvmet {
        let required = t.nvme == NvmeBackend::Nvmet;
        for (name, module) in [("nvmet", "nvmet"), ("nvmet-tcp", "nvmet_tcp")] {
            c.add(
                name,
                required,
                if module_loaded(module) {
                    Ok(format!("{module} is loaded"))
                } else {
                    Err((format!("NVMe-oF/TCP exports need {module}"), format!("modprobe {module}")))
                },
            );
        }
    }
    let backends = crate::target::availability(t);
    let ready = |name: &str| backends.iter().find(|b| b.name == name).map(|b| b.ready.clone());
    if matches!(t.iscsi, IscsiBackend::Tgt | IscsiBackend::Auto) {
        if let Some(state) = ready("tgt") {
            c.add(
                "tgtd",
                t.iscsi == IscsiBackend::Tgt,
                state.map_err(|why| (why, "apt-get install tgt && systemctl enable --now tgt".into())),
            );
        }
    }
    let serves = |names: &[&str]| backends.iter().find(|b| names.contains(&b.name) && b.ready.is_ok()).map(|b| b.name);
    let iscsi = match t.iscsi {
        IscsiBackend::None => None,
        IscsiBackend::Tgt => serves(&["tgt"]),
        IscsiBackend::Lio => serves(&["lio"]),
        IscsiBackend::Auto => serves(&["lio"]).or(serves(&["tgt"])),
    };
    let nvme = match t.nvme {
        NvmeBackend::None => None,
        NvmeBackend::Nvmet | NvmeBackend::Auto => serves(&["nvmet"]),
    };
    let off = |which: &str| {
        (
            format!("no {which} exports (set [target] {} = \"none\" to say so)", which.to_lowercase()),
            "see the checks above".to_string(),
        )
    };
    if t.iscsi != IscsiBackend::None {
        c.add(
            "iscsi",
            t.iscsi != IscsiBackend::Auto,
            iscsi.map(|b| format!("iSCSI exports through {b}")).ok_or_else(|| off("iSCSI")),
        );
    }
    if t.nvme != NvmeBackend::None {
        c.add(
            "nvmeof",
            t.nvme != NvmeBackend::Auto,
            nvme.map(|b| format!("NVMe-oF exports through {b}")).ok_or_else(|| off("NVMe")),
        );
    }
}

/// Whether everything the configuration needs is there.
pub fn healthy(checks: &[Check]) -> bool {
    checks.iter().all(|c| c.ok || !c.required)
}
