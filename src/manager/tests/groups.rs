//! Groups on the simulated pool: a group or group snapshot waiting on its
//! members is settled by the end of each member's job (available, error,
//! removed), also when the members' jobs resume after a crash.

use std::collections::BTreeMap;

use super::sim::Sim;
use crate::manager::{CreateGroup, CreateVolume, GroupSource, UpdateGroup};
use crate::model::{DEFAULT_TYPE_NAME, GroupSnapshotStatus, GroupStatus, VolumeStatus};
use crate::pool::sim::{Bytes, Fault, Op};

/// A group of the default type with `n` available members holding Data(1..=n).
fn group_of(s: &Sim, n: u64) -> (String, Vec<String>) {
    let gt = s.m.create_group_type("gt", None, true, &BTreeMap::new()).unwrap();
    let req = CreateGroup {
        name: Some("g".into()),
        group_type: gt.id,
        volume_types: vec![DEFAULT_TYPE_NAME.into()],
        ..CreateGroup::default()
    };
    let g = s.m.create_group(&s.admin, req).unwrap();
    assert_eq!(g.status, GroupStatus::Available, "an empty group has nothing to wait for");
    let mut members = Vec::new();
    for value in 1..=n {
        let req = CreateVolume {
            size: Some(1),
            volume_type: Some(DEFAULT_TYPE_NAME.into()),
            group_id: Some(g.id.clone()),
            ..CreateVolume::default()
        };
        let v = s.create(req);
        s.settle();
        s.pool.write(&v.id, value);
        members.push(v.id);
    }
    (g.id, members)
}

fn group_status(s: &Sim, id: &str) -> Option<GroupStatus> {
    s.store.read(|tx| tx.group(id)).unwrap().map(|g| g.status)
}

fn group_snapshot_status(s: &Sim, id: &str) -> Option<GroupSnapshotStatus> {
    s.store.read(|tx| tx.group_snapshot(id)).unwrap().map(|g| g.status)
}

#[test]
fn a_group_snapshot_is_available_when_its_last_snapshot_is_and_error_if_one_failed() {
    let s = Sim::new();
    let (g, members) = group_of(&s, 2);
    let gs = s.on(|m| m.create_group_snapshot(&s.admin, &g, None, None)).unwrap();
    s.settle();
    assert_eq!(group_snapshot_status(&s, &gs.id), Some(GroupSnapshotStatus::Available));
    let snaps = s.store.read(|tx| tx.group_snapshot_members(&gs.id)).unwrap();
    assert_eq!(snaps.iter().map(|s| s.volume_id.clone()).collect::<Vec<_>>(), members);

    s.pool.inject(Op::CreateSnapshot, Some(2), Fault::Fail("no room".into()));
    let failed = s.on(|m| m.create_group_snapshot(&s.admin, &g, None, None)).unwrap();
    s.settle();
    assert_eq!(group_snapshot_status(&s, &failed.id), Some(GroupSnapshotStatus::Error));
    // The members' jobs run side by side: which one made the second pool call is
    // not fixed, only that one of the two failed.
    let mut statuses: Vec<&str> = s
        .store
        .read(|tx| tx.group_snapshot_members(&failed.id))
        .unwrap()
        .into_iter()
        .map(|s| s.status.as_str())
        .collect();
    statuses.sort();
    assert_eq!(statuses, ["available", "error"]);

    // Deleting it deletes its snapshots by their jobs; it goes with the last.
    s.on(|m| m.delete_group_snapshot(&s.admin, &failed.id)).unwrap();
    s.settle();
    assert_eq!(group_snapshot_status(&s, &failed.id), None);
    assert!(s.store.read(|tx| tx.group_snapshot_members(&failed.id)).unwrap().is_empty());
}

#[test]
fn groups_made_from_sources_hold_the_sources_bytes_and_settle_on_their_members() {
    let s = Sim::new();
    let (g, members) = group_of(&s, 2);
    let gs = s.on(|m| m.create_group_snapshot(&s.admin, &g, None, None)).unwrap();
    s.settle();
    s.pool.write(&members[0], 9);
    for (source, first) in [(GroupSource::GroupSnapshot(gs.id.clone()), 1), (GroupSource::Group(g.clone()), 9)] {
        let made = s.on(|m| m.create_group_from_src(&s.admin, source, Some("copy".into()), None)).unwrap();
        assert_eq!(made.status, GroupStatus::Creating);
        s.settle();
        assert_eq!(group_status(&s, &made.id), Some(GroupStatus::Available));
        let copies = s.m.group_volume_ids(&made.id).unwrap();
        let bytes: Vec<Bytes> = copies.iter().map(|v| s.pool.volume(v).unwrap().bytes).collect();
        assert_eq!(bytes, [Bytes::Data(first), Bytes::Data(2)]);
    }
    // One clone failing leaves the new group in error.
    s.pool.inject(Op::CreateVolume, Some(2), Fault::Fail("no room".into()));
    let made = s.on(|m| m.create_group_from_src(&s.admin, GroupSource::Group(g.clone()), None, None)).unwrap();
    s.settle();
    assert_eq!(group_status(&s, &made.id), Some(GroupStatus::Error));
}

#[test]
fn a_group_deleted_with_its_volumes_goes_with_the_last_even_across_a_crash() {
    for fault in [Fault::HangBefore, Fault::HangAfter] {
        let mut s = Sim::new();
        let (g, members) = group_of(&s, 2);
        s.pool.inject(Op::DeleteVolume, Some(2), fault.clone());
        s.on(|m| m.delete_group(&s.admin, &g, true)).unwrap();
        assert_eq!(group_status(&s, &g), Some(GroupStatus::Deleting));
        s.pool.wait_hung(1);
        assert_eq!(group_status(&s, &g), Some(GroupStatus::Deleting), "one member is still being deleted");
        s.crash_and_restart();
        s.settle();
        assert_eq!(group_status(&s, &g), None, "{fault:?}");
        assert!(members.iter().all(|v| s.volume(v).is_none() && s.pool.volume(v).is_none()), "{fault:?}");
    }
}

#[test]
fn a_failed_member_delete_leaves_the_group_in_error_deleting() {
    let s = Sim::new();
    let (g, members) = group_of(&s, 2);
    s.pool.inject(Op::DeleteVolume, Some(1), Fault::Fail("busy".into()));
    s.on(|m| m.delete_group(&s.admin, &g, true)).unwrap();
    s.settle();
    assert_eq!(group_status(&s, &g), Some(GroupStatus::ErrorDeleting));
    let left: Vec<_> = members.iter().filter_map(|v| s.volume(v)).collect();
    assert_eq!(left.iter().map(|v| v.status).collect::<Vec<_>>(), [VolumeStatus::ErrorDeleting]);
    // After a reset its remaining member may be taken out of it.
    s.m.reset_group_status(&s.admin, &g, "available").unwrap();
    let remove = UpdateGroup { remove_volumes: vec![left[0].id.clone()], ..UpdateGroup::default() };
    s.m.update_group(&s.admin, &g, remove).unwrap();
    assert_eq!(s.volume(&left[0].id).unwrap().group_id, None);
}

#[test]
fn an_admin_reset_of_a_waiting_member_settles_its_group() {
    let s = Sim::new();
    let (g, _) = group_of(&s, 1);
    // The clone's job hangs; the admin resets the new member meanwhile.
    s.pool.inject(Op::CreateVolume, Some(1), Fault::HangBefore);
    let made = s.on(|m| m.create_group_from_src(&s.admin, GroupSource::Group(g.clone()), None, None)).unwrap();
    s.pool.wait_hung(1);
    let member = s.m.group_volume_ids(&made.id).unwrap().remove(0);
    let reset = crate::manager::VolumeAction::ResetStatus {
        status: Some(VolumeStatus::Error),
        attach_status: None,
        migration_status: None,
    };
    s.act(&member, reset).unwrap();
    assert_eq!(group_status(&s, &made.id), Some(GroupStatus::Error));
    s.pool.release();
    s.settle();
    assert_eq!(group_status(&s, &made.id), Some(GroupStatus::Error));
}
