//! Microversion negotiation (spec §1.2): `OpenStack-API-Version: volume 3.N`.

use super::fault::ApiError;
use axum::http::StatusCode;

pub const MIN: Version = Version(3, 0);
pub const MAX: Version = Version(3, 71);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u16, pub u16);

impl Version {
    pub fn at_least(self, major: u16, minor: u16) -> bool {
        self >= Version(major, minor)
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

/// The version a request runs at, from its headers (all values of
/// OpenStack-API-Version, joined with commas as HTTP allows).
pub fn negotiate(header: Option<&str>) -> Result<Version, ApiError> {
    let Some(header) = header else {
        return Ok(MIN);
    };
    let Some(entry) = header.split(',').find(|item| item.contains("volume")) else {
        return Err(ApiError::bad_request(format!(
            "API version request header '{}' does not name the 'volume' service.",
            header.trim()
        )));
    };
    let mut words = entry.split_whitespace();
    let (_service, value) = (words.next(), words.next().unwrap_or(""));
    if value == "latest" {
        return Ok(MAX);
    }
    let version = parse(value).ok_or_else(|| {
        ApiError::bad_request(format!(
            "API Version String {value} is of invalid format. Must be of format MajorNum.MinorNum."
        ))
    })?;
    if version < MIN || version > MAX {
        return Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            format!("Version {version} is not supported by the API. Minimum is {MIN} and maximum is {MAX}."),
        ));
    }
    Ok(version)
}

/// `^([1-9]\d*)\.([1-9]\d*|0)$`
fn parse(value: &str) -> Option<Version> {
    let (major, minor) = value.split_once('.')?;
    let number = |s: &str, zero_ok: bool| -> Option<u16> {
        let digits_only = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let leading_zero = s.len() > 1 && s.starts_with('0') || (!zero_ok && s == "0");
        if !digits_only || leading_zero {
            return None;
        }
        s.parse().ok()
    };
    Some(Version(number(major, false)?, number(minor, true)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_follows_the_spec() {
        assert_eq!(negotiate(None).unwrap(), Version(3, 0));
        assert_eq!(negotiate(Some("volume 3.40")).unwrap(), Version(3, 40));
        assert_eq!(negotiate(Some("volume latest")).unwrap(), MAX);
        assert_eq!(negotiate(Some("compute 2.1, volume 3.5")).unwrap(), Version(3, 5));
        assert_eq!(negotiate(Some("volume 3.72")).unwrap_err().status, StatusCode::NOT_ACCEPTABLE);
        assert_eq!(negotiate(Some("volume 2.0")).unwrap_err().status, StatusCode::NOT_ACCEPTABLE);
        for bad in ["volume 3", "volume 3.01", "volume 03.1", "volume 0.1", "volume abc", "volume 3.x", "volume"] {
            assert_eq!(negotiate(Some(bad)).unwrap_err().status, StatusCode::BAD_REQUEST, "{bad}");
        }
        assert_eq!(negotiate(Some("compute 2.1")).unwrap_err().status, StatusCode::BAD_REQUEST);
    }
}
