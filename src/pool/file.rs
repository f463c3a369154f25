//! The file pool: one sparse file per volume under `<data_dir>/volumes/`, one per
//! snapshot under `<data_dir>/snapshots/`.
//!
//! New files are built under a `.partial` name and renamed into place, so a crash
//! never leaves a half-copied file under a volume's name, and a resumed job sees
//! either nothing (and starts again) or the finished file (`AlreadyPresent`).
//! Loop devices are bound only while something needs a block device (an export, a
//! copy that wants one); the pool finds them through sysfs, refreshes their size on
//! extend and releases them on delete, so none outlives its file.

use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::{Capacity, Created, ExistingSnapshot, GIB, Manageable, Pool, PoolError, Removed, Resized, Source};
use crate::blockdev::engine::{self, CopyOptions, CopySummary, ZeroPolicy};
use crate::blockdev::{blkid, copy, loopback};
use crate::config::{FileConfig, VolumeClear};

pub struct FilePool {
    volumes_dir: PathBuf,
    snapshots_dir: PathBuf,
    volume_clear: VolumeClear,
    direct_io: bool,
    /// Bytes allocated to volume and snapshot files, and when that was counted:
    /// counting stats every file, which a create should not pay for each time.
    /// Whatever the pool does that can free space forgets it; what guests write
    /// only makes it an underestimate, which is the safe side (capacity checks
    /// then see more promised-but-unwritten space, not less).
    allocated: std::sync::Mutex<Option<(std::time::Instant, u64)>>,
}

/// How long a count of allocated bytes is reused.
const ALLOCATED_TTL: std::time::Duration = std::time::Duration::from_secs(5);

const PARTIAL: &str = ".partial";

impl FilePool {
    /// The pool under `config.path`, else `data_dir` (`volumes/`, `snapshots/`).
    pub fn open(data_dir: &Path, config: &FileConfig) -> Result<FilePool, PoolError> {
        let data_dir = config.path.as_deref().unwrap_or(data_dir);
        let pool = FilePool {
            volumes_dir: data_dir.join("volumes"),
            snapshots_dir: data_dir.join("snapshots"),
            volume_clear: config.volume_clear,
            direct_io: config.direct_io,
            allocated: std::sync::Mutex::new(None),
        };
        for dir in [&pool.volumes_dir, &pool.snapshots_dir] {
            fs::create_dir_all(dir).map_err(|e| PoolError::io("create", dir, e))?;
            // Leftovers of a copy interrupted by a crash: their job starts it again.
            for entry in fs::read_dir(dir).map_err(|e| PoolError::io("list", dir, e))?.flatten() {
                if entry.file_name().to_string_lossy().ends_with(PARTIAL) {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        Ok(pool)
    }

    pub fn volume_path(&self, id: &str) -> PathBuf {
        self.volumes_dir.join(self.volume_name(id))
    }

    pub fn snapshot_path(&self, snapshot_id: &str) -> PathBuf {
        self.snapshots_dir.join(format!("snapshot-{snapshot_id}"))
    }

    fn allocated_bytes(&self) -> Result<u64, PoolError> {
        let mut cached = self.allocated.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, bytes)) = *cached {
            if at.elapsed() < ALLOCATED_TTL {
                return Ok(bytes);
            }
        }
        let mut bytes = 0;
        for dir in [&self.volumes_dir, &self.snapshots_dir] {
            for entry in fs::read_dir(dir).map_err(|e| PoolError::io("list", dir, e))?.flatten() {
                if let Ok(meta) = entry.metadata() {
                    bytes += meta.blocks() * 512;
                }
            }
        }
        *cached = Some((std::time::Instant::now(), bytes));
        Ok(bytes)
    }

    /// Called after anything the pool does that may change allocation.
    fn forget_allocated(&self) {
        *self.allocated.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Builds `path` through a `.partial` file and an atomic rename.
    fn build(&self, path: &Path, fill: impl FnOnce(&Path) -> Result<(), PoolError>) -> Result<Created, PoolError> {
        if path.exists() {
            return Ok(Created::AlreadyPresent);
        }
        let mut partial = path.as_os_str().to_owned();
        partial.push(PARTIAL);
        let partial = PathBuf::from(partial);
        let _ = fs::remove_file(&partial);
        if let Err(e) = fill(&partial) {
            let _ = fs::remove_file(&partial);
            return Err(e);
        }
        fs::rename(&partial, path).map_err(|e| PoolError::io("rename into place", path, e))?;
        // A blank (sparse) file allocates nothing; a copy does.
        if fs::metadata(path).map_or(true, |m| m.blocks() > 0) {
            self.forget_allocated();
        }
        sync_dir(path)?;
        Ok(Created::Created)
    }

    fn remove(&self, path: &Path, clear: VolumeClear) -> Result<Removed, PoolError> {
        if !path.exists() {
            return Ok(Removed::Absent);
        }
        for device in loopback::devices_backed_by(path) {
            loopback::detach(&device)?;
        }
        blkid::wipe_signatures(path)?;
        match clear {
            VolumeClear::Zero => {
                copy::zero_allocated(path)?;
            }
            VolumeClear::Discard => copy::discard_all(path)?,
            VolumeClear::None => {}
        }
        fs::remove_file(path).map_err(|e| PoolError::io("remove", path, e))?;
        self.forget_allocated();
        sync_dir(path)?;
        Ok(Removed::Removed)
    }

    /// A name given by a caller of manage, refused unless it is a plain file name here.
    fn existing_path(&self, name: &str) -> Result<PathBuf, PoolError> {
        if name.is_empty() || name.contains('/') || name.starts_with('.') || name.ends_with(PARTIAL) {
            return Err(PoolError::Refused(format!("'{name}' is not a file name in the pool")));
        }
        Ok(self.volumes_dir.join(name))
    }

    /// Plain files of `dir` (no `.partial` leftovers, no hidden files), sorted.
    fn plain_files(dir: &Path) -> Result<Vec<(String, PathBuf, u64)>, PoolError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir).map_err(|e| PoolError::io("list", dir, e))?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() || name.ends_with(PARTIAL) || name.starts_with('.') {
                continue;
            }
            out.push((name, entry.path(), meta.len()));
        }
        out.sort();
        Ok(out)
    }
}

fn sync_dir(path: &Path) -> Result<(), PoolError> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| PoolError::io("sync directory", dir, e))
}

fn set_size(path: &Path, bytes: u64) -> Result<(), PoolError> {
    let file = File::options()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| PoolError::io("open", path, e))?;
    file.set_len(bytes).map_err(|e| PoolError::io("resize", path, e))?;
    file.sync_all().map_err(|e| PoolError::io("sync", path, e))
}

fn file_size(path: &Path) -> Result<u64, PoolError> {
    match fs::metadata(path) {
        Ok(m) => Ok(m.len()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(PoolError::NotFound { what: path.display().to_string() })
        }
        Err(e) => Err(PoolError::io("stat", path, e)),
    }
}

impl Pool for FilePool {
    fn capacity(&self) -> Result<Capacity, PoolError> {
        let st = nix::sys::statvfs::statvfs(&self.volumes_dir)
            .map_err(|e| PoolError::io("statvfs", &self.volumes_dir, e.into()))?;
        let frsize = st.fragment_size() as u64;
        let allocated_bytes = self.allocated_bytes()?;
        Ok(Capacity {
            total_bytes: st.blocks() as u64 * frsize,
            free_bytes: st.blocks_available() as u64 * frsize,
            allocated_bytes,
            thin_data_hundredths: None,
            thin_metadata_hundredths: None,
        })
    }

    fn create_volume(&self, id: &str, size_gib: u64, source: &Source) -> Result<Created, PoolError> {
        let path = self.volume_path(id);
        let bytes = size_gib * GIB;
        self.build(&path, |partial| {
            match source {
                Source::Blank => {}
                Source::Snapshot { id: snapshot_id } => {
                    copy::copy_contents(&self.snapshot_path(snapshot_id), partial)?;
                }
                Source::Volume { id: volume_id } => {
                    copy::copy_contents(&self.volume_path(volume_id), partial)?;
                }
            }
            set_size(partial, bytes)
        })
    }

    fn delete_volume(&self, id: &str) -> Result<Removed, PoolError> {
        self.remove(&self.volume_path(id), self.volume_clear)
    }

    fn extend_volume(&self, id: &str, new_size_gib: u64) -> Result<Resized, PoolError> {
        let path = self.volume_path(id);
        let from = file_size(&path)?;
        let to = new_size_gib * GIB;
        if from < to {
            set_size(&path, to)?;
        }
        // Also when the file is already grown: a crash between the two leaves a
        // bound device at the old size, and the resumed step must put it right.
        for device in loopback::devices_backed_by(&path) {
            let size = File::open(&device).and_then(|f| crate::blockdev::block_device_size(&f));
            if size.map_or(true, |s| s != to.max(from)) {
                loopback::refresh_capacity(&device)?;
            }
        }
        Ok(if from < to { Resized::Resized { from, to } } else { Resized::Unchanged })
    }

    fn create_snapshot(&self, snapshot_id: &str, volume_id: &str) -> Result<Created, PoolError> {
        let source = self.volume_path(volume_id);
        file_size(&source)?;
        self.build(&self.snapshot_path(snapshot_id), |partial| {
            copy::copy_contents(&source, partial)?;
            Ok(())
        })
    }

    fn delete_snapshot(&self, snapshot_id: &str) -> Result<Removed, PoolError> {
        self.remove(&self.snapshot_path(snapshot_id), self.volume_clear)
    }

    fn revert_to_snapshot(&self, volume_id: &str, snapshot_id: &str) -> Result<(), PoolError> {
        let snapshot = self.snapshot_path(snapshot_id);
        let volume = self.volume_path(volume_id);
        let (want, have) = (file_size(&snapshot)?, file_size(&volume)?);
        if want != have {
            return Err(PoolError::Refused(format!(
                "snapshot {snapshot_id} holds {want} bytes but volume {volume_id} has {have}"
            )));
        }
        copy::copy_contents(&snapshot, &volume)?;
        self.forget_allocated();
        Ok(())
    }

    fn list_existing(&self) -> Result<Vec<Manageable>, PoolError> {
        Ok(Self::plain_files(&self.volumes_dir)?
            .into_iter()
            .map(|(name, path, size_bytes)| Manageable {
                in_use: !loopback::devices_backed_by(&path).is_empty(),
                name,
                size_bytes,
            })
            .collect())
    }

    fn attach_device(&self, id: &str) -> Result<PathBuf, PoolError> {
        let path = self.volume_path(id);
        file_size(&path)?;
        if let Some(existing) = loopback::devices_backed_by(&path).into_iter().next() {
            return Ok(existing);
        }
        Ok(loopback::attach(&path, self.direct_io)?.device)
    }

    fn detach_device(&self, id: &str) -> Result<Removed, PoolError> {
        let devices = loopback::devices_backed_by(&self.volume_path(id));
        for device in &devices {
            loopback::detach(device)?;
        }
        Ok(if devices.is_empty() { Removed::Absent } else { Removed::Removed })
    }

    fn bound_device(&self, id: &str) -> Option<PathBuf> {
        loopback::devices_backed_by(&self.volume_path(id)).into_iter().next()
    }

    fn unmanage(&self, _id: &str) -> Result<(), PoolError> {
        // A file carries no ownership mark: the store alone says whose it is.
        Ok(())
    }

    fn volume_name(&self, id: &str) -> String {
        format!("volume-{id}")
    }

    fn rename_volume(&self, from: &str, to: &str) -> Result<(), PoolError> {
        let (source, target) = (self.volume_path(from), self.volume_path(to));
        if !source.exists() && target.exists() {
            return Ok(()); // renamed by an earlier run of this job
        }
        if target.exists() {
            return Err(PoolError::Refused(format!("{} exists already", target.display())));
        }
        fs::rename(&source, &target).map_err(|e| PoolError::io("rename", &source, e))?;
        sync_dir(&target)
    }

    fn manage_existing(&self, name: &str, new_id: &str) -> Result<u64, PoolError> {
        let target = self.volume_path(new_id);
        let source = self.existing_path(name)?;
        if !source.exists() && target.exists() {
            // Renamed already by an earlier run of this job.
            return file_size(&target);
        }
        let bytes = file_size(&source)?;
        if source != target {
            fs::rename(&source, &target).map_err(|e| PoolError::io("rename", &source, e))?;
            sync_dir(&target)?;
        }
        // Sizes are whole GiB: round a foreign file up (growing never loses data).
        let gib = bytes.div_ceil(GIB).max(1);
        if gib * GIB != bytes {
            set_size(&target, gib * GIB)?;
        }
        Ok(gib * GIB)
    }

    /// Every plain file of `snapshots/`. A file records no origin: the manage
    /// request names the volume, and the file must hold exactly its bytes.
    fn list_existing_snapshots(&self) -> Result<Vec<ExistingSnapshot>, PoolError> {
        Ok(Self::plain_files(&self.snapshots_dir)?
            .into_iter()
            .map(|(name, path, size_bytes)| ExistingSnapshot {
                in_use: !loopback::devices_backed_by(&path).is_empty(),
                name,
                size_bytes,
                origin: None,
            })
            .collect())
    }

    fn snapshot_name(&self, id: &str) -> String {
        format!("snapshot-{id}")
    }

    fn manage_existing_snapshot(&self, name: &str, new_id: &str, volume_id: &str) -> Result<u64, PoolError> {
        let target = self.snapshot_path(new_id);
        if name.is_empty() || name.contains('/') || name.starts_with('.') || name.ends_with(PARTIAL) {
            return Err(PoolError::Refused(format!("'{name}' is not a file name in the pool")));
        }
        let source = self.snapshots_dir.join(name);
        if !source.exists() && target.exists() {
            // Renamed already by an earlier run of this job.
            return file_size(&target);
        }
        let bytes = file_size(&source)?;
        let volume_bytes = file_size(&self.volume_path(volume_id))?;
        // A revert copies the snapshot over the volume byte for byte: only a file
        // of the volume's size can be its snapshot.
        if bytes != volume_bytes {
            return Err(PoolError::Refused(format!(
                "snapshot file {name} holds {bytes} bytes but volume {volume_id} has {volume_bytes}"
            )));
        }
        if source != target {
            fs::rename(&source, &target).map_err(|e| PoolError::io("rename", &source, e))?;
            sync_dir(&target)?;
        }
        Ok(bytes)
    }

    fn unmanage_snapshot(&self, _id: &str) -> Result<(), PoolError> {
        // As for volumes: a file carries no ownership mark.
        Ok(())
    }

    fn write_volume(
        &self,
        id: &str,
        source: &mut dyn engine::Source,
        options: &CopyOptions,
        fresh: bool,
    ) -> Result<CopySummary, PoolError> {
        let path = self.volume_path(id);
        if !path.exists() {
            return Err(PoolError::NotFound { what: format!("volume {id}") });
        }
        // A bound loop device may cache the file's pages: write through it then
        // (it punches holes for zero runs itself), else into the file.
        let (target, policy) = match self.bound_device(id) {
            Some(device) => (device, ZeroPolicy::ZeroOut),
            None if fresh => (path, ZeroPolicy::AlreadyZero),
            None => (path, ZeroPolicy::Punch),
        };
        let summary = super::write_device(&target, policy, source, options);
        self.forget_allocated();
        summary
    }

    fn read_volume(
        &self,
        id: &str,
        sink: &mut dyn engine::Sink,
        options: &CopyOptions,
    ) -> Result<CopySummary, PoolError> {
        let path = self.volume_path(id);
        if !path.exists() {
            return Err(PoolError::NotFound { what: format!("volume {id}") });
        }
        super::read_device(&path, sink, options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Needs root and loop devices (`root_` prefix).
    #[test]
    fn root_devices_follow_the_volume_and_never_leak() {
        let dir = std::env::temp_dir().join(format!("ember-filepool-{}", uuid::Uuid::new_v4()));
        let config = FileConfig { direct_io: true, ..FileConfig::default() };
        let pool = FilePool::open(&dir, &config).unwrap();
        pool.create_volume("v1", 1, &Source::Blank).unwrap();
        let dev = pool.attach_device("v1").unwrap();
        // A failed assertion must not leak the device to the next run.
        struct Release(PathBuf, PathBuf);
        impl Drop for Release {
            fn drop(&mut self) {
                for device in loopback::devices_backed_by(&self.0) {
                    let _ = loopback::detach(&device);
                }
                let _ = fs::remove_dir_all(&self.1);
            }
        }
        let _release = Release(pool.volume_path("v1"), dir.clone());
        assert_eq!(pool.attach_device("v1").unwrap(), dev, "a second attach reuses the device");
        pool.extend_volume("v1", 2).unwrap();
        let size = crate::blockdev::block_device_size(&File::open(&dev).unwrap()).unwrap();
        assert_eq!(size, 2 * GIB, "the bound device learns the new size");
        // A crash after the file grew and before the device heard of it: the
        // resumed extend finds the file grown and must still tell the device.
        set_size(&pool.volume_path("v1"), 3 * GIB).unwrap();
        assert_eq!(pool.extend_volume("v1", 3).unwrap(), Resized::Unchanged);
        let size = crate::blockdev::block_device_size(&File::open(&dev).unwrap()).unwrap();
        assert_eq!(size, 3 * GIB, "the resumed extend left the device at the old size");
        assert!(pool.list_existing().unwrap().iter().all(|m| m.in_use));
        // Delete releases what is still bound.
        assert_eq!(pool.delete_volume("v1").unwrap(), Removed::Removed);
        assert!(loopback::devices_backed_by(&pool.volume_path("v1")).is_empty());
        assert_eq!(pool.detach_device("v1").unwrap(), Removed::Absent);
        assert_eq!(pool.delete_volume("v1").unwrap(), Removed::Absent);
    }

    #[test]
    fn builds_are_atomic_and_idempotent() {
        let dir = std::env::temp_dir().join(format!("ember-filepool-{}", uuid::Uuid::new_v4()));
        // A copy interrupted by a crash leaves a .partial file; opening the pool clears it.
        fs::create_dir_all(dir.join("volumes")).unwrap();
        fs::write(dir.join("volumes/volume-v9.partial"), b"half").unwrap();
        let pool =
            FilePool::open(&dir, &FileConfig { volume_clear: VolumeClear::None, ..FileConfig::default() }).unwrap();
        assert!(!dir.join("volumes/volume-v9.partial").exists());
        assert_eq!(pool.create_volume("v1", 1, &Source::Blank).unwrap(), Created::Created);
        assert_eq!(pool.create_volume("v1", 1, &Source::Blank).unwrap(), Created::AlreadyPresent);
        assert_eq!(pool.extend_volume("v1", 1).unwrap(), Resized::Unchanged);
        assert_eq!(pool.extend_volume("v1", 2).unwrap(), Resized::Resized { from: GIB, to: 2 * GIB });
        assert!(matches!(pool.manage_existing("../etc", "x"), Err(PoolError::Refused(_))));
        fs::remove_dir_all(dir).unwrap();
    }
}
