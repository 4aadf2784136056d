//! `loadgen run`: send load to one URL and report throughput and latency honestly.
//!
//! Lifecycle: validate arguments into a `Plan` → start one pinned executor per core, each
//! driving its share of the connection slots (`conn::drive`) on its own epoll reactor
//! (`net`) → once every core runs, fix the start time → show a progress bar while they run
//! (indicatif; only on a terminal and without `--json`) and per-interval lines
//! (`intervals.rs`) → merge the cores' `Recorder`s → print the report (`report.rs`).
//!
//! Executors are not pinned unless asked (`--cores LIST`, `--first-cpu`): the kernel places
//! them, as wrk's threads, so loadgen does not crowd CPU 0 beside the server it measures.
//!
//! Closed loop: each slot sends its next request as soon as a response frees room in its
//! pipeline. Open loop (`-R`): each slot follows a fixed timetable and latency is measured from
//! the intended send time, so a stalled server shows up in the percentiles instead of quietly
//! lowering the send rate (coordinated omission).

mod conn;
pub mod intervals;
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
    let show_progress = output == Output::Text && std::io::stderr().is_terminal();
    let (recorder, elapsed) = execute(plan.clone(), stop, show_progress)?;
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
/// `show_progress`: a progress bar on stderr (a terminal, and not `--json`).
pub fn execute(
    plan: Arc<Plan>,
    stop: Arc<AtomicBool>,
    show_progress: bool,
) -> anyhow::Result<(Recorder, Duration)> {
    let clock = Clock(Instant::now());
    let start = Arc::new(AtomicU64::new(0));
    let cores = usize::from(plan.cores);
    let progress: Arc<[CachePadded<AtomicU64>]> = (0..cores).map(|_| Default::default()).collect();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<Event>();
    let (part_tx, part_rx) = std::sync::mpsc::channel::<intervals::Part>();

    let (plan2, stop2, progress2, start2) =
        (plan.clone(), stop.clone(), progress.clone(), start.clone());
    let handles = rt::start(cores, plan.pinning.clone(), move |core| {
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
        let parts = part_tx.clone();
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
            if let Some(every) = ctx.plan.interval {
                rt::spawn_local(hand_over_intervals(ctx.clone(), every, parts.clone())).detach();
            }
            rt::spawn_local(ctx.net.clone().run()).detach();
            let tick = (ctx.plan.timeout / 20).clamp(WATCHDOG_TICK.0, WATCHDOG_TICK.1);
            rt::spawn_local(ctx.watchdog.clone().run(ctx.net.clone(), tick)).detach();
            for slot in slots {
                slot.await;
            }
            // The last, partial interval (none if the run ended on an interval boundary).
            let last = ctx.recorder.borrow_mut().take_interval();
            if let Some(hist) = last.filter(|h| !h.is_empty()) {
                let index = ctx.interval_index.get();
                let _ = parts.send(intervals::Part { index, hist });
            }
            let _ = done.send(Event::Done);
            ctx.recorder.replace(Recorder::new())
        }
    })?;

    let mut finished = 0;
    let mut stopped_at = None;
    let (mut last_count, mut last_tick) = (0u64, Instant::now());
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
    let mut per_interval = plan.interval.map(|every| {
        let mut iv =
            intervals::Intervals::new(every, cores, plan.interval_lines, plan.hdr_log.clone());
        iv.start(std::time::SystemTime::now() + START_GRACE + plan.warmup);
        iv
    });
    let bar = show_progress.then(|| progress_bar(&plan));
    let say = |line: &str| match &bar {
        Some(b) => b.println(line),
        None => eprintln!("{line}"),
    };
    while finished < cores {
        match done_rx.recv_timeout(Duration::from_millis(100)) {
            Ok(Event::Done) => finished += 1,
            Ok(Event::Up) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if let Some(iv) = &mut per_interval {
            for part in part_rx.try_iter() {
                for line in iv.add(part) {
                    say(&line);
                }
            }
        }
        if stopped_at.is_none() && stop.load(Ordering::Relaxed) {
            stopped_at = Some(clock.now());
        }
        if let Some(b) = &bar {
            if last_tick.elapsed() >= Duration::from_millis(500) {
                let count: u64 = progress.iter().map(|p| p.load(Ordering::Relaxed)).sum();
                let rate = (count - last_count) as f64 / last_tick.elapsed().as_secs_f64();
                (last_count, last_tick) = (count, Instant::now());
                match plan.stop {
                    plan::Stop::Count(_) => b.set_position(count),
                    plan::Stop::After(_) => b.set_position(clock.0.elapsed().as_secs()),
                }
                b.set_message(format!("{count} requests, {rate:.0} req/s"));
            }
        }
    }
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let mut total = Recorder::new();
    for h in handles {
        total.merge(&h.join()?);
    }
    if let Some(iv) = &mut per_interval {
        for part in part_rx.try_iter() {
            for line in iv.add(part) {
                say(&line);
            }
        }
        for line in iv.flush() {
            say(&line);
        }
        iv.write_log()?;
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

/// On each core: every `every` from the start of measuring, hands the interval's histogram to
/// the main thread. Not a user of the reactor, so it does not keep the core alive.
async fn hand_over_intervals(
    ctx: Rc<CoreCtx>,
    every: Duration,
    parts: std::sync::mpsc::Sender<intervals::Part>,
) {
    let phases = ctx.wait_start().await;
    let every_ns = every.as_nanos() as u64;
    loop {
        let index = ctx.interval_index.get();
        ctx.net
            .sleep_until(phases.measure_from + (index + 1) * every_ns)
            .await;
        let Some(hist) = ctx.recorder.borrow_mut().take_interval() else {
            return;
        };
        ctx.interval_index.set(index + 1);
        if parts.send(intervals::Part { index, hist }).is_err() {
            return;
        }
    }
}

/// Seconds of the run (warmup included) or measured requests, with the rate as its message.
fn progress_bar(plan: &Plan) -> indicatif::ProgressBar {
    let (len, unit) = match plan.stop {
        plan::Stop::Count(n) => (n, "requests"),
        plan::Stop::After(d) => ((plan.warmup + d).as_secs().max(1), "s"),
    };
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(len),
        indicatif::ProgressDrawTarget::stderr(),
    );
    let template = format!("{{elapsed_precise}} [{{bar:30}}] {{pos}}/{{len}} {unit}  {{msg}}");
    if let Ok(style) = indicatif::ProgressStyle::with_template(&template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}
