//! The data dir: one `ember serve` per data dir (an exclusive `flock` on
//! `ember.lock`, held for the life of the process; the kernel drops it when the
//! process dies, so a crash never leaves it stale), and nothing in it readable by
//! anyone but root (tenants' bytes and the store's metadata live there).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

/// The lock on a data dir; dropping it releases the dir.
pub struct DataDirLock {
    _lock: Flock<File>,
}

/// Creates `dir` (0700), locks it, and writes this process's pid in the lock file.
/// A second instance is refused at once, naming the holder.
pub fn lock(dir: &Path) -> Result<DataDirLock, String> {
    fs::create_dir_all(dir).map_err(|e| format!("create data dir {}: {e}", dir.display()))?;
    let path = dir.join("ember.lock");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(|e| format!("open {}: {e}", path.display()))?;
    let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => lock,
        Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            return Err(format!(
                "data dir {} is in use by another ember (pid {}): one ember per data dir",
                dir.display(),
                holder.trim()
            ));
        }
        Err((_, e)) => return Err(format!("lock {}: {e}", path.display())),
    };
    lock.set_len(0).map_err(|e| format!("write {}: {e}", path.display()))?;
    lock.rewind().map_err(|e| format!("write {}: {e}", path.display()))?;
    writeln!(*lock, "{}", std::process::id()).map_err(|e| format!("write {}: {e}", path.display()))?;
    Ok(DataDirLock { _lock: lock })
}

/// Makes the data dir's directories 0700 and its files 0600, whatever the umask
/// they were made under, saying what it tightened. Everything ember creates from
/// now on is private too (`umask 077`).
pub fn make_private(dir: &Path) -> Result<usize, String> {
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let mut tightened = 0;
    let mut visit = vec![dir.to_path_buf()];
    while let Some(path) = visit.pop() {
        let meta = fs::symlink_metadata(&path).map_err(|e| format!("stat {}: {e}", path.display()))?;
        let want = if meta.is_dir() {
            0o700
        } else if meta.is_file() {
            0o600
        } else {
            continue; // symlinks, sockets: not ember's
        };
        if meta.permissions().mode() & 0o777 != want {
            fs::set_permissions(&path, fs::Permissions::from_mode(want))
                .map_err(|e| format!("chmod {}: {e}", path.display()))?;
            tracing::warn!(path = %path.display(), was = format!("{:o}", meta.permissions().mode() & 0o777),
                now = format!("{want:o}"), "tightened permissions in the data dir");
            tightened += 1;
        }
        if meta.is_dir() {
            for entry in fs::read_dir(&path).map_err(|e| format!("list {}: {e}", path.display()))?.flatten() {
                visit.push(entry.path());
            }
        }
    }
    Ok(tightened)
}
