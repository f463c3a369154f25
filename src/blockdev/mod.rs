//! The low level: loop devices, libblkid probes, hole-preserving copies and block
//! ioctls. Every `unsafe` block of ember lives here, each with its `SAFETY:` note.
//! Nothing in this module holds policy: callers decide what to copy, clear or attach.

pub mod blkid;
pub mod copy;
pub mod device;
pub mod engine;
pub mod loopback;

use std::io;
use std::path::PathBuf;

/// Errors of the low-level device layer; each names the step and the object.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("{step} {path}: {source}")]
    Io {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("libblkid {step} on {path} failed")]
    Blkid { step: &'static str, path: PathBuf },
}

impl BlockError {
    pub fn io(step: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        BlockError::Io { step, path: path.into(), source }
    }
}

nix::ioctl_read!(blk_get_size64, 0x12, 114, u64);

/// Size in bytes of an open block device (BLKGETSIZE64).
pub fn block_device_size(file: &std::fs::File) -> io::Result<u64> {
    use std::os::fd::AsRawFd;
    let mut size = 0u64;
    // SAFETY: the fd is open for the duration of the call and `size` is a valid
    // u64 the kernel writes the device size into.
    unsafe { blk_get_size64(file.as_raw_fd(), &mut size) }.map_err(io::Error::from)?;
    Ok(size)
}
