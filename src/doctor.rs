//! `ember doctor`: what this host can do, and how to get what it lacks.

use std::path::Path;

use crate::cmd;
use crate::config::{IscsiBackend, NvmeBackend, TargetConfig};

pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

fn filesystem_known(name: &str) -> bool {
    std::fs::read_to_string("/proc/filesystems")
        .map(|t| t.lines().any(|l| l.split_whitespace().last() == Some(name)))
        .unwrap_or(false)
}

pub fn checks(data_dir: &Path, target: &TargetConfig) -> Vec<Check> {
    let mut out = Vec::new();
    let mut add = |name, ok, detail: String| out.push(Check { name, ok, detail });
    add("root", nix::unistd::geteuid().is_root(), "loop devices, LVM and configfs need root".into());
    add("loop", Path::new("/dev/loop-control").exists(), "file pool: /dev/loop-control (modprobe loop)".into());
    add(
        "data dir",
        std::fs::create_dir_all(data_dir).is_ok(),
        format!("{} must be creatable and writable", data_dir.display()),
    );
    add(
        "libblkid",
        crate::blockdev::blkid::probe(Path::new("/proc/self/exe")).is_ok(),
        "signature probing through libblkid".into(),
    );
    add("configfs", filesystem_known("configfs"), "LIO and nvmet targets: configfs (modprobe configfs)".into());
    add("device-mapper", Path::new("/dev/mapper/control").exists(), "lvm pool: device-mapper (modprobe dm_mod)".into());
    match cmd::resolve("lvm") {
        Ok(p) => add("lvm2", true, p.display().to_string()),
        Err(e) => add("lvm2", false, format!("{e}: apt-get install lvm2 thin-provisioning-tools")),
    }
    let targets = crate::target::availability(target);
    for t in &targets {
        add(t.name, t.ready.is_ok(), t.ready.clone().unwrap_or_else(|why| why));
    }
    let serves = |names: &[&str]| targets.iter().find(|t| names.contains(&t.name) && t.ready.is_ok()).map(|t| t.name);
    let iscsi = match target.iscsi {
        IscsiBackend::None => None,
        IscsiBackend::Tgt => serves(&["tgt"]),
        IscsiBackend::Lio => serves(&["lio"]),
        IscsiBackend::Auto => serves(&["lio"]).or(serves(&["tgt"])),
    };
    let nvme = match target.nvme {
        NvmeBackend::None => None,
        NvmeBackend::Nvmet | NvmeBackend::Auto => serves(&["nvmet"]),
    };
    add("iscsi", iscsi.is_some(), format!("iSCSI exports through: {}", iscsi.unwrap_or("nothing ([target] iscsi)")));
    add("nvmeof", nvme.is_some(), format!("NVMe-oF exports through: {}", nvme.unwrap_or("nothing ([target] nvme)")));
    out
}
