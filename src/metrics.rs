//! What Prometheus scrapes from `GET /metrics` (OpenMetrics text, by the
//! `prometheus-client` crate): requests and their latency per route, jobs per
//! kind and how they ended, bytes copied, export reconciliation, store commit
//! latency — counted where they happen, through the process-wide `metrics()` —
//! and, set at each scrape from the store and the pool, capacity, volumes per
//! status and exports per backend.

use std::sync::LazyLock;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    /// The policy table's pattern (`volumes/*/action`), or `other`.
    pub route: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: String,
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobEndLabels {
    pub kind: String,
    /// done, failed, cancelled or interrupted.
    pub outcome: String,
}

/// Which capacity figure, or which thin pool use.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WhichLabels {
    pub which: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    pub backend: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency() -> Histogram {
    // 0.5 ms to ~16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

fn job_duration() -> Histogram {
    // 10 ms to ~3 h.
    Histogram::new(exponential_buckets(0.01, 3.0, 14))
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_seconds: Histograms<RouteLabels>,
    pub jobs_running: Family<KindLabels, Gauge>,
    pub jobs_finished: Family<JobEndLabels, Counter>,
    pub job_seconds: Histograms<KindLabels>,
    pub copy_bytes: Counter,
    pub reconcile_runs: Counter,
    pub reconcile_drift: Counter,
    pub commit_seconds: Histogram,
    /// Set at each scrape: total, free, allocated, provisioned (bytes).
    pub pool_bytes: Family<WhichLabels, Gauge<f64, AtomicU64>>,
    /// Set at each scrape: thin pool data and metadata use (percent).
    pub thin_percent: Family<WhichLabels, Gauge<f64, AtomicU64>>,
    /// Set at each scrape: volumes per status (every status, zero included).
    pub volumes: Family<StatusLabels, Gauge>,
    /// Set at each scrape: exports per target backend.
    pub exports: Family<BackendLabels, Gauge>,
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("ember");
        let m = Metrics {
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(latency),
            jobs_running: Family::default(),
            jobs_finished: Family::default(),
            job_seconds: Family::new_with_constructor(job_duration),
            copy_bytes: Counter::default(),
            reconcile_runs: Counter::default(),
            reconcile_drift: Counter::default(),
            commit_seconds: latency(),
            pool_bytes: Family::default(),
            thin_percent: Family::default(),
            volumes: Family::default(),
            exports: Family::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register("http_requests", "API requests answered, by route and status", m.requests.clone());
        r.register_with_unit(
            "http_request_duration",
            "Time to answer an API request",
            Unit::Seconds,
            m.request_seconds.clone(),
        );
        r.register("jobs_running", "Jobs working now, by kind", m.jobs_running.clone());
        r.register("jobs_finished", "Jobs ended, by kind and outcome", m.jobs_finished.clone());
        r.register_with_unit("job_duration", "Time a job worked", Unit::Seconds, m.job_seconds.clone());
        r.register_with_unit("copied", "Bytes copied between devices and files", Unit::Bytes, m.copy_bytes.clone());
        r.register("reconcile_runs", "Passes comparing the targets with the store", m.reconcile_runs.clone());
        r.register("reconcile_drift", "Volumes whose exports differed from the store", m.reconcile_drift.clone());
        r.register_with_unit("store_commit", "Time to commit a store write", Unit::Seconds, m.commit_seconds.clone());
        r.register_with_unit("pool", "Pool capacity", Unit::Bytes, m.pool_bytes.clone());
        r.register("pool_thin_used_percent", "Thin pool use (data, metadata)", m.thin_percent.clone());
        r.register("volumes", "Volumes, by status", m.volumes.clone());
        r.register("exports", "Exported volumes, by target backend", m.exports.clone());
        Metrics { registry, ..m }
    }

    pub fn observe_request(&self, method: &str, route: &str, status: u16, took: Duration) {
        let (method, route) = (method.to_string(), route.to_string());
        let status = status.to_string();
        self.requests.get_or_create(&RequestLabels { method: method.clone(), route: route.clone(), status }).inc();
        self.request_seconds.get_or_create(&RouteLabels { method, route }).observe(took.as_secs_f64());
    }

    /// A job started working; the guard ends it with `outcome`.
    pub fn job_started(&self, kind: &str) -> JobTimer<'_> {
        self.jobs_running.get_or_create(&KindLabels { kind: kind.to_string() }).inc();
        JobTimer { metrics: self, kind: kind.to_string(), started: std::time::Instant::now() }
    }

    /// The OpenMetrics text of everything.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Ends a job's time in `jobs_running` and records how it ended.
pub struct JobTimer<'a> {
    metrics: &'a Metrics,
    kind: String,
    started: std::time::Instant,
}

impl JobTimer<'_> {
    pub fn end(self, outcome: &str) {
        let m = self.metrics;
        let kind = KindLabels { kind: self.kind.clone() };
        m.jobs_running.get_or_create(&kind).dec();
        m.job_seconds.get_or_create(&kind).observe(self.started.elapsed().as_secs_f64());
        m.jobs_finished.get_or_create(&JobEndLabels { kind: self.kind, outcome: outcome.to_string() }).inc();
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_jobs_are_counted_in_openmetrics_text() {
        let m = Metrics::new();
        m.observe_request("GET", "volumes/*", 200, Duration::from_millis(3));
        m.job_started("create_volume").end("done");
        m.copy_bytes.inc_by(4096);
        let text = m.encode();
        assert!(text.contains(r#"ember_http_requests_total{method="GET",route="volumes/*",status="200"} 1"#), "{text}");
        assert!(text.contains(r#"ember_jobs_finished_total{kind="create_volume",outcome="done"} 1"#), "{text}");
        assert!(text.contains(r#"ember_jobs_running{kind="create_volume"} 0"#), "{text}");
        assert!(text.contains("ember_copied_bytes_total 4096"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
