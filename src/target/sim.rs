//! A simulated target (test builds only): the `Target` trait over an in-memory
//! table of exports, with failures injected per operation and call, and a call
//! log, so the manager's export logic (rollback, reconciliation, the order of
//! teardown against the pool) is tested without root.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use super::{Configured, Created, Removed, Target, TargetError};
use crate::model::{Export, TargetBackend};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TargetOp {
    CreateExport,
    RemoveExport,
    Allow,
    Deny,
    RefreshSize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimExport {
    pub device: PathBuf,
    pub initiators: Vec<String>,
    /// The CHAP user the export was built with.
    pub chap_user: Option<String>,
    pub refreshed: usize,
}

#[derive(Default)]
struct State {
    exports: BTreeMap<String, SimExport>,
    calls: HashMap<TargetOp, usize>,
    /// (op, nth call): fails that call.
    faults: Vec<(TargetOp, usize)>,
    log: Vec<(TargetOp, String)>,
}

pub struct SimTarget {
    backend: TargetBackend,
    prefix: String,
    state: Mutex<State>,
}

impl SimTarget {
    pub fn new(backend: TargetBackend, prefix: &str) -> SimTarget {
        SimTarget { backend, prefix: prefix.to_string(), state: Mutex::default() }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fails the `nth` next call of `op` (1-based).
    pub fn fail(&self, op: TargetOp, nth: usize) {
        let mut s = self.lock();
        let at = s.calls.get(&op).copied().unwrap_or(0) + nth;
        s.faults.push((op, at));
    }

    pub fn export(&self, name: &str) -> Option<SimExport> {
        self.lock().exports.get(name).cloned()
    }

    pub fn names(&self) -> Vec<String> {
        self.lock().exports.keys().cloned().collect()
    }

    /// What a reboot (or `tgtadm` cleared by hand) leaves: nothing.
    pub fn wipe(&self) {
        self.lock().exports.clear();
    }

    /// An export someone else made, for the reconciler to find.
    pub fn add_raw(&self, name: &str, device: &str) {
        let export = SimExport { device: device.into(), initiators: vec![], chap_user: None, refreshed: 0 };
        self.lock().exports.insert(name.to_string(), export);
    }

    pub fn log(&self) -> Vec<(TargetOp, String)> {
        self.lock().log.clone()
    }

    fn enter(&self, op: TargetOp, name: &str) -> Result<(), TargetError> {
        let mut s = self.lock();
        let n = {
            let c = s.calls.entry(op).or_insert(0);
            *c += 1;
            *c
        };
        s.log.push((op, name.to_string()));
        if s.faults.contains(&(op, n)) {
            return Err(TargetError::Refused(format!("simulated {op:?} failure")));
        }
        Ok(())
    }
}

impl Target for SimTarget {
    fn backend(&self) -> TargetBackend {
        self.backend
    }

    fn lun(&self) -> u32 {
        1
    }

    fn configured(&self) -> Result<Vec<Configured>, TargetError> {
        Ok(self
            .lock()
            .exports
            .iter()
            .filter(|(name, _)| name.starts_with(&self.prefix))
            .map(|(name, e)| Configured {
                name: name.clone(),
                device: Some(e.device.clone()),
                initiators: e.initiators.clone(),
            })
            .collect())
    }

    fn create_export(&self, export: &Export, device: &Path) -> Result<Created, TargetError> {
        self.enter(TargetOp::CreateExport, &export.target_name)?;
        let mut s = self.lock();
        if s.exports.get(&export.target_name).is_some_and(|e| e.device == device) {
            return Ok(Created::AlreadyPresent);
        }
        let chap_user = export.chap.as_ref().map(|c| c.username.clone());
        let new = SimExport { device: device.to_path_buf(), initiators: vec![], chap_user, refreshed: 0 };
        s.exports.insert(export.target_name.clone(), new);
        Ok(Created::Created)
    }

    fn remove_export(&self, name: &str) -> Result<Removed, TargetError> {
        self.enter(TargetOp::RemoveExport, name)?;
        Ok(if self.lock().exports.remove(name).is_some() { Removed::Removed } else { Removed::Absent })
    }

    fn allow(&self, export: &Export, initiator: &str) -> Result<Created, TargetError> {
        self.enter(TargetOp::Allow, &export.target_name)?;
        let mut s = self.lock();
        let e = s
            .exports
            .get_mut(&export.target_name)
            .ok_or_else(|| TargetError::Refused(format!("{} is not exported", export.target_name)))?;
        if e.initiators.iter().any(|i| i == initiator) {
            return Ok(Created::AlreadyPresent);
        }
        e.initiators.push(initiator.to_string());
        Ok(Created::Created)
    }

    fn deny(&self, name: &str, initiator: &str) -> Result<Removed, TargetError> {
        self.enter(TargetOp::Deny, name)?;
        let mut s = self.lock();
        let Some(e) = s.exports.get_mut(name) else { return Ok(Removed::Absent) };
        let before = e.initiators.len();
        e.initiators.retain(|i| i != initiator);
        Ok(if e.initiators.len() < before { Removed::Removed } else { Removed::Absent })
    }

    fn refresh_size(&self, export: &Export, _device: &Path) -> Result<(), TargetError> {
        self.enter(TargetOp::RefreshSize, &export.target_name)?;
        match self.lock().exports.get_mut(&export.target_name) {
            Some(e) => {
                e.refreshed += 1;
                Ok(())
            }
            None => Err(TargetError::Refused(format!("{} is not exported", export.target_name))),
        }
    }
}
