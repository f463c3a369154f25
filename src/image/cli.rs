//! `ember image import | list | show | delete`: the operator's side of the
//! `dir` store, run on the storage host (it needs no running agent).

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::qcow2::{Qcow2, is_qcow2};
use super::{Caller, ImageData, ImageRecord, ImageStore, NewImage, Visibility, dir::FileImage};
use crate::blockdev::engine::Progress;

/// What `ember image import` was asked for.
#[derive(Debug, Clone)]
pub struct Import<'a> {
    pub file: &'a Path,
    pub name: Option<String>,
    /// `raw` or `qcow2`; found from the file's first bytes when unset.
    pub disk_format: Option<String>,
    pub visibility: Visibility,
    /// The owning project (an operator's images are usually public).
    pub project: String,
    pub min_disk: u64,
    pub protected: bool,
    /// Draw the progress bar (stderr is a terminal, or `--progress`).
    pub progress: bool,
}

fn operator(project: &str) -> Caller<'_> {
    Caller { project_id: project, is_admin: true, token: None }
}

/// Validates the file as the image format it holds, then stores it.
pub fn import(store: &dyn ImageStore, req: &Import) -> Result<ImageRecord, String> {
    let path = req.file;
    let data = FileImage::open(path).map_err(|e| format!("open {}: {e}", path.display()))?;
    let mut head = [0u8; 512];
    let n = data.read_at(&mut head, 0).map_err(|e| format!("read {}: {e}", path.display()))?;
    let found = if is_qcow2(&head[..n]) { "qcow2" } else { "raw" };
    let format = req.disk_format.clone().unwrap_or_else(|| found.to_string());
    if format != found {
        return Err(format!("{} holds a {found} image, not {format}", path.display()));
    }
    let len = data.len();
    let virtual_size = match format.as_str() {
        "raw" => len,
        // The same checks a reimage makes: what is refused here would be refused there.
        "qcow2" => Qcow2::open(Arc::new(data)).map_err(|e| format!("{}: {e}", path.display()))?.virtual_size(),
        other => return Err(format!("disk format {other} is not one ember reads (raw, qcow2)")),
    };
    let name = req.name.clone().unwrap_or_else(|| {
        path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "image".to_string())
    });
    let new = NewImage {
        name,
        disk_format: format,
        container_format: "bare".to_string(),
        visibility: req.visibility,
        protected: req.protected,
        min_disk: req.min_disk,
        properties: Default::default(),
    };
    let caller = operator(&req.project);
    let record = store.create(&caller, &new).map_err(|e| e.to_string())?;
    let file = std::fs::File::open(path).map_err(|e| format!("open {}: {e}", path.display()))?;
    let progress = Arc::new(Progress::default());
    progress.set_total(len);
    let mut counted = Counted { inner: file, progress: Arc::clone(&progress) };
    let done = std::sync::atomic::AtomicBool::new(false);
    let stored = std::thread::scope(|scope| {
        if req.progress {
            scope.spawn(|| draw(&progress, &done, &record.id));
        }
        let stored = store.upload(&caller, &record.id, &mut counted, Some(virtual_size));
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        stored
    });
    stored.map_err(|e| {
        let _ = store.delete(&caller, &record.id);
        e.to_string()
    })
}

/// A reader that counts into a `Progress`.
struct Counted<R> {
    inner: R,
    progress: Arc<Progress>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.advance(n as u64);
        Ok(n)
    }
}

/// The progress bar, redrawn twice a second on stderr until `done`.
fn draw(progress: &Progress, done: &std::sync::atomic::AtomicBool, id: &str) {
    let mut err = io::stderr();
    loop {
        let finished = done.load(std::sync::atomic::Ordering::Relaxed);
        let r = progress.report();
        let width = 30usize;
        let filled = (r.done * 30).checked_div(r.total).map_or(width, |f| usize::try_from(f).unwrap_or(width));
        let eta = r.eta.map_or_else(|| "-".to_string(), |s| format!("{s}s"));
        let _ = write!(
            err,
            "\rimporting {id} [{}{}] {:>5.1}% {} of {}, {}/s, ETA {eta}   ",
            "#".repeat(filled.min(width)),
            " ".repeat(width - filled.min(width)),
            if r.total == 0 { 100.0 } else { r.done as f64 * 100.0 / r.total as f64 },
            human(r.done),
            human(r.total),
            human(r.rate),
        );
        if finished {
            let _ = writeln!(err);
            return;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Bytes in binary units, one decimal.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

/// One line per image: id, status, format, size, name.
pub fn list_lines(store: &dyn ImageStore) -> Result<Vec<String>, String> {
    let all = store.list(&operator("")).map_err(|e| e.to_string())?;
    Ok(all
        .iter()
        .map(|i| {
            format!(
                "{}  {:<8} {:<6} {:>10}  {:<9} {}",
                i.id,
                serde_json::to_value(i.status).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default(),
                i.disk_format.as_deref().unwrap_or("-"),
                i.size.map_or_else(|| "-".to_string(), human),
                i.visibility.as_str(),
                i.name.as_deref().unwrap_or("")
            )
        })
        .collect())
}

/// The record, as stored (JSON).
pub fn show(store: &dyn ImageStore, id: &str) -> Result<String, String> {
    let record = store.show(&operator(""), id).map_err(|e| e.to_string())?;
    Ok(serde_json::to_string_pretty(&record).expect("an image record serializes"))
}

pub fn delete(store: &dyn ImageStore, id: &str) -> Result<(), String> {
    store.delete(&operator(""), id).map_err(|e| e.to_string())
}
