//! Real-kernel tier: runs inside the test VM (`scripts/vm-test`), where the kernel
//! has device-mapper, and checks the LVM pool, thick and thin, on a volume group
//! built from a loop-backed PV: every pool operation with bytes written and read
//! back, then the API scenario against `ember serve` configured with the pool.
//!
//! Every test here is named `vm_*`; the host's test run skips them and runs them
//! in one VM boot (`cargo test --test vm` with the VM as the cargo runner). Outside
//! a VM with device-mapper they fail loudly rather than pass.

mod common;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::Agent;
use ember::blockdev::{block_device_size, loopback};
use ember::cmd;
use ember::config::{LvmConfig, LvmType, VolumeClear};
use ember::pool::lvm::LvmPool;
use ember::pool::{Created, GIB, Pool, Removed, Resized, Source};
use serde_json::json;

/// lvm.conf for a host without udev (the VM): LVM makes its own device nodes and
/// never waits for udev events.
const LVM_CONF: &str = "devices { obtain_device_list_from_udev = 0 external_device_info_source = \"none\" \
     use_devicesfile = 0 }\nactivation { udev_sync = 0 udev_rules = 0 verify_udev_operations = 1 monitoring = 0 }\n\
     global { use_lvmpolld = 0 }\n";

/// Where the PV images live: an ext4 filesystem made on the VM's scratch disk
/// ($EMBER_VM_DISK, attached by scripts/vm-test). Not the guest's tmpfs: it holds
/// 1 GiB at most and has no FALLOC_FL_ZERO_RANGE, which BLKZEROOUT on a loop device
/// needs, so zeroing a thick LV there would fill the guest's memory.
fn scratch_dir() -> PathBuf {
    static SCRATCH: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    SCRATCH
        .get_or_init(|| {
            let disk = std::env::var("EMBER_VM_DISK").expect("EMBER_VM_DISK: run through scripts/vm-test");
            let mnt = PathBuf::from("/run/ember-scratch");
            std::fs::create_dir_all(&mnt).unwrap();
            let t = Duration::from_secs(300);
            cmd::run(&cmd::resolve("mkfs.ext4").unwrap(), &["-q", "-F", "-E", "nodiscard", &disk], t).unwrap();
            cmd::run(&cmd::resolve("mount").unwrap(), &[&disk, mnt.to_str().unwrap()], t).unwrap();
            mnt
        })
        .clone()
}

/// A volume group on a sparse file behind a loop device, removed on drop.
struct TestVg {
    name: String,
    dir: PathBuf,
    conf_dir: PathBuf,
    device: PathBuf,
}

impl TestVg {
    fn new(tag: &str) -> TestVg {
        assert!(Path::new("/dev/mapper/control").exists(), "no device-mapper: run through scripts/vm-test");
        let dir = scratch_dir().join(format!("ember-vg-{tag}"));
        std::fs::create_dir_all(&dir).unwrap();
        let conf_dir = dir.join("lvm");
        std::fs::create_dir_all(&conf_dir).unwrap();
        std::fs::write(conf_dir.join("lvm.conf"), LVM_CONF).unwrap();
        let image = dir.join("pv.img");
        std::fs::File::create(&image).unwrap().set_len(12 * GIB).unwrap();
        let device = loopback::attach(&image, false).unwrap().device;
        let vg = TestVg { name: format!("embertest-{tag}"), dir, conf_dir, device };
        vg.lvm(&["pvcreate", "-y", vg.device.to_str().unwrap()]);
        vg.lvm(&["vgcreate", "-y", &vg.name, vg.device.to_str().unwrap()]);
        vg
    }

    fn lvm(&self, args: &[&str]) -> String {
        let lvm = cmd::resolve("lvm").unwrap();
        let dir = self.conf_dir.display().to_string();
        cmd::run_with_env(&lvm, args, &[("LVM_SYSTEM_DIR", dir.as_str())], Duration::from_secs(120)).unwrap()
    }

    fn pool(&self, lvm_type: LvmType) -> LvmPool {
        LvmPool::open(&LvmConfig {
            volume_group: self.name.clone(),
            lvm_type,
            create_thin_pool: Some(0.6),
            lvm_system_dir: Some(self.conf_dir.clone()),
            ..LvmConfig::default()
        })
        .unwrap()
    }

    fn lv_names(&self) -> Vec<String> {
        let out = self.lvm(&["lvs", "--reportformat", "json", "-o", "lv_name", &self.name]);
        let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
        doc["report"][0]["lv"].as_array().unwrap().iter().map(|r| r["lv_name"].as_str().unwrap().to_string()).collect()
    }
}

impl Drop for TestVg {
    fn drop(&mut self) {
        let lvm = cmd::resolve("lvm").unwrap();
        let dir = self.conf_dir.display().to_string();
        let env = [("LVM_SYSTEM_DIR", dir.as_str())];
        let _ = cmd::run_with_env(&lvm, &["vgremove", "-ff", "-y", &self.name], &env, Duration::from_secs(120));
        let _ =
            cmd::run_with_env(&lvm, &["pvremove", "-y", self.device.to_str().unwrap()], &env, Duration::from_secs(60));
        let _ = loopback::detach(&self.device);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn write(dev: &Path, offset: u64, bytes: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(dev).unwrap();
    f.write_all_at(bytes, offset).unwrap();
    f.sync_all().unwrap();
}

fn read(dev: &Path, offset: u64, len: usize) -> Vec<u8> {
    let f = std::fs::File::open(dev).unwrap();
    let mut buf = vec![0; len];
    f.read_exact_at(&mut buf, offset).unwrap();
    buf
}

fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let v = f();
    eprintln!("  {what}: {:.2} s", t.elapsed().as_secs_f64());
    v
}

fn pool_scenario(lvm_type: LvmType, tag: &str) {
    let vg = TestVg::new(tag);
    let pool = timed("open pool", || vg.pool(lvm_type));
    assert_eq!(timed("create 1 GiB", || pool.create_volume("v1", 1, &Source::Blank)).unwrap(), Created::Created);
    assert_eq!(pool.create_volume("v1", 1, &Source::Blank).unwrap(), Created::AlreadyPresent);
    let dev = pool.attach_device("v1").unwrap();
    write(&dev, 0, b"first block");
    write(&dev, 700 << 20, b"deep data");

    let resized = timed("extend to 2 GiB", || pool.extend_volume("v1", 2)).unwrap();
    assert_eq!(resized, Resized::Resized { from: GIB, to: 2 * GIB });
    assert_eq!(block_device_size(&std::fs::File::open(&dev).unwrap()).unwrap(), 2 * GIB);
    assert_eq!(read(&dev, 700 << 20, 9), b"deep data", "extend kept the data");

    timed("snapshot", || pool.create_snapshot("s1", "v1")).unwrap();
    write(&dev, 0, b"OVERWRITTEN");
    write(&dev, (2 * GIB) - 4096, b"tail");
    timed("revert", || pool.revert_to_snapshot("v1", "s1")).unwrap();
    let dev = pool.attach_device("v1").unwrap();
    assert_eq!(read(&dev, 0, 11), b"first block", "revert restored the bytes");
    assert_eq!(read(&dev, (2 * GIB) - 4096, 4), vec![0u8; 4]);
    assert!(vg.lv_names().contains(&"snap-s1".to_string()), "the snapshot survives the revert");

    timed("clone from snapshot", || pool.create_volume("v2", 3, &Source::Snapshot { id: "s1".into() })).unwrap();
    let d2 = pool.attach_device("v2").unwrap();
    assert_eq!(read(&d2, 0, 11), b"first block");
    assert_eq!(read(&d2, 700 << 20, 9), b"deep data");
    assert_eq!(block_device_size(&std::fs::File::open(&d2).unwrap()).unwrap(), 3 * GIB);
    timed("clone from volume", || pool.create_volume("v3", 2, &Source::Volume { id: "v1".into() })).unwrap();
    assert_eq!(read(&pool.attach_device("v3").unwrap(), 700 << 20, 9), b"deep data");

    let cap = pool.capacity().unwrap();
    assert!(cap.total_bytes > 0 && cap.free_bytes <= cap.total_bytes, "{cap:?}");
    assert!(cap.allocated_bytes > 0, "{cap:?}");
    if lvm_type == LvmType::Thin {
        assert!(cap.thin_data_hundredths.is_some_and(|d| d > 0), "{cap:?}");
        assert!(cap.thin_metadata_hundredths.is_some_and(|m| m > 0 && m < 10_000), "{cap:?}");
    }

    // Foreign LVs: listed, never touched, taken over only by manage.
    vg.lvm(&["lvcreate", "-y", "-L", "8m", "-n", "foreign", &vg.name]);
    let listed = pool.list_existing().unwrap();
    assert!(listed.iter().any(|m| m.name == "foreign"), "{listed:?}");
    assert!(!listed.iter().any(|m| m.name.starts_with("snap-") || m.name == "ember-pool"), "{listed:?}");
    assert_eq!(pool.manage_existing("foreign", "v4").unwrap(), GIB, "rounded up to whole GiB");
    pool.unmanage("v4").unwrap();
    assert!(pool.delete_volume("v4").is_err(), "an LV without ember's tags is never deleted");

    assert_eq!(timed("delete snapshot", || pool.delete_snapshot("s1")).unwrap(), Removed::Removed);
    for v in ["v1", "v2", "v3"] {
        assert_eq!(timed("delete (zero)", || pool.delete_volume(v)).unwrap(), Removed::Removed);
    }
    assert_eq!(pool.delete_volume("v1").unwrap(), Removed::Absent);
    let left: Vec<String> =
        vg.lv_names().into_iter().filter(|n| n.starts_with("volume-v") || n.starts_with("snap-")).collect();
    assert_eq!(left, vec!["volume-v4".to_string()], "only the unmanaged LV stays");

    // What a deleted volume held must not reach the next one.
    pool.create_volume("w1", 1, &Source::Blank).unwrap();
    let dw = pool.attach_device("w1").unwrap();
    write(&dw, 4 << 20, &[0xa5; 65536]);
    pool.delete_volume("w1").unwrap();
    pool.create_volume("w2", 1, &Source::Blank).unwrap();
    let fresh = read(&pool.attach_device("w2").unwrap(), 4 << 20, 65536);
    assert!(fresh.iter().all(|b| *b == 0), "old data visible in a new volume");
    pool.delete_volume("w2").unwrap();
}

#[test]
fn vm_lvm_pool_thick() {
    pool_scenario(LvmType::Thick, "thick");
}

#[test]
fn vm_lvm_pool_thin() {
    pool_scenario(LvmType::Thin, "thin");
}

fn api_scenario(lvm_type: LvmType, tag: &str) {
    let vg = TestVg::new(tag);
    let data_dir = vg.dir.join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let config = format!(
        "[pool]\nbackend = \"lvm\"\nbackend_name = \"lvm\"\nvolume_group = \"{}\"\nlvm_type = \"{}\"\n\
         create_thin_pool = 0.6\nlvm_system_dir = \"{}\"\nmax_over_subscription_ratio = 4.0\n",
        vg.name,
        if lvm_type == LvmType::Thin { "thin" } else { "thick" },
        vg.conf_dir.display()
    );
    let agent = Agent::start_with(&data_dir, Some(&config));
    let (code, body) = agent.call("POST", "/volumes", Some(json!({"volume": {"size": 1}})), None);
    assert_eq!(code, 202, "{body}");
    let id = body["volume"]["id"].as_str().unwrap().to_string();
    let v = agent.wait_status("volumes", &id, "available");
    let host = v["os-vol-host-attr:host"].as_str().unwrap().to_string();
    assert!(host.ends_with(&format!("@lvm#{}", vg.name)), "{host}");
    let dev = PathBuf::from(format!("/dev/mapper/{}-volume--{}", vg.name.replace('-', "--"), id.replace('-', "--")));
    write(&dev, 1 << 20, b"api bytes");

    let (code, body) =
        agent.call("POST", &format!("/volumes/{id}/action"), Some(json!({"os-extend": {"new_size": 2}})), None);
    assert_eq!(code, 202, "{body}");
    assert_eq!(agent.wait_status("volumes", &id, "available")["size"], 2);
    let (code, body) = agent.call("POST", "/snapshots", Some(json!({"snapshot": {"volume_id": id}})), None);
    assert_eq!(code, 202, "{body}");
    let snap = body["snapshot"]["id"].as_str().unwrap().to_string();
    agent.wait_status("snapshots", &snap, "available");
    write(&dev, 1 << 20, b"XXX XXXXX");
    let (code, body) = agent.call(
        "POST",
        &format!("/volumes/{id}/action"),
        Some(json!({"revert": {"snapshot_id": snap}})),
        Some("3.40"),
    );
    assert_eq!(code, 202, "{body}");
    agent.wait_status("volumes", &id, "available");
    assert_eq!(read(&dev, 1 << 20, 9), b"api bytes");
    // Bad input never reaches the pool (the full sweep runs on the host tier).
    let lvs_before = vg.lv_names();
    for (body, version, want) in [
        (json!({"os-extend": {"new_size": 1}}), None, 400),
        (json!({"os-extend": {"new_size": "abc"}}), None, 400),
        (json!({"os-extend": {"new_size": 3}, "os-reserve": null}), None, 400),
        (json!({"os-bogus": {}}), None, 400),
        (json!({"revert": {"snapshot_id": snap}}), None, 404),
        (json!({"os-reset_status": {"status": "deleting"}}), None, 400),
    ] {
        let (code, reply) = agent.call("POST", &format!("/volumes/{id}/action"), Some(body.clone()), version);
        assert_eq!(code, want, "{body} -> {reply}");
        assert!(reply.as_object().is_some_and(|o| o.len() == 1), "fault body: {reply}");
    }
    let (code, _) = agent.call("POST", "/volumes", Some(json!({"volume": {"size": 0}})), None);
    assert_eq!(code, 400);
    let (code, stats) = agent.call("GET", "/scheduler-stats/get_pools?detail=true", None, None);
    assert_eq!(code, 200);
    let caps = &stats["pools"][0]["capabilities"];
    assert!(caps["total_capacity_gb"].as_f64().unwrap() > 0.0, "{stats}");
    assert_eq!(caps["thin_pool_metadata_percent"].is_null(), lvm_type == LvmType::Thick, "{stats}");
    // Requests the pool cannot hold are refused whole: nothing half-made.
    let (code, body) = agent.call("POST", "/volumes", Some(json!({"volume": {"size": 1000}})), None);
    assert_eq!(code, 413, "{body}");
    assert!(body["overLimit"]["message"].as_str().unwrap().contains("capacity"), "{body}");
    let (code, body) =
        agent.call("POST", &format!("/volumes/{id}/action"), Some(json!({"os-extend": {"new_size": 1000}})), None);
    assert_eq!(code, 413, "{body}");
    let v = agent.wait_status("volumes", &id, "available");
    assert_eq!(v["size"], 2, "a refused extend changes nothing");
    assert_eq!(vg.lv_names(), lvs_before, "no LV made or resized by a refused request");
    let (code, body) = agent.call("DELETE", &format!("/volumes/{id}?cascade=true"), None, None);
    assert_eq!(code, 202, "{body}");
    agent.wait_status("volumes", &id, "gone");
    agent.stop();
    let ours: Vec<String> =
        vg.lv_names().into_iter().filter(|n| n.starts_with("volume-") || n.starts_with("snap-")).collect();
    assert!(ours.is_empty(), "LVs left behind: {ours:?}");
}

#[test]
fn vm_api_on_lvm_thick() {
    api_scenario(LvmType::Thick, "apithick");
}

#[test]
fn vm_api_on_lvm_thin() {
    api_scenario(LvmType::Thin, "apithin");
}

/// ember's udev rules under a real udevd: each volume LV gets its by-id name, and
/// what a guest writes inside is not surfaced on the host (no blkid, no
/// /dev/disk/by-uuid link, LVM's scanning rules disabled). Uses the host's default
/// lvm.conf, udev-synced, as a production host would.
#[test]
fn vm_udev_rules_keep_the_host_off_volumes() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::create_dir_all("/etc/udev/rules.d").unwrap();
    std::fs::copy(repo.join("udev/57-ember-lvm.rules"), "/etc/udev/rules.d/57-ember-lvm.rules").unwrap();
    let t = Duration::from_secs(60);
    if !Path::new("/run/udev/control").exists() {
        cmd::run(Path::new("/lib/systemd/systemd-udevd"), &["--daemon"], t).unwrap();
    }
    let udevadm = cmd::resolve("udevadm").unwrap();
    cmd::run(&udevadm, &["control", "--reload"], t).unwrap();

    let vg = TestVg::new("udev");
    let config = LvmConfig { volume_group: vg.name.clone(), volume_clear: VolumeClear::None, ..LvmConfig::default() };
    let pool = LvmPool::open(&config).unwrap();
    let id = "0b6c1a4e-1111-4222-8333-444455556666";
    pool.create_volume(id, 1, &Source::Blank).unwrap();
    let dev = pool.attach_device(id).unwrap();
    // A guest puts a filesystem on its disk.
    cmd::run(
        &cmd::resolve("mkfs.ext4").unwrap(),
        &["-q", "-F", "-U", "9f7e5c3a-aaaa-4bbb-8ccc-ddddeeeeffff", dev.to_str().unwrap()],
        t,
    )
    .unwrap();
    cmd::run(&udevadm, &["trigger", "--settle", "--action=change", dev.to_str().unwrap()], t).unwrap();
    cmd::run(&udevadm, &["settle", "--timeout=30"], t).unwrap();

    let by_id = PathBuf::from(format!("/dev/disk/by-id/ember-volume-{id}"));
    assert_eq!(std::fs::canonicalize(&by_id).unwrap(), std::fs::canonicalize(&dev).unwrap(), "stable name");
    assert!(
        !Path::new("/dev/disk/by-uuid/9f7e5c3a-aaaa-4bbb-8ccc-ddddeeeeffff").exists(),
        "the guest's filesystem surfaced on the host"
    );
    let props = cmd::run(&udevadm, &["info", "--query=property", dev.to_str().unwrap()], t).unwrap();
    for want in ["DM_UDEV_DISABLE_OTHER_RULES_FLAG=1", "DM_UDEV_DISABLE_DISK_RULES_FLAG=1", "UDISKS_IGNORE=1"] {
        assert!(props.lines().any(|l| l == want), "{want} missing:\n{props}");
    }
    assert!(!props.lines().any(|l| l.starts_with("ID_FS_TYPE=")), "udev probed the guest's data:\n{props}");
    pool.delete_volume(id).unwrap();
}
