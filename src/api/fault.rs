//! Cinder fault bodies (spec §1.4) and the one mapping from module errors to HTTP.

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::manager::ManagerError;

/// An error answer: status code and message; the fault name follows the code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into() }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
    pub fn resource_not_found() -> Self {
        Self::not_found("The resource could not be found.")
    }
    pub fn forbidden(rule: &str) -> Self {
        Self::new(StatusCode::FORBIDDEN, format!("Policy doesn't allow {rule} to be performed."))
    }
    pub fn malformed_body() -> Self {
        Self::bad_request("Malformed request body")
    }

    pub fn body(&self) -> Value {
        let mut inner = json!({"code": self.status.as_u16(), "message": self.message});
        if self.status == StatusCode::PAYLOAD_TOO_LARGE {
            inner["retryAfter"] = json!("0");
        }
        json!({ fault_name(self.status): inner })
    }
}

/// The fault key Cinder uses for a status code.
pub fn fault_name(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "badRequest",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "itemNotFound",
        405 => "badMethod",
        409 => "conflictingRequest",
        413 => "overLimit",
        415 => "badMediaType",
        501 => "notImplemented",
        503 => "serviceUnavailable",
        _ => "computeFault",
    }
}

impl From<ManagerError> for ApiError {
    fn from(e: ManagerError) -> Self {
        match e {
            ManagerError::NotFound(m) => ApiError::not_found(m),
            ManagerError::Invalid(m) => ApiError::bad_request(m),
            ManagerError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, m),
            ManagerError::OverLimit(m) => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, m),
            ManagerError::NotImplemented(m) => ApiError::new(StatusCode::NOT_IMPLEMENTED, m),
            ManagerError::PreconditionFailed(m) => ApiError::new(StatusCode::PRECONDITION_FAILED, m),
            ManagerError::Forbidden(m) => ApiError::new(StatusCode::FORBIDDEN, m),
            ManagerError::Backend(m) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, m),
            other => {
                tracing::error!(error = %other, "internal error");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "The server has either erred or is incapable of performing the requested operation.",
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_bodies_follow_cinder() {
        let e = ApiError::new(StatusCode::NOT_ACCEPTABLE, "Version 3.72 is not supported by the API.");
        assert_eq!(e.body()["computeFault"]["code"], 406);
        assert_eq!(ApiError::malformed_body().body()["badRequest"]["message"], "Malformed request body");
        let big = ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too big").body();
        assert_eq!(big["overLimit"]["retryAfter"], "0");
        assert_eq!(fault_name(StatusCode::UNSUPPORTED_MEDIA_TYPE), "badMediaType");
        assert_eq!(fault_name(StatusCode::METHOD_NOT_ALLOWED), "badMethod");
    }
}
