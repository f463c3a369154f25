//! The process's log output and its levels, changeable while it runs
//! (`os-services/set-log` at 3.32, as Cinder's dynamic log levels): the
//! directives of `EMBER_LOG` (default `info`) are the starting point; a set
//! replaces the level of every logger under a prefix. Loggers are tracing
//! targets, `ember::manager::jobs`; a prefix may use dots too (`ember.manager`),
//! as Cinder's Python logger names do.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

use tracing::level_filters::LevelFilter;
use tracing_subscriber::prelude::*;
use tracing_subscriber::{EnvFilter, Registry, reload};

/// The loggers `get-log` reports (with any prefix set since), each a module.
const LOGGERS: &[&str] = &[
    "ember",
    "ember::api",
    "ember::blockdev",
    "ember::http",
    "ember::manager",
    "ember::pool",
    "ember::server",
    "ember::store",
    "ember::target",
];

/// Cinder's `LOG_LEVELS`, the names a set accepts (in any case).
const LEVELS: &[(&str, LevelFilter)] = &[
    ("DEBUG", LevelFilter::DEBUG),
    ("INFO", LevelFilter::INFO),
    ("WARNING", LevelFilter::WARN),
    ("ERROR", LevelFilter::ERROR),
];

struct Levels {
    /// Every target not named below.
    root: LevelFilter,
    /// target → level (longest matching prefix wins, as EnvFilter chooses).
    targets: BTreeMap<String, LevelFilter>,
}

impl Levels {
    fn parse(directives: &str) -> Levels {
        let mut levels = Levels { root: LevelFilter::INFO, targets: BTreeMap::new() };
        for d in directives.split(',').map(str::trim).filter(|d| !d.is_empty()) {
            match d.split_once('=') {
                Some((target, level)) => {
                    if let Ok(level) = level.parse() {
                        levels.targets.insert(target.to_string(), level);
                    }
                }
                None => levels.root = d.parse().unwrap_or(LevelFilter::INFO),
            }
        }
        levels
    }

    fn directives(&self) -> String {
        let mut out = vec![self.root.to_string()];
        out.extend(self.targets.iter().map(|(t, l)| format!("{t}={l}")));
        out.join(",")
    }

    fn effective(&self, logger: &str) -> LevelFilter {
        let under = |t: &str| logger == t || logger.starts_with(&format!("{t}::"));
        self.targets.iter().filter(|(t, _)| under(t)).max_by_key(|(t, _)| t.len()).map_or(self.root, |(_, l)| *l)
    }
}

struct Control {
    handle: Option<reload::Handle<EnvFilter, Registry>>,
    levels: Mutex<Levels>,
}

static CONTROL: OnceLock<Control> = OnceLock::new();

fn control() -> &'static Control {
    CONTROL.get_or_init(|| Control { handle: None, levels: Mutex::new(Levels::parse("info")) })
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    /// One JSON object a line: timestamp, level, target, the fields (request
    /// id, volume, job, action) and the spans they happened in.
    Json,
}

impl Format {
    /// JSON when stderr is systemd's journal (it sets JOURNAL_STREAM), so the
    /// fields stay fields; text otherwise.
    pub fn detect() -> Format {
        if std::env::var_os("JOURNAL_STREAM").is_some() { Format::Json } else { Format::Text }
    }
}

/// Installs the process's subscriber (stderr; colours on a terminal).
pub fn init(format: Format) {
    let levels = Levels::parse(&std::env::var("EMBER_LOG").unwrap_or_else(|_| "info".to_string()));
    let (filter, handle) = reload::Layer::new(EnvFilter::new(levels.directives()));
    let text = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let output = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let output = match format {
        Format::Text => output.with_ansi(text).boxed(),
        Format::Json => output.json().with_current_span(true).with_span_list(false).boxed(),
    };
    tracing_subscriber::registry().with(filter).with(output).init();
    let _ = CONTROL.set(Control { handle: Some(handle), levels: Mutex::new(levels) });
}

fn normalize(prefix: Option<&str>) -> String {
    prefix.unwrap_or_default().trim().replace('.', "::")
}

/// Cinder's `get_log_method`: the level a name stands for, or why not.
pub fn parse_level(name: &str) -> Result<LevelFilter, String> {
    LEVELS
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, l)| *l)
        .ok_or_else(|| format!("Invalid input received: {name} is not a valid log level."))
}

fn level_name(level: LevelFilter) -> &'static str {
    match level {
        LevelFilter::TRACE | LevelFilter::DEBUG => "DEBUG",
        LevelFilter::INFO => "INFO",
        LevelFilter::WARN => "WARNING",
        LevelFilter::ERROR => "ERROR",
        _ => "CRITICAL",
    }
}

/// Every logger whose name starts with `prefix`, with its level's name.
pub fn levels(prefix: Option<&str>) -> BTreeMap<String, String> {
    let prefix = normalize(prefix);
    let levels = control().levels.lock().unwrap_or_else(|p| p.into_inner());
    let names = LOGGERS.iter().map(|l| l.to_string()).chain(levels.targets.keys().cloned());
    names
        .filter(|n| n.starts_with(&prefix))
        .map(|n| {
            let level = level_name(levels.effective(&n)).to_string();
            (n, level)
        })
        .collect()
}

/// Sets every logger under `prefix` (all of them without one) to `level`.
pub fn set_level(prefix: Option<&str>, level: LevelFilter) -> Result<(), String> {
    let prefix = normalize(prefix);
    let c = control();
    let mut levels = c.levels.lock().unwrap_or_else(|p| p.into_inner());
    levels.targets.retain(|t, _| !t.starts_with(&prefix));
    match prefix.is_empty() {
        true => levels.root = level,
        false => {
            levels.targets.insert(prefix.clone(), level);
            // Loggers that start with the prefix but are not under it as a
            // module path (`ember::ap` for `ember::api`) get it too, as Cinder's
            // string match gives it.
            for logger in LOGGERS.iter().filter(|l| l.starts_with(&prefix) && **l != prefix) {
                levels.targets.insert(logger.to_string(), level);
            }
        }
    }
    match &c.handle {
        Some(handle) => handle.reload(EnvFilter::new(levels.directives())).map_err(|e| e.to_string()),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_prefix_decides_and_a_set_replaces_what_is_under_it() {
        let mut l = Levels::parse("warn,ember::manager=debug,ember::manager::jobs=error");
        assert_eq!(l.effective("ember::api"), LevelFilter::WARN);
        assert_eq!(l.effective("ember::manager::locks"), LevelFilter::DEBUG);
        assert_eq!(l.effective("ember::manager::jobs"), LevelFilter::ERROR);
        assert_eq!(l.effective("ember::managerx"), LevelFilter::WARN, "a module path, not a string prefix");
        l.targets.retain(|t, _| !t.starts_with("ember::manager"));
        assert_eq!(l.directives(), "warn");
        assert_eq!(parse_level("warning"), Ok(LevelFilter::WARN));
        assert!(parse_level("trace").is_err(), "Cinder's four names only");
    }
}
