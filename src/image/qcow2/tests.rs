//! Unit tier: qemu-img and qemu-io (Debian's qemu-utils) are the independent
//! reference; no root needed.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::*;

struct FileData(File, u64);

impl ImageData for FileData {
    fn len(&self) -> u64 {
        self.1
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        FileExt::read_at(&self.0, buf, offset)
    }
    fn stream(&self) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(self.0.try_clone()?))
    }
}

struct MemData(Vec<u8>);

impl ImageData for MemData {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let Ok(at) = usize::try_from(offset) else { return Ok(0) };
        if at >= self.0.len() {
            return Ok(0);
        }
        let n = buf.len().min(self.0.len() - at);
        buf[..n].copy_from_slice(&self.0[at..at + n]);
        Ok(n)
    }
    fn stream(&self) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(io::Cursor::new(self.0.clone())))
    }
}

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ember-qcow2-{}-{}-{name}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(program: &str, args: &[&str]) -> std::process::Output {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e} (qemu-utils)"));
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn open_file(path: &Path) -> Result<Qcow2, Qcow2Error> {
    let f = File::open(path).unwrap();
    let len = f.metadata().unwrap().len();
    Qcow2::open(Arc::new(FileData(f, len)))
}

/// Every guest byte through extents + read, checking the extents tile the disk.
fn read_all(q: &Qcow2) -> Result<Vec<u8>, Qcow2Error> {
    let mut disk = vec![0u8; usize::try_from(q.virtual_size()).unwrap()];
    let mut at = 0u64;
    for e in q.extents() {
        let e = e?;
        assert_eq!(e.guest_offset, at, "extents tile the disk");
        assert!(e.len > 0);
        if !matches!(e.kind, ExtentKind::Zero) {
            assert!(e.len <= MAX_EXTENT_LEN);
        }
        let start = usize::try_from(e.guest_offset).unwrap();
        q.read(&e, &mut disk[start..start + usize::try_from(e.len).unwrap()])?;
        at += e.len;
    }
    assert_eq!(at, q.virtual_size());
    Ok(disk)
}

/// Mixed content: random clusters, zero runs, compressible text.
fn mixed(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed);
    let mut v = vec![0u8; len];
    for (i, chunk) in v.chunks_mut(16 << 10).enumerate() {
        match rng.next() % 4 {
            0 => {}
            1 => chunk.iter_mut().for_each(|b| *b = rng.byte()),
            2 => chunk.iter_mut().enumerate().for_each(|(j, b)| *b = b"ember qcow2 "[(i + j) % 12]),
            _ => {
                let fill = rng.byte() | 1;
                chunk[..512].fill(fill);
            }
        }
    }
    v
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn byte(&mut self) -> u8 {
        self.next().to_le_bytes()[0]
    }
}

/// qemu-img's own raw conversion of `img`.
fn reference(s: &Scratch, img: &Path) -> Vec<u8> {
    let raw = s.path("reference.raw");
    run("qemu-img", &["convert", "-O", "raw", p(img), p(&raw)]);
    std::fs::read(raw).unwrap()
}

fn convert(s: &Scratch, raw: &[u8], opts: &str, compress: bool) -> PathBuf {
    let src = s.path("src.raw");
    std::fs::write(&src, raw).unwrap();
    let img = s.path("img.qcow2");
    let mut args = vec!["convert", "-f", "raw", "-O", "qcow2", "-o", opts];
    if compress {
        args.push("-c");
    }
    args.extend([p(&src), p(&img)]);
    run("qemu-img", &args);
    img
}

fn assert_reads_like_qemu(s: &Scratch, img: &Path) {
    let q = open_file(img).unwrap();
    let ours = read_all(&q).unwrap();
    let theirs = reference(s, img);
    assert_eq!(ours.len(), theirs.len());
    assert!(ours == theirs, "{} reads differently from qemu-img convert", img.display());
}

#[test]
fn qcow2_reads_v2_v3_and_cluster_sizes_like_qemu() {
    for opts in [
        "compat=0.10,cluster_size=65536",
        "compat=1.1,cluster_size=65536",
        "compat=1.1,cluster_size=512",
        "compat=0.10,cluster_size=512",
        "compat=1.1,cluster_size=2097152",
        "compat=1.1,cluster_size=4096,refcount_bits=1",
        "compat=1.1,cluster_size=65536,refcount_bits=64",
    ] {
        let s = Scratch::new("versions");
        // 5 MiB plus 3 sectors: not a multiple of any cluster size above 512.
        let raw = mixed((5 << 20) + 1536, 7);
        let img = convert(&s, &raw, opts, false);
        assert_reads_like_qemu(&s, &img);
        let q = open_file(&img).unwrap();
        assert_eq!(q.virtual_size(), raw.len() as u64, "{opts}");
        assert_eq!(read_all(&q).unwrap(), raw, "{opts}");
    }
}

#[test]
fn qcow2_reads_compressed_like_qemu() {
    for opts in ["compat=1.1,cluster_size=65536", "compat=0.10,cluster_size=4096", "compat=1.1,cluster_size=2097152"] {
        let s = Scratch::new("compressed");
        let raw = mixed((6 << 20) + 512, 11);
        let img = convert(&s, &raw, opts, true);
        let q = open_file(&img).unwrap();
        let compressed = q.extents().filter(|e| matches!(e.as_ref().unwrap().kind, ExtentKind::Compressed { .. }));
        assert!(compressed.count() > 0, "{opts}: qemu-img -c made compressed clusters");
        assert_reads_like_qemu(&s, &img);
        assert_eq!(read_all(&q).unwrap(), raw);
    }
}

#[test]
fn qcow2_reads_sparse_and_zero_clusters_like_qemu() {
    for (compat, cluster) in [("1.1", "65536"), ("0.10", "65536"), ("1.1", "512")] {
        let s = Scratch::new("sparse");
        let img = s.path("sparse.qcow2");
        run(
            "qemu-img",
            &["create", "-f", "qcow2", "-o", &format!("compat={compat},cluster_size={cluster}"), p(&img), "300M"],
        );
        let mut io = vec!["-f", "qcow2"];
        let cmds = ["write -P 0xaa 0 1M", "write -P 0x55 100M 192k", "write -P 0x11 299M 1M", "write -P 0x22 200M 4k"];
        for c in &cmds {
            io.extend(["-c", c]);
        }
        if compat == "1.1" {
            // The zero flag: over allocated data and over nothing.
            io.extend(["-c", "write -z 64k 128k", "-c", "write -z 150M 1M"]);
        }
        io.push(p(&img));
        run("qemu-io", &io);
        let q = open_file(&img).unwrap();
        let extents: Vec<Extent> = q.extents().map(Result::unwrap).collect();
        let zero_pairs = extents.windows(2).filter(|w| w.iter().all(|e| e.kind == ExtentKind::Zero)).count();
        assert_eq!(zero_pairs, 0, "zero runs are merged");
        if cluster == "65536" {
            assert!(extents.len() < 32, "{} extents", extents.len());
        }
        let data: u64 = extents.iter().filter(|e| !matches!(e.kind, ExtentKind::Zero)).map(|e| e.len).sum();
        assert!(data <= (3 << 20) + (192 << 10), "only the written clusters are data: {data}");
        assert_reads_like_qemu(&s, &img);
    }
}

#[test]
fn qcow2_probe() {
    assert!(is_qcow2(b"QFI\xfb\0\0\0\x03"));
    assert!(!is_qcow2(b"QFI"));
    assert!(!is_qcow2(&[0u8; 512]));
}

fn check_clean(img: &Path) {
    let out = Command::new("qemu-img").args(["check", p(img)]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "qemu-img check: {text}");
    assert!(text.contains("No errors were found"), "{text}");
    assert!(!text.contains("leaked"), "{text}");
}

fn write_with_ember(s: &Scratch, raw: &[u8], compress: bool, chunk: usize) -> PathBuf {
    let img = s.path("ember.qcow2");
    let out = File::create(&img).unwrap();
    let mut w = Qcow2Writer::new(out, raw.len() as u64, compress).unwrap();
    for (i, c) in raw.chunks(chunk).enumerate() {
        w.write((i * chunk) as u64, c).unwrap();
    }
    let len = w.finish().unwrap();
    assert_eq!(len, std::fs::metadata(&img).unwrap().len());
    img
}

#[test]
fn qcow2_writer_output_is_clean_and_identical() {
    let mut zero_random = mixed(3 << 20, 3);
    zero_random[1 << 20..2 << 20].fill(0);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("mixed", mixed((9 << 20) + 4096, 5)),
        ("random", {
            let mut r = Rng(99);
            (0..(2 << 20) + 65536).map(|_| r.byte()).collect()
        }),
        ("zero", vec![0u8; 4 << 20]),
        ("zero and random", zero_random),
    ];
    for (name, raw) in &cases {
        for compress in [false, true] {
            let s = Scratch::new("writer");
            let img = write_with_ember(&s, raw, compress, 1 << 20);
            check_clean(&img);
            let src = s.path("src.raw");
            std::fs::write(&src, raw).unwrap();
            run("qemu-img", &["compare", "-f", "raw", "-F", "qcow2", p(&src), p(&img)]);
            let q = open_file(&img).unwrap();
            assert_eq!(&read_all(&q).unwrap(), raw, "{name} compress={compress}");
            let compressed =
                q.extents().filter(|e| matches!(e.as_ref().unwrap().kind, ExtentKind::Compressed { .. })).count();
            if *name == "mixed" && compress {
                assert!(compressed > 0);
            }
            if *name == "random" && compress {
                assert_eq!(compressed, 0, "incompressible clusters stay plain");
            }
        }
    }
}

#[test]
fn qcow2_writer_refuses_misaligned_and_twice() {
    let s = Scratch::new("writer-refusals");
    let out = File::create(s.path("x.qcow2")).unwrap();
    let mut w = Qcow2Writer::new(out, 1 << 20, false).unwrap();
    assert!(w.write(512, &[1u8; 65536]).is_err());
    assert!(w.write(0, &[1u8; 1000]).is_err());
    assert!(w.write(1 << 20, &[1u8; 65536]).is_err());
    w.write(0, &[1u8; 65536]).unwrap();
    assert!(w.write(0, &[2u8; 65536]).is_err());
    assert!(Qcow2Writer::new(File::create(s.path("y.qcow2")).unwrap(), MAX_VIRTUAL_SIZE + 1, false).is_err());
}

// Refusals.

fn unsupported(r: Result<Qcow2, Qcow2Error>, needle: &str) {
    match r {
        Err(Qcow2Error::Unsupported(m)) => assert!(m.contains(needle), "{m:?} should say {needle:?}"),
        Err(e) => panic!("{e} is not Unsupported({needle})"),
        Ok(_) => panic!("opened; expected Unsupported({needle})"),
    }
}

/// Opening or reading the whole image is refused as corrupt.
fn corrupt_somewhere(bytes: Vec<u8>, what: &str) {
    let result = Qcow2::open(Arc::new(MemData(bytes))).and_then(|q| read_all(&q).map(|_| ()));
    match result {
        Err(Qcow2Error::Corrupt(_)) => {}
        Err(e) => panic!("{what}: {e} is not Corrupt"),
        Ok(()) => panic!("{what}: read fine, expected Corrupt"),
    }
}

#[test]
fn qcow2_refuses_backing_data_file_and_encryption() {
    let s = Scratch::new("refusals");
    let base = s.path("base.qcow2");
    run("qemu-img", &["create", "-f", "qcow2", p(&base), "1M"]);
    let top = s.path("top.qcow2");
    run("qemu-img", &["create", "-f", "qcow2", "-b", p(&base), "-F", "qcow2", p(&top)]);
    unsupported(open_file(&top), "backing file");

    let ext = s.path("ext.qcow2");
    let ext_data = format!("data_file={}", p(&s.path("ext.raw")));
    run("qemu-img", &["create", "-f", "qcow2", "-o", &ext_data, p(&ext), "1M"]);
    unsupported(open_file(&ext), "external data file");

    let enc = s.path("enc.qcow2");
    // LUKS times its key derivation on the CPU clock; on a loaded machine a short
    // iter-time measures nothing ("Unable to get accurate CPU usage"): a longer
    // one, and a few tries, make the image without changing what is tested.
    let args = [
        "create",
        "--object",
        "secret,id=sec0,data=ember",
        "-f",
        "qcow2",
        "-o",
        "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=200",
        p(&enc),
        "1M",
    ];
    let made = (0..5).any(|_| Command::new("qemu-img").args(args).output().is_ok_and(|o| o.status.success()));
    assert!(made, "qemu-img could not make a LUKS-encrypted qcow2 in five tries");
    unsupported(open_file(&enc), "encrypted");
}

/// A small valid v3 image with data, compressed and zero clusters, in memory.
fn small_image(s: &Scratch, cluster: &str, compress: bool) -> Vec<u8> {
    let raw = mixed(256 << 10, 21);
    let img = convert(s, &raw, &format!("compat=1.1,cluster_size={cluster}"), compress);
    run("qemu-io", &["-f", "qcow2", "-c", "write -z 0 4k", p(&img)]);
    std::fs::read(img).unwrap()
}

fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_be_bytes());
}

fn get64(b: &[u8], at: usize) -> u64 {
    be64(b, at)
}

#[test]
fn qcow2_refuses_features_and_damage() {
    let s = Scratch::new("damage");
    let good = small_image(&s, "4096", false);
    assert!(Qcow2::open(Arc::new(MemData(good.clone()))).is_ok());

    let mut b = good.clone();
    b[79] |= 2;
    unsupported(Qcow2::open(Arc::new(MemData(b))), "marked corrupt");
    let mut b = good.clone();
    b[79] |= 1 << 5;
    unsupported(Qcow2::open(Arc::new(MemData(b))), "unknown incompatible feature bit 5");
    let mut b = good.clone();
    b[79] |= 1 << 3;
    b[104] = 1;
    unsupported(Qcow2::open(Arc::new(MemData(b))), "zstd");
    let mut b = good.clone();
    b[79] |= 1 << 4;
    unsupported(Qcow2::open(Arc::new(MemData(b))), "extended L2");
    let mut b = good.clone();
    b[32..36].copy_from_slice(&1u32.to_be_bytes());
    unsupported(Qcow2::open(Arc::new(MemData(b))), "encrypted");

    let l1_offset = usize::try_from(get64(&good, 40)).unwrap();
    let l2_offset = usize::try_from(get64(&good, l1_offset) & L1_OFFSET_MASK).unwrap();
    // Truncations: inside the header, the extensions, the L1 table, an L2 table, the data.
    for at in [0, 3, 50, 100, 110, l1_offset + 4, l2_offset + 100, good.len() - 100] {
        corrupt_somewhere(good[..at].to_vec(), &format!("truncated at {at}"));
    }
    let mut b = good.clone();
    put64(&mut b, l1_offset, (1 << 40) | (1 << 63));
    corrupt_somewhere(b, "L1 entry past the end");
    let mut b = good.clone();
    put64(&mut b, l1_offset, get64(&good, l1_offset) + 512);
    corrupt_somewhere(b, "L1 entry misaligned");
    let mut b = good.clone();
    put64(&mut b, l1_offset, (l1_offset as u64) | (1 << 63));
    corrupt_somewhere(b, "L2 table on the L1 table");
    let mut b = good.clone();
    put64(&mut b, 40, good.len() as u64 + 4096);
    corrupt_somewhere(b, "L1 table past the end");

    let first_data = (0..512).map(|i| get64(&good, l2_offset + 8 * i)).find(|e| e & L2_OFFSET_MASK != 0 && e & 1 == 0);
    let first_data = first_data.unwrap();
    let mut b = good.clone();
    put64(&mut b, l2_offset + 8 * 40, first_data);
    put64(&mut b, l2_offset + 8 * 41, first_data);
    corrupt_somewhere(b, "a data cluster referenced twice");
    let mut b = good.clone();
    put64(&mut b, l2_offset + 8 * 40, (l2_offset as u64) | (1 << 63));
    corrupt_somewhere(b, "a data cluster on its own L2 table");
    let mut b = good.clone();
    put64(&mut b, l2_offset + 8 * 40, 0);
    put64(&mut b, l2_offset + 8 * 40, (1 << 63) | (1 << 44));
    corrupt_somewhere(b, "a data cluster past the end");
    let mut b = good.clone();
    put64(&mut b, l2_offset + 8 * 40, (1 << 62) | ((good.len() as u64) + 9));
    corrupt_somewhere(b, "a compressed cluster past the end");

    let mut b = good.clone();
    put64(&mut b, 24, 1 << 50);
    corrupt_somewhere(b, "huge virtual size");
    let mut b = good.clone();
    put64(&mut b, 24, 1 << 40);
    corrupt_somewhere(b, "virtual size beyond l1_size");
    let mut b = good.clone();
    b[36..40].copy_from_slice(&u32::MAX.to_be_bytes());
    corrupt_somewhere(b, "huge l1_size");
    let mut b = good.clone();
    b[100..104].copy_from_slice(&8192u32.to_be_bytes());
    corrupt_somewhere(b, "header_length past the cluster");
    let mut b = good.clone();
    let hl = usize::try_from(be32(&good, 100)).unwrap();
    b[hl..hl + 4].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    b[hl + 4..hl + 8].copy_from_slice(&5000u32.to_be_bytes());
    corrupt_somewhere(b, "extension past the cluster");
    let mut b = good;
    b[20..24].copy_from_slice(&30u32.to_be_bytes());
    corrupt_somewhere(b, "cluster_bits 30");
}

#[test]
fn qcow2_refuses_bad_compressed_data() {
    let s = Scratch::new("bad-deflate");
    let good = small_image(&s, "4096", true);
    let q = Qcow2::open(Arc::new(MemData(good.clone()))).unwrap();
    let (host_offset, compressed_len) = q
        .extents()
        .find_map(|e| match e.unwrap().kind {
            ExtentKind::Compressed { host_offset, compressed_len } => Some((host_offset, compressed_len)),
            _ => None,
        })
        .unwrap();
    let mut b = good;
    let at = usize::try_from(host_offset).unwrap();
    b[at..at + usize::try_from(compressed_len).unwrap().min(64)].fill(0xff);
    corrupt_somewhere(b, "garbage deflate");
}

/// Seeded mutations of a small image's header, L1 and L2 bytes: open and a
/// full read return Ok or Err, never panic or hang. Bounded to a few seconds.
#[test]
fn qcow2_survives_mutations() {
    let s = Scratch::new("mutations");
    let images = [small_image(&s, "512", true), small_image(&s, "4096", true), small_image(&s, "65536", false)];
    let mut rng = Rng(0x5eed_e4be_0001);
    let start = Instant::now();
    let (mut ok, mut err, mut rounds) = (0u32, 0u32, 0u32);
    while rounds < 4000 && start.elapsed() < Duration::from_secs(8) {
        rounds += 1;
        let good = &images[usize::try_from(rng.next() % 3).unwrap()];
        let mut b = good.clone();
        let l1 = usize::try_from(get64(good, 40)).unwrap();
        let cluster = 1usize << be32(good, 20);
        let l2 = usize::try_from(get64(good, l1) & L1_OFFSET_MASK).unwrap();
        for _ in 0..1 + rng.next() % 3 {
            let region = match rng.next() % 4 {
                0 => 0..120,
                1 => l1..l1 + 64,
                2 => l2..l2 + cluster.min(512),
                _ => 0..b.len(),
            };
            let at = region.start + usize::try_from(rng.next()).unwrap() % (region.end - region.start);
            if at >= b.len() {
                continue;
            }
            match rng.next() % 4 {
                0 => b[at] ^= 1 << (rng.next() % 8),
                1 => b[at] = rng.byte(),
                2 if at + 8 <= b.len() => {
                    let interesting = [0, 1, u64::MAX, 1 << 63, 1 << 62, 512, good.len() as u64, rng.next()];
                    put64(&mut b, at & !7, interesting[usize::try_from(rng.next() % 8).unwrap()]);
                }
                _ => b.truncate(at),
            }
        }
        let t = Instant::now();
        let outcome = Qcow2::open(Arc::new(MemData(b))).and_then(|q| {
            let mut buf = Vec::new();
            for e in q.extents() {
                let e = e?;
                if matches!(e.kind, ExtentKind::Zero) {
                    continue;
                }
                buf.resize(usize::try_from(e.len).unwrap(), 0);
                q.read(&e, &mut buf)?;
            }
            Ok(())
        });
        assert!(t.elapsed() < Duration::from_secs(2), "round {rounds} took {:?}", t.elapsed());
        match outcome {
            Ok(()) => ok += 1,
            Err(_) => err += 1,
        }
    }
    eprintln!("{rounds} mutations: {ok} read, {err} refused");
    assert!(rounds >= 500, "only {rounds} rounds in the time bound");
    assert!(err > 0 && ok > 0);
}

/// Throughput: EMBER_QCOW2_BENCH=<image> cargo test --release --lib qcow2_bench -- --ignored --nocapture
#[test]
#[ignore]
fn qcow2_bench() {
    let path = std::env::var("EMBER_QCOW2_BENCH").expect("EMBER_QCOW2_BENCH=<qcow2 image>");
    let q = open_file(Path::new(&path)).unwrap();
    let start = Instant::now();
    let mut buf = vec![0u8; usize::try_from(MAX_EXTENT_LEN).unwrap()];
    let mut data = 0u64;
    for e in q.extents() {
        let e = e.unwrap();
        if matches!(e.kind, ExtentKind::Zero) {
            continue;
        }
        let n = usize::try_from(e.len).unwrap();
        q.read(&e, &mut buf[..n]).unwrap();
        data += e.len;
    }
    let secs = start.elapsed().as_secs_f64();
    eprintln!("{} bytes of data in {secs:.2} s: {:.0} MiB/s", data, data as f64 / secs / 1048576.0);
}
