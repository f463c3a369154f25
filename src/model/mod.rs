//! The domain vocabulary every other module speaks: volumes, snapshots, volume
//! types, attachments, jobs and user messages, with the status sets of spec §2.1.
//! Depends on nothing but std and serde.

mod export;
mod group;
mod job;
mod message;
mod qos;
mod snapshot;
mod transfer;
mod volume;

pub use export::*;
pub use group::*;
pub use job::*;
pub use message::*;
pub use qos::*;
pub use snapshot::*;
pub use transfer::*;
pub use volume::*;

/// An enum whose variants are the strings Cinder stores and shows: `as_str`,
/// `FromStr` (the exact string, nothing else), `Display` and `ALL`.
macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!("unknown {} '{}'", stringify!($name), other)),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
pub(crate) use string_enum;

/// Current time as Cinder shows it: ISO 8601, microseconds, no zone (UTC).
pub fn now() -> String {
    timestamp(std::time::SystemTime::now())
}

/// `at` in Cinder's form (see `now`).
pub fn timestamp(at: std::time::SystemTime) -> String {
    let since = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = i64::try_from(days).unwrap_or(0) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_micros()
    )
}

/// The time an ISO 8601 UTC timestamp names: Cinder's form above, or
/// Keystone's (`2026-12-05T08:20:54.000000Z`); offsets other than `Z`/`+00:00`
/// are refused.
pub fn parse_timestamp(text: &str) -> Option<std::time::SystemTime> {
    let t = text.strip_suffix('Z').or_else(|| text.strip_suffix("+00:00")).unwrap_or(text);
    let (date, time) = t.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, fraction) = time.split_once('.').unwrap_or((time, ""));
    let mut h = hms.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (hour, minute, second) = (h.next()??, h.next()??, h.next()??);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let micros = match fraction {
        "" => 0,
        f if f.len() <= 9 && f.bytes().all(|b| b.is_ascii_digit()) => format!("{f:0<6}")[..6].parse::<u64>().ok()?,
        _ => return None,
    };
    // Days since 1970-01-01 from the civil date (the inverse of `timestamp`'s).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = u64::try_from(days * 86_400 + hour * 3600 + minute * 60 + second).ok()?;
    Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs) + std::time::Duration::from_micros(micros))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_back() {
        let epoch = std::time::UNIX_EPOCH + std::time::Duration::from_secs(951_782_400);
        assert_eq!(parse_timestamp("2000-02-29T00:00:00.000000"), Some(epoch));
        assert_eq!(parse_timestamp("2000-02-29T00:00:00Z"), Some(epoch));
        let now = std::time::SystemTime::now();
        let back = parse_timestamp(&format!("{}Z", timestamp(now))).unwrap();
        assert_eq!(timestamp(back), timestamp(now));
        for bad in ["", "2000-02-29", "2000-13-01T00:00:00Z", "2000-02-29T00:00:00+02:00", "2000-02-29T00:00:00.x"] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
    }

    #[test]
    fn timestamps_look_like_cinder() {
        let t = now();
        assert_eq!(t.len(), 26, "{t}");
        assert_eq!(&t[4..5], "-");
        assert_eq!(&t[10..11], "T");
        assert_eq!(&t[19..20], ".");
        let epoch = std::time::UNIX_EPOCH + std::time::Duration::from_secs(951_782_400);
        assert_eq!(timestamp(epoch), "2000-02-29T00:00:00.000000");
    }
}
