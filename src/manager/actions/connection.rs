//! os-initialize_connection and os-terminate_connection (spec §3.22, §3.23): the
//! legacy attach flow's export half.

use super::{ActionOutcome, attachment_guard, invalid, refuse_maintenance};
use crate::manager::{Caller, Manager, ManagerError, Result};

impl Manager {
    pub(super) fn initialize_connection(
        &self,
        caller: &Caller,
        id: &str,
        connector: &serde_json::Value,
    ) -> Result<ActionOutcome> {
        let v = self.volume(caller, id)?;
        refuse_maintenance(&v)?;
        let has = |key: &str| connector.get(key).is_some_and(|v| v.is_string());
        if !has("initiator") && !has("nqn") {
            return Err(invalid(
                "Invalid input received: Connector doesn't have required information: initiator (iSCSI) \
                 or nqn (NVMe-oF).",
            ));
        }
        Err(ManagerError::NotImplemented(
            "os-initialize_connection needs the export layer (tgt, LIO or nvmet targets); it arrives with \
             the target issue."
                .to_string(),
        ))
    }

    pub(super) fn terminate_connection(&self, caller: &Caller, id: &str) -> Result<ActionOutcome> {
        let v = self.volume(caller, id)?;
        attachment_guard(&v, None)?;
        Err(ManagerError::NotImplemented(
            "os-terminate_connection needs the export layer (iSCSI/NVMe-oF targets); it arrives with the \
             target issue."
                .to_string(),
        ))
    }
}
