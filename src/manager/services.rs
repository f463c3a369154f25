//! The one service an agent is, as `os-services` shows it: `cinder-volume` on
//! `host@backend`, up while ember runs, enabled unless an admin disabled it. A
//! disabled service takes no new volumes (they end in `error`, "No valid
//! backend", as Cinder's scheduler skips disabled services); what exists keeps
//! working.

use super::{Manager, ManagerError, Result};
use crate::model::now;
use crate::store::Tx;

pub const VOLUME_BINARY: &str = "cinder-volume";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub binary: &'static str,
    /// `host@backend`.
    pub host: String,
    pub zone: String,
    pub disabled: bool,
    pub disabled_reason: Option<String>,
    pub updated_at: String,
}

impl Manager {
    /// `host@backend` of this agent's volume service.
    pub fn service_host(&self) -> String {
        self.settings.host.split('#').next().unwrap_or_default().to_string()
    }

    pub fn services(&self) -> Result<Vec<Service>> {
        let state = self.store.read(|tx| tx.service_state(VOLUME_BINARY))?;
        let (disabled, disabled_reason, updated_at) = state.unwrap_or((false, None, now()));
        Ok(vec![Service {
            binary: VOLUME_BINARY,
            host: self.service_host(),
            zone: self.settings.availability_zone.clone(),
            disabled,
            disabled_reason,
            updated_at,
        }])
    }

    /// Enables or disables the service named by `host` and `binary`.
    pub fn set_service_disabled(
        &self,
        host: &str,
        binary: &str,
        disabled: bool,
        reason: Option<&str>,
    ) -> Result<Service> {
        if binary != VOLUME_BINARY || host != self.service_host() {
            return Err(ManagerError::NotFound(format!("Service {binary} on host {host} could not be found.")));
        }
        self.store.write(|tx| tx.set_service_state(VOLUME_BINARY, disabled, reason))?;
        Ok(self.services()?.remove(0))
    }

    /// Why the service takes no new volumes, if it does not.
    pub(super) fn service_disabled(&self, tx: &Tx) -> Result<Option<String>> {
        Ok(tx.service_state(VOLUME_BINARY)?.filter(|(disabled, ..)| *disabled).map(|(_, reason, _)| {
            format!("the volume service is disabled{}", reason.map(|r| format!(" ({r})")).unwrap_or_default())
        }))
    }
}
