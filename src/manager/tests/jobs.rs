//! Jobs on the simulated pool (`pool::sim`): every way a job ends (success, each
//! failure and its error status and user message, an admin reset meanwhile), every
//! resume after a crash before and after each step, and the lock rules (a delete
//! of a source waits for its readers). A crash is a runtime dropped with its jobs
//! mid-step while the store and the pool live on, as the disk does.

use std::time::{Duration, Instant};

use super::caller;
use super::sim::Sim;
use crate::manager::{CreateSnapshot, CreateVolume, ManageVolume, ManagerError, VolumeAction};
use crate::model::{JobState, SnapshotStatus, Volume, VolumeStatus};
use crate::pool::sim::{Bytes, Event, Fault, Op};

/// What must hold once the resumed jobs are done.
type Check = Box<dyn Fn(&Sim)>;

fn starts(log: &[Event], op: Op, id: &str) -> usize {
    log.iter().filter(|e| **e == Event::Start(op, id.to_string())).count()
}

fn position(log: &[Event], event: &Event) -> usize {
    log.iter().position(|e| e == event).unwrap_or_else(|| panic!("{event:?} not in {log:?}"))
}

// ---- how jobs end ---------------------------------------------------------------

#[test]
fn every_job_kind_ends_in_its_final_status() {
    let s = Sim::new();
    let src = s.ready_volume(1, 7);
    let clone = s.create(CreateVolume { size: Some(2), source_volid: Some(src.id.clone()), ..Default::default() });
    s.settle();
    assert_eq!(s.status(&clone.id), VolumeStatus::Available);
    assert_eq!(s.pool.volume(&clone.id).unwrap().bytes, Bytes::Data(7));

    let snap = s.take_snapshot(&src.id);
    assert_eq!((snap.status, snap.progress.as_str()), (SnapshotStatus::Available, "100%"));
    let from_snap = s.create(CreateVolume { snapshot_id: Some(snap.id.clone()), ..Default::default() });
    s.settle();
    assert_eq!(s.pool.volume(&from_snap.id).unwrap().bytes, Bytes::Data(7));

    s.pool.write(&src.id, 8);
    s.act(&src.id, VolumeAction::Revert { snapshot_id: Some(snap.id.clone()) }).unwrap();
    s.settle();
    assert_eq!(s.status(&src.id), VolumeStatus::Available);
    assert_eq!(s.pool.volume(&src.id).unwrap().bytes, Bytes::Data(7));
    assert_eq!(s.snapshot(&snap.id).unwrap().status, SnapshotStatus::Available);

    s.act(&src.id, VolumeAction::Extend { new_size: 3 }).unwrap();
    s.settle();
    assert_eq!((s.status(&src.id), s.volume(&src.id).unwrap().size), (VolumeStatus::Available, 3));

    let gold = s.m.create_volume_type("gold".into(), None, true, Default::default()).unwrap();
    s.act(&clone.id, VolumeAction::Retype { new_type: "gold".into(), on_demand: false }).unwrap();
    s.settle();
    let retyped = s.volume(&clone.id).unwrap();
    assert_eq!((retyped.status, retyped.volume_type_id), (VolumeStatus::Available, gold.id));

    s.act(&clone.id, VolumeAction::Unmanage).unwrap();
    s.settle();
    assert!(s.volume(&clone.id).is_none());
    let name = format!("volume-{}", clone.id);
    let managed = s
        .on(|m| {
            m.manage_volume(
                &s.admin,
                ManageVolume { host: "node1@file#file".into(), source_name: name, ..Default::default() },
            )
        })
        .unwrap();
    s.settle();
    assert_eq!(s.status(&managed.id), VolumeStatus::Available);
    assert_eq!(s.pool.volume(&managed.id).unwrap().bytes, Bytes::Data(7));

    s.on(|m| m.delete_snapshot(&s.admin, &snap.id, false)).unwrap();
    s.settle();
    assert!(s.snapshot(&snap.id).is_none() && s.pool.snapshot(&snap.id).is_none());
    s.delete(&src.id, false);
    s.settle();
    assert!(s.volume(&src.id).is_none() && s.pool.volume(&src.id).is_none());
    assert!(s.job_states().iter().all(|(state, _)| *state == JobState::Done), "{:?}", s.job_states());
    assert!(s.messages().is_empty());
}

/// Each kind's failure: its error status, the job's reason, and a user message for
/// the owner that names the request, the resource and the operating system's error.
#[test]
fn every_failure_leaves_its_error_status_a_reason_and_a_message() {
    let s = Sim::new();
    let vol = s.ready_volume(1, 1);
    let snap = s.take_snapshot(&vol.id);
    let fail = |op| s.pool.inject(op, Some(1), Fault::Fail("device on fire".into()));
    let check = |resource: &str, event: &str| {
        let (state, reason) = s.last_job();
        assert_eq!(state, JobState::Failed);
        assert!(reason.as_deref().unwrap().contains("device on fire"), "{reason:?}");
        let msg = s.messages().pop().unwrap();
        assert_eq!((msg.resource_uuid.as_deref(), msg.event_id.as_str()), (Some(resource), event), "{msg:?}");
        assert_eq!(msg.project_id, "p1");
        assert_eq!(msg.request_id, s.admin.request_id);
        assert!(msg.user_message.contains("the storage backend refused the operation"), "{}", msg.user_message);
        assert!(!msg.user_message.contains("fire"), "internals stay out of user messages: {}", msg.user_message);
    };

    fail(Op::CreateVolume);
    let v = s.create(CreateVolume { size: Some(1), ..Default::default() });
    s.settle();
    assert_eq!(s.status(&v.id), VolumeStatus::Error);
    check(&v.id, "VOLUME_VOLUME_008_012");

    fail(Op::ExtendVolume);
    s.act(&vol.id, VolumeAction::Extend { new_size: 2 }).unwrap();
    s.settle();
    assert_eq!((s.status(&vol.id), s.volume(&vol.id).unwrap().size), (VolumeStatus::ErrorExtending, 1));
    check(&vol.id, "VOLUME_VOLUME_007_010");
    s.act(
        &vol.id,
        VolumeAction::ResetStatus {
            status: Some(VolumeStatus::Available),
            attach_status: None,
            migration_status: None,
        },
    )
    .unwrap();

    fail(Op::Revert);
    s.act(&vol.id, VolumeAction::Revert { snapshot_id: Some(snap.id.clone()) }).unwrap();
    s.settle();
    assert_eq!(s.status(&vol.id), VolumeStatus::Error);
    assert_eq!(s.snapshot(&snap.id).unwrap().status, SnapshotStatus::Available);
    check(&vol.id, "VOLUME_VOLUME_102_001");
    s.act(
        &vol.id,
        VolumeAction::ResetStatus {
            status: Some(VolumeStatus::Available),
            attach_status: None,
            migration_status: None,
        },
    )
    .unwrap();

    fail(Op::CreateSnapshot);
    let req = CreateSnapshot { volume_id: vol.id.clone(), ..Default::default() };
    let broken = s.on(|m| m.create_snapshot(&s.admin, req, false)).unwrap();
    s.settle();
    assert_eq!(s.snapshot(&broken.id).unwrap().status, SnapshotStatus::Error);
    check(&broken.id, "VOLUME_VOLUME_SNAPSHOT_009_013");

    fail(Op::DeleteSnapshot);
    s.on(|m| m.delete_snapshot(&s.admin, &broken.id, false)).unwrap();
    s.settle();
    assert_eq!(s.snapshot(&broken.id).unwrap().status, SnapshotStatus::ErrorDeleting);
    check(&broken.id, "VOLUME_VOLUME_SNAPSHOT_010_016");

    // A cascade whose second snapshot fails: both snapshots and the volume say so.
    s.on(|m| m.delete_snapshot(&s.admin, &broken.id, true)).unwrap();
    s.settle();
    let second = s.take_snapshot(&vol.id);
    s.pool.inject(Op::DeleteSnapshot, Some(2), Fault::Fail("device on fire".into()));
    s.delete(&vol.id, true);
    s.settle();
    assert_eq!(s.status(&vol.id), VolumeStatus::ErrorDeleting);
    assert!(s.snapshot(&snap.id).is_some(), "the row stays while the volume stays");
    assert_eq!(s.snapshot(&second.id).unwrap().status, SnapshotStatus::ErrorDeleting);
    check(&vol.id, "VOLUME_VOLUME_101_001");

    fail(Op::Unmanage);
    let other = s.ready_volume(1, 2);
    s.act(&other.id, VolumeAction::Unmanage).unwrap();
    s.settle();
    assert_eq!(s.status(&other.id), VolumeStatus::ErrorUnmanaging);
    check(&other.id, "VOLUME_VOLUME_006_001");

    fail(Op::Manage);
    s.pool.add_foreign("lost+found-lv", 3 << 30);
    let req =
        ManageVolume { host: "node1@file#file".into(), source_name: "lost+found-lv".into(), ..Default::default() };
    let managed = s.on(|m| m.manage_volume(&s.admin, req)).unwrap();
    s.settle();
    assert_eq!(s.status(&managed.id), VolumeStatus::ErrorManaging);
    check(&managed.id, "VOLUME_VOLUME_103_001");
}

/// An admin who resets the status while the job works has the last word on the
/// status; a job still waiting for its locks is cancelled and does not run.
#[test]
fn an_admin_reset_meanwhile_wins() {
    let s = Sim::new();
    let vol = s.ready_volume(1, 3);
    s.pool.inject(Op::ExtendVolume, Some(1), Fault::Delay(Duration::from_millis(150)));
    s.act(&vol.id, VolumeAction::Extend { new_size: 2 }).unwrap();
    while s.pool.calls(Op::ExtendVolume) == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let reset = |id: &str, status| {
        s.act(id, VolumeAction::ResetStatus { status: Some(status), attach_status: None, migration_status: None })
            .unwrap()
    };
    reset(&vol.id, VolumeStatus::Error);
    s.settle();
    std::thread::sleep(Duration::from_millis(200));
    let v = s.volume(&vol.id).unwrap();
    assert_eq!((v.status, v.size), (VolumeStatus::Error, 2), "the admin's status, the device's size");

    // A clone holds the source; a delete of the source queues behind it; the admin
    // resets the source: the delete never runs and the source keeps its bytes.
    reset(&vol.id, VolumeStatus::Available);
    s.pool.inject(Op::CreateVolume, Some(1), Fault::Delay(Duration::from_millis(150)));
    let clone = s.create(CreateVolume { source_volid: Some(vol.id.clone()), ..Default::default() });
    s.delete(&vol.id, false);
    reset(&vol.id, VolumeStatus::Available);
    s.settle();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(s.pool.calls(Op::DeleteVolume), 0);
    assert_eq!(s.pool.volume(&vol.id).unwrap().bytes, Bytes::Data(3));
    assert_eq!(s.status(&clone.id), VolumeStatus::Available);
    assert!(
        s.job_states()
            .iter()
            .any(|(st, why)| *st == JobState::Cancelled && why.as_deref() == Some("cancelled by os-reset_status"))
    );
}

// ---- resuming after a crash ------------------------------------------------------

/// A cascade delete has three steps (two snapshots, then the volume). Crashing
/// before and after each, then restarting, always ends with everything gone, and
/// the resumed job never repeats a step it recorded as done.
#[test]
fn a_cascade_delete_resumes_after_a_crash_at_every_step() {
    for (nth_call, op, fault) in [
        (1, Op::DeleteSnapshot, Fault::HangBefore),
        (1, Op::DeleteSnapshot, Fault::HangAfter),
        (2, Op::DeleteSnapshot, Fault::HangBefore),
        (2, Op::DeleteSnapshot, Fault::HangAfter),
        (1, Op::DeleteVolume, Fault::HangBefore),
        (1, Op::DeleteVolume, Fault::HangAfter),
    ] {
        let mut s = Sim::new();
        let vol = s.ready_volume(1, 1);
        let (a, b) = (s.take_snapshot(&vol.id), s.take_snapshot(&vol.id));
        s.pool.inject(op, Some(nth_call), fault.clone());
        s.delete(&vol.id, true);
        s.pool.wait_hung(1);
        assert_eq!(s.crash_and_restart(), 1, "{op:?} #{nth_call} {fault:?}: one job to resume");
        s.settle();
        assert!(s.volume(&vol.id).is_none(), "{op:?} #{nth_call} {fault:?}");
        assert!(s.snapshot(&a.id).is_none() && s.snapshot(&b.id).is_none());
        assert!(
            s.pool.volume(&vol.id).is_none() && s.pool.snapshot(&a.id).is_none() && s.pool.snapshot(&b.id).is_none()
        );
        let log = s.pool.log();
        // The first snapshot's step was recorded as done once the second began.
        let second_started = op != Op::DeleteSnapshot || nth_call == 2;
        if second_started {
            assert_eq!(starts(&log, Op::DeleteSnapshot, &a.id), 1, "{op:?} #{nth_call} {fault:?}: step repeated");
        }
        assert_eq!(s.last_job().0, JobState::Done);
    }
}

/// Every single-step job, crashed before and after its step, resumes to the state
/// it would have reached without the crash.
#[test]
fn single_step_jobs_resume_after_a_crash_before_or_after_the_step() {
    for fault in [Fault::HangBefore, Fault::HangAfter] {
        let mut s = Sim::new();
        let src = s.ready_volume(1, 5);
        let snap = s.take_snapshot(&src.id);
        let spare = s.ready_volume(1, 6);
        let third = s.ready_volume(1, 7);
        let mut checks: Vec<Check> = Vec::new();

        s.pool.inject(Op::CreateVolume, Some(1), fault.clone());
        let clone = s.create(CreateVolume { snapshot_id: Some(snap.id.clone()), ..Default::default() });
        checks.push(Box::new(move |s| {
            assert_eq!(s.status(&clone.id), VolumeStatus::Available);
            assert_eq!(s.pool.volume(&clone.id).unwrap().bytes, Bytes::Data(5));
        }));
        s.pool.inject(Op::ExtendVolume, Some(1), fault.clone());
        s.act(&spare.id, VolumeAction::Extend { new_size: 4 }).unwrap();
        let id = spare.id.clone();
        checks.push(Box::new(move |s| {
            assert_eq!((s.status(&id), s.volume(&id).unwrap().size), (VolumeStatus::Available, 4));
            assert_eq!(s.pool.volume(&id).unwrap().size, 4 << 30);
        }));
        s.pool.inject(Op::CreateSnapshot, Some(1), fault.clone());
        let req = CreateSnapshot { volume_id: third.id.clone(), ..Default::default() };
        let late = s.on(|m| m.create_snapshot(&s.admin, req, false)).unwrap();
        checks.push(Box::new(move |s| {
            assert_eq!(s.snapshot(&late.id).unwrap().status, SnapshotStatus::Available);
            assert_eq!(s.pool.snapshot(&late.id).unwrap().bytes, Bytes::Data(7));
        }));
        s.pool.write(&src.id, 9);
        s.pool.inject(Op::Revert, Some(1), fault.clone());
        s.act(&src.id, VolumeAction::Revert { snapshot_id: Some(snap.id.clone()) }).unwrap();
        let id = src.id.clone();
        checks.push(Box::new(move |s| {
            assert_eq!(s.status(&id), VolumeStatus::Available);
            assert_eq!(s.pool.volume(&id).unwrap().bytes, Bytes::Data(5));
        }));

        // The clone and the revert both only read the snapshot: all four are in the
        // pool when the agent dies.
        s.pool.wait_hung(4);
        let resumed = s.crash_and_restart();
        assert_eq!(resumed, 4, "{fault:?}");
        s.settle();
        for check in &checks {
            check(&s);
        }
        assert!(s.job_states().iter().all(|(st, _)| *st == JobState::Done), "{:?}", s.job_states());
    }
}

/// A journal row this ember cannot decode fails loudly: the job ends as failed
/// with the reason, its volume is `error`, its owner gets a message, and nothing
/// runs for it.
#[test]
fn an_undecodable_job_fails_loudly_at_start() {
    let mut s = Sim::new();
    let vol = s.ready_volume(1, 1);
    s.store
        .write(|tx| {
            tx.execute_raw(&format!(
                "UPDATE volumes SET status = 'extending' WHERE id = '{0}'; \
                 INSERT INTO jobs (kind, spec, volume_id, request_id, project_id, created_at) VALUES \
                 ('extend_volume', '{{\"kind\":\"extend_volume\",\"volume\":\"{0}\",\"new_size\":2}}', '{0}', \
                  'req-old', 'p1', 'x');",
                vol.id
            ))
        })
        .unwrap();
    assert_eq!(s.crash_and_restart(), 0, "nothing is resumed");
    assert_eq!(s.status(&vol.id), VolumeStatus::Error);
    assert_eq!(s.pool.calls(Op::ExtendVolume), 0);
    let (state, reason) = s.last_job();
    assert_eq!(state, JobState::Failed);
    assert!(reason.unwrap().contains("does not decode"));
    let msg = s.messages().pop().unwrap();
    assert_eq!((msg.event_id.as_str(), msg.request_id.as_str()), ("VOLUME_VOLUME_105_027", "req-old"));
}

// ---- lock rules ------------------------------------------------------------------

/// The data-loss race of the jobs issue, on the simulated pool: a delete of the
/// source while a clone copies it waits for the copy (and the clone is whole).
#[test]
fn deleting_a_source_waits_for_the_clone_reading_it() {
    let s = Sim::new();
    let src = s.ready_volume(1, 42);
    s.pool.inject(Op::CreateVolume, Some(1), Fault::Delay(Duration::from_millis(100)));
    let clone = s.create(CreateVolume { source_volid: Some(src.id.clone()), ..Default::default() });
    s.delete(&src.id, false);
    assert_eq!(s.status(&src.id), VolumeStatus::Deleting, "accepted at once");
    s.settle();
    assert_eq!(s.pool.volume(&clone.id).unwrap().bytes, Bytes::Data(42), "the clone is not torn");
    assert!(s.volume(&src.id).is_none() && s.pool.volume(&src.id).is_none());
    let log = s.pool.log();
    assert!(
        position(&log, &Event::End(Op::CreateVolume, clone.id.clone()))
            < position(&log, &Event::Start(Op::DeleteVolume, src.id.clone())),
        "{log:?}"
    );
}

/// The same for a snapshot: deleting it (or force-deleting it while a revert
/// restores from it) waits for its readers.
#[test]
fn deleting_a_snapshot_waits_for_its_clone_and_its_revert() {
    let s = Sim::new();
    let vol = s.ready_volume(1, 11);
    let snap = s.take_snapshot(&vol.id);
    s.pool.inject(Op::CreateVolume, Some(1), Fault::Delay(Duration::from_millis(100)));
    let clone = s.create(CreateVolume { snapshot_id: Some(snap.id.clone()), ..Default::default() });
    s.on(|m| m.delete_snapshot(&s.admin, &snap.id, false)).unwrap();
    s.settle();
    assert_eq!(s.pool.volume(&clone.id).unwrap().bytes, Bytes::Data(11));
    assert!(s.snapshot(&snap.id).is_none());

    let snap = s.take_snapshot(&vol.id);
    s.pool.write(&vol.id, 12);
    s.pool.inject(Op::Revert, Some(1), Fault::Delay(Duration::from_millis(100)));
    s.act(&vol.id, VolumeAction::Revert { snapshot_id: Some(snap.id.clone()) }).unwrap();
    let refused = s.on(|m| m.delete_snapshot(&s.admin, &snap.id, false)).unwrap_err();
    assert!(matches!(refused, ManagerError::Invalid(_)), "a restoring snapshot is not deletable: {refused:?}");
    s.on(|m| m.delete_snapshot(&s.admin, &snap.id, true)).unwrap();
    s.settle();
    assert_eq!(s.pool.volume(&vol.id).unwrap().bytes, Bytes::Data(11), "the revert is not torn");
    assert!(s.snapshot(&snap.id).is_none());
}

/// Readers share: clones of one source copy side by side; writers of different
/// volumes do not wait for each other.
#[test]
fn readers_share_a_source_and_unrelated_jobs_run_in_parallel() {
    let s = Sim::new();
    let src = s.ready_volume(1, 1);
    s.pool.inject(Op::CreateVolume, None, Fault::Delay(Duration::from_millis(150)));
    let started = Instant::now();
    let clones: Vec<Volume> =
        (0..4).map(|_| s.create(CreateVolume { source_volid: Some(src.id.clone()), ..Default::default() })).collect();
    s.settle();
    assert!(started.elapsed() < Duration::from_millis(500), "clones ran one after another: {:?}", started.elapsed());
    for c in &clones {
        assert_eq!(s.pool.volume(&c.id).unwrap().bytes, Bytes::Data(1));
    }
    // Jobs on different volumes do not wait for each other.
    s.pool.clear_faults();
    s.pool.inject(Op::ExtendVolume, None, Fault::Delay(Duration::from_millis(150)));
    let started = Instant::now();
    for c in &clones {
        s.act(&c.id, VolumeAction::Extend { new_size: 2 }).unwrap();
    }
    s.settle();
    assert!(started.elapsed() < Duration::from_millis(500), "extends ran one after another: {:?}", started.elapsed());
}

/// Messages are the owner's: another project sees none of them, and may not
/// delete them.
#[test]
fn messages_belong_to_the_volume_owner() {
    let s = Sim::new();
    let user = caller("alice", "p2", false);
    s.pool.inject(Op::CreateVolume, Some(1), Fault::Fail("x".into()));
    let v = s.on(|m| m.create_volume(&user, CreateVolume { size: Some(1), ..Default::default() })).unwrap();
    s.settle();
    assert_eq!(s.status(&v.id), VolumeStatus::Error);
    let mine = s.m.messages(&user).unwrap();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].request_id, user.request_id);
    let stranger = caller("bob", "p3", false);
    assert!(s.m.messages(&stranger).unwrap().is_empty());
    assert!(matches!(s.m.message(&stranger, &mine[0].id), Err(ManagerError::NotFound(_))));
    assert!(matches!(s.m.delete_message(&stranger, &mine[0].id), Err(ManagerError::NotFound(_))));
    assert_eq!(s.m.messages(&s.admin).unwrap().len(), 1, "an admin sees every project's");
    s.m.delete_message(&user, &mine[0].id).unwrap();
    assert!(s.m.messages(&user).unwrap().is_empty());
}

/// os-update_snapshot_status reports what something outside the agent made; while
/// ember's own job creates the snapshot, the job decides its status.
#[test]
fn update_snapshot_status_waits_for_no_job_of_ember() {
    let s = Sim::new();
    let vol = s.ready_volume(1, 1);
    s.pool.inject(Op::CreateSnapshot, Some(1), Fault::HangAfter);
    let req = CreateSnapshot { volume_id: vol.id.clone(), ..Default::default() };
    let snap = s.on(|m| m.create_snapshot(&s.admin, req, false)).unwrap();
    s.pool.wait_hung(1);
    let update = |status: &str, progress: Option<&str>| {
        s.m.update_snapshot_status(&s.admin, &snap.id, status, progress.map(str::to_string))
    };
    assert!(matches!(update("available", None), Err(ManagerError::Invalid(m)) if m.contains("ember's own job")));
    assert!(matches!(update("deleting", None), Err(ManagerError::Invalid(m)) if m.contains("not allowed")));
    s.pool.release();
    s.settle();
    assert_eq!(s.snapshot(&snap.id).unwrap().status, SnapshotStatus::Available, "the job ended it");
    assert!(matches!(update("error", None), Err(ManagerError::Invalid(m)) if m.contains("status available not")));
    // A snapshot left creating with no job (reset by an admin) takes the report.
    s.m.reset_snapshot_status(&s.admin, &snap.id, SnapshotStatus::Creating).unwrap();
    update("creating", Some("40%")).unwrap();
    update("error", None).unwrap();
    let after = s.snapshot(&snap.id).unwrap();
    assert_eq!((after.status, after.progress.as_str()), (SnapshotStatus::Error, "40%"));
}

// ---- snapshot manage and unmanage -------------------------------------------

fn manage_snapshot_req(volume: &str, source: &str) -> crate::manager::ManageSnapshot {
    crate::manager::ManageSnapshot { volume_id: volume.into(), source_name: source.into(), ..Default::default() }
}

/// Unmanage leaves the snapshot in the pool under its name, where the list finds
/// it safe to manage; manage takes it back under a new id with its bytes, refuses
/// it for another volume and, once managed, again.
#[test]
fn a_snapshot_unmanaged_is_listed_and_managed_back() {
    let s = Sim::new();
    let vol = s.ready_volume(1, 4);
    let other = s.ready_volume(1, 5);
    let snap = s.take_snapshot(&vol.id);
    s.on(|m| m.unmanage_snapshot(&s.admin, &snap.id)).unwrap();
    assert_eq!(s.snapshot(&snap.id).unwrap().status, SnapshotStatus::Unmanaging);
    s.settle();
    assert!(s.snapshot(&snap.id).is_none());
    assert!(s.pool.snapshot(&snap.id).is_none());
    let name = format!("snapshot-{}", snap.id);
    let listed = s.m.manageable_snapshots().unwrap();
    let entry = listed.iter().find(|e| e.name == name).expect("listed");
    assert!(entry.safe_to_manage && entry.cinder_id.is_none());
    assert_eq!(entry.source_name.as_deref(), Some(format!("volume-{}", vol.id).as_str()));

    let wrong = s.on(|m| m.manage_snapshot(&s.admin, manage_snapshot_req(&other.id, &name))).unwrap_err();
    assert!(matches!(&wrong, ManagerError::Invalid(t) if t.contains("is a snapshot of")), "{wrong:?}");
    let missing = s.on(|m| m.manage_snapshot(&s.admin, manage_snapshot_req(&vol.id, "nosuch"))).unwrap_err();
    assert!(matches!(missing, ManagerError::NotFound(_)));

    let managed = s.on(|m| m.manage_snapshot(&s.admin, manage_snapshot_req(&vol.id, &name))).unwrap();
    assert_eq!(managed.status, SnapshotStatus::Creating);
    s.settle();
    let got = s.snapshot(&managed.id).unwrap();
    assert_eq!((got.status, got.volume_size, got.volume_id.as_str()), (SnapshotStatus::Available, 1, vol.id.as_str()));
    assert_eq!(s.pool.snapshot(&managed.id).unwrap().bytes, Bytes::Data(4));
    let listed = s.m.manageable_snapshots().unwrap();
    let entry = listed.iter().find(|e| e.cinder_id.as_deref() == Some(managed.id.as_str())).unwrap();
    assert_eq!(entry.reason_not_safe.as_deref(), Some("already managed"));
    let twice = format!("snapshot-{}", managed.id);
    let again = s.on(|m| m.manage_snapshot(&s.admin, manage_snapshot_req(&vol.id, &twice))).unwrap_err();
    assert!(matches!(&again, ManagerError::Invalid(t) if t.contains("already managed")), "{again:?}");

    // Only available or error snapshots are unmanaged.
    s.on(|m| m.reset_snapshot_status(&s.admin, &managed.id, SnapshotStatus::Creating)).unwrap();
    let busy = s.on(|m| m.unmanage_snapshot(&s.admin, &managed.id)).unwrap_err();
    assert!(matches!(busy, ManagerError::Invalid(_)));
    assert_eq!(s.snapshot(&managed.id).unwrap().status, SnapshotStatus::Creating);
}

#[test]
fn failed_snapshot_manage_and_unmanage_leave_error_statuses_and_messages() {
    let s = Sim::new();
    let vol = s.ready_volume(1, 3);
    let snap = s.take_snapshot(&vol.id);
    s.pool.inject(Op::UnmanageSnapshot, Some(1), Fault::Fail("device on fire".into()));
    s.on(|m| m.unmanage_snapshot(&s.admin, &snap.id)).unwrap();
    s.settle();
    assert_eq!(s.snapshot(&snap.id).unwrap().status, SnapshotStatus::ErrorDeleting);
    let msg = s.messages().pop().unwrap();
    assert_eq!(
        (msg.resource_uuid.as_deref(), msg.event_id.as_str()),
        (Some(snap.id.as_str()), "VOLUME_VOLUME_SNAPSHOT_108_001")
    );

    s.pool.add_foreign_snapshot("foreign-snap", 1 << 30, &format!("volume-{}", vol.id));
    s.pool.inject(Op::ManageSnapshot, Some(1), Fault::Fail("device on fire".into()));
    let managed = s.on(|m| m.manage_snapshot(&s.admin, manage_snapshot_req(&vol.id, "foreign-snap"))).unwrap();
    s.settle();
    assert_eq!(s.snapshot(&managed.id).unwrap().status, SnapshotStatus::Error);
    let (state, reason) = s.last_job();
    assert_eq!(state, JobState::Failed);
    assert!(reason.unwrap().contains("device on fire"));
    let msg = s.messages().pop().unwrap();
    assert_eq!(
        (msg.resource_uuid.as_deref(), msg.event_id.as_str()),
        (Some(managed.id.as_str()), "VOLUME_VOLUME_SNAPSHOT_107_001")
    );
}

/// A crash before or after the pool's rename (or untagging) resumes to the end
/// the job would have reached.
#[test]
fn snapshot_manage_and_unmanage_resume_after_a_crash() {
    for fault in [Fault::HangBefore, Fault::HangAfter] {
        let mut s = Sim::new();
        let vol = s.ready_volume(1, 6);
        let snap = s.take_snapshot(&vol.id);
        s.pool.add_foreign_snapshot("foreign-snap", 1 << 30, &format!("volume-{}", vol.id));
        s.pool.inject(Op::UnmanageSnapshot, Some(1), fault.clone());
        s.on(|m| m.unmanage_snapshot(&s.admin, &snap.id)).unwrap();
        s.pool.inject(Op::ManageSnapshot, Some(1), fault.clone());
        let managed = s.on(|m| m.manage_snapshot(&s.admin, manage_snapshot_req(&vol.id, "foreign-snap"))).unwrap();
        s.pool.wait_hung(2);
        assert_eq!(s.crash_and_restart(), 2, "{fault:?}");
        s.settle();
        assert!(s.snapshot(&snap.id).is_none(), "{fault:?}");
        let got = s.snapshot(&managed.id).unwrap();
        assert_eq!(got.status, SnapshotStatus::Available, "{fault:?}");
        assert_eq!(s.pool.snapshot(&managed.id).unwrap().bytes, Bytes::Data(0x5a));
        assert!(s.job_states().iter().all(|(st, _)| *st == JobState::Done), "{:?}", s.job_states());
    }
}
