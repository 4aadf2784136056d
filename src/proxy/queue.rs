//! Waiting for a server when every usable one is at `max_conns` (nginx `queue`, HAProxy's
//! per-backend queue).
//!
//! The bound is shared by all cores (one atomic per upstream); the order is arrival order
//! within a core: only the oldest waiter of a core may take a freed slot. A slot freed on
//! another core is noticed by polling, so a waiter re-checks every `POLL`. Queueing is an
//! overload state; the polling costs nothing when no request waits.

use super::upstream::View;
use super::Conn;
use crate::balance::ServerView;
use crate::config::{Queue, Upstream, UpstreamId};
use crate::engine;
use crate::state::{now_ms, Active};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

const POLL: Duration = Duration::from_millis(2);

pub(super) enum QueueEnd {
    /// The queue holds `size` requests already.
    Full,
    Timeout,
}

impl<'a> Conn<'a> {
    /// Picks a server and takes one of its `max_conns` slots.
    pub(super) fn pick_slot(
        &self,
        up: UpstreamId,
        upstream: &'a Upstream,
        tried: u128,
    ) -> Option<(usize, Active<'a>)> {
        let table = &self.w.shared.state;
        // A slot taken by another core between the pick and the take: pick again.
        for _ in 0..4 {
            let i = self.pick(up, upstream, tried)?;
            let server = &upstream.servers[i];
            if let Some(active) = table.get(server.id).try_begin(server.max_conns) {
                return Some((i, active));
            }
        }
        None
    }

    /// Some server not yet tried is up and ready, but at its `max_conns`.
    pub(super) fn all_busy(&self, upstream: &Upstream, tried: u128) -> bool {
        let table = &self.w.shared.state;
        let now = now_ms();
        let view = View {
            upstream,
            table,
            now,
            tried,
        };
        (0..view.len()).any(|i| {
            let s = &upstream.servers[i];
            let st = table.get(s.id);
            let not_tried = i >= 128 || tried & (1u128 << i) == 0;
            not_tried && st.usable(now) && s.max_conns.is_some()
        })
    }

    pub(super) async fn wait_for_slot(
        &self,
        up: UpstreamId,
        upstream: &'a Upstream,
        queue: Queue,
        tried: u128,
    ) -> Result<(usize, Active<'a>), QueueEnd> {
        let queued = self.w.shared.state.queued(up);
        if queued.fetch_add(1, Relaxed) >= queue.size {
            queued.fetch_sub(1, Relaxed);
            return Err(QueueEnd::Full);
        }
        self.w.metrics.queue_enter(up);
        let ticket = self.w.queue_ticket.get();
        self.w.queue_ticket.set(ticket + 1);
        self.w.queues.borrow_mut()[up.0 as usize].push_back(ticket);
        let deadline = Instant::now() + queue.timeout;
        let result = loop {
            let head = self.w.queues.borrow()[up.0 as usize].front() == Some(&ticket);
            if head {
                if let Some(slot) = self.pick_slot(up, upstream, tried) {
                    break Ok(slot);
                }
            }
            if Instant::now() >= deadline {
                break Err(QueueEnd::Timeout);
            }
            engine::sleep(POLL).await;
        };
        self.w.queues.borrow_mut()[up.0 as usize].retain(|&t| t != ticket);
        queued.fetch_sub(1, Relaxed);
        self.w.metrics.queue_leave(up);
        if matches!(result, Err(QueueEnd::Timeout)) {
            self.w.metrics.queue_timeout(up);
        }
        result
    }
}
