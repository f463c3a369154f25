//! Loop devices over volume files (through loopdev-3, Stratis' maintained fork).
//!
//! loopdev-3 attaches in separate ioctls (LOOP_SET_FD, LOOP_SET_STATUS64, then
//! LOOP_SET_DIRECT_IO), not atomically with LOOP_CONFIGURE: when the direct-I/O step
//! is refused (tmpfs on 6.1 kernels answers EINVAL) the device is already bound and
//! must be released here, and a device found free can be taken by another process
//! before we bind it (EBUSY), so the search is retried.
//!
//! Which loop devices serve a file is asked of the kernel, never remembered: after
//! a crash the kernel is the only truth. A device serves the file whose device and
//! inode it reports (LOOP_GET_STATUS64, as `losetup -j` matches), not whose path:
//! the path sysfs shows is resolved in the mount namespace that bound it, and after
//! that namespace is gone (a systemd unit's private mounts, a restarted container)
//! it no longer names the file.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use loopdev::{LoopControl, LoopDevice};

use super::BlockError;

/// A loop device bound to a backing file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoopAttachment {
    pub device: PathBuf,
    pub backing_file: PathBuf,
    pub direct_io: bool,
}

/// Binds a free loop device to `backing`. With `direct_io`, asks for direct I/O and
/// falls back to buffered mode when the backing filesystem refuses it.
pub fn attach(backing: &Path, direct_io: bool) -> Result<LoopAttachment, BlockError> {
    let control = LoopControl::open().map_err(|e| BlockError::io("open", "/dev/loop-control", e))?;
    let mut last_busy = None;
    for _ in 0..16 {
        let device = control.next_free().map_err(|e| BlockError::io("find a free loop device for", backing, e))?;
        let path = device_path(&device)?;
        match device.with().part_scan(false).attach(backing) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                last_busy = Some(e);
                continue;
            }
            Err(e) => return Err(BlockError::io("attach loop device to", backing, e)),
        }
        let direct_io = direct_io && device.set_direct_io(true).is_ok();
        return Ok(LoopAttachment { device: path, backing_file: backing.to_path_buf(), direct_io });
    }
    Err(BlockError::io(
        "attach loop device to (every free device was taken)",
        backing,
        last_busy.unwrap_or_else(|| io::Error::from_raw_os_error(libc::EBUSY)),
    ))
}

fn device_path(device: &LoopDevice) -> Result<PathBuf, BlockError> {
    device.path().ok_or_else(|| BlockError::io("name", "loop device", io::Error::other("no path")))
}

/// Releases a loop device. An already released device counts as success.
pub fn detach(device: &Path) -> Result<(), BlockError> {
    let dev = match LoopDevice::open(device) {
        Ok(dev) => dev,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(BlockError::io("open", device, e)),
    };
    match dev.detach() {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => Ok(()),
        Err(e) => Err(BlockError::io("detach", device, e)),
    }
}

/// `struct loop_info64` of <linux/loop.h>.
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

nix::ioctl_read_bad!(loop_get_status64, 0x4C05, LoopInfo64);

/// (device, inode) of the file a bound loop device reads.
fn backing_identity(device: &Path) -> Option<(u64, u64)> {
    use std::os::fd::AsRawFd;
    let file = fs::File::open(device).ok()?;
    // SAFETY: LoopInfo64 is plain data; all zeros is a valid value.
    let mut info: LoopInfo64 = unsafe { std::mem::zeroed() };
    // SAFETY: the descriptor is open for the call, and LOOP_GET_STATUS64 writes one
    // `struct loop_info64` into `info`, which has that layout.
    unsafe { loop_get_status64(file.as_raw_fd(), &mut info) }.ok()?;
    Some((info.lo_device, info.lo_inode))
}

/// Every loop device bound to the file `backing`, by its device and inode.
pub fn devices_backed_by(backing: &Path) -> Vec<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = fs::metadata(backing) else {
        return Vec::new(); // no file, no device can serve it
    };
    let wanted = (meta.dev(), meta.ino());
    let Ok(entries) = fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // Only bound devices have a backing file to ask about.
        if !name.starts_with("loop") || !entry.path().join("loop/backing_file").exists() {
            continue;
        }
        let device = PathBuf::from("/dev").join(name.as_ref());
        if backing_identity(&device) == Some(wanted) {
            found.push(device);
        }
    }
    found.sort();
    found
}

/// Tells a bound loop device that its backing file changed size (LOOP_SET_CAPACITY).
pub fn refresh_capacity(device: &Path) -> Result<(), BlockError> {
    LoopDevice::open(device)
        .and_then(|dev| dev.set_capacity())
        .map_err(|e| BlockError::io("LOOP_SET_CAPACITY on", device, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blockdev::block_device_size;

    /// Needs root and /dev/loop-control: the `root_` prefix lets the test command
    /// select or skip it.
    #[test]
    fn root_attach_resize_detach() {
        let dir = std::env::temp_dir().join(format!("ember-loop-{}", uuid::Uuid::new_v4()));
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("vol");
        let f = fs::File::create(&file).unwrap();
        f.set_len(8 << 20).unwrap();
        let att = attach(&file, false).unwrap();
        let result = std::panic::catch_unwind(|| {
            assert_eq!(devices_backed_by(&file), vec![att.device.clone()]);
            let dev = fs::File::open(&att.device).unwrap();
            assert_eq!(block_device_size(&dev).unwrap(), 8 << 20);
            f.set_len(24 << 20).unwrap();
            assert_eq!(block_device_size(&dev).unwrap(), 8 << 20, "the kernel does not notice by itself");
            refresh_capacity(&att.device).unwrap();
            assert_eq!(block_device_size(&dev).unwrap(), 24 << 20);
        });
        detach(&att.device).unwrap();
        detach(&att.device).unwrap(); // idempotent
        assert!(devices_backed_by(&file).is_empty(), "leaked loop device");
        fs::remove_dir_all(&dir).unwrap();
        result.unwrap();
    }

    /// A device bound through another path to the file (here a bind mount, then
    /// lazily unmounted: what a systemd unit's private mounts look like after the
    /// unit restarted) still serves the file, and is found by it.
    #[test]
    fn root_a_device_bound_through_a_mount_that_is_gone_is_still_found() {
        use nix::mount::{MntFlags, MsFlags, mount, umount2};
        let dir = std::env::temp_dir().join(format!("ember-loop-ns-{}", uuid::Uuid::new_v4()));
        let (data, bind) = (dir.join("data"), dir.join("bind"));
        fs::create_dir_all(&data).unwrap();
        fs::create_dir_all(&bind).unwrap();
        let file = data.join("vol");
        fs::File::create(&file).unwrap().set_len(4 << 20).unwrap();
        mount(Some(&data), &bind, None::<&str>, MsFlags::MS_BIND, None::<&str>).unwrap();
        let att = attach(&bind.join("vol"), false).unwrap();
        umount2(&bind, MntFlags::MNT_DETACH).unwrap();
        let shown = fs::read_to_string(format!(
            "/sys/block/{}/loop/backing_file",
            att.device.file_name().unwrap().to_string_lossy()
        ));
        let found = devices_backed_by(&file);
        detach(&att.device).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(found, vec![att.device], "sysfs shows {shown:?}, which is no longer the file's path");
    }

    #[test]
    fn root_direct_io_falls_back_where_refused() {
        let dir = std::env::temp_dir().join(format!("ember-loop-dio-{}", uuid::Uuid::new_v4()));
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("vol");
        fs::File::create(&file).unwrap().set_len(4 << 20).unwrap();
        let att = attach(&file, true).unwrap();
        // Either mode is fine; what matters is a bound device either way.
        let bound = devices_backed_by(&file);
        detach(&att.device).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(bound, vec![att.device]);
    }
}
