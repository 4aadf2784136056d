//! The executor of one core: tasks (`async-task`), a run queue, timers and the reactor, all in
//! one thread-local context.
//!
//! A loop pass runs at most [`BATCH`] ready tasks, then parks in the reactor once: with a zero
//! timeout when tasks are still ready (so I/O is not starved by a busy core, nor the run queue
//! by a busy network), else until the nearest timer (or without timeout). What became ready is
//! woken, then the due timers.
//!
//! Wakes: a waker used on the owning thread pushes the task on the local queue, no syscall.
//! From another thread, it pushes on the core's injector (a lock-free queue) and writes the
//! core's eventfd, only if no write is pending since the core last looked (`notified`), so a
//! burst of foreign wakes costs one write and one read.
//!
//! Teardown: when the main future ends the loop stops; every task still queued is dropped
//! (cancelled), then the wakers held by timers and sockets, which lets the tasks that waited on
//! them go too. A task whose waker another thread holds (an `engine::Signal`) cannot be
//! dropped on that thread (`async-task` forbids dropping a local task elsewhere): it is leaked
//! with what it owns, only at a core's exit.
//!
//! The executor knows its reactor only through [`Reactor::park`] (wait, wake what became
//! ready, say whether the eventfd fired) and the eventfd it is given. Two reactors take that
//! place, one per core for its life: the epoll one (`epoll`) and the io_uring one (`uring`);
//! [`Reactor`] is their enum, so a park costs one predictable branch.

use super::timer::{TimerId, Timers};
use super::{epoll, uring};
use crossbeam_queue::SegQueue;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// Tasks run per loop pass before the reactor is polled again.
const BATCH: usize = 128;
/// Teardown rounds (drop tasks, then the wakers they left) before giving up on the rest.
const TEARDOWN_ROUNDS: usize = 1000;

pub(crate) type Runnable = async_task::Runnable;
/// A task on the current core; dropping it cancels the task, `detach` lets it run on.
pub type Task<T> = async_task::Task<T>;

/// What other threads hold of a core: where their wakes go.
pub(crate) struct Remote {
    id: u64,
    injector: SegQueue<Runnable>,
    /// An eventfd write is pending since the core last took the injector.
    notified: AtomicBool,
    /// The core has ended: late foreign wakes are leaked, not queued.
    closed: AtomicBool,
    eventfd: OwnedFd,
}

impl Remote {
    fn schedule(&self, r: Runnable) {
        let mut r = Some(r);
        let _ = CTX.try_with(|c| {
            if c.id.get() == self.id {
                if let Some(r) = r.take() {
                    c.queue.borrow_mut().push_back(r);
                }
            }
        });
        let Some(r) = r else {
            return;
        };
        if self.closed.load(Ordering::Acquire) {
            // Dropping it here would drop a local future on a foreign thread.
            std::mem::forget(r);
            return;
        }
        self.injector.push(r);
        if !self.notified.swap(true, Ordering::AcqRel) {
            let one = 1u64;
            // SAFETY: writes 8 bytes from a live u64 to our eventfd; failure (counter full)
            // still leaves it readable, which is all the wake needs.
            unsafe { libc::write(self.eventfd.as_raw_fd(), (&one as *const u64).cast(), 8) };
        }
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        // Only reached on a foreign thread if tasks were queued after the core closed.
        while let Some(r) = self.injector.pop() {
            std::mem::forget(r);
        }
    }
}

/// The reactor of a core: epoll or io_uring.
pub(crate) enum Reactor {
    Epoll(epoll::Reactor),
    // Boxed: the ring handles and queues are ~0.5 KiB, the epoll reactor ~80 bytes.
    Uring(Box<uring::Reactor>),
}

/// Which reactor a core runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Epoll,
    Uring,
}

impl Reactor {
    fn park(&mut self, timeout: Option<Duration>) -> io::Result<bool> {
        match self {
            Reactor::Epoll(r) => r.park(timeout),
            Reactor::Uring(r) => r.park(timeout),
        }
    }

    fn take_wakers(&mut self) -> Vec<Waker> {
        match self {
            Reactor::Epoll(r) => r.take_wakers(),
            Reactor::Uring(r) => r.take_wakers(),
        }
    }
}

struct Ctx {
    /// The running executor's id; 0: none on this thread.
    id: Cell<u64>,
    kind: Cell<Kind>,
    remote: RefCell<Option<Arc<Remote>>>,
    queue: RefCell<VecDeque<Runnable>>,
    timers: RefCell<Timers>,
    reactor: RefCell<Option<Reactor>>,
    /// The clock as of the end of the last wait for I/O: what deadlines are reckoned from
    /// during a loop pass (one clock read per pass instead of several per request; a pass is
    /// microseconds, so a deadline is early by at most that).
    now: Cell<Option<Instant>>,
}

thread_local! {
    static CTX: Ctx = const {
        Ctx {
            id: Cell::new(0),
            kind: Cell::new(Kind::Epoll),
            remote: RefCell::new(None),
            queue: RefCell::new(VecDeque::new()),
            timers: RefCell::new(Timers::new()),
            reactor: RefCell::new(None),
            now: Cell::new(None),
        }
    };
}

const NOT_HERE: &str = "no ringlb core of this engine runs on this thread";

/// The reactor this thread's executor runs, if it runs one.
pub(crate) fn current() -> Option<Kind> {
    CTX.try_with(|c| (c.id.get() != 0).then(|| c.kind.get()))
        .ok()
        .flatten()
}

pub(crate) fn with_epoll<T>(f: impl FnOnce(&mut epoll::Reactor) -> T) -> T {
    CTX.with(|c| match c.reactor.borrow_mut().as_mut() {
        Some(Reactor::Epoll(r)) => f(r),
        _ => panic!("{NOT_HERE}"),
    })
}

pub(crate) fn with_uring<T>(f: impl FnOnce(&mut uring::Reactor) -> T) -> T {
    CTX.with(|c| match c.reactor.borrow_mut().as_mut() {
        Some(Reactor::Uring(r)) => f(r),
        _ => panic!("{NOT_HERE}"),
    })
}

/// Like [`with_epoll`], doing nothing when the core is gone (drops during teardown).
pub(crate) fn try_with_epoll(f: impl FnOnce(&mut epoll::Reactor)) {
    let _ = CTX.try_with(|c| {
        if let Ok(mut r) = c.reactor.try_borrow_mut() {
            if let Some(Reactor::Epoll(r)) = r.as_mut() {
                f(r);
            }
        }
    });
}

/// Like [`with_uring`]; false (nothing done) when the core's reactor is gone.
pub(crate) fn try_with_uring(f: impl FnOnce(&mut uring::Reactor)) -> bool {
    CTX.try_with(|c| {
        if let Ok(mut r) = c.reactor.try_borrow_mut() {
            if let Some(Reactor::Uring(r)) = r.as_mut() {
                f(r);
                return true;
            }
        }
        false
    })
    .unwrap_or(false)
}

fn with_timers<T>(f: impl FnOnce(&mut Timers) -> T) -> T {
    CTX.with(|c| f(&mut c.timers.borrow_mut()))
}

/// Spawns a task on the current core (which must run this engine).
pub fn spawn<T: 'static>(fut: impl Future<Output = T> + 'static) -> Task<T> {
    let remote = CTX.with(|c| c.remote.borrow().clone()).expect(NOT_HERE);
    let (runnable, task) = async_task::spawn_local(fut, move |r| remote.schedule(r));
    runnable.schedule();
    task
}

/// Sets up what a core needs before its thread runs anything: the eventfd foreign wakes
/// write and the reactor (of `kind`; io_uring with about `io_memory` bytes of receive
/// buffers) watching it. Errors say which syscall failed.
pub(crate) fn prepare(kind: Kind, io_memory: usize) -> io::Result<(Reactor, Arc<Remote>)> {
    static NEXT_ID: AtomicU64 = AtomicU64::new(1);
    // SAFETY: eventfd takes no pointers; a non-negative result is a new descriptor.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and is owned by nothing else.
    let eventfd = unsafe { OwnedFd::from_raw_fd(fd) };
    let reactor = match kind {
        Kind::Epoll => Reactor::Epoll(epoll::Reactor::new(eventfd.as_raw_fd())?),
        Kind::Uring => Reactor::Uring(Box::new(uring::Reactor::new(
            eventfd.as_raw_fd(),
            io_memory,
        )?)),
    };
    let remote = Arc::new(Remote {
        id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        injector: SegQueue::new(),
        notified: AtomicBool::new(false),
        closed: AtomicBool::new(false),
        eventfd,
    });
    Ok((reactor, remote))
}

/// Runs `main` and every task it spawns on this thread until `main` ends; then drops what is
/// left (see the module docs). Panics of tasks propagate (the core ends).
pub(crate) fn run(reactor: Reactor, remote: Arc<Remote>, main: impl Future<Output = ()> + 'static) {
    CTX.with(|c| {
        assert_eq!(c.id.get(), 0, "one executor per thread");
        c.id.set(remote.id);
        c.kind.set(match reactor {
            Reactor::Epoll(_) => Kind::Epoll,
            Reactor::Uring(_) => Kind::Uring,
        });
        *c.remote.borrow_mut() = Some(remote.clone());
        *c.reactor.borrow_mut() = Some(reactor);
    });
    let _teardown = Teardown(remote.clone());
    let done = Rc::new(Cell::new(false));
    spawn({
        let done = done.clone();
        async move {
            main.await;
            done.set(true);
        }
    })
    .detach();
    let mut due: Vec<Waker> = Vec::new();
    CTX.with(|c| loop {
        let mut ran = 0;
        while ran < BATCH {
            let next = c.queue.borrow_mut().pop_front();
            let Some(r) = next.or_else(|| remote.injector.pop()) else {
                break;
            };
            r.run();
            ran += 1;
        }
        if done.get() {
            return;
        }
        let busy = !c.queue.borrow().is_empty() || !remote.injector.is_empty();
        let timeout = if busy {
            Some(Duration::ZERO)
        } else {
            c.timers.borrow_mut().next_timeout(Instant::now())
        };
        let notified = c
            .reactor
            .borrow_mut()
            .as_mut()
            .expect(NOT_HERE)
            .park(timeout)
            .unwrap_or_else(|e| panic!("waiting for I/O failed: {e}"));
        if notified {
            // Later foreign wakes write again; what they pushed before is taken below.
            remote.notified.store(false, Ordering::Release);
        }
        let now = Instant::now();
        c.now.set(Some(now));
        c.timers.borrow_mut().fire(now, &mut due);
        for w in due.drain(..) {
            w.wake();
        }
    })
}

/// Ends a core's executor, normally or while a task's panic unwinds.
struct Teardown(Arc<Remote>);

impl Drop for Teardown {
    fn drop(&mut self) {
        let remote = &self.0;
        let _ = CTX.try_with(|c| {
            for _ in 0..TEARDOWN_ROUNDS {
                let mut dropped = false;
                loop {
                    let next = c.queue.borrow_mut().pop_front();
                    let Some(r) = next.or_else(|| remote.injector.pop()) else {
                        break;
                    };
                    drop(r);
                    dropped = true;
                }
                let wakers = c.timers.borrow_mut().clear();
                let more = c.reactor.borrow_mut().as_mut().map(Reactor::take_wakers);
                dropped |= !wakers.is_empty() || more.as_ref().is_some_and(|w| !w.is_empty());
                drop(wakers);
                drop(more);
                if !dropped && c.queue.borrow().is_empty() {
                    break;
                }
            }
            remote.closed.store(true, Ordering::Release);
            c.id.set(0);
            // Whatever was queued between the last round and `closed` is leaked, not dropped
            // here: nothing may poll or drop it any more.
            while let Some(r) = remote.injector.pop() {
                std::mem::forget(r);
            }
            for r in c.queue.borrow_mut().drain(..) {
                std::mem::forget(r);
            }
            c.remote.borrow_mut().take();
            c.reactor.borrow_mut().take();
            *c.timers.borrow_mut() = Timers::new();
        });
    }
}

/// The time of this core's current loop pass (see `Ctx::now`); the clock itself off a core.
pub(crate) fn now() -> Instant {
    CTX.try_with(|c| c.now.get())
        .ok()
        .flatten()
        .unwrap_or_else(Instant::now)
}

/// Waits until `deadline`.
pub(crate) struct Sleep {
    deadline: Instant,
    timer: Option<TimerId>,
}

pub(crate) fn sleep(d: Duration) -> Sleep {
    Sleep {
        deadline: now() + d,
        timer: None,
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match self.timer {
            None => {
                if now() >= self.deadline {
                    return Poll::Ready(());
                }
                let deadline = self.deadline;
                self.timer = Some(with_timers(|t| t.insert(deadline, cx.waker())));
                Poll::Pending
            }
            Some(id) => {
                if with_timers(|t| t.poll(id, cx.waker())) {
                    self.timer = None;
                    let old = with_timers(|t| t.cancel(id));
                    drop(old);
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            }
        }
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(id) = self.timer.take() {
            cancel(id);
        }
    }
}

fn cancel(id: TimerId) {
    let old = CTX
        .try_with(|c| {
            c.timers
                .try_borrow_mut()
                .ok()
                .and_then(|mut t| t.cancel(id))
        })
        .ok()
        .flatten();
    drop(old);
}

/// A socket's timeout for one direction, as the socket keeps it: 8 bytes (nanoseconds;
/// `u64::MAX`: none) instead of a 16-byte `Option<Duration>`, since every socket, idle ones
/// included, holds two.
pub(crate) struct Timeout(Cell<u64>);

impl Timeout {
    pub(crate) const fn none() -> Timeout {
        Timeout(Cell::new(u64::MAX))
    }

    /// Durations past ~584 years are kept as that.
    pub(crate) fn set(&self, t: Option<Duration>) {
        self.0.set(t.map_or(u64::MAX, |d| {
            u64::try_from(d.as_nanos()).map_or(u64::MAX - 1, |n| n.min(u64::MAX - 1))
        }));
    }

    pub(crate) fn get(&self) -> Option<Duration> {
        let n = self.0.get();
        (n != u64::MAX).then(|| Duration::from_nanos(n))
    }
}

/// The timeout of one socket operation: armed only when the operation has to wait, from that
/// moment; disarmed when it completes.
#[derive(Default)]
pub(crate) struct OpTimer {
    timer: Option<TimerId>,
}

impl OpTimer {
    /// The operation must wait: true when `timeout` has passed since it first had to.
    pub(crate) fn expired(&mut self, timeout: Option<Duration>, waker: &Waker) -> bool {
        let Some(timeout) = timeout else {
            return false;
        };
        match self.timer {
            None => {
                let at = now() + timeout;
                self.timer = Some(with_timers(|t| t.insert(at, waker)));
                false
            }
            Some(id) => {
                if with_timers(|t| t.poll(id, waker)) {
                    self.reset();
                    true
                } else {
                    false
                }
            }
        }
    }

    /// The operation completed (or gave up): disarm.
    pub(crate) fn reset(&mut self) {
        if let Some(id) = self.timer.take() {
            cancel(id);
        }
    }
}

impl Drop for OpTimer {
    fn drop(&mut self) {
        self.reset();
    }
}

/// Yields once to the other ready tasks of this core.
pub(crate) fn yield_now() -> impl Future<Output = ()> {
    let mut yielded = false;
    std::future::poll_fn(move |cx| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
}
