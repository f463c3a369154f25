//! The image data path's manager half: which images a volume may be made from,
//! the image as a copy-engine source (raw or qcow2, read natively), the two
//! copies (image → volume, volume → image) and the registry of running copies
//! that the jobs resource shows and an admin may cancel.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::sync::Arc;

use super::{Manager, ManagerError, Result};
use crate::blockdev::engine::{self, Chunk, CopyOptions, CopySummary, DeviceSource, Progress, ReaderSource};
use crate::image::qcow2::{Extent, ExtentKind, Extents, Qcow2, Qcow2Error, is_qcow2};
use crate::image::{self, ImageData, ImageError, ImageRecord, ImageStatus};
use crate::pool::{GIB, PoolError};

/// Disk formats ember reads and writes.
pub const DISK_FORMATS: &[&str] = &["raw", "qcow2"];
/// Container formats whose data is the disk itself.
const CONTAINER_FORMATS: &[&str] = &["bare", "ovf"];

impl From<ImageError> for ManagerError {
    fn from(e: ImageError) -> Self {
        match e {
            ImageError::NotFound(id) => ManagerError::NotFound(format!("Image {id} could not be found.")),
            ImageError::Invalid(m) | ImageError::Conflict(m) => ManagerError::Invalid(m),
            ImageError::Forbidden(id) => ManagerError::Forbidden(format!("Not authorized for image {id}.")),
            other => ManagerError::Backend(other.to_string()),
        }
    }
}

/// Who the image store serves inside a job: the project whose volume it is.
/// The caller's own access was checked when the request was taken.
pub(super) fn job_caller(project_id: &str) -> image::Caller<'_> {
    image::Caller { project_id, is_admin: true, token: None }
}

/// Refuses, before any status moves, an image a volume of `size_gib` cannot be
/// made from (spec §3.25's checks, and the formats ember reads).
pub(super) fn usable_image(image: &ImageRecord, size_gib: i64) -> Result<()> {
    let id = &image.id;
    if image.status != ImageStatus::Active {
        return Err(ManagerError::Invalid(format!("Image {id} is not active.")));
    }
    // A Nova snapshot of a volume-backed instance holds no bytes, only the
    // mapping to a Cinder snapshot (Cinder copies that snapshot instead).
    if image.properties.contains_key("block_device_mapping") {
        return Err(ManagerError::Invalid(format!(
            "Image {id} is a snapshot of a volume-backed instance (block_device_mapping); ember cannot make a \
             volume of it yet."
        )));
    }
    let format = image.disk_format.as_deref().unwrap_or("");
    if !DISK_FORMATS.contains(&format) {
        return Err(ManagerError::Invalid(format!(
            "Image {id} has disk_format '{format}': ember reads raw and qcow2 images only."
        )));
    }
    let container = image.container_format.as_deref().unwrap_or("bare");
    if !CONTAINER_FORMATS.contains(&container) {
        return Err(ManagerError::Invalid(format!(
            "Image {id} has container_format '{container}': only bare and ovf are accepted."
        )));
    }
    let room = u64::try_from(size_gib).unwrap_or(0).saturating_mul(GIB);
    let fits = |what: &str, bytes: u64| {
        if bytes > room {
            Err(ManagerError::Invalid(format!(
                "Image {id} {what} is {bytes} bytes, which is larger than the volume size {size_gib}GB."
            )))
        } else {
            Ok(())
        }
    };
    // A raw image's size is its disk; a qcow2's disk is its virtual size.
    if format == "raw" {
        fits("size", image.size.unwrap_or(0))?;
    }
    fits("virtual size", image.virtual_size.unwrap_or(0))?;
    if i64::try_from(image.min_disk).unwrap_or(i64::MAX) > size_gib {
        return Err(ManagerError::Invalid(format!(
            "Image {id} has min_disk {}GB, larger than the volume size {size_gib}GB.",
            image.min_disk
        )));
    }
    Ok(())
}

/// Glance's fields as a volume's image metadata (`volume_image_metadata`).
pub(super) fn glance_metadata(image: &ImageRecord) -> BTreeMap<String, String> {
    let mut meta = image.properties.clone();
    let mut put = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            meta.insert(k.to_string(), v);
        }
    };
    put("image_id", Some(image.id.clone()));
    put("image_name", image.name.clone());
    put("container_format", image.container_format.clone());
    put("disk_format", image.disk_format.clone());
    put("checksum", image.checksum.clone());
    put("size", image.size.map(|s| s.to_string()));
    put("min_disk", Some(image.min_disk.to_string()));
    put("min_ram", Some(image.min_ram.to_string()));
    meta
}

/// The formats ember reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Raw,
    Qcow2,
}

/// The format the record declares, once the bytes are seen to hold it: a "raw"
/// image that is qcow2 inside would expose its host's files through a backing
/// file if it were ever handed to a qcow2 reader, so it is refused.
fn declared_format(image: &ImageRecord, data: &dyn ImageData) -> std::result::Result<Format, ImageError> {
    let mut head = [0u8; 512];
    let n = data.read_at(&mut head, 0).map_err(|e| ImageError::io("read", format!("image {}", image.id), e))?;
    let holds_qcow2 = is_qcow2(&head[..n]);
    match image.disk_format.as_deref() {
        Some("raw") if holds_qcow2 => Err(ImageError::Invalid(format!(
            "Image {} is declared raw but holds a qcow2 image; refusing it.",
            image.id
        ))),
        Some("raw") => Ok(Format::Raw),
        Some("qcow2") if !holds_qcow2 => {
            Err(ImageError::Invalid(format!("Image {} is declared qcow2 but is not a qcow2 image.", image.id)))
        }
        Some("qcow2") => Ok(Format::Qcow2),
        other => Err(ImageError::Invalid(format!("Image {} has an unsupported disk_format {other:?}.", image.id))),
    }
}

fn open_qcow2(image: &ImageRecord, data: Arc<dyn ImageData>) -> std::result::Result<Qcow2, ImageError> {
    Qcow2::open(data).map_err(|e| qcow2_refusal(&image.id, e))
}

/// An image's guest bytes as a copy source: raw images as they are (a local file
/// read with its holes skipped, a stream otherwise), qcow2 through the native
/// reader; the declared format must be the one the bytes hold.
pub fn image_source(
    image: &ImageRecord,
    data: Arc<dyn ImageData>,
) -> std::result::Result<Box<dyn engine::Source>, ImageError> {
    match declared_format(image, data.as_ref())? {
        Format::Raw => {
            if let Some(path) = data.path() {
                let source =
                    DeviceSource::open(path).map_err(|e| ImageError::io("open", path.display().to_string(), e))?;
                return Ok(Box::new(source));
            }
            let stream = data.stream().map_err(|e| ImageError::io("download", format!("image {}", image.id), e))?;
            Ok(Box::new(ReaderSource::new(stream, data.len())))
        }
        Format::Qcow2 => {
            let q = open_qcow2(image, data)?;
            Ok(Box::new(Qcow2Source { virtual_size: q.virtual_size(), image: Arc::new(q), extents: None }))
        }
    }
}

fn qcow2_refusal(id: &str, e: Qcow2Error) -> ImageError {
    match e {
        Qcow2Error::Io(e) => ImageError::io("read", format!("image {id}"), e),
        other => ImageError::Invalid(format!("Image {id} cannot be used: {other}")),
    }
}

/// A qcow2 image's guest disk, extent by extent.
struct Qcow2Source {
    image: Arc<Qcow2>,
    virtual_size: u64,
    extents: Option<Extents<'static>>,
}

impl engine::Source for Qcow2Source {
    fn len(&self) -> u64 {
        self.virtual_size
    }

    fn next(&mut self, buf: &mut [u8]) -> io::Result<Option<Chunk>> {
        let image = Arc::clone(&self.image);
        let extents = self.extents.get_or_insert_with(|| image.into_extents());
        let Some(extent) = extents.next() else {
            return Ok(None);
        };
        let invalid = |e: Qcow2Error| match e {
            Qcow2Error::Io(e) => e,
            other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
        };
        let extent: Extent = extent.map_err(invalid)?;
        if extent.kind == ExtentKind::Zero {
            return Ok(Some(Chunk::Zero { offset: extent.guest_offset, len: extent.len }));
        }
        let len = usize::try_from(extent.len)
            .ok()
            .filter(|&l| l <= buf.len())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("an extent of {} bytes", extent.len)))?;
        self.image.read(&extent, &mut buf[..len]).map_err(invalid)?;
        Ok(Some(Chunk::Data { offset: extent.guest_offset, len }))
    }
}

/// A copy the jobs resource shows while it runs.
#[derive(Debug, Clone)]
pub struct RunningCopy {
    pub job: i64,
    pub kind: &'static str,
    pub volume: String,
    /// The image copied to or from, or a migration's destination volume.
    pub other: String,
    pub project_id: String,
    pub progress: Arc<Progress>,
}

/// Removes its copy from the registry when the copy ends, however it ends.
pub(super) struct Registered<'a> {
    manager: &'a Manager,
    job: i64,
    /// What the copy runs with: the registered progress, the agent's rate limit.
    pub options: CopyOptions,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.manager.copies.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.job);
    }
}

impl Manager {
    /// The request-time checks of an image a volume is to be made of: its
    /// record (`usable_image`), then its bytes' first structures (the format it
    /// declares is the one it holds; a qcow2's header, features and tables are
    /// sound), so a hostile image is a 400 before any status moves.
    pub(super) fn check_image(&self, caller: &image::Caller, image_id: &str, size_gib: i64) -> Result<ImageRecord> {
        let invalid_image = |e: ManagerError| match e {
            ManagerError::Invalid(m) => ManagerError::Invalid(format!("Invalid image: {m}")),
            other => other,
        };
        let record = self.images.show(caller, image_id)?;
        usable_image(&record, size_gib).map_err(invalid_image)?;
        let data: Arc<dyn ImageData> = Arc::from(self.images.open(caller, image_id)?);
        let refused = |e: ImageError| invalid_image(e.into());
        let disk_bytes = match declared_format(&record, data.as_ref()).map_err(refused)? {
            Format::Raw => data.len(),
            // A qcow2's every L2 entry is checked now (inside the file, no
            // cluster twice, none on metadata): its tables are cheap next to its data.
            Format::Qcow2 => {
                let q = open_qcow2(&record, data).map_err(refused)?;
                if let Some(Err(e)) = q.extents().find(|x| x.is_err()) {
                    return Err(refused(qcow2_refusal(image_id, e)));
                }
                q.virtual_size()
            }
        };
        if disk_bytes > u64::try_from(size_gib).unwrap_or(0).saturating_mul(GIB) {
            return Err(ManagerError::Invalid(format!(
                "Invalid image: image {image_id} holds a disk of {disk_bytes} bytes, larger than the volume size \
                 {size_gib}GB."
            )));
        }
        Ok(record)
    }

    pub(super) fn register_copy(&self, job: &crate::model::Job, volume: &str, other: &str) -> Registered<'_> {
        let progress = Arc::new(Progress::default());
        let entry = RunningCopy {
            job: job.id,
            kind: job.spec.kind(),
            volume: volume.to_string(),
            other: other.to_string(),
            project_id: job.project_id.clone(),
            progress: Arc::clone(&progress),
        };
        self.copies.lock().unwrap_or_else(|p| p.into_inner()).insert(job.id, entry);
        let options = CopyOptions { progress, rate_limit: self.settings.copy_rate_limit, ..CopyOptions::default() };
        Registered { manager: self, job: job.id, options }
    }

    /// The copies running now, in job order.
    pub fn running_copies(&self) -> Vec<RunningCopy> {
        self.copies.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    /// Asks job `job`'s copy to stop; false if it runs none.
    pub fn cancel_copy(&self, job: i64) -> bool {
        match self.copies.lock().unwrap_or_else(|p| p.into_inner()).get(&job) {
            Some(copy) => {
                copy.progress.cancel();
                true
            }
            None => false,
        }
    }

    /// Writes `image` onto the volume; returns the image's record.
    pub(super) fn download(
        &self,
        job: &crate::model::Job,
        volume: &str,
        image_id: &str,
        fresh: bool,
    ) -> std::result::Result<(ImageRecord, CopySummary), super::jobs::StepError> {
        let caller = job_caller(&job.project_id);
        let record = self.images.show(&caller, image_id)?;
        let data = Arc::from(self.images.open(&caller, image_id)?);
        let mut source = image_source(&record, data)?;
        let copy = self.register_copy(job, volume, image_id);

        let options = &copy.options;
        tracing::info!(%volume, image = %image_id, bytes = source.len(), "writing the image onto the volume");
        let summary = self.pool_of(volume)?.write_volume(volume, source.as_mut(), options, fresh)?;
        tracing::info!(
            %volume, image = %image_id, bytes = summary.bytes, data_bytes = summary.data_bytes,
            checksum = %summary.checksum, "image written"
        );
        Ok((record, summary))
    }

    /// Streams the volume into the queued image: raw straight through, qcow2
    /// written natively into a scratch file first (its tables come last), then
    /// streamed.
    pub(super) fn upload(
        &self,
        job: &crate::model::Job,
        volume: &str,
        image_id: &str,
        disk_format: &str,
    ) -> std::result::Result<ImageRecord, super::jobs::StepError> {
        if disk_format == "qcow2" {
            return self.upload_qcow2(job, volume, image_id);
        }
        let caller = job_caller(&job.project_id);
        let copy = self.register_copy(job, volume, image_id);

        let options = &copy.options;
        let pool = self.pool_of(volume)?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
        let (copied, stored) = std::thread::scope(|scope| {
            let reader = scope.spawn(|| {
                let mut sink = engine::WriterSink::new(ChannelWriter { tx, pending: Vec::new() });
                let summary = pool.read_volume(volume, &mut sink, options)?;
                // Only a complete read says "the end": a failed one hangs up
                // instead, and the store sees a broken stream, not a short image.
                let _ = sink.into_inner().tx.send(Vec::new());
                Ok(summary)
            });
            let mut from = ChannelReader { rx, current: Vec::new(), at: 0 };
            let stored = self.images.upload(&caller, image_id, &mut from, None);
            // The store stopped reading (done or failed): let the reader end.
            drop(from);
            let copied = reader.join().unwrap_or_else(|_| Err(PoolError::Refused("the volume reader panicked".into())));
            (copied, stored)
        });
        let summary = copied?;
        let record = stored?;
        tracing::info!(%volume, image = %image_id, bytes = summary.bytes, "volume uploaded");
        Ok(record)
    }

    fn upload_qcow2(
        &self,
        job: &crate::model::Job,
        volume: &str,
        image_id: &str,
    ) -> std::result::Result<ImageRecord, super::jobs::StepError> {
        let caller = job_caller(&job.project_id);
        let scratch = &self.settings.scratch_dir;
        std::fs::create_dir_all(scratch).map_err(|e| PoolError::io("create", scratch, e))?;
        let path = scratch.join(format!("upload-{image_id}.qcow2"));
        let _cleanup = RemoveOnDrop(path.clone());
        let size = {
            let copy = self.register_copy(job, volume, image_id);

            let options = &copy.options;
            let file = std::fs::File::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
                .map_err(|e| PoolError::io("create", &path, e))?;
            let volume_bytes = self.volume_bytes(volume)?;
            let writer =
                crate::image::qcow2::Qcow2Writer::new(file, volume_bytes, self.settings.compress_qcow2_uploads)
                    .map_err(|e| PoolError::Refused(format!("qcow2 writer: {e}")))?;
            let mut sink = Qcow2Sink { writer: Some(writer), pending: None };
            self.pool_of(volume)?.read_volume(volume, &mut sink, options)?;
            volume_bytes
        };
        let mut file = std::fs::File::open(&path).map_err(|e| PoolError::io("open", &path, e))?;
        let record = self.images.upload(&caller, image_id, &mut file, Some(size))?;
        tracing::info!(%volume, image = %image_id, bytes = record.size, "volume uploaded as qcow2");
        Ok(record)
    }

    /// The volume's size in bytes, from the store.
    pub(super) fn volume_bytes(&self, volume: &str) -> std::result::Result<u64, super::jobs::StepError> {
        let v = self.store.read(|tx| tx.volume(volume))?.ok_or_else(|| PoolError::NotFound { what: volume.into() })?;
        Ok(u64::try_from(v.size).unwrap_or(0) * GIB)
    }

    /// Deletes an image an upload could not finish (best effort: logged).
    pub(super) fn discard_image(&self, project_id: &str, image_id: &str) {
        if let Err(e) = self.images.delete(&job_caller(project_id), image_id) {
            tracing::warn!(image = %image_id, error = %e, "could not delete the image of a failed upload");
        }
    }
}

struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The engine's writes as a qcow2 image: whole 64 KiB clusters to the writer
/// (a partial one is gathered first), zero runs left unallocated.
struct Qcow2Sink {
    writer: Option<crate::image::qcow2::Qcow2Writer<std::fs::File>>,
    /// A cluster being gathered: its offset and bytes.
    pending: Option<(u64, Vec<u8>)>,
}

const CLUSTER: u64 = crate::image::qcow2::WRITER_CLUSTER;

impl Qcow2Sink {
    fn writer(&mut self) -> io::Result<&mut crate::image::qcow2::Qcow2Writer<std::fs::File>> {
        self.writer.as_mut().ok_or_else(|| io::Error::other("the qcow2 image is finished"))
    }

    fn flush_pending(&mut self) -> io::Result<()> {
        if let Some((at, bytes)) = self.pending.take() {
            self.writer()?.write(at, &bytes).map_err(io::Error::other)?;
        }
        Ok(())
    }
}

impl engine::Sink for Qcow2Sink {
    fn write(&mut self, mut offset: u64, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let cluster = offset - offset % CLUSTER;
            let into = usize::try_from(offset - cluster).unwrap_or(0);
            let take = (usize::try_from(CLUSTER).unwrap_or(0) - into).min(data.len());
            if self.pending.as_ref().is_some_and(|(at, _)| *at != cluster) {
                self.flush_pending()?;
            }
            if into == 0 && take as u64 == CLUSTER {
                // Whole clusters in one go, as many as there are.
                let whole = data.len() - data.len() % usize::try_from(CLUSTER).unwrap_or(1);
                self.writer()?.write(offset, &data[..whole]).map_err(io::Error::other)?;
                offset += whole as u64;
                data = &data[whole..];
                continue;
            }
            let (_, bytes) =
                self.pending.get_or_insert_with(|| (cluster, vec![0u8; usize::try_from(CLUSTER).unwrap_or(0)]));
            bytes[into..into + take].copy_from_slice(&data[..take]);
            offset += take as u64;
            data = &data[take..];
        }
        Ok(())
    }

    fn zero(&mut self, _offset: u64, _len: u64) -> io::Result<()> {
        // Unallocated clusters read as zeros; a gathered cluster is zero-filled.
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        self.flush_pending()?;
        let writer = self.writer.take().ok_or_else(|| io::Error::other("finished twice"))?;
        writer.finish().map_err(io::Error::other).map(drop)
    }
}

/// The engine's sink end of an upload: 1 MiB pieces over a channel.
struct ChannelWriter {
    tx: std::sync::mpsc::SyncSender<Vec<u8>>,
    pending: Vec<u8>,
}

impl io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.pending.extend_from_slice(buf);
        if self.pending.len() >= 1 << 20 {
            self.flush()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.pending.is_empty() {
            let piece = std::mem::replace(&mut self.pending, Vec::with_capacity(1 << 20));
            self.tx.send(piece).map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the image store stopped"))?;
        }
        Ok(())
    }
}

/// The image store's end of an upload: an empty piece is the end; a hang-up
/// before it is an error.
struct ChannelReader {
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    current: Vec<u8>,
    at: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.current.len() {
            match self.rx.recv() {
                Ok(piece) if piece.is_empty() => return Ok(0),
                Ok(piece) => {
                    self.current = piece;
                    self.at = 0;
                }
                Err(_) => {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "reading the volume failed"));
                }
            }
        }
        let n = buf.len().min(self.current.len() - self.at);
        buf[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}
