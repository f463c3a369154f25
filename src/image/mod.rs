//! Images: where a volume's contents come from (create from image, reimage) and
//! go to (upload to image). Two stores behind one trait: `dir`, the embedded
//! default, keeps each image as a file under `<data-dir>/images` beside a JSON
//! record with Glance's fields; `glance` speaks Glance's image API v2 over HTTP.
//! Formats are read here too (raw, and qcow2 natively), so the copy engine in
//! `blockdev` only ever sees guest bytes and zero runs.

pub mod cli;
pub mod dir;
pub mod glance;
pub mod http;
pub mod qcow2;

use std::collections::BTreeMap;
use std::io::{self, Read};

use md5::Digest as _;
use serde::{Deserialize, Serialize};

/// An image's lifecycle, Glance's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageStatus {
    Queued,
    Saving,
    Uploading,
    Importing,
    Active,
    Deactivated,
    Killed,
    Deleted,
    PendingDelete,
}

/// The fields of a Glance v2 image that ember reads or writes. The `dir` store
/// keeps exactly this as `<id>.json` (README, "Images").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageRecord {
    pub id: String,
    pub name: Option<String>,
    pub status: ImageStatus,
    pub disk_format: Option<String>,
    pub container_format: Option<String>,
    /// Bytes of the stored image (the qcow2 file, not the disk it holds).
    pub size: Option<u64>,
    /// Bytes of the disk the image holds.
    pub virtual_size: Option<u64>,
    /// md5 of the stored bytes (Glance's legacy `checksum`).
    pub checksum: Option<String>,
    pub os_hash_algo: Option<String>,
    pub os_hash_value: Option<String>,
    pub min_disk: u64,
    pub min_ram: u64,
    pub visibility: Visibility,
    pub protected: bool,
    /// The project that owns the image.
    pub owner: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// Glance's additional properties (free-form string keys and values).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    Public,
    Community,
    Shared,
    Private,
}

impl Visibility {
    pub const NAMES: [&'static str; 4] = ["community", "public", "private", "shared"];

    /// The visibility Glance calls `name`.
    pub fn parse(name: &str) -> Option<Visibility> {
        [Visibility::Community, Visibility::Public, Visibility::Private, Visibility::Shared]
            .into_iter()
            .find(|v| v.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Public => "public",
            Visibility::Community => "community",
            Visibility::Shared => "shared",
            Visibility::Private => "private",
        }
    }
}

/// What a new image is made with (upload to image, `ember image import`).
#[derive(Debug, Clone, PartialEq)]
pub struct NewImage {
    pub name: String,
    pub disk_format: String,
    pub container_format: String,
    pub visibility: Visibility,
    pub protected: bool,
    pub min_disk: u64,
    pub properties: BTreeMap<String, String>,
}

/// Who asks: a store shows only what this caller may see, and Glance gets the
/// caller's token where there is one.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    pub project_id: &'a str,
    pub is_admin: bool,
    /// A Keystone token to pass on (None with noauth).
    pub token: Option<&'a str>,
}

impl Caller<'_> {
    /// Whether this caller may read `image` (Glance's visibility rules).
    pub fn may_see(&self, image: &ImageRecord) -> bool {
        self.is_admin
            || matches!(image.visibility, Visibility::Public | Visibility::Community)
            || image.owner.as_deref() == Some(self.project_id)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("Image {0} could not be found.")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("Not authorized for image {0}.")]
    Forbidden(String),
    #[error("{0}")]
    Conflict(String),
    /// The image service could not be reached or failed (Glance down, 5xx).
    #[error("image service: {0}")]
    Unavailable(String),
    #[error("{step} {what}: {source}")]
    Io {
        step: &'static str,
        what: String,
        #[source]
        source: io::Error,
    },
}

impl ImageError {
    pub fn io(step: &'static str, what: impl Into<String>, source: io::Error) -> Self {
        ImageError::Io { step, what: what.into(), source }
    }
}

/// An image's stored bytes. Readers that need random access (qcow2) use
/// `read_at`; raw images are read front to back through `stream`.
pub trait ImageData: Send + Sync {
    /// Bytes stored.
    fn len(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Reads up to `buf.len()` bytes at `offset`; fewer only at the end.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// The bytes from the start, sequentially (a single streaming download for Glance).
    fn stream(&self) -> io::Result<Box<dyn Read + Send>>;
    /// The local file holding the bytes, where there is one (the `dir` store):
    /// the copy engine then reads it with O_DIRECT and skips its holes.
    fn path(&self) -> Option<&std::path::Path> {
        None
    }
}

/// The two image stores (`dir`, `glance`). Calls block: the manager makes them
/// on blocking threads, never on the async executor.
pub trait ImageStore: Send + Sync {
    /// The image's record, if the caller may see it (NotFound otherwise).
    fn show(&self, caller: &Caller, id: &str) -> Result<ImageRecord, ImageError>;
    /// The image's bytes; the image must be `active`.
    fn open(&self, caller: &Caller, id: &str) -> Result<Box<dyn ImageData>, ImageError>;
    /// A new `queued` image owned by the caller's project.
    fn create(&self, caller: &Caller, new: &NewImage) -> Result<ImageRecord, ImageError>;
    /// Stores `data` as the image's bytes and makes it `active`, with its size,
    /// md5 `checksum` and sha512 `os_hash_value`; `virtual_size` as given.
    fn upload(
        &self,
        caller: &Caller,
        id: &str,
        data: &mut dyn Read,
        virtual_size: Option<u64>,
    ) -> Result<ImageRecord, ImageError>;
    /// Removes the image (its record and bytes).
    fn delete(&self, caller: &Caller, id: &str) -> Result<(), ImageError>;
    /// Every image the caller may see.
    fn list(&self, caller: &Caller) -> Result<Vec<ImageRecord>, ImageError>;
}

/// A reader that hashes what passes through it the way Glance does: md5 for
/// `checksum`, sha512 for `os_hash_value`.
pub struct Hashing<R> {
    inner: R,
    md5: md5::Md5,
    sha512: sha2::Sha512,
    pub bytes: u64,
}

impl<R: Read> Hashing<R> {
    pub fn new(inner: R) -> Self {
        Hashing { inner, md5: md5::Md5::new(), sha512: sha2::Sha512::new(), bytes: 0 }
    }

    /// (bytes, md5 hex, sha512 hex) of everything read.
    pub fn finish(self) -> (u64, String, String) {
        (self.bytes, hex(&self.md5.finalize()), hex(&self.sha512.finalize()))
    }
}

impl<R: Read> Read for Hashing<R> {
    /// Large reads are hashed by two threads, md5 beside sha512: each runs at
    /// about the speed of a disk, one after the other they would not.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let data = &buf[..n];
        if n >= 256 << 10 {
            let md5 = &mut self.md5;
            std::thread::scope(|s| {
                s.spawn(|| md5.update(data));
                self.sha512.update(data);
            });
        } else {
            self.md5.update(data);
            self.sha512.update(data);
        }
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Ids are uuids: anything else could name a path (a file of the `dir` store, a
/// URL of Glance's) that was not meant; it is "not found".
pub(crate) fn checked_id(id: &str) -> Result<&str, ImageError> {
    uuid::Uuid::try_parse(id).map(|_| id).map_err(|_| ImageError::NotFound(id.to_string()))
}

/// The store `[images]` configures, under `data_dir` for `dir`.
pub fn open_store(
    config: &crate::config::ImagesConfig,
    data_dir: &std::path::Path,
) -> Result<std::sync::Arc<dyn ImageStore>, ImageError> {
    match config {
        crate::config::ImagesConfig::Dir(dir) => {
            let path = dir.path.clone().unwrap_or_else(|| data_dir.join("images"));
            Ok(std::sync::Arc::new(dir::DirStore::open(&path)?))
        }
        crate::config::ImagesConfig::Glance(g) => Ok(std::sync::Arc::new(glance::GlanceStore::open(g)?)),
    }
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashing_gives_glances_two_checksums() {
        let mut h = Hashing::new(&b"ember"[..]);
        io::copy(&mut h, &mut io::sink()).unwrap();
        let (n, md5, sha512) = h.finish();
        assert_eq!(n, 5);
        // `printf ember | md5sum`, `printf ember | sha512sum`
        assert_eq!(md5, "98e89bbbb4878ec0cc7833f0f91276c2");
        assert!(sha512.starts_with("a133e0838411633410a7040f5141e97e") && sha512.ends_with("68c616d56b"));
    }
}
