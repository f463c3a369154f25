//! The Cinder v3 HTTP API (spec §1): both URL forms (with and without the project
//! segment), microversion negotiation, auth and policy, request ids, body limits,
//! Cinder fault bodies for every error, and the views. One axum fallback handler
//! runs the pipeline, so unknown routes and wrong methods get JSON faults too.

mod actions;
mod attachments;
mod auth;
mod encryption;
mod fault;
mod groups;
mod health;
mod jobs;
mod keystone;
mod messages;
mod microversion;
mod peer;
mod policy;
mod qos;
mod quotas;
mod resources;
mod schema;
mod services;
mod transfers;
mod views;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

pub use auth::Auth;
use auth::{Authenticated, Context};
pub use fault::ApiError;
pub use keystone::Keystone;
use microversion::Version;

use crate::manager::Manager;

/// oslo.middleware's default `max_request_body_size`.
pub const MAX_BODY: usize = 114_688;

pub struct ApiState {
    pub manager: Arc<Manager>,
    pub auth: Auth,
    pub public_endpoint: Option<String>,
    /// How long a client may take to send a request body.
    pub body_timeout: std::time::Duration,
    /// Listings build whole collections: at most one per core at a time, so a
    /// storm of them neither starves small requests of CPU nor holds a response's
    /// worth of memory per client (the rest wait their turn, in order).
    pub listings: tokio::sync::Semaphore,
    /// `/metrics` without a token (loopback listener, or `[http] metrics_public`).
    pub metrics_public: bool,
}

pub fn listing_slots() -> tokio::sync::Semaphore {
    tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get()))
}

pub fn router(state: Arc<ApiState>) -> Router {
    Router::new().fallback(handle).with_state(state)
}

/// One request as the handlers see it.
pub struct Req {
    pub method: Method,
    pub ctx: Context,
    /// `x-openstack-request-id` of this request (user messages name it).
    pub request_id: String,
    pub version: Version,
    pub base_url: String,
    pub query: HashMap<String, String>,
    /// The query as sent, in order, for the links that repeat it.
    pub query_pairs: Vec<(String, String)>,
    /// The project segment of the URL, if it had one (links repeat the URL's form).
    pub url_project: Option<String>,
    /// The If-Match header, for the volume metadata ETag check (3.15+).
    pub if_match: Option<String>,
    body: Bytes,
}

impl Req {
    /// The caller as the manager sees it.
    pub fn caller(&self) -> crate::manager::Caller {
        crate::manager::Caller {
            user_id: self.ctx.user_id.clone(),
            project_id: self.ctx.project_id.clone(),
            is_admin: self.ctx.is_admin,
            request_id: self.request_id.clone(),
        }
    }

    /// The body as JSON; anything unparsable is "Malformed request body".
    pub fn json(&self) -> Result<Value, ApiError> {
        schema::parse_body(&self.body)
    }

    /// Self and bookmark links of `collection/id`, with the project segment only
    /// when the request had one (as upstream's `_get_project_id_in_url`).
    pub fn links(&self, collection: &str, id: &str) -> Value {
        let project = self.url_project.as_deref().map(|p| format!("{p}/")).unwrap_or_default();
        serde_json::json!([
            {"rel": "self", "href": format!("{}/v3/{project}{collection}/{id}", self.base_url)},
            {"rel": "bookmark", "href": format!("{}/{project}{collection}/{id}", self.base_url)},
        ])
    }

    pub fn param(&self, key: &str) -> Option<&str> {
        self.query.get(key).map(String::as_str)
    }

    /// A boolean query parameter in Cinder's spellings; absent is false.
    pub fn flag(&self, key: &str) -> Result<bool, ApiError> {
        self.param(key).map(|v| schema::boolean(key, &Value::from(v))).transpose().map(|b| b.unwrap_or(false))
    }
}

/// A successful answer.
pub struct Reply {
    pub status: StatusCode,
    pub body: Option<Value>,
    /// An entity tag for the body (volume metadata from 3.15).
    pub etag: Option<String>,
}

/// A reply with its body serialized.
pub struct Encoded {
    status: StatusCode,
    body: Option<Vec<u8>>,
    etag: Option<String>,
}

impl Reply {
    fn encode(self) -> Encoded {
        // Serializing a `Value` cannot fail (its keys are strings).
        let body = self.body.map(|b| serde_json::to_vec(&b).unwrap_or_default());
        Encoded { status: self.status, body, etag: self.etag }
    }

    pub fn ok(body: Value) -> Reply {
        Reply { status: StatusCode::OK, body: Some(body), etag: None }
    }
    pub fn accepted(body: Option<Value>) -> Reply {
        Reply { status: StatusCode::ACCEPTED, body, etag: None }
    }
    pub fn empty(status: StatusCode) -> Reply {
        Reply { status, body: None, etag: None }
    }
}

/// Collections that may follow `/v3/` directly, without a project segment.
const COLLECTIONS: &[&str] = &[
    "volumes",
    "snapshots",
    "types",
    "manageable_volumes",
    "os-volume-manage",
    "manageable_snapshots",
    "os-snapshot-manage",
    "scheduler-stats",
    "messages",
    "attachments",
    "os-quota-sets",
    "os-quota-class-sets",
    "limits",
    "os-availability-zone",
    "backups",
    "os-volume-transfer",
    "volume-transfers",
    "os-services",
    "os-hosts",
    "capabilities",
    "extensions",
    "qos-specs",
    "group_types",
    "groups",
    "group_snapshots",
];

async fn handle(State(state): State<Arc<ApiState>>, request: Request) -> Response {
    let request_id = format!("req-{}", uuid::Uuid::new_v4());
    let started = std::time::Instant::now();
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_string();
    let is_v3 = path == "/v3" || path.starts_with("/v3/");
    let mut version = microversion::MIN;
    // Every line logged for the request, on blocking threads too, names it.
    let span = tracing::info_span!("request", request_id = %request_id, method = %parts.method, path = %path);
    let result = tracing::Instrument::instrument(
        async {
            match peer::is_peer_path(&path) {
                true => peer::pipeline(&state, &parts.method, &parts.uri, &parts.headers, body).await,
                false => {
                    pipeline(&state, &request_id, &parts.method, &parts.uri, &parts.headers, body, &mut version).await
                }
            }
        },
        span.clone(),
    )
    .await;
    // No await below: the guard may be held to the end.
    let _request = span.enter();
    let mut response = match result {
        Ok(reply) => {
            let mut r = match reply.body {
                Some(body) => {
                    let mut r = body.into_response();
                    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                    r
                }
                None => {
                    let mut r = reply.status.into_response();
                    if reply.status != StatusCode::NO_CONTENT {
                        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                    }
                    r
                }
            };
            *r.status_mut() = reply.status;
            if let Some(tag) = reply.etag.and_then(|t| HeaderValue::from_str(&t).ok()) {
                r.headers_mut().insert(header::ETAG, tag);
            }
            r
        }
        Err(Early::Fault(e)) => {
            if e.status.is_server_error() && e.status != StatusCode::NOT_IMPLEMENTED {
                tracing::error!(status = e.status.as_u16(), message = %e.message, "request failed");
            }
            (e.status, axum::Json(e.body())).into_response()
        }
        Err(Early::Response(r)) => r,
    };
    tracing::debug!(status = response.status().as_u16(), "answered");
    let route = metric_route(&parts.method, &path, version);
    crate::metrics::metrics().observe_request(
        parts.method.as_str(),
        &route,
        response.status().as_u16(),
        started.elapsed(),
    );
    let headers = response.headers_mut();
    let id = HeaderValue::from_str(&request_id).expect("request ids are ASCII");
    headers.insert("x-openstack-request-id", id.clone());
    headers.insert("x-compute-request-id", id);
    if is_v3 {
        let v = HeaderValue::from_str(&format!("volume {version}")).expect("versions are ASCII");
        headers.insert("openstack-api-version", v);
        headers.insert(header::VARY, HeaderValue::from_static("OpenStack-API-Version"));
    }
    response
}

/// The route a request's metrics count under: the policy table's pattern of the
/// path (`volumes/*/action`), so ids never become label values; `other` for
/// what names no route.
fn metric_route(method: &Method, path: &str, version: Version) -> String {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        [] => "/".to_string(),
        [one @ ("v3" | "healthz" | "readyz" | "metrics")] => one.to_string(),
        ["v3", rest @ ..] => {
            let rest = if COLLECTIONS.contains(&rest[0]) { rest } else { &rest[1..] };
            policy::lookup(method, rest, version).map_or_else(|_| "other".to_string(), |r| r.path.join("/"))
        }
        _ => "other".to_string(),
    }
}

enum Early {
    Fault(ApiError),
    Response(Response),
}

impl From<ApiError> for Early {
    fn from(e: ApiError) -> Self {
        Early::Fault(e)
    }
}

/// A refusal of authentication, with the `WWW-Authenticate` naming who issues
/// tokens where the strategy has one (Keystone's, as keystonemiddleware sends).
fn challenge(state: &ApiState, e: ApiError) -> Early {
    match state.auth.challenge().and_then(|c| HeaderValue::from_str(&c).ok()) {
        Some(value) if e.status == StatusCode::UNAUTHORIZED => {
            let mut r = (e.status, axum::Json(e.body())).into_response();
            r.headers_mut().insert(header::WWW_AUTHENTICATE, value);
            Early::Response(r)
        }
        _ => Early::Fault(e),
    }
}

fn base_url(state: &ApiState, headers: &HeaderMap) -> String {
    if let Some(url) = &state.public_endpoint {
        return url.trim_end_matches('/').to_string();
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost:8776");
    format!("http://{host}")
}

async fn pipeline(
    state: &ApiState,
    request_id: &str,
    method: &Method,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: Body,
    version: &mut Version,
) -> Result<Encoded, Early> {
    let base = base_url(state, headers);
    // The body is read before anything can refuse the request: a keep-alive client
    // sends it after the headers, and an unread body would cost it the connection.
    let body = match tokio::time::timeout(state.body_timeout, axum::body::to_bytes(body, MAX_BODY)).await {
        Ok(read) => read,
        Err(_) => {
            let fault = ApiError::new(StatusCode::REQUEST_TIMEOUT, "The request body did not arrive in time.");
            let mut r = (fault.status, axum::Json(fault.body())).into_response();
            r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            return Err(Early::Response(r));
        }
    };
    let body = body.map_err(|_| {
        let fault = ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("Request is too large: the body limit is {MAX_BODY} bytes."),
        );
        let mut r = (fault.status, axum::Json(fault.body())).into_response();
        r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("0"));
        Early::Response(r)
    })?;
    let segments: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        [] => {
            if *method != Method::GET {
                return Err(bad_method().into());
            }
            return Ok(
                Reply { status: StatusCode::MULTIPLE_CHOICES, body: Some(views::versions(&base)), etag: None }.encode()
            );
        }
        // A resource path with a trailing slash names nothing, as in Cinder's
        // router (only the version document, `/v3/`, takes one).
        ["v3", _, ..] if uri.path().ends_with('/') => return Err(ApiError::resource_not_found().into()),
        ["v3", ..] => {}
        // ember's own resources (the jobs): no project in the path, no microversions.
        ["ember", "v1", _, ..] => {}
        [what @ ("healthz" | "readyz" | "metrics")] => {
            return Err(Early::Response(health::answer(state, method, headers, what).await?));
        }
        _ => return Err(ApiError::resource_not_found().into()),
    }
    let header_value =
        headers.get_all("openstack-api-version").iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>().join(",");
    *version = microversion::negotiate((!header_value.is_empty()).then_some(header_value.as_str()))?;
    let ember = segments[0] == "ember";
    let rest = &segments[if ember { 2 } else { 1 }..];
    if rest.is_empty() {
        if *method != Method::GET {
            return Err(bad_method().into());
        }
        return Ok(Reply::ok(views::versions(&base)).encode());
    }
    let (url_project, rest) = if ember || COLLECTIONS.contains(&rest[0]) {
        (None, rest)
    } else {
        let project = rest[0];
        if !project.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase() || b == b'-') {
            return Err(ApiError::resource_not_found().into());
        }
        (Some(project), &rest[1..])
    };
    let ctx = match state.auth.authenticate(headers, url_project).await {
        Err(e) => return Err(challenge(state, e)),
        Ok(Authenticated::Caller(ctx)) => ctx,
        Ok(Authenticated::NoAuthHint { token }) => {
            let mut r = StatusCode::NO_CONTENT.into_response();
            let h = r.headers_mut();
            if let Ok(v) = HeaderValue::from_str(&token) {
                h.insert("x-auth-token", v);
            }
            if let Ok(v) = HeaderValue::from_str(&format!("{base}/v3")) {
                h.insert("x-server-management-url", v);
            }
            return Err(Early::Response(r));
        }
    };
    if let Some(project) = url_project {
        if project != ctx.project_id {
            return Err(ApiError::bad_request("Malformed request url").into());
        }
    }
    if !body.is_empty() {
        let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let media = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        if media != "application/json" && media != "application/vnd.openstack.volume+json" {
            return Err(ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "Unsupported Content-Type").into());
        }
    }
    let query_pairs: Vec<(String, String)> = uri
        .query()
        .map(|q| {
            q.split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (percent_decode(k, true), percent_decode(v, true))
                })
                .collect()
        })
        .unwrap_or_default();
    let req = Req {
        method: method.clone(),
        ctx,
        request_id: request_id.to_string(),
        version: *version,
        base_url: base,
        query: query_pairs.iter().cloned().collect(),
        query_pairs,
        url_project: url_project.map(str::to_string),
        if_match: headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok()).map(str::to_string),
        body,
    };
    let manager = Arc::clone(&state.manager);
    // Handlers touch SQLite (fsync on commit) and may stat files: keep them off the
    // async workers.
    let listing = method == Method::GET && (rest.len() == 1 || rest.last() == Some(&"detail"));
    let _slot = match listing {
        true => Some(
            state
                .listings
                .acquire()
                .await
                .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "The service is shutting down."))?,
        ),
        false => None,
    };
    let rest: Vec<String> = rest.iter().map(|s| percent_decode(s, false)).collect();
    let span = tracing::Span::current();
    let outcome = tokio::task::spawn_blocking(move || {
        let _request = span.enter();
        let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
        // Encoded here too: a listing's JSON is megabytes, not for an async worker.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match ember {
            true => jobs::route(&manager, &req, &rest).map(Reply::encode),
            false => resources::route(&manager, &req, &rest).map(Reply::encode),
        }))
    })
    .await;
    match outcome {
        Ok(Ok(result)) => result.map_err(Early::Fault),
        _ => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The server has either erred or is incapable of performing the requested operation.",
        )
        .into()),
    }
}

pub fn bad_method() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "The method specified is not allowed for this resource.")
}

/// Encodes a query component (RFC 3986 unreserved characters stay as they are).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes %XX escapes (and, in query strings, '+' as a space).
fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'+' if plus_is_space => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
