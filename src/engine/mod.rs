//! The I/O engine seam: the only module that names the I/O crate (io-uring).
//!
//! Two engines sit behind it, chosen per core at start ([`CoreSpec::engine`]): our own
//! executor ([`own`]: executor, timers, sockets) on an io_uring reactor of our own (the
//! default) or on an epoll reactor (for hosts that refuse io_uring). glommio, the engine
//! ringlb started on, was replaced by these (measured in benches/RESULTS.md, "Engines").
//! [`Stream::connect`] and [`Listener::from_std`] use the reactor of the current thread (a
//! thread-local flag); a socket carries its reactor as an enum variant, so an operation costs
//! one predictable branch.
//!
//! What the rest of ringlb may use: [`Core`] (start a thread running an executor, pinned to a
//! CPU or not), [`Listener`] and [`Stream`] (sockets owned by the current core, plain or TLS),
//! [`spawn`] / [`spawn_detached`] / [`Task`] (tasks on the current core), [`sleep`] and
//! [`yield_now`] (time), and [`Signal`] (a wake-up from another thread: reloads, stop,
//! control messages). Nothing else of the runtime leaks: a second engine goes behind these
//! same names.
//!
//! Uses no other module of ringlb.

mod own;
mod stream;
mod tcp;

pub use stream::{Listener, Stream, WaitReadable};

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

/// Which engine runs a core.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineKind {
    /// ringlb's own executor on its io_uring reactor.
    IoUring,
    /// ringlb's own executor on an edge-triggered epoll reactor.
    Epoll,
}

impl EngineKind {
    pub fn name(self) -> &'static str {
        match self {
            EngineKind::IoUring => "io_uring",
            EngineKind::Epoll => "epoll",
        }
    }
}

/// Whether this host can run the own io_uring engine: creates (and closes) a ring with its
/// setup flags and a provided-buffer ring. Ok names the flags the kernel took; the error
/// names what it refused.
pub fn probe_io_uring() -> std::io::Result<&'static str> {
    own::uring::probe()
}

/// An error naming the variable when `RINGLB_IO_URING_SETUP` (the io_uring engine's setup
/// override) holds a value it does not know.
pub fn io_uring_setup_override() -> std::io::Result<()> {
    own::uring::setup_env().map(drop)
}

/// How a core's executor is set up.
#[derive(Clone, Debug)]
pub struct CoreSpec {
    /// Thread name (shows in `top -H`, `perf`).
    pub name: String,
    /// Pin the thread to this CPU; None: let the kernel place it.
    pub cpu: Option<usize>,
    /// Memory the engine may use for its receive buffers (io_uring), in bytes.
    pub io_memory: usize,
    pub engine: EngineKind,
}

/// The engine refused to start a core (e.g. io_uring setup failed); the engine's words.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartError(String);

/// A thread running one executor; [`Core::join`] waits for its main future to end.
pub struct Core {
    handle: CoreHandle,
}

enum CoreHandle {
    Own(std::thread::JoinHandle<()>),
}

impl Core {
    /// Starts a thread with its own executor that runs `main` to completion. Errors name what
    /// the engine refused (e.g. io_uring setup).
    pub fn start<F, Fut>(spec: CoreSpec, main: F) -> Result<Core, StartError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let kind = match spec.engine {
            EngineKind::Epoll => own::exec::Kind::Epoll,
            EngineKind::IoUring => own::exec::Kind::Uring,
        };
        let handle = own::start(spec.name, spec.cpu, kind, spec.io_memory, main)
            .map_err(|e| StartError(e.to_string()))?;
        Ok(Core {
            handle: CoreHandle::Own(handle),
        })
    }

    /// Waits for the thread; false when its main future panicked.
    pub fn join(self) -> bool {
        match self.handle {
            CoreHandle::Own(h) => h.join().is_ok(),
        }
    }
}

/// A task on the current core. Dropping it cancels the task; `detach` lets it run on.
pub struct Task<T>(own::exec::Task<T>);

impl<T> Task<T> {
    pub fn detach(self) {
        self.0.detach()
    }
}

impl<T> Future for Task<T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        Pin::new(&mut self.get_mut().0).poll(cx)
    }
}

/// Spawns `fut` on the current core (must run on an engine core).
pub fn spawn<T: 'static>(fut: impl Future<Output = T> + 'static) -> Task<T> {
    Task(own::exec::spawn(fut))
}

pub fn spawn_detached(fut: impl Future<Output = ()> + 'static) {
    own::exec::spawn(fut).detach();
}

/// The time of the current core's loop pass: read once per pass, for deadlines and timeouts
/// (not for measuring durations, which read the clock). Off a core, the clock.
pub fn now() -> std::time::Instant {
    own::exec::now()
}

/// Waits `d` on the current core's timers.
pub fn sleep(d: Duration) -> impl Future<Output = ()> {
    own::exec::sleep(d)
}

/// At most one event per interval, counting the ones skipped: for log lines a client can
/// cause at will (accept failures under fd exhaustion, failed handshakes), so that a flood
/// writes one summary line per interval instead of one line per event. One per core (`!Sync`).
pub struct Throttle {
    every: Duration,
    last: std::cell::Cell<Option<std::time::Instant>>,
    skipped: std::cell::Cell<u64>,
}

impl Throttle {
    pub const fn new(every: Duration) -> Throttle {
        Throttle {
            every,
            last: std::cell::Cell::new(None),
            skipped: std::cell::Cell::new(0),
        }
    }

    /// Some(events skipped since the last one let through), or None: skip this one.
    pub fn allow(&self) -> Option<u64> {
        let now = std::time::Instant::now();
        match self.last.get() {
            Some(t) if now.duration_since(t) < self.every => {
                self.skipped.set(self.skipped.get() + 1);
                None
            }
            _ => {
                self.last.set(Some(now));
                Some(self.skipped.replace(0))
            }
        }
    }
}

/// Yields to other tasks on this core.
pub async fn yield_now() {
    own::exec::yield_now().await;
}

/// A wake-up that any thread raises and one task (on any core) waits for: a counter, so a
/// raise between two waits is never lost, plus the waiting task's waker. Raising costs an
/// atomic increment and, when a task waits, one wake of its core; nothing polls.
#[derive(Default)]
pub struct Signal {
    raised: AtomicU64,
    waker: atomic_waker::AtomicWaker,
}

impl Signal {
    pub fn raise(&self) {
        self.raised.fetch_add(1, Ordering::Release);
        self.waker.wake();
    }

    /// How many raises so far; pass it to [`Signal::wait`] to wait for the next one.
    pub fn count(&self) -> u64 {
        self.raised.load(Ordering::Acquire)
    }

    /// Waits until the count differs from `*seen`, then stores the new count there. One task
    /// at a time may wait on a signal.
    pub async fn wait(&self, seen: &mut u64) {
        std::future::poll_fn(|cx| {
            let now = self.count();
            if now != *seen {
                *seen = now;
                return Poll::Ready(());
            }
            self.waker.register(cx.waker());
            let now = self.count();
            if now != *seen {
                *seen = now;
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }

    /// [`Signal::wait`], or false when `timeout` passes first.
    pub async fn wait_for(&self, seen: &mut u64, timeout: Duration) -> bool {
        futures_lite::future::or(
            async {
                self.wait(seen).await;
                true
            },
            async {
                sleep(timeout).await;
                false
            },
        )
        .await
    }
}
