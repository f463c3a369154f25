//! The `dir` image store, the embedded default: `<dir>/<id>` holds an image's
//! bytes and `<dir>/<id>.json` its record (an `ImageRecord`, Glance's fields).
//! A record is replaced by writing `<id>.json.tmp`, syncing it and renaming it
//! over the old one, so a crash leaves the old record or the new, never half of
//! one. Bytes being uploaded go to `<id>.partial` and are renamed into place
//! only once complete and synced: an image is `active` only with all its bytes.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{Caller, Hashing, ImageData, ImageError, ImageRecord, ImageStatus, ImageStore, NewImage};

pub struct DirStore {
    dir: PathBuf,
}

impl DirStore {
    /// Opens (creating, 0700) the store's directory.
    pub fn open(dir: &Path) -> Result<DirStore, ImageError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| ImageError::io("create image directory", dir.display().to_string(), e))?;
        Ok(DirStore { dir: dir.to_path_buf() })
    }

    fn bytes_path(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    fn record_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    fn read_record(&self, id: &str) -> Result<ImageRecord, ImageError> {
        let path = self.record_path(super::checked_id(id)?);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(ImageError::NotFound(id.to_string())),
            Err(e) => return Err(ImageError::io("read image record", path.display().to_string(), e)),
        };
        serde_json::from_str(&text).map_err(|e| {
            ImageError::io("parse image record", path.display().to_string(), io::Error::other(e.to_string()))
        })
    }

    fn write_record(&self, record: &ImageRecord) -> Result<(), ImageError> {
        let path = self.record_path(super::checked_id(&record.id)?);
        let tmp = path.with_extension("json.tmp");
        let what = || path.display().to_string();
        let text = serde_json::to_vec_pretty(record).expect("an image record serializes");
        let mut f = create_private(&tmp).map_err(|e| ImageError::io("write image record", what(), e))?;
        f.write_all(&text).and_then(|_| f.sync_all()).map_err(|e| ImageError::io("write image record", what(), e))?;
        fs::rename(&tmp, &path).map_err(|e| ImageError::io("replace image record", what(), e))?;
        self.sync_dir()
    }

    fn sync_dir(&self) -> Result<(), ImageError> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| ImageError::io("sync image directory", self.dir.display().to_string(), e))
    }

    /// The record as `caller` may see it.
    fn visible(&self, caller: &Caller, id: &str) -> Result<ImageRecord, ImageError> {
        let record = self.read_record(id)?;
        match caller.may_see(&record) {
            true => Ok(record),
            false => Err(ImageError::NotFound(id.to_string())),
        }
    }

    /// Only the owner (or an admin) changes an image.
    fn owned(&self, caller: &Caller, id: &str) -> Result<ImageRecord, ImageError> {
        let record = self.visible(caller, id)?;
        match caller.is_admin || record.owner.as_deref() == Some(caller.project_id) {
            true => Ok(record),
            false => Err(ImageError::Forbidden(id.to_string())),
        }
    }
}

fn create_private(path: &Path) -> io::Result<File> {
    File::options().write(true).create(true).truncate(true).mode(0o600).open(path)
}

/// Glance's timestamp form: seconds, `Z` (`2026-12-03T22:40:00Z`).
pub fn now() -> String {
    let cinder = crate::model::now();
    format!("{}Z", &cinder[..19])
}

/// `io::copy` with 1 MiB pieces (its own 8 KiB ones cost a syscall each);
/// pieces of zeros are skipped, so the stored file is as sparse as its data.
fn copy_in_large_pieces(from: &mut dyn Read, to: &mut File) -> io::Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let mut n = 0;
        while n < buf.len() {
            match from.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(got) => n += got,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if n == 0 {
            to.set_len(total)?;
            return Ok(total);
        }
        if !crate::blockdev::engine::is_zero(&buf[..n]) {
            to.write_all_at(&buf[..n], total)?;
        }
        total += n as u64;
    }
}

/// A local file's bytes as image data (the store's images, `ember image import`).
pub struct FileImage {
    file: File,
    len: u64,
    path: PathBuf,
}

impl FileImage {
    pub fn open(path: &Path) -> io::Result<FileImage> {
        let file = File::open(path)?;
        // Read front to back (qcow2 clusters mostly are): a wide read-ahead.
        nix::fcntl::posix_fadvise(&file, 0, 0, nix::fcntl::PosixFadviseAdvice::POSIX_FADV_SEQUENTIAL)?;
        let len = file.metadata()?.len();
        Ok(FileImage { file, len, path: path.to_path_buf() })
    }
}

impl ImageData for FileImage {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], offset + done as u64)? {
                0 => break,
                n => done += n,
            }
        }
        Ok(done)
    }

    fn stream(&self) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(File::open(&self.path)?))
    }

    fn path(&self) -> Option<&Path> {
        Some(&self.path)
    }
}

impl ImageStore for DirStore {
    fn show(&self, caller: &Caller, id: &str) -> Result<ImageRecord, ImageError> {
        self.visible(caller, id)
    }

    fn open(&self, caller: &Caller, id: &str) -> Result<Box<dyn ImageData>, ImageError> {
        let record = self.visible(caller, id)?;
        if record.status != ImageStatus::Active {
            return Err(ImageError::Invalid(format!("Image {id} is not active.")));
        }
        let path = self.bytes_path(id);
        let image = FileImage::open(&path).map_err(|e| ImageError::io("open image", path.display().to_string(), e))?;
        Ok(Box::new(image))
    }

    fn create(&self, caller: &Caller, new: &NewImage) -> Result<ImageRecord, ImageError> {
        let at = now();
        let record = ImageRecord {
            id: uuid::Uuid::new_v4().to_string(),
            name: Some(new.name.clone()),
            status: ImageStatus::Queued,
            disk_format: Some(new.disk_format.clone()),
            container_format: Some(new.container_format.clone()),
            size: None,
            virtual_size: None,
            checksum: None,
            os_hash_algo: None,
            os_hash_value: None,
            min_disk: new.min_disk,
            min_ram: 0,
            visibility: new.visibility,
            protected: new.protected,
            owner: Some(caller.project_id.to_string()),
            created_at: at.clone(),
            updated_at: at,
            properties: new.properties.clone(),
        };
        self.write_record(&record)?;
        Ok(record)
    }

    fn upload(
        &self,
        caller: &Caller,
        id: &str,
        data: &mut dyn Read,
        virtual_size: Option<u64>,
    ) -> Result<ImageRecord, ImageError> {
        let mut record = self.owned(caller, id)?;
        if record.status != ImageStatus::Queued {
            return Err(ImageError::Conflict(format!("Image {id} is {:?}, not queued.", record.status)));
        }
        record.status = ImageStatus::Saving;
        record.updated_at = now();
        self.write_record(&record)?;
        let partial = self.dir.join(format!("{id}.partial"));
        let what = || partial.display().to_string();
        let mut out = create_private(&partial).map_err(|e| ImageError::io("create image", what(), e))?;
        let mut hashing = Hashing::new(data);
        let copied = copy_in_large_pieces(&mut hashing, &mut out).and_then(|_| out.sync_all());
        if let Err(e) = copied {
            let _ = fs::remove_file(&partial);
            record.status = ImageStatus::Killed;
            let _ = self.write_record(&record);
            return Err(ImageError::io("write image", what(), e));
        }
        fs::rename(&partial, self.bytes_path(id)).map_err(|e| ImageError::io("store image", what(), e))?;
        let (size, md5, sha512) = hashing.finish();
        record.size = Some(size);
        record.virtual_size = virtual_size;
        record.checksum = Some(md5);
        record.os_hash_algo = Some("sha512".to_string());
        record.os_hash_value = Some(sha512);
        record.status = ImageStatus::Active;
        record.updated_at = now();
        self.write_record(&record)?;
        Ok(record)
    }

    fn delete(&self, caller: &Caller, id: &str) -> Result<(), ImageError> {
        let record = self.owned(caller, id)?;
        if record.protected {
            return Err(ImageError::Forbidden(id.to_string()));
        }
        for path in [self.bytes_path(id), self.dir.join(format!("{id}.partial")), self.record_path(id)] {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(ImageError::io("delete image", path.display().to_string(), e)),
            }
        }
        self.sync_dir()
    }

    fn list(&self, caller: &Caller) -> Result<Vec<ImageRecord>, ImageError> {
        let entries =
            fs::read_dir(&self.dir).map_err(|e| ImageError::io("list images", self.dir.display().to_string(), e))?;
        let mut images = BTreeMap::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            match self.read_record(id) {
                Ok(record) if caller.may_see(&record) => {
                    images.insert((record.created_at.clone(), record.id.clone()), record);
                }
                Ok(_) | Err(ImageError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(images.into_values().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::Visibility;

    fn new_image(name: &str) -> NewImage {
        NewImage {
            name: name.to_string(),
            disk_format: "raw".to_string(),
            container_format: "bare".to_string(),
            visibility: Visibility::Private,
            protected: false,
            min_disk: 0,
            properties: BTreeMap::new(),
        }
    }

    #[test]
    fn an_uploaded_image_is_active_with_glances_checksums_and_private_to_its_project() {
        let tmp = tempdir();
        let store = DirStore::open(&tmp).unwrap();
        let alice = Caller { project_id: "alice", is_admin: false, token: None };
        let bob = Caller { project_id: "bob", is_admin: false, token: None };
        let image = store.create(&alice, &new_image("one")).unwrap();
        assert_eq!(image.status, ImageStatus::Queued);
        assert!(store.open(&alice, &image.id).is_err(), "a queued image has no bytes to read");
        let active = store.upload(&alice, &image.id, &mut &b"ember"[..], Some(5)).unwrap();
        assert_eq!(active.status, ImageStatus::Active);
        assert_eq!(active.checksum.as_deref(), Some("98e89bbbb4878ec0cc7833f0f91276c2"));
        assert_eq!(active.size, Some(5));
        let data = store.open(&alice, &image.id).unwrap();
        let mut buf = [0u8; 3];
        assert_eq!(data.read_at(&mut buf, 2).unwrap(), 3);
        assert_eq!(&buf, b"ber");
        assert!(matches!(store.show(&bob, &image.id), Err(ImageError::NotFound(_))));
        assert_eq!(store.list(&bob).unwrap().len(), 0);
        assert_eq!(store.list(&alice).unwrap().len(), 1);
        assert!(matches!(store.upload(&alice, &image.id, &mut &b"x"[..], None), Err(ImageError::Conflict(_))));
        assert!(matches!(store.show(&alice, "../../etc/passwd"), Err(ImageError::NotFound(_))));
        store.delete(&alice, &image.id).unwrap();
        assert!(fs::read_dir(&tmp).unwrap().next().is_none(), "nothing left behind");
        fs::remove_dir_all(&tmp).unwrap();
    }

    fn tempdir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ember-images-{}", uuid::Uuid::new_v4()));
        fs::create_dir(&dir).unwrap();
        dir
    }
}
