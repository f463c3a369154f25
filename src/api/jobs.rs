//! `/ember/v1/jobs`: ember's own resource, outside Cinder's `/v3`, showing the
//! durable jobs that run now (each copy with bytes done, total, rate and ETA)
//! and letting an admin cancel a running copy. It has its own small policy
//! table, checked the same way as the v3 one (api/policy.rs).

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use super::fault::ApiError;
use super::policy::{self, Level, Rule};
use super::{Reply, Req, bad_method};
use crate::manager::{JobView, Manager};

/// Every route of `/ember/v1` with its rule: members see their project's jobs,
/// admins every job and may cancel one.
pub const ROUTES: &[(&str, &[&str], Rule)] = &[
    ("GET", &["jobs"], Rule { name: "ember:jobs:get_all", level: Level::Reader }),
    ("GET", &["jobs", "*"], Rule { name: "ember:jobs:get", level: Level::Reader }),
    ("DELETE", &["jobs", "*"], Rule { name: "ember:jobs:cancel", level: Level::Admin }),
];

pub fn route(m: &Manager, req: &Req, path: &[&str]) -> Result<Reply, ApiError> {
    let same: Vec<_> = ROUTES.iter().filter(|(_, pattern, _)| policy::matches(pattern, path)).collect();
    if same.is_empty() {
        return Err(ApiError::resource_not_found());
    }
    let (_, _, rule) = same.iter().find(|(method, _, _)| *method == req.method.as_str()).ok_or_else(bad_method)?;
    // Jobs are checked against the caller's project; another's is "not found".
    policy::authorize(&req.ctx, *rule, &req.ctx.project_id)?;
    let caller = req.caller();
    match (&req.method, path) {
        (&Method::GET, ["jobs"]) => {
            let jobs: Vec<Value> = m.running_job_views(&caller)?.iter().map(view).collect();
            Ok(Reply::ok(json!({ "jobs": jobs })))
        }
        (&Method::GET, ["jobs", id]) => Ok(Reply::ok(json!({ "job": view(&m.job_view_of(&caller, job_id(id)?)?) }))),
        (&Method::DELETE, ["jobs", id]) => {
            m.cancel_job(&caller, job_id(id)?)?;
            Ok(Reply::empty(StatusCode::ACCEPTED))
        }
        _ => Err(bad_method()),
    }
}

fn job_id(text: &str) -> Result<i64, ApiError> {
    text.parse::<i64>()
        .ok()
        .filter(|&id| id > 0)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("Job {text} could not be found.")))
}

fn view(j: &JobView) -> Value {
    let s = &j.status;
    let copy = j.copy.as_ref().map(|c| {
        let r = c.progress.report();
        let other = if c.kind.starts_with("migrate_") { "destination_volume_id" } else { "image_id" };
        json!({
            other: c.other,
            "bytes_done": r.done,
            "bytes_total": r.total,
            "percent": if r.total == 0 { 0.0 } else { (r.done as f64 * 1000.0 / r.total as f64).round() / 10.0 },
            "rate_bytes_per_second": r.rate,
            "eta_seconds": r.eta,
        })
    });
    json!({
        "id": s.row.id,
        "kind": s.row.kind,
        "state": s.state,
        "volume_id": s.row.volume_id,
        "snapshot_id": s.row.snapshot_id,
        "project_id": s.row.project_id,
        "request_id": s.row.request_id,
        "steps_done": if s.state == "done" { j.steps } else { usize::try_from(s.row.step).unwrap_or(0) },
        "steps": j.steps,
        "last_error": s.last_error,
        "created_at": s.created_at,
        "finished_at": s.finished_at,
        "copy": copy,
    })
}
