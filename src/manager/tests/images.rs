//! The image jobs on the simulated pool: their statuses, the image store's side,
//! failures and a crash in the middle of a copy.

use super::sim::Sim;
use crate::image::{Caller, ImageStore, NewImage, Visibility, dir::DirStore};
use crate::manager::{CreateVolume, UploadImage, VolumeAction};
use crate::model::{JobState, VolumeStatus};
use crate::pool::sim::{Bytes, Fault, Op};

const ADMIN: Caller = Caller { project_id: "p1", is_admin: true, token: None };

fn store(s: &Sim) -> DirStore {
    DirStore::open(&s.dir.join("images")).unwrap()
}

/// An active raw image of `bytes` in the Sim's store.
fn image(s: &Sim, bytes: &[u8]) -> String {
    let store = store(s);
    let new = NewImage {
        name: "img".into(),
        disk_format: "raw".into(),
        container_format: "bare".into(),
        visibility: Visibility::Public,
        protected: false,
        min_disk: 0,
        properties: Default::default(),
    };
    let id = store.create(&ADMIN, &new).unwrap().id;
    store.upload(&ADMIN, &id, &mut &bytes[..], Some(bytes.len() as u64)).unwrap();
    id
}

fn upload(name: &str) -> VolumeAction {
    VolumeAction::UploadImage(UploadImage {
        image_name: name.into(),
        force: false,
        disk_format: "raw".into(),
        container_format: "bare".into(),
        visibility: Visibility::Private,
        protected: false,
    })
}

#[test]
fn create_from_image_ends_available_bootable_with_the_images_metadata() {
    let s = Sim::new();
    let id = image(&s, &[7u8; 100_000]);
    let v = s.create(CreateVolume { size: Some(1), image_id: Some(id.clone()), ..Default::default() });
    assert_eq!(v.status, VolumeStatus::Creating);
    s.settle();
    let v = s.volume(&v.id).unwrap();
    assert_eq!(v.status, VolumeStatus::Available);
    assert!(v.bootable);
    assert_eq!(v.image_metadata.get("image_id"), Some(&id));
    assert_eq!(v.image_metadata.get("disk_format").map(String::as_str), Some("raw"));
    assert!(matches!(s.pool.volume(&v.id).unwrap().bytes, Bytes::Copied(_)));
    // The same bytes give the same checksum: a reimage from it writes the same.
    let first = s.pool.volume(&v.id).unwrap().bytes;
    s.act(&v.id, VolumeAction::Reimage { image_id: id, reimage_reserved: false }).unwrap();
    s.settle();
    assert_eq!(s.pool.volume(&v.id).unwrap().bytes, first);
    assert_eq!(s.status(&v.id), VolumeStatus::Available);
}

#[test]
fn a_failed_upload_restores_the_volume_and_deletes_its_image() {
    let s = Sim::new();
    let v = s.ready_volume(1, 3);
    s.pool.inject(Op::ReadVolume, Some(1), Fault::Fail("disk on fire".into()));
    let outcome = s.act(&v.id, upload("doomed")).unwrap();
    let crate::manager::ActionOutcome::Uploading(up) = outcome else { panic!("{outcome:?}") };
    assert_eq!(up.volume.status, VolumeStatus::Uploading);
    s.settle();
    assert_eq!(s.status(&v.id), VolumeStatus::Available);
    assert!(store(&s).show(&ADMIN, &up.image.id).is_err(), "the half-made image is gone");
    let m = s.messages().pop().unwrap();
    assert_eq!(m.event_id, "VOLUME_VOLUME_003_004");
    assert!(!m.user_message.contains("fire"), "{}", m.user_message);
}

#[test]
fn a_copy_cut_by_a_crash_fails_on_resume_and_reimage_is_the_retry() {
    let mut s = Sim::new();
    let id = image(&s, &[1u8; 4096]);
    let v = s.ready_volume(1, 9);
    s.pool.inject(Op::WriteVolume, Some(1), Fault::HangBefore);
    s.act(&v.id, VolumeAction::Reimage { image_id: id.clone(), reimage_reserved: false }).unwrap();
    s.pool.wait_hung(1);
    assert_eq!(s.status(&v.id), VolumeStatus::Downloading);
    assert_eq!(s.crash_and_restart(), 1);
    s.settle();
    assert_eq!(s.status(&v.id), VolumeStatus::Error);
    assert_eq!(s.last_job().0, JobState::Failed);
    assert!(s.messages().iter().any(|m| m.user_message.contains("restart")), "{:?}", s.messages());
    s.act(&v.id, VolumeAction::Reimage { image_id: id, reimage_reserved: false }).unwrap();
    s.settle();
    assert_eq!(s.status(&v.id), VolumeStatus::Available);
}

#[test]
fn image_checks_come_before_any_change() {
    let s = Sim::new();
    let v = s.ready_volume(1, 1);
    let too_big = image(&s, &vec![0u8; (1 << 30) + 512]);
    let before = s.store.read(|tx| tx.job_history()).unwrap();
    let e = s.act(&v.id, VolumeAction::Reimage { image_id: too_big.clone(), reimage_reserved: false }).unwrap_err();
    assert!(e.to_string().contains("larger than the volume"), "{e}");
    let e = s.on(|m| {
        m.create_volume(&s.admin, CreateVolume { size: Some(1), image_id: Some(too_big), ..Default::default() })
    });
    assert!(e.is_err());
    let e = s
        .act(&v.id, VolumeAction::Reimage { image_id: uuid::Uuid::new_v4().to_string(), reimage_reserved: false })
        .unwrap_err();
    assert!(matches!(e, crate::manager::ManagerError::NotFound(_)), "{e}");
    assert_eq!(s.store.read(|tx| tx.job_history()).unwrap(), before, "no job was queued");
    assert_eq!(s.status(&v.id), VolumeStatus::Available);
}
