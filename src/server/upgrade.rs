//! Binary upgrade without dropping connections (nginx's USR2, HAProxy's socket transfer): on
//! SIGUSR2 ringlb starts the binary at the path it was started from (the new file, when
//! the package manager replaced it), with the same arguments, passing every listening socket
//! (each core's socket of each listener, and the admin listener's) and the write end of a pipe.
//! The new process takes the sockets whose `listen` address its config still has, binds the
//! others, and once every worker runs writes `ready PID` to the pipe (and, under systemd, says
//! `MAINPID=` and `READY=1`). Then this process stops accepting and finishes its requests as
//! on SIGTERM, and exits. If the new process exits, or is not ready within [`READY_WITHIN`],
//! it is stopped (SIGKILL) and this process keeps serving, saying why.
//!
//! Why no connection is lost: with SO_REUSEPORT the kernel puts each new connection in the
//! accept queue of one socket of the listener's group, and the connection is lost only if
//! that socket closes with it still queued. Every socket of the group is passed on and kept
//! open by the new process, which accepts on all of them (a core may serve several when the
//! old process had more cores; more are bound when it had fewer). So no socket of the group
//! ever closes: from the fork on, both processes accept from the same queues, each connection
//! once, and when the old process stops accepting (drops its descriptors) the queues stay,
//! served by the new one. What the old process had already accepted it serves before it
//! exits (on the io_uring engine the multishot accept is cancelled in the same submission
//! that drops the listener, and with DEFER_TASKRUN the cancel runs before any further accept
//! completes). The other direction holds too: until the new process is ready, the old one
//! accepts as before, so a new process that fails costs nothing.
//!
//! Both processes must run the same engine: io_uring keeps a listening socket blocking and
//! epoll needs it nonblocking, and that flag belongs to the socket, not to one process's
//! descriptor. A new process whose engine would differ refuses to start (restart instead).

use super::listeners::{Listening, INHERIT_ENV};
use super::RunError;
use crate::engine::EngineKind;
use crate::state::Event;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc::Sender;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// How long the new process may take to have every worker running.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// `FD ENGINE PID` for the new process: its end of the pipe, the engine of the old process,
/// and the old process's pid.
const UPGRADE_ENV: &str = "RINGLB_UPGRADE";

static BINARY: OnceLock<Option<PathBuf>> = OnceLock::new();

/// Notes the path of the running binary, at start: `/proc/self/exe` names the file that was
/// executed, which an upgrade replaces; the path is where the new one will be.
pub(super) fn remember_binary() {
    BINARY.get_or_init(|| std::env::current_exe().ok());
}

/// A binary upgrade under way: the thread waiting for the new process.
pub(super) struct Pending {
    cancel: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Pending {
    /// This process stops before the new one is ready: the new one is stopped too.
    pub(super) fn cancel(self) {
        self.cancel.store(true, Relaxed);
        let _ = self.thread.join();
    }
}

/// Starts the new process with `listening`'s sockets; its outcome comes as
/// [`Event::Upgraded`].
pub(super) fn start(
    listening: &Listening,
    engine: EngineKind,
    events: Sender<Event>,
) -> Result<Pending, String> {
    let binary = BINARY
        .get()
        .cloned()
        .flatten()
        .ok_or("the path of the running binary is unknown")?;
    let (inherit, mut fds) = listening.to_inherit();
    let (read, write) = pipe().map_err(|e| format!("cannot create a pipe: {e}"))?;
    fds.push(write.as_raw_fd());
    let mut cmd = Command::new(&binary);
    cmd.args(std::env::args_os().skip(1))
        .env(INHERIT_ENV, inherit)
        .env(
            UPGRADE_ENV,
            format!(
                "{} {} {}",
                write.as_raw_fd(),
                engine.name(),
                std::process::id()
            ),
        )
        // The new process pings the watchdog once it is the main process.
        .env_remove("WATCHDOG_PID");
    // SAFETY: runs in the child between fork and exec, where only async-signal-safe calls
    // are allowed: fcntl is one, and `fds` was allocated before the fork.
    unsafe {
        cmd.pre_exec(move || {
            for &fd in &fds {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        })
    };
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
    // Our copy of the write end closes, so the pipe ends when the new process exits.
    drop(write);
    log::info!(
        "SIGUSR2: binary upgrade: started {} as process {}; serving until it is ready",
        binary.display(),
        child.id()
    );
    let cancel = Arc::new(AtomicBool::new(false));
    let thread = std::thread::Builder::new()
        .name("ringlb-upgrade".into())
        .spawn({
            let cancel = cancel.clone();
            move || {
                if let Some(outcome) = wait_ready(read, child, &cancel) {
                    let _ = events.send(Event::Upgraded(outcome));
                }
            }
        })
        .map_err(|e| format!("cannot start a thread: {e}"))?;
    Ok(Pending { cancel, thread })
}

/// Waits for `ready PID` on `read`. A new process that does not get there is stopped and
/// reaped. None: cancelled.
fn wait_ready(read: OwnedFd, mut child: Child, cancel: &AtomicBool) -> Option<Result<u32, String>> {
    let deadline = Instant::now() + READY_WITHIN;
    let mut pipe = std::fs::File::from(read);
    let mut said = Vec::new();
    let failed = loop {
        if cancel.load(Relaxed) {
            stop(&mut child);
            log::warn!("binary upgrade cancelled: process {} stopped", child.id());
            return None;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break format!("it was not ready within {}s", READY_WITHIN.as_secs());
        }
        if !readable(&pipe, left.min(Duration::from_millis(100))) {
            continue;
        }
        let mut buf = [0u8; 64];
        match pipe.read(&mut buf) {
            Ok(0) => break "it ended before it was ready".to_string(),
            Ok(n) => said.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => break format!("cannot read its pipe: {e}"),
        }
        if said.len() > 64 {
            break "it wrote garbage on its pipe".to_string();
        }
        if let Some(line) = said.strip_suffix(b"\n") {
            match std::str::from_utf8(line)
                .ok()
                .and_then(|l| l.strip_prefix("ready "))
                .and_then(|pid| pid.parse().ok())
            {
                Some(pid) => return Some(Ok(pid)),
                None => break "it wrote garbage on its pipe".to_string(),
            }
        }
    };
    let pid = child.id();
    let status = stop(&mut child);
    Some(Err(format!(
        "the new process {pid} failed ({failed}; {status})"
    )))
}

/// Stops `child` unless it ended by itself (waiting a moment for that), and reaps it.
fn stop(child: &mut Child) -> String {
    let until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < until {
        if let Ok(Some(status)) = child.try_wait() {
            return status.to_string();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    match child.wait() {
        Ok(status) => format!("stopped: {status}"),
        Err(e) => format!("stopped: {e}"),
    }
}

/// Whether `f` has something to read (or its end) within `limit`.
fn readable(f: &impl AsRawFd, limit: Duration) -> bool {
    let mut p = libc::pollfd {
        fd: f.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll reads and writes the one pollfd it is given.
    let n = unsafe { libc::poll(&mut p, 1, limit.as_millis() as libc::c_int) };
    n > 0
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two descriptors into the array it is given.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded: both descriptors are open and ours alone.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// In the new process of a binary upgrade: the process it replaces.
pub(super) struct Parent {
    ready: std::fs::File,
    engine: String,
    pid: u32,
}

impl Parent {
    /// None when this process was not started by a binary upgrade.
    pub(super) fn from_env() -> Option<Parent> {
        let text = std::env::var(UPGRADE_ENV).ok()?;
        let mut words = text.split(' ');
        let fd = words.next()?.parse::<RawFd>().ok();
        let (engine, pid) = (words.next()?.to_string(), words.next()?.parse().ok()?);
        let Some(ready) = fd.and_then(adopt_pipe) else {
            log::warn!("{UPGRADE_ENV}: {text:?} names no pipe; ignored");
            return None;
        };
        log::info!("binary upgrade: taking over from process {pid}");
        Some(Parent { ready, engine, pid })
    }

    /// Refuses an engine other than the old process's (see the module doc).
    pub(super) fn check_engine(&self, engine: EngineKind) -> Result<(), RunError> {
        if engine.name() == self.engine {
            return Ok(());
        }
        Err(RunError::Upgrade(format!(
            "process {} runs the {} engine and this one would run {}: the listening sockets \
             cannot serve both; restart ringlb to change the engine",
            self.pid,
            self.engine,
            engine.name()
        )))
    }

    /// Every worker runs: the old process may stop accepting.
    pub(super) fn ready(mut self) {
        use std::io::Write;
        let line = format!("ready {}\n", std::process::id());
        if let Err(e) = self.ready.write_all(line.as_bytes()) {
            log::warn!("binary upgrade: cannot tell process {}: {e}", self.pid);
        }
    }
}

/// Takes `fd` when it is a pipe, close-on-exec again.
fn adopt_pipe(fd: RawFd) -> Option<std::fs::File> {
    if fd <= 2 {
        return None;
    }
    // SAFETY: all-zero is a valid `stat`; fstat fills it or fails on a closed descriptor.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes one `stat` into the valid pointer it is given.
    if unsafe { libc::fstat(fd, &mut st) } != 0 || st.st_mode & libc::S_IFMT != libc::S_IFIFO {
        return None;
    }
    // SAFETY: `fd` is an open pipe the old process passed to this one for this purpose only;
    // nothing else in this process owns it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: fcntl on the descriptor we now own.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    Some(owned.into())
}
