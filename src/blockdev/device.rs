//! Block-device operations: whole-device clearing with BLKZEROOUT / BLKDISCARD and a
//! plain device-to-device copy (for pools whose volumes are block devices).

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
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

/// Copies the first `len` bytes of block device `src` to block device `dst` in
/// 1 MiB chunks, then flushes `dst`. `dst` is zeroed first (BLKZEROOUT, which the
/// kernel offloads where it can), so chunks of zeros are skipped, not written.
/// Used where no reflink or snapshot can serve.
pub fn copy_device(src: &Path, dst: &Path, len: u64) -> Result<(), BlockError> {
    zero_out(dst)?;
    let input = File::open(src).map_err(|e| BlockError::io("open", src, e))?;
    let output = OpenOptions::new().write(true).open(dst).map_err(|e| BlockError::io("open", dst, e))?;
    let mut buf = vec![0u8; 1 << 20];
    // Slice equality on bytes is a memcmp: fast even in unoptimised builds.
    let zeros = vec![0u8; buf.len()];
    let mut done = 0u64;
    while done < len {
        let want = usize::try_from((len - done).min(buf.len() as u64)).unwrap_or(buf.len());
        input.read_exact_at(&mut buf[..want], done).map_err(|e| BlockError::io("read", src, e))?;
        if buf[..want] != zeros[..want] {
            output.write_all_at(&buf[..want], done).map_err(|e| BlockError::io("write", dst, e))?;
            crate::metrics::metrics().copy_bytes.inc_by(want as u64);
        }
        done += want as u64;
    }
    output.sync_all().map_err(|e| BlockError::io("sync", dst, e))
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
            copy_device(&da.device, &db.device, 4 << 20).unwrap();
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
