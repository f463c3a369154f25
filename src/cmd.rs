//! The one runner for external programs: absolute paths resolved once, `LC_ALL=C`,
//! a timeout that kills the child, and errors that carry argv, status and stderr.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum CmdError {
    #[error("{program} not found in /usr/sbin, /usr/bin, /sbin or /bin")]
    NotFound { program: String },
    #[error("could not start {argv:?}: {source}")]
    Spawn {
        argv: Vec<String>,
        #[source]
        source: std::io::Error,
    },
    #[error("{argv:?} timed out after {timeout:?} and was killed")]
    Timeout { argv: Vec<String>, timeout: Duration },
    #[error("{argv:?} exited with {status}: {stderr}")]
    Failed { argv: Vec<String>, status: String, stderr: String },
}

/// Finds a program in the system directories (never in the caller's PATH).
pub fn resolve(program: &str) -> Result<PathBuf, CmdError> {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .map(|dir| Path::new(dir).join(program))
        .find(|p| p.is_file())
        .ok_or_else(|| CmdError::NotFound { program: program.to_string() })
}

/// Runs `program args...` and returns its stdout.
pub fn run(program: &Path, args: &[&str], timeout: Duration) -> Result<String, CmdError> {
    run_with_env(program, args, &[], timeout)
}

/// `run` with extra environment variables (e.g. `LVM_SYSTEM_DIR`).
pub fn run_with_env(
    program: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    timeout: Duration,
) -> Result<String, CmdError> {
    run_full(program, args, env, &[], timeout)
}

/// `run` for a command line that carries secrets (a CHAP password): errors, and so
/// logs, show `<redacted>` where any of `secrets` stood.
pub fn run_redacted(program: &Path, args: &[&str], secrets: &[&str], timeout: Duration) -> Result<String, CmdError> {
    run_full(program, args, &[], secrets, timeout)
}

fn run_full(
    program: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    secrets: &[&str],
    timeout: Duration,
) -> Result<String, CmdError> {
    let redact =
        |a: &str| secrets.iter().filter(|s| !s.is_empty()).fold(a.to_string(), |a, s| a.replace(s, "<redacted>"));
    let argv: Vec<String> =
        std::iter::once(program.display().to_string()).chain(args.iter().map(|a| redact(a))).collect();
    let mut child = Command::new(program)
        .args(args)
        .env("LC_ALL", "C")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| CmdError::Spawn { argv: argv.clone(), source })?;
    // Drain both pipes while waiting: a child whose output outgrows the pipe
    // buffer would otherwise block forever and look like a timeout.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(CmdError::Timeout { argv, timeout });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(2)),
            Err(source) => return Err(CmdError::Spawn { argv, source }),
        }
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    if status.success() {
        Ok(String::from_utf8_lossy(&stdout).into_owned())
    } else {
        Err(CmdError::Failed {
            argv,
            status: status.to_string(),
            stderr: redact(String::from_utf8_lossy(&stderr).trim()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_kills_and_reports() {
        let sh = resolve("sh").unwrap();
        assert_eq!(run(&sh, &["-c", "echo $LC_ALL"], Duration::from_secs(5)).unwrap(), "C\n");
        let err = run(&sh, &["-c", "echo oops >&2; exit 3"], Duration::from_secs(5)).unwrap_err();
        assert!(matches!(&err, CmdError::Failed { stderr, .. } if stderr == "oops"), "{err}");
        let err = run(&sh, &["-c", "sleep 5"], Duration::from_millis(100)).unwrap_err();
        assert!(matches!(err, CmdError::Timeout { .. }));
        assert!(matches!(resolve("no-such-program-ember"), Err(CmdError::NotFound { .. })));
        // Output larger than a pipe buffer must not wedge the child.
        let big = run(&sh, &["-c", "head -c 1000000 /dev/zero | tr '\\0' x"], Duration::from_secs(10)).unwrap();
        assert_eq!(big.len(), 1_000_000);
        let env = run_with_env(&sh, &["-c", "echo $EMBER_X"], &[("EMBER_X", "y")], Duration::from_secs(5)).unwrap();
        assert_eq!(env, "y\n");
        let err = run_redacted(
            &sh,
            &["-c", "echo bad s3cr3t >&2; exit 1", "password=s3cr3t"],
            &["s3cr3t"],
            Duration::from_secs(5),
        )
        .unwrap_err()
        .to_string();
        assert!(!err.contains("s3cr3t") && err.contains("password=<redacted>"), "{err}");
    }
}
