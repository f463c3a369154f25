//! systemd's notification protocol (`sd_notify(3)`), for `Type=notify` units:
//! `READY=1` once the API serves and the first export reconciliation is done,
//! `WATCHDOG=1` at half the unit's `WatchdogSec` while the runtime runs,
//! `STOPPING=1` at shutdown. Without `NOTIFY_SOCKET` (not under systemd) nothing
//! is sent.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Sends `state` (`READY=1`, …) to the service manager, if there is one.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let sent = UnixDatagram::unbound().and_then(|socket| {
        let bytes = path.as_encoded_bytes();
        match bytes.strip_prefix(b"@") {
            // An abstract socket (systemd's default in containers).
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                socket.send_to_addr(state.as_bytes(), &addr)
            }
            None => socket.send_to(state.as_bytes(), &path),
        }
    });
    if let Err(e) = sent {
        tracing::warn!(error = %e, state, "could not notify the service manager");
    }
}

/// How often to send `WATCHDOG=1`: half the unit's interval, if the watchdog is
/// this process's (`WATCHDOG_PID` unset or ours).
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    let ours = std::env::var("WATCHDOG_PID").ok().is_none_or(|pid| pid == std::process::id().to_string());
    (ours && usec > 0).then(|| Duration::from_micros(usec / 2))
}
