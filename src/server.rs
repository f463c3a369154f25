//! `ember serve`: opens the store and the pool, resumes unfinished jobs, and serves
//! the API until SIGINT/SIGTERM. Running jobs are not waited for: their rows stay
//! in the journal and resume at the next start.

use std::sync::Arc;

use crate::api::{self, ApiState, Auth};
use crate::config::{AuthStrategy, Config, PoolConfig};
use crate::manager::{Exporter, Manager, PoolSlot, Settings};
use crate::pool::Pool;
use crate::pool::file::FilePool;
use crate::pool::lvm::LvmPool;
use crate::store::Store;

pub async fn serve(config: Config) -> Result<(), String> {
    config.validate().map_err(|e| e.to_string())?;
    // Before anything touches the data dir: a second ember there would resume the
    // first one's jobs and copy into the same volumes.
    let _lock = crate::datadir::lock(&config.data_dir)?;
    let files = crate::http::raise_file_limit();
    crate::datadir::make_private(&config.data_dir)?;
    let store = Arc::new(Store::open(&config.data_dir.join("ember.db")).map_err(|e| e.to_string())?);
    let mut pools = Vec::new();
    for pool in config.pool_configs() {
        let opened: Arc<dyn Pool> = match &pool {
            PoolConfig::File(c) => Arc::new(FilePool::open(&config.data_dir, c).map_err(|e| e.to_string())?),
            PoolConfig::Lvm(c) => Arc::new(LvmPool::open(c).map_err(|e| e.to_string())?),
        };
        pools.push(PoolSlot {
            host: config.volume_host_of(&pool),
            backend_name: pool.backend_name().to_string(),
            max_over_subscription_ratio: pool.max_over_subscription_ratio(),
            pool: opened,
        });
    }
    let settings = Settings {
        availability_zone: config.availability_zone.clone(),
        message_ttl: std::time::Duration::from_secs(config.message_ttl),
        quota: config.quota.clone(),
        copy_rate_limit: Some(config.copy.max_bytes_per_second).filter(|&b| b > 0),
        compress_qcow2_uploads: config.copy.compress_qcow2_uploads,
        scratch_dir: config.data_dir.join("tmp"),
        peers: config.peers.iter().map(crate::manager::Peer::from_config).collect::<Result<_, _>>()?,
    };
    // What an interrupted qcow2 upload left behind (its job fails on resume).
    let _ = std::fs::remove_dir_all(&settings.scratch_dir);
    let exporter = Exporter::open(&config.target)?;
    let images = crate::image::open_store(&config.images, &config.data_dir).map_err(|e| e.to_string())?;
    let manager = Manager::new(store, pools, exporter, settings, images);
    manager.ensure_default_type().map_err(|e| e.to_string())?;
    let resumed = manager.recover().map_err(|e| e.to_string())?;
    // Expired messages and long-ended jobs go hourly (and at every start).
    let reaper = Arc::clone(&manager);
    tokio::spawn(async move {
        let mut hourly = tokio::time::interval(std::time::Duration::from_secs(3600));
        hourly.tick().await;
        loop {
            hourly.tick().await;
            let m = Arc::clone(&reaper);
            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || m.housekeeping()).await {
                tracing::warn!(error = %e, "housekeeping failed; trying again in an hour");
            }
        }
    });
    let auth = match config.auth.strategy {
        AuthStrategy::Noauth => Auth::NoAuth,
        AuthStrategy::Token => {
            let path = config.auth.tokens_file.as_deref().ok_or("token auth needs tokens_file")?;
            Auth::load_tokens(path, config.auth.refuse_readable_tokens_file)?
        }
        AuthStrategy::Keystone => {
            let keystone = config.auth.keystone.clone().ok_or("keystone auth needs [auth.keystone]")?;
            Auth::Keystone(Arc::new(crate::api::Keystone::new(keystone)?))
        }
    };
    let state = Arc::new(ApiState {
        manager: Arc::clone(&manager),
        auth,
        public_endpoint: config.public_endpoint.clone(),
        body_timeout: std::time::Duration::from_secs(config.http.body_timeout),
        listings: crate::api::listing_slots(),
        metrics_public: config.http.metrics_public.unwrap_or(config.listen.ip().is_loopback()),
    });
    let listener =
        tokio::net::TcpListener::bind(config.listen).await.map_err(|e| format!("listen on {}: {e}", config.listen))?;
    tracing::info!(
        listen = %config.listen,
        data_dir = %config.data_dir.display(),
        host = %config.volume_host(),
        pools = config.pool_configs().len(),
        auth = ?config.auth.strategy,
        resumed_jobs = resumed,
        "ember serving the Cinder v3 API"
    );
    // What the targets serve is made to match the store at start (a rebooted host
    // has empty targets) and every five minutes after; in the background, behind
    // the jobs just resumed. The service manager hears READY after the first pass
    // (the listener is bound by then: requests wait in its backlog, not refused).
    let reconciler = Arc::clone(&manager);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(300));
        let mut first = true;
        loop {
            every.tick().await;
            let m = Arc::clone(&reconciler);
            match tokio::task::spawn_blocking(move || m.reconcile_exports()).await {
                Ok(Ok(0)) => {}
                Ok(Ok(fixed)) => tracing::info!(fixed, "exports reconciled"),
                Ok(Err(e)) => tracing::warn!(error = %e, "reconciling exports failed; trying again in five minutes"),
                Err(e) => tracing::error!(error = %e, "the reconciler panicked"),
            }
            if std::mem::take(&mut first) {
                crate::notify::notify("READY=1");
            }
            // Migration destinations peers made here and gave up on (a peer
            // that could not be reached is asked again next time).
            let m = Arc::clone(&reconciler);
            match tokio::task::spawn_blocking(move || m.reconcile_peer_targets()).await {
                Ok(Ok(0)) => {}
                Ok(Ok(deleted)) => tracing::info!(deleted, "orphaned migration destinations of peers deleted"),
                Ok(Err(e)) => tracing::warn!(error = %e, "reconciling peers' migration destinations failed"),
                Err(e) => tracing::error!(error = %e, "the peer reconciler panicked"),
            }
        }
    });
    if let Some(every) = crate::notify::watchdog_interval() {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                crate::notify::notify("WATCHDOG=1");
            }
        });
    }
    let limits = crate::http::Limits {
        max_connections: config.http.max_connections(files),
        header_timeout: std::time::Duration::from_secs(config.http.header_timeout),
        idle_timeout: std::time::Duration::from_secs(config.http.idle_timeout),
    };
    tracing::info!(open_files = files, max_connections = limits.max_connections, "connection limits");
    let stopping = Arc::clone(&manager);
    crate::http::serve(
        listener,
        api::router(state),
        limits,
        async move {
            shutdown_signal().await;
            // Jobs stop at their next step; their journal rows resume them at next start.
            stopping.stop();
        },
        // In-flight requests get a moment to finish; a client that keeps its
        // connection busy cannot hold the agent up. Unfinished jobs stay journaled.
        std::time::Duration::from_secs(10),
    )
    .await;
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    crate::notify::notify("STOPPING=1");
}
