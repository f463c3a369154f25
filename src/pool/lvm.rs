//! The LVM pool: one logical volume per volume in a named volume group, thick or
//! thin (in a thin pool of that VG), driven through the lvm2 commands.
//!
//! Every command goes through `cmd.rs` as `lvm <command>` with `LC_ALL=C`, JSON
//! reports in bytes (`--reportformat json --units b --nosuffix`), a timeout, and, if
//! configured, `LVM_SYSTEM_DIR` (hosts without udev need an lvm.conf that does not
//! wait for it). Ownership is marked with LVM tags: `ember` plus
//! `ember.volume=<uuid>` or `ember.snapshot=<uuid>`; nothing without them is ever
//! changed or removed, except by manage, which is the operator's explicit request.
//!
//! Names: volumes `volume-<uuid>` (Cinder's), snapshots `snap-<uuid>` (LVM reserves
//! names starting with "snapshot"). A clone being copied carries the tag
//! `ember.partial` until its bytes are complete, so a resumed job copies again
//! instead of trusting a half-written LV.

use std::path::PathBuf;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

use super::{Capacity, Created, ExistingSnapshot, Manageable, Pool, PoolError, Removed, Resized, Source};
use crate::blockdev::engine::{self, CopyOptions, CopySummary, DeviceSource, ZeroPolicy};
use crate::blockdev::{blkid, device};
use crate::cmd::{self, CmdError};
use crate::config::{LvmConfig, LvmType, VolumeClear};

const TIMEOUT: Duration = Duration::from_secs(120);

pub struct LvmPool {
    lvm: PathBuf,
    vg: String,
    lvm_type: LvmType,
    thin_pool: String,
    volume_clear: VolumeClear,
    system_dir: Option<String>,
}

/// The marks ember puts on the LVs it owns (and the others it finds).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tag {
    /// `ember`: made or taken over by ember.
    Ember,
    /// `ember.volume=<uuid>`
    Volume(String),
    /// `ember.snapshot=<uuid>`
    Snapshot(String),
    /// `ember.partial`: a clone whose bytes are not complete yet.
    Partial,
    /// Someone else's tag, kept as it is.
    Other(String),
}

impl Tag {
    fn parse(text: &str) -> Tag {
        match text {
            "ember" => Tag::Ember,
            "ember.partial" => Tag::Partial,
            other => match (other.strip_prefix("ember.volume="), other.strip_prefix("ember.snapshot=")) {
                (Some(id), _) => Tag::Volume(id.to_string()),
                (_, Some(id)) => Tag::Snapshot(id.to_string()),
                _ => Tag::Other(other.to_string()),
            },
        }
    }

    /// The tag as `--addtag`/`--deltag` take it.
    fn text(&self) -> String {
        match self {
            Tag::Ember => "ember".to_string(),
            Tag::Partial => "ember.partial".to_string(),
            Tag::Volume(id) => format!("ember.volume={id}"),
            Tag::Snapshot(id) => format!("ember.snapshot={id}"),
            Tag::Other(t) => t.clone(),
        }
    }
}

/// A `--units b --nosuffix` size: a string of digits.
fn bytes<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map_err(|_| serde::de::Error::custom(format!("'{text}' is not a size in bytes")))
}

/// `lv_tags`: comma-separated.
fn tags<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Tag>, D::Error> {
    Ok(String::deserialize(d)?.split(',').filter(|t| !t.is_empty()).map(Tag::parse).collect())
}

/// LVM's "12.34" percentages as hundredths of a percent (1234), without floats;
/// an empty field (an inactive thin pool) is an error, not zero.
fn hundredths<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let text = String::deserialize(d)?;
    let bad = || serde::de::Error::custom(format!("'{text}' is not a percentage (is the thin pool active?)"));
    let (whole, frac) = text.trim().split_once('.').unwrap_or((text.trim(), ""));
    if whole.is_empty() || frac.len() > 2 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let frac: String = frac.chars().chain("00".chars()).take(2).collect();
    Ok(whole.parse::<u64>().map_err(|_| bad())? * 100 + frac.parse::<u64>().map_err(|_| bad())?)
}

/// The `lvs` fields ember reads.
const LV_FIELDS: &str = "lv_name,lv_size,lv_attr,lv_tags,origin";

/// One row of `lvs -o LV_FIELDS`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
struct Lv {
    #[serde(rename = "lv_name")]
    name: String,
    #[serde(rename = "lv_size", deserialize_with = "bytes")]
    size: u64,
    #[serde(rename = "lv_attr")]
    attr: String,
    #[serde(rename = "lv_tags", deserialize_with = "tags")]
    tags: Vec<Tag>,
    origin: String,
}

/// One row of `vgs -o vg_size,vg_free`.
#[derive(Debug, Deserialize)]
struct VgSpace {
    #[serde(deserialize_with = "bytes")]
    vg_size: u64,
    #[serde(deserialize_with = "bytes")]
    vg_free: u64,
}

/// One row of `lvs -o lv_size,data_percent,metadata_percent` on the thin pool.
#[derive(Debug, Deserialize)]
struct ThinPoolUse {
    #[serde(deserialize_with = "bytes")]
    lv_size: u64,
    #[serde(deserialize_with = "hundredths")]
    data_percent: u64,
    #[serde(deserialize_with = "hundredths")]
    metadata_percent: u64,
}

impl Lv {
    fn has(&self, tag: &Tag) -> bool {
        self.tags.contains(tag)
    }
    /// A snapshot (thick `s`/`S`, or thin `V` with an origin).
    fn is_snapshot(&self) -> bool {
        self.attr.starts_with(['s', 'S']) || !self.origin.is_empty()
    }
    /// Pools, their hidden sub-LVs, and other internal volumes.
    fn is_internal(&self) -> bool {
        self.attr.starts_with(['t', 'T', 'e', 'i', 'l', 'r', 'v', 'w']) || self.name.starts_with('[')
    }
    fn is_open(&self) -> bool {
        self.attr.chars().nth(5) == Some('o')
    }
}

/// A name LVM accepts for an LV (and that is safe inside a selection).
fn valid_lv_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('-')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"+_.-".contains(&b))
}

impl From<CmdError> for PoolError {
    fn from(e: CmdError) -> Self {
        PoolError::Refused(e.to_string())
    }
}

fn volume_lv(id: &str) -> String {
    format!("volume-{id}")
}

fn snapshot_lv(id: &str) -> String {
    format!("snap-{id}")
}

impl LvmPool {
    pub fn open(config: &LvmConfig) -> Result<LvmPool, PoolError> {
        let vg = config.volume_group.as_str();
        let pool = LvmPool {
            lvm: cmd::resolve("lvm")?,
            vg: vg.to_string(),
            lvm_type: config.lvm_type,
            thin_pool: config.thin_pool.clone(),
            volume_clear: config.volume_clear,
            system_dir: config.lvm_system_dir.as_ref().map(|p| p.display().to_string()),
        };
        pool.report::<VgSpace>("vgs", false, "vg_size,vg_free", None, vg)
            .map_err(|e| PoolError::Refused(format!("volume group {vg} is not usable: {e}")))?;
        let thin_pool = config.thin_pool.as_str();
        if config.lvm_type == LvmType::Thin && pool.lv(thin_pool)?.is_none() {
            let Some(share) = config.create_thin_pool.filter(|s| *s > 0.0 && *s <= 1.0) else {
                return Err(PoolError::Refused(format!(
                    "thin pool {vg}/{thin_pool} does not exist (set create_thin_pool to let ember create it)"
                )));
            };
            let extents = format!("{}%VG", (share * 100.0).floor());
            pool.lvm(&[
                "lvcreate",
                "-y",
                "--type",
                "thin-pool",
                "--zero",
                "y",
                "-l",
                &extents,
                "-n",
                thin_pool,
                "--addtag",
                &Tag::Ember.text(),
                vg,
            ])?;
        }
        Ok(pool)
    }

    fn lvm(&self, args: &[&str]) -> Result<String, PoolError> {
        let env: Vec<(&str, &str)> = self.system_dir.as_deref().map(|d| ("LVM_SYSTEM_DIR", d)).into_iter().collect();
        Ok(cmd::run_with_env(&self.lvm, args, &env, TIMEOUT)?)
    }

    fn full(&self, lv: &str) -> String {
        format!("{}/{lv}", self.vg)
    }

    /// The device node (device-mapper's name doubles every '-').
    fn device(&self, lv: &str) -> PathBuf {
        PathBuf::from(format!("/dev/mapper/{}-{}", self.vg.replace('-', "--"), lv.replace('-', "--")))
    }

    /// `lvm lvs|vgs` with a JSON report, sizes in bytes, of `target` (a VG or an
    /// LV), optionally narrowed by an LVM selection; the typed rows.
    fn report<T: DeserializeOwned>(
        &self,
        command: &str,
        all: bool,
        fields: &str,
        select: Option<&str>,
        target: &str,
    ) -> Result<Vec<T>, PoolError> {
        let mut args = vec![command];
        if all {
            args.push("-a");
        }
        if let Some(selection) = select {
            args.extend(["-S", selection]);
        }
        args.extend(["--reportformat", "json", "--units", "b", "--nosuffix", "-o", fields, target]);
        report_rows(&self.lvm(&args)?, command.trim_end_matches('s'))
    }

    fn lvs(&self) -> Result<Vec<Lv>, PoolError> {
        self.report("lvs", true, LV_FIELDS, None, &self.vg)
    }

    /// One LV by name, looked up with a selection (not by listing them all).
    fn lv(&self, name: &str) -> Result<Option<Lv>, PoolError> {
        if !valid_lv_name(name) {
            return Err(PoolError::Refused(format!("'{name}' is not a logical volume name")));
        }
        let select = format!("lv_name=\"{name}\"");
        let mut rows: Vec<Lv> = self.report("lvs", true, LV_FIELDS, Some(&select), &self.vg)?;
        rows.retain(|lv| lv.name == name);
        Ok(rows.pop())
    }

    /// The LV of an ember volume or snapshot; refuses one ember does not own.
    fn owned(&self, name: &str, owner: &Tag) -> Result<Option<Lv>, PoolError> {
        match self.lv(name)? {
            Some(lv) if !lv.has(owner) => Err(PoolError::Refused(format!(
                "{}/{name} exists but is not tagged {}: ember leaves it alone",
                self.vg,
                owner.text()
            ))),
            other => Ok(other),
        }
    }

    /// What a volume's (or snapshot's) LV carries: `ember` and its owner tag.
    fn owner_tags(owner: &Tag) -> Vec<String> {
        vec![Tag::Ember.text(), owner.text()]
    }

    fn activate(&self, lv: &str) -> Result<(), PoolError> {
        // -K: thin snapshots are created with the activation-skip flag. -y: a thick
        // snapshot activates with its origin, which LVM asks to confirm.
        self.lvm(&["lvchange", "-y", "-ay", "-K", &self.full(lv)]).map(drop)
    }

    fn create_lv(&self, lv: &str, bytes: u64, tags: &[String]) -> Result<(), PoolError> {
        let size = format!("{bytes}b");
        let mut args = vec!["lvcreate", "-y", "-Wy", "-n", lv];
        match self.lvm_type {
            // -Zy zeroes the first KiB of a thick LV (thin LVs read zeros anyway).
            LvmType::Thick => args.extend(["-Zy", "-L", &size, &self.vg]),
            LvmType::Thin => args.extend(["-V", &size, "--thinpool", &self.thin_pool, &self.vg]),
        }
        args.extend(tag_args("--addtag", tags));
        self.lvm(&args).map(drop)
    }

    fn clear(&self, lv: &str) -> Result<(), PoolError> {
        let dev = self.device(lv);
        blkid::wipe_signatures(&dev)?;
        // Thin LVs give blocks back with a discard: the pool zeroes blocks before it
        // hands them out again (`--zero y`), so that is also how a thin LV is zeroed.
        match (self.volume_clear, self.lvm_type) {
            (VolumeClear::None, _) => {}
            (VolumeClear::Zero, LvmType::Thick) => device::zero_out(&dev)?,
            (VolumeClear::Discard, LvmType::Thick) => {
                // Not every PV discards; zeroing is the safe fallback.
                if device::discard(&dev).is_err() {
                    device::zero_out(&dev)?;
                }
            }
            (_, LvmType::Thin) => device::discard(&dev)?,
        }
        Ok(())
    }

    fn remove(&self, lv: &str, owner: &Tag) -> Result<Removed, PoolError> {
        let Some(found) = self.owned(lv, owner)? else {
            return Ok(Removed::Absent);
        };
        if !found.is_snapshot() || self.lvm_type == LvmType::Thin {
            self.activate(lv)?;
            self.clear(lv)?;
        }
        self.lvm(&["lvremove", "-y", &self.full(lv)])?;
        Ok(Removed::Removed)
    }
}

impl LvmPool {
    /// A thick clone: the source LV's bytes onto a new LV through the copy
    /// engine (zero runs by BLKZEROOUT, the rest with O_DIRECT).
    fn copy_lv(&self, source_lv: &str, lv: &str) -> Result<CopySummary, PoolError> {
        self.activate(source_lv)?;
        let from = self.device(source_lv);
        let mut source = DeviceSource::open(&from).map_err(|e| PoolError::io("open for reading", &from, e))?;
        super::write_device(&self.device(lv), ZeroPolicy::ZeroOut, &mut source, &CopyOptions::default())
    }
}

/// The single row a report of one VG or LV must have.
fn one<T>(rows: Vec<T>, what: &str) -> Result<T, PoolError> {
    rows.into_iter().next().ok_or_else(|| PoolError::Refused(format!("lvm reported no row for {what}")))
}

/// `flag tag flag tag ...` for lvcreate/lvchange.
fn tag_args<'a>(flag: &'a str, tags: &'a [String]) -> impl Iterator<Item = &'a str> {
    tags.iter().flat_map(move |t| [flag, t.as_str()])
}

/// The rows of an lvm JSON report (`report[0].<key>`, key "lv" or "vg"), typed. A
/// report that does not have the expected shape is an error, never zero rows.
fn report_rows<T: DeserializeOwned>(json: &str, key: &str) -> Result<Vec<T>, PoolError> {
    let doc: serde_json::Value = serde_json::from_str(json)
        .map_err(|_| PoolError::Refused(format!("unexpected lvm report (not JSON): {json}")))?;
    let rows = doc["report"][0]
        .get(key)
        .cloned()
        .ok_or_else(|| PoolError::Refused(format!("unexpected lvm report (no report[0].{key}): {json}")))?;
    serde_json::from_value(rows).map_err(|e| PoolError::Refused(format!("unexpected lvm report ({e}): {json}")))
}

impl Pool for LvmPool {
    fn capacity(&self) -> Result<Capacity, PoolError> {
        match self.lvm_type {
            LvmType::Thick => {
                let vg: VgSpace = one(self.report("vgs", false, "vg_size,vg_free", None, &self.vg)?, &self.vg)?;
                let allocated = self.lvs()?.iter().filter(|lv| lv.has(&Tag::Ember)).map(|lv| lv.size).sum();
                Ok(Capacity {
                    total_bytes: vg.vg_size,
                    free_bytes: vg.vg_free,
                    allocated_bytes: allocated,
                    thin_data_hundredths: None,
                    thin_metadata_hundredths: None,
                })
            }
            LvmType::Thin => {
                let full = self.full(&self.thin_pool);
                let pool: ThinPoolUse =
                    one(self.report("lvs", false, "lv_size,data_percent,metadata_percent", None, &full)?, &full)?;
                let size = pool.lv_size;
                let used = u64::try_from(u128::from(size) * u128::from(pool.data_percent) / 10_000).unwrap_or(size);
                Ok(Capacity {
                    total_bytes: size,
                    free_bytes: size.saturating_sub(used),
                    allocated_bytes: used,
                    thin_data_hundredths: Some(pool.data_percent),
                    thin_metadata_hundredths: Some(pool.metadata_percent),
                })
            }
        }
    }

    fn create_volume(&self, id: &str, size_gib: u64, source: &Source) -> Result<Created, PoolError> {
        let lv = volume_lv(id);
        let bytes = size_gib * super::GIB;
        let owner = Tag::Volume(id.to_string());
        if let Some(existing) = self.owned(&lv, &owner)? {
            if !existing.has(&Tag::Partial) {
                return Ok(Created::AlreadyPresent);
            }
            // A copy interrupted by a crash: start it again from a fresh LV.
            self.lvm(&["lvremove", "-y", &self.full(&lv)])?;
        }
        let tags = Self::owner_tags(&owner);
        let source_lv = match source {
            Source::Blank => None,
            Source::Snapshot { id: s } => Some(snapshot_lv(s)),
            Source::Volume { id: v } => Some(volume_lv(v)),
        };
        let Some(source_lv) = source_lv else {
            self.create_lv(&lv, bytes, &tags)?;
            return Ok(Created::Created);
        };
        let src = self.lv(&source_lv)?.ok_or_else(|| PoolError::NotFound { what: self.full(&source_lv) })?;
        match self.lvm_type {
            // A thin snapshot of the source is a complete, instant clone.
            LvmType::Thin => {
                let full = self.full(&source_lv);
                let mut args = vec!["lvcreate", "-y", "-s", "-n", lv.as_str(), "--setactivationskip", "n"];
                args.extend(tag_args("--addtag", &tags));
                args.push(&full);
                self.lvm(&args)?;
                self.activate(&lv)?;
                if bytes > src.size {
                    self.lvm(&["lvextend", "-L", &format!("{bytes}b"), &self.full(&lv)])?;
                }
            }
            LvmType::Thick => {
                let mut with_partial = tags.clone();
                with_partial.push(Tag::Partial.text());
                self.create_lv(&lv, bytes, &with_partial)?;
                self.copy_lv(&source_lv, &lv)?;
                self.lvm(&["lvchange", "--deltag", &Tag::Partial.text(), &self.full(&lv)])?;
            }
        }
        Ok(Created::Created)
    }

    fn delete_volume(&self, id: &str) -> Result<Removed, PoolError> {
        self.remove(&volume_lv(id), &Tag::Volume(id.to_string()))
    }

    fn extend_volume(&self, id: &str, new_size_gib: u64) -> Result<Resized, PoolError> {
        let lv = volume_lv(id);
        let found = self
            .owned(&lv, &Tag::Volume(id.to_string()))?
            .ok_or_else(|| PoolError::NotFound { what: self.full(&lv) })?;
        let to = new_size_gib * super::GIB;
        if found.size >= to {
            return Ok(Resized::Unchanged);
        }
        self.lvm(&["lvextend", "-L", &format!("{to}b"), &self.full(&lv)])?;
        Ok(Resized::Resized { from: found.size, to })
    }

    fn create_snapshot(&self, snapshot_id: &str, volume_id: &str) -> Result<Created, PoolError> {
        let lv = snapshot_lv(snapshot_id);
        let owner = Tag::Snapshot(snapshot_id.to_string());
        if self.owned(&lv, &owner)?.is_some() {
            return Ok(Created::AlreadyPresent);
        }
        let origin = volume_lv(volume_id);
        let src = self
            .owned(&origin, &Tag::Volume(volume_id.to_string()))?
            .ok_or_else(|| PoolError::NotFound { what: self.full(&origin) })?;
        let size = format!("{}b", src.size);
        let full = self.full(&origin);
        let tags = Self::owner_tags(&owner);
        let mut args = vec!["lvcreate", "-y", "-s", "-n", lv.as_str()];
        if self.lvm_type == LvmType::Thick {
            // A full-size COW area: the snapshot can never overflow and be dropped.
            args.extend(["-L", size.as_str()]);
        }
        args.extend(tag_args("--addtag", &tags));
        args.push(&full);
        self.lvm(&args)?;
        Ok(Created::Created)
    }

    fn delete_snapshot(&self, snapshot_id: &str) -> Result<Removed, PoolError> {
        self.remove(&snapshot_lv(snapshot_id), &Tag::Snapshot(snapshot_id.to_string()))
    }

    /// `lvconvert --merge` (thick and thin: Cinder reverts only thick), then the
    /// snapshot is made again so it survives, as the spec requires. A resumed job
    /// that finds the snapshot already merged only makes it again.
    fn revert_to_snapshot(&self, volume_id: &str, snapshot_id: &str) -> Result<(), PoolError> {
        let snap = snapshot_lv(snapshot_id);
        let origin = volume_lv(volume_id);
        if self.owned(&snap, &Tag::Snapshot(snapshot_id.to_string()))?.is_some() {
            // Merging needs the origin closed; deactivating it makes LVM merge at
            // the next activation, for thick and thin alike.
            self.lvm(&["lvchange", "-an", &self.full(&origin)])?;
            self.lvm(&["lvconvert", "-y", "--merge", &self.full(&snap)])?;
            self.activate(&origin)?;
            // A thick merge runs in the background after activation; wait for it.
            for _ in 0..600 {
                if self.lv(&snap)?.is_none() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        self.create_snapshot(snapshot_id, volume_id).map(drop)
    }

    fn list_existing(&self) -> Result<Vec<Manageable>, PoolError> {
        Ok(self
            .lvs()?
            .into_iter()
            .filter(|lv| !lv.is_snapshot() && !lv.is_internal() && lv.name != self.thin_pool)
            .map(|lv| Manageable { in_use: lv.is_open(), size_bytes: lv.size, name: lv.name })
            .collect())
    }

    fn volume_name(&self, id: &str) -> String {
        volume_lv(id)
    }

    fn rename_volume(&self, from: &str, to: &str) -> Result<(), PoolError> {
        let (old, new) = (volume_lv(from), volume_lv(to));
        let renamed = self.lv(&old)?.is_none() && self.lv(&new)?.is_some();
        if !renamed {
            if self.lv(&new)?.is_some() {
                return Err(PoolError::Refused(format!("{} exists already", self.full(&new))));
            }
            self.owned(&old, &Tag::Volume(from.to_string()))?
                .ok_or_else(|| PoolError::NotFound { what: self.full(&old) })?;
            self.lvm(&["lvrename", &self.vg, &old, &new])?;
        }
        // The owner tag follows the name (again, after a crash between the two).
        let (drop_tag, add_tag) = (Tag::Volume(from.to_string()).text(), Tag::Volume(to.to_string()).text());
        self.lvm(&["lvchange", "--deltag", &drop_tag, "--addtag", &add_tag, &self.full(&new)]).map(drop)
    }

    fn manage_existing(&self, name: &str, new_id: &str) -> Result<u64, PoolError> {
        let target = volume_lv(new_id);
        let owner = Tag::Volume(new_id.to_string());
        if let Some(done) = self.owned(&target, &owner).ok().flatten() {
            return Ok(done.size); // renamed and tagged by an earlier run of this job
        }
        let lv = self.lv(name)?.ok_or_else(|| PoolError::NotFound { what: self.full(name) })?;
        if lv.is_snapshot() || lv.is_internal() {
            return Err(PoolError::Refused(format!("{}/{name} is not a plain logical volume", self.vg)));
        }
        if name != target {
            self.lvm(&["lvrename", &self.vg, name, &target])?;
        }
        let tags = Self::owner_tags(&owner);
        let full = self.full(&target);
        let mut args = vec!["lvchange"];
        args.extend(tag_args("--addtag", &tags));
        args.push(&full);
        self.lvm(&args)?;
        // Sizes are whole GiB: round a foreign LV up (growing never loses data).
        let gib = lv.size.div_ceil(super::GIB).max(1);
        if gib * super::GIB != lv.size {
            self.lvm(&["lvextend", "-L", &format!("{}b", gib * super::GIB), &full])?;
        }
        Ok(gib * super::GIB)
    }

    fn unmanage(&self, id: &str) -> Result<(), PoolError> {
        let lv = volume_lv(id);
        if self.lv(&lv)?.is_some() {
            let tags = Self::owner_tags(&Tag::Volume(id.to_string()));
            let full = self.full(&lv);
            let mut args = vec!["lvchange"];
            args.extend(tag_args("--deltag", &tags));
            args.push(&full);
            self.lvm(&args)?;
        }
        Ok(())
    }

    /// Snapshot LVs of the VG (thick COW snapshots and thin snapshots), each with
    /// its origin, as `lvs` reports it.
    fn list_existing_snapshots(&self) -> Result<Vec<ExistingSnapshot>, PoolError> {
        Ok(self
            .lvs()?
            .into_iter()
            .filter(|lv| lv.is_snapshot() && !lv.is_internal())
            .map(|lv| ExistingSnapshot {
                in_use: lv.is_open(),
                size_bytes: lv.size,
                origin: (!lv.origin.is_empty()).then(|| lv.origin.clone()),
                name: lv.name,
            })
            .collect())
    }

    fn snapshot_name(&self, id: &str) -> String {
        snapshot_lv(id)
    }

    /// Renames the LV to `snap-<id>` and tags it; refuses an LV that is not a
    /// snapshot of the volume's LV. Each half is checked before it is done, so a
    /// resumed job finds the rename (or both) done and finishes.
    fn manage_existing_snapshot(&self, name: &str, new_id: &str, volume_id: &str) -> Result<u64, PoolError> {
        let target = snapshot_lv(new_id);
        let origin = volume_lv(volume_id);
        let lv = match self.lv(&target)? {
            Some(done) if name != target && self.lv(name)?.is_none() => done, // renamed by an earlier run
            _ => self.lv(name)?.ok_or_else(|| PoolError::NotFound { what: self.full(name) })?,
        };
        if !lv.is_snapshot() || lv.origin != origin {
            return Err(PoolError::Refused(format!(
                "{}/{} is not a snapshot of {}/{origin} (its origin is '{}')",
                self.vg, lv.name, self.vg, lv.origin
            )));
        }
        if lv.name != target {
            self.lvm(&["lvrename", &self.vg, &lv.name, &target])?;
        }
        let owner = Tag::Snapshot(new_id.to_string());
        let missing: Vec<String> =
            Self::owner_tags(&owner).into_iter().filter(|t| !lv.tags.iter().any(|have| have.text() == *t)).collect();
        if !missing.is_empty() {
            let full = self.full(&target);
            let mut args = vec!["lvchange"];
            args.extend(tag_args("--addtag", &missing));
            args.push(&full);
            self.lvm(&args)?;
        }
        Ok(lv.size)
    }

    fn unmanage_snapshot(&self, id: &str) -> Result<(), PoolError> {
        let lv = snapshot_lv(id);
        if self.lv(&lv)?.is_some() {
            let tags = Self::owner_tags(&Tag::Snapshot(id.to_string()));
            let full = self.full(&lv);
            let mut args = vec!["lvchange"];
            args.extend(tag_args("--deltag", &tags));
            args.push(&full);
            self.lvm(&args)?;
        }
        Ok(())
    }

    fn attach_device(&self, id: &str) -> Result<PathBuf, PoolError> {
        let lv = volume_lv(id);
        let device = self.device(&lv);
        // Active already (the common case: every export reconcile asks): no lvm
        // command at all. The name is ember's own (`volume-<id>`), never a caller's.
        if device.exists() {
            return Ok(device);
        }
        self.owned(&lv, &Tag::Volume(id.to_string()))?.ok_or_else(|| PoolError::NotFound { what: self.full(&lv) })?;
        self.activate(&lv)?;
        Ok(device)
    }

    fn bound_device(&self, id: &str) -> Option<PathBuf> {
        Some(self.device(&volume_lv(id))).filter(|d| d.exists())
    }

    fn detach_device(&self, _id: &str) -> Result<Removed, PoolError> {
        // LVs stay active; there is nothing bound to release.
        Ok(Removed::Absent)
    }

    fn write_volume(
        &self,
        id: &str,
        source: &mut dyn engine::Source,
        options: &CopyOptions,
        fresh: bool,
    ) -> Result<CopySummary, PoolError> {
        let lv = volume_lv(id);
        self.lv(&lv)?.ok_or_else(|| PoolError::NotFound { what: self.full(&lv) })?;
        self.activate(&lv)?;
        // A new thin LV reads zeros; a thick one holds whatever the disk held.
        let policy = match self.lvm_type {
            LvmType::Thin if fresh => ZeroPolicy::AlreadyZero,
            _ => ZeroPolicy::ZeroOut,
        };
        super::write_device(&self.device(&lv), policy, source, options)
    }

    fn read_volume(
        &self,
        id: &str,
        sink: &mut dyn engine::Sink,
        options: &CopyOptions,
    ) -> Result<CopySummary, PoolError> {
        let lv = volume_lv(id);
        self.lv(&lv)?.ok_or_else(|| PoolError::NotFound { what: self.full(&lv) })?;
        self.activate(&lv)?;
        super::read_device(&self.device(&lv), sink, options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lvs_reports() {
        let json = r#"{"report": [{"lv": [
            {"lv_name":"volume-1", "lv_size":"1073741824", "lv_attr":"-wi-ao----", "lv_tags":"ember,ember.volume=1", "origin":""},
            {"lv_name":"snap-2", "lv_size":"1073741824", "lv_attr":"swi-a-s---", "lv_tags":"ember,ember.snapshot=2", "origin":"volume-1"},
            {"lv_name":"ember-pool", "lv_size":"4294967296", "lv_attr":"twi-aotz--", "lv_tags":"ops,ember.partial", "origin":""},
            {"lv_name":"[ember-pool_tdata]", "lv_size":"4294967296", "lv_attr":"Twi-ao----", "lv_tags":"", "origin":""}
        ]}]}"#;
        let lvs: Vec<Lv> = report_rows(json, "lv").unwrap();
        assert_eq!(lvs.len(), 4);
        assert!(lvs[0].has(&Tag::Volume("1".into())) && lvs[0].has(&Tag::Ember) && lvs[0].is_open());
        assert!(!lvs[0].is_snapshot());
        assert!(lvs[1].is_snapshot() && !lvs[1].is_open() && lvs[1].has(&Tag::Snapshot("2".into())));
        assert_eq!(lvs[2].tags, [Tag::Other("ops".into()), Tag::Partial]);
        assert!(lvs[2].is_internal() && lvs[3].is_internal());
        // Malformed reports are errors, never empty or zero.
        for bad in [
            "{}",
            "not json",
            r#"{"report":[]}"#,
            r#"{"report":[{"vg":[]}]}"#,
            r#"{"report":[{"lv":[{"lv_name":"x","lv_size":"12b","lv_attr":"","lv_tags":"","origin":""}]}]}"#,
            r#"{"report":[{"lv":[{"lv_name":"x","lv_attr":"","lv_tags":"","origin":""}]}]}"#,
        ] {
            assert!(report_rows::<Lv>(bad, "lv").is_err(), "{bad}");
        }
        assert_eq!(report_rows::<Lv>(r#"{"report":[{"lv":[]}]}"#, "lv").unwrap(), []);
    }

    #[test]
    fn thin_pool_use_in_hundredths() {
        let row = |data: &str| {
            let json = format!(
                r#"{{"report":[{{"lv":[{{"lv_size":"1024","data_percent":"{data}","metadata_percent":"1.5"}}]}}]}}"#
            );
            report_rows::<ThinPoolUse>(&json, "lv").map(|r| (r[0].data_percent, r[0].metadata_percent))
        };
        assert_eq!(row("12.34").unwrap(), (1234, 150));
        assert_eq!(row("100.00").unwrap(), (10000, 150));
        assert_eq!(row("7").unwrap(), (700, 150));
        for bad in ["", "x", "1.234", "-1"] {
            assert!(row(bad).is_err(), "'{bad}' is no percentage");
        }
    }

    #[test]
    fn tags_and_names() {
        for text in ["ember", "ember.partial", "ember.volume=ab", "ember.snapshot=cd", "ops"] {
            assert_eq!(Tag::parse(text).text(), text);
        }
        assert!(valid_lv_name("volume-1b2c") && valid_lv_name("my_lv.2+x"));
        for bad in ["", "-x", "a\"b", "a b", "a/b", "a,b"] {
            assert!(!valid_lv_name(bad), "{bad}");
        }
    }

    #[test]
    fn device_mapper_names_double_dashes() {
        let pool = LvmPool {
            lvm: "/sbin/lvm".into(),
            vg: "my-vg".into(),
            lvm_type: LvmType::Thick,
            thin_pool: "p".into(),
            volume_clear: VolumeClear::None,
            system_dir: None,
        };
        assert_eq!(pool.device("volume-ab-c"), PathBuf::from("/dev/mapper/my--vg-volume--ab--c"));
    }
}
