//! Registry of this core's client connections, so shutdown can close the idle ones.
//!
//! Runs on the owning core; takes no lock. A slot is claimed per connection (not per request);
//! marking idle/busy is a `Cell` write. Once closing, each connection that ends raises
//! [`Conns::wait_closed`]'s signal, so shutdown waits on events, not a timer.

use crate::engine::{Signal, Stream};
use std::cell::{Cell, RefCell};
use std::os::fd::RawFd;

#[derive(Default)]
pub struct Conns {
    slots: RefCell<Vec<Slot>>,
    free: RefCell<Vec<usize>>,
    live: Cell<usize>,
    closing: Cell<bool>,
    /// Raised when a connection ends while closing.
    ended: Signal,
}

#[derive(Clone, Copy)]
struct Slot {
    fd: RawFd,
    idle: bool,
    /// The connection's listener (a `ListenerId` of this registry's generation).
    listener: u32,
}

impl Conns {
    /// A connection on `listener` (its `ListenerId` in this registry's generation).
    pub fn register(&self, fd: RawFd, listener: u32) -> ConnSlot<'_> {
        let slot = Slot {
            fd,
            idle: false,
            listener,
        };
        let index = match self.free.borrow_mut().pop() {
            Some(i) => {
                self.slots.borrow_mut()[i] = slot;
                i
            }
            None => {
                let mut slots = self.slots.borrow_mut();
                slots.push(slot);
                slots.len() - 1
            }
        };
        self.live.set(self.live.get() + 1);
        ConnSlot { conns: self, index }
    }

    /// Client connections open on this core.
    pub fn live(&self) -> usize {
        self.live.get()
    }

    /// From now on, connections close instead of waiting for another request; the idle ones
    /// are woken now (their pending read returns end of stream).
    pub fn close_idle(&self) {
        self.closing.set(true);
        self.wake_idle(|_| true);
    }

    /// The idle connections of `listener` (removed by a reload) are woken now, their
    /// pending read returning end of stream; the others carry on.
    pub fn close_idle_on(&self, listener: u32) {
        self.wake_idle(|s| s.listener == listener);
    }

    fn wake_idle(&self, which: impl Fn(&Slot) -> bool) {
        for s in self.slots.borrow().iter() {
            if s.idle && s.fd >= 0 && which(s) {
                Stream::shutdown_read_fd(s.fd);
            }
        }
    }

    pub fn closing(&self) -> bool {
        self.closing.get()
    }

    /// Waits until no connection is left, or `timeout` passes; the connections still open.
    /// Call after [`Conns::close_idle`]. One waiter at a time.
    pub async fn wait_closed(&self, timeout: std::time::Duration) -> usize {
        let deadline = std::time::Instant::now() + timeout;
        let mut seen = self.ended.count();
        while self.live.get() > 0 {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() || !self.ended.wait_for(&mut seen, left).await {
                break;
            }
        }
        self.live.get()
    }
}

/// A connection's claim on its slot; released on drop.
pub struct ConnSlot<'a> {
    conns: &'a Conns,
    index: usize,
}

impl ConnSlot<'_> {
    /// The connection waits for a request: closable at shutdown.
    pub fn idle(&self) {
        self.conns.slots.borrow_mut()[self.index].idle = true;
    }

    /// The connection serves a request: shutdown lets it finish.
    pub fn busy(&self) {
        self.conns.slots.borrow_mut()[self.index].idle = false;
    }
}

impl Drop for ConnSlot<'_> {
    fn drop(&mut self) {
        self.conns.slots.borrow_mut()[self.index] = Slot {
            fd: -1,
            idle: false,
            listener: 0,
        };
        self.conns.free.borrow_mut().push(self.index);
        self.conns.live.set(self.conns.live.get() - 1);
        if self.conns.closing.get() {
            self.conns.ended.raise();
        }
    }
}
