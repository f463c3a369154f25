//! Request-body validation in the manner of Cinder's JSON schemas: objects with
//! closed key sets, Cinder's boolean strings, integers that may be digit strings,
//! bounded strings, uuid-like ids. Every failure is a 400 naming the field.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::fault::ApiError;

pub type Obj = Map<String, Value>;

pub fn field_error(field: &str, value: &Value, reason: &str) -> ApiError {
    let mut shown = value.to_string();
    if shown.len() > 200 {
        let mut cut = 200;
        while !shown.is_char_boundary(cut) {
            cut -= 1;
        }
        shown.truncate(cut);
        shown.push_str("...");
    }
    ApiError::bad_request(format!("Invalid input for field/attribute {field}. Value: {shown}. {reason}"))
}

/// Parses a request body; anything but a JSON document is "Malformed request body".
pub fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::malformed_body());
    }
    serde_json::from_slice(body).map_err(|_| ApiError::malformed_body())
}

/// The body must be an object holding `key` (and, unless `others` lists them, only it).
pub fn envelope<'a>(body: &'a Value, key: &str, others: &[&str]) -> Result<&'a Obj, ApiError> {
    let top = body.as_object().ok_or_else(ApiError::malformed_body)?;
    let inner = top.get(key).ok_or_else(|| field_error(key, body, &format!("'{key}' is a required property")))?;
    if let Some(extra) = top.keys().find(|k| *k != key && !others.contains(&k.as_str())) {
        return Err(field_error(
            extra,
            body,
            &format!("Additional properties are not allowed ('{extra}' was unexpected)"),
        ));
    }
    as_object(key, inner)
}

pub fn as_object<'a>(field: &str, value: &'a Value) -> Result<&'a Obj, ApiError> {
    value.as_object().ok_or_else(|| field_error(field, value, &format!("{value} is not of type 'object'")))
}

/// Refuses keys outside `allowed` (additionalProperties: false).
pub fn closed(field: &str, obj: &Obj, allowed: &[&str]) -> Result<(), ApiError> {
    if let Some(extra) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(field_error(
            field,
            &Value::Object(obj.clone()),
            &format!("Additional properties are not allowed ('{extra}' was unexpected)"),
        ));
    }
    Ok(())
}

pub fn required<'a>(field: &str, obj: &'a Obj, key: &str) -> Result<&'a Value, ApiError> {
    obj.get(key)
        .ok_or_else(|| field_error(field, &Value::Object(obj.clone()), &format!("'{key}' is a required property")))
}

/// A string of `min..=max` characters.
pub fn string(field: &str, value: &Value, min: usize, max: usize) -> Result<String, ApiError> {
    let s = value.as_str().ok_or_else(|| field_error(field, value, &format!("{value} is not of type 'string'")))?;
    let chars = s.chars().count();
    if chars < min {
        return Err(field_error(field, value, &format!("{value} is too short")));
    }
    if chars > max {
        return Err(field_error(field, value, &format!("{value} is too long")));
    }
    Ok(s.to_string())
}

/// A string or null.
pub fn nullable_string(field: &str, value: &Value, min: usize, max: usize) -> Result<Option<String>, ApiError> {
    if value.is_null() { Ok(None) } else { string(field, value, min, max).map(Some) }
}

/// Cinder's name/description: stripped of surrounding whitespace, at most 255.
pub fn name(field: &str, value: &Value) -> Result<Option<String>, ApiError> {
    Ok(nullable_string(field, value, 0, 255)?.map(|s| s.trim().to_string()))
}

/// `parameter_types.boolean`: JSON booleans or Cinder's boolean strings.
pub fn boolean(field: &str, value: &Value) -> Result<bool, ApiError> {
    match value {
        Value::Bool(b) => Ok(*b),
        Value::String(s) => match s.as_str() {
            "True" | "TRUE" | "true" | "1" | "ON" | "On" | "on" | "YES" | "Yes" | "yes" | "y" | "t" => Ok(true),
            "False" | "FALSE" | "false" | "0" | "OFF" | "Off" | "off" | "NO" | "No" | "no" | "n" | "f" => Ok(false),
            _ => Err(field_error(field, value, &format!("{value} is not a valid boolean"))),
        },
        _ => Err(field_error(field, value, &format!("{value} is not of type 'boolean', 'string'"))),
    }
}

/// An integer, or a string of digits, within `min..=max`.
pub fn integer(field: &str, value: &Value, min: i64, max: i64) -> Result<i64, ApiError> {
    let n = match value {
        Value::Number(n) => n.as_i64().filter(|_| !n.is_f64()),
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => s.parse::<i64>().ok(),
        _ => None,
    }
    .ok_or_else(|| field_error(field, value, &format!("{value} is not of type 'integer', 'string'")))?;
    if n < min {
        return Err(field_error(field, value, &format!("{value} is less than the minimum of {min}")));
    }
    if n > max {
        return Err(field_error(field, value, &format!("{value} is greater than the maximum of {max}")));
    }
    Ok(n)
}

/// oslo's `is_uuid_like`: 32 hex digits, hyphens anywhere, any case. Normalised to
/// the canonical lower-case hyphenated form.
pub fn uuid_like(field: &str, value: &Value) -> Result<String, ApiError> {
    let s = value.as_str().ok_or_else(|| field_error(field, value, &format!("{value} is not of type 'string'")))?;
    canonical_uuid(s).ok_or_else(|| field_error(field, value, &format!("{value} is not a 'uuid'")))
}

pub fn canonical_uuid(s: &str) -> Option<String> {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let hex = hex.to_ascii_lowercase();
    Some(format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..]))
}

/// A metadata map: keys 1..255 characters, string values up to `max_value`.
pub fn metadata(
    field: &str,
    value: &Value,
    key_ok: fn(&str) -> bool,
    max_value: usize,
) -> Result<BTreeMap<String, String>, ApiError> {
    let obj = as_object(field, value)?;
    let mut out = BTreeMap::new();
    for (k, v) in obj {
        if k.is_empty() || k.chars().count() > 255 || !key_ok(k) {
            return Err(field_error(field, value, &format!("'{k}' does not match any of the regexes")));
        }
        let s = v.as_str().ok_or_else(|| field_error(field, value, &format!("{v} is not of type 'string'")))?;
        if s.len() > max_value {
            return Err(field_error(field, value, &format!("value of '{k}' is too long")));
        }
        out.insert(k.clone(), s.to_string());
    }
    Ok(out)
}

/// Keys of volume, snapshot and image metadata (Cinder's `parameter_types.metadata`):
/// `^[a-zA-Z0-9-_:. /]{1,255}$`.
pub fn meta_key(k: &str) -> bool {
    k.chars().all(|c| c.is_ascii_alphanumeric() || "-_:. /".contains(c))
}

/// Keys of extra specs: the same without spaces and slashes.
pub fn spec_key(k: &str) -> bool {
    k.chars().all(|c| c.is_ascii_alphanumeric() || "-_:.".contains(c))
}

/// An optional metadata field of `obj`; absent or null is empty.
pub fn optional_metadata(obj: &Obj, key: &str) -> Result<BTreeMap<String, String>, ApiError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(v) => metadata(key, v, meta_key, 255),
    }
}

/// A dict given in a query string, as clients send it: JSON (`{"k": "v"}`) or a
/// Python literal (`{'k': 'v'}`, what cinderclient's `search_opts` produces).
/// Values are compared as strings.
pub fn dict_filter(field: &str, text: &str) -> Result<BTreeMap<String, String>, ApiError> {
    let bad = || ApiError::bad_request(format!("Invalid input received: {field} filter {text:?} is not a dict"));
    if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(text) {
        return Ok(map
            .into_iter()
            .map(|(k, v)| {
                let v = v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
                (k, v)
            })
            .collect());
    }
    let mut chars = text.trim().chars().peekable();
    let mut out = BTreeMap::new();
    let skip_ws = |c: &mut std::iter::Peekable<std::str::Chars>| {
        while c.peek().is_some_and(|x| x.is_whitespace()) {
            c.next();
        }
    };
    let literal = |c: &mut std::iter::Peekable<std::str::Chars>| -> Option<String> {
        skip_ws(c);
        let quote = *c.peek()?;
        if quote != '\'' && quote != '"' {
            let mut s = String::new();
            while c.peek().is_some_and(|x| !matches!(x, ',' | '}' | ':') && !x.is_whitespace()) {
                s.push(c.next()?);
            }
            return (!s.is_empty()).then_some(s);
        }
        c.next();
        let mut s = String::new();
        loop {
            match c.next()? {
                '\\' => s.push(c.next()?),
                x if x == quote => return Some(s),
                x => s.push(x),
            }
        }
    };
    if chars.next() != Some('{') {
        return Err(bad());
    }
    loop {
        skip_ws(&mut chars);
        if chars.peek() == Some(&'}') {
            chars.next();
            break;
        }
        let key = literal(&mut chars).ok_or_else(bad)?;
        skip_ws(&mut chars);
        if chars.next() != Some(':') {
            return Err(bad());
        }
        let value = literal(&mut chars).ok_or_else(bad)?;
        out.insert(key, value);
        skip_ws(&mut chars);
        match chars.next() {
            Some(',') => {}
            Some('}') => break,
            _ => return Err(bad()),
        }
    }
    skip_ws(&mut chars);
    if chars.next().is_some() {
        return Err(bad());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn booleans_accept_exactly_cinders_strings() {
        for t in ["True", "TRUE", "true", "1", "ON", "On", "on", "YES", "Yes", "yes", "y", "t"] {
            assert!(boolean("f", &json!(t)).unwrap(), "{t}");
        }
        for f in ["False", "FALSE", "false", "0", "OFF", "Off", "off", "NO", "No", "no", "n", "f"] {
            assert!(!boolean("f", &json!(f)).unwrap(), "{f}");
        }
        for bad in [json!("tRUE"), json!("2"), json!(""), json!(1), json!(null), json!([true])] {
            assert!(boolean("f", &bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn integers_and_digit_strings() {
        assert_eq!(integer("s", &json!(5), 1, 10).unwrap(), 5);
        assert_eq!(integer("s", &json!("7"), 1, 10).unwrap(), 7);
        for bad in [json!(0), json!("abc"), json!(null), json!(1.5), json!("-1"), json!(" 3"), json!(11), json!(true)] {
            assert!(integer("s", &bad, 1, 10).is_err(), "{bad}");
        }
        assert!(integer("s", &json!(1e300), 1, i64::MAX).is_err());
    }

    #[test]
    fn uuids_like_oslo() {
        let u = "6F1C2A3B-4D5E-4F60-8A9B-0C1D2E3F4A5B";
        assert_eq!(uuid_like("id", &json!(u)).unwrap(), u.to_ascii_lowercase());
        assert!(uuid_like("id", &json!("6f1c2a3b4d5e4f608a9b0c1d2e3f4a5b")).is_ok());
        assert!(uuid_like("id", &json!("xxx")).is_err());
        assert!(uuid_like("id", &json!(5)).is_err());
    }

    #[test]
    fn envelopes_are_closed() {
        assert!(envelope(&json!({"volume": {}}), "volume", &[]).is_ok());
        assert!(envelope(&json!({"volume": {}, "x": 1}), "volume", &[]).is_err());
        assert!(envelope(&json!({"volume": []}), "volume", &[]).is_err());
        assert!(envelope(&json!([]), "volume", &[]).is_err());
        assert!(parse_body(b"{\"a\":").is_err());
        assert!(parse_body(b"  ").is_err());
    }

    #[test]
    fn dict_filters_in_json_or_python_form() {
        let want = BTreeMap::from([("tag".to_string(), "x y".to_string()), ("n".to_string(), "1".to_string())]);
        assert_eq!(dict_filter("m", r#"{"tag": "x y", "n": 1}"#).unwrap(), want);
        assert_eq!(dict_filter("m", "{'tag': 'x y', 'n': 1}").unwrap(), want);
        assert_eq!(dict_filter("m", "{}").unwrap(), BTreeMap::new());
        assert_eq!(dict_filter("m", r"{'a': 'it\'s'}").unwrap()["a"], "it's");
        for bad in ["", "tag", "{'a'}", "{'a': 'b'", "{'a': 'b'} x", "[1]"] {
            assert!(dict_filter("m", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn metadata_keys() {
        assert!(meta_key("image_id"));
        assert!(meta_key("os:type. /x-y"));
        assert!(!meta_key("bad$key"));
        assert!(!spec_key("a b"));
        let bad = metadata("metadata", &json!({"k": 1}), meta_key, 255);
        assert!(bad.is_err());
    }
}
