//! Block-device operations: whole-device clearing with BLKZEROOUT / BLKDISCARD
//! (device copies are the copy engine's, `engine.rs`).

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::Path;

use super::{BlockError, block_device_size};

// BLKDISCARD and BLKZEROOUT are _IO(0x12, n) but take a pointer to [start, len].
nix::ioctl_write_ptr_bad!(blk_discard, nix::request_code_none!(0x12, 119), [u64; 2]);
nix::ioctl_write_ptr_bad!(blk_zeroout, nix::request_code_none!(0x12, 127), [u64; 2]);

fn open_rw(path: &Path) -> Result<(File, u64), BlockError> {
    let file = OpenOptions::new().read(true).write(true).open(path).map_err(|e| BlockError::io("open", path, e))?;
    let size = block_device_size(&file).map_err(|e| BlockError::io("BLKGETSIZE64", path, e))?;
    Ok((file, size))
}

/// Writes zeros over the whole device (BLKZEROOUT: the kernel uses WRITE ZEROES or
/// unmap where the device can, else writes zero pages).
pub fn zero_out(path: &Path) -> Result<(), BlockError> {
    let (file, size) = open_rw(path)?;
    let range = [0u64, size];
    // SAFETY: the fd is open for writing and `range` outlives the call.
    unsafe { blk_zeroout(file.as_raw_fd(), &range) }.map_err(|e| BlockError::io("BLKZEROOUT", path, e.into()))?;
    file.sync_all().map_err(|e| BlockError::io("sync", path, e))
}

/// Discards the whole device (thin LVs give their blocks back to the pool).
pub fn discard(path: &Path) -> Result<(), BlockError> {
    let (file, size) = open_rw(path)?;
    let range = [0u64, size];
    // SAFETY: as for zero_out.
    unsafe { blk_discard(file.as_raw_fd(), &range) }.map_err(|e| BlockError::io("BLKDISCARD", path, e.into()))?;
    file.sync_all().map_err(|e| BlockError::io("sync", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blockdev::loopback;

    /// Needs root and loop devices.
    #[test]
    fn root_zero_discard_and_copy_on_loop_devices() {
        let dir = std::env::temp_dir().join(format!("ember-dev-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a"), dir.join("b"));
        let mut pattern = vec![0x77u8; 4 << 20];
        pattern[..(1 << 20)].fill(0); // a zero run the copy skips
        std::fs::write(&a, &pattern).unwrap();
        std::fs::write(&b, vec![0x11u8; 4 << 20]).unwrap();
        let da = loopback::attach(&a, false).unwrap();
        let db = loopback::attach(&b, false).unwrap();
        let result = std::panic::catch_unwind(|| {
            use crate::blockdev::engine::{CopyOptions, DeviceSink, DeviceSource, ZeroPolicy, copy};
            let mut sink = DeviceSink::open(&db.device, ZeroPolicy::ZeroOut).unwrap();
            copy(&mut DeviceSource::open(&da.device).unwrap(), &mut sink, &CopyOptions::default()).unwrap();
            assert!(std::fs::read(&db.device).unwrap() == pattern, "zeros where the source has zeros, bytes elsewhere");
            zero_out(&db.device).unwrap();
            assert!(std::fs::read(&db.device).unwrap().iter().all(|&x| x == 0));
            discard(&da.device).unwrap();
            assert!(std::fs::read(&da.device).unwrap().iter().all(|&x| x == 0));
        });
        loopback::detach(&da.device).unwrap();
        loopback::detach(&db.device).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        result.unwrap();
    }
}
