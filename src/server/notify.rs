//! systemd's readiness protocol (sd_notify(3)): one datagram per state change to the socket
//! named by `NOTIFY_SOCKET`, so a `Type=notify-reload` unit knows when ringlb serves, when a
//! reload starts and ends, and when it stops; and watchdog pings when the unit sets
//! `WatchdogSec=`.
//!
//! Written on std's `UnixDatagram` rather than with a crate: the protocol is one `sendto` of
//! `KEY=VALUE` lines (a path, or `@` for an abstract socket), and the only other thing needed,
//! CLOCK_MONOTONIC for `MONOTONIC_USEC`, is one libc call. Without `NOTIFY_SOCKET` (not under
//! systemd) every function does nothing. All of it runs on the control thread or the watchdog
//! thread; nothing here is on the request path.

use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::Duration;

/// Worker count for `STATUS=`, set once when serving.
static WORKERS: AtomicUsize = AtomicUsize::new(0);

fn socket() -> Option<&'static (UnixDatagram, std::os::unix::net::SocketAddr)> {
    static SOCKET: OnceLock<Option<(UnixDatagram, std::os::unix::net::SocketAddr)>> =
        OnceLock::new();
    SOCKET
        .get_or_init(|| {
            let name = std::env::var_os("NOTIFY_SOCKET")?;
            let addr = address(name.as_encoded_bytes())?;
            let sock = UnixDatagram::unbound().ok()?;
            Some((sock, addr))
        })
        .as_ref()
}

fn address(name: &[u8]) -> Option<std::os::unix::net::SocketAddr> {
    use std::os::unix::ffi::OsStrExt;
    match name.split_first() {
        Some((b'@', abstract_name)) => {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(abstract_name).ok()
        }
        Some((b'/', _)) => {
            std::os::unix::net::SocketAddr::from_pathname(std::ffi::OsStr::from_bytes(name)).ok()
        }
        _ => None,
    }
}

/// Sends `state` (newline-separated `KEY=VALUE` lines). A failure is logged at debug: the
/// service manager not listening is no reason to stop serving.
fn send(state: &str) {
    if let Some((sock, addr)) = socket() {
        if let Err(e) = sock.send_to_addr(state.as_bytes(), addr) {
            log::debug!("sd_notify {state:?}: {e}");
        }
    }
}

fn status(generation: u64, note: &str) -> String {
    format!(
        "STATUS=serving generation {generation}, {} workers{note}",
        WORKERS.load(Relaxed)
    )
}

/// Every worker runs: `READY=1`, and the watchdog starts if the unit asked for one. The new
/// process of a binary upgrade (`upgraded`) says `MAINPID=` first: systemd follows it from
/// then on (the unit needs `NotifyAccess=all` for that), and the old process's exit is no
/// longer the service's.
pub fn ready(workers: usize, generation: u64, upgraded: bool) {
    WORKERS.store(workers, Relaxed);
    let main_pid = if upgraded {
        format!("MAINPID={}\n", std::process::id())
    } else {
        String::new()
    };
    send(&format!("{main_pid}READY=1\n{}", status(generation, "")));
    start_watchdog();
}

/// A reload starts: `RELOADING=1` with the CLOCK_MONOTONIC time, which `Type=notify-reload`
/// requires so it can tell this reload from an earlier one.
pub fn reloading() {
    send(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
}

/// A reload ended, applied or refused: ready again.
pub fn reloaded(generation: u64, refused: bool) {
    let note = if refused {
        " (last reload refused, see the log)"
    } else {
        ""
    };
    send(&format!("READY=1\n{}", status(generation, note)));
}

/// The graceful stop begins.
pub fn stopping() {
    send("STOPPING=1\nSTATUS=stopping: finishing in-flight requests");
}

fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec to the valid pointer it is given.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64) * 1_000_000 + (ts.tv_nsec as u64) / 1_000
}

/// The watchdog period systemd asked for (`WATCHDOG_USEC`), if it is meant for this process
/// (`WATCHDOG_PID`, when set, is our pid).
fn watchdog_period() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.trim().parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// `WATCHDOG=1` every half period from a small thread of its own, as sd_watchdog_enabled(3)
/// advises, so a slow reload on the control thread does not get the process killed. It runs
/// until the process exits.
fn start_watchdog() {
    static STARTED: OnceLock<()> = OnceLock::new();
    let Some(period) = watchdog_period() else {
        return;
    };
    if socket().is_none() || STARTED.set(()).is_err() {
        return;
    }
    let every = (period / 2).max(Duration::from_millis(10));
    let spawned = std::thread::Builder::new()
        .name("ringlb-watchdog".into())
        .spawn(move || loop {
            send("WATCHDOG=1");
            std::thread::sleep(every);
        });
    if let Err(e) = spawned {
        log::warn!("cannot start the watchdog thread: {e}; systemd may restart ringlb");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert!(address(b"/run/systemd/notify").is_some());
        assert!(address(b"@abstract").is_some());
        assert!(address(b"relative").is_none());
        assert!(address(b"").is_none());
    }

    #[test]
    fn the_monotonic_clock_moves() {
        let a = monotonic_usec();
        std::thread::sleep(Duration::from_millis(2));
        assert!(monotonic_usec() > a && a > 0);
    }
}
