//! The listening sockets of one listener, as a generation hands them to the cores.
//!
//! Identity is the `Arc`: a reload that keeps a listener's address puts the very same
//! [`Sockets`] in the next generation, so a core that already serves it leaves it alone (same
//! socket, no gap); a new `Arc` is a listener to start serving, and one missing from the
//! generation a core moves to is a listener to stop. A core takes its own descriptors once
//! (lock-free); descriptors no core took close with the last generation that holds them.

use crossbeam_queue::SegQueue;
use std::net::TcpListener;

pub struct Sockets {
    /// By core: the listening sockets that core is to serve (one, or more after a binary
    /// upgrade from a process with more cores), until it takes them.
    per_core: Box<[SegQueue<TcpListener>]>,
}

impl Sockets {
    /// `per_core[i]`: what core `i` serves.
    pub fn new(per_core: Vec<Vec<TcpListener>>) -> Sockets {
        Sockets {
            per_core: per_core
                .into_iter()
                .map(|socks| {
                    let q = SegQueue::new();
                    socks.into_iter().for_each(|s| q.push(s));
                    q
                })
                .collect(),
        }
    }

    /// Core `core`'s sockets; empty once taken. Runs on that core.
    pub fn take(&self, core: usize) -> Vec<TcpListener> {
        let Some(q) = self.per_core.get(core) else {
            return Vec::new();
        };
        std::iter::from_fn(|| q.pop()).collect()
    }
}
