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

    /// The LV's tags, as `lvs` reports them.
    fn lv_tags(&self, lv: &str) -> Vec<String> {
        let out = self.lvm(&["lvs", "--reportformat", "json", "-o", "lv_tags", &format!("{}/{lv}", self.name)]);
        let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
        let tags = doc["report"][0]["lv"][0]["lv_tags"].as_str().unwrap().to_string();
        tags.split(',').filter(|t| !t.is_empty()).map(str::to_string).collect()
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
    // Reverts the volume to `snap` (3.40) and waits until it is available again.
    let revert = |snap: &str| {
        let (code, body) = agent.call(
            "POST",
            &format!("/volumes/{id}/action"),
            Some(json!({"revert": {"snapshot_id": snap}})),
            Some("3.40"),
        );
        assert_eq!(code, 202, "{body}");
        agent.wait_status("volumes", &id, "available");
    };
    revert(&snap);
    assert_eq!(read(&dev, 1 << 20, 9), b"api bytes");

    // Snapshot unmanage: the LV stays as snap-<id>, without ember's tags, and is
    // listed by manageable_snapshots with its origin; a foreign name is managed
    // back (renamed snap-<new id> and tagged), refused for another volume.
    let (code, body) =
        agent.call("POST", &format!("/snapshots/{snap}/action"), Some(json!({"os-unmanage": null})), None);
    assert_eq!(code, 202, "{body}");
    agent.wait_status("snapshots", &snap, "gone");
    assert!(vg.lv_names().contains(&format!("snap-{snap}")));
    assert!(vg.lv_tags(&format!("snap-{snap}")).is_empty(), "{:?}", vg.lv_tags(&format!("snap-{snap}")));
    let quoted_host = host.replace('#', "%23");
    let (code, list) =
        agent.call("GET", &format!("/manageable_snapshots/detail?host={quoted_host}"), None, Some("3.8"));
    assert_eq!(code, 200, "{list}");
    let entry = list["manageable-snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["reference"]["source-name"] == format!("snap-{snap}"))
        .unwrap_or_else(|| panic!("not listed: {list}"))
        .clone();
    assert_eq!(entry["safe_to_manage"], true, "{entry}");
    assert_eq!(entry["source_reference"]["source-name"], format!("volume-{id}"), "{entry}");
    vg.lvm(&["lvrename", &vg.name, &format!("snap-{snap}"), "foreign-snap"]);
    let (code, body) = agent.call("POST", "/volumes", Some(json!({"volume": {"size": 2}})), None);
    assert_eq!(code, 202, "{body}");
    let other = body["volume"]["id"].as_str().unwrap().to_string();
    agent.wait_status("volumes", &other, "available");
    let manage = |volume: &str| json!({"snapshot": {"volume_id": volume, "ref": {"source-name": "foreign-snap"}, "name": "back"}});
    let (code, body) = agent.call("POST", "/manageable_snapshots", Some(manage(&other)), Some("3.8"));
    assert_eq!(code, 400, "{body}");
    assert!(body["badRequest"]["message"].as_str().unwrap().contains("is a snapshot of"), "{body}");
    let (code, body) = agent.call("POST", "/manageable_snapshots", Some(manage(&id)), Some("3.8"));
    assert_eq!(code, 202, "{body}");
    let snap = body["snapshot"]["id"].as_str().unwrap().to_string();
    agent.wait_status("snapshots", &snap, "available");
    let names = vg.lv_names();
    assert!(names.contains(&format!("snap-{snap}")) && !names.contains(&"foreign-snap".to_string()), "{names:?}");
    let mut tags = vg.lv_tags(&format!("snap-{snap}"));
    tags.sort();
    assert_eq!(tags, ["ember".to_string(), format!("ember.snapshot={snap}")]);
    write(&dev, 1 << 20, b"YYY YYYYY");
    revert(&snap);
    assert_eq!(read(&dev, 1 << 20, 9), b"api bytes", "the managed snapshot holds the bytes");
    let (code, body) = agent.call("DELETE", &format!("/volumes/{other}"), None, None);
    assert_eq!(code, 202, "{body}");
    agent.wait_status("volumes", &other, "gone");

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
    timed("images: create from qcow2, reimage from raw (and upload, thick)", || {
        image_scenario(&agent, &vg, &data_dir, lvm_type == LvmType::Thick)
    });
    agent.stop();
    let ours: Vec<String> =
        vg.lv_names().into_iter().filter(|n| n.starts_with("volume-") || n.starts_with("snap-")).collect();
    assert!(ours.is_empty(), "LVs left behind: {ours:?}");
}

/// The image paths on LVM (the host tier covers the file pool): a compressed
/// qcow2 and a sparse raw image made and converted by qemu-img (the reference),
/// written onto LVs through O_DIRECT, every byte compared, and an upload whose
/// checksum matches the LV's bytes.
/// The upload (the same device read on both; hashing 1 GiB under the VM's
/// emulated CPU takes a minute) runs on thick only.
fn image_scenario(agent: &Agent, vg: &TestVg, data_dir: &Path, upload: bool) {
    use ember::image::cli::{Import, import};
    use ember::image::{Visibility, dir::DirStore};
    let work = vg.dir.join("images-work");
    std::fs::create_dir_all(&work).unwrap();
    let raw = work.join("disk.raw");
    let f = std::fs::File::create(&raw).unwrap();
    f.set_len(24 << 20).unwrap();
    let pattern: Vec<u8> = (0..(3u32 << 20)).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    f.write_all_at(&pattern, (1 << 20) + 512).unwrap();
    f.write_all_at(b"the end of the image", (24 << 20) - 20).unwrap();
    drop(f);
    let qemu_img = cmd::resolve("qemu-img").expect("qemu-img (the host's, through the 9p root)");
    let t = Duration::from_secs(120);
    let qcow2 = work.join("disk.qcow2");
    let arg = |p: &Path| p.to_str().unwrap().to_string();
    cmd::run(&qemu_img, &["convert", "-f", "raw", "-O", "qcow2", "-c", &arg(&raw), &arg(&qcow2)], t).unwrap();
    let reference = work.join("reference.raw");
    cmd::run(&qemu_img, &["convert", "-f", "qcow2", "-O", "raw", &arg(&qcow2), &arg(&reference)], t).unwrap();
    let want = std::fs::read(&reference).unwrap();
    assert_eq!(want, std::fs::read(&raw).unwrap(), "qemu-img's round trip");
    let store = DirStore::open(&data_dir.join("images")).unwrap();
    let imported = |path: &Path| {
        let req = Import {
            file: path,
            name: None,
            disk_format: None,
            visibility: Visibility::Public,
            project: "admin".into(),
            min_disk: 0,
            protected: false,
            progress: false,
        };
        import(&store, &req).unwrap().id
    };
    let (qcow2_id, raw_id) = (imported(&qcow2), imported(&raw));
    let device = |id: &str| {
        PathBuf::from(format!("/dev/mapper/{}-volume--{}", vg.name.replace('-', "--"), id.replace('-', "--")))
    };
    // The image's bytes, then zeros in samples of the rest of the 1 GiB volume.
    let holds = |dev: &Path, what: &str| {
        assert!(read(dev, 0, want.len()) == want, "{what}: the LV differs from qemu-img's conversion");
        for at in [want.len() as u64, 100 << 20, 700 << 20, GIB - (1 << 20)] {
            assert!(read(dev, at, 1 << 20).iter().all(|&b| b == 0), "{what}: non-zero bytes at {at}");
        }
    };
    let (code, body) = agent.call("POST", "/volumes", Some(json!({"volume": {"size": 1, "imageRef": qcow2_id}})), None);
    assert_eq!(code, 202, "{body}");
    let vid = body["volume"]["id"].as_str().unwrap().to_string();
    let v = agent.wait_status("volumes", &vid, "available");
    assert_eq!(v["bootable"], "true", "{v}");
    assert_eq!(v["volume_image_metadata"]["image_id"], qcow2_id.as_str(), "{v}");
    holds(&device(&vid), "create from compressed qcow2");
    // Old data, inside and past the image, gone after a reimage from raw.
    write(&device(&vid), 2 << 20, &[0xee; 4096]);
    write(&device(&vid), 700 << 20, b"old tenant data");
    let (code, body) = agent.call(
        "POST",
        &format!("/volumes/{vid}/action"),
        Some(json!({"os-reimage": {"image_id": raw_id}})),
        Some("3.68"),
    );
    assert_eq!(code, 202, "{body}");
    wait_until(120, "reimage", || {
        let (_, v) = agent.call("GET", &format!("/volumes/{vid}"), None, None);
        (v["volume"]["status"] == "available" && v["volume"]["volume_image_metadata"]["image_id"] == raw_id.as_str())
            .then_some(())
    });
    holds(&device(&vid), "reimage from sparse raw");
    if !upload {
        let (code, body) = agent.call("DELETE", &format!("/volumes/{vid}"), None, None);
        assert_eq!(code, 202, "{body}");
        agent.wait_status("volumes", &vid, "gone");
        return;
    }
    let (code, body) = agent.call(
        "POST",
        &format!("/volumes/{vid}/action"),
        Some(json!({"os-volume_upload_image": {"image_name": "up"}})),
        None,
    );
    assert_eq!(code, 202, "{body}");
    let image_id = body["os-volume_upload_image"]["image_id"].as_str().unwrap().to_string();
    // Hashing 1 GiB twice (md5, sha512) is slow under the VM's emulated CPU.
    timed("upload of 1 GiB", || {
        wait_until(900, "upload", || {
            let (_, v) = agent.call("GET", &format!("/volumes/{vid}"), None, None);
            (v["volume"]["status"] == "available").then_some(())
        })
    });
    let stored = data_dir.join("images").join(&image_id);
    let md5sum = |p: &Path| cmd::run(&cmd::resolve("md5sum").unwrap(), &[p.to_str().unwrap()], t).unwrap();
    let record: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(data_dir.join("images").join(format!("{image_id}.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(record["status"], "active", "{record}");
    let lv_md5 = md5sum(&device(&vid)).split_whitespace().next().unwrap().to_string();
    assert_eq!(record["checksum"], lv_md5.as_str(), "the upload's md5 is the LV's");
    assert_eq!(md5sum(&stored).split_whitespace().next().unwrap(), lv_md5, "the stored image is the LV's bytes");
    let (code, body) = agent.call("DELETE", &format!("/volumes/{vid}"), None, None);
    assert_eq!(code, 202, "{body}");
    agent.wait_status("volumes", &vid, "gone");
}

#[test]
fn vm_api_on_lvm_thick() {
    api_scenario(LvmType::Thick, "apithick");
}

#[test]
fn vm_api_on_lvm_thin() {
    api_scenario(LvmType::Thin, "apithin");
}

/// Migration between the pools of one agent: a file pool, and a thick and a
/// thin LVM pool on one volume group. A sparse pattern goes file → thick →
/// thin → file by os-migrate_volume, then file → thick by a retype on-demand;
/// at each stop the bytes are the same, the host string names the pool, the
/// volume keeps its id, and the destination's LV carries the volume's tags.
#[test]
fn vm_migration_between_file_thick_and_thin() {
    let vg = TestVg::new("migrate");
    let data_dir = vg.dir.join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let lvm = |name: &str, kind: &str| {
        format!(
            "[[pools]]\nbackend = \"lvm\"\nbackend_name = \"{name}\"\nname = \"{name}\"\nvolume_group = \"{}\"\n\
             lvm_type = \"{kind}\"\ncreate_thin_pool = 0.5\nlvm_system_dir = \"{}\"\nvolume_clear = \"none\"\n\
             max_over_subscription_ratio = 4.0\n",
            vg.name,
            vg.conf_dir.display()
        )
    };
    let config = format!(
        "[[pools]]\nbackend_name = \"file\"\nname = \"file\"\npath = \"{}\"\n{}{}",
        vg.dir.join("files").display(),
        lvm("thick", "thick"),
        lvm("thin", "thin")
    );
    let agent = Agent::start_with(&data_dir, Some(&config));
    let (code, pools) = agent.call("GET", "/scheduler-stats/get_pools", None, None);
    assert_eq!(code, 200, "{pools}");
    let host = |backend: &str| {
        let names: Vec<String> =
            pools["pools"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap().to_string()).collect();
        names
            .iter()
            .find(|n| n.ends_with(&format!("@{backend}#{backend}")))
            .cloned()
            .unwrap_or_else(|| panic!("{names:?}"))
    };
    let pinned = |backend: &str| {
        let name = format!("on-{backend}");
        let (code, body) = agent.call(
            "POST",
            "/types",
            Some(json!({"volume_type": {"name": name,
            "extra_specs": {"volume_backend_name": backend}}})),
            None,
        );
        assert_eq!(code, 200, "{body}");
        name
    };
    let id = new_volume(&agent, json!({"size": 1, "volume_type": pinned("file")}));
    let file = vg.dir.join("files").join("volumes").join(format!("volume-{id}"));
    let pieces: [(u64, Vec<u8>); 3] =
        [(0, b"head".repeat(1024)), (512 << 20, vec![0x5a; 1 << 20]), (GIB - 4096, b"tail".repeat(1024))];
    for (offset, bytes) in &pieces {
        write(&file, *offset, bytes);
    }
    let lv_dev = |id: &str| {
        PathBuf::from(format!("/dev/mapper/{}-volume--{}", vg.name.replace('-', "--"), id.replace('-', "--")))
    };
    let holds = |dev: &Path| {
        for (offset, bytes) in &pieces {
            assert_eq!(&read(dev, *offset, bytes.len()), bytes, "{} at {offset}", dev.display());
        }
        assert_eq!(read(dev, 100 << 20, 4096), vec![0; 4096], "a hole stays zeros");
    };
    let migrated = |to: &str| {
        wait_until(300, &format!("the migration to {to}"), || {
            let (_, v) = agent.call("GET", &format!("/volumes/{id}"), None, None);
            (v["volume"]["migration_status"] == "success" && v["volume"]["status"] == "available").then_some(v)
        })
    };
    for to in ["thick", "thin", "file"] {
        let body = json!({"os-migrate_volume": {"host": host(to), "force_host_copy": false, "lock_volume": true}});
        let (code, reply) = agent.call("POST", &format!("/volumes/{id}/action"), Some(body), None);
        assert_eq!(code, 202, "{reply}");
        let v = timed(&format!("migrate to {to}"), || migrated(to));
        assert_eq!(v["volume"]["os-vol-host-attr:host"], host(to).as_str());
        let dev = if to == "file" { file.clone() } else { lv_dev(&id) };
        holds(&dev);
        if to != "file" {
            let mut tags = vg.lv_tags(&format!("volume-{id}"));
            tags.sort();
            assert_eq!(tags, ["ember".to_string(), format!("ember.volume={id}")]);
        }
        let names = vg.lv_names();
        assert_eq!(names.iter().filter(|n| n.starts_with("volume-")).count(), usize::from(to != "file"), "{names:?}");
    }
    let body = json!({"os-retype": {"new_type": pinned("thick"), "migration_policy": "on-demand"}});
    let (code, reply) = agent.call("POST", &format!("/volumes/{id}/action"), Some(body), None);
    assert_eq!(code, 202, "{reply}");
    let v = timed("retype on-demand to thick", || migrated("thick"));
    assert_eq!(v["volume"]["volume_type"], "on-thick");
    holds(&lv_dev(&id));
    assert!(!file.exists(), "the file pool gave the volume up");
    let (code, body) = agent.call("DELETE", &format!("/volumes/{id}"), None, None);
    assert_eq!(code, 202, "{body}");
    agent.wait_status("volumes", &id, "gone");
    agent.stop();
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

// ---- exports: LIO and nvmet, with the kernel's initiators and os-brick -----------

const T: Duration = Duration::from_secs(120);

#[track_caller]
fn sh(script: &str) -> String {
    match cmd::run(&cmd::resolve("sh").unwrap(), &["-c", script], T) {
        Ok(out) => out,
        Err(e) => {
            let dmesg = cmd::run(&cmd::resolve("dmesg").unwrap(), &[], T).unwrap_or_default();
            let tail: Vec<&str> = dmesg.lines().rev().take(15).collect();
            panic!("{script}: {e}\nkernel log:\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"))
        }
    }
}

fn sh_fails(script: &str) -> bool {
    cmd::run(&cmd::resolve("sh").unwrap(), &["-c", script], T).is_err()
}

/// Polls `f` for up to `secs` seconds.
fn wait_until<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn device_bytes(dev: &Path) -> u64 {
    block_device_size(&std::fs::File::open(dev).unwrap()).unwrap()
}

/// The block device an iSCSI session of `iqn` brought (the SCSI scan is async).
fn iscsi_device(iqn: &str) -> PathBuf {
    wait_until(30, "the iSCSI disk", || {
        for session in std::fs::read_dir("/sys/class/iscsi_session").ok()?.flatten() {
            let name = std::fs::read_to_string(session.path().join("targetname")).unwrap_or_default();
            if name.trim() != iqn {
                continue;
            }
            let dev = session.path().join("device");
            for target in std::fs::read_dir(&dev)
                .ok()?
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("target"))
            {
                for lun in std::fs::read_dir(target.path()).ok()?.flatten() {
                    if let Some(block) = std::fs::read_dir(lun.path().join("block")).ok().and_then(|mut d| d.next()) {
                        let node = PathBuf::from("/dev").join(block.ok()?.file_name());
                        if node.exists() {
                            return Some(node);
                        }
                    }
                }
            }
        }
        None
    })
}

/// The namespace block device of subsystem `nqn` whose uuid is `volume_id`.
fn nvme_device(nqn: &str, volume_id: &str) -> PathBuf {
    wait_until(30, "the NVMe namespace", || {
        for block in std::fs::read_dir("/sys/block").ok()?.flatten() {
            let name = block.file_name().to_string_lossy().into_owned();
            if !name.starts_with("nvme") {
                continue;
            }
            let uuid = std::fs::read_to_string(block.path().join("uuid")).unwrap_or_default();
            let subsys = std::fs::read_to_string(block.path().join("device/subsysnqn")).unwrap_or_default();
            if uuid.trim() == volume_id && subsys.trim() == nqn {
                return Some(PathBuf::from("/dev").join(name));
            }
        }
        None
    })
}

/// Writes 4 MiB of a pattern through `dev` with O_DIRECT, reads it back through
/// `dev` and straight from the LV, and compares.
fn pattern_through(dev: &Path, lv: &Path, seed: u8) {
    let pattern: Vec<u8> = (0..4u32 << 20).map(|i| i.to_le_bytes()[0].wrapping_mul(31).wrapping_add(seed)).collect();
    let file = std::env::temp_dir().join(format!("pattern-{seed}"));
    std::fs::write(&file, &pattern).unwrap();
    sh(&format!("dd if={} of={} bs=1M oflag=direct conv=fsync status=none", file.display(), dev.display()));
    sh(&format!("dd if={} bs=1M count=4 iflag=direct status=none | cmp - {}", dev.display(), file.display()));
    sh(&format!("dd if={} bs=1M count=4 iflag=direct status=none | cmp - {}", lv.display(), file.display()));
}

/// Whether this kernel's nvmet authenticates hosts (CONFIG_NVME_TARGET_AUTH).
fn kernel_has_nvmet_auth() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let config = std::fs::read_to_string(format!("/boot/config-{}", release.trim())).unwrap_or_default();
    config.lines().any(|l| l == "CONFIG_NVME_TARGET_AUTH=y" || l == "CONFIG_NVME_TARGET_AUTH=m")
}

/// Reads the device continuously (O_DIRECT) until `stop` exists; returns the
/// reader, whose exit status says whether any read failed.
fn reader(dev: &Path, stop: &Path) -> std::process::Child {
    std::process::Command::new("sh")
        .args([
            "-c",
            &format!(
                "while [ ! -e {stop} ]; do dd if={dev} of=/dev/null bs=1M count=64 iflag=direct status=none || exit 1; done",
                stop = stop.display(),
                dev = dev.display()
            ),
        ])
        .spawn()
        .unwrap()
}

fn action(agent: &Agent, id: &str, body: serde_json::Value, version: Option<&str>) -> serde_json::Value {
    let (code, reply) = agent.call("POST", &format!("/volumes/{id}/action"), Some(body.clone()), version);
    assert!((200..300).contains(&code), "{body} -> {code} {reply}");
    reply
}

fn new_volume(agent: &Agent, body: serde_json::Value) -> String {
    let (code, reply) = agent.call("POST", "/volumes", Some(json!({"volume": body})), None);
    assert_eq!(code, 202, "{reply}");
    let id = reply["volume"]["id"].as_str().unwrap().to_string();
    agent.wait_status("volumes", &id, "available");
    id
}

/// LIO and nvmet built by ember, used by the kernel's initiators (iscsiadm with
/// CHAP, nvme-cli with the host NQN) and by os-brick from PyPI; foreign initiators
/// refused; online extend seen under continuous reads; a wiped configfs (a
/// reboot) rebuilt from the store.
#[test]
fn vm_exports_lio_and_nvmet() {
    // os-brick finds iSCSI disks by their /dev/disk/by-path links: udev makes them.
    if !Path::new("/run/udev/control").exists() {
        cmd::run(Path::new("/lib/systemd/systemd-udevd"), &["--daemon"], T).unwrap();
    }
    let phase = std::cell::RefCell::new(Instant::now());
    let lap = |what: &str| eprintln!("[exports] {what}: {:?}", phase.replace(Instant::now()).elapsed());
    let vg = TestVg::new("exp");
    let data_dir = vg.dir.join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let config = format!(
        "[pool]\nbackend = \"lvm\"\nvolume_group = \"{}\"\nlvm_type = \"thin\"\ncreate_thin_pool = 0.6\n\
         lvm_system_dir = \"{}\"\nmax_over_subscription_ratio = 8.0\n\
         [target]\niscsi = \"lio\"\nnvme = \"nvmet\"\nportal_ips = [\"127.0.0.1\"]\n",
        vg.name,
        vg.conf_dir.display()
    );
    let mut agent = Agent::start_with(&data_dir, Some(&config));
    // The doctor sees everything this configuration needs here.
    let mut cfg: ember::config::Config = toml::from_str(&config).unwrap();
    cfg.data_dir = data_dir.clone();
    let checks = ember::doctor::checks(&cfg);
    checks.iter().for_each(|c| eprintln!("[doctor] {}", c.line()));
    assert!(ember::doctor::healthy(&checks), "lvm + lio + nvmet have all they need in the VM");
    for needed in ["device-mapper", "volume group", "thin tools", "configfs", "iblock", "nvmet-tcp"] {
        assert!(checks.iter().any(|c| c.name == needed && c.ok && c.required), "{needed}");
    }
    let lv = |id: &str| {
        PathBuf::from(format!("/dev/mapper/{}-volume--{}", vg.name.replace('-', "--"), id.replace('-', "--")))
    };
    let lio = Path::new("/sys/kernel/config/target/iscsi");
    let nvmet = Path::new("/sys/kernel/config/nvmet/subsystems");

    // ---- iSCSI on LIO with iscsiadm -------------------------------------------------
    let initiator = "iqn.1994-05.com.example:ember-vm";
    std::fs::create_dir_all("/etc/iscsi").unwrap();
    std::fs::write("/etc/iscsi/initiatorname.iscsi", format!("InitiatorName={initiator}\n")).unwrap();
    sh("mkdir -p /run/lock/iscsi /var/lib/iscsi && (pgrep -x iscsid >/dev/null || iscsid)");
    let a = new_volume(&agent, json!({"size": 1}));
    let started = Instant::now();
    let reply = action(
        &agent,
        &a,
        json!({"os-initialize_connection": {"connector": {"initiator": initiator, "host": "vm"}}}),
        None,
    );
    eprintln!("initialize_connection (LIO, new export): {:?}", started.elapsed());
    let data = &reply["connection_info"]["data"];
    let iqn = data["target_iqn"].as_str().unwrap().to_string();
    assert_eq!((data["target_lun"].as_u64(), data["target_portal"].as_str()), (Some(0), Some("127.0.0.1:3260")));
    assert!(lio.join(&iqn).join("tpgt_1/acls").join(initiator).exists(), "the ACL is in configfs");
    // configfs shows the backstore's device back, so reconciliation recognises a
    // good export (it tore every LIO export down and rebuilt it while this was empty).
    let udev_path =
        std::fs::read_to_string(format!("/sys/kernel/config/target/core/iblock_0/{iqn}/udev_path")).unwrap();
    assert_eq!(udev_path.trim(), lv(&a).to_str().unwrap());
    let (user, secret) = (data["auth_username"].as_str().unwrap(), data["auth_password"].as_str().unwrap());
    let node = format!("iscsiadm -m node -T {iqn} -p 127.0.0.1:3260");
    let login = |user: &str, secret: &str| {
        format!(
            "iscsiadm -m discovery -t sendtargets -p 127.0.0.1:3260 >/dev/null && \
             {node} -o update -n node.session.auth.authmethod -v CHAP && \
             {node} -o update -n node.session.auth.username -v {user} && \
             {node} -o update -n node.session.auth.password -v {secret} && {node} --login >/dev/null"
        )
    };
    sh(&login(user, secret));
    let sd = iscsi_device(&iqn);
    pattern_through(&sd, &lv(&a), 1);
    // A foreign initiator, and a wrong secret, are refused (libiscsi's initiator).
    let url = |u: &str, s: &str| format!("iscsi://{u}%{s}@127.0.0.1:3260/{iqn}/0");
    assert!(sh_fails(&format!("iscsi-inq -i iqn.1994-05.com.example:foreign '{}'", url(user, secret))));
    assert!(sh_fails(&format!("iscsi-inq -i {initiator} '{}'", url(user, "wrongwrongwrong1"))));
    // Online extend while the disk is read.
    action(
        &agent,
        &a,
        json!({"os-attach": {"instance_uuid": "5e2c9a10-1111-4222-8333-444455556666", "mountpoint": "/dev/vdb"}}),
        None,
    );
    let stop = std::env::temp_dir().join("stop-iscsi-reader");
    let mut reads = reader(&sd, &stop);
    std::thread::sleep(Duration::from_secs(1));
    action(&agent, &a, json!({"os-extend": {"new_size": 2}}), Some("3.42"));
    assert_eq!(agent.wait_status("volumes", &a, "in-use")["size"], 2);
    sh("iscsiadm -m session -R >/dev/null");
    wait_until(20, "the initiator to see 2 GiB", || (device_bytes(&sd) == 2 * GIB).then_some(()));
    std::thread::sleep(Duration::from_secs(1));
    std::fs::write(&stop, b"").unwrap();
    assert!(reads.wait().unwrap().success(), "a read failed during the online extend (LIO)");
    sh(&format!("{node} --logout >/dev/null && {node} -o delete"));
    action(&agent, &a, json!({"os-begin_detaching": null}), None);
    action(&agent, &a, json!({"os-terminate_connection": {"connector": {"initiator": initiator}}}), None);
    assert!(!lio.join(&iqn).join("tpgt_1/acls").join(initiator).exists(), "terminate removes the ACL");
    action(&agent, &a, json!({"os-detach": {}}), None);
    assert!(!lio.join(&iqn).exists(), "the last detach removes the target");
    assert!(!Path::new("/sys/kernel/config/target/core/iblock_0").join(&iqn).exists(), "and its backstore");

    lap("iSCSI on LIO");
    // ---- NVMe-oF/TCP on nvmet with nvme-cli -----------------------------------------
    let (code, reply) = agent.call(
        "POST",
        "/types",
        Some(json!({"volume_type": {"name": "nvme", "extra_specs": {"ember:target_protocol": "nvmeof"}}})),
        None,
    );
    assert_eq!(code, 200, "{reply}");
    let hostnqn = "nqn.2014-08.org.nvmexpress:uuid:6b1a4e4c-1111-4222-8333-444455556666";
    std::fs::create_dir_all("/etc/nvme").unwrap();
    std::fs::write("/etc/nvme/hostnqn", format!("{hostnqn}\n")).unwrap();
    std::fs::write("/etc/nvme/hostid", "6b1a4e4c-1111-4222-8333-444455556666\n").unwrap();
    let b = new_volume(&agent, json!({"size": 1, "volume_type": "nvme"}));
    let started = Instant::now();
    let reply =
        action(&agent, &b, json!({"os-initialize_connection": {"connector": {"nqn": hostnqn, "host": "vm"}}}), None);
    eprintln!("initialize_connection (nvmet, new export): {:?}", started.elapsed());
    let info = &reply["connection_info"];
    assert_eq!(info["driver_volume_type"], "nvmeof");
    let nqn = info["data"]["target_nqn"].as_str().unwrap().to_string();
    assert_eq!(info["data"]["portals"], json!([["127.0.0.1", "4420", "tcp"]]));
    assert_eq!(info["data"]["vol_uuid"], b.as_str());
    assert!(nvmet.join(&nqn).join("allowed_hosts").join(hostnqn).exists());
    assert_eq!(std::fs::read_to_string(nvmet.join(&nqn).join("attr_allow_any_host")).unwrap().trim(), "0");
    sh(&format!("nvme connect -t tcp -a 127.0.0.1 -s 4420 -n {nqn} --hostnqn {hostnqn} >/dev/null"));
    let nv = nvme_device(&nqn, &b);
    pattern_through(&nv, &lv(&b), 2);
    action(
        &agent,
        &b,
        json!({"os-attach": {"instance_uuid": "5e2c9a10-2222-4222-8333-444455556666", "mountpoint": "/dev/vdc"}}),
        None,
    );
    let stop = std::env::temp_dir().join("stop-nvme-reader");
    let mut reads = reader(&nv, &stop);
    std::thread::sleep(Duration::from_secs(1));
    action(&agent, &b, json!({"os-extend": {"new_size": 2}}), Some("3.42"));
    assert_eq!(agent.wait_status("volumes", &b, "in-use")["size"], 2);
    wait_until(20, "the host to see 2 GiB (revalidate_size)", || (device_bytes(&nv) == 2 * GIB).then_some(()));
    std::fs::write(&stop, b"").unwrap();
    assert!(reads.wait().unwrap().success(), "a read failed during the online extend (nvmet)");
    sh(&format!("nvme disconnect -n {nqn} >/dev/null"));
    assert!(
        sh_fails(&format!(
            "nvme connect -t tcp -a 127.0.0.1 -s 4420 -n {nqn} --hostnqn nqn.2014-08.org.example:intruder"
        )),
        "a host NQN that was not admitted connected"
    );
    action(&agent, &b, json!({"os-force_detach": {"connector": null}}), None);
    assert!(!nvmet.join(&nqn).exists(), "force detach with no attachment left removes the subsystem");

    // DH-HMAC-CHAP, opt-in per volume type (os-brick sends no key; nvme-cli does).
    let specs = json!({"ember:target_protocol": "nvmeof", "ember:nvme_dhchap": "<is> True"});
    let (code, reply) =
        agent.call("POST", "/types", Some(json!({"volume_type": {"name": "nvme-auth", "extra_specs": specs}})), None);
    assert_eq!(code, 200, "{reply}");
    let authhost = "nqn.2014-08.org.example:authhost";
    let c = new_volume(&agent, json!({"size": 1, "volume_type": "nvme-auth"}));
    let body = json!({"os-initialize_connection": {"connector": {"nqn": authhost}}});
    let (code, reply) = agent.call("POST", &format!("/volumes/{c}/action"), Some(body), None);
    if Path::new("/sys/kernel/config/nvmet/hosts").read_dir().is_ok() && !kernel_has_nvmet_auth() {
        // Debian 12's kernel is built without CONFIG_NVME_TARGET_AUTH: refused, cleanly.
        assert_eq!(code, 500, "{reply}");
        assert!(reply["computeFault"]["message"].as_str().unwrap().contains("DH-HMAC-CHAP"), "{reply}");
        assert!(std::fs::read_dir(nvmet).unwrap().next().is_none(), "the refused export was rolled back");
        assert!(!Path::new("/sys/kernel/config/nvmet/hosts").join(authhost).exists(), "and its host entry");
    } else {
        assert_eq!(code, 200, "{reply}");
        let data = &reply["connection_info"]["data"];
        let key = data["dhchap_secret"].as_str().unwrap().to_string();
        let cnqn = data["target_nqn"].as_str().unwrap().to_string();
        let connect = format!("nvme connect -t tcp -a 127.0.0.1 -s 4420 -n {cnqn} --hostnqn {authhost}");
        assert!(sh_fails(&connect), "a host without the key connected");
        sh(&format!("{connect} --dhchap-secret={key} >/dev/null"));
        pattern_through(&nvme_device(&cnqn, &c), &lv(&c), 4);
        sh(&format!("nvme disconnect -n {cnqn} >/dev/null"));
        action(&agent, &c, json!({"os-force_detach": {}}), None);
    }
    let (code, reply) = agent.call("DELETE", &format!("/volumes/{c}"), None, None);
    assert_eq!(code, 202, "{reply}");

    lap("NVMe-oF on nvmet");
    // ---- a reboot: configfs wiped, the store still wants both exports ----------------
    // (a new export: new credentials)
    let reply = action(&agent, &a, json!({"os-initialize_connection": {"connector": {"initiator": initiator}}}), None);
    let data = &reply["connection_info"]["data"];
    let (user, secret) =
        (data["auth_username"].as_str().unwrap().to_string(), data["auth_password"].as_str().unwrap().to_string());
    action(&agent, &b, json!({"os-initialize_connection": {"connector": {"nqn": hostnqn}}}), None);
    agent.crash();
    let prefix_iqn = iqn.trim_end_matches(&format!("volume-{a}")).to_string();
    let lio_target = ember::target::lio::LioTarget::open(&prefix_iqn, &["127.0.0.1:3260".to_string()]).unwrap();
    ember::target::Target::remove_export(&lio_target, &iqn).unwrap();
    let prefix_nqn = nqn.trim_end_matches(b.as_str()).to_string();
    let portal = ember::target::nvmet::Portal { ip: "127.0.0.1".parse().unwrap(), port: 4420 };
    let nvmet_target = ember::target::nvmet::NvmetTarget::open(&prefix_nqn, &[portal]).unwrap();
    ember::target::Target::remove_export(&nvmet_target, &nqn).unwrap();
    assert!(!lio.join(&iqn).exists() && !nvmet.join(&nqn).exists());
    agent = Agent::start_with(&data_dir, Some(&config));
    wait_until(60, "both exports rebuilt with their initiators", || {
        (lio.join(&iqn).join("tpgt_1/acls").join(initiator).join("lun_0").exists()
            && nvmet.join(&nqn).join("allowed_hosts").join(hostnqn).exists())
        .then_some(())
    });
    // The same name and credentials as before the reboot.
    sh(&login(&user, &secret));
    let sd = iscsi_device(&iqn);
    pattern_through(&sd, &lv(&a), 3);
    sh(&format!("{node} --logout >/dev/null && {node} -o delete"));
    for id in [&a, &b] {
        action(&agent, id, json!({"os-force_detach": {}}), None);
    }
    assert!(!lio.join(&iqn).exists() && !nvmet.join(&nqn).exists());

    lap("reboot and reconcile");
    // ---- os-brick attaching as a hypervisor does, for both protocols -----------------
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = repo.join(".venv/bin/python");
    let ids = [new_volume(&agent, json!({"size": 1})), new_volume(&agent, json!({"size": 1, "volume_type": "nvme"}))];
    let script = repo.join("tests/vm_osbrick.py");
    let endpoint = agent.endpoint();
    let out = cmd::run(
        &python,
        &[script.to_str().unwrap(), &endpoint, common::PROJECT, &ids[0], &ids[1]],
        Duration::from_secs(600),
    )
    .unwrap_or_else(|e| panic!("os-brick attach: {e}"));
    let results: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for r in &results {
        eprintln!("os-brick: {r}");
    }
    let protocols: Vec<&str> = results.iter().map(|r| r["protocol"].as_str().unwrap()).collect();
    assert_eq!(protocols, ["iscsi", "nvmeof"], "{out}");
    assert!(results.iter().all(|r| r["path"].as_str().unwrap().starts_with("/dev/")), "{out}");
    for id in &ids {
        let (code, reply) = agent.call("DELETE", &format!("/volumes/{id}"), None, None);
        assert_eq!(code, 202, "{reply}");
        agent.wait_status("volumes", id, "gone");
    }
    for id in [&a, &b] {
        let (code, reply) = agent.call("DELETE", &format!("/volumes/{id}"), None, None);
        assert_eq!(code, 202, "{reply}");
        agent.wait_status("volumes", id, "gone");
    }
    lap("os-brick");
    let left = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect()
    };
    assert!(left(lio).iter().all(|n| !n.starts_with("iqn.")), "LIO targets left behind: {:?}", left(lio));
    assert!(left(nvmet).is_empty(), "nvmet subsystems left behind: {:?}", left(nvmet));
    agent.stop();
}

/// The Debian package under a real systemd (tests/vm_systemd.sh): `dpkg -i`, then
/// start (ready only after READY), restart and stop, with a volume exported
/// through LIO that stays served across all three.
#[test]
fn vm_package_under_systemd() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let deb = std::env::var("EMBER_DEB").expect("EMBER_DEB: the package scripts/build-deb made (scripts/test sets it)");
    let data = scratch_dir().join("systemd-data");
    let script = repo.join("tests/vm_systemd.sh");
    let out = cmd::run(&script, &[&deb, data.to_str().unwrap()], Duration::from_secs(900))
        .unwrap_or_else(|e| panic!("the package under systemd: {e}"));
    eprint!("{out}");
    assert!(out.lines().any(|l| l == "[systemd] ok"), "{out}");
}
