//! The access log: one line per exchange, buffered per core.
//!
//! Each core appends lines to its own buffer (no lock, no syscall per request) and writes the
//! buffer out when it passes [`FLUSH_AT`] bytes, and every second from a timer task
//! ([`Log::tick`]), so a quiet core's lines still appear within a second. Writes are blocking
//! `write(2)`s of whole lines to a file opened with `O_APPEND` (one per core, same path): each
//! write lands at the end of the file as a unit, so lines from different cores never interleave
//! within a line. A buffer that cannot be written is dropped and counted
//! (`ringlb_access_log_write_errors_total`) rather than held: memory stays bounded when the
//! disk is full.
//!
//! Log rotation (logrotate `postrotate kill -USR1`): SIGUSR1 bumps `Life::log_reopen`; each
//! core, at its next tick, writes what it buffered to the old file and reopens the path.
//!
//! The facts of an exchange are gathered in [`Exchange`] (`exchange.rs`), which feeds both the
//! counters and this log. Formats are in `format.rs`. Runs on the owning core.
//!
//! Uses `config`, `http1` and `metrics`.

mod exchange;
mod format;

pub use exchange::{Exchange, CLIENT_CLOSED, MAX_ID};

use crate::config::{AccessLog, Config, LogFormat, LogTarget};
use crate::metrics::Registry;
use std::cell::{Cell, RefCell};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::time::Duration;

/// A buffer larger than this is written out at once.
pub const FLUSH_AT: usize = 64 << 10;
/// How often a core writes out what it buffered (and checks for a reopen).
pub const TICK: Duration = Duration::from_secs(1);

enum Output {
    Stdout,
    Stderr,
    File(File),
}

impl Output {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Output::Stdout => io::stdout().lock().write_all(buf),
            Output::Stderr => io::stderr().lock().write_all(buf),
            Output::File(f) => f.write_all(buf),
        }
    }
}

/// Opens the access log target: a file is created if missing and appended to.
fn open(target: &LogTarget) -> io::Result<Output> {
    Ok(match target {
        LogTarget::Stdout => Output::Stdout,
        LogTarget::Stderr => Output::Stderr,
        LogTarget::File(path) => {
            Output::File(OpenOptions::new().create(true).append(true).open(path)?)
        }
    })
}

/// Checks at startup that the access log can be opened, so a bad path is a startup error
/// naming the file rather than lost lines.
pub fn check(config: &AccessLog) -> io::Result<()> {
    if config.format != LogFormat::Off {
        open(&config.target)?;
    }
    Ok(())
}

/// One core's access log.
pub struct Log {
    format: LogFormat,
    target: LogTarget,
    buf: RefCell<Vec<u8>>,
    /// The current second's date, formatted once for all its lines.
    dates: RefCell<format::Dates>,
    out: RefCell<Option<Output>>,
    /// The reopen generation this core's `out` was opened at.
    generation: Cell<u64>,
    /// Generated request ids: `{start:08x}{core:04x}{seq:012x}`; `prefix` is the first part.
    prefix: [u8; 12],
    seq: Cell<u64>,
    /// The last write failed (log the next failure only after a success).
    failing: Cell<bool>,
    /// Senders whose request id is adopted.
    request_id_from: Vec<ipnet::IpNet>,
}

impl Log {
    /// Runs on the core that will own it; `start_secs`: process start, Unix seconds.
    pub fn new(config: &AccessLog, core: usize, start_secs: u64, generation: u64) -> Log {
        let on = config.format != LogFormat::Off;
        let out = if on {
            match open(&config.target) {
                Ok(o) => Some(o),
                Err(e) => {
                    log::error!("worker {core}: cannot open the access log: {e}");
                    None
                }
            }
        } else {
            None
        };
        let mut prefix = [0u8; 12];
        hex(&mut prefix[..8], start_secs);
        hex(&mut prefix[8..], core as u64);
        Log {
            format: config.format,
            target: config.target.clone(),
            buf: RefCell::new(if on {
                Vec::with_capacity(FLUSH_AT + 4096)
            } else {
                Vec::new()
            }),
            dates: RefCell::default(),
            out: RefCell::new(out),
            generation: Cell::new(generation),
            prefix,
            seq: Cell::new(0),
            failing: Cell::new(false),
            request_id_from: config.request_id_from.clone(),
        }
    }

    /// Whether a request id sent by `ip` is adopted (`access_log.request_id_from`).
    pub fn trusts_request_id(&self, ip: std::net::IpAddr) -> bool {
        self.request_id_from.iter().any(|n| n.contains(&ip))
    }

    pub fn enabled(&self) -> bool {
        self.format != LogFormat::Off
    }

    /// Writes a new request id into `out` and returns its length: unique per process (core
    /// and per-core sequence) and across restarts (start time).
    pub fn generate_id(&self, out: &mut [u8]) -> usize {
        let seq = self.seq.get().wrapping_add(1);
        self.seq.set(seq);
        const LEN: usize = 24;
        if out.len() < LEN {
            return 0;
        }
        out[..12].copy_from_slice(&self.prefix);
        hex(&mut out[12..LEN], seq);
        LEN
    }

    /// Appends the line for the finished exchange `x`; writes the buffer out when it is full.
    pub fn write(&self, x: &Exchange, config: &Config, metrics: &Registry) {
        let full = {
            let mut buf = self.buf.borrow_mut();
            let mut dates = self.dates.borrow_mut();
            match self.format {
                LogFormat::Off => return,
                LogFormat::Common => format::common(&mut buf, &mut dates, x, config),
                LogFormat::Json => format::json(&mut buf, &mut dates, x, config),
            }
            buf.len() >= FLUSH_AT
        };
        if full {
            self.flush(metrics);
        }
    }

    /// Writes out what is buffered. A blocking write: called once per [`FLUSH_AT`] bytes or
    /// per [`TICK`], never per request.
    pub fn flush(&self, metrics: &Registry) {
        let mut buf = self.buf.borrow_mut();
        if buf.is_empty() {
            return;
        }
        let r = match &mut *self.out.borrow_mut() {
            Some(out) => out.write_all(&buf),
            None => Err(io::Error::other("not open")),
        };
        match r {
            Ok(()) => self.failing.set(false),
            Err(e) => {
                metrics.access_log_error();
                if !self.failing.replace(true) {
                    log::error!(
                        "cannot write the access log ({}): {e}; dropping lines until it works",
                        describe(&self.target)
                    );
                }
            }
        }
        buf.clear();
    }

    /// The timer: write out the buffer, then reopen the file if SIGUSR1 asked for it (or if
    /// it could not be opened before).
    pub fn tick(&self, metrics: &Registry, reopen: u64) {
        if !self.enabled() {
            return;
        }
        self.flush(metrics);
        let generation = reopen;
        let missing = self.out.borrow().is_none();
        if generation != self.generation.get() || missing {
            self.generation.set(generation);
            match open(&self.target) {
                Ok(o) => *self.out.borrow_mut() = Some(o),
                Err(e) => {
                    if !self.failing.replace(true) {
                        log::error!(
                            "cannot reopen the access log ({}): {e}",
                            describe(&self.target)
                        );
                    }
                    *self.out.borrow_mut() = None;
                }
            }
        }
    }
}

/// The target as the operator wrote it.
pub fn describe(t: &LogTarget) -> String {
    match t {
        LogTarget::Stdout => "stdout".into(),
        LogTarget::Stderr => "stderr".into(),
        LogTarget::File(p) => p.display().to_string(),
    }
}

/// The low `4 * out.len()` bits of `v` as lowercase hex, filling `out`.
fn hex(out: &mut [u8], mut v: u64) {
    for b in out.iter_mut().rev() {
        *b = b"0123456789abcdef"[(v & 0xf) as usize];
        v >>= 4;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_distinct_hex() {
        let config = AccessLog {
            format: LogFormat::Json,
            target: LogTarget::Stderr,
            request_id_header: b"x-request-id".to_vec().into(),
            request_id_from: Vec::new(),
        };
        let log = Log::new(&config, 3, 0x65f1_c0de, 0);
        let mut a = [0u8; 64];
        let mut b = [0u8; 64];
        let n = log.generate_id(&mut a);
        assert_eq!(n, 24);
        assert_eq!(&a[..n], b"65f1c0de0003000000000001");
        log.generate_id(&mut b);
        assert_eq!(&b[..n], b"65f1c0de0003000000000002");
    }
}
