//! Waiting for a server when every usable one is at `max_conns` (nginx `queue`, HAProxy's
//! per-backend queue).
//!
//! The bound is shared by all cores (one atomic per upstream); the order is arrival order
//! within a core: only the oldest waiter of a core may take a freed slot. Nothing polls: a
//! request that ends on any core while requests wait raises every core's wake-up for that
//! upstream ([`UpstreamQueue::slot_freed`]), which each core's oldest waiter awaits; a waiter
//! that leaves (served, timed out or dropped) wakes the next one of its core.

use super::error::Failure;
use super::upstream::View;
use super::Conn;
use crate::balance::ServerView;
use crate::config::{Queue, Upstream, UpstreamId};
use crate::engine;
use crate::state::{now_ms, Active, UpstreamQueue};
use std::sync::atomic::Ordering::Relaxed;
use std::task::Poll;

/// A request's claim on one of a server's `max_conns` slots, for as long as it is served.
/// Ending it lets a queued request of the upstream (on any core) try again.
pub(super) struct Slot<'a> {
    /// The server's index in its upstream.
    pub(super) index: usize,
    active: Option<Active<'a>>,
    queue: &'a UpstreamQueue,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        // The in-flight count first, so a woken waiter finds the slot free.
        drop(self.active.take());
        self.queue.slot_freed();
    }
}

/// A place in this core's queue of one upstream; leaving it (however the wait ends) hands
/// the turn to the next waiter.
struct Place<'c, 'a> {
    conn: &'c Conn<'a>,
    up: UpstreamId,
    ticket: u64,
}

impl Drop for Place<'_, '_> {
    fn drop(&mut self) {
        let w = self.conn.w;
        let mut queues = w.queues.borrow_mut();
        if let Some(q) = queues.get_mut(self.up.0 as usize) {
            let was_first = q.front().map(|e| e.0) == Some(self.ticket);
            q.retain(|e| e.0 != self.ticket);
            if was_first {
                if let Some(next) = q.front_mut().and_then(|e| e.1.take()) {
                    next.wake();
                }
            }
        }
        w.shared.state.queue(self.up).waiting.fetch_sub(1, Relaxed);
        w.metrics.queue_leave(self.up);
    }
}

impl<'a> Conn<'a> {
    /// One of the `max_conns` slots of server `i`, if it has one free.
    pub(super) fn take_slot(
        &self,
        up: UpstreamId,
        upstream: &'a Upstream,
        i: usize,
    ) -> Option<Slot<'a>> {
        let server = upstream.servers.get(i)?;
        let table = &self.w.shared.state;
        let active = table.get(server.id).try_begin(server.max_conns)?;
        Some(Slot {
            index: i,
            active: Some(active),
            queue: table.queue(up),
        })
    }

    /// Picks a server and takes one of its `max_conns` slots.
    pub(super) fn pick_slot(&self, up: UpstreamId, upstream: &'a Upstream) -> Option<Slot<'a>> {
        // A slot taken by another core between the pick and the take: pick again.
        for _ in 0..4 {
            let i = self.pick(up, upstream)?;
            if let Some(slot) = self.take_slot(up, upstream, i) {
                return Some(slot);
            }
        }
        None
    }

    /// Some server not yet tried is up and ready, but at its `max_conns`.
    pub(super) fn all_busy(&self, upstream: &'a Upstream) -> bool {
        let table = &self.w.shared.state;
        let now = now_ms();
        let view: View<'_> = self.view(upstream);
        (0..view.len()).any(|i| {
            let s = &upstream.servers[i];
            !self.r.tried.contains(i) && table.get(s.id).usable(now) && s.max_conns.is_some()
        })
    }

    /// Waits in the upstream's queue for a slot, at most `queue.timeout`.
    pub(super) async fn wait_for_slot(
        &self,
        up: UpstreamId,
        upstream: &'a Upstream,
        queue: Queue,
    ) -> Result<Slot<'a>, Failure> {
        let shared_queue = self.w.shared.state.queue(up);
        if shared_queue.waiting.fetch_add(1, Relaxed) >= queue.size {
            shared_queue.waiting.fetch_sub(1, Relaxed);
            return Err(Failure::QueueFull);
        }
        self.w.metrics.queue_enter(up);
        let ticket = self.w.queue_ticket.get();
        self.w.queue_ticket.set(ticket + 1);
        self.w.queues.borrow_mut()[up.0 as usize].push_back((ticket, None));
        let place = Place {
            conn: self,
            up,
            ticket,
        };
        let wake = shared_queue.wake(self.w.index);
        let served = async {
            loop {
                self.turn(up, ticket).await;
                let mut seen = wake.count();
                if let Some(slot) = self.pick_slot(up, upstream) {
                    return Ok(slot);
                }
                // A raise after `seen` was read (a slot freed meanwhile) returns at once.
                wake.wait(&mut seen).await;
            }
        };
        let result = futures_lite::future::or(served, async {
            engine::sleep(queue.timeout).await;
            Err(Failure::QueueTimeout)
        })
        .await;
        drop(place);
        if result.is_err() {
            self.w.metrics.queue_timeout(up);
        }
        result
    }

    /// Resolves when `ticket` is the oldest waiter of this core's queue for `up`.
    async fn turn(&self, up: UpstreamId, ticket: u64) {
        std::future::poll_fn(|cx| {
            let mut queues = self.w.queues.borrow_mut();
            let Some(q) = queues.get_mut(up.0 as usize) else {
                return Poll::Ready(());
            };
            if q.front().map(|e| e.0) == Some(ticket) {
                return Poll::Ready(());
            }
            if let Some(e) = q.iter_mut().find(|e| e.0 == ticket) {
                e.1 = Some(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }
}
