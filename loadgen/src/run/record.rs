//! What one core measured: latency histogram, status counts, errors, bytes.
//!
//! Each core owns one `Recorder` (in its `CoreCtx`) and returns it when done; the main thread
//! merges them. Recording is a few additions and one histogram increment: no allocation.

use hdrhistogram::Histogram;

/// Why a request got no response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Connecting (or the TLS handshake) failed or timed out.
    Connect,
    /// No response byte within `--timeout`.
    Timeout,
    /// The connection was reset or closed before the response was complete.
    Reset,
    /// The response was not valid HTTP/1.1.
    Parse,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 4] = [
        ErrorKind::Connect,
        ErrorKind::Timeout,
        ErrorKind::Reset,
        ErrorKind::Parse,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Reset => "reset",
            ErrorKind::Parse => "parse",
        }
    }

    pub fn of(e: &std::io::Error) -> ErrorKind {
        match e.kind() {
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => ErrorKind::Timeout,
            std::io::ErrorKind::InvalidData => ErrorKind::Parse,
            _ => ErrorKind::Reset,
        }
    }
}

/// Status codes are three digits; one counter each.
const STATUSES: usize = 1000;
/// Latencies are recorded in nanoseconds, up to an hour, to 3 significant digits.
const MAX_LATENCY_NS: u64 = 3_600_000_000_000;

pub struct Recorder {
    /// Nanoseconds from intended send to the last byte of the response.
    pub latency: Histogram<u64>,
    pub status: Box<[u64]>,
    pub errors: [u64; 4],
    pub bytes: u64,
    /// Responses, whatever their status.
    pub responses: u64,
    /// Completion time of the last measured response (ns on the run's clock).
    pub last_done: u64,
    /// Latencies of the current interval (`--interval`, `--hdr-log`), handed over and reset
    /// by `take_interval`.
    pub interval: Option<Histogram<u64>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder {
            latency: Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3)
                .expect("static histogram bounds are valid"),
            status: vec![0; STATUSES].into_boxed_slice(),
            errors: [0; 4],
            bytes: 0,
            responses: 0,
            last_done: 0,
            interval: None,
        }
    }

    /// Also keeps a histogram per interval.
    pub fn with_intervals(mut self) -> Recorder {
        self.interval = Some(Histogram::new_from(&self.latency));
        self
    }

    /// The current interval's histogram (then empty again), if intervals are kept.
    pub fn take_interval(&mut self) -> Option<Histogram<u64>> {
        let h = self.interval.as_mut()?;
        let out = h.clone();
        h.reset();
        Some(out)
    }

    pub fn response(&mut self, latency_ns: u64, status: u16, bytes: u64, done: u64) {
        self.latency.saturating_record(latency_ns.max(1));
        if let Some(h) = &mut self.interval {
            h.saturating_record(latency_ns.max(1));
        }
        self.status[usize::from(status) % STATUSES] += 1;
        self.bytes += bytes;
        self.responses += 1;
        self.last_done = self.last_done.max(done);
    }

    pub fn error(&mut self, kind: ErrorKind) {
        self.errors[kind as usize] += 1;
    }

    pub fn merge(&mut self, other: &Recorder) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.latency.add(&other.latency);
        for (a, b) in self.status.iter_mut().zip(other.status.iter()) {
            *a += b;
        }
        for (a, b) in self.errors.iter_mut().zip(other.errors) {
            *a += b;
        }
        self.bytes += other.bytes;
        self.responses += other.responses;
        self.last_done = self.last_done.max(other.last_done);
    }

    pub fn error_total(&self) -> u64 {
        self.errors.iter().sum()
    }

    /// `(status, count)` for every status seen.
    pub fn statuses(&self) -> impl Iterator<Item = (u16, u64)> + '_ {
        self.status
            .iter()
            .enumerate()
            .filter(|(_, &n)| n > 0)
            .map(|(s, &n)| (s as u16, n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_adds_up() {
        let mut a = Recorder::new();
        let mut b = Recorder::new();
        a.response(1_000, 200, 10, 5);
        b.response(2_000_000, 503, 20, 9);
        b.error(ErrorKind::Timeout);
        a.merge(&b);
        assert_eq!(a.responses, 2);
        assert_eq!(a.bytes, 30);
        assert_eq!(a.last_done, 9);
        assert_eq!(a.statuses().collect::<Vec<_>>(), [(200, 1), (503, 1)]);
        assert_eq!(a.errors, [0, 1, 0, 0]);
        assert!(a.latency.max() >= 1_999_000);
    }
}
