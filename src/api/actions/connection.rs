//! os-initialize_connection and os-terminate_connection.

use serde_json::Value;

use super::{Parsed, Policy, connector, object};
use crate::api::fault::ApiError;
use crate::api::microversion::Version;
use crate::api::schema::required;
use crate::manager::VolumeAction as A;

pub(super) fn initialize_connection(name: &str, value: &Value, _: Version) -> Result<Parsed, ApiError> {
    let o = object(name, value, &["connector"])?;
    let c = connector(required(name, o, "connector")?, false)?;
    Parsed::ok(
        A::InitializeConnection { connector: c },
        Policy::Member("volume_extension:volume_actions:initialize_connection"),
    )
}

pub(super) fn terminate_connection(name: &str, value: &Value, _: Version) -> Result<Parsed, ApiError> {
    let o = object(name, value, &["connector"])?;
    let connector = connector(required(name, o, "connector")?, true)?;
    Parsed::accepted(
        A::TerminateConnection { connector },
        Policy::Member("volume_extension:volume_actions:terminate_connection"),
    )
}
