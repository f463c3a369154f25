//! The few configfs operations LIO and nvmet are driven with. In configfs a
//! `mkdir` creates an object (its attribute files appear with it), attributes
//! are written whole, in one `write`, with exactly the bytes meant (LIO stores a
//! trailing newline verbatim: a CHAP password written with `echo` never matches),
//! links between objects are symlinks, and an object goes with `rmdir` once its
//! links and children are gone.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::TargetError;

/// Where configfs is mounted.
pub const ROOT: &str = "/sys/kernel/config";

/// Writes an attribute; an error names the attribute, never the value (which may
/// be a CHAP secret).
pub fn write(path: &Path, value: &str) -> Result<(), TargetError> {
    let mut file = fs::OpenOptions::new().write(true).open(path).map_err(|e| TargetError::io("open", path, e))?;
    file.write_all(value.as_bytes()).map_err(|e| TargetError::io("write", path, e))
}

pub fn read(path: &Path) -> Result<String, TargetError> {
    fs::read_to_string(path)
        .map(|s| s.trim_end_matches(['\n', '\0']).to_string())
        .map_err(|e| TargetError::io("read", path, e))
}

/// Creates the object unless it exists.
pub fn mkdir(path: &Path) -> Result<bool, TargetError> {
    match fs::create_dir(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(TargetError::io("mkdir", path, e)),
    }
}

/// Removes the object if it exists.
pub fn rmdir(path: &Path) -> Result<bool, TargetError> {
    match fs::remove_dir(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(TargetError::io("rmdir", path, e)),
    }
}

/// Links `link` to `to` unless the link exists.
pub fn link(to: &Path, link: &Path) -> Result<bool, TargetError> {
    match std::os::unix::fs::symlink(to, link) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(TargetError::io("link", link, e)),
    }
}

pub fn unlink(link: &Path) -> Result<bool, TargetError> {
    match fs::remove_file(link) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(TargetError::io("unlink", link, e)),
    }
}

/// The names in a directory (empty if it does not exist), sorted.
pub fn entries(dir: &Path) -> Result<Vec<String>, TargetError> {
    let mut names = match fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect::<Vec<_>>(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(TargetError::io("list", dir, e)),
    };
    names.sort();
    Ok(names)
}

/// Where a symlink points (configfs links are absolute or relative to their dir).
pub fn link_target(link: &Path) -> Result<PathBuf, TargetError> {
    let to = fs::read_link(link).map_err(|e| TargetError::io("readlink", link, e))?;
    Ok(if to.is_absolute() { to } else { link.parent().unwrap_or(Path::new("/")).join(to) })
}
