//! `loadgen run`: send load to one URL and report throughput and latency honestly.
//!
//! Lifecycle: validate arguments into a `Plan` → start one pinned executor per core, each
//! driving its share of the connection slots (`conn::drive`) → print progress while they run →
//! merge the cores' `Recorder`s → print the report (`crate::report`).
//!
//! Closed loop: each slot sends its next request as soon as a response frees room in its
//! pipeline. Open loop (`-R`): each slot follows a fixed timetable and latency is measured from
//! the intended send time, so a stalled server shows up in the percentiles instead of quietly
//! lowering the send rate (coordinated omission).

mod conn;
pub mod plan;
pub mod record;
mod stream;
mod tls;
mod watchdog;

use std::io::{IsTerminal as _, Write as _};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;

use crate::report::Summary;
use crate::rt;
use conn::{Clock, CoreCtx, Phases};
use plan::{Plan, Stop};
use record::Recorder;

/// Bounds of the timeout check interval; timeouts fire up to one interval late.
const WATCHDOG_TICK: (Duration, Duration) = (Duration::from_millis(1), Duration::from_millis(100));

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
    let start = START_GRACE.as_nanos() as u64;
    let measure_from = start + plan.warmup.as_nanos() as u64;
    let phases = Phases {
        start,
        measure_from,
        end: match plan.stop {
            Stop::After(d) => Some(measure_from + d.as_nanos() as u64),
            Stop::Count(_) => None,
        },
    };
    let cores = usize::from(plan.cores);
    let progress: Arc<[CachePadded<AtomicU64>]> = (0..cores).map(|_| Default::default()).collect();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();

    let (plan2, stop2, progress2) = (plan.clone(), stop.clone(), progress.clone());
    let handles = rt::start(cores, plan.pinning, move |core| {
        let ctx = Rc::new(CoreCtx {
            plan: plan2.clone(),
            clock,
            phases,
            stop: stop2.clone(),
            recorder: std::cell::RefCell::new(Recorder::new()),
            progress: progress2.clone(),
            core,
            watchdog: Default::default(),
        });
        let done = done_tx.clone();
        async move {
            let slots: Vec<_> = ctx
                .plan
                .connections_of(core)
                .map(|slot| {
                    let alarm = ctx.watchdog.register();
                    rt::spawn_local(conn::drive(ctx.clone(), slot, alarm))
                })
                .collect();
            let tick = (ctx.plan.timeout / 20).clamp(WATCHDOG_TICK.0, WATCHDOG_TICK.1);
            rt::spawn_local(ctx.watchdog.clone().run(clock, tick)).detach();
            for slot in slots {
                slot.await;
            }
            let _ = done.send(());
            ctx.recorder.replace(Recorder::new())
        }
    })?;

    let tty = std::io::stderr().is_terminal();
    let mut finished = 0;
    let mut stopped_at = None;
    let (mut last_count, mut last_tick, mut shown) = (0u64, Instant::now(), false);
    while finished < cores {
        match done_rx.recv_timeout(Duration::from_millis(100)) {
            Ok(()) => finished += 1,
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
    let elapsed = Duration::from_nanos(end.saturating_sub(measure_from).max(1));
    Ok((total, elapsed))
}
