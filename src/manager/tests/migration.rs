//! Migration between two simulated pools: the identity swap, a failure before
//! and after the source is given up, and a crash in the middle of the copy.

use super::sim::{OTHER, Sim};
use crate::manager::VolumeAction;
use crate::model::{MigrationStatus, Volume, VolumeStatus};
use crate::pool::sim::{Fault, Op};

fn migrate(s: &Sim, id: &str) {
    s.act(id, VolumeAction::MigrateVolume { destination: OTHER.into() }).unwrap();
}

/// Every volume record, and the one a migration of `id` added (its destination).
fn destination_of(s: &Sim, id: &str) -> Option<Volume> {
    let all = s.store.read(|tx| tx.volumes(None)).unwrap();
    all.into_iter().find(|v| v.migration_status == Some(MigrationStatus::Target(id.to_string())))
}

#[test]
fn a_migration_moves_the_volume_and_keeps_its_id() {
    let s = Sim::with_two_pools();
    let v = s.ready_volume(1, 5);
    let other = s.other.clone().unwrap();
    other.inject(Op::WriteVolume, Some(1), Fault::Delay(std::time::Duration::from_millis(200)));
    migrate(&s, &v.id);
    // The request itself locked the source and added the destination record.
    let during = s.volume(&v.id).unwrap();
    assert_eq!(during.status, VolumeStatus::Maintenance);
    assert_eq!(during.previous_status, Some(VolumeStatus::Available));
    let dest = destination_of(&s, &v.id).expect("the destination record exists while it copies");
    assert_eq!(dest.host, OTHER);
    s.settle();
    let after = s.volume(&v.id).unwrap();
    assert_eq!((after.status, after.host.as_str()), (VolumeStatus::Available, OTHER));
    assert_eq!(after.migration_status, Some(MigrationStatus::Success));
    assert!(s.volume(&dest.id).is_none(), "the destination record is gone");
    assert!(s.pool.volume(&v.id).is_none(), "the source's bytes were given up");
    assert!(other.volume(&v.id).is_some() && other.volume(&dest.id).is_none(), "renamed to the volume's id");
    let provisioned = |host: &str| s.store.read(|tx| tx.provisioned_gib_on(host)).unwrap();
    assert_eq!((provisioned("node1@file#file"), provisioned(OTHER)), (0, 1));
}

#[test]
fn a_copy_that_fails_restores_the_source_and_leaves_no_destination() {
    let s = Sim::with_two_pools();
    let v = s.ready_volume(1, 5);
    let other = s.other.clone().unwrap();
    other.inject(Op::WriteVolume, Some(1), Fault::Fail("destination full".into()));
    migrate(&s, &v.id);
    s.settle();
    let after = s.volume(&v.id).unwrap();
    assert_eq!((after.status, after.host.as_str()), (VolumeStatus::Available, "node1@file#file"));
    assert_eq!(after.migration_status, Some(MigrationStatus::Error));
    assert!(s.pool.volume(&v.id).is_some(), "the source is untouched");
    assert!(destination_of(&s, &v.id).is_none(), "no destination record");
    assert_eq!(other.calls(Op::DeleteVolume), 1, "the destination's object was deleted");
    let m = s.messages().pop().unwrap();
    assert_eq!(m.event_id, "VOLUME_VOLUME_109_001");
    assert!(!m.user_message.contains("full"), "{}", m.user_message);
}

#[test]
fn a_failure_after_the_source_is_given_up_keeps_the_destination() {
    let s = Sim::with_two_pools();
    let v = s.ready_volume(1, 5);
    let other = s.other.clone().unwrap();
    other.inject(Op::RenameVolume, Some(1), Fault::Fail("lvm on fire".into()));
    migrate(&s, &v.id);
    s.settle();
    let after = s.volume(&v.id).unwrap();
    assert_eq!((after.status, after.migration_status), (VolumeStatus::Error, Some(MigrationStatus::Error)));
    let dest = destination_of(&s, &v.id).expect("the destination holds the only copy: kept");
    assert_eq!(dest.status, VolumeStatus::Error);
    assert!(other.volume(&dest.id).is_some());
}

#[test]
fn a_crash_in_the_middle_of_the_copy_resumes_and_completes() {
    let mut s = Sim::with_two_pools();
    let v = s.ready_volume(1, 5);
    let other = s.other.clone().unwrap();
    other.inject(Op::WriteVolume, Some(1), Fault::HangBefore);
    migrate(&s, &v.id);
    other.wait_hung(1);
    assert_eq!(s.crash_and_restart(), 1, "the migration resumes");
    s.settle();
    let after = s.volume(&v.id).unwrap();
    assert_eq!((after.status, after.host.as_str()), (VolumeStatus::Available, OTHER));
    assert_eq!(after.migration_status, Some(MigrationStatus::Success));
    assert_eq!(s.store.read(|tx| tx.volumes(None)).unwrap().len(), 1);
}

#[test]
fn a_retype_on_demand_migrates_and_ends_with_the_new_type() {
    let s = Sim::with_two_pools();
    let v = s.ready_volume(1, 5);
    let specs = std::collections::BTreeMap::from([
        ("volume_backend_name".to_string(), "other".to_string()),
        ("multiattach".to_string(), "<is> True".to_string()),
    ]);
    let t = s.m.create_volume_type("shared-other".into(), None, true, specs).unwrap();
    let retype = |on_demand| VolumeAction::Retype { new_type: t.name.clone(), on_demand };
    assert!(matches!(s.act(&v.id, retype(false)), Err(crate::manager::ManagerError::Invalid(_))), "never");
    s.act(&v.id, retype(true)).unwrap();
    let during = s.volume(&v.id).unwrap();
    assert_eq!(during.status, VolumeStatus::Retyping);
    assert!(during.multiattach, "the new type's multiattach shows at once");
    s.settle();
    let after = s.volume(&v.id).unwrap();
    assert_eq!(
        (after.status, after.host.as_str(), after.volume_type_id.as_str()),
        (VolumeStatus::Available, OTHER, t.id.as_str())
    );
    assert!(after.multiattach);
}
