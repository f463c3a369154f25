//! Host tier: jobs that read one resource while another request deletes it. A
//! clone reads its source volume or snapshot, a revert reads its snapshot; a delete
//! of that source must wait for the reader (as Cinder's `<id>-delete_volume` lock
//! makes it), never zero the bytes under it. Real `ember serve`, real sparse files,
//! dense (384 MiB written) and sparse (scattered MiBs) sources.

mod common;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use common::{Agent, loop_devices};
use serde_json::{Value, json};

const MIB: u64 = 1 << 20;
const MIB_BYTES: usize = 1 << 20;

/// Deterministic, incompressible-looking bytes for MiB number `index` of `seed`.
fn chunk(seed: u64, index: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ index.wrapping_add(1).wrapping_mul(0xd1b5_4a32_d192_ed03);
    let mut out = Vec::with_capacity(MIB_BYTES);
    while out.len() < MIB_BYTES {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

/// Where a source holds data: the first 384 MiB (dense), or one MiB in every 48 (sparse).
fn layout(dense: bool) -> Vec<u64> {
    if dense { (0..384).collect() } else { (0..64).map(|i| i * 48).collect() }
}

fn write_layout(file: &Path, seed: u64, mibs: &[u64]) {
    let f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
    for &m in mibs {
        f.write_all_at(&chunk(seed, m), m * MIB).unwrap();
    }
    f.sync_all().unwrap();
}

/// Every MiB of `mibs` holds `seed`'s bytes; returns how many differ.
fn differing(file: &Path, seed: u64, mibs: &[u64]) -> usize {
    let f = std::fs::File::open(file).unwrap();
    let mut buf = vec![0u8; MIB_BYTES];
    mibs.iter()
        .filter(|&&m| {
            f.read_exact_at(&mut buf, m * MIB).unwrap();
            buf != chunk(seed, m)
        })
        .count()
}

struct Rig {
    agent: Option<Agent>,
    data_dir: PathBuf,
    loops_before: usize,
}

impl Rig {
    fn new() -> Rig {
        let data_dir = std::env::temp_dir().join(format!("ember-race-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&data_dir).unwrap();
        let loops_before = loop_devices();
        // Over-subscribed: the 3 GiB volumes are sparse, whatever this disk holds.
        let agent = Agent::start_with(&data_dir, Some("[pool]\nmax_over_subscription_ratio = 50.0\n"));
        Rig { agent: Some(agent), data_dir, loops_before }
    }

    fn agent(&self) -> &Agent {
        self.agent.as_ref().unwrap()
    }

    fn volume_file(&self, id: &str) -> PathBuf {
        self.data_dir.join("volumes").join(format!("volume-{id}"))
    }

    fn create(&self, body: Value) -> String {
        let (code, reply) = self.agent().call("POST", "/volumes", Some(json!({ "volume": body })), None);
        assert_eq!(code, 202, "{reply}");
        reply["volume"]["id"].as_str().unwrap().to_string()
    }

    fn snapshot(&self, volume: &str) -> String {
        let (code, reply) =
            self.agent().call("POST", "/snapshots", Some(json!({"snapshot": {"volume_id": volume}})), None);
        assert_eq!(code, 202, "{reply}");
        let id = reply["snapshot"]["id"].as_str().unwrap().to_string();
        self.agent().wait_status("snapshots", &id, "available");
        id
    }

    fn delete(&self, path: &str) {
        let (code, reply) = self.agent().call("DELETE", path, None, None);
        assert_eq!(code, 202, "DELETE {path}: {reply}");
    }

    /// Deletes what is left, stops the agent and checks nothing outlived it.
    fn finish(mut self, volumes: &[&str]) {
        for id in volumes {
            self.delete(&format!("/volumes/{id}?cascade=true"));
            self.agent().wait_status("volumes", id, "gone");
        }
        self.agent.take().unwrap().stop();
        let left: Vec<_> = ["volumes", "snapshots"]
            .iter()
            .flat_map(|d| std::fs::read_dir(self.data_dir.join(d)).unwrap().flatten().map(|e| e.path()))
            .collect();
        assert!(left.is_empty(), "files left behind: {left:?}");
        assert_eq!(loop_devices(), self.loops_before, "loop devices leaked");
        std::fs::remove_dir_all(&self.data_dir).unwrap();
    }
}

/// POST /volumes {source_volid} and at once DELETE the source: the delete is
/// accepted, waits for the copy, and the clone holds exactly what the source held.
#[test]
fn root_clone_keeps_its_bytes_when_the_source_volume_is_deleted() {
    for dense in [false, true] {
        let rig = Rig::new();
        let src = rig.create(json!({"size": 3}));
        rig.agent().wait_status("volumes", &src, "available");
        let mibs = layout(dense);
        write_layout(&rig.volume_file(&src), 7, &mibs);

        let clone = rig.create(json!({"size": 3, "source_volid": src}));
        rig.delete(&format!("/volumes/{src}"));
        let done = rig.agent().wait_status("volumes", &clone, "available");
        assert_eq!(done["source_volid"], src.as_str());
        assert_eq!(differing(&rig.volume_file(&clone), 7, &mibs), 0, "dense={dense}: the clone lost source bytes");
        rig.agent().wait_status("volumes", &src, "gone");
        rig.finish(&[&clone]);
    }
}

/// POST /volumes {snapshot_id} and at once DELETE the snapshot.
#[test]
fn root_clone_keeps_its_bytes_when_the_source_snapshot_is_deleted() {
    for dense in [false, true] {
        let rig = Rig::new();
        let src = rig.create(json!({"size": 3}));
        rig.agent().wait_status("volumes", &src, "available");
        let mibs = layout(dense);
        write_layout(&rig.volume_file(&src), 11, &mibs);
        let snap = rig.snapshot(&src);

        let clone = rig.create(json!({"size": 3, "snapshot_id": snap}));
        rig.delete(&format!("/snapshots/{snap}"));
        rig.agent().wait_status("volumes", &clone, "available");
        assert_eq!(differing(&rig.volume_file(&clone), 11, &mibs), 0, "dense={dense}: the clone lost snapshot bytes");
        rig.agent().wait_status("snapshots", &snap, "gone");
        rig.finish(&[&clone, &src]);
    }
}

/// revert (3.40) and at once os-force_delete of the snapshot being restored (a plain
/// DELETE is refused: the snapshot is `restoring`). The force delete waits; the
/// volume holds the snapshot's bytes again.
#[test]
fn root_revert_keeps_its_bytes_when_the_snapshot_is_force_deleted() {
    for dense in [false, true] {
        let rig = Rig::new();
        let vol = rig.create(json!({"size": 3}));
        rig.agent().wait_status("volumes", &vol, "available");
        let mibs = layout(dense);
        write_layout(&rig.volume_file(&vol), 13, &mibs);
        let snap = rig.snapshot(&vol);
        write_layout(&rig.volume_file(&vol), 17, &mibs);

        let a = rig.agent();
        let (code, reply) = a.call(
            "POST",
            &format!("/volumes/{vol}/action"),
            Some(json!({"revert": {"snapshot_id": snap}})),
            Some("3.40"),
        );
        assert_eq!(code, 202, "{reply}");
        let (code, reply) = a.call("DELETE", &format!("/snapshots/{snap}"), None, None);
        assert_eq!(code, 400, "a restoring snapshot is not deletable: {reply}");
        let (code, reply) =
            a.call("POST", &format!("/snapshots/{snap}/action"), Some(json!({"os-force_delete": {}})), None);
        assert_eq!(code, 202, "{reply}");
        a.wait_status("volumes", &vol, "available");
        a.wait_status("snapshots", &snap, "gone");
        assert_eq!(differing(&rig.volume_file(&vol), 13, &mibs), 0, "dense={dense}: the revert lost snapshot bytes");
        rig.finish(&[&vol]);
    }
}
