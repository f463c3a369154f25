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

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::{Capacity, Created, Manageable, Pool, PoolError, Removed, Resized, Source};
use crate::blockdev::{blkid, device};
use crate::cmd::{self, CmdError};
use crate::config::{LvmType, VolumeClear};

const TAG: &str = "ember";
const PARTIAL: &str = "ember.partial";
const TIMEOUT: Duration = Duration::from_secs(120);

pub struct LvmPool {
    lvm: PathBuf,
    vg: String,
    lvm_type: LvmType,
    thin_pool: String,
    volume_clear: VolumeClear,
    system_dir: Option<String>,
}

/// One row of `lvs`.
#[derive(Debug, Clone, PartialEq)]
struct Lv {
    name: String,
    size: u64,
    attr: String,
    tags: Vec<String>,
    origin: String,
}

impl Lv {
    fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
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
    pub fn open(
        vg: &str,
        lvm_type: LvmType,
        thin_pool: &str,
        create_thin_pool: Option<f64>,
        volume_clear: VolumeClear,
        system_dir: Option<&Path>,
    ) -> Result<LvmPool, PoolError> {
        let pool = LvmPool {
            lvm: cmd::resolve("lvm")?,
            vg: vg.to_string(),
            lvm_type,
            thin_pool: thin_pool.to_string(),
            volume_clear,
            system_dir: system_dir.map(|p| p.display().to_string()),
        };
        pool.report("vgs", false, "vg_name", vg)
            .map_err(|e| PoolError::Refused(format!("volume group {vg} is not usable: {e}")))?;
        if lvm_type == LvmType::Thin && pool.lv(thin_pool)?.is_none() {
            let Some(share) = create_thin_pool.filter(|s| *s > 0.0 && *s <= 1.0) else {
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
                TAG,
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

    /// `lvm lvs|vgs` with a JSON report, sizes in bytes; the rows of the report.
    fn report(&self, command: &str, all: bool, fields: &str, target: &str) -> Result<Vec<Value>, PoolError> {
        let mut args = vec![command];
        if all {
            args.push("-a");
        }
        args.extend(["--reportformat", "json", "--units", "b", "--nosuffix", "-o", fields, target]);
        report_rows(&self.lvm(&args)?, command.trim_end_matches('s'))
    }

    fn lvs(&self) -> Result<Vec<Lv>, PoolError> {
        self.report("lvs", true, "lv_name,lv_size,lv_attr,lv_tags,origin", &self.vg)?.iter().map(lv_from_row).collect()
    }

    fn lv(&self, name: &str) -> Result<Option<Lv>, PoolError> {
        Ok(self.lvs()?.into_iter().find(|lv| lv.name == name))
    }

    /// The LV of an ember volume or snapshot; refuses one ember does not own.
    fn owned(&self, name: &str, owner_tag: &str) -> Result<Option<Lv>, PoolError> {
        match self.lv(name)? {
            Some(lv) if !lv.has_tag(owner_tag) => Err(PoolError::Refused(format!(
                "{}/{name} exists but is not tagged {owner_tag}: ember leaves it alone",
                self.vg
            ))),
            other => Ok(other),
        }
    }

    fn tags(kind: &str, id: &str) -> [String; 2] {
        [TAG.to_string(), format!("ember.{kind}={id}")]
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
        for tag in tags {
            args.extend(["--addtag", tag]);
        }
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

    fn remove(&self, lv: &str, owner_tag: &str) -> Result<Removed, PoolError> {
        let Some(found) = self.owned(lv, owner_tag)? else {
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

/// LVM's "12.34" percentages as hundredths of a percent (1234), without floats.
fn percent_hundredths(text: &str) -> u64 {
    let (whole, frac) = text.trim().split_once('.').unwrap_or((text.trim(), ""));
    let frac: String = frac.chars().chain("00".chars()).take(2).collect();
    whole.parse::<u64>().unwrap_or(0) * 100 + frac.parse::<u64>().unwrap_or(0)
}

/// The rows of an lvm JSON report: `report[0].<key>`, key "lv" or "vg".
fn report_rows(json: &str, key: &str) -> Result<Vec<Value>, PoolError> {
    let doc: Value = serde_json::from_str(json)
        .map_err(|_| PoolError::Refused(format!("unexpected lvm report (not JSON): {json}")))?;
    doc["report"][0][key]
        .as_array()
        .cloned()
        .ok_or_else(|| PoolError::Refused(format!("unexpected lvm report (no report[0].{key}): {json}")))
}

/// A size or count field of a report row (`--units b --nosuffix`).
fn number(row: &Value, key: &str) -> Option<u64> {
    row[key].as_str().and_then(|s| s.parse().ok())
}

fn lv_from_row(row: &Value) -> Result<Lv, PoolError> {
    let text = |k: &str| row[k].as_str().unwrap_or_default().to_string();
    Ok(Lv {
        name: text("lv_name"),
        size: number(row, "lv_size").ok_or_else(|| PoolError::Refused(format!("lvs row without a size: {row}")))?,
        attr: text("lv_attr"),
        tags: text("lv_tags").split(',').filter(|t| !t.is_empty()).map(str::to_string).collect(),
        origin: text("origin"),
    })
}

impl Pool for LvmPool {
    fn capacity(&self) -> Result<Capacity, PoolError> {
        match self.lvm_type {
            LvmType::Thick => {
                let vg = self.report("vgs", false, "vg_size,vg_free", &self.vg)?;
                let row = vg.first().unwrap_or(&Value::Null);
                let allocated = self.lvs()?.iter().filter(|lv| lv.has_tag(TAG)).map(|lv| lv.size).sum();
                Ok(Capacity {
                    total_bytes: number(row, "vg_size").unwrap_or(0),
                    free_bytes: number(row, "vg_free").unwrap_or(0),
                    allocated_bytes: allocated,
                    thin_data_hundredths: None,
                    thin_metadata_hundredths: None,
                })
            }
            LvmType::Thin => {
                let pool =
                    self.report("lvs", false, "lv_size,data_percent,metadata_percent", &self.full(&self.thin_pool))?;
                let row = pool.first().unwrap_or(&Value::Null);
                let size = number(row, "lv_size").unwrap_or(0);
                let data = row["data_percent"].as_str().map(percent_hundredths).unwrap_or(0);
                let metadata = row["metadata_percent"].as_str().map(percent_hundredths).unwrap_or(0);
                let used = u64::try_from(u128::from(size) * u128::from(data) / 10_000).unwrap_or(size);
                Ok(Capacity {
                    total_bytes: size,
                    free_bytes: size.saturating_sub(used),
                    allocated_bytes: used,
                    thin_data_hundredths: Some(data),
                    thin_metadata_hundredths: Some(metadata),
                })
            }
        }
    }

    fn create_volume(&self, id: &str, size_gib: u64, source: &Source) -> Result<Created, PoolError> {
        let lv = volume_lv(id);
        let bytes = size_gib * super::GIB;
        let tags = Self::tags("volume", id);
        if let Some(existing) = self.owned(&lv, &tags[1])? {
            if !existing.has_tag(PARTIAL) {
                return Ok(Created::AlreadyPresent);
            }
            // A copy interrupted by a crash: start it again from a fresh LV.
            self.lvm(&["lvremove", "-y", &self.full(&lv)])?;
        }
        let source_lv = match source {
            Source::Blank => None,
            Source::Snapshot(s) => Some(snapshot_lv(s)),
            Source::Volume(v) => Some(volume_lv(v)),
        };
        let Some(source_lv) = source_lv else {
            self.create_lv(&lv, bytes, &tags)?;
            return Ok(Created::Created);
        };
        let src = self.lv(&source_lv)?.ok_or_else(|| PoolError::NotFound { what: self.full(&source_lv) })?;
        match self.lvm_type {
            // A thin snapshot of the source is a complete, instant clone.
            LvmType::Thin => {
                let mut args = vec!["lvcreate", "-y", "-s", "-n", lv.as_str(), "--setactivationskip", "n"];
                for tag in &tags {
                    args.extend(["--addtag", tag.as_str()]);
                }
                let full = self.full(&source_lv);
                args.push(&full);
                self.lvm(&args)?;
                self.activate(&lv)?;
                if bytes > src.size {
                    self.lvm(&["lvextend", "-L", &format!("{bytes}b"), &self.full(&lv)])?;
                }
            }
            LvmType::Thick => {
                let mut with_partial = tags.to_vec();
                with_partial.push(PARTIAL.to_string());
                self.create_lv(&lv, bytes, &with_partial)?;
                self.activate(&source_lv)?;
                device::copy_device(&self.device(&source_lv), &self.device(&lv), src.size)?;
                self.lvm(&["lvchange", "--deltag", PARTIAL, &self.full(&lv)])?;
            }
        }
        Ok(Created::Created)
    }

    fn delete_volume(&self, id: &str) -> Result<Removed, PoolError> {
        self.remove(&volume_lv(id), &format!("ember.volume={id}"))
    }

    fn extend_volume(&self, id: &str, new_size_gib: u64) -> Result<Resized, PoolError> {
        let lv = volume_lv(id);
        let found = self
            .owned(&lv, &format!("ember.volume={id}"))?
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
        let tags = Self::tags("snapshot", snapshot_id);
        if self.owned(&lv, &tags[1])?.is_some() {
            return Ok(Created::AlreadyPresent);
        }
        let origin = volume_lv(volume_id);
        let src = self
            .owned(&origin, &format!("ember.volume={volume_id}"))?
            .ok_or_else(|| PoolError::NotFound { what: self.full(&origin) })?;
        let size = format!("{}b", src.size);
        let full = self.full(&origin);
        let mut args = vec!["lvcreate", "-y", "-s", "-n", lv.as_str()];
        if self.lvm_type == LvmType::Thick {
            // A full-size COW area: the snapshot can never overflow and be dropped.
            args.extend(["-L", size.as_str()]);
        }
        for tag in &tags {
            args.extend(["--addtag", tag.as_str()]);
        }
        args.push(&full);
        self.lvm(&args)?;
        Ok(Created::Created)
    }

    fn delete_snapshot(&self, snapshot_id: &str) -> Result<Removed, PoolError> {
        self.remove(&snapshot_lv(snapshot_id), &format!("ember.snapshot={snapshot_id}"))
    }

    /// `lvconvert --merge` (thick and thin: Cinder reverts only thick), then the
    /// snapshot is made again so it survives, as the spec requires. A resumed job
    /// that finds the snapshot already merged only makes it again.
    fn revert_to_snapshot(&self, volume_id: &str, snapshot_id: &str) -> Result<(), PoolError> {
        let snap = snapshot_lv(snapshot_id);
        let origin = volume_lv(volume_id);
        if self.owned(&snap, &format!("ember.snapshot={snapshot_id}"))?.is_some() {
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

    fn manage_existing(&self, name: &str, new_id: &str) -> Result<u64, PoolError> {
        let target = volume_lv(new_id);
        let tags = Self::tags("volume", new_id);
        if let Some(done) = self.owned(&target, &tags[1]).ok().flatten() {
            return Ok(done.size); // renamed and tagged by an earlier run of this job
        }
        let lv = self.lv(name)?.ok_or_else(|| PoolError::NotFound { what: self.full(name) })?;
        if lv.is_snapshot() || lv.is_internal() {
            return Err(PoolError::Refused(format!("{}/{name} is not a plain logical volume", self.vg)));
        }
        if name != target {
            self.lvm(&["lvrename", &self.vg, name, &target])?;
        }
        let mut args = vec!["lvchange"];
        for tag in &tags {
            args.extend(["--addtag", tag.as_str()]);
        }
        let full = self.full(&target);
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
            let tags = Self::tags("volume", id);
            self.lvm(&["lvchange", "--deltag", &tags[0], "--deltag", &tags[1], &self.full(&lv)])?;
        }
        Ok(())
    }

    fn attach_device(&self, id: &str) -> Result<PathBuf, PoolError> {
        let lv = volume_lv(id);
        self.owned(&lv, &format!("ember.volume={id}"))?.ok_or_else(|| PoolError::NotFound { what: self.full(&lv) })?;
        self.activate(&lv)?;
        Ok(self.device(&lv))
    }

    fn detach_device(&self, _id: &str) -> Result<Removed, PoolError> {
        // LVs stay active; there is nothing bound to release.
        Ok(Removed::Absent)
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
            {"lv_name":"ember-pool", "lv_size":"4294967296", "lv_attr":"twi-aotz--", "lv_tags":"", "origin":""},
            {"lv_name":"[ember-pool_tdata]", "lv_size":"4294967296", "lv_attr":"Twi-ao----", "lv_tags":"", "origin":""}
        ]}]}"#;
        let parse =
            |json| report_rows(json, "lv").and_then(|rows| rows.iter().map(lv_from_row).collect::<Result<Vec<_>, _>>());
        let lvs = parse(json).unwrap();
        assert_eq!(lvs.len(), 4);
        assert!(lvs[0].has_tag("ember.volume=1") && lvs[0].is_open() && !lvs[0].is_snapshot());
        assert!(lvs[1].is_snapshot() && !lvs[1].is_open());
        assert!(lvs[2].is_internal() && lvs[3].is_internal());
        assert!(parse("{}").is_err());
        assert!(parse(r#"{"report":[{"lv":[{"lv_name":"x","lv_size":"12b"}]}]}"#).is_err());
    }

    #[test]
    fn percentages_without_floats() {
        assert_eq!(percent_hundredths("12.34"), 1234);
        assert_eq!(percent_hundredths("0.5"), 50);
        assert_eq!(percent_hundredths("100.00"), 10000);
        assert_eq!(percent_hundredths("7"), 700);
        assert_eq!(percent_hundredths(""), 0);
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
