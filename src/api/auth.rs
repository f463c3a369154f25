//! Who is calling, and what they may do (spec §1.6).
//!
//! `noauth` is Cinder's: any token, `X-Auth-Token: user[:project]`, every caller an
//! admin; a request without a token gets a 204 telling it which token to send.
//! `token` reads a file of bearer tokens, each bound to a user, a project and roles,
//! and enforces the default policy: admin (`role:admin`), member (admin, or member
//! of the owning project) and reader (admin, or reader/member of the project).

use std::collections::HashMap;
use std::path::Path;

use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;

use super::fault::ApiError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    pub user_id: String,
    pub project_id: String,
    pub roles: Vec<String>,
    pub is_admin: bool,
}

impl Context {
    fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r.eq_ignore_ascii_case(role))
    }

    /// `admin_api`.
    pub fn require_admin(&self, rule: &str) -> Result<(), ApiError> {
        if self.is_admin { Ok(()) } else { Err(ApiError::forbidden(rule)) }
    }

    /// "system admin or project member" of the resource's project.
    pub fn require_member(&self, rule: &str, project_id: &str) -> Result<(), ApiError> {
        if self.is_admin || (self.has_role("member") && self.project_id == project_id) {
            Ok(())
        } else {
            Err(ApiError::forbidden(rule))
        }
    }

    /// "system admin or project reader" (members read too: keystone's implied roles).
    pub fn require_reader(&self, rule: &str, project_id: &str) -> Result<(), ApiError> {
        let reads = self.has_role("reader") || self.has_role("member");
        if self.is_admin || (reads && self.project_id == project_id) { Ok(()) } else { Err(ApiError::forbidden(rule)) }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    token: String,
    user_id: String,
    project_id: String,
    #[serde(default)]
    roles: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    #[serde(default)]
    tokens: Vec<TokenEntry>,
}

pub enum Auth {
    NoAuth,
    Tokens(HashMap<String, Context>),
    Keystone(std::sync::Arc<super::keystone::Keystone>),
}

/// What authentication decided: a caller, or an answer to send back at once.
pub enum Authenticated {
    Caller(Context),
    /// noauth without a token: 204 carrying the token to use.
    NoAuthHint {
        token: String,
    },
}

impl Auth {
    /// Reads the tokens file. One readable by group or others is a leak of every
    /// credential in it: a warning, or with `refuse_readable` a refusal. A syntax
    /// error is reported by line only: the line may hold a token.
    pub fn load_tokens(path: &Path, refuse_readable: bool) -> Result<Auth, String> {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).map_err(|e| format!("read {}: {e}", path.display()))?.permissions().mode();
        if mode & 0o077 != 0 {
            let what = format!(
                "{} is readable by others (mode {:o}): chmod 600 it, it holds credentials",
                path.display(),
                mode & 0o777
            );
            if refuse_readable {
                return Err(what);
            }
            tracing::warn!("{what}");
        }
        let text = std::fs::read_to_string(path).map_err(|e| format!("read {}: {e}", path.display()))?;
        let file: TokenFile = toml::from_str(&text).map_err(|e| {
            let line = e.span().map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            let reason = e.message().lines().next().unwrap_or("invalid TOML").to_string();
            match line {
                Some(n) => {
                    format!("parse {}: line {n}: {reason} (the line is not shown: it may hold a token)", path.display())
                }
                None => format!("parse {}: {reason}", path.display()),
            }
        })?;
        let mut map = HashMap::new();
        for t in file.tokens {
            if t.token.len() < 16 {
                return Err(format!("{}: token of user {} is shorter than 16 characters", path.display(), t.user_id));
            }
            let is_admin = t.roles.iter().any(|r| r.eq_ignore_ascii_case("admin"));
            map.insert(t.token, Context { user_id: t.user_id, project_id: t.project_id, roles: t.roles, is_admin });
        }
        Ok(Auth::Tokens(map))
    }

    /// `WWW-Authenticate` of a 401, where the strategy names one.
    pub fn challenge(&self) -> Option<String> {
        match self {
            Auth::Keystone(k) => Some(k.challenge()),
            _ => None,
        }
    }

    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        url_project: Option<&str>,
    ) -> Result<Authenticated, ApiError> {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
        let token = header("x-auth-token").filter(|t| !t.is_empty());
        match self {
            Auth::NoAuth => {
                let Some(token) = token else {
                    let user = header("x-auth-user").unwrap_or("admin");
                    let project = header("x-auth-project-id").unwrap_or(user);
                    return Ok(Authenticated::NoAuthHint { token: format!("{user}:{project}") });
                };
                let (user, project) = match token.split_once(':') {
                    Some((user, project)) => (user, project),
                    // ember: a bare token takes the project from the URL when there is one.
                    None => (token, url_project.unwrap_or(token)),
                };
                Ok(Authenticated::Caller(Context {
                    user_id: user.to_string(),
                    project_id: project.to_string(),
                    roles: vec!["admin".to_string()],
                    is_admin: true,
                }))
            }
            Auth::Tokens(map) => token
                .and_then(|t| map.get(t))
                .cloned()
                .map(Authenticated::Caller)
                .ok_or_else(super::keystone::unauthorized),
            Auth::Keystone(keystone) => {
                let token = token.ok_or_else(super::keystone::unauthorized)?.to_string();
                let service = header("x-service-token").filter(|t| !t.is_empty()).map(str::to_string);
                let keystone = std::sync::Arc::clone(keystone);
                tokio::task::spawn_blocking(move || keystone.authenticate(&token, service.as_deref()))
                    .await
                    .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "token validation failed"))?
                    .map(Authenticated::Caller)
            }
        }
    }
}
