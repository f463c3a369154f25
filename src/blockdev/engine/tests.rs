use super::*;
use std::sync::Arc;

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ember-engine-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A sparse 64 MiB file: data at odd places, a zero-filled but allocated run,
/// and holes.
fn sparse_file(path: &Path) -> Vec<u8> {
    let mut want = vec![0u8; 64 << 20];
    want[(3 << 20) + 17..(3 << 20) + 17 + 5000].fill(0xab);
    want[40 << 20..(44 << 20) + 123].iter_mut().enumerate().for_each(|(i, b)| *b = u8::try_from(i % 251).unwrap() + 1);
    let f = File::create(path).unwrap();
    f.set_len(want.len() as u64).unwrap();
    f.write_all_at(&want[3 << 20..4 << 20], 3 << 20).unwrap();
    f.write_all_at(&vec![0u8; 2 << 20], 20 << 20).unwrap(); // allocated zeros
    f.write_all_at(&want[40 << 20..45 << 20], 40 << 20).unwrap();
    f.sync_all().unwrap();
    want
}

fn options(dest_len: Option<u64>) -> CopyOptions {
    CopyOptions { dest_len, rate_limit: None, progress: Arc::new(Progress::default()) }
}

fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().blocks() * 512
}

#[test]
fn a_sparse_file_copies_byte_exact_and_stays_sparse_with_one_checksum_for_any_chunking() {
    let dir = temp_dir();
    let (src, dst) = (dir.join("src"), dir.join("dst"));
    let want = sparse_file(&src);
    // The destination holds old data everywhere: what the source has as holes
    // must read back as zeros.
    std::fs::write(&dst, vec![0x5au8; want.len()]).unwrap();
    let opts = options(Some(want.len() as u64));
    let mut source = DeviceSource::open(&src).unwrap();
    let mut sink = DeviceSink::open(&dst, ZeroPolicy::Punch).unwrap();
    let summary = copy(&mut source, &mut sink, &opts).unwrap();
    assert!(std::fs::read(&dst).unwrap() == want, "copy differs from its source");
    assert_eq!(summary.bytes, want.len() as u64);
    assert!(summary.data_bytes < 8 << 20, "holes were read as data: {summary:?}");
    assert!(allocated(&dst) < 8 << 20, "destination not sparse: {} bytes", allocated(&dst));
    assert_eq!(opts.progress.report().done, want.len() as u64);
    // The same bytes streamed in odd-sized reads give the same checksum.
    struct Odd<'a>(&'a [u8]);
    impl Read for Odd<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.0.len()).min(77_777);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }
    let mut streamed = ReaderSource::new(Odd(&want), want.len() as u64);
    let mut out = WriterSink::new(Vec::new());
    let again = copy(&mut streamed, &mut out, &options(None)).unwrap();
    assert_eq!(again.checksum, summary.checksum);
    assert!(out.into_inner() == want);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_tail_past_a_short_source_is_zeroed_and_a_source_too_large_is_refused() {
    let dir = temp_dir();
    let dst = dir.join("dst");
    std::fs::write(&dst, vec![0x11u8; 8 << 20]).unwrap();
    let image = vec![0x77u8; 1_000_001];
    let mut source = ReaderSource::new(&image[..], image.len() as u64);
    let mut sink = DeviceSink::open(&dst, ZeroPolicy::Punch).unwrap();
    copy(&mut source, &mut sink, &options(Some(8 << 20))).unwrap();
    let got = std::fs::read(&dst).unwrap();
    assert_eq!(got.len(), 8 << 20);
    assert!(got[..image.len()] == image[..] && is_zero(&got[image.len()..]));

    let big = vec![1u8; (8 << 20) + 1];
    let mut source = ReaderSource::new(&big[..], big.len() as u64);
    let err = copy(&mut source, &mut sink, &options(Some(8 << 20))).unwrap_err();
    assert!(matches!(err, CopyError::TooLarge { .. }), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// A source that claims more than it has, or goes backwards, fails cleanly.
#[test]
fn lying_sources_fail_without_writing_past_the_end() {
    struct Lies(Vec<Chunk>);
    impl Source for Lies {
        fn len(&self) -> u64 {
            1 << 20
        }
        fn next(&mut self, _: &mut [u8]) -> io::Result<Option<Chunk>> {
            Ok(if self.0.is_empty() { None } else { Some(self.0.remove(0)) })
        }
    }
    for chunks in [
        vec![Chunk::Data { offset: 0, len: BUF_LEN + 1 }],
        vec![Chunk::Data { offset: 1 << 20, len: 4096 }],
        vec![Chunk::Zero { offset: u64::MAX - 1, len: 2 }],
        vec![Chunk::Data { offset: 8192, len: 4096 }, Chunk::Data { offset: 0, len: 4096 }],
    ] {
        let mut out = WriterSink::new(Vec::new());
        let err = copy(&mut Lies(chunks.clone()), &mut out, &options(Some(1 << 20))).unwrap_err();
        assert!(matches!(err, CopyError::Read(_) | CopyError::TooLarge { .. } | CopyError::Invalid(_)), "{err}");
        assert!(out.into_inner().len() <= 1 << 20, "{chunks:?} wrote past the end");
    }
}

#[test]
fn a_cancelled_copy_stops_and_a_rate_limit_holds() {
    let data = vec![3u8; 16 << 20];
    let opts = options(None);
    opts.progress.cancel();
    let mut out = WriterSink::new(Vec::new());
    let err = copy(&mut ReaderSource::new(&data[..], data.len() as u64), &mut out, &opts).unwrap_err();
    assert!(matches!(err, CopyError::Cancelled));

    let opts = CopyOptions { rate_limit: Some(40 << 20), ..options(None) };
    let started = Instant::now();
    let mut out = WriterSink::new(Vec::new());
    copy(&mut ReaderSource::new(&data[..], data.len() as u64), &mut out, &opts).unwrap();
    // 16 MiB at 40 MiB/s: the last buffer is written after at least 0.3 s.
    assert!(started.elapsed() >= Duration::from_millis(280), "{:?}", started.elapsed());
}

#[test]
fn zero_granules_are_found_on_the_device_grid() {
    let mut data = vec![0u8; 3 * GRANULE];
    data[10] = 1;
    let mut segs = Vec::new();
    // Offset 1000: the first granule is partial (data), two whole zero ones? No:
    // the grid starts at 64 KiB, so 1000.. is partial, then whole granules.
    split(&data, 1000, &mut segs);
    assert_eq!(
        segs,
        [
            Segment::Data { offset: 1000, start: 0, len: GRANULE - 1000 },
            Segment::Zero { offset: GRANULE as u64, len: 2 * GRANULE as u64 },
            Segment::Data { offset: 3 * GRANULE as u64, start: 3 * GRANULE - 1000, len: 1000 },
        ]
    );
}

/// O_DIRECT and BLKZEROOUT on a real loop device (root).
#[test]
fn root_a_loop_device_is_written_with_o_direct_and_zeroed_with_blkzeroout() {
    use crate::blockdev::loopback;
    let dir = temp_dir();
    let (src, backing) = (dir.join("src"), dir.join("dev"));
    let want = sparse_file(&src);
    std::fs::write(&backing, vec![0x99u8; want.len()]).unwrap();
    let dev = loopback::attach(&backing, false).unwrap();
    let result = std::panic::catch_unwind(|| {
        let mut sink = DeviceSink::open(&dev.device, ZeroPolicy::ZeroOut).unwrap();
        assert!(sink.is_direct, "a loop device takes O_DIRECT");
        let mut source = DeviceSource::open(&src).unwrap();
        copy(&mut source, &mut sink, &options(Some(want.len() as u64))).unwrap();
        let mut back = DeviceSource::open(&dev.device).unwrap();
        let mut out = WriterSink::new(Vec::new());
        copy(&mut back, &mut out, &options(None)).unwrap();
        assert!(out.into_inner() == want, "device differs from the source");
    });
    loopback::detach(&dev.device).unwrap();
    std::fs::remove_dir_all(dir).unwrap();
    result.unwrap();
}

#[test]
fn a_pipe_joins_two_copies_holes_as_holes_and_a_hang_up_is_an_error() {
    let dir = temp_dir();
    let (src, dst) = (dir.join("src"), dir.join("dst"));
    let want = sparse_file(&src);
    File::create(&dst).unwrap().set_len(want.len() as u64).unwrap();
    let (mut into, mut out) = pipe(want.len() as u64);
    let (read, written) = std::thread::scope(|scope| {
        let reader = scope.spawn(move || {
            let mut source = DeviceSource::open(&src).unwrap();
            copy(&mut source, &mut into, &options(None))
        });
        let mut sink = DeviceSink::open(&dst, ZeroPolicy::AlreadyZero).unwrap();
        let written = copy(&mut out, &mut sink, &options(Some(want.len() as u64)));
        (reader.join().unwrap().unwrap(), written.unwrap())
    });
    assert_eq!((read.checksum.as_str(), read.data_bytes), (written.checksum.as_str(), written.data_bytes));
    assert_eq!(std::fs::read(&dst).unwrap(), want);
    assert!(allocated(&dst) < 16 << 20, "holes crossed as holes: {} allocated", allocated(&dst));
    // The reading side stops half way: the writing side fails, never ends short.
    let (mut into, mut out) = pipe(8 << 20);
    into.write(0, &[1u8; 4096]).unwrap();
    drop(into);
    let mut sink = WriterSink::new(std::io::sink());
    assert!(matches!(copy(&mut out, &mut sink, &options(None)), Err(CopyError::Read(_))));
    std::fs::remove_dir_all(dir).unwrap();
}
