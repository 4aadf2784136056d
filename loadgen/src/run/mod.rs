//! `loadgen run`: send load to one URL and report throughput and latency honestly.
//!
//! Lifecycle: validate arguments into a `Plan` → start one pinned executor per core, each
//! driving its share of the connection slots (`conn::drive`) on its own epoll reactor
//! (`net`) → once every core runs, fix the start time → print progress while they run →
//! merge the cores' `Recorder`s → print the report (`report.rs`).
//!
//! Closed loop: each slot sends its next request as soon as a response frees room in its
//! pipeline. Open loop (`-R`): each slot follows a fixed timetable and latency is measured from
//! the intended send time, so a stalled server shows up in the percentiles instead of quietly
//! lowering the send rate (coordinated omission).

mod conn;
mod net;
pub mod plan;
pub mod record;
pub mod report;
mod stream;
mod tls;
mod watchdog;

use std::io::{IsTerminal as _, Write as _};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;

use crate::rt;
use conn::{Clock, CoreCtx, Phases};
use plan::Plan;
use record::Recorder;
use report::Summary;

/// Bounds of the timeout check interval; timeouts fire up to one interval late.
const WATCHDOG_TICK: (Duration, Duration) = (Duration::from_millis(1), Duration::from_millis(100));

/// What executors tell the main thread.
enum Event {
    Up,
    Done,
}

/// How the report is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Text,
    /// One JSON object (`report::Summary`) on stdout.
    Json,
}

/// Time for executors to start and connections to open before the first send.
const START_GRACE: Duration = Duration::from_millis(100);

/// Runs the load and prints the report; returns the process exit code
/// (0, or 1 when no response at all was received).
pub fn main(plan: Plan, output: Output) -> anyhow::Result<i32> {
    let plan = Arc::new(plan);
    let stop = Arc::new(AtomicBool::new(false));
    // A first Ctrl-C stops the run and still reports; a second one kills.
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, 130, stop.clone())?;
        signal_hook::flag::register(sig, stop.clone())?;
    }
    let (recorder, elapsed) = execute(plan.clone(), stop)?;
    let summary = Summary::new(&plan, &recorder, elapsed);
    let mut out = std::io::stdout().lock();
    if output == Output::Json {
        writeln!(out, "{}", serde_json::to_string(&summary)?)?;
    } else {
        summary.write_text(&mut out)?;
    }
    out.flush()?;
    Ok(if recorder.responses == 0 { 1 } else { 0 })
}

/// Runs the plan to the end; returns the merged measurements and the measured time.
pub fn execute(plan: Arc<Plan>, stop: Arc<AtomicBool>) -> anyhow::Result<(Recorder, Duration)> {
    let clock = Clock(Instant::now());
    let start = Arc::new(AtomicU64::new(0));
    let cores = usize::from(plan.cores);
    let progress: Arc<[CachePadded<AtomicU64>]> = (0..cores).map(|_| Default::default()).collect();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<Event>();

    let (plan2, stop2, progress2, start2) =
        (plan.clone(), stop.clone(), progress.clone(), start.clone());
    let handles = rt::start(cores, plan.pinning, move |core| {
        let net = net::Net::new(clock).expect("cannot create an epoll instance");
        let ctx = Rc::new(CoreCtx::new(
            plan2.clone(),
            clock,
            start2.clone(),
            stop2.clone(),
            progress2.clone(),
            core,
            net,
        ));
        let done = done_tx.clone();
        async move {
            let _ = done.send(Event::Up);
            // Every slot is a user of the reactor before the poller's first turn.
            let slots: Vec<_> = ctx
                .plan
                .connections_of(core)
                .map(|slot| {
                    ctx.net.enter();
                    let alarm = ctx.watchdog.register();
                    rt::spawn_local(conn::drive(ctx.clone(), slot, alarm))
                })
                .collect();
            rt::spawn_local(ctx.net.clone().run()).detach();
            let tick = (ctx.plan.timeout / 20).clamp(WATCHDOG_TICK.0, WATCHDOG_TICK.1);
            rt::spawn_local(ctx.watchdog.clone().run(ctx.net.clone(), tick)).detach();
            for slot in slots {
                slot.await;
            }
            let _ = done.send(Event::Done);
            ctx.recorder.replace(Recorder::new())
        }
    })?;

    let tty = std::io::stderr().is_terminal();
    let mut finished = 0;
    let mut stopped_at = None;
    let (mut last_count, mut last_tick, mut shown) = (0u64, Instant::now(), false);
    // The timetable starts once every executor runs, so a slow executor start is not
    // mistaken for a slow server.
    let mut up = 0;
    while up < cores {
        match done_rx.recv() {
            Ok(Event::Up) => up += 1,
            Ok(Event::Done) => finished += 1,
            Err(_) => break,
        }
    }
    let phases = Phases::new(&plan, clock.now() + START_GRACE.as_nanos() as u64);
    start.store(phases.start, Ordering::Release);
    while finished < cores {
        match done_rx.recv_timeout(Duration::from_millis(100)) {
            Ok(Event::Done) => finished += 1,
            Ok(Event::Up) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if stopped_at.is_none() && stop.load(Ordering::Relaxed) {
            stopped_at = Some(clock.now());
        }
        if tty && last_tick.elapsed() >= Duration::from_secs(1) {
            let count: u64 = progress.iter().map(|p| p.load(Ordering::Relaxed)).sum();
            let rate = (count - last_count) as f64 / last_tick.elapsed().as_secs_f64();
            let secs = clock.0.elapsed().as_secs();
            eprint!("\r\x1b[K{secs:>4}s  {count:>10} requests  {rate:>10.0} req/s");
            (last_count, last_tick, shown) = (count, Instant::now(), true);
        }
    }
    if shown {
        eprint!("\r\x1b[K");
    }
    let mut total = Recorder::new();
    for h in handles {
        total.merge(&h.join()?);
    }
    let end = match (phases.end, stopped_at) {
        (Some(end), Some(s)) => end.min(s),
        (Some(end), None) => end,
        (None, _) if total.last_done > 0 => total.last_done,
        (None, _) => clock.now(),
    };
    let elapsed = Duration::from_nanos(end.saturating_sub(phases.measure_from).max(1));
    Ok((total, elapsed))
}
