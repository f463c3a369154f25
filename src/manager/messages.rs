//! User messages: listed, shown and deleted per project (an admin sees all), as
//! Cinder's message API does. They are written by the job runner (`jobs.rs`).

use super::{Caller, Manager, ManagerError, Result};
use crate::model::Message;

fn message_not_found(id: &str) -> ManagerError {
    ManagerError::NotFound(format!("Message {id} could not be found."))
}

impl Manager {
    pub fn messages(&self, caller: &Caller) -> Result<Vec<Message>> {
        let project = (!caller.is_admin).then_some(caller.project_id.as_str());
        Ok(self.store.read(|tx| tx.messages(project))?)
    }

    /// A message the caller may see: another project's is "not found".
    pub fn message(&self, caller: &Caller, id: &str) -> Result<Message> {
        self.store
            .read(|tx| tx.message(id))?
            .filter(|m| caller.is_admin || m.project_id == caller.project_id)
            .ok_or_else(|| message_not_found(id))
    }

    pub fn delete_message(&self, caller: &Caller, id: &str) -> Result<()> {
        self.store.write(|tx| {
            tx.message(id)?
                .filter(|m| caller.is_admin || m.project_id == caller.project_id)
                .ok_or_else(|| message_not_found(id))?;
            tx.delete_message(id)?;
            Ok(())
        })
    }
}
