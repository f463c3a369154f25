//! Exports on the simulated pool and target: the legacy connection flow, rollback
//! of a failed export, teardown before the pool, online extend, revert, force
//! detach and reconciliation after a "reboot".

use serde_json::{Value, json};

use super::sim::Sim;
use crate::manager::{ActionOutcome, ManagerError, VolumeAction};
use crate::model::{AttachMode, AttachStatus, JobState, VolumeStatus};
use crate::pool::sim::{Event, Op};
use crate::target::sim::TargetOp;

const HOST1: &str = "iqn.1994-05.com.example:host1";
const HOST2: &str = "iqn.1994-05.com.example:host2";

fn connector(initiator: &str) -> Value {
    json!({"initiator": initiator, "host": "h", "ip": "127.0.0.1", "multipath": false})
}

impl Sim {
    fn initialize(&self, id: &str, connector: Value) -> crate::manager::Result<Value> {
        match self.act(id, VolumeAction::InitializeConnection { connector })? {
            ActionOutcome::Connection(info) => Ok(info),
            other => panic!("{other:?}"),
        }
    }

    fn iqn(&self, id: &str) -> String {
        format!("iqn.2010-10.org.openstack:volume-{id}")
    }

    /// (export row?, its ACL rows)
    fn desired(&self, id: &str) -> (bool, Vec<String>) {
        self.store
            .read(|tx| Ok::<_, crate::store::StoreError>((tx.export(id)?.is_some(), tx.export_acls(id)?)))
            .unwrap()
    }
}

#[test]
fn initialize_exports_once_and_admits_each_initiator() {
    let s = Sim::with_target();
    let v = s.ready_volume(1, 1);
    let info = s.initialize(&v.id, connector("IQN.1994-05.COM.EXAMPLE:HOST1")).unwrap();
    assert_eq!(info["driver_volume_type"], "iscsi");
    let data = &info["data"];
    assert_eq!(data["target_iqn"], s.iqn(&v.id));
    assert_eq!((data["target_lun"].as_u64(), data["target_portal"].as_str()), (Some(1), Some("127.0.0.1:3260")));
    assert_eq!((data["auth_method"].as_str(), data["volume_id"].as_str()), (Some("CHAP"), Some(v.id.as_str())));
    let (user, secret) = (data["auth_username"].as_str().unwrap(), data["auth_password"].as_str().unwrap());
    assert_eq!((user.len(), secret.len()), (20, 16));
    for key in ["qos_specs", "access_mode", "encrypted", "cacheable", "enforce_multipath", "target_discovered"] {
        assert!(data.get(key).is_some(), "{key} missing from {data}");
    }
    assert!(data.get("target_portals").is_none(), "one portal and no multipath: no lists");
    assert_eq!(info["enforce_multipath"], false);
    let exported = s.target().export(&s.iqn(&v.id)).unwrap();
    assert_eq!(exported.initiators, [HOST1], "IQNs are compared lowercased");
    assert_eq!(exported.chap_user.as_deref(), Some(user));

    // Again, and from a second host with multipath: the same export and credentials.
    let again = s.initialize(&v.id, connector(HOST1)).unwrap();
    assert_eq!(again["data"]["auth_password"], secret);
    let mut second = connector(HOST2);
    second["multipath"] = json!(true);
    let info2 = s.initialize(&v.id, second).unwrap();
    assert_eq!(info2["data"]["target_portals"], json!(["127.0.0.1:3260"]));
    assert_eq!(info2["data"]["target_luns"], json!([1]));
    assert_eq!(s.target().export(&s.iqn(&v.id)).unwrap().initiators, [HOST1, HOST2]);
    assert_eq!(s.desired(&v.id), (true, vec![HOST1.to_string(), HOST2.to_string()]));
    let creates = s.target().log().iter().filter(|(op, _)| *op == TargetOp::CreateExport).count();
    assert_eq!(creates, 3, "each call makes sure the export stands (AlreadyPresent after the first)");
    assert_eq!(s.volume(&v.id).unwrap().status, VolumeStatus::Available, "status does not change");
}

#[test]
fn bad_connectors_and_states_change_nothing() {
    let s = Sim::with_target();
    let v = s.ready_volume(1, 1);
    for bad in [json!({"host": "h"}), json!({"initiator": ""}), json!({"initiator": 5}), json!("a-string")] {
        let err = s.initialize(&v.id, bad.clone()).unwrap_err();
        assert!(matches!(&err, ManagerError::Invalid(m) if m.contains("Connector")), "{bad}: {err:?}");
    }
    s.act(
        &v.id,
        VolumeAction::ResetStatus {
            status: Some(VolumeStatus::Maintenance),
            attach_status: None,
            migration_status: None,
        },
    )
    .unwrap();
    assert!(matches!(s.initialize(&v.id, connector(HOST1)), Err(ManagerError::Invalid(_))));
    assert_eq!(s.desired(&v.id), (false, vec![]));
    assert!(s.target().names().is_empty() && s.target().log().is_empty());
}

/// A backend failure answers 500 (Backend), takes back what the call added to the
/// store, leaves nothing half-built on the target, and tells the owner.
#[test]
fn a_failed_export_is_rolled_back() {
    let s = Sim::with_target();
    let v = s.ready_volume(1, 1);
    s.target().fail(TargetOp::Allow, 1);
    let err = s.initialize(&v.id, connector(HOST1)).unwrap_err();
    assert!(
        matches!(&err, ManagerError::Backend(m) if m.starts_with("Unable to fetch connection information")),
        "{err:?}"
    );
    assert_eq!(s.desired(&v.id), (false, vec![]));
    assert!(s.target().names().is_empty(), "the export built before the failure was removed");
    assert!(s.pool.log().contains(&Event::Start(Op::DetachDevice, v.id.clone())), "and its device released");
    assert_eq!(s.last_job().0, JobState::Failed);
    assert_eq!(s.messages().pop().unwrap().event_id, "VOLUME_VOLUME_002_021");

    // On an export that stands, a failure for a second host removes only that host.
    s.initialize(&v.id, connector(HOST1)).unwrap();
    s.target().fail(TargetOp::Allow, 1);
    assert!(s.initialize(&v.id, connector(HOST2)).is_err());
    assert_eq!(s.desired(&v.id), (true, vec![HOST1.to_string()]));
    assert_eq!(s.target().export(&s.iqn(&v.id)).unwrap().initiators, [HOST1]);
}

#[test]
fn terminate_then_detach_take_access_then_the_export_away() {
    let s = Sim::with_target();
    let v = s.ready_volume(1, 1);
    s.act(&v.id, VolumeAction::Reserve).unwrap();
    s.initialize(&v.id, connector(HOST1)).unwrap();
    let attach = VolumeAction::Attach {
        instance_uuid: Some("11111111-1111-1111-1111-111111111111".into()),
        host_name: None,
        mountpoint: "/dev/vdb".into(),
        mode: AttachMode::Rw,
    };
    s.act(&v.id, attach).unwrap();
    assert_eq!(s.volume(&v.id).unwrap().status, VolumeStatus::InUse);
    s.act(&v.id, VolumeAction::BeginDetaching).unwrap();
    s.act(&v.id, VolumeAction::TerminateConnection { connector: connector(HOST1) }).unwrap();
    assert!(s.target().export(&s.iqn(&v.id)).unwrap().initiators.is_empty(), "access gone, export stays");
    assert_eq!(s.desired(&v.id), (true, vec![]));
    s.act(&v.id, VolumeAction::Detach { attachment_id: None }).unwrap();
    assert!(s.target().names().is_empty());
    assert_eq!(s.desired(&v.id), (false, vec![]));
    let v2 = s.volume(&v.id).unwrap();
    assert_eq!((v2.status, v2.attach_status), (VolumeStatus::Available, AttachStatus::Detached));
    // terminate without an export is a no-op; a connector of another host too.
    s.act(&v.id, VolumeAction::TerminateConnection { connector: connector(HOST2) }).unwrap();
    s.act(&v.id, VolumeAction::TerminateConnection { connector: Value::Null }).unwrap();
}

#[test]
fn force_detach_with_a_null_connector_removes_every_initiator() {
    let s = Sim::with_target();
    let v = s.ready_volume(1, 1);
    s.initialize(&v.id, connector(HOST1)).unwrap();
    s.initialize(&v.id, connector(HOST2)).unwrap();
    s.act(
        &v.id,
        VolumeAction::ResetStatus { status: Some(VolumeStatus::Error), attach_status: None, migration_status: None },
    )
    .unwrap();
    s.act(&v.id, VolumeAction::ForceDetach { attachment_id: None, connector: Value::Null }).unwrap();
    assert!(s.target().names().is_empty(), "no attachment left: the export goes too");
    assert_eq!(s.desired(&v.id), (false, vec![]));
}

/// Delete (and unmanage) take the export down before the pool removes the
/// volume; revert keeps it, around the pool's work; in-use extend tells it.
#[test]
fn delete_revert_and_extend_handle_the_export() {
    let s = Sim::with_target();
    let v = s.ready_volume(1, 1);
    let snap = s.take_snapshot(&v.id);
    s.initialize(&v.id, connector(HOST1)).unwrap();

    s.act(&v.id, VolumeAction::Revert { snapshot_id: Some(snap.id.clone()) }).unwrap();
    s.settle();
    let log = s.target().log();
    let ops: Vec<TargetOp> = log.iter().map(|(op, _)| *op).collect();
    assert!(ops.ends_with(&[TargetOp::RemoveExport, TargetOp::CreateExport, TargetOp::Allow]), "{ops:?}");
    assert_eq!(s.target().export(&s.iqn(&v.id)).unwrap().initiators, [HOST1], "back, with its initiator");

    s.act(&v.id, VolumeAction::Extend { new_size: 3 }).unwrap();
    s.settle();
    assert_eq!(s.target().export(&s.iqn(&v.id)).unwrap().refreshed, 1);

    s.delete(&v.id, true);
    s.settle();
    assert!(s.volume(&v.id).is_none() && s.target().names().is_empty());
    let pool_log = s.pool.log();
    let detached = pool_log.iter().position(|e| *e == Event::End(Op::DetachDevice, v.id.clone())).unwrap();
    let deleted = pool_log.iter().position(|e| *e == Event::Start(Op::DeleteVolume, v.id.clone())).unwrap();
    assert!(detached < deleted, "the device is released before the volume goes: {pool_log:?}");
}

/// After a reboot the target has nothing: reconciliation builds every export the
/// store wants, with its initiators; an export with ember's prefix the store does
/// not want goes; anything else is left alone.
#[test]
fn reconciliation_rebuilds_what_a_reboot_lost() {
    let mut s = Sim::with_target();
    let a = s.ready_volume(1, 1);
    let b = s.ready_volume(1, 2);
    s.initialize(&a.id, connector(HOST1)).unwrap();
    s.initialize(&b.id, connector(HOST2)).unwrap();
    s.initialize(&b.id, connector(HOST1)).unwrap();
    s.target().wipe();
    let stale = format!("iqn.2010-10.org.openstack:volume-{}", uuid::Uuid::new_v4());
    s.target().add_raw(&stale, "/dev/sim/gone");
    s.target().add_raw("iqn.2003-01.org.other:keep", "/dev/sdz");
    s.crash_and_restart();
    assert_eq!(s.on(|m| m.reconcile_exports()).unwrap(), 3, "a, b and the stale one");
    assert_eq!(s.target().export(&s.iqn(&a.id)).unwrap().initiators, [HOST1]);
    assert_eq!(s.target().export(&s.iqn(&b.id)).unwrap().initiators, [HOST2, HOST1]);
    assert!(s.target().export(&stale).is_none());
    assert!(s.target().export("iqn.2003-01.org.other:keep").is_some(), "not ember's: left alone");
    assert_eq!(s.on(|m| m.reconcile_exports()).unwrap(), 0, "nothing differs any more");
    // An initiator added behind ember's back goes at the next pass.
    s.target().wipe();
    s.initialize(&a.id, connector(HOST1)).unwrap();
    assert_eq!(s.on(|m| m.reconcile_exports()).unwrap(), 1, "b");
}

/// NVMe-oF connection_info in both formats of spec §4.3, and iSCSI with secondary
/// portals (multipath lists even without the connector asking).
#[test]
fn connection_info_formats() {
    use crate::manager::{ExportSettings, Exporter};
    use crate::model::{Export, TargetBackend};
    let s = Sim::with_target();
    let v = s.ready_volume(1, 1);
    let volume = s.volume(&v.id).unwrap();
    let nvme = Export {
        volume_id: v.id.clone(),
        backend: TargetBackend::Nvmet,
        target_name: format!("nqn.2010-10.org.openstack:volume-{}", v.id),
        lun: 10,
        chap: None,
        host_key: None,
        created_at: crate::model::now(),
    };
    let settings = |nvme_format, ips: &[&str]| ExportSettings {
        nvme_format,
        portal_ips: ips.iter().map(|ip| ip.parse().unwrap()).collect(),
        ..ExportSettings::default()
    };
    let with = |settings: ExportSettings| {
        crate::manager::Manager::new(
            s.store.clone(),
            vec![super::slot(s.pool.clone(), 1.0)],
            Exporter { iscsi: None, nvme: None, settings },
            super::settings(),
            super::images(&s.dir),
        )
    };
    let v2 =
        with(settings(2, &["192.0.2.1", "192.0.2.2"])).connection_info(&volume, &nvme, &json!({"nqn": "h"})).unwrap();
    assert_eq!(v2["driver_volume_type"], "nvmeof");
    assert_eq!(v2["data"]["portals"], json!([["192.0.2.1", "4420", "tcp"], ["192.0.2.2", "4420", "tcp"]]));
    assert_eq!((v2["data"]["vol_uuid"].as_str(), v2["data"]["ns_id"].as_str()), (Some(v.id.as_str()), Some("10")));
    let v1 = with(settings(1, &["192.0.2.1"])).connection_info(&volume, &nvme, &json!({"nqn": "h"})).unwrap();
    assert_eq!(v1["data"]["target_portal"], "192.0.2.1");
    assert_eq!(
        (v1["data"]["target_port"].as_str(), v1["data"]["transport_type"].as_str()),
        (Some("4420"), Some("tcp"))
    );
    assert_eq!(v1["data"]["nqn"], nvme.target_name);

    let iscsi = Export { backend: TargetBackend::Lio, lun: 0, target_name: "iqn.x:volume-1".into(), ..nvme };
    let m = with(settings(2, &["192.0.2.1", "2001:db8::1"]));
    let info = m.connection_info(&volume, &iscsi, &json!({"initiator": "iqn.h", "enforce_multipath": true})).unwrap();
    assert_eq!(info["data"]["target_portals"], json!(["192.0.2.1:3260", "[2001:db8::1]:3260"]));
    assert_eq!(info["data"]["target_luns"], json!([0, 0]));
    assert_eq!(info["enforce_multipath"], true);
    assert!(info["data"].get("auth_method").is_none(), "no CHAP, no auth keys");
}
