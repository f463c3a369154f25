//! Outside `/v3`: `GET /healthz` (the process answers), `GET /readyz` (the store
//! takes a write, the pool answers, every configured target backend lists its
//! exports) and `GET /metrics` (OpenMetrics text; without a token only where
//! ember listens on loopback or `[http] metrics_public` says so, else an admin's).

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::auth::Authenticated;
use super::fault::ApiError;
use super::{ApiState, bad_method};
use crate::manager::Manager;
use crate::metrics::{BackendLabels, StatusLabels, WhichLabels, metrics};
use crate::model::VolumeStatus;

pub(super) async fn answer(
    state: &ApiState,
    method: &Method,
    headers: &HeaderMap,
    what: &str,
) -> Result<Response, ApiError> {
    if *method != Method::GET {
        return Err(bad_method());
    }
    if what == "healthz" {
        return Ok((StatusCode::OK, axum::Json(json!({"status": "ok"}))).into_response());
    }
    if what == "metrics" && !state.metrics_public {
        match state.auth.authenticate(headers, None).await? {
            Authenticated::Caller(ctx) => ctx.require_admin("metrics")?,
            Authenticated::NoAuthHint { .. } => {
                return Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "The request you have made requires authentication.",
                ));
            }
        }
    }
    let manager = std::sync::Arc::clone(&state.manager);
    let what = what.to_string();
    let work = tokio::task::spawn_blocking(move || match what.as_str() {
        "readyz" => readiness(&manager),
        _ => scrape(&manager).map(|text| {
            let mut r = (StatusCode::OK, text).into_response();
            let kind = "application/openmetrics-text; version=1.0.0; charset=utf-8";
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
            r
        }),
    });
    work.await.map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "the check panicked"))?
}

/// Each check by name, `ok` or why not; 503 unless all pass.
fn readiness(m: &Manager) -> Result<Response, ApiError> {
    let checks = m.readiness();
    let ready = checks.iter().all(|(_, r)| r.is_ok());
    let body: serde_json::Map<String, serde_json::Value> =
        checks.into_iter().map(|(name, r)| (name, json!(r.err().unwrap_or_else(|| "ok".to_string())))).collect();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    Ok((status, axum::Json(json!({"ready": ready, "checks": body}))).into_response())
}

/// Sets what is read at scrape time, then encodes everything.
fn scrape(m: &Manager) -> Result<String, ApiError> {
    let metrics = metrics();
    let which = |w: &str| WhichLabels { which: w.to_string() };
    let snapshot = m.scrape_state()?;
    let gib = f64::from(1u32 << 30);
    for (name, value) in [
        ("total", snapshot.pool.total_gib * gib),
        ("free", snapshot.pool.free_gib * gib),
        ("allocated", snapshot.pool.allocated_gib * gib),
        ("provisioned", snapshot.pool.provisioned_gib as f64 * gib),
    ] {
        metrics.pool_bytes.get_or_create(&which(name)).set(value);
    }
    for (name, value) in [("data", snapshot.pool.thin_data_percent), ("metadata", snapshot.pool.thin_metadata_percent)]
    {
        if let Some(v) = value {
            metrics.thin_percent.get_or_create(&which(name)).set(v);
        }
    }
    for status in VolumeStatus::ALL {
        let n = snapshot.volumes.get(status.as_str()).copied().unwrap_or(0);
        metrics.volumes.get_or_create(&StatusLabels { status: status.to_string() }).set(n);
    }
    for (backend, n) in snapshot.exports {
        metrics.exports.get_or_create(&BackendLabels { backend }).set(n);
    }
    Ok(metrics.encode())
}
