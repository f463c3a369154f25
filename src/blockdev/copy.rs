//! Whole-file copies that keep sparse files sparse, and clearing of file contents.
//!
//! A copy first asks the filesystem for a reflink (FICLONE: XFS, btrfs, bcachefs
//! share the extents and copy nothing). Where that is refused (ext4, tmpfs) it walks
//! the source's allocated ranges with SEEK_DATA/SEEK_HOLE, copies only those with
//! copy_file_range (in-kernel, no user buffers), and punches holes in the
//! destination where the source has none, so the time is proportional to the data
//! written, not to the volume's virtual size. The destination is written in place
//! (same inode), so a loop device bound to it keeps serving the new contents.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use nix::fcntl::{FallocateFlags, fallocate};
use nix::unistd::{Whence, lseek};

use super::BlockError;

/// How a copy was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyMethod {
    Reflink,
    SparseCopy,
}

nix::ioctl_write_int!(ficlone, 0x94, 9);

/// Makes `dst` hold exactly the bytes of `src` (same length), then syncs it.
pub fn copy_contents(src: &Path, dst: &Path) -> Result<CopyMethod, BlockError> {
    let input = File::open(src).map_err(|e| BlockError::io("open copy source", src, e))?;
    let output = File::options()
        .write(true)
        .create(true)
        .truncate(false)
        .open(dst)
        .map_err(|e| BlockError::io("open copy destination", dst, e))?;
    let len = input.metadata().map_err(|e| BlockError::io("stat", src, e))?.len();
    let source_fd = libc::c_ulong::try_from(input.as_raw_fd()).expect("open descriptors are non-negative");
    // SAFETY: both descriptors are open for the call; FICLONE takes the source fd as
    // its integer argument and either shares every extent or changes nothing.
    let method = if unsafe { ficlone(output.as_raw_fd(), source_fd) }.is_ok() {
        CopyMethod::Reflink
    } else {
        output.set_len(len).map_err(|e| BlockError::io("size copy destination", dst, e))?;
        copy_allocated_ranges(&input, &output, len).map_err(|e| BlockError::io("copy into", dst, e))?;
        CopyMethod::SparseCopy
    };
    output.sync_all().map_err(|e| BlockError::io("sync", dst, e))?;
    Ok(method)
}

/// The allocated (data) ranges of a file as (offset, length), in order.
pub fn data_ranges(file: &File, len: u64) -> io::Result<Vec<(u64, u64)>> {
    let mut ranges = Vec::new();
    let mut pos = 0u64;
    while pos < len {
        let Some(data) = seek(file, pos, Whence::SeekData)? else {
            break;
        };
        let hole = seek(file, data, Whence::SeekHole)?.unwrap_or(len).min(len);
        if hole > data {
            ranges.push((data, hole - data));
        }
        pos = hole;
    }
    Ok(ranges)
}

/// The first data range at or after `pos` as (data, hole), None if only holes remain.
pub fn data_after(file: &File, pos: u64, len: u64) -> io::Result<Option<(u64, u64)>> {
    let Some(data) = seek(file, pos, Whence::SeekData)?.filter(|&d| d < len) else {
        return Ok(None);
    };
    let hole = seek(file, data, Whence::SeekHole)?.unwrap_or(len).min(len);
    Ok(Some((data, hole)))
}

fn seek(file: &File, pos: u64, whence: Whence) -> io::Result<Option<u64>> {
    let offset = i64::try_from(pos).map_err(io::Error::other)?;
    match lseek(file, offset, whence) {
        Ok(at) => Ok(Some(u64::try_from(at).map_err(io::Error::other)?)),
        // ENXIO: no data (or hole) at or after `pos`.
        Err(nix::errno::Errno::ENXIO) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn copy_allocated_ranges(input: &File, output: &File, len: u64) -> io::Result<()> {
    let mut pos = 0u64;
    for (data, count) in data_ranges(input, len)? {
        punch_hole(output, pos, data - pos)?;
        copy_range(input, output, data, count)?;
        pos = data + count;
    }
    punch_hole(output, pos, len.saturating_sub(pos))
}

fn copy_range(input: &File, output: &File, offset: u64, count: u64) -> io::Result<()> {
    let mut done = 0u64;
    while done < count {
        let mut off_in = i64::try_from(offset + done).map_err(io::Error::other)?;
        let mut off_out = off_in;
        let chunk = usize::try_from((count - done).min(1 << 30)).map_err(io::Error::other)?;
        match nix::fcntl::copy_file_range(input, Some(&mut off_in), output, Some(&mut off_out), chunk) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "source shrank during copy")),
            Ok(n) => {
                done += n as u64;
                crate::metrics::metrics().copy_bytes.inc_by(n as u64);
            }
            // Across filesystems or on filesystems without support: copy through memory.
            Err(nix::errno::Errno::EXDEV | nix::errno::Errno::EOPNOTSUPP | nix::errno::Errno::EINVAL) => {
                return copy_range_buffered(input, output, offset + done, count - done);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn copy_range_buffered(input: &File, output: &File, offset: u64, count: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    while done < count {
        let want = usize::try_from((count - done).min(buf.len() as u64)).map_err(io::Error::other)?;
        let n = input.read_at(&mut buf[..want], offset + done)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "source shrank during copy"));
        }
        output.write_all_at(&buf[..n], offset + done)?;
        done += n as u64;
        crate::metrics::metrics().copy_bytes.inc_by(n as u64);
    }
    Ok(())
}

fn punch_hole(file: &File, offset: u64, len: u64) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    let offset = i64::try_from(offset).map_err(io::Error::other)?;
    let len = i64::try_from(len).map_err(io::Error::other)?;
    fallocate(file, FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE, offset, len)
        .map_err(io::Error::from)
}

/// Overwrites every allocated byte of the file with zeros and syncs it. Holes
/// read as zeros already, so the time is proportional to the data the volume
/// held. The zeros go through the copy engine's sink: O_DIRECT, several writes
/// in flight.
pub fn zero_allocated(path: &Path) -> Result<u64, BlockError> {
    use super::engine::{AlignedBuf, BUF_LEN, DeviceSink, Sink, ZeroPolicy};
    let file = File::open(path).map_err(|e| BlockError::io("open for clearing", path, e))?;
    let len = file.metadata().map_err(|e| BlockError::io("stat", path, e))?.len();
    let ranges = data_ranges(&file, len).map_err(|e| BlockError::io("map extents of", path, e))?;
    let mut sink = DeviceSink::open(path, ZeroPolicy::AlreadyZero).map_err(|e| BlockError::io("open", path, e))?;
    let zeros = AlignedBuf::new(BUF_LEN);
    let mut cleared = 0u64;
    for (offset, count) in ranges {
        let mut done = 0u64;
        while done < count {
            let n = usize::try_from((count - done).min(BUF_LEN as u64)).unwrap_or(BUF_LEN);
            sink.write(offset + done, &zeros[..n]).map_err(|e| BlockError::io("zero", path, e))?;
            done += n as u64;
        }
        cleared += count;
    }
    sink.finish().map_err(|e| BlockError::io("sync", path, e))?;
    Ok(cleared)
}

/// Releases every block of the file back to the filesystem (reads return zeros).
pub fn discard_all(path: &Path) -> Result<(), BlockError> {
    let file = File::options().write(true).open(path).map_err(|e| BlockError::io("open for discard", path, e))?;
    let len = file.metadata().map_err(|e| BlockError::io("stat", path, e))?.len();
    punch_hole(&file, 0, len).map_err(|e| BlockError::io("punch holes in", path, e))?;
    file.sync_all().map_err(|e| BlockError::io("sync", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, SeekFrom, Write};

    fn temp_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("ember-copy-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn sparse_copy_keeps_bytes_and_holes() {
        let dir = temp_dir();
        let (src, dst) = (dir.join("src"), dir.join("dst"));
        let mut f = File::create(&src).unwrap();
        f.set_len(64 << 20).unwrap();
        f.seek(SeekFrom::Start(10 << 20)).unwrap();
        f.write_all(b"hello ember").unwrap();
        f.seek(SeekFrom::Start(60 << 20)).unwrap();
        f.write_all(&[7u8; 8192]).unwrap();
        f.sync_all().unwrap();
        // The destination starts with other data that must disappear.
        std::fs::write(&dst, vec![9u8; 1 << 20]).unwrap();
        assert_eq!(copy_contents(&src, &dst).unwrap(), CopyMethod::SparseCopy, "ext4/tmpfs have no reflink");
        let (mut a, mut b) = (Vec::new(), Vec::new());
        File::open(&src).unwrap().read_to_end(&mut a).unwrap();
        File::open(&dst).unwrap().read_to_end(&mut b).unwrap();
        assert_eq!(a.len(), b.len());
        assert!(a == b, "copy differs from source");
        use std::os::unix::fs::MetadataExt;
        let blocks = std::fs::metadata(&dst).unwrap().blocks();
        assert!(blocks * 512 < 4 << 20, "copy is not sparse: {} bytes allocated", blocks * 512);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// FICLONE on a real reflink filesystem: an XFS image on a loop device (root).
    #[test]
    fn root_reflink_on_xfs_shares_extents() {
        use crate::blockdev::loopback;
        use crate::cmd::{resolve, run};
        use std::time::Duration;
        let dir = temp_dir();
        let image = dir.join("xfs.img");
        File::create(&image).unwrap().set_len(512 << 20).unwrap();
        let dev = loopback::attach(&image, false).unwrap();
        let mnt = dir.join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let t = Duration::from_secs(60);
        let result = std::panic::catch_unwind(|| {
            let mkfs = resolve("mkfs.xfs").expect("xfsprogs (scripts/install-deps)");
            run(&mkfs, &["-q", "-m", "reflink=1", dev.device.to_str().unwrap()], t).unwrap();
            run(&resolve("mount").unwrap(), &[dev.device.to_str().unwrap(), mnt.to_str().unwrap()], t).unwrap();
            let (src, dst) = (mnt.join("src"), mnt.join("dst"));
            std::fs::write(&src, vec![0x5au8; 8 << 20]).unwrap();
            assert_eq!(copy_contents(&src, &dst).unwrap(), CopyMethod::Reflink);
            assert!(std::fs::read(&src).unwrap() == std::fs::read(&dst).unwrap());
        });
        // Whatever happened above, leave no mount and no loop device behind.
        let _ = run(&resolve("umount").unwrap(), &[mnt.to_str().unwrap()], t);
        loopback::detach(&dev.device).unwrap();
        std::fs::remove_dir_all(dir).unwrap();
        result.unwrap();
    }

    #[test]
    fn zero_and_discard_clear_data() {
        let dir = temp_dir();
        let path = dir.join("vol");
        let mut f = File::create(&path).unwrap();
        f.set_len(16 << 20).unwrap();
        f.seek(SeekFrom::Start(3 << 20)).unwrap();
        f.write_all(&[0xabu8; 70000]).unwrap();
        f.sync_all().unwrap();
        let cleared = zero_allocated(&path).unwrap();
        assert!(cleared >= 70000);
        let data = std::fs::read(&path).unwrap();
        assert!(data.iter().all(|&b| b == 0));
        std::fs::write(&path, vec![0x55u8; 1 << 20]).unwrap();
        discard_all(&path).unwrap();
        let data = std::fs::read(&path).unwrap();
        assert_eq!(data.len(), 1 << 20);
        assert!(data.iter().all(|&b| b == 0));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
