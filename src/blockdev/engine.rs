//! The copy engine (DESIGN decision 7): one streaming copy for every path that
//! moves a volume's bytes (create from image, reimage, upload, thick clones,
//! `volume_clear` wipes, later migration).
//!
//! A `Source` yields the bytes in increasing offset order as data chunks (read
//! into the engine's aligned buffers) and zero runs it knows of (holes of sparse
//! files, qcow2's unallocated and zero clusters). A reader thread fills
//! `DEPTH` buffers ahead, finds the 64 KiB granules that are all zeros, and
//! hashes what is not; the calling thread writes, so reading and writing overlap.
//! Plain threads serve here rather than io_uring: each side is one sequential
//! stream of large (4 MiB) requests, which the kernel's readahead and the device
//! queue already keep busy; io_uring would save syscalls we do not make.
//! A `Sink` writes data and turns zero runs into what its device does best
//! (nothing on a fresh thin volume, punched holes in files, BLKZEROOUT on
//! devices). Progress, cancellation and a rate limit are shared with whoever
//! watches the copy (the jobs resource, `ember image import`).
//!
//! The checksum is sha256 over every granule that is not all zeros, in offset
//! order, each prefixed by its offset: the same bytes give the same checksum
//! however the source chunked them, and zero runs cost nothing to hash, so a
//! sparse copy stays proportional to its data.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::{Duration, Instant};

use nix::fcntl::{FallocateFlags, fallocate};
use sha2::Digest as _;

use super::device::{blk_discard, blk_zeroout};

/// Bytes per buffer: the size of every read and data write.
pub const BUF_LEN: usize = 4 << 20;
/// The unit of zero detection and of the checksum.
pub const GRANULE: usize = 64 << 10;
/// Buffers in flight between the reader and the writer.
const DEPTH: usize = 4;
/// How often a running copy logs its progress.
const LOG_EVERY: Duration = Duration::from_secs(10);
/// Buffer alignment: enough for O_DIRECT on any logical block size in use.
const ALIGN: usize = 4096;

/// A zero-filled heap buffer aligned for O_DIRECT.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the buffer is uniquely owned heap memory; moving it between threads
// moves that ownership.
unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    pub fn new(len: usize) -> AlignedBuf {
        let layout = Layout::from_size_align(len.max(ALIGN), ALIGN).expect("buffer layout");
        // SAFETY: the layout has a non-zero size.
        let ptr =
            NonNull::new(unsafe { alloc_zeroed(layout) }).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        AlignedBuf { ptr, len: layout.size() }
    }
}

impl std::ops::Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr` points to `len` initialised (zeroed at allocation) bytes we own.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl std::ops::DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as for deref, and `&mut self` makes the access unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        let layout = Layout::from_size_align(self.len, ALIGN).expect("buffer layout");
        // SAFETY: allocated in `new` with this very layout, freed once.
        unsafe { dealloc(self.ptr.as_ptr(), layout) }
    }
}

/// One piece of a source, in increasing offset order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// `len` bytes at `offset`, in the first `len` bytes of the buffer.
    Data { offset: u64, len: usize },
    /// `len` bytes of zeros at `offset`.
    Zero { offset: u64, len: u64 },
}

/// Where the bytes come from.
pub trait Source: Send {
    /// Bytes the source holds.
    fn len(&self) -> u64;
    /// The next piece after the previous one (data fills `buf`, at most its
    /// length); `None` at the end. Errors of kind `InvalidData` mean the source
    /// is malformed (a corrupt image), not that a device failed.
    fn next(&mut self, buf: &mut [u8]) -> io::Result<Option<Chunk>>;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Zeros to compare with and to write from.
static ZEROS: [u8; 1 << 20] = [0; 1 << 20];

/// A length known to be below a buffer's (or a granule's) size, as an index.
fn small(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// Where the bytes go. Calls arrive in increasing offset order.
pub trait Sink: Send {
    fn write(&mut self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Makes `len` bytes at `offset` read back as zeros.
    fn zero(&mut self, offset: u64, len: u64) -> io::Result<()>;
    /// Makes everything written durable.
    fn finish(&mut self) -> io::Result<()>;
}

/// How far a copy is, shared with whoever watches it.
#[derive(Debug)]
pub struct Progress {
    done: AtomicU64,
    total: AtomicU64,
    cancelled: AtomicBool,
    started: Instant,
}

/// A reading of `Progress`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProgressReport {
    pub done: u64,
    pub total: u64,
    /// Bytes per second since the copy started.
    pub rate: u64,
    /// Seconds left at that rate, once there is a rate.
    pub eta: Option<u64>,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            done: AtomicU64::new(0),
            total: AtomicU64::new(0),
            cancelled: AtomicBool::new(false),
            started: Instant::now(),
        }
    }
}

impl Progress {
    pub fn report(&self) -> ProgressReport {
        let done = self.done.load(Ordering::Relaxed);
        let total = self.total.load(Ordering::Relaxed).max(done);
        let millis = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX).max(1);
        let rate = done.saturating_mul(1000) / millis;
        let eta = (rate > 0).then(|| (total - done) / rate);
        ProgressReport { done, total, rate, eta }
    }

    /// For copies made outside the engine (an import): the bytes to expect…
    pub fn set_total(&self, total: u64) {
        self.total.store(total, Ordering::Relaxed);
    }

    /// …and the bytes done.
    pub fn advance(&self, bytes: u64) {
        self.done.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Asks the copy to stop; it ends with `CopyError::Cancelled` at its next chunk.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }
}

/// What a copy is asked to do besides copying.
#[derive(Debug, Default, Clone)]
pub struct CopyOptions {
    /// The destination's length: data past it is refused, and the destination
    /// past the source's end is zeroed up to it.
    pub dest_len: Option<u64>,
    /// Data bytes per second at most (zero runs do not count).
    pub rate_limit: Option<u64>,
    pub progress: std::sync::Arc<Progress>,
}

/// What a finished copy did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopySummary {
    /// Bytes covered (data and zeros), up to `dest_len`.
    pub bytes: u64,
    /// Bytes written as data (the rest were zero runs).
    pub data_bytes: u64,
    /// sha256 (hex) of the non-zero granules with their offsets (module docs).
    pub checksum: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("reading the source: {0}")]
    Read(#[source] io::Error),
    #[error("writing the destination: {0}")]
    Write(#[source] io::Error),
    #[error("the source is malformed: {0}")]
    Invalid(String),
    #[error("the source holds {have} bytes, more than the destination's {room}")]
    TooLarge { have: u64, room: u64 },
    #[error("the copy was cancelled")]
    Cancelled,
}

impl CopyError {
    /// What may be shown to the volume's owner.
    pub fn user_reason(&self) -> String {
        match self {
            CopyError::Read(e) => format!("reading the data failed{}", os_reason(e)),
            CopyError::Write(e) => format!("writing the volume failed{}", os_reason(e)),
            CopyError::Invalid(m) => format!("the image is malformed: {m}"),
            CopyError::TooLarge { .. } => "the image does not fit the volume".to_string(),
            CopyError::Cancelled => "the copy was cancelled by an administrator".to_string(),
        }
    }
}

/// The operating system's word for an I/O error (": No space left on device"),
/// never the paths behind it; nothing for errors of ember's own.
fn os_reason(e: &io::Error) -> String {
    e.raw_os_error().map(|code| format!(": {}", nix::errno::Errno::from_raw(code).desc())).unwrap_or_default()
}

/// A run of one buffer, as the writer does it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Segment {
    /// Bytes `start..start + len` of the buffer, to `offset`.
    Data {
        offset: u64,
        start: usize,
        len: usize,
    },
    Zero {
        offset: u64,
        len: u64,
    },
}

struct Filled {
    buf: AlignedBuf,
    segments: Vec<Segment>,
}

/// Copies `source` into `sink` (module docs). Blocking: run it on a blocking thread.
pub fn copy(source: &mut dyn Source, sink: &mut dyn Sink, options: &CopyOptions) -> Result<CopySummary, CopyError> {
    let progress = &options.progress;
    let total = options.dest_len.unwrap_or(source.len()).max(source.len());
    progress.total.store(total, Ordering::Relaxed);
    if let Some(room) = options.dest_len {
        if source.len() > room {
            return Err(CopyError::TooLarge { have: source.len(), room });
        }
    }
    let (free_tx, free_rx) = sync_channel::<AlignedBuf>(DEPTH);
    let (full_tx, full_rx) = sync_channel::<Filled>(DEPTH);
    for _ in 0..DEPTH {
        free_tx.send(AlignedBuf::new(BUF_LEN)).expect("the free list has room");
    }
    std::thread::scope(|scope| {
        let reader = scope.spawn(|| read_ahead(source, options, free_rx, full_tx));
        let written = write_behind(sink, options, &full_rx, &free_tx);
        // Unblock a reader waiting for a buffer, then collect its outcome.
        drop(full_rx);
        drop(free_tx);
        let read = reader.join().unwrap_or_else(|_| Err(CopyError::Read(io::Error::other("reader panicked"))));
        // The reader's error is the cause when both failed (the writer saw a hang-up).
        let (end, checksum) = read?;
        let data_bytes = written?;
        let mut bytes = end;
        if let Some(dest) = options.dest_len.filter(|&d| d > end) {
            sink.zero(end, dest - end).map_err(CopyError::Write)?;
            bytes = dest;
        }
        sink.finish().map_err(CopyError::Write)?;
        progress.done.store(bytes, Ordering::Relaxed);
        Ok(CopySummary { bytes, data_bytes, checksum })
    })
}

/// The reader thread: fills buffers, splits them into data and zero segments,
/// hashes. Returns where the source ended and the checksum.
fn read_ahead(
    source: &mut dyn Source,
    options: &CopyOptions,
    free: Receiver<AlignedBuf>,
    full: SyncSender<Filled>,
) -> Result<(u64, String), CopyError> {
    let mut hasher = GranuleHasher::default();
    let mut pos = 0u64;
    let limit = options.dest_len.unwrap_or(u64::MAX);
    while let Ok(mut buf) = free.recv() {
        if options.progress.is_cancelled() {
            return Err(CopyError::Cancelled);
        }
        let chunk = match source.next(&mut buf) {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::InvalidData => return Err(CopyError::Invalid(e.to_string())),
            Err(e) => return Err(CopyError::Read(e)),
        };
        let Some(chunk) = chunk else {
            return Ok((pos, hasher.finish()));
        };
        let (offset, len) = match chunk {
            Chunk::Data { offset, len } if len <= buf.len() => (offset, len as u64),
            Chunk::Data { .. } => return Err(CopyError::Read(io::Error::other("a source overfilled its buffer"))),
            Chunk::Zero { offset, len } => (offset, len),
        };
        if offset < pos {
            return Err(CopyError::Invalid(format!("data at {offset} after data up to {pos}")));
        }
        let end = offset.checked_add(len).filter(|&e| e <= limit);
        let Some(end) = end else {
            return Err(CopyError::TooLarge { have: offset.saturating_add(len), room: limit });
        };
        let mut segments = Vec::new();
        if offset > pos {
            // A gap reads as zeros.
            segments.push(Segment::Zero { offset: pos, len: offset - pos });
            hasher.zero(offset - pos);
        }
        match chunk {
            Chunk::Data { len, .. } => {
                split(&buf[..len], offset, &mut segments);
                hasher.data(&buf[..len], offset);
            }
            Chunk::Zero { len, .. } => {
                segments.push(Segment::Zero { offset, len });
                hasher.zero(len);
            }
        }
        pos = end;
        if full.send(Filled { buf, segments }).is_err() {
            // The writer stopped; its error is the one to report.
            return Ok((pos, String::new()));
        }
    }
    Ok((pos, String::new()))
}

/// Splits `data` (at `offset`) into runs of data and of all-zero granules
/// (granules aligned to the device, not to the buffer).
fn split(data: &[u8], offset: u64, out: &mut Vec<Segment>) {
    let mut start = 0usize;
    while start < data.len() {
        let into = (offset + start as u64) % GRANULE as u64;
        let end = (start + GRANULE - small(into)).min(data.len());
        let at = offset + start as u64;
        let whole = end - start == GRANULE;
        let seg = if whole && is_zero(&data[start..end]) {
            Segment::Zero { offset: at, len: (end - start) as u64 }
        } else {
            Segment::Data { offset: at, start, len: end - start }
        };
        match (out.last_mut(), seg) {
            (Some(Segment::Zero { len, .. }), Segment::Zero { len: more, .. }) => *len += more,
            (Some(Segment::Data { len, start: s, .. }), Segment::Data { start: next, len: more, .. })
                if *s + *len == next =>
            {
                *len += more
            }
            _ => out.push(seg),
        }
        start = end;
    }
}

/// Whether every byte is zero: compared with a static block of zeros, which is a
/// memcmp (fast in debug builds too), stopping at the first block holding data.
pub fn is_zero(bytes: &[u8]) -> bool {
    bytes.chunks(4096).all(|block| block == &ZEROS[..block.len()])
}

/// The writer (the calling thread): writes segments, returns buffers, counts
/// progress, keeps the rate limit. Returns the data bytes written.
fn write_behind(
    sink: &mut dyn Sink,
    options: &CopyOptions,
    full: &Receiver<Filled>,
    free: &SyncSender<AlignedBuf>,
) -> Result<u64, CopyError> {
    let started = Instant::now();
    let mut data_bytes = 0u64;
    let mut logged = Instant::now();
    while let Ok(Filled { buf, segments }) = full.recv() {
        // A long copy says how far it is in the log too (inside the job's span).
        if logged.elapsed() >= LOG_EVERY {
            let r = options.progress.report();
            tracing::info!(done = r.done, total = r.total, rate = r.rate, eta = ?r.eta, "copying");
            logged = Instant::now();
        }
        if options.progress.is_cancelled() {
            return Err(CopyError::Cancelled);
        }
        for seg in segments {
            let (offset, len) = match seg {
                Segment::Data { offset, start, len } => {
                    sink.write(offset, &buf[start..start + len]).map_err(CopyError::Write)?;
                    data_bytes += len as u64;
                    crate::metrics::metrics().copy_bytes.inc_by(len as u64);
                    (offset, len as u64)
                }
                Segment::Zero { offset, len } => {
                    sink.zero(offset, len).map_err(CopyError::Write)?;
                    (offset, len)
                }
            };
            options.progress.done.store(offset + len, Ordering::Relaxed);
        }
        if let Some(limit) = options.rate_limit.filter(|&l| l > 0) {
            let due = Duration::from_secs_f64(data_bytes as f64 / limit as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        // The reader may have stopped already; then the buffer is simply dropped.
        let _ = free.send(buf);
    }
    Ok(data_bytes)
}

/// The checksum of module docs, fed in offset order.
struct GranuleHasher {
    sha: sha2::Sha256,
    /// The granule being assembled: its index and the bytes seen of it.
    index: u64,
    partial: Vec<u8>,
}

impl Default for GranuleHasher {
    fn default() -> Self {
        GranuleHasher { sha: sha2::Sha256::new(), index: 0, partial: Vec::with_capacity(GRANULE) }
    }
}

impl GranuleHasher {
    fn granule(&mut self, index: u64, bytes: &[u8]) {
        if !is_zero(bytes) {
            self.sha.update(index.to_le_bytes());
            self.sha.update(bytes);
        }
    }

    fn flush_if_full(&mut self) {
        if self.partial.len() == GRANULE {
            let partial = std::mem::take(&mut self.partial);
            self.granule(self.index, &partial);
            self.partial = partial;
            self.partial.clear();
            self.index += 1;
        }
    }

    fn data(&mut self, mut bytes: &[u8], offset: u64) {
        debug_assert_eq!(offset, self.index * GRANULE as u64 + self.partial.len() as u64);
        while !bytes.is_empty() {
            if self.partial.is_empty() && bytes.len() >= GRANULE {
                let (whole, rest) = bytes.split_at(GRANULE);
                self.granule(self.index, whole);
                self.index += 1;
                bytes = rest;
                continue;
            }
            let take = (GRANULE - self.partial.len()).min(bytes.len());
            self.partial.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            self.flush_if_full();
        }
    }

    fn zero(&mut self, mut len: u64) {
        if !self.partial.is_empty() {
            let take = ((GRANULE - self.partial.len()) as u64).min(len);
            self.partial.resize(self.partial.len() + small(take), 0);
            len -= take;
            self.flush_if_full();
        }
        self.index += len / GRANULE as u64;
        self.partial.resize(small(len % GRANULE as u64), 0);
    }

    fn finish(mut self) -> String {
        if !self.partial.is_empty() {
            self.partial.resize(GRANULE, 0);
            let partial = std::mem::take(&mut self.partial);
            self.granule(self.index, &partial);
        }
        crate::image::hex(&self.sha.finalize())
    }
}

/// Opens a file or device for O_DIRECT where it allows it (tmpfs does not),
/// else buffered. Says which.
fn open_direct(path: &Path, write: bool) -> io::Result<(File, bool)> {
    let open = |flags: i32| {
        let mut o = File::options();
        o.read(true).write(write).custom_flags(flags);
        o.open(path)
    };
    match open(libc::O_DIRECT) {
        Ok(f) => Ok((f, true)),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok((open(0)?, false)),
        Err(e) => Err(e),
    }
}

fn is_block_device(file: &File) -> io::Result<bool> {
    use std::os::unix::fs::FileTypeExt;
    Ok(file.metadata()?.file_type().is_block_device())
}

fn length_of(file: &File) -> io::Result<u64> {
    if is_block_device(file)? { super::block_device_size(file) } else { Ok(file.metadata()?.len()) }
}

/// A volume's device or file (or a raw image file), read front to back with
/// O_DIRECT; on sparse files the holes come as zero runs without being read.
pub struct DeviceSource {
    file: File,
    len: u64,
    pos: u64,
    /// Whether SEEK_DATA/SEEK_HOLE work here (regular files).
    sparse: bool,
    /// Where the current data range ends (sparse files).
    data_end: u64,
}

impl DeviceSource {
    /// Block devices are read with O_DIRECT. Files are read through the page
    /// cache with sequential read-ahead (which keeps the disk busy while the
    /// engine writes; one O_DIRECT read at a time does not), and their pages
    /// are dropped behind the copy, so it does not push the guests' data out.
    pub fn open(path: &Path) -> io::Result<DeviceSource> {
        let probe = File::open(path)?;
        let sparse = !is_block_device(&probe)?;
        let file = if sparse {
            nix::fcntl::posix_fadvise(&probe, 0, 0, nix::fcntl::PosixFadviseAdvice::POSIX_FADV_SEQUENTIAL)?;
            probe
        } else {
            open_direct(path, false)?.0
        };
        let len = length_of(&file)?;
        Ok(DeviceSource { file, len, pos: 0, sparse, data_end: 0 })
    }
}

impl Source for DeviceSource {
    fn len(&self) -> u64 {
        self.len
    }

    fn next(&mut self, buf: &mut [u8]) -> io::Result<Option<Chunk>> {
        if self.pos >= self.len {
            return Ok(None);
        }
        if self.sparse && self.pos >= self.data_end {
            let ranges = super::copy::data_after(&self.file, self.pos, self.len)?;
            match ranges {
                None => {
                    let chunk = Chunk::Zero { offset: self.pos, len: self.len - self.pos };
                    self.pos = self.len;
                    return Ok(Some(chunk));
                }
                Some((data, hole)) if data > self.pos => {
                    // Holes start and end on filesystem blocks; keep reads aligned.
                    let chunk = Chunk::Zero { offset: self.pos, len: data - self.pos };
                    self.pos = data;
                    self.data_end = hole;
                    return Ok(Some(chunk));
                }
                Some((_, hole)) => self.data_end = hole,
            }
        }
        let end = if self.sparse { self.data_end } else { self.len };
        let want = usize::try_from((end - self.pos).min(buf.len() as u64)).unwrap_or(buf.len());
        // O_DIRECT wants whole blocks: read a rounded-up length, keep what is there.
        let rounded = want.next_multiple_of(ALIGN).min(buf.len());
        let mut got = 0usize;
        while got < want {
            let n = self.file.read_at(&mut buf[got..rounded], self.pos + got as u64)?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the source shrank during the copy"));
            }
            got += n;
        }
        if self.sparse {
            // Best effort: the pages just read are not needed again, the next
            // two buffers' of this data range are (read ahead while the writer works).
            use nix::fcntl::{PosixFadviseAdvice as Advice, posix_fadvise};
            let (at, n) = (i64::try_from(self.pos).unwrap_or(0), i64::try_from(want).unwrap_or(0));
            let _ = posix_fadvise(&self.file, at, n, Advice::POSIX_FADV_DONTNEED);
            // Only data: read-ahead over a hole would fill the cache with zeros.
            let ahead = (self.data_end.saturating_sub(self.pos + want as u64)).min(2 * BUF_LEN as u64);
            if ahead > 0 {
                let ahead = i64::try_from(ahead).unwrap_or(0);
                let _ = posix_fadvise(&self.file, at + n, ahead, Advice::POSIX_FADV_WILLNEED);
            }
        }
        let chunk = Chunk::Data { offset: self.pos, len: want };
        self.pos += want as u64;
        Ok(Some(chunk))
    }
}

/// Bytes from a stream (a Glance download, a pipe), `len` of them.
pub struct ReaderSource<R> {
    reader: R,
    len: u64,
    pos: u64,
}

impl<R: Read + Send> ReaderSource<R> {
    pub fn new(reader: R, len: u64) -> Self {
        ReaderSource { reader, len, pos: 0 }
    }
}

impl<R: Read + Send> Source for ReaderSource<R> {
    fn len(&self) -> u64 {
        self.len
    }

    fn next(&mut self, buf: &mut [u8]) -> io::Result<Option<Chunk>> {
        if self.pos >= self.len {
            return Ok(None);
        }
        let want = usize::try_from((self.len - self.pos).min(buf.len() as u64)).unwrap_or(buf.len());
        let mut got = 0;
        while got < want {
            match self.reader.read(&mut buf[got..want]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the stream ended after {} of {} bytes", self.pos + got as u64, self.len),
                    ));
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let chunk = Chunk::Data { offset: self.pos, len: want };
        self.pos += want as u64;
        Ok(Some(chunk))
    }
}

/// How a destination makes a range read back as zeros.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZeroPolicy {
    /// It reads zeros already (a fresh thin LV or sparse file): nothing to do.
    AlreadyZero,
    /// Punch holes (files).
    Punch,
    /// BLKDISCARD, where the device promises discarded blocks read as zeros.
    Discard,
    /// BLKZEROOUT: the kernel offloads to WRITE ZEROES or writes zero pages.
    ZeroOut,
}

/// A volume's device or file, written with O_DIRECT where it allows it
/// (buffered otherwise, synced at the end); writes not aligned for O_DIRECT go
/// through a second, buffered descriptor.
pub struct DeviceSink {
    direct: File,
    buffered: Option<File>,
    path: PathBuf,
    is_direct: bool,
    policy: ZeroPolicy,
    len: u64,
    /// The logical block size O_DIRECT requests must be multiples of.
    block: u64,
}

nix::ioctl_read_bad!(blk_ssz_get, nix::request_code_none!(0x12, 104), libc::c_int);

impl DeviceSink {
    pub fn open(path: &Path, policy: ZeroPolicy) -> io::Result<DeviceSink> {
        let (direct, is_direct) = open_direct(path, true)?;
        let len = length_of(&direct)?;
        let block = if is_block_device(&direct)? {
            let mut size: libc::c_int = 0;
            // SAFETY: the fd is open and `size` is a valid int for the kernel to fill.
            unsafe { blk_ssz_get(direct.as_raw_fd(), &mut size) }.map_err(io::Error::from)?;
            u64::try_from(size).unwrap_or(512).max(512)
        } else {
            ALIGN as u64
        };
        Ok(DeviceSink { direct, buffered: None, path: path.to_path_buf(), is_direct, policy, len, block })
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn aligned(&self, offset: u64, len: u64) -> bool {
        offset % self.block == 0 && len % self.block == 0
    }

    fn buffered(&mut self) -> io::Result<&File> {
        if self.buffered.is_none() {
            self.buffered = Some(File::options().write(true).open(&self.path)?);
        }
        Ok(self.buffered.as_ref().expect("opened above"))
    }

    fn write_zeros(&mut self, mut offset: u64, len: u64) -> io::Result<()> {
        let end = offset + len;
        let file = self.buffered()?;
        while offset < end {
            let n = small((end - offset).min(ZEROS.len() as u64));
            file.write_all_at(&ZEROS[..n], offset)?;
            offset += n as u64;
        }
        Ok(())
    }
}

impl Sink for DeviceSink {
    fn write(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        if offset + data.len() as u64 > self.len {
            return Err(io::Error::other(format!("a write at {offset} goes past the end ({})", self.len)));
        }
        if self.is_direct && self.aligned(offset, data.len() as u64) {
            write_parallel(&self.direct, data, offset, self.block)
        } else {
            self.buffered()?.write_all_at(data, offset)
        }
    }

    fn zero(&mut self, offset: u64, len: u64) -> io::Result<()> {
        let len = len.min(self.len.saturating_sub(offset));
        if len == 0 || self.policy == ZeroPolicy::AlreadyZero {
            return Ok(());
        }
        // The aligned middle by the policy, the edges written.
        let start = offset.next_multiple_of(self.block);
        let end = ((offset + len) / self.block) * self.block;
        if start >= end {
            return self.write_zeros(offset, len);
        }
        self.write_zeros(offset, start - offset)?;
        let range = [start, end - start];
        match self.policy {
            ZeroPolicy::AlreadyZero => {}
            ZeroPolicy::Punch => {
                let mode = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
                let (at, n) = (
                    i64::try_from(start).map_err(io::Error::other)?,
                    i64::try_from(end - start).map_err(io::Error::other)?,
                );
                if let Err(e) = fallocate(&self.direct, mode, at, n) {
                    if e != nix::errno::Errno::EOPNOTSUPP {
                        return Err(e.into());
                    }
                    self.write_zeros(start, end - start)?;
                }
            }
            // SAFETY: the fd is open for writing and `range` outlives the call.
            ZeroPolicy::Discard => unsafe { blk_discard(self.direct.as_raw_fd(), &range) }.map(drop)?,
            // SAFETY: as above.
            ZeroPolicy::ZeroOut => unsafe { blk_zeroout(self.direct.as_raw_fd(), &range) }.map(drop)?,
        }
        self.write_zeros(end, offset + len - end)
    }

    fn finish(&mut self) -> io::Result<()> {
        if let Some(b) = &self.buffered {
            b.sync_data()?;
        }
        self.direct.sync_data()
    }
}

/// Pieces of one O_DIRECT write in flight at once.
const WRITE_STREAMS: usize = 4;

/// Writes `data` at `offset` as up to `WRITE_STREAMS` concurrent positional
/// writes (block-aligned pieces of at least 512 KiB): a device serves several
/// requests at once faster than one after the other, the way qemu-img's
/// parallel requests do.
fn write_parallel(file: &File, data: &[u8], offset: u64, block: u64) -> io::Result<()> {
    let block = usize::try_from(block).unwrap_or(4096);
    let piece = (data.len() / WRITE_STREAMS).next_multiple_of(block).max(512 << 10);
    if data.len() <= piece {
        return file.write_all_at(data, offset);
    }
    std::thread::scope(|scope| {
        let mut rest = Vec::new();
        let mut chunks = data.chunks(piece).enumerate();
        let (_, first) = chunks.next().expect("data is longer than one piece");
        for (i, chunk) in chunks {
            let at = offset + (i * piece) as u64;
            rest.push(scope.spawn(move || file.write_all_at(chunk, at)));
        }
        let mine = file.write_all_at(first, offset);
        rest.into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(io::Error::other("a writer panicked"))))
            .fold(mine, |acc, r| acc.and(r))
    })
}

/// Two copies joined end to end (a migration between two pools of one agent):
/// what the first copy's sink is given, the second copy's source yields, zero
/// runs as zero runs, so a sparse volume stays sparse without its zeros
/// crossing. A side that stops hangs up: the other sees an error, never a
/// short copy.
pub fn pipe(len: u64) -> (PipeSink, PipeSource) {
    let (tx, rx) = sync_channel(DEPTH);
    // Spent buffers go back to the sink: a fresh 4 MiB Vec per write would be
    // mapped, faulted in and zeroed by the kernel each time.
    let (spent, reuse) = sync_channel(DEPTH + 2);
    (PipeSink { tx, reuse }, PipeSource { rx, spent, len, pending: None })
}

enum Piece {
    Data(u64, Vec<u8>),
    Zero(u64, u64),
    End,
}

pub struct PipeSink {
    tx: SyncSender<Piece>,
    reuse: Receiver<Vec<u8>>,
}

impl PipeSink {
    fn send(&self, piece: Piece) -> io::Result<()> {
        self.tx.send(piece).map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the writing side stopped"))
    }
}

impl Sink for PipeSink {
    fn write(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut bytes = self.reuse.try_recv().unwrap_or_default();
        bytes.clear();
        bytes.extend_from_slice(data);
        self.send(Piece::Data(offset, bytes))
    }

    fn zero(&mut self, offset: u64, len: u64) -> io::Result<()> {
        self.send(Piece::Zero(offset, len))
    }

    fn finish(&mut self) -> io::Result<()> {
        self.send(Piece::End)
    }
}

pub struct PipeSource {
    rx: Receiver<Piece>,
    spent: SyncSender<Vec<u8>>,
    len: u64,
    /// A piece larger than the engine's buffer: its offset, bytes, and how far it was given out.
    pending: Option<(u64, Vec<u8>, usize)>,
}

impl Source for PipeSource {
    fn len(&self) -> u64 {
        self.len
    }

    fn next(&mut self, buf: &mut [u8]) -> io::Result<Option<Chunk>> {
        if self.pending.is_none() {
            match self.rx.recv() {
                Ok(Piece::Data(offset, data)) => self.pending = Some((offset, data, 0)),
                Ok(Piece::Zero(offset, len)) => return Ok(Some(Chunk::Zero { offset, len })),
                Ok(Piece::End) => return Ok(None),
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the reading side stopped before the end",
                    ));
                }
            }
        }
        let Some((offset, data, at)) = &mut self.pending else { return Ok(None) };
        let n = buf.len().min(data.len() - *at);
        buf[..n].copy_from_slice(&data[*at..*at + n]);
        let chunk = Chunk::Data { offset: *offset + *at as u64, len: n };
        *at += n;
        if *at == data.len() {
            if let Some((_, bytes, _)) = self.pending.take() {
                // Full or gone, the sink makes a new one.
                let _ = self.spent.try_send(bytes);
            }
        }
        Ok(Some(chunk))
    }
}

/// A stream (an upload): zero runs are written out as zeros, in order.
pub struct WriterSink<W> {
    writer: W,
    pos: u64,
}

impl<W: Write + Send> WriterSink<W> {
    pub fn new(writer: W) -> Self {
        WriterSink { writer, pos: 0 }
    }

    pub fn into_inner(self) -> W {
        self.writer
    }

    fn zeros_to(&mut self, offset: u64) -> io::Result<()> {
        while self.pos < offset {
            let n = small((offset - self.pos).min(ZEROS.len() as u64));
            self.writer.write_all(&ZEROS[..n])?;
            self.pos += n as u64;
        }
        Ok(())
    }
}

impl<W: Write + Send> Sink for WriterSink<W> {
    fn write(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.zeros_to(offset)?;
        self.writer.write_all(data)?;
        self.pos += data.len() as u64;
        Ok(())
    }

    fn zero(&mut self, offset: u64, len: u64) -> io::Result<()> {
        self.zeros_to(offset + len)
    }

    fn finish(&mut self) -> io::Result<()> {
        self.writer.flush()
    }
}

#[cfg(test)]
mod tests;
