//! The I/O engine seam: the only module that names the async runtime crate (glommio today).
//!
//! What the rest of ringlb may use: [`Core`] (start a thread running an executor, pinned to a
//! CPU or not), [`Listener`] and [`Stream`] (sockets owned by the current core, plain or TLS),
//! [`spawn`] / [`spawn_detached`] / [`Task`] (tasks on the current core), [`sleep`] and
//! [`yield_now`] (time), and [`Signal`] (a wake-up from another thread: reloads, stop,
//! control messages). Nothing else of the runtime leaks: a second engine goes behind these
//! same names.
//!
//! Uses no other module of ringlb.

mod stream;
// Wired to the seam in the next step; until then only its tests use it.
#[allow(dead_code)]
mod own;

pub use stream::{Listener, Stream};

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

/// How a core's executor is set up.
#[derive(Clone, Debug)]
pub struct CoreSpec {
    /// Thread name (shows in `top -H`, `perf`).
    pub name: String,
    /// Pin the thread to this CPU; None: let the kernel place it.
    pub cpu: Option<usize>,
    /// Memory the engine may register for I/O buffers (io_uring), in bytes.
    pub io_memory: usize,
}

/// The engine refused to start a core (e.g. io_uring setup failed); the engine's words.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartError(String);

/// A thread running one executor; [`Core::join`] waits for its main future to end.
pub struct Core {
    handle: glommio::ExecutorJoinHandle<()>,
}

impl Core {
    /// Starts a thread with its own executor that runs `main` to completion. Errors name what
    /// the engine refused (e.g. io_uring setup).
    pub fn start<F, Fut>(spec: CoreSpec, main: F) -> Result<Core, StartError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + 'static,
    {
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
        Ok(Core { handle })
    }

    /// Waits for the thread; false when its main future panicked.
    pub fn join(self) -> bool {
        self.handle.join().is_ok()
    }
}

/// A task on the current core. Dropping it cancels the task; `detach` lets it run on.
pub type Task<T> = glommio::Task<T>;

pub fn spawn<T: 'static>(fut: impl Future<Output = T> + 'static) -> Task<T> {
    glommio::spawn_local(fut)
}

pub fn spawn_detached(fut: impl Future<Output = ()> + 'static) {
    glommio::spawn_local(fut).detach();
}

pub async fn sleep(d: Duration) {
    glommio::timer::sleep(d).await;
}

/// Yields to other tasks on this core.
pub async fn yield_now() {
    glommio::yield_if_needed().await;
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
