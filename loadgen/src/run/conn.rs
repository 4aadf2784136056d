//! One upstream connection slot: issue requests on the plan's timetable, read responses in
//! order, record each one against its intended send time.
//!
//! A slot outlives its TCP connections: when the server closes or a connection fails, the slot
//! reconnects and goes on with the same timetable. Runs on the owning core; takes no lock; the
//! read and write buffers are allocated once per slot.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};

use super::net::Net;
use super::plan::{Load, Plan, Reuse, Stop};
use super::record::{ErrorKind, Recorder};
use super::stream::Stream;
use super::watchdog::{Alarm, Watchdog};
use crate::http::chunked;
use crate::http::response::{self, BodyFraming};

const READ_BUF: usize = 64 * 1024;
/// A response head larger than this is a parse error.
const MAX_HEAD: usize = 1 << 20;
/// Pause after a failed connect, so a dead target is not hammered in a tight loop.
const CONNECT_BACKOFF: Duration = Duration::from_millis(10);

/// The run's clock: nanoseconds since one `Instant` shared by all cores.
#[derive(Clone, Copy)]
pub struct Clock(pub Instant);

impl Clock {
    pub fn now(&self) -> u64 {
        self.0.elapsed().as_nanos() as u64
    }
}

/// The run's phases on its clock.
#[derive(Clone, Copy, Debug)]
pub struct Phases {
    /// First send.
    pub start: u64,
    /// Requests intended from here on are measured.
    pub measure_from: u64,
    /// No request intended at or after this is sent (`Stop::After`).
    pub end: Option<u64>,
}

impl Phases {
    pub fn new(plan: &Plan, start: u64) -> Phases {
        let measure_from = start + plan.warmup.as_nanos() as u64;
        Phases {
            start,
            measure_from,
            end: match plan.stop {
                Stop::After(d) => Some(measure_from + d.as_nanos() as u64),
                Stop::Count(_) => None,
            },
        }
    }
}

/// Per-core state shared by the core's connection slots.
pub struct CoreCtx {
    pub plan: Arc<Plan>,
    pub clock: Clock,
    /// The first send time, set by the main thread once every core has started (0: not yet).
    pub start: Arc<AtomicU64>,
    phases: std::cell::OnceCell<Phases>,
    /// Set on SIGINT: stop issuing, drain, report.
    pub stop: Arc<AtomicBool>,
    pub recorder: RefCell<Recorder>,
    /// The index of the interval being recorded (`--interval`, `--hdr-log`).
    pub interval_index: std::cell::Cell<u64>,
    /// Measured requests finished (answered or failed) on this core, for the progress line.
    pub progress: Arc<[crossbeam_utils::CachePadded<AtomicU64>]>,
    pub core: usize,
    pub watchdog: Rc<Watchdog>,
    pub net: Rc<Net>,
}

impl CoreCtx {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        plan: Arc<Plan>,
        clock: Clock,
        start: Arc<AtomicU64>,
        stop: Arc<AtomicBool>,
        progress: Arc<[crossbeam_utils::CachePadded<AtomicU64>]>,
        core: usize,
        net: Rc<Net>,
    ) -> CoreCtx {
        let recorder = if plan.interval.is_some() {
            Recorder::new().with_intervals()
        } else {
            Recorder::new()
        };
        CoreCtx {
            plan,
            clock,
            start,
            phases: std::cell::OnceCell::new(),
            stop,
            recorder: RefCell::new(recorder),
            interval_index: std::cell::Cell::new(0),
            progress,
            core,
            watchdog: Rc::default(),
            net,
        }
    }

    /// The phases; only called after `wait_start`.
    fn phases(&self) -> Phases {
        *self
            .phases
            .get()
            .expect("phases are known once the run has started")
    }

    /// Waits until the main thread has fixed the start time.
    pub async fn wait_start(&self) -> Phases {
        loop {
            let start = self.start.load(Ordering::Acquire);
            if start != 0 {
                return *self.phases.get_or_init(|| Phases::new(&self.plan, start));
            }
            self.net.sleep_until(self.clock.now() + 1_000_000).await;
        }
    }

    fn measured(&self, intended: u64) -> bool {
        intended >= self.phases().measure_from
    }

    fn finished_one(&self) {
        // Only this core writes its slot: a plain load and store, no read-modify-write.
        let p = &self.progress[self.core];
        p.store(p.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    fn record_response(&self, intended: u64, done: u64, status: u16, bytes: u64) {
        if self.measured(intended) {
            self.recorder
                .borrow_mut()
                .response(done.saturating_sub(intended), status, bytes, done);
            self.finished_one();
        }
    }

    fn record_error(&self, intended: u64, kind: ErrorKind) {
        if self.measured(intended) {
            self.recorder.borrow_mut().error(kind);
            self.finished_one();
        }
    }
}

/// Decides when the slot's next request is due.
struct Issuer {
    /// Open loop: send times are `first + i * period`.
    timetable: Option<(f64, f64)>,
    sent: u64,
    /// `Stop::Count`: measured requests this slot may still send.
    quota: Option<u64>,
}

enum Issue {
    /// Send now; the request was intended for this time.
    Now(u64),
    /// The timetable says not before this time.
    Later(u64),
    Finished,
}

impl Issuer {
    fn new(plan: &Plan, phases: &Phases, slot: u32) -> Issuer {
        let timetable = match plan.load {
            Load::Closed => None,
            Load::Open { rate } => {
                // Slots are staggered so that the sum of all timetables is evenly spaced.
                let gap = 1e9 / rate;
                Some((
                    phases.start as f64 + f64::from(slot) * gap,
                    gap * f64::from(plan.connections),
                ))
            }
        };
        let quota = match plan.stop {
            Stop::Count(n) => Some(plan.quota_of(slot, n)),
            Stop::After(_) => None,
        };
        Issuer {
            timetable,
            sent: 0,
            quota,
        }
    }

    fn next(&mut self, ctx: &CoreCtx, now: u64) -> Issue {
        if ctx.stop.load(Ordering::Relaxed) {
            return Issue::Finished;
        }
        let intended = match self.timetable {
            Some((first, period)) => {
                let t = (first + self.sent as f64 * period) as u64;
                if t > now {
                    return if ctx.phases().end.is_some_and(|end| t >= end) {
                        Issue::Finished
                    } else {
                        Issue::Later(t)
                    };
                }
                t
            }
            None => now,
        };
        if ctx.phases().end.is_some_and(|end| intended >= end) {
            return Issue::Finished;
        }
        if let Some(q) = &mut self.quota {
            if ctx.measured(intended) {
                if *q == 0 {
                    return Issue::Finished;
                }
                *q -= 1;
            }
        }
        self.sent += 1;
        Issue::Now(intended)
    }
}

/// Where the reader is inside the current response.
enum Reading {
    Head,
    Length(u64),
    Chunked(chunked::Decoder),
    UntilClose,
}

/// How a connection ended.
enum End {
    /// Nothing more to send and nothing in flight.
    Finished,
    /// Reconnect and go on.
    Reconnect,
}

struct Slot {
    ctx: Rc<CoreCtx>,
    /// Tripped when the oldest request in flight has waited `--timeout`.
    alarm: Rc<Alarm>,
    issuer: Issuer,
    rbuf: Vec<u8>,
    rpos: usize,
    rend: usize,
    /// `pipeline` copies of the request, so a batch is one write.
    wbuf: Box<[u8]>,
    /// Intended send times of requests written and not yet answered, oldest first.
    in_flight: VecDeque<u64>,
    /// Requests carried over from a connection the server closed, to send again.
    resend: usize,
    /// The requests in flight were already sent again once.
    retried: bool,
    reading: Reading,
    /// Status and bytes of the response being read.
    status: u16,
    close: bool,
    bytes: u64,
}

/// Drives connection slot `slot` (a global index) until the plan says stop.
pub async fn drive(ctx: Rc<CoreCtx>, slot: u32, alarm: Rc<Alarm>) {
    let plan = ctx.plan.clone();
    let depth = plan.pipeline as usize;
    let phases = ctx.wait_start().await;
    let mut s = Slot {
        issuer: Issuer::new(&plan, &phases, slot),
        ctx: ctx.clone(),
        alarm,
        rbuf: vec![0; READ_BUF],
        rpos: 0,
        rend: 0,
        wbuf: plan.request.repeat(depth).into_boxed_slice(),
        in_flight: VecDeque::with_capacity(depth),
        resend: 0,
        retried: false,
        reading: Reading::Head,
        status: 0,
        close: false,
        bytes: 0,
    };
    match plan.reuse {
        Reuse::KeepAlive => s.keep_alive().await,
        Reuse::PerRequest => s.per_request().await,
    }
    ctx.net.leave();
}

/// What woke a slot waiting for a response.
enum Wake {
    Read(std::io::Result<usize>),
    /// The next request is due.
    Due,
}

fn timed_out() -> std::io::Error {
    std::io::ErrorKind::TimedOut.into()
}

impl Slot {
    async fn keep_alive(&mut self) {
        let ctx = self.ctx.clone();
        loop {
            let mut stream = match Stream::open(&ctx.plan, &ctx.net, &self.alarm).await {
                Ok(stream) => stream,
                Err(_) => {
                    // The failed connect costs the next request (or the carried-over ones).
                    if !self.in_flight.is_empty() {
                        self.fail_in_flight(ErrorKind::Connect);
                    } else {
                        match self.issuer.next(&ctx, ctx.clock.now()) {
                            Issue::Now(t) => ctx.record_error(t, ErrorKind::Connect),
                            Issue::Later(t) => {
                                ctx.net.sleep_until(t).await;
                                continue;
                            }
                            Issue::Finished => return,
                        }
                    }
                    ctx.net
                        .sleep_until(ctx.clock.now() + CONNECT_BACKOFF.as_nanos() as u64)
                        .await;
                    continue;
                }
            };
            ctx.net.sleep_until(ctx.phases().start).await;
            match self.session(&mut stream).await {
                End::Finished => return,
                End::Reconnect => continue,
            }
        }
    }

    /// One request per connection: the latency includes connecting (and TLS).
    async fn per_request(&mut self) {
        let ctx = self.ctx.clone();
        ctx.net.sleep_until(ctx.phases().start).await;
        loop {
            // A request that failed cleanly once is still in flight, to be sent again.
            if self.in_flight.is_empty() {
                match self.issuer.next(&ctx, ctx.clock.now()) {
                    Issue::Now(t) => self.in_flight.push_back(t),
                    Issue::Later(t) => {
                        ctx.net.sleep_until(t).await;
                        continue;
                    }
                    Issue::Finished => return,
                }
            }
            let mut stream = match Stream::open(&ctx.plan, &ctx.net, &self.alarm).await {
                Ok(stream) => stream,
                Err(_) => {
                    self.fail_in_flight(ErrorKind::Connect);
                    ctx.net
                        .sleep_until(ctx.clock.now() + CONNECT_BACKOFF.as_nanos() as u64)
                        .await;
                    continue;
                }
            };
            self.resend = self.in_flight.len();
            self.session(&mut stream).await;
        }
    }

    /// Sends and reads on one connection until it closes or the slot is finished.
    async fn session(&mut self, stream: &mut Stream) -> End {
        let ctx = self.ctx.clone();
        let depth = self.ctx.plan.pipeline as usize;
        let one = self.ctx.plan.request.len();
        let per_request = self.ctx.plan.reuse == Reuse::PerRequest;
        let timeout = self.ctx.plan.timeout.as_nanos() as u64;
        let closed = self.ctx.plan.load == Load::Closed;
        self.rpos = 0;
        self.rend = 0;
        self.reading = Reading::Head;
        self.bytes = 0;
        loop {
            // Fill the pipeline: carried-over requests first, then whatever is due.
            let mut batch = std::mem::take(&mut self.resend);
            let mut due = None;
            let mut finished = per_request;
            let now = ctx.clock.now();
            while !finished && self.in_flight.len() < depth {
                match self.issuer.next(&ctx, now) {
                    Issue::Now(t) => {
                        self.in_flight.push_back(t);
                        batch += 1;
                    }
                    Issue::Later(t) => {
                        due = Some(t);
                        break;
                    }
                    Issue::Finished => finished = true,
                }
            }
            if batch > 0 {
                if closed {
                    // Let the core's other ready slots read first, so requests leave in a
                    // burst, as wrk's event loop sends them; the server then wakes once per
                    // burst rather than once per request (about 7% less CPU per request).
                    ctx.net.yield_now().await;
                }
                let alarm: &Alarm = &self.alarm;
                alarm.arm(now + timeout);
                let sent = async {
                    stream.write_all(&self.wbuf[..batch * one]).await?;
                    stream.flush().await
                };
                let rung = async {
                    alarm.rung().await;
                    Err(timed_out())
                };
                if let Err(e) = futures_lite::future::or(sent, rung).await {
                    return self.broken(ErrorKind::of(&e));
                }
            }
            if self.in_flight.is_empty() {
                match due {
                    Some(t) => {
                        ctx.net.sleep_until(t).await;
                        continue;
                    }
                    None => return End::Finished,
                }
            }

            // Read, or wake up when the next request is due.
            if self.rpos == self.rend {
                (self.rpos, self.rend) = (0, 0);
            } else if self.rend == self.rbuf.len() {
                self.rbuf.copy_within(self.rpos..self.rend, 0);
                (self.rpos, self.rend) = (0, self.rend - self.rpos);
                if self.rend == self.rbuf.len() {
                    self.rbuf.resize(self.rbuf.len() * 2, 0);
                }
            }
            let alarm: &Alarm = &self.alarm;
            alarm.arm(ctx.clock.now() + timeout);
            let buf = &mut self.rbuf[self.rend..];
            let read = async { Wake::Read(stream.read(buf).await) };
            let rung = async {
                alarm.rung().await;
                Wake::Read(Err(timed_out()))
            };
            let read = futures_lite::future::or(read, rung);
            let woke = match due {
                None => read.await,
                Some(t) => {
                    let timer = async {
                        ctx.net.sleep_until(t).await;
                        Wake::Due
                    };
                    futures_lite::future::or(read, timer).await
                }
            };
            let read = match woke {
                Wake::Read(r) => r,
                Wake::Due => continue,
            };
            let now = ctx.clock.now();
            match read {
                Ok(0) => {
                    if matches!(self.reading, Reading::UntilClose) {
                        self.complete(now);
                    }
                    if self.in_flight.is_empty() {
                        return End::Reconnect;
                    }
                    return self.broken(ErrorKind::Reset);
                }
                Ok(n) => self.rend += n,
                Err(e) => return self.broken(ErrorKind::of(&e)),
            }
            match self.parse(now) {
                Ok(true) => {}
                Ok(false) => {
                    // The server closes after this response: send the rest again elsewhere.
                    self.resend = self.in_flight.len();
                    return End::Reconnect;
                }
                Err(()) => {
                    self.fail_in_flight(ErrorKind::Parse);
                    return End::Reconnect;
                }
            }
        }
    }

    /// Consumes every complete response in the buffer. `Ok(false)`: the server closes now.
    fn parse(&mut self, now: u64) -> Result<bool, ()> {
        loop {
            let avail = &self.rbuf[self.rpos..self.rend];
            match &mut self.reading {
                Reading::Head => {
                    let head = match response::parse(avail, self.ctx.plan.head_request) {
                        Ok(Some(head)) => head,
                        Ok(None) if avail.len() > MAX_HEAD => return Err(()),
                        Ok(None) => return Ok(true),
                        Err(_) => return Err(()),
                    };
                    self.rpos += head.len;
                    self.bytes += head.len as u64;
                    if head.is_interim() {
                        continue;
                    }
                    if self.in_flight.is_empty() {
                        return Err(());
                    }
                    self.status = head.status;
                    self.close = head.close;
                    self.reading = match head.body {
                        BodyFraming::Empty => {
                            if !self.complete(now) {
                                return Ok(false);
                            }
                            continue;
                        }
                        BodyFraming::Length(n) => Reading::Length(n),
                        BodyFraming::Chunked => Reading::Chunked(chunked::Decoder::new()),
                        BodyFraming::UntilClose => Reading::UntilClose,
                    };
                }
                Reading::Length(left) => {
                    let take = (*left).min(avail.len() as u64);
                    *left -= take;
                    self.rpos += take as usize;
                    self.bytes += take;
                    if *left > 0 {
                        return Ok(true);
                    }
                    if !self.complete(now) {
                        return Ok(false);
                    }
                }
                Reading::Chunked(decoder) => {
                    let used = decoder.feed(avail, |_| {}).map_err(|_| ())?;
                    self.rpos += used;
                    self.bytes += used as u64;
                    if !decoder.is_done() {
                        return Ok(true);
                    }
                    if !self.complete(now) {
                        return Ok(false);
                    }
                }
                Reading::UntilClose => {
                    self.bytes += avail.len() as u64;
                    self.rpos = self.rend;
                    return Ok(true);
                }
            }
        }
    }

    /// Records the response just read; `false` if the server closes after it.
    fn complete(&mut self, now: u64) -> bool {
        self.retried = false;
        if let Some(intended) = self.in_flight.pop_front() {
            self.ctx
                .record_response(intended, now, self.status, self.bytes);
        }
        self.alarm.disarm();
        self.reading = Reading::Head;
        self.bytes = 0;
        !std::mem::take(&mut self.close)
    }

    /// The connection failed with requests in flight. If no byte of a response had arrived,
    /// the server may have closed the connection while it sat idle (a keep-alive timeout
    /// racing our request): the requests are sent once more on a new connection, as HTTP
    /// clients do. A second failure, or anything else, counts as an error.
    fn broken(&mut self, kind: ErrorKind) -> End {
        let clean = self.rpos == self.rend && matches!(self.reading, Reading::Head);
        if clean && kind == ErrorKind::Reset && !self.retried {
            self.retried = true;
            self.resend = self.in_flight.len();
            self.alarm.disarm();
        } else {
            self.fail_in_flight(kind);
        }
        End::Reconnect
    }

    fn fail_in_flight(&mut self, kind: ErrorKind) {
        for intended in self.in_flight.drain(..) {
            self.ctx.record_error(intended, kind);
        }
        self.resend = 0;
        self.retried = false;
        self.alarm.disarm();
        self.reading = Reading::Head;
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_moves_forward() {
        let c = Clock(Instant::now());
        let a = c.now();
        assert!(c.now() >= a);
    }
}
