//! The `glance` image store: Glance's image API v2 over HTTP. Show and list
//! read image records; the bytes stream in one GET (raw) or are read by range
//! (qcow2's tables and clusters, through a 4 MiB read-ahead window); create and
//! upload make an image the way Glance's own clients do, and Glance computes
//! `checksum` and `os_hash_value` from the stream. The token is the caller's
//! where it has one, else the configured one.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{Value, json};

use super::http::{self, Body, Endpoint};
use super::{Caller, ImageData, ImageError, ImageRecord, ImageStatus, ImageStore, NewImage, Visibility};
use crate::config::GlanceConfig;

pub struct GlanceStore {
    endpoint: Endpoint,
    token: Option<String>,
    timeout: Duration,
}

/// Glance's image fields that are not properties.
const CORE: &[&str] = &[
    "id",
    "name",
    "status",
    "disk_format",
    "container_format",
    "size",
    "virtual_size",
    "checksum",
    "os_hash_algo",
    "os_hash_value",
    "min_disk",
    "min_ram",
    "visibility",
    "protected",
    "owner",
    "created_at",
    "updated_at",
    "tags",
    "self",
    "file",
    "schema",
    "locations",
    "direct_url",
    "stores",
    "os_hidden",
];

impl GlanceStore {
    pub fn open(config: &GlanceConfig) -> Result<GlanceStore, ImageError> {
        let endpoint = Endpoint::parse(&config.url).map_err(ImageError::Invalid)?;
        Ok(GlanceStore { endpoint, token: config.token.clone(), timeout: Duration::from_secs(config.timeout.max(1)) })
    }

    fn call(
        &self,
        caller: &Caller,
        method: &str,
        path: &str,
        extra: &[(&str, &str)],
        body: Body,
    ) -> Result<http::Response, ImageError> {
        let token = caller.token.or(self.token.as_deref());
        let mut headers: Vec<(&str, &str)> = vec![("Accept", "application/json"), ("User-Agent", "ember")];
        if let Some(t) = token {
            headers.push(("X-Auth-Token", t));
        }
        headers.extend_from_slice(extra);
        let path = format!("/v2{path}");
        // Reads and deletes are idempotent: a transient failure (Glance's
        // SQLite answers 500 "database is locked" while another request
        // writes, a worker restarting answers 502/503) is retried a few times
        // with backoff. Anything with a body is sent once.
        let mut retries = if matches!(body, Body::None) && matches!(method, "GET" | "HEAD" | "DELETE") { 5 } else { 0 };
        let mut body = body;
        let mut pause = Duration::from_millis(100);
        loop {
            let this = std::mem::replace(&mut body, Body::None);
            let result = http::request(&self.endpoint, self.timeout, method, &path, &headers, this);
            let transient = result.as_ref().map_or(true, |r| matches!(r.status, 500 | 502 | 503 | 504));
            if !transient || retries == 0 {
                return result.map_err(|e| ImageError::Unavailable(format!("{method} {path}: {e}")));
            }
            retries -= 1;
            tracing::debug!(method, path = %path, "Glance failed transiently; retrying");
            std::thread::sleep(pause);
            pause *= 2;
        }
    }

    /// A JSON answer with one of `ok`'s statuses, or the error it means.
    fn json(&self, id: &str, response: http::Response, ok: &[u16]) -> Result<Value, ImageError> {
        let status = response.status;
        let text = response.text(16 << 20).map_err(|e| ImageError::Unavailable(e.to_string()))?;
        if !ok.contains(&status) {
            return Err(glance_error(id, status, &text));
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| ImageError::Unavailable(format!("Glance answered {status}: {e}")))
    }
}

fn glance_error(id: &str, status: u16, text: &str) -> ImageError {
    let detail: String = text.chars().take(300).collect();
    match status {
        404 => ImageError::NotFound(id.to_string()),
        401 | 403 => ImageError::Forbidden(id.to_string()),
        409 => ImageError::Conflict(format!("Glance: image {id}: {detail}")),
        400 | 413 | 415 => ImageError::Invalid(format!("Glance refused the request for image {id}: {detail}")),
        _ => ImageError::Unavailable(format!("Glance answered {status} for image {id}: {detail}")),
    }
}

/// Glance's JSON as ember's record (unknown string fields are properties).
fn record(v: &Value) -> Result<ImageRecord, ImageError> {
    let bad = |what: &str| ImageError::Unavailable(format!("Glance's image has no valid {what}"));
    let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let number = |k: &str| v.get(k).and_then(Value::as_u64);
    let status: ImageStatus =
        serde_json::from_value(v.get("status").cloned().unwrap_or(Value::Null)).map_err(|_| bad("status"))?;
    let visibility: Visibility = serde_json::from_value(v.get("visibility").cloned().unwrap_or(json!("shared")))
        .map_err(|_| bad("visibility"))?;
    let properties: BTreeMap<String, String> = v
        .as_object()
        .map(|o| {
            o.iter()
                .filter(|(k, _)| !CORE.contains(&k.as_str()))
                .filter_map(|(k, val)| val.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default();
    Ok(ImageRecord {
        id: text("id").ok_or_else(|| bad("id"))?,
        name: text("name"),
        status,
        disk_format: text("disk_format"),
        container_format: text("container_format"),
        size: number("size"),
        virtual_size: number("virtual_size"),
        checksum: text("checksum"),
        os_hash_algo: text("os_hash_algo"),
        os_hash_value: text("os_hash_value"),
        min_disk: number("min_disk").unwrap_or(0),
        min_ram: number("min_ram").unwrap_or(0),
        visibility,
        protected: v.get("protected").and_then(Value::as_bool).unwrap_or(false),
        owner: text("owner"),
        created_at: text("created_at").unwrap_or_default(),
        updated_at: text("updated_at").unwrap_or_default(),
        properties,
    })
}

/// An image's bytes in Glance.
struct GlanceData {
    endpoint: Endpoint,
    timeout: Duration,
    token: Option<String>,
    id: String,
    len: u64,
    /// The last range read: its offset and bytes.
    window: Mutex<Option<(u64, Vec<u8>)>>,
}

const WINDOW: u64 = 4 << 20;

impl GlanceData {
    fn get(&self, range: Option<(u64, u64)>) -> io::Result<http::Response> {
        let range_header = range.map(|(a, b)| format!("bytes={a}-{b}"));
        let mut headers: Vec<(&str, &str)> = vec![("User-Agent", "ember")];
        if let Some(t) = &self.token {
            headers.push(("X-Auth-Token", t));
        }
        if let Some(r) = &range_header {
            headers.push(("Range", r));
        }
        let path = format!("/v2/images/{}/file", self.id);
        let response = http::request(&self.endpoint, self.timeout, "GET", &path, &headers, Body::None)?;
        match (response.status, range) {
            (200, None) | (206, Some(_)) => Ok(response),
            (status, _) => Err(io::Error::other(format!("Glance answered {status} to GET {path}"))),
        }
    }
}

impl ImageData for GlanceData {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        if offset >= self.len || buf.is_empty() {
            return Ok(0);
        }
        let want = (buf.len() as u64).min(self.len - offset);
        let mut window = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let inside = |w: &(u64, Vec<u8>)| offset >= w.0 && offset + want <= w.0 + w.1.len() as u64;
        if !window.as_ref().is_some_and(inside) {
            let end = (offset + want.max(WINDOW)).min(self.len) - 1;
            let mut bytes = Vec::with_capacity(usize::try_from(end - offset + 1).unwrap_or(0));
            self.get(Some((offset, end)))?.body.read_to_end(&mut bytes)?;
            if (bytes.len() as u64) < want {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "Glance sent a short range"));
            }
            *window = Some((offset, bytes));
        }
        let (start, bytes) = window.as_ref().expect("filled above");
        let from = usize::try_from(offset - start).unwrap_or(0);
        let n = usize::try_from(want).unwrap_or(buf.len());
        buf[..n].copy_from_slice(&bytes[from..from + n]);
        Ok(n)
    }

    fn stream(&self) -> io::Result<Box<dyn Read + Send>> {
        Ok(self.get(None)?.body)
    }
}

impl ImageStore for GlanceStore {
    fn show(&self, caller: &Caller, id: &str) -> Result<ImageRecord, ImageError> {
        let id = super::checked_id(id)?;
        let r = self.call(caller, "GET", &format!("/images/{id}"), &[], Body::None)?;
        record(&self.json(id, r, &[200])?)
    }

    fn open(&self, caller: &Caller, id: &str) -> Result<Box<dyn ImageData>, ImageError> {
        let image = self.show(caller, id)?;
        if image.status != ImageStatus::Active {
            return Err(ImageError::Invalid(format!("Image {id} is not active.")));
        }
        Ok(Box::new(GlanceData {
            endpoint: self.endpoint.clone(),
            timeout: self.timeout,
            token: caller.token.map(str::to_string).or_else(|| self.token.clone()),
            id: image.id,
            len: image.size.unwrap_or(0),
            window: Mutex::new(None),
        }))
    }

    fn create(&self, caller: &Caller, new: &NewImage) -> Result<ImageRecord, ImageError> {
        let mut body = json!({
            "name": new.name,
            "disk_format": new.disk_format,
            "container_format": new.container_format,
            "visibility": new.visibility.as_str(),
            "protected": new.protected,
            "min_disk": new.min_disk,
        });
        for (k, v) in &new.properties {
            body[k] = json!(v);
        }
        let text = body.to_string();
        let headers = [("Content-Type", "application/json")];
        let r = self.call(caller, "POST", "/images", &headers, Body::Bytes(text.as_bytes()))?;
        record(&self.json(&new.name, r, &[201])?)
    }

    fn upload(
        &self,
        caller: &Caller,
        id: &str,
        data: &mut dyn Read,
        _virtual_size: Option<u64>,
    ) -> Result<ImageRecord, ImageError> {
        let id = super::checked_id(id)?;
        let headers = [("Content-Type", "application/octet-stream")];
        let r = self.call(caller, "PUT", &format!("/images/{id}/file"), &headers, Body::Stream(data))?;
        self.json(id, r, &[204, 200])?;
        let image = self.show(caller, id)?;
        if image.status != ImageStatus::Active {
            return Err(ImageError::Unavailable(format!("image {id} is {:?} after its upload", image.status)));
        }
        Ok(image)
    }

    fn delete(&self, caller: &Caller, id: &str) -> Result<(), ImageError> {
        let id = super::checked_id(id)?;
        let r = self.call(caller, "DELETE", &format!("/images/{id}"), &[], Body::None)?;
        self.json(id, r, &[204, 200]).map(drop)
    }

    fn list(&self, caller: &Caller) -> Result<Vec<ImageRecord>, ImageError> {
        let mut out = Vec::new();
        let mut next = Some("/images?limit=200".to_string());
        while let Some(path) = next.take() {
            let r = self.call(caller, "GET", &path, &[], Body::None)?;
            let page = self.json("", r, &[200])?;
            for image in page.get("images").and_then(Value::as_array).into_iter().flatten() {
                out.push(record(image)?);
            }
            // `next` is a path under /v2 (`/v2/images?marker=…`).
            next = page.get("next").and_then(Value::as_str).map(|n| n.trim_start_matches("/v2").to_string());
            if out.len() > 100_000 {
                break;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glances_image_json_maps_to_a_record_with_its_properties() {
        let v = json!({
            "id": "6f1c4c1e-3b2a-4a11-9a43-0b8d9d0c2f11", "name": "cirros", "status": "active",
            "disk_format": "qcow2", "container_format": "bare", "size": 1376256, "virtual_size": 67108864,
            "checksum": "42e2", "os_hash_algo": "sha512", "os_hash_value": "ab", "min_disk": 0, "min_ram": 0,
            "visibility": "shared", "protected": false, "owner": null, "tags": [], "os_hidden": false,
            "self": "/v2/images/x", "file": "/v2/images/x/file", "schema": "/v2/schemas/image",
            "created_at": "2026-12-04T00:00:00Z", "updated_at": "2026-12-04T00:00:00Z", "hw_disk_bus": "scsi"
        });
        let r = record(&v).unwrap();
        assert_eq!((r.status, r.visibility, r.owner), (ImageStatus::Active, Visibility::Shared, None));
        assert_eq!((r.size, r.virtual_size), (Some(1376256), Some(67108864)));
        assert_eq!(r.properties, BTreeMap::from([("hw_disk_bus".to_string(), "scsi".to_string())]));
        assert!(record(&json!({"id": "x", "status": "exploded"})).is_err());
    }

    /// A loopback HTTP peer answering each connection with the next status
    /// of `statuses` (then 204); returns its URL and the request lines seen.
    fn answering(statuses: Vec<u16>) -> (String, std::sync::Arc<Mutex<Vec<String>>>) {
        use std::io::{BufRead, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
        let (log, mut statuses) = (seen.clone(), statuses.into_iter());
        std::thread::spawn(move || {
            for stream in listener.incoming().take(8) {
                let mut reader = io::BufReader::new(stream.unwrap());
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                log.lock().unwrap().push(line.trim_end().to_string());
                loop {
                    let mut header = String::new();
                    if reader.read_line(&mut header).unwrap_or(0) <= 2 {
                        break;
                    }
                }
                let status = statuses.next().unwrap_or(204);
                let answer = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                reader.get_mut().write_all(answer.as_bytes()).unwrap();
            }
        });
        (url, seen)
    }

    #[test]
    fn deletes_and_reads_retry_a_transient_failure_and_writes_do_not() {
        let caller = Caller { project_id: "p", is_admin: true, token: None };
        let id = "6f1c4c1e-3b2a-4a11-9a43-0b8d9d0c2f11";
        let store = |url: String| GlanceStore::open(&GlanceConfig { url, token: None, timeout: 5 }).unwrap();
        // Glance on SQLite answers 500 "database is locked" to a delete that
        // races the failing upload's cleanup: the delete must still land.
        let (url, seen) = answering(vec![500, 503]);
        store(url).delete(&caller, id).unwrap();
        assert_eq!(seen.lock().unwrap().len(), 3);
        let (url, seen) = answering(vec![500]);
        let err = store(url).upload(&caller, id, &mut &b"data"[..], None).unwrap_err();
        assert!(matches!(err, ImageError::Unavailable(_)), "{err}");
        assert_eq!(seen.lock().unwrap().len(), 1, "a write with a body is sent once");
        let (url, seen) = answering(vec![404]);
        assert!(matches!(store(url).delete(&caller, id), Err(ImageError::NotFound(_))));
        assert_eq!(seen.lock().unwrap().len(), 1, "a definite answer is not retried");
    }
}
