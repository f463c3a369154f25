//! Jobs: the durable device half of every asynchronous action (DESIGN decision 1).
//!
//! A job is a typed `JobSpec`, stored as JSON in its row and decoded strictly (no
//! defaults, no unknown keys): a row that does not decode is a loud failure, never
//! a job that quietly does something else. The spec names every resource the job
//! reads or writes; the manager holds all their locks for the whole run. The row
//! also records how many of the job's steps are done, so a resumed job continues
//! after the last completed one, and why it failed.

use serde::{Deserialize, Serialize};

use super::{MessageAction, MessageResource, VolumeSource, string_enum};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum JobSpec {
    /// A blank volume, or a clone of a volume or snapshot.
    CreateVolume {
        volume: String,
        size_gib: u64,
        source: VolumeSource,
    },
    /// The volume and (cascade) the listed snapshots of it.
    DeleteVolume {
        volume: String,
        snapshots: Vec<String>,
    },
    ExtendVolume {
        volume: String,
        new_size_gib: u64,
    },
    /// Puts the snapshot's bytes back into the volume.
    RevertVolume {
        volume: String,
        snapshot: String,
    },
    CreateSnapshot {
        snapshot: String,
        volume: String,
    },
    DeleteSnapshot {
        snapshot: String,
        volume: String,
    },
    /// Takes the pool's `source_name` over as `volume`.
    ManageVolume {
        volume: String,
        source_name: String,
    },
    UnmanageVolume {
        volume: String,
    },
    /// Takes the pool's snapshot `source_name` of `volume` over as `snapshot`.
    ManageSnapshot {
        snapshot: String,
        volume: String,
        source_name: String,
    },
    UnmanageSnapshot {
        snapshot: String,
        volume: String,
    },
    /// Same pool, another type: the record changes, the bytes do not.
    RetypeVolume {
        volume: String,
        new_type: String,
    },
    /// Builds the volume's export and admits `initiator` (os-initialize_connection,
    /// an attachment's connector); a failure takes back what the request added.
    ExportVolume {
        volume: String,
        initiator: String,
        new_export: bool,
        new_acl: bool,
    },
    /// Makes the volume's export match the store again after an initiator or the
    /// whole export was removed from it (terminate, detach, force detach).
    ReconcileExport {
        volume: String,
    },
    /// A blank volume, then the image's bytes written onto it.
    CreateVolumeFromImage {
        volume: String,
        size_gib: u64,
        image: String,
    },
    /// The image's bytes written over the volume (os-reimage).
    Reimage {
        volume: String,
        image: String,
    },
    /// The volume's bytes streamed into the (queued) image `image`.
    UploadImage {
        volume: String,
        image: String,
        disk_format: String,
    },
    /// Moves the volume's bytes into `new_volume` (a record on the destination
    /// pool) and then gives the volume the destination's pool object, so its
    /// id, attachments and metadata survive (Cinder's completion swap). With
    /// `new_type`, a retype that needed the move.
    MigrateVolume {
        volume: String,
        new_volume: String,
        size_gib: u64,
        new_type: Option<String>,
    },
    /// A detached volume moved to a pool of another agent (`peer`, its
    /// `host@backend#pool` in `host`): created there as `new_volume`, streamed,
    /// verified, then adopted by the peer under the volume's own id; this
    /// agent keeps nothing of it.
    MigrateToPeer {
        volume: String,
        new_volume: String,
        peer: String,
        host: String,
        /// A retype that needed the move: the new type, by name (the peer's own).
        #[serde(default)]
        new_type_name: Option<String>,
    },
}

/// Something a job locks.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    Volume(String),
    Snapshot(String),
}

/// Readers share a resource; a writer has it alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    Read,
    Write,
}

impl JobSpec {
    /// The name in the row's `kind` column and in logs.
    pub fn kind(&self) -> &'static str {
        match self {
            JobSpec::CreateVolume { .. } => "create_volume",
            JobSpec::DeleteVolume { .. } => "delete_volume",
            JobSpec::ExtendVolume { .. } => "extend_volume",
            JobSpec::RevertVolume { .. } => "revert_volume",
            JobSpec::CreateSnapshot { .. } => "create_snapshot",
            JobSpec::DeleteSnapshot { .. } => "delete_snapshot",
            JobSpec::ManageVolume { .. } => "manage_volume",
            JobSpec::UnmanageVolume { .. } => "unmanage_volume",
            JobSpec::ManageSnapshot { .. } => "manage_snapshot",
            JobSpec::UnmanageSnapshot { .. } => "unmanage_snapshot",
            JobSpec::RetypeVolume { .. } => "retype_volume",
            JobSpec::ExportVolume { .. } => "export_volume",
            JobSpec::ReconcileExport { .. } => "reconcile_export",
            JobSpec::CreateVolumeFromImage { .. } => "create_volume_from_image",
            JobSpec::Reimage { .. } => "reimage",
            JobSpec::UploadImage { .. } => "upload_image",
            JobSpec::MigrateVolume { .. } => "migrate_volume",
            JobSpec::MigrateToPeer { .. } => "migrate_to_peer",
        }
    }

    /// The volume the job is about (for a snapshot job, the snapshot's volume).
    pub fn volume(&self) -> &str {
        match self {
            JobSpec::CreateVolume { volume, .. }
            | JobSpec::DeleteVolume { volume, .. }
            | JobSpec::ExtendVolume { volume, .. }
            | JobSpec::RevertVolume { volume, .. }
            | JobSpec::CreateSnapshot { volume, .. }
            | JobSpec::DeleteSnapshot { volume, .. }
            | JobSpec::ManageSnapshot { volume, .. }
            | JobSpec::UnmanageSnapshot { volume, .. }
            | JobSpec::ManageVolume { volume, .. }
            | JobSpec::UnmanageVolume { volume }
            | JobSpec::RetypeVolume { volume, .. }
            | JobSpec::ExportVolume { volume, .. }
            | JobSpec::ReconcileExport { volume }
            | JobSpec::CreateVolumeFromImage { volume, .. }
            | JobSpec::Reimage { volume, .. }
            | JobSpec::UploadImage { volume, .. }
            | JobSpec::MigrateVolume { volume, .. }
            | JobSpec::MigrateToPeer { volume, .. } => volume,
        }
    }

    /// The snapshot the job is about, if it is a snapshot's job or a revert.
    pub fn snapshot(&self) -> Option<&str> {
        match self {
            JobSpec::RevertVolume { snapshot, .. }
            | JobSpec::CreateSnapshot { snapshot, .. }
            | JobSpec::DeleteSnapshot { snapshot, .. }
            | JobSpec::ManageSnapshot { snapshot, .. }
            | JobSpec::UnmanageSnapshot { snapshot, .. } => Some(snapshot),
            _ => None,
        }
    }

    /// Every resource the job reads or writes, sorted, each once (the stronger
    /// access wins). A clone reads its source, so deleting the source waits for it.
    pub fn locks(&self) -> Vec<(Resource, Access)> {
        use Access::{Read, Write};
        let volume = |id: &str| Resource::Volume(id.to_string());
        let snapshot = |id: &str| Resource::Snapshot(id.to_string());
        let mut locks = match self {
            JobSpec::CreateVolume { volume: v, source, .. } => {
                let mut l = vec![(volume(v), Write)];
                match source {
                    VolumeSource::Blank => {}
                    VolumeSource::Volume { id } => l.push((volume(id), Read)),
                    VolumeSource::Snapshot { id } => l.push((snapshot(id), Read)),
                }
                l
            }
            JobSpec::DeleteVolume { volume: v, snapshots } => {
                std::iter::once((volume(v), Write)).chain(snapshots.iter().map(|s| (snapshot(s), Write))).collect()
            }
            JobSpec::RevertVolume { volume: v, snapshot: s } => vec![(volume(v), Write), (snapshot(s), Read)],
            // The snapshot is made from the volume's bytes, and removing a snapshot
            // touches its origin (LVM suspends it): both read the volume.
            // Renaming or retagging a snapshot LV touches its origin's metadata too.
            JobSpec::CreateSnapshot { snapshot: s, volume: v }
            | JobSpec::DeleteSnapshot { snapshot: s, volume: v }
            | JobSpec::ManageSnapshot { snapshot: s, volume: v, .. }
            | JobSpec::UnmanageSnapshot { snapshot: s, volume: v } => {
                vec![(snapshot(s), Write), (volume(v), Read)]
            }
            JobSpec::ExtendVolume { volume: v, .. }
            | JobSpec::ManageVolume { volume: v, .. }
            | JobSpec::UnmanageVolume { volume: v }
            | JobSpec::RetypeVolume { volume: v, .. }
            | JobSpec::ExportVolume { volume: v, .. }
            | JobSpec::ReconcileExport { volume: v }
            | JobSpec::CreateVolumeFromImage { volume: v, .. }
            | JobSpec::Reimage { volume: v, .. } => vec![(volume(v), Write)],
            // An upload only reads the volume (its status keeps writers away).
            JobSpec::UploadImage { volume: v, .. } => vec![(volume(v), Read)],
            JobSpec::MigrateVolume { volume: v, new_volume: n, .. } => vec![(volume(v), Write), (volume(n), Write)],
            JobSpec::MigrateToPeer { volume: v, .. } => vec![(volume(v), Write)],
        };
        // Sorted by resource, the write first where one appears twice; keep that one.
        locks.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        locks.dedup_by(|later, kept| later.0 == kept.0);
        locks
    }

    /// What a failure of this job is reported as (spec §2.6 messages).
    pub fn message_action(&self) -> (MessageResource, MessageAction) {
        use MessageAction as A;
        match self {
            JobSpec::CreateVolume { .. } => (MessageResource::Volume, A::CREATE_VOLUME_FROM_BACKEND),
            JobSpec::DeleteVolume { .. } => (MessageResource::Volume, A::DELETE_VOLUME),
            JobSpec::ExtendVolume { .. } => (MessageResource::Volume, A::EXTEND_VOLUME),
            JobSpec::RevertVolume { .. } => (MessageResource::Volume, A::REVERT_VOLUME),
            JobSpec::CreateSnapshot { .. } => (MessageResource::Snapshot, A::SNAPSHOT_CREATE),
            JobSpec::DeleteSnapshot { .. } => (MessageResource::Snapshot, A::SNAPSHOT_DELETE),
            JobSpec::ManageVolume { .. } => (MessageResource::Volume, A::MANAGE_VOLUME),
            JobSpec::UnmanageVolume { .. } => (MessageResource::Volume, A::UNMANAGE_VOLUME),
            JobSpec::ManageSnapshot { .. } => (MessageResource::Snapshot, A::MANAGE_SNAPSHOT),
            JobSpec::UnmanageSnapshot { .. } => (MessageResource::Snapshot, A::UNMANAGE_SNAPSHOT),
            JobSpec::RetypeVolume { .. } => (MessageResource::Volume, A::RETYPE_VOLUME),
            JobSpec::ExportVolume { .. } => (MessageResource::Volume, A::ATTACH_VOLUME),
            JobSpec::ReconcileExport { .. } => (MessageResource::Volume, A::DETACH_VOLUME),
            JobSpec::CreateVolumeFromImage { .. } => (MessageResource::Volume, A::COPY_IMAGE_TO_VOLUME),
            JobSpec::Reimage { .. } => (MessageResource::Volume, A::REIMAGE_VOLUME),
            JobSpec::UploadImage { .. } => (MessageResource::Volume, A::COPY_VOLUME_TO_IMAGE),
            JobSpec::MigrateVolume { new_type: Some(_), .. }
            | JobSpec::MigrateToPeer { new_type_name: Some(_), .. } => (MessageResource::Volume, A::RETYPE_VOLUME),
            JobSpec::MigrateVolume { new_type: None, .. } | JobSpec::MigrateToPeer { new_type_name: None, .. } => {
                (MessageResource::Volume, A::MIGRATE_VOLUME)
            }
        }
    }
}

string_enum! {
    /// Where a job row stands. Only `running` rows are resumed.
    JobState { Running = "running", Done = "done", Failed = "failed", Cancelled = "cancelled" }
}

/// A job as the runner holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: i64,
    pub spec: JobSpec,
    /// How many of the job's steps are complete.
    pub step: usize,
    /// The request that asked for the work, and whose it is (for its messages).
    pub request_id: String,
    pub project_id: String,
    /// Read back from the journal at start (a crash or stop interrupted it).
    pub resumed: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_decode_strictly() {
        let spec = JobSpec::CreateVolume {
            volume: "v".into(),
            size_gib: 3,
            source: VolumeSource::Snapshot { id: "s".into() },
        };
        let text = serde_json::to_string(&spec).unwrap();
        assert_eq!(text, r#"{"kind":"create_volume","volume":"v","size_gib":3,"source":{"type":"snapshot","id":"s"}}"#);
        assert_eq!(serde_json::from_str::<JobSpec>(&text).unwrap(), spec);
        for bad in [
            r#"{"kind":"create_volume","volume":"v","source":{"type":"blank"}}"#,
            r#"{"kind":"create_volume","volume":"v","size_gib":3,"source":{"type":"blank"},"extra":1}"#,
            r#"{"kind":"create_volume","volume":"v","size_gib":-1,"source":{"type":"blank"}}"#,
            r#"{"kind":"explode","volume":"v"}"#,
            r#"{"volume":"v"}"#,
            "null",
        ] {
            assert!(serde_json::from_str::<JobSpec>(bad).is_err(), "{bad} decoded");
        }
    }

    #[test]
    fn locks_are_sorted_and_name_every_source() {
        let clone =
            JobSpec::CreateVolume { volume: "b".into(), size_gib: 1, source: VolumeSource::Volume { id: "a".into() } };
        assert_eq!(
            clone.locks(),
            [(Resource::Volume("a".into()), Access::Read), (Resource::Volume("b".into()), Access::Write)]
        );
        let delete = JobSpec::DeleteVolume { volume: "v".into(), snapshots: vec!["s2".into(), "s1".into()] };
        assert_eq!(
            delete.locks(),
            [
                (Resource::Volume("v".into()), Access::Write),
                (Resource::Snapshot("s1".into()), Access::Write),
                (Resource::Snapshot("s2".into()), Access::Write),
            ]
        );
        let odd =
            JobSpec::CreateVolume { volume: "a".into(), size_gib: 1, source: VolumeSource::Volume { id: "a".into() } };
        assert_eq!(odd.locks(), [(Resource::Volume("a".into()), Access::Write)]);
    }
}
