//! qcow2, read and written natively (DESIGN decision 8), from the format's
//! specification (qemu's `docs/interop/qcow2.txt`).
//!
//! A qcow2 file is a sequence of host clusters (2^cluster_bits bytes). Cluster 0
//! holds the header and its extensions. The guest disk maps through two levels:
//! the L1 table (contiguous, `l1_size` 8-byte entries) points at L2 tables (one
//! cluster each), whose entries point at data clusters, at compressed data (a
//! byte offset and a sector count), or say "zero". Refcounts say which host
//! clusters are in use; reading never needs them, writing must produce them.
//!
//! The reader validates the header, every L1 entry and every L2 table's place
//! before it yields anything; L2 tables themselves are read lazily as the guest
//! disk is walked, one at a time (memory: the L1 table plus one L2 table plus a
//! bitset of the file's host clusters). A data cluster that two L2 entries share,
//! or that lies on the image's own metadata, is refused as corrupt.
//!
//! Caps (hostile images cannot make ember allocate without bound):
//! - virtual size at most [`MAX_VIRTUAL_SIZE`] (64 TiB);
//! - the L1 table at most [`MAX_L1_BYTES`] (32 MiB, qemu's own limit);
//! - Data extents at most [`MAX_EXTENT_LEN`] (4 MiB), a Compressed extent is one
//!   cluster (at most 2 MiB); Zero extents are not bounded (a caller skips or
//!   zero-fills them in its own chunks; `read` of a Zero extent fills `buf`).
//!
//! Refused as [`Qcow2Error::Unsupported`] (Cinder refuses the same): a backing
//! file, an external data file, encryption, zstd compression, extended L2
//! entries, the corrupt bit, any unknown incompatible feature.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use super::ImageData;

const MAGIC: [u8; 4] = *b"QFI\xfb";
/// Largest virtual disk ember accepts.
pub const MAX_VIRTUAL_SIZE: u64 = 64 << 40;
/// Largest L1 table ember reads (bytes).
pub const MAX_L1_BYTES: u64 = 32 << 20;
/// Largest Data extent [`Qcow2::extents`] yields (adjacent host-contiguous clusters merged up to it).
pub const MAX_EXTENT_LEN: u64 = 4 << 20;

const INCOMPAT_DIRTY: u64 = 1 << 0;
const INCOMPAT_CORRUPT: u64 = 1 << 1;
const INCOMPAT_DATA_FILE: u64 = 1 << 2;
const INCOMPAT_COMPRESSION: u64 = 1 << 3;
const INCOMPAT_EXTL2: u64 = 1 << 4;

const EXT_END: u32 = 0;
const EXT_FEATURE_NAMES: u32 = 0x6803_f857;
const EXT_CRYPTO: u32 = 0x0537_be77;
const EXT_DATA_FILE: u32 = 0x4441_5441;

/// L1 entry: bits 9..=55 are the L2 table's offset; bit 63 "copied".
const L1_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const L1_RESERVED: u64 = 0x7f00_0000_0000_01ff;
/// L2 entry (standard): bits 9..=55 host offset, bit 0 zero flag, bits 1..=8 and 56..=61 reserved.
const L2_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const L2_STD_RESERVED: u64 = 0x3f00_0000_0000_01fe;
const L2_COMPRESSED: u64 = 1 << 62;
const L2_COPIED: u64 = 1 << 63;
const L2_ZERO: u64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum Qcow2Error {
    /// A feature ember refuses; the message names it.
    #[error("unsupported qcow2 image: {0}")]
    Unsupported(String),
    /// The image is damaged, truncated or hostile.
    #[error("corrupt qcow2 image: {0}")]
    Corrupt(String),
    #[error("qcow2 I/O: {0}")]
    Io(#[from] io::Error),
}

fn corrupt<T>(msg: impl Into<String>) -> Result<T, Qcow2Error> {
    Err(Qcow2Error::Corrupt(msg.into()))
}

/// Quick probe for format detection: the first bytes are qcow2's magic.
pub fn is_qcow2(first_bytes: &[u8]) -> bool {
    first_bytes.len() >= 4 && first_bytes[..4] == MAGIC
}

/// A run of the guest disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub guest_offset: u64,
    pub len: u64,
    pub kind: ExtentKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtentKind {
    /// `len` bytes stored as-is at `host_offset`.
    Data { host_offset: u64 },
    /// One cluster, deflated, `compressed_len` bytes at `host_offset` (clamped to the file's end).
    Compressed { host_offset: u64, compressed_len: u64 },
    /// Reads as zeros: unallocated (there is no backing file) or the zero flag.
    Zero,
}

fn be32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(a)
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

fn to_usize(v: u64, what: &str) -> Result<usize, Qcow2Error> {
    usize::try_from(v).or_else(|_| corrupt(format!("{what} {v} does not fit in memory")))
}

/// An opened, validated qcow2 image.
pub struct Qcow2 {
    data: Arc<dyn ImageData>,
    file_len: u64,
    version: u32,
    cluster_bits: u32,
    virtual_size: u64,
    /// The L1 entries that cover the virtual disk (extra entries past it are ignored).
    l1: Vec<u64>,
    /// Host clusters of the image's metadata (header, L1, L2 tables, refcount table).
    metadata: Bitset,
}

impl Qcow2 {
    /// Reads and validates the header, its extensions and the L1 table, and checks
    /// that every L2 table lies inside the file, aligned, on no other metadata.
    pub fn open(data: Arc<dyn ImageData>) -> Result<Qcow2, Qcow2Error> {
        let file_len = data.len();
        let mut head = [0u8; 112];
        let got = read_full(data.as_ref(), &mut head, 0)?;
        if got < 4 || !is_qcow2(&head) {
            return corrupt("no qcow2 magic");
        }
        if got < 72 {
            return corrupt(format!("header truncated at {got} bytes"));
        }
        let version = be32(&head, 4);
        if version != 2 && version != 3 {
            return Err(Qcow2Error::Unsupported(format!("qcow2 version {version}")));
        }
        let backing_file_offset = be64(&head, 8);
        let cluster_bits = be32(&head, 20);
        let virtual_size = be64(&head, 24);
        let crypt_method = be32(&head, 32);
        let l1_size = u64::from(be32(&head, 36));
        let l1_table_offset = be64(&head, 40);
        let refcount_table_offset = be64(&head, 48);
        let refcount_table_clusters = u64::from(be32(&head, 56));

        if !(9..=21).contains(&cluster_bits) {
            return corrupt(format!("cluster_bits {cluster_bits} outside 9..=21"));
        }
        let cluster_size = 1u64 << cluster_bits;

        let (incompatible, header_length) = if version == 3 {
            if got < 104 {
                return corrupt(format!("version 3 header truncated at {got} bytes"));
            }
            let header_length = u64::from(be32(&head, 100));
            if header_length < 104 || header_length % 8 != 0 || header_length > cluster_size {
                return corrupt(format!("header_length {header_length}"));
            }
            let refcount_order = be32(&head, 96);
            if refcount_order > 6 {
                return corrupt(format!("refcount_order {refcount_order} above 6"));
            }
            (be64(&head, 72), header_length)
        } else {
            (0, 72)
        };

        // The refusals, most telling first.
        if incompatible & INCOMPAT_CORRUPT != 0 {
            return Err(Qcow2Error::Unsupported("the image is marked corrupt (incompatible feature bit 1)".into()));
        }
        if incompatible & INCOMPAT_DATA_FILE != 0 {
            return Err(Qcow2Error::Unsupported("the image has an external data file".into()));
        }
        if backing_file_offset != 0 {
            return Err(Qcow2Error::Unsupported("the image has a backing file".into()));
        }
        if crypt_method != 0 {
            return Err(Qcow2Error::Unsupported(format!("the image is encrypted (crypt_method {crypt_method})")));
        }
        let compression_type = if header_length > 104 && got > 104 { head[104] } else { 0 };
        if incompatible & INCOMPAT_COMPRESSION != 0 {
            if compression_type == 1 {
                return Err(Qcow2Error::Unsupported("the image uses zstd compression".into()));
            }
            return Err(Qcow2Error::Unsupported(format!("the image uses compression type {compression_type}")));
        } else if compression_type != 0 {
            return corrupt(format!("compression_type {compression_type} without its incompatible bit"));
        }
        if incompatible & INCOMPAT_EXTL2 != 0 {
            return Err(Qcow2Error::Unsupported("the image uses extended L2 entries (subclusters)".into()));
        }

        // Header extensions: inside cluster 0, each 8-byte aligned.
        let ext_area_len = to_usize(cluster_size.min(file_len).saturating_sub(header_length), "header extensions")?;
        let mut ext = vec![0u8; ext_area_len];
        let ext_got = read_full(data.as_ref(), &mut ext, header_length)?;
        ext.truncate(ext_got);
        let mut feature_names: HashMap<u8, String> = HashMap::new();
        let mut pos = 0usize;
        loop {
            if pos + 8 > ext.len() {
                // qemu always ends the list with an end marker inside cluster 0.
                return corrupt("header extensions run past the first cluster");
            }
            let kind = be32(&ext, pos);
            let len = to_usize(u64::from(be32(&ext, pos + 4)), "header extension length")?;
            pos += 8;
            if kind == EXT_END {
                break;
            }
            if len > ext.len() - pos {
                return corrupt(format!("header extension {kind:#010x} of {len} bytes runs past the first cluster"));
            }
            let body = &ext[pos..pos + len];
            match kind {
                EXT_CRYPTO => return Err(Qcow2Error::Unsupported("the image is encrypted".into())),
                EXT_DATA_FILE => return Err(Qcow2Error::Unsupported("the image has an external data file".into())),
                EXT_FEATURE_NAMES => {
                    for entry in body.chunks_exact(48) {
                        if entry[0] == 0 {
                            let name = &entry[2..];
                            let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
                            feature_names.insert(entry[1], String::from_utf8_lossy(&name[..end]).into_owned());
                        }
                    }
                }
                _ => {}
            }
            pos += len.div_ceil(8) * 8;
        }
        let known = INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE | INCOMPAT_COMPRESSION | INCOMPAT_EXTL2;
        let unknown = incompatible & !known;
        if unknown != 0 {
            let bit = unknown.trailing_zeros();
            let name =
                u8::try_from(bit).ok().and_then(|b| feature_names.get(&b)).map(String::as_str).unwrap_or("unnamed");
            return Err(Qcow2Error::Unsupported(format!("unknown incompatible feature bit {bit} ({name})")));
        }

        // Sizes.
        if virtual_size > MAX_VIRTUAL_SIZE {
            return corrupt(format!("virtual size {virtual_size} above ember's cap of {MAX_VIRTUAL_SIZE}"));
        }
        let l2_entries = cluster_size / 8;
        let l1_span = cluster_size * l2_entries;
        let l1_needed = virtual_size.div_ceil(l1_span);
        if l1_size < l1_needed {
            return corrupt(format!("l1_size {l1_size} too small for virtual size {virtual_size} (needs {l1_needed})"));
        }
        if l1_size * 8 > MAX_L1_BYTES {
            return corrupt(format!("l1_size {l1_size} above ember's cap of {} entries", MAX_L1_BYTES / 8));
        }
        if l1_table_offset % cluster_size != 0 && l1_needed > 0 {
            return corrupt(format!("L1 table offset {l1_table_offset} not cluster aligned"));
        }
        let l1_bytes = l1_needed * 8;
        if l1_needed > 0 && (l1_table_offset == 0 || l1_table_offset.saturating_add(l1_bytes) > file_len) {
            return corrupt(format!("L1 table at {l1_table_offset} ({l1_bytes} bytes) outside the file ({file_len})"));
        }
        let mut raw_l1 = vec![0u8; to_usize(l1_bytes, "L1 table")?];
        read_exact(data.as_ref(), &mut raw_l1, l1_table_offset)?;
        let l1: Vec<u64> = raw_l1.chunks_exact(8).map(|c| be64(c, 0)).collect();
        drop(raw_l1);

        let mut metadata = Bitset::new(file_len.div_ceil(cluster_size));
        let cluster_of = |off: u64| off >> cluster_bits;
        metadata.claim(0);
        for c in cluster_of(l1_table_offset)..cluster_of(l1_table_offset + l1_bytes.max(1) - 1) + 1 {
            if l1_needed > 0 && !metadata.claim(c) {
                return corrupt(format!("L1 table at {l1_table_offset} overlaps the header"));
            }
        }
        // The refcount table is metadata too; reading does not need it, so only mark what lies in the file.
        if refcount_table_offset % cluster_size == 0 && refcount_table_offset != 0 {
            let first = cluster_of(refcount_table_offset);
            for c in first..first.saturating_add(refcount_table_clusters) {
                if c >= metadata.len() {
                    break;
                }
                if !metadata.claim(c) {
                    return corrupt(format!("refcount table at {refcount_table_offset} overlaps other metadata"));
                }
            }
        }
        for (index, &entry) in l1.iter().enumerate() {
            if entry & L1_RESERVED != 0 {
                return corrupt(format!("L1 entry {index} has reserved bits set ({entry:#018x})"));
            }
            let l2_offset = entry & L1_OFFSET_MASK;
            if l2_offset == 0 {
                continue;
            }
            if l2_offset % cluster_size != 0 {
                return corrupt(format!("L2 table {index} at {l2_offset} not cluster aligned"));
            }
            if l2_offset.saturating_add(cluster_size) > file_len {
                return corrupt(format!("L2 table {index} at {l2_offset} past the file's end ({file_len})"));
            }
            if !metadata.claim(cluster_of(l2_offset)) {
                return corrupt(format!("L2 table {index} at {l2_offset} overlaps other metadata"));
            }
        }

        Ok(Qcow2 { data, file_len, version, cluster_bits, virtual_size, l1, metadata })
    }

    pub fn virtual_size(&self) -> u64 {
        self.virtual_size
    }

    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// The guest disk as extents in guest order, covering [0, virtual_size)
    /// exactly. L2 tables are read as the walk reaches them; after an error the
    /// iterator ends.
    pub fn extents(&self) -> Extents<'_> {
        Extents {
            image: Walked::Borrowed(self),
            next_guest: 0,
            l2: None,
            pending: None,
            claimed: self.metadata.clone(),
            failed: false,
        }
    }

    /// The same walk, owning its image (for a copy source that outlives the borrow).
    pub fn into_extents(self: Arc<Self>) -> Extents<'static> {
        let claimed = self.metadata.clone();
        Extents { image: Walked::Shared(self), next_guest: 0, l2: None, pending: None, claimed, failed: false }
    }

    /// Reads an extent's guest bytes into `buf` (`buf.len() == extent.len`).
    pub fn read(&self, extent: &Extent, buf: &mut [u8]) -> Result<(), Qcow2Error> {
        if u64::try_from(buf.len()).ok() != Some(extent.len) {
            return Err(Qcow2Error::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("buffer of {} bytes for an extent of {}", buf.len(), extent.len),
            )));
        }
        match extent.kind {
            ExtentKind::Zero => buf.fill(0),
            ExtentKind::Data { host_offset } => read_exact(self.data.as_ref(), buf, host_offset)?,
            ExtentKind::Compressed { host_offset, compressed_len } => {
                let mut packed = vec![0u8; to_usize(compressed_len, "compressed length")?];
                read_exact(self.data.as_ref(), &mut packed, host_offset)?;
                let mut cluster = vec![0u8; to_usize(self.cluster_size(), "cluster")?];
                inflate_cluster(&packed, &mut cluster)?;
                let n = buf.len();
                if n > cluster.len() {
                    return corrupt("compressed extent longer than a cluster");
                }
                buf.copy_from_slice(&cluster[..n]);
            }
        }
        Ok(())
    }

    fn l2_entries(&self) -> u64 {
        self.cluster_size() / 8
    }
}

/// Inflates raw deflate data into exactly one cluster. Trailing input is allowed
/// (the last sector is shared with the next compressed cluster).
fn inflate_cluster(packed: &[u8], out: &mut [u8]) -> Result<(), Qcow2Error> {
    use miniz_oxide::inflate::TINFLStatus;
    use miniz_oxide::inflate::core::{DecompressorOxide, decompress, inflate_flags};
    let mut state = Box::<DecompressorOxide>::default();
    let flags = inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF;
    let (status, _, produced) = decompress(&mut state, packed, out, 0, flags);
    match status {
        TINFLStatus::Done | TINFLStatus::HasMoreOutput if produced == out.len() => Ok(()),
        TINFLStatus::Done | TINFLStatus::HasMoreOutput => {
            corrupt(format!("compressed cluster inflates to {produced} bytes, not {}", out.len()))
        }
        other => corrupt(format!("compressed cluster does not inflate ({other:?})")),
    }
}

/// Reads until `buf` is full or the data ends; returns the bytes read.
fn read_full(data: &dyn ImageData, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        let at = offset + u64::try_from(done).map_err(io::Error::other)?;
        match data.read_at(&mut buf[done..], at) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

fn read_exact(data: &dyn ImageData, buf: &mut [u8], offset: u64) -> Result<(), Qcow2Error> {
    let got = read_full(data, buf, offset)?;
    if got < buf.len() {
        return corrupt(format!("{} bytes at {offset} run past the file's end", buf.len()));
    }
    Ok(())
}

/// One bit per host cluster of the file: claimed by metadata or a data cluster.
#[derive(Clone)]
struct Bitset {
    words: Vec<u64>,
    len: u64,
}

impl Bitset {
    fn new(len: u64) -> Bitset {
        // len is bounded by the file's size over the cluster size.
        let words = usize::try_from(len.div_ceil(64)).unwrap_or(usize::MAX);
        Bitset { words: vec![0; words], len }
    }

    fn len(&self) -> u64 {
        self.len
    }

    /// Marks `bit`; false if it was already marked or lies outside the set.
    fn claim(&mut self, bit: u64) -> bool {
        let Ok(word) = usize::try_from(bit / 64) else { return false };
        let Some(w) = self.words.get_mut(word) else { return false };
        let mask = 1u64 << (bit % 64);
        let fresh = *w & mask == 0;
        *w |= mask;
        fresh
    }
}

/// The walk over the guest disk; see [`Qcow2::extents`].
pub struct Extents<'a> {
    image: Walked<'a>,
    next_guest: u64,
    /// The L2 table in hand: its L1 index and entries.
    l2: Option<(usize, Vec<u64>)>,
    pending: Option<Extent>,
    claimed: Bitset,
    failed: bool,
}

/// The image an `Extents` walks: borrowed, or shared with its reader.
enum Walked<'a> {
    Borrowed(&'a Qcow2),
    Shared(Arc<Qcow2>),
}

impl std::ops::Deref for Walked<'_> {
    type Target = Qcow2;
    fn deref(&self) -> &Qcow2 {
        match self {
            Walked::Borrowed(q) => q,
            Walked::Shared(q) => q,
        }
    }
}

impl Extents<'_> {
    /// The next piece at `next_guest`: one cluster, or a whole unallocated L2 range.
    fn piece(&mut self) -> Result<Extent, Qcow2Error> {
        let q: &Qcow2 = &self.image;
        let cs = q.cluster_size();
        let g = self.next_guest;
        let l1_span = cs * q.l2_entries();
        let l1_index = to_usize(g / l1_span, "L1 index")?;
        let l1_entry = q.l1.get(l1_index).copied().unwrap_or(0);
        let l2_offset = l1_entry & L1_OFFSET_MASK;
        if l2_offset == 0 {
            let end = ((g / l1_span) + 1).saturating_mul(l1_span).min(q.virtual_size);
            return Ok(Extent { guest_offset: g, len: end - g, kind: ExtentKind::Zero });
        }
        if self.l2.as_ref().map(|(i, _)| *i) != Some(l1_index) {
            let mut raw = vec![0u8; to_usize(cs, "L2 table")?];
            read_exact(q.data.as_ref(), &mut raw, l2_offset)?;
            self.l2 = Some((l1_index, raw.chunks_exact(8).map(|c| be64(c, 0)).collect()));
        }
        let l2_index = to_usize((g / cs) % q.l2_entries(), "L2 index")?;
        let entry = self.l2.as_ref().map(|(_, t)| t[l2_index]).unwrap_or(0);
        let len = cs.min(q.virtual_size - g);
        let kind = if entry & L2_COMPRESSED != 0 {
            let x = 62 - (q.cluster_bits - 8);
            let host_offset = entry & ((1u64 << x) - 1);
            let sectors = ((entry & !(L2_COMPRESSED | L2_COPIED)) >> x) + 1;
            if host_offset >= q.file_len {
                return corrupt(format!(
                    "compressed cluster at guest {g}: host offset {host_offset} past the file's end"
                ));
            }
            let compressed_len = (sectors * 512 - (host_offset & 511)).min(q.file_len - host_offset);
            ExtentKind::Compressed { host_offset, compressed_len }
        } else {
            if entry & L2_STD_RESERVED != 0 {
                return corrupt(format!("L2 entry for guest {g} has reserved bits set ({entry:#018x})"));
            }
            let host_offset = entry & L2_OFFSET_MASK;
            if entry & L2_ZERO != 0 {
                if q.version == 2 {
                    return corrupt(format!("zero flag in a version 2 image at guest {g}"));
                }
                ExtentKind::Zero
            } else if host_offset == 0 {
                ExtentKind::Zero
            } else {
                if host_offset.saturating_add(len) > q.file_len {
                    return corrupt(format!("data cluster for guest {g} at {host_offset} past the file's end"));
                }
                if !self.claimed.claim(host_offset >> q.cluster_bits) {
                    return corrupt(format!(
                        "data cluster at {host_offset} (guest {g}) is referenced twice or overlaps metadata"
                    ));
                }
                ExtentKind::Data { host_offset }
            }
        };
        Ok(Extent { guest_offset: g, len, kind })
    }
}

impl Iterator for Extents<'_> {
    type Item = Result<Extent, Qcow2Error>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.failed {
                return None;
            }
            if self.next_guest >= self.image.virtual_size {
                return self.pending.take().map(Ok);
            }
            let piece = match self.piece() {
                Ok(p) => p,
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            };
            self.next_guest += piece.len;
            match self.pending.as_mut() {
                None => self.pending = Some(piece),
                Some(p) => {
                    let merged = match (p.kind, piece.kind) {
                        (ExtentKind::Zero, ExtentKind::Zero) => true,
                        (ExtentKind::Data { host_offset: a }, ExtentKind::Data { host_offset: b }) => {
                            a + p.len == b && p.len + piece.len <= MAX_EXTENT_LEN
                        }
                        _ => false,
                    };
                    if merged {
                        p.len += piece.len;
                    } else {
                        return self.pending.replace(piece).map(Ok);
                    }
                }
            }
        }
    }
}

/// Writes a qcow2 v3 (compat 1.1) image with 64 KiB clusters into `out`: data
/// clusters from cluster 1 on as they come, then at `finish` the L2 tables, the
/// L1 table, the refcount blocks and table, and last the header, so a crash
/// leaves a file that is not yet qcow2.
pub struct Qcow2Writer<W: FileExt> {
    out: W,
    virtual_size: u64,
    compress: bool,
    /// Per L1 entry, its L2 table once any cluster under it is allocated.
    l2: Vec<Option<Box<[u64]>>>,
    /// Next free byte of the file (compressed data packs at byte granularity).
    cursor: u64,
    /// Refcount per host cluster (index = host offset / cluster size).
    refcounts: Vec<u16>,
}

const WRITER_CLUSTER_BITS: u32 = 16;
/// The cluster size of the images `Qcow2Writer` writes: its `write` takes whole ones.
pub const WRITER_CLUSTER: u64 = 1 << WRITER_CLUSTER_BITS;
const WRITER_L2_ENTRIES: u64 = WRITER_CLUSTER / 8;
/// 16-bit refcounts (refcount_order 4), as qemu writes.
const WRITER_REFCOUNT_ORDER: u32 = 4;

fn invalid(msg: String) -> Qcow2Error {
    Qcow2Error::Io(io::Error::new(io::ErrorKind::InvalidInput, msg))
}

impl<W: FileExt> Qcow2Writer<W> {
    pub fn new(out: W, virtual_size: u64, compress: bool) -> Result<Self, Qcow2Error> {
        if virtual_size > MAX_VIRTUAL_SIZE {
            return Err(invalid(format!("virtual size {virtual_size} above {MAX_VIRTUAL_SIZE}")));
        }
        let l1_size = to_usize(virtual_size.div_ceil(WRITER_CLUSTER * WRITER_L2_ENTRIES), "L1 size")?;
        Ok(Qcow2Writer {
            out,
            virtual_size,
            compress,
            l2: vec![None; l1_size],
            cursor: WRITER_CLUSTER,
            refcounts: vec![1],
        })
    }

    fn bump(&mut self, cluster: u64) -> Result<(), Qcow2Error> {
        let index = to_usize(cluster, "host cluster")?;
        if self.refcounts.len() <= index {
            self.refcounts.resize(index + 1, 0);
        }
        let r = &mut self.refcounts[index];
        *r = r.checked_add(1).ok_or_else(|| invalid(format!("refcount of host cluster {cluster} overflows")))?;
        Ok(())
    }

    /// Guest data at a cluster-aligned offset (`data.len()` a multiple of the
    /// cluster size, except at the disk's end). All-zero clusters stay
    /// unallocated; each guest cluster may be written once.
    pub fn write(&mut self, guest_offset: u64, data: &[u8]) -> Result<(), Qcow2Error> {
        let len = u64::try_from(data.len()).map_err(|e| invalid(e.to_string()))?;
        let end = guest_offset.checked_add(len).filter(|&e| e <= self.virtual_size);
        if guest_offset % WRITER_CLUSTER != 0 || end.is_none() {
            return Err(invalid(format!(
                "write of {len} bytes at {guest_offset} not cluster aligned or past the disk"
            )));
        }
        if len % WRITER_CLUSTER != 0 && end != Some(self.virtual_size) {
            return Err(invalid(format!("write of {len} bytes at {guest_offset}: not whole clusters")));
        }
        let cs = to_usize(WRITER_CLUSTER, "cluster")?;
        let mut padded = Vec::new();
        for (i, chunk) in data.chunks(cs).enumerate() {
            let g = guest_offset + u64::try_from(i).map_err(|e| invalid(e.to_string()))? * WRITER_CLUSTER;
            if chunk.iter().all(|&b| b == 0) {
                continue;
            }
            let cluster: &[u8] = if chunk.len() < cs {
                padded.clear();
                padded.extend_from_slice(chunk);
                padded.resize(cs, 0);
                &padded
            } else {
                chunk
            };
            let l1_index = to_usize(g / (WRITER_CLUSTER * WRITER_L2_ENTRIES), "L1 index")?;
            let l2_index = to_usize((g / WRITER_CLUSTER) % WRITER_L2_ENTRIES, "L2 index")?;
            let table = self.l2[l1_index].get_or_insert_with(|| vec![0u64; 8192].into_boxed_slice());
            if table[l2_index] != 0 {
                return Err(invalid(format!("guest cluster at {g} written twice")));
            }
            let deflated = if self.compress { Some(miniz_oxide::deflate::compress_to_vec(cluster, 6)) } else { None };
            let entry = match deflated {
                Some(z) if z.len() < cs => {
                    let at = self.cursor;
                    let zlen = u64::try_from(z.len()).map_err(|e| invalid(e.to_string()))?;
                    self.out.write_all_at(&z, at)?;
                    self.cursor = at + zlen;
                    let first_sector = at & !511;
                    let sectors = (at + zlen).div_ceil(512) - first_sector / 512;
                    for c in (at >> WRITER_CLUSTER_BITS)..=((at + zlen - 1) >> WRITER_CLUSTER_BITS) {
                        self.bump(c)?;
                    }
                    let x = 62 - (WRITER_CLUSTER_BITS - 8);
                    L2_COMPRESSED | ((sectors - 1) << x) | at
                }
                _ => {
                    let at = self.cursor.div_ceil(WRITER_CLUSTER) * WRITER_CLUSTER;
                    self.out.write_all_at(cluster, at)?;
                    self.cursor = at + WRITER_CLUSTER;
                    self.bump(at >> WRITER_CLUSTER_BITS)?;
                    at | L2_COPIED
                }
            };
            if let Some(table) = self.l2[l1_index].as_mut() {
                table[l2_index] = entry;
            }
        }
        Ok(())
    }

    /// Writes the L2 tables, the L1 table, the refcount blocks and table, then
    /// the header; returns the file's length. Does not sync `out`.
    pub fn finish(mut self) -> Result<u64, Qcow2Error> {
        let cs = WRITER_CLUSTER;
        let mut next = self.cursor.div_ceil(cs); // next free host cluster
        // L2 tables.
        let mut l1 = vec![0u64; self.l2.len()];
        let tables: Vec<(usize, Box<[u64]>)> =
            self.l2.iter_mut().enumerate().filter_map(|(i, t)| t.take().map(|t| (i, t))).collect();
        for (i, table) in &tables {
            let at = next * cs;
            let bytes: Vec<u8> = table.iter().flat_map(|e| e.to_be_bytes()).collect();
            self.out.write_all_at(&bytes, at)?;
            self.bump(next)?;
            l1[*i] = at | L2_COPIED;
            next += 1;
        }
        // L1 table (at least one cluster, so the header's offset points at something).
        let l1_offset = next * cs;
        let l1_clusters = (u64::try_from(l1.len()).map_err(|e| invalid(e.to_string()))? * 8).div_ceil(cs).max(1);
        let l1_bytes: Vec<u8> = l1.iter().flat_map(|e| e.to_be_bytes()).collect();
        self.out.write_all_at(&l1_bytes, l1_offset)?;
        for c in next..next + l1_clusters {
            self.bump(c)?;
        }
        next += l1_clusters;
        // Refcount blocks and table cover every cluster, themselves included.
        let per_block = cs * 8 / (1 << WRITER_REFCOUNT_ORDER);
        let (mut blocks, mut table_clusters) = (0u64, 0u64);
        loop {
            let total = next + blocks + table_clusters;
            let b = total.div_ceil(per_block);
            let t = (b * 8).div_ceil(cs).max(1);
            if b == blocks && t == table_clusters {
                break;
            }
            (blocks, table_clusters) = (b, t);
        }
        let table_start = next;
        let blocks_start = next + table_clusters;
        for c in table_start..blocks_start + blocks {
            self.bump(c)?;
        }
        let total = blocks_start + blocks;
        let mut refcount_table = Vec::with_capacity(to_usize(table_clusters * cs, "refcount table")?);
        for b in 0..blocks {
            let mut block = Vec::with_capacity(to_usize(cs, "cluster")?);
            for c in b * per_block..((b + 1) * per_block) {
                let r = self.refcounts.get(to_usize(c, "host cluster")?).copied().unwrap_or(0);
                block.extend_from_slice(&r.to_be_bytes());
            }
            self.out.write_all_at(&block, (blocks_start + b) * cs)?;
            refcount_table.extend_from_slice(&((blocks_start + b) * cs).to_be_bytes());
        }
        refcount_table.resize(to_usize(table_clusters * cs, "refcount table")?, 0);
        self.out.write_all_at(&refcount_table, table_start * cs)?;
        let file_len = total * cs;

        // Header, last.
        let mut h = vec![0u8; 120];
        h[0..4].copy_from_slice(&MAGIC);
        h[4..8].copy_from_slice(&3u32.to_be_bytes());
        h[20..24].copy_from_slice(&WRITER_CLUSTER_BITS.to_be_bytes());
        h[24..32].copy_from_slice(&self.virtual_size.to_be_bytes());
        let l1_size = u32::try_from(l1.len()).map_err(|e| invalid(e.to_string()))?;
        h[36..40].copy_from_slice(&l1_size.to_be_bytes());
        h[40..48].copy_from_slice(&l1_offset.to_be_bytes());
        h[48..56].copy_from_slice(&(table_start * cs).to_be_bytes());
        let rt = u32::try_from(table_clusters).map_err(|e| invalid(e.to_string()))?;
        h[56..60].copy_from_slice(&rt.to_be_bytes());
        h[96..100].copy_from_slice(&WRITER_REFCOUNT_ORDER.to_be_bytes());
        h[100..104].copy_from_slice(&112u32.to_be_bytes());
        // 104: compression_type 0 (deflate), padding; 112..120: the end of header extensions.
        self.out.write_all_at(&h, 0)?;
        Ok(file_len)
    }
}

#[cfg(test)]
mod tests;
