//! The one service an agent is, as `os-services` shows it: `cinder-volume` on
//! `host@backend`, up while ember runs, enabled unless an admin disabled it. A
//! disabled service takes no new volumes (they end in `error`, "No valid
//! backend", as Cinder's scheduler skips disabled services); what exists keeps
//! working. A frozen one (`os-services/freeze`, Cinder's replication freeze) is
//! also disabled, and refuses deletes and snapshots until it thaws, as Cinder's
//! `assert_not_frozen` does; attach, detach and reads go on.

use super::{Manager, ManagerError, Result};
use crate::model::now;
use crate::store::{ProjectUsage, ServiceState, Tx};

pub const VOLUME_BINARY: &str = "cinder-volume";

/// Cinder's `disabled_reason` for a frozen backend.
const FROZEN_REASON: &str = "frozen";

/// Gauges `/metrics` sets at each scrape.
pub struct ScrapeState {
    pub pool: super::PoolStats,
    /// Volumes per status (only statuses some volume has).
    pub volumes: std::collections::BTreeMap<String, i64>,
    /// Exports per configured target backend.
    pub exports: Vec<(String, i64)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub binary: &'static str,
    /// `host@backend`.
    pub host: String,
    pub zone: String,
    pub disabled: bool,
    pub disabled_reason: Option<String>,
    pub frozen: bool,
    pub updated_at: String,
}

impl Manager {
    /// `host@backend` of this agent's volume service (its default pool's backend).
    pub fn service_host(&self) -> String {
        self.default_pool().service_host().to_string()
    }

    /// `host@backend` of each backend of the agent's pools, the default first:
    /// one volume service each, as Cinder runs one per `enabled_backends`
    /// entry. They share one state: disabling one disables the agent.
    fn service_hosts(&self) -> Vec<String> {
        let mut hosts: Vec<String> = Vec::new();
        for slot in &self.pools {
            let service = slot.service_host().to_string();
            if !hosts.contains(&service) {
                hosts.push(service);
            }
        }
        hosts
    }

    pub fn services(&self) -> Result<Vec<Service>> {
        let state = self.store.read(|tx| tx.service_state(VOLUME_BINARY))?;
        let state = state.unwrap_or_else(|| ServiceState { updated_at: now(), ..ServiceState::default() });
        Ok(self
            .service_hosts()
            .into_iter()
            .map(|host| Service {
                binary: VOLUME_BINARY,
                host,
                zone: self.settings.availability_zone.clone(),
                disabled: state.disabled,
                disabled_reason: state.disabled_reason.clone(),
                frozen: state.frozen,
                updated_at: state.updated_at.clone(),
            })
            .collect())
    }

    /// Enables or disables the service named by `host` and `binary`.
    pub fn set_service_disabled(
        &self,
        host: &str,
        binary: &str,
        disabled: bool,
        reason: Option<&str>,
    ) -> Result<Service> {
        if binary != VOLUME_BINARY || !self.service_hosts().iter().any(|h| h == host) {
            return Err(ManagerError::NotFound(format!("Service {binary} on host {host} could not be found.")));
        }
        self.update_service(|s| {
            s.disabled = disabled;
            s.disabled_reason = reason.map(str::to_string);
            Ok(())
        })
    }

    /// Freezes (or thaws) the backend of `host`: frozen, it is disabled with
    /// reason "frozen"; thawed, enabled again. Freezing a frozen backend (or
    /// thawing a thawed one) is refused, as Cinder's conditional update is.
    pub fn set_frozen(&self, host: &str, frozen: bool) -> Result<Service> {
        if !self.service_hosts().iter().any(|h| h == host) {
            return Err(ManagerError::Invalid(format!("Invalid input received: Service {host} could not be found.")));
        }
        self.update_service(|s| {
            if s.frozen == frozen {
                let state = if frozen { "already frozen" } else { "not frozen" };
                return Err(ManagerError::Invalid(format!("Invalid input received: backend {host} is {state}.")));
            }
            s.frozen = frozen;
            s.disabled = frozen;
            s.disabled_reason = frozen.then(|| FROZEN_REASON.to_string());
            Ok(())
        })
    }

    fn update_service(&self, change: impl FnOnce(&mut ServiceState) -> Result<()>) -> Result<Service> {
        self.store.write(|tx| {
            let mut state = tx.service_state(VOLUME_BINARY)?.unwrap_or_default();
            change(&mut state)?;
            state.updated_at = now();
            tx.set_service_state(VOLUME_BINARY, &state)?;
            Ok::<_, ManagerError>(())
        })?;
        Ok(self.services()?.remove(0))
    }

    /// Why the service takes no new volumes, if it does not.
    pub(super) fn service_disabled(&self, tx: &Tx) -> Result<Option<String>> {
        Ok(tx.service_state(VOLUME_BINARY)?.filter(|s| s.disabled).map(|s| {
            format!(
                "the volume service is disabled{}",
                s.disabled_reason.map(|r| format!(" ({r})")).unwrap_or_default()
            )
        }))
    }

    /// Cinder's `assert_not_frozen`: deletes and snapshots wait for a thaw.
    pub(super) fn assert_not_frozen(&self, tx: &Tx) -> Result<()> {
        match tx.service_state(VOLUME_BINARY)?.is_some_and(|s| s.frozen) {
            true => Err(ManagerError::Invalid(
                "Invalid input received: Modification operations are not allowed on frozen storage backends."
                    .to_string(),
            )),
            false => Ok(()),
        }
    }

    /// `/readyz`: the store takes a write, the pool answers, and each configured
    /// target backend lists its exports; each check's name with why it failed.
    pub fn readiness(&self) -> Vec<(String, std::result::Result<(), String>)> {
        let mut checks = vec![(
            "store".to_string(),
            self.store.write(|_| Ok::<_, crate::store::StoreError>(())).map_err(|e| e.to_string()),
        )];
        // The default pool is `pool`; the others are named by their host string.
        for (i, slot) in self.pools.iter().enumerate() {
            let name = if i == 0 { "pool".to_string() } else { format!("pool:{}", slot.host) };
            checks.push((name, slot.pool.capacity().map(drop).map_err(|e| e.to_string())));
        }
        for target in self.exporter.targets() {
            let usable = target.configured().map(drop).map_err(|e| e.to_string());
            checks.push((format!("target:{}", target.backend()), usable));
        }
        checks
    }

    /// What `/metrics` reads at each scrape.
    pub fn scrape_state(&self) -> Result<ScrapeState> {
        // The agent's pools together (the thin fill of the default one).
        let all = self.pool_stats()?;
        let mut pool = all[0].1.clone();
        for (_, stats) in &all[1..] {
            pool.total_gib += stats.total_gib;
            pool.free_gib += stats.free_gib;
            pool.allocated_gib += stats.allocated_gib;
            pool.provisioned_gib += stats.provisioned_gib;
        }
        let (volumes, exports) =
            self.store.read(|tx| Ok::<_, ManagerError>((tx.volume_status_counts()?, tx.exports()?)))?;
        let exports = self
            .exporter
            .targets()
            .map(|t| {
                let n = exports.iter().filter(|e| e.backend == t.backend()).count();
                (t.backend().to_string(), i64::try_from(n).unwrap_or(i64::MAX))
            })
            .collect();
        Ok(ScrapeState { pool, volumes, exports })
    }

    /// What each project holds here (volumes and snapshots, counts and GiB).
    pub fn project_usage(&self) -> Result<Vec<ProjectUsage>> {
        Ok(self.store.read(|tx| tx.project_usage())?)
    }
}
