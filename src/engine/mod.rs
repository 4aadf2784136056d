//! The I/O engine seam: the only module that names the I/O crates (io-uring, glommio).
//!
//! Three engines sit behind it, chosen per core at start ([`CoreSpec::engine`]): our own
//! executor ([`own`]: executor, timers, sockets) on an io_uring reactor of our own (the
//! default) or on an epoll reactor (for hosts that refuse io_uring), and glommio (kept
//! selectable while the own io_uring engine proves itself). [`spawn`], [`sleep`], [`yield_now`], [`Stream::connect`] and
//! [`Listener::from_std`] use the engine of the current thread (a thread-local flag); a socket
//! carries its engine as an enum variant, so an operation costs one predictable branch.
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

pub use stream::{Listener, Stream};

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
    /// glommio 0.9 (io_uring without setup flags).
    Glommio,
}

impl EngineKind {
    pub fn name(self) -> &'static str {
        match self {
            EngineKind::IoUring => "io_uring",
            EngineKind::Epoll => "epoll",
            EngineKind::Glommio => "glommio",
        }
    }
}

/// Whether this host can run the own io_uring engine: creates (and closes) a ring with its
/// setup flags and a provided-buffer ring. Ok names the flags the kernel took; the error
/// names what it refused.
pub fn probe_io_uring() -> std::io::Result<&'static str> {
    own::uring::probe()
}

/// How a core's executor is set up.
#[derive(Clone, Debug)]
pub struct CoreSpec {
    /// Thread name (shows in `top -H`, `perf`).
    pub name: String,
    /// Pin the thread to this CPU; None: let the kernel place it.
    pub cpu: Option<usize>,
    /// Memory the engine may register for I/O buffers (io_uring), in bytes.
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
    Glommio(glommio::ExecutorJoinHandle<()>),
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
        let own = match spec.engine {
            EngineKind::Epoll => Some(own::exec::Kind::Epoll),
            EngineKind::IoUring => Some(own::exec::Kind::Uring),
            EngineKind::Glommio => None,
        };
        if let Some(kind) = own {
            let handle = own::start(spec.name, spec.cpu, kind, spec.io_memory, main)
                .map_err(|e| StartError(e.to_string()))?;
            return Ok(Core {
                handle: CoreHandle::Own(handle),
            });
        }
        let placement = match spec.cpu {
            Some(cpu) => glommio::Placement::Fixed(cpu),
            None => glommio::Placement::Unbound,
        };
        let handle = glommio::LocalExecutorBuilder::new(placement)
            .name(&spec.name)
            .io_memory(spec.io_memory)
            .ring_depth(256)
            .preempt_timer(Duration::from_millis(50))
            .spawn(main)
            .map_err(|e| StartError(e.to_string()))?;
        Ok(Core {
            handle: CoreHandle::Glommio(handle),
        })
    }

    /// Waits for the thread; false when its main future panicked.
    pub fn join(self) -> bool {
        match self.handle {
            CoreHandle::Glommio(h) => h.join().is_ok(),
            CoreHandle::Own(h) => h.join().is_ok(),
        }
    }
}

/// A task on the current core. Dropping it cancels the task; `detach` lets it run on.
pub struct Task<T>(TaskKind<T>);

enum TaskKind<T> {
    Glommio(glommio::Task<T>),
    Own(own::exec::Task<T>),
}

impl<T> Task<T> {
    pub fn detach(self) {
        match self.0 {
            TaskKind::Glommio(t) => drop(t.detach()),
            TaskKind::Own(t) => t.detach(),
        }
    }
}

impl<T> Future for Task<T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        match &mut self.get_mut().0 {
            TaskKind::Glommio(t) => Pin::new(t).poll(cx),
            TaskKind::Own(t) => Pin::new(t).poll(cx),
        }
    }
}

pub fn spawn<T: 'static>(fut: impl Future<Output = T> + 'static) -> Task<T> {
    Task(if own::exec::is_current() {
        TaskKind::Own(own::exec::spawn(fut))
    } else {
        TaskKind::Glommio(glommio::spawn_local(fut))
    })
}

pub fn spawn_detached(fut: impl Future<Output = ()> + 'static) {
    if own::exec::is_current() {
        own::exec::spawn(fut).detach();
    } else {
        glommio::spawn_local(fut).detach();
    }
}

pub async fn sleep(d: Duration) {
    if own::exec::is_current() {
        own::exec::sleep(d).await;
    } else {
        glommio::timer::sleep(d).await;
    }
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

/// Yields to other tasks on this core (glommio: only once the task used its time slice).
pub async fn yield_now() {
    if own::exec::is_current() {
        own::exec::yield_now().await;
    } else {
        glommio::yield_if_needed().await;
    }
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
