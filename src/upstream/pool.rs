//! Per-core keep-alive pools of idle upstream connections, one stack per server.
//!
//! Runs on the owning core; takes no lock. LIFO: the most recently used connection is the
//! least likely to have been closed by the server. Capacity is reserved up front, so take and
//! put never allocate.

use crate::config::{Config, ServerId};
use crate::engine::Stream;
use crate::state::now_ms;

struct Idle {
    stream: Stream,
    since_ms: u64,
}

pub struct Pool {
    idle: Vec<Vec<Idle>>,
    caps: Vec<usize>,
    timeout_ms: u64,
    /// Connections handed out from the pool (reused) and opened fresh, for metrics and tests.
    pub reused: u64,
    pub opened: u64,
}

impl Pool {
    pub fn new(config: &Config) -> Pool {
        let caps: Vec<usize> = config.servers().map(|(_, s)| s.keepalive).collect();
        Pool {
            idle: caps.iter().map(|&c| Vec::with_capacity(c)).collect(),
            caps,
            timeout_ms: config.timeouts.upstream_keepalive.as_millis() as u64,
            reused: 0,
            opened: 0,
        }
    }

    /// An idle connection to `server` that has not outlived the keep-alive timeout.
    pub fn take(&mut self, server: ServerId) -> Option<Stream> {
        let now = now_ms();
        let stack = self.idle.get_mut(server.0 as usize)?;
        while let Some(idle) = stack.pop() {
            if now.saturating_sub(idle.since_ms) < self.timeout_ms {
                self.reused += 1;
                return Some(idle.stream);
            }
        }
        None
    }

    /// Keeps `stream` for reuse if there is room; otherwise it is closed.
    pub fn put(&mut self, server: ServerId, stream: Stream) {
        let i = server.0 as usize;
        if let (Some(stack), Some(&cap)) = (self.idle.get_mut(i), self.caps.get(i)) {
            if stack.len() < cap {
                stack.push(Idle {
                    stream,
                    since_ms: now_ms(),
                });
            }
        }
    }

    /// Closes connections idle for longer than the keep-alive timeout.
    pub fn sweep(&mut self) {
        let now = now_ms();
        let timeout = self.timeout_ms;
        for stack in &mut self.idle {
            stack.retain(|i| now.saturating_sub(i.since_ms) < timeout);
        }
    }

    /// Moves the idle connections of every server that `to` maps to a server of `next` (a
    /// generation that changed servers only: same addresses, same TLS settings) into `next`,
    /// as far as its capacity goes; the rest close with this pool.
    pub fn hand_over(&mut self, next: &mut Pool, to: impl Fn(ServerId) -> Option<ServerId>) {
        for (i, stack) in self.idle.iter_mut().enumerate() {
            let Some(n) = to(ServerId(i as u32)) else {
                continue;
            };
            let (Some(dest), Some(&cap)) =
                (next.idle.get_mut(n.0 as usize), next.caps.get(n.0 as usize))
            else {
                continue;
            };
            // Oldest first, so the most recently used stays on top (LIFO).
            for idle in stack.drain(..) {
                if dest.len() < cap {
                    dest.push(idle);
                }
            }
        }
    }

    /// Keeps nothing from now on (a replaced generation's pool).
    pub fn retire(&mut self) {
        self.caps.iter_mut().for_each(|c| *c = 0);
        self.clear();
    }

    /// Closes every idle connection (shutdown).
    pub fn clear(&mut self) {
        for stack in &mut self.idle {
            stack.clear();
        }
    }

    pub fn idle_count(&self) -> usize {
        self.idle.iter().map(Vec::len).sum()
    }
}
