//! Host integration (tier 2): a real `ember serve` on a temporary data dir, driven
//! through HTTP, with real sparse files and a real loop device. Needs root for the
//! loop device; the test command runs it as root and says so when it cannot.
//!
//! create → attach a loop device → extend (the device learns the size) → snapshot
//! → overwrite → revert (bytes checked) → cascade delete; then the same data dir is
//! served again after a restart. Loop devices and files are counted before/after.

mod common;

use std::os::unix::fs::FileExt;
use std::path::Path;

use common::{Agent, loop_devices};
use serde_json::json;

/// No volume or snapshot file and no loop device outlives the test; then the data
/// dir goes.
fn assert_nothing_left(data_dir: &Path, loops_before: usize) {
    let leftovers: Vec<_> = ["volumes", "snapshots"]
        .iter()
        .flat_map(|d| std::fs::read_dir(data_dir.join(d)).unwrap().flatten().map(|e| e.path()))
        .collect();
    assert!(leftovers.is_empty(), "files left behind: {leftovers:?}");
    assert_eq!(loop_devices(), loops_before, "loop devices leaked");
    std::fs::remove_dir_all(data_dir).unwrap();
}

fn device_size(dev: &Path) -> u64 {
    ember::blockdev::block_device_size(&std::fs::File::open(dev).unwrap()).unwrap()
}

#[test]
fn root_volume_lifecycle_through_http() {
    let data_dir = std::env::temp_dir().join(format!("ember-it-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&data_dir).unwrap();
    let loops_before = loop_devices();
    let agent = Agent::start(&data_dir);

    let (code, body) = agent.call("POST", "/volumes", Some(json!({"volume": {"size": 1, "name": "it"}})), None);
    assert_eq!(code, 202, "{body}");
    let id = body["volume"]["id"].as_str().unwrap().to_string();
    agent.wait_status("volumes", &id, "available");
    let file = data_dir.join("volumes").join(format!("volume-{id}"));
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 1 << 30);

    // A loop device stands for an export: it must see the extend.
    let device = ember::blockdev::loopback::attach(&file, false).unwrap();
    assert_eq!(loop_devices(), loops_before + 1);
    assert_eq!(device_size(&device.device), 1 << 30);
    let (code, body) =
        agent.call("POST", &format!("/volumes/{id}/action"), Some(json!({"os-extend": {"new_size": 2}})), None);
    assert_eq!(code, 202, "{body}");
    let v = agent.wait_status("volumes", &id, "available");
    assert_eq!(v["size"], 2);
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 2 << 30);
    assert_eq!(device_size(&device.device), 2 << 30, "LOOP_SET_CAPACITY was not applied");

    // Bytes through the block device, snapshot, overwrite, revert.
    let dev = std::fs::OpenOptions::new().write(true).read(true).open(&device.device).unwrap();
    dev.write_all_at(b"ember-original", 1 << 30).unwrap();
    dev.sync_all().unwrap();
    let (code, body) = agent.call("POST", "/snapshots", Some(json!({"snapshot": {"volume_id": id}})), None);
    assert_eq!(code, 202, "{body}");
    let snap = body["snapshot"]["id"].as_str().unwrap().to_string();
    agent.wait_status("snapshots", &snap, "available");
    dev.write_all_at(b"ember-OVERWRIT", 1 << 30).unwrap();
    dev.sync_all().unwrap();
    drop(dev);
    ember::blockdev::loopback::detach(&device.device).unwrap();
    assert_eq!(loop_devices(), loops_before);

    let revert = json!({"revert": {"snapshot_id": snap}});
    let (code, _) = agent.call("POST", &format!("/volumes/{id}/action"), Some(revert.clone()), None);
    assert_eq!(code, 404, "revert needs microversion 3.40");
    let (code, body) = agent.call("POST", &format!("/volumes/{id}/action"), Some(revert), Some("3.40"));
    assert_eq!(code, 202, "{body}");
    agent.wait_status("volumes", &id, "available");
    let mut buf = [0u8; 14];
    std::fs::File::open(&file).unwrap().read_exact_at(&mut buf, 1 << 30).unwrap();
    assert_eq!(&buf, b"ember-original");

    // The state survives a restart of the agent.
    agent.stop();
    let agent = Agent::start(&data_dir);
    let v = agent.wait_status("volumes", &id, "available");
    assert_eq!(v["size"], 2);

    let (code, body) = agent.call("DELETE", &format!("/volumes/{id}?cascade=true"), None, None);
    assert_eq!(code, 202, "{body}");
    agent.wait_status("volumes", &id, "gone");
    agent.wait_status("snapshots", &snap, "gone");
    agent.stop();

    assert_nothing_left(&data_dir, loops_before);
}

fn unfinished_jobs(data_dir: &Path) -> Vec<String> {
    let db = rusqlite::Connection::open(data_dir.join("ember.db")).unwrap();
    let mut stmt = db.prepare("SELECT kind FROM jobs WHERE state = 'running' ORDER BY id").unwrap();
    stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
}

/// Kills the agent with SIGKILL while a snapshot copy and then a delete (zeroing
/// 384 MiB of written data) are under way; each restart must finish the job from
/// the journal and leave no partial file or loop device behind.
#[test]
fn root_jobs_resume_after_kill_9() {
    let data_dir = std::env::temp_dir().join(format!("ember-crash-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&data_dir).unwrap();
    let loops_before = loop_devices();
    let agent = Agent::start(&data_dir);
    let (code, body) = agent.call("POST", "/volumes", Some(json!({"volume": {"size": 1}})), None);
    assert_eq!(code, 202, "{body}");
    let id = body["volume"]["id"].as_str().unwrap().to_string();
    agent.wait_status("volumes", &id, "available");
    let file = data_dir.join("volumes").join(format!("volume-{id}"));
    {
        let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
        let chunk: Vec<u8> = (0..1u32 << 20).map(|i| u8::try_from(i % 251).unwrap()).collect();
        for mib in 0..384u64 {
            f.write_all_at(&chunk, mib << 20).unwrap();
        }
        f.sync_all().unwrap();
    }

    let (code, body) = agent.call("POST", "/snapshots", Some(json!({"snapshot": {"volume_id": id}})), None);
    assert_eq!(code, 202, "{body}");
    let snap = body["snapshot"]["id"].as_str().unwrap().to_string();
    agent.crash();
    assert_eq!(unfinished_jobs(&data_dir), ["create_snapshot"], "the kill came after the job finished");
    let agent = Agent::start(&data_dir);
    agent.wait_status("snapshots", &snap, "available");
    let snap_file = data_dir.join("snapshots").join(format!("snapshot-{snap}"));
    let mut buf = vec![0u8; 4096];
    std::fs::File::open(&snap_file).unwrap().read_exact_at(&mut buf, 383 << 20).unwrap();
    assert!(buf.iter().enumerate().all(|(i, b)| usize::from(*b) == i % 251), "snapshot copy is incomplete");

    let (code, body) = agent.call("DELETE", &format!("/volumes/{id}?cascade=true"), None, None);
    assert_eq!(code, 202, "{body}");
    agent.crash();
    assert_eq!(unfinished_jobs(&data_dir), ["delete_volume"], "the kill came after the job finished");
    let agent = Agent::start(&data_dir);
    agent.wait_status("volumes", &id, "gone");
    assert!(unfinished_jobs(&data_dir).is_empty());
    agent.stop();
    assert_nothing_left(&data_dir, loops_before);
}
