//! `ember doctor`: what this host can do, and how to get what it lacks.

use std::path::Path;
use std::time::Duration;

use crate::cmd;

pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

fn module_loaded(name: &str) -> bool {
    Path::new("/sys/module").join(name).exists()
}

fn filesystem_known(name: &str) -> bool {
    std::fs::read_to_string("/proc/filesystems")
        .map(|t| t.lines().any(|l| l.split_whitespace().last() == Some(name)))
        .unwrap_or(false)
}

pub fn checks(data_dir: &Path) -> Vec<Check> {
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
    add(
        "target_core",
        module_loaded("target_core_mod"),
        "LIO iSCSI target: modprobe target_core_mod iscsi_target_mod".into(),
    );
    add("nvmet", module_loaded("nvmet"), "NVMe-oF/TCP target: modprobe nvmet nvmet_tcp".into());
    add("device-mapper", Path::new("/dev/mapper/control").exists(), "lvm pool: device-mapper (modprobe dm_mod)".into());
    match cmd::resolve("lvm") {
        Ok(p) => add("lvm2", true, p.display().to_string()),
        Err(e) => add("lvm2", false, format!("{e}: apt-get install lvm2 thin-provisioning-tools")),
    }
    match cmd::resolve("tgtadm") {
        Ok(p) => {
            let running = cmd::run(&p, &["--lld", "iscsi", "--mode", "system", "--op", "show"], Duration::from_secs(5));
            add(
                "tgtd",
                running.is_ok(),
                match running {
                    Ok(_) => "tgtd answers".into(),
                    Err(e) => format!("tgtd not answering ({e}); start it: tgtd"),
                },
            );
        }
        Err(e) => add("tgtd", false, format!("{e}: apt-get install tgt")),
    }
    out
}
