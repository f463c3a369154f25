//! User messages (Cinder's `/v3/messages`, 3.3+): how a caller learns why work it
//! was answered 202 for ended in an error status.
//!
//! Cinder builds `event_id` as `VOLUME_<resource>_<action id>_<detail id>` and the
//! text as `<action>:<detail>`. ember keeps Cinder's ids for the actions Cinder has
//! and numbers its own from 101 (Cinder has no message for a failed delete, revert,
//! manage or retype). After the detail, ember adds a reason safe to show the
//! volume's owner (the operating system's error, never paths or command lines).

use super::string_enum;

string_enum! {
    MessageResource { Volume = "VOLUME", Snapshot = "VOLUME_SNAPSHOT" }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageAction {
    pub id: &'static str,
    pub text: &'static str,
    /// The detail Cinder reports for this action's driver failures.
    pub detail: MessageDetail,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageDetail {
    pub id: &'static str,
    pub text: &'static str,
}

impl MessageDetail {
    pub const UNKNOWN_ERROR: MessageDetail = MessageDetail { id: "001", text: "An unknown error occurred." };
    pub const NO_BACKEND_AVAILABLE: MessageDetail =
        MessageDetail { id: "003", text: "Could not find any available weighted backend." };
    pub const DRIVER_FAILED_EXTEND: MessageDetail =
        MessageDetail { id: "010", text: "Volume Driver failed to extend volume." };
    pub const DRIVER_FAILED_CREATE: MessageDetail =
        MessageDetail { id: "012", text: "Driver failed to create the volume." };
    pub const SNAPSHOT_CREATE_ERROR: MessageDetail = MessageDetail { id: "013", text: "Snapshot failed to create." };
    pub const SNAPSHOT_DELETE_ERROR: MessageDetail = MessageDetail { id: "016", text: "Snapshot failed to delete." };
    pub const ATTACH_ERROR: MessageDetail = MessageDetail { id: "021", text: "Failed to attach volume." };
    pub const DETACH_ERROR: MessageDetail = MessageDetail { id: "022", text: "Failed to detach volume." };
    pub const FAILED_TO_UPLOAD_VOLUME: MessageDetail =
        MessageDetail { id: "004", text: "Failed to upload volume to image at backend." };
    pub const VOLUME_INVALID_STATE: MessageDetail = MessageDetail { id: "027", text: "Volume status is invalid." };
}

impl MessageAction {
    pub const SCHEDULE_ALLOCATE_VOLUME: MessageAction =
        MessageAction { id: "001", text: "schedule allocate volume", detail: MessageDetail::NO_BACKEND_AVAILABLE };
    pub const ATTACH_VOLUME: MessageAction =
        MessageAction { id: "002", text: "attach volume", detail: MessageDetail::ATTACH_ERROR };
    pub const COPY_VOLUME_TO_IMAGE: MessageAction =
        MessageAction { id: "003", text: "copy volume to image", detail: MessageDetail::FAILED_TO_UPLOAD_VOLUME };
    pub const COPY_IMAGE_TO_VOLUME: MessageAction =
        MessageAction { id: "005", text: "copy image to volume", detail: MessageDetail::UNKNOWN_ERROR };
    pub const REIMAGE_VOLUME: MessageAction =
        MessageAction { id: "016", text: "reimage volume", detail: MessageDetail::UNKNOWN_ERROR };
    pub const UNMANAGE_VOLUME: MessageAction =
        MessageAction { id: "006", text: "unmanage volume", detail: MessageDetail::UNKNOWN_ERROR };
    pub const EXTEND_VOLUME: MessageAction =
        MessageAction { id: "007", text: "extend volume", detail: MessageDetail::DRIVER_FAILED_EXTEND };
    pub const CREATE_VOLUME_FROM_BACKEND: MessageAction = MessageAction {
        id: "008",
        text: "create volume from backend storage",
        detail: MessageDetail::DRIVER_FAILED_CREATE,
    };
    pub const SNAPSHOT_CREATE: MessageAction =
        MessageAction { id: "009", text: "create snapshot", detail: MessageDetail::SNAPSHOT_CREATE_ERROR };
    pub const SNAPSHOT_DELETE: MessageAction =
        MessageAction { id: "010", text: "delete snapshot", detail: MessageDetail::SNAPSHOT_DELETE_ERROR };
    // ember's own, for work Cinder reports no message about.
    pub const DELETE_VOLUME: MessageAction =
        MessageAction { id: "101", text: "delete volume", detail: MessageDetail::UNKNOWN_ERROR };
    pub const REVERT_VOLUME: MessageAction =
        MessageAction { id: "102", text: "revert volume to snapshot", detail: MessageDetail::UNKNOWN_ERROR };
    pub const MANAGE_VOLUME: MessageAction =
        MessageAction { id: "103", text: "manage existing volume", detail: MessageDetail::UNKNOWN_ERROR };
    pub const RETYPE_VOLUME: MessageAction =
        MessageAction { id: "104", text: "retype volume", detail: MessageDetail::UNKNOWN_ERROR };
    /// A job row that could not be decoded at start (a corrupt or foreign journal).
    /// Cinder has no message action for snapshot manage or unmanage: ember's own,
    /// numbered after its others.
    pub const MANAGE_SNAPSHOT: MessageAction =
        MessageAction { id: "107", text: "manage existing snapshot", detail: MessageDetail::UNKNOWN_ERROR };
    pub const UNMANAGE_SNAPSHOT: MessageAction =
        MessageAction { id: "108", text: "unmanage snapshot", detail: MessageDetail::UNKNOWN_ERROR };
    pub const RESUME_JOB: MessageAction =
        MessageAction { id: "105", text: "resume unfinished work", detail: MessageDetail::VOLUME_INVALID_STATE };
    pub const DETACH_VOLUME: MessageAction =
        MessageAction { id: "106", text: "detach volume", detail: MessageDetail::DETACH_ERROR };
    pub const MIGRATE_VOLUME: MessageAction =
        MessageAction { id: "109", text: "migrate volume", detail: MessageDetail::UNKNOWN_ERROR };
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub id: String,
    pub project_id: String,
    pub request_id: String,
    pub resource_type: MessageResource,
    pub resource_uuid: Option<String>,
    pub event_id: String,
    pub message_level: String,
    pub user_message: String,
    pub created_at: String,
    /// Cinder's `guaranteed_until`: kept at least until then, reaped after.
    pub expires_at: String,
}

impl Message {
    /// The event id and text Cinder would show for `action` on `resource`, with
    /// ember's reason after the detail.
    pub fn describe(resource: MessageResource, action: MessageAction, reason: &str) -> (String, String) {
        let event_id = format!("VOLUME_{}_{}_{}", resource.as_str(), action.id, action.detail.id);
        let text = if reason.is_empty() {
            format!("{}:{}", action.text, action.detail.text)
        } else {
            format!("{}:{} Reason: {reason}", action.text, action.detail.text)
        };
        (event_id, text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_read_as_cinder_builds_them() {
        let (event, text) =
            Message::describe(MessageResource::Volume, MessageAction::EXTEND_VOLUME, "No space left on device");
        assert_eq!(event, "VOLUME_VOLUME_007_010");
        assert_eq!(text, "extend volume:Volume Driver failed to extend volume. Reason: No space left on device");
        let (event, _) = Message::describe(MessageResource::Snapshot, MessageAction::SNAPSHOT_DELETE, "");
        assert_eq!(event, "VOLUME_VOLUME_SNAPSHOT_010_016");
    }
}
