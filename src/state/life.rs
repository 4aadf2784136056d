//! Process-wide lifecycle state, the same across configuration generations, and the events
//! that drive it. The control thread (`server`) owns the loop: it waits on [`Event`]s (signals,
//! admin requests, workers starting and exiting) and wakes each core through its [`Signal`]
//! when something a core must act on changed (stop, a new generation, reopening logs).
//! Nothing here is polled.

use crate::engine::Signal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::Sender;
use std::sync::Arc;

/// What the control thread is told. Sent from signal handlers' thread, the admin API and
/// the workers.
pub enum Event {
    /// SIGTERM / SIGINT: stop gracefully.
    Stop,
    /// SIGHUP (None) or the admin API (raised when the reload is done, either way).
    Reload(Option<Arc<Signal>>),
    /// SIGUSR1: reopen the access logs.
    ReopenLogs,
    /// SIGUSR2: start the binary upgrade (a new process that inherits the listening sockets).
    Upgrade,
    /// The new process of a binary upgrade serves (its pid), or why it does not.
    Upgraded(Result<u32, String>),
    /// Worker `index` runs its executor.
    Started(usize),
    /// Worker `index` returned or unwound.
    Exited(usize),
    /// The resolver thread found other addresses for a name.
    Resolved(super::Resolved),
    /// The admin API adds or removes a server; answered through the reply.
    Servers(super::ServerChange, Arc<super::Reply>),
}

pub struct Life {
    stopping: AtomicBool,
    /// The stop is a binary upgrade's hand-over: the new process serves the same sockets.
    handed_over: AtomicBool,
    /// Every worker checked in: the listeners are bound and served.
    serving: AtomicBool,
    /// Reloads attempted, and those that failed (the old generation kept serving).
    pub reloads: AtomicU64,
    pub reload_failures: AtomicU64,
    /// Why the last reload failed; None after a success.
    pub last_reload_error: arc_swap::ArcSwapOption<String>,
    /// The generation in force.
    generation: AtomicU64,
    /// Bumped on SIGUSR1: each core reopens its access log when it sees a new value.
    log_reopen: AtomicU64,
    /// One per worker core, then one for the health checker: raised when the process state
    /// changed (stop, new generation, log reopen).
    wake: Box<[Signal]>,
    /// Resolutions of server names, by entry (metrics).
    pub resolutions: super::Resolutions,
    /// The control thread's inbox (used off the request path: admin reload, worker start
    /// and exit).
    events: Sender<Event>,
}

impl Life {
    /// `cores` workers plus the health checker.
    pub fn new(cores: usize, events: Sender<Event>) -> Life {
        Life {
            stopping: AtomicBool::new(false),
            handed_over: AtomicBool::new(false),
            serving: AtomicBool::new(false),
            reloads: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
            last_reload_error: arc_swap::ArcSwapOption::empty(),
            generation: AtomicU64::new(0),
            log_reopen: AtomicU64::new(0),
            wake: (0..=cores).map(|_| Signal::default()).collect(),
            resolutions: Default::default(),
            events,
        }
    }

    pub fn stopping(&self) -> bool {
        self.stopping.load(Relaxed)
    }

    /// True once every worker runs (and stays true; `stopping` says when that ends).
    pub fn serving(&self) -> bool {
        self.serving.load(Relaxed)
    }

    /// Control thread: every worker checked in.
    pub fn workers_running(&self) {
        self.serving.store(true, Relaxed);
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Relaxed)
    }

    pub fn log_reopen(&self) -> u64 {
        self.log_reopen.load(Relaxed)
    }

    /// The wake-up of worker `index`; `index == workers` is the health checker's.
    pub fn wake(&self, index: usize) -> &Signal {
        &self.wake[index.min(self.wake.len() - 1)]
    }

    /// Tells the control thread. A send fails only once the control thread is gone (the
    /// process is exiting), when there is nobody left to tell.
    pub fn send(&self, e: Event) {
        let _ = self.events.send(e);
    }

    fn wake_all(&self) {
        for s in self.wake.iter() {
            s.raise();
        }
    }

    /// Control thread: every core and the checker stop.
    pub fn stop(&self) {
        self.stopping.store(true, Relaxed);
        self.wake_all();
    }

    /// Control thread: the new process of a binary upgrade serves; this one stops.
    pub fn hand_over(&self) {
        self.handed_over.store(true, Relaxed);
        self.stop();
    }

    pub fn handed_over(&self) -> bool {
        self.handed_over.load(Relaxed)
    }

    /// Control thread: `generation` is published.
    pub fn published(&self, generation: u64) {
        self.generation.store(generation, Relaxed);
        self.wake_all();
    }

    /// Control thread: the access logs are to be reopened.
    pub fn reopen_logs(&self) {
        self.log_reopen.fetch_add(1, Relaxed);
        self.wake_all();
    }
}
