//! Keystone v3 tokens (`[auth] strategy = "keystone"`).
//!
//! ember logs in to Keystone as its own service user (`[auth.keystone]`) and
//! validates each caller's `X-Auth-Token` with `GET /v3/auth/tokens`, as
//! keystonemiddleware does in front of Cinder. A validation, and a refusal, is
//! reused for `cache_seconds` (never past the token's expiry): that bounds how
//! long a revoked token keeps working. An `X-Service-Token` is validated too and
//! must carry one of `service_roles`; with it, an expired user token still
//! passes (Cinder's long operations run on a user token that may expire midway).
//! Keystone unreachable, or refusing ember's own credentials, is a 503: nothing
//! passes that Keystone did not vouch for.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::auth::Context;
use super::fault::ApiError;
use crate::config::KeystoneConfig;
use crate::image::http::{self, Body, Endpoint};

/// Validations kept at most; when full, the stale go, then all.
const MAX_CACHED: usize = 10_000;
/// ember's own token is renewed this long before it expires (or at half its
/// life, when Keystone gives shorter ones).
const RENEW_BEFORE: Duration = Duration::from_secs(120);
/// The most of a Keystone answer read.
const MAX_ANSWER: u64 = 1 << 20;

pub struct Keystone {
    endpoint: Endpoint,
    config: KeystoneConfig,
    /// ember's own token and when to renew it.
    service: Mutex<Option<(String, SystemTime)>>,
    /// By (token, allow_expired).
    cache: Mutex<HashMap<(String, bool), Cached>>,
}

#[derive(Debug, Clone, PartialEq)]
enum Verdict {
    Valid { ctx: Context, expires: SystemTime },
    Invalid,
}

struct Cached {
    verdict: Verdict,
    until: Instant,
}

pub fn unauthorized() -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "The request you have made requires authentication.")
}

fn unavailable(why: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("The identity service cannot validate tokens: {why}."))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Keystone {
    pub fn new(config: KeystoneConfig) -> Result<Keystone, String> {
        let endpoint = Endpoint::parse(&config.url).map_err(|e| format!("[auth.keystone] url: {e}"))?;
        Ok(Keystone { endpoint, config, service: Mutex::new(None), cache: Mutex::new(HashMap::new()) })
    }

    /// `WWW-Authenticate` of a 401, as keystonemiddleware words it.
    pub fn challenge(&self) -> String {
        format!("Keystone uri=\"{}\"", self.config.url.trim_end_matches('/'))
    }

    /// Who holds `token` (blocking: it may ask Keystone).
    pub fn authenticate(&self, token: &str, service_token: Option<&str>) -> Result<Context, ApiError> {
        let allow_expired = match service_token {
            None => false,
            Some(service) => {
                let ctx = self.validate(service, false)?;
                let wanted = &self.config.service_roles;
                if !ctx.roles.iter().any(|r| wanted.iter().any(|w| w.eq_ignore_ascii_case(r))) {
                    tracing::warn!(user = %ctx.user_id, "a service token without a service role was refused");
                    return Err(unauthorized());
                }
                true
            }
        };
        self.validate(token, allow_expired)
    }

    fn validate(&self, token: &str, allow_expired: bool) -> Result<Context, ApiError> {
        let key = (token.to_string(), allow_expired);
        let cached = lock(&self.cache).get(&key).filter(|c| c.until > Instant::now()).map(|c| c.verdict.clone());
        let verdict = match cached {
            Some(v) => v,
            None => {
                let v = self.ask(token, allow_expired)?;
                self.remember(key, v.clone());
                v
            }
        };
        match verdict {
            Verdict::Valid { ctx, expires } if allow_expired || expires > SystemTime::now() => Ok(ctx),
            _ => Err(unauthorized()),
        }
    }

    fn remember(&self, key: (String, bool), verdict: Verdict) {
        if self.config.cache_seconds == 0 {
            return;
        }
        let mut cache = lock(&self.cache);
        if cache.len() >= MAX_CACHED {
            let now = Instant::now();
            cache.retain(|_, c| c.until > now);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(key, Cached { verdict, until: Instant::now() + Duration::from_secs(self.config.cache_seconds) });
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.config.timeout)
    }

    /// Keystone's word on `token`. A 401 means ember's own token went stale
    /// (expired, revoked): it is renewed once.
    fn ask(&self, token: &str, allow_expired: bool) -> Result<Verdict, ApiError> {
        let query = if allow_expired { "?allow_expired=1" } else { "" };
        let path = format!("{}/v3/auth/tokens{query}", self.endpoint.prefix);
        for renew in [false, true] {
            let service = self.service_token(renew)?;
            let headers =
                [("X-Auth-Token", service.as_str()), ("X-Subject-Token", token), ("Accept", "application/json")];
            let answer = http::request(&self.endpoint, self.timeout(), "GET", &path, &headers, Body::None)
                .map_err(|e| unavailable(format!("{} unreachable ({e})", self.config.url)))?;
            match answer.status {
                200 => {
                    let text = answer.text(MAX_ANSWER).map_err(|e| unavailable(format!("reading its answer: {e}")))?;
                    return parse_token(&text).map_err(unavailable);
                }
                404 => return Ok(Verdict::Invalid),
                401 if !renew => continue,
                status => {
                    tracing::error!(status, "Keystone refused to validate a token with ember's service token");
                    return Err(unavailable(format!("Keystone answered {status} to a validation")));
                }
            }
        }
        unreachable!("the second round returns")
    }

    /// ember's own token: kept until shortly before it expires.
    fn service_token(&self, renew: bool) -> Result<String, ApiError> {
        let mut held = lock(&self.service);
        if let Some((token, renew_at)) = held.as_ref() {
            if !renew && *renew_at > SystemTime::now() {
                return Ok(token.clone());
            }
        }
        let c = &self.config;
        let body = json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": c.username, "domain": {"id": c.user_domain_id}, "password": c.password}}},
            "scope": {"project": {"name": c.project_name, "domain": {"id": c.project_domain_id}}},
        }});
        let body = body.to_string();
        let path = format!("{}/v3/auth/tokens", self.endpoint.prefix);
        let headers = [("Content-Type", "application/json"), ("Accept", "application/json")];
        let answer =
            http::request(&self.endpoint, self.timeout(), "POST", &path, &headers, Body::Bytes(body.as_bytes()))
                .map_err(|e| unavailable(format!("{} unreachable ({e})", c.url)))?;
        if answer.status != 201 {
            tracing::error!(status = answer.status, user = %c.username, "Keystone refused ember's service credentials");
            return Err(unavailable(format!("Keystone refused ember's credentials ({})", answer.status)));
        }
        let token = answer.header("x-subject-token").map(str::to_string);
        let text = answer.text(MAX_ANSWER).map_err(|e| unavailable(format!("reading its answer: {e}")))?;
        let expires = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["token"]["expires_at"].as_str().and_then(crate::model::parse_timestamp));
        let (Some(token), Some(expires)) = (token, expires) else {
            return Err(unavailable("Keystone's token answer has no X-Subject-Token or expires_at"));
        };
        let now = SystemTime::now();
        let life = expires.duration_since(now).unwrap_or_default();
        *held = Some((token.clone(), now + life.saturating_sub(RENEW_BEFORE.min(life / 2))));
        Ok(token)
    }
}

/// The caller a validation names: user, project and roles. ember serves
/// projects: a token scoped to no project (unscoped, domain, system) names no
/// one it can serve.
fn parse_token(text: &str) -> Result<Verdict, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("its answer is not JSON ({e})"))?;
    let t = &v["token"];
    let expires = t["expires_at"].as_str().and_then(crate::model::parse_timestamp).ok_or("no expires_at")?;
    let (Some(user), Some(project)) = (t["user"]["id"].as_str(), t["project"]["id"].as_str()) else {
        return Ok(Verdict::Invalid);
    };
    let roles: Vec<String> = t["roles"]
        .as_array()
        .map(|rs| rs.iter().filter_map(|r| r["name"].as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    // keystonemiddleware's X-Is-Admin-Project: true unless Keystone says otherwise.
    let admin_project = t["is_admin_project"].as_bool().unwrap_or(true);
    let is_admin = admin_project && roles.iter().any(|r| r.eq_ignore_ascii_case("admin"));
    let ctx = Context { user_id: user.to_string(), project_id: project.to_string(), roles, is_admin };
    Ok(Verdict::Valid { ctx, expires })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token_body(project: Option<&str>, roles: &[&str], admin_project: Option<bool>, expires: &str) -> String {
        let mut t = json!({
            "user": {"id": "u1", "name": "alice", "domain": {"id": "default"}},
            "roles": roles.iter().map(|r| json!({"id": format!("id-{r}"), "name": r})).collect::<Vec<_>>(),
            "expires_at": expires,
            "methods": ["password"],
        });
        if let Some(p) = project {
            t["project"] = json!({"id": p, "name": "alpha", "domain": {"id": "default"}});
        }
        if let Some(a) = admin_project {
            t["is_admin_project"] = json!(a);
        }
        json!({ "token": t }).to_string()
    }

    #[test]
    fn validations_name_the_user_project_and_roles() {
        let later = "2099-01-01T00:00:00.000000Z";
        let Verdict::Valid { ctx, .. } =
            parse_token(&token_body(Some("p1"), &["member", "reader"], None, later)).unwrap()
        else {
            panic!("valid")
        };
        assert_eq!((ctx.user_id.as_str(), ctx.project_id.as_str(), ctx.is_admin), ("u1", "p1", false));
        assert_eq!(ctx.roles, ["member", "reader"]);
        let admin = |a| match parse_token(&token_body(Some("p1"), &["admin"], a, later)).unwrap() {
            Verdict::Valid { ctx, .. } => ctx.is_admin,
            Verdict::Invalid => panic!("valid"),
        };
        assert!(admin(None), "no is_admin_project: the admin project (keystonemiddleware's default)");
        assert!(admin(Some(true)));
        assert!(!admin(Some(false)), "admin of a project that is not the admin project");
        assert_eq!(parse_token(&token_body(None, &["admin"], None, later)).unwrap(), Verdict::Invalid, "unscoped");
        assert!(parse_token(&token_body(Some("p1"), &[], None, "soon")).is_err(), "no readable expiry");
        assert!(parse_token("<html>").is_err());
    }

    fn keystone(url: &str) -> Keystone {
        let config = KeystoneConfig {
            url: url.to_string(),
            username: "ember".to_string(),
            password: "secret".to_string(),
            timeout: 2,
            ..KeystoneConfig::default()
        };
        Keystone::new(config).unwrap()
    }

    #[test]
    fn an_unreachable_keystone_is_503_and_never_a_pass() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let k = keystone(&format!("http://127.0.0.1:{port}"));
        let e = k.authenticate("some-token", None).unwrap_err();
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE, "{e:?}");
        assert!(e.message.contains("unreachable"), "{}", e.message);
        assert_eq!(k.challenge(), format!("Keystone uri=\"http://127.0.0.1:{port}\""));
    }

    #[test]
    fn cached_verdicts_answer_until_their_bound_and_expired_tokens_need_a_service_token() {
        let k = keystone("http://127.0.0.1:1");
        let past = SystemTime::now() - Duration::from_secs(5);
        let ctx =
            Context { user_id: "u".into(), project_id: "p".into(), roles: vec!["member".into()], is_admin: false };
        k.remember(
            ("live".into(), false),
            Verdict::Valid { ctx: ctx.clone(), expires: past + Duration::from_secs(3600) },
        );
        k.remember(("expired".into(), false), Verdict::Valid { ctx: ctx.clone(), expires: past });
        k.remember(("expired".into(), true), Verdict::Valid { ctx: ctx.clone(), expires: past });
        k.remember(("bad".into(), false), Verdict::Invalid);
        assert_eq!(k.validate("live", false).unwrap(), ctx, "from the cache: Keystone (port 1) is never asked");
        assert_eq!(k.validate("expired", false).unwrap_err().status, StatusCode::UNAUTHORIZED);
        assert_eq!(k.validate("expired", true).unwrap(), ctx, "a service token lets an expired one through");
        assert_eq!(k.validate("bad", false).unwrap_err().status, StatusCode::UNAUTHORIZED, "refusals are cached");
        lock(&k.cache).values_mut().for_each(|c| c.until = Instant::now());
        assert_eq!(
            k.validate("live", false).unwrap_err().status,
            StatusCode::SERVICE_UNAVAILABLE,
            "stale: asked again"
        );
    }
}
