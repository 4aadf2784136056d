//! One core's timers: a binary heap of deadlines over a slab of slots, with lazy cancellation.
//!
//! The nearest deadline is the loop's `epoll_wait` timeout; no kernel timer is made per
//! operation. An I/O timeout is armed only when the operation has to wait, and cancelled when it
//! completes, so most timers are cancelled rather than fired. Cancelling marks the slot free
//! (its generation moves on) and leaves the heap entry behind; entries whose generation no
//! longer matches are skipped when they reach the top, and the heap is rebuilt without them
//! once they are a third of it (half as many as the live ones), so it stays within 1.5 times the
//! live timers plus a constant (amortised O(1) per cancellation) however long the timeouts
//! are: 10,000 idle connections' keep-alive timers hold a heap of 16,384 entries (256 KiB).
//!
//! Runs on the owning core; takes no lock; allocates only when the number of live timers
//! grows past what the heap and slab already hold.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::task::Waker;
use std::time::{Duration, Instant};

/// Names one armed timer: its slot and the slot's generation when it was armed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TimerId {
    slot: u32,
    gen: u32,
}

enum State {
    Free,
    Waiting(Option<Waker>),
    Fired,
}

struct Slot {
    gen: u32,
    state: State,
}

/// Heap entry: (deadline in ns since `epoch`, slot, generation). 16 bytes.
type Entry = Reverse<(u64, u32, u32)>;

/// Rebuild the heap once this many cancelled entries are in it and they are half the live.
const COMPACT_MIN: usize = 64;

pub(crate) struct Timers {
    epoch: Option<Instant>,
    heap: BinaryHeap<Entry>,
    /// Chunked: grows without moving or copying (see `chunked`).
    slots: super::chunked::Chunked<Slot>,
    free: Vec<u32>,
    /// Heap entries whose slot was cancelled (or re-armed) since they were pushed.
    stale: usize,
}

impl Timers {
    pub(crate) const fn new() -> Timers {
        Timers {
            epoch: None,
            heap: BinaryHeap::new(),
            slots: super::chunked::Chunked::new(),
            free: Vec::new(),
            stale: 0,
        }
    }

    /// `t` in ns since the epoch: the first time a timer was used (earlier instants are 0).
    fn ns(&mut self, t: Instant) -> u64 {
        let epoch = *self.epoch.get_or_insert_with(Instant::now);
        u64::try_from(t.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Arms a timer that wakes `waker` at `deadline`.
    pub(crate) fn insert(&mut self, deadline: Instant, waker: &Waker) -> TimerId {
        let at = self.ns(deadline);
        let slot = match self.free.pop() {
            Some(i) => i,
            None => {
                let i = u32::try_from(self.slots.len()).expect("fewer than 2^32 timers");
                self.slots.push(Slot {
                    gen: 0,
                    state: State::Free,
                });
                i
            }
        };
        let s = &mut self.slots[slot as usize];
        s.state = State::Waiting(Some(waker.clone()));
        let id = TimerId { slot, gen: s.gen };
        self.heap.push(Reverse((at, slot, id.gen)));
        id
    }

    /// True once the timer fired; otherwise `waker` replaces the one to wake.
    pub(crate) fn poll(&mut self, id: TimerId, waker: &Waker) -> bool {
        let Some(s) = self.slots.get_mut(id.slot as usize) else {
            return true;
        };
        if s.gen != id.gen {
            return true;
        }
        match &mut s.state {
            State::Waiting(w) => {
                if !w.as_ref().is_some_and(|w| w.will_wake(waker)) {
                    *w = Some(waker.clone());
                }
                false
            }
            State::Fired | State::Free => true,
        }
    }

    /// Disarms a timer (fired or not) and frees its slot. Returns the waker it held, for the
    /// caller to drop after releasing the borrow of `self` (dropping a task's last waker may
    /// schedule it, which must not find the timers borrowed).
    pub(crate) fn cancel(&mut self, id: TimerId) -> Option<Waker> {
        let s = self.slots.get_mut(id.slot as usize)?;
        if s.gen != id.gen {
            return None;
        }
        let old = std::mem::replace(&mut s.state, State::Free);
        s.gen = s.gen.wrapping_add(1);
        self.free.push(id.slot);
        match old {
            State::Waiting(w) => {
                // Its heap entry is still there.
                self.stale += 1;
                if self.stale >= COMPACT_MIN && self.stale * 3 > self.heap.len() {
                    self.compact();
                }
                w
            }
            State::Fired | State::Free => None,
        }
    }

    fn compact(&mut self) {
        let slots = &self.slots;
        self.heap.retain(|Reverse((_, slot, gen))| {
            let s = &slots[*slot as usize];
            s.gen == *gen && matches!(s.state, State::Waiting(_))
        });
        self.stale = 0;
    }

    fn is_live(&self, slot: u32, gen: u32) -> bool {
        let s = &self.slots[slot as usize];
        s.gen == gen && matches!(s.state, State::Waiting(_))
    }

    /// How long until the nearest live deadline (zero if it passed); None: no timer.
    pub(crate) fn next_timeout(&mut self, now: Instant) -> Option<Duration> {
        let now = self.ns(now);
        while let Some(&Reverse((at, slot, gen))) = self.heap.peek() {
            if self.is_live(slot, gen) {
                return Some(Duration::from_nanos(at.saturating_sub(now)));
            }
            self.heap.pop();
            self.stale = self.stale.saturating_sub(1);
        }
        None
    }

    /// Takes the waker of every timer due at `now` (in deadline order) into `due`.
    pub(crate) fn fire(&mut self, now: Instant, due: &mut Vec<Waker>) {
        let now = self.ns(now);
        while let Some(&Reverse((at, slot, gen))) = self.heap.peek() {
            if at > now && self.is_live(slot, gen) {
                return;
            }
            self.heap.pop();
            let s = &mut self.slots[slot as usize];
            if s.gen != gen || !matches!(s.state, State::Waiting(_)) {
                self.stale = self.stale.saturating_sub(1);
                continue;
            }
            if let State::Waiting(Some(w)) = std::mem::replace(&mut s.state, State::Fired) {
                due.push(w);
            }
        }
    }

    /// Empties the timers at teardown; the wakers are returned to be dropped outside.
    pub(crate) fn clear(&mut self) -> Vec<Waker> {
        let wakers = self
            .slots
            .iter_mut()
            .filter_map(|s| match std::mem::replace(&mut s.state, State::Free) {
                State::Waiting(w) => w,
                _ => None,
            })
            .collect();
        *self = Timers::new();
        wakers
    }

    #[cfg(test)]
    pub(crate) fn heap_len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn waker() -> (Arc<Count>, Waker) {
        let c = Arc::new(Count(AtomicUsize::new(0)));
        (c.clone(), Waker::from(c))
    }

    /// Empty timers whose epoch is the instant returned.
    fn timers() -> (Instant, Timers) {
        let t0 = Instant::now();
        let mut t = Timers::new();
        t.epoch = Some(t0);
        (t0, t)
    }

    #[test]
    fn fires_due_timers_in_deadline_order_and_skips_cancelled() {
        let (t0, mut t) = timers();
        let (_, w) = waker();
        let ids: Vec<_> = [30u64, 10, 20, 40]
            .iter()
            .map(|ms| t.insert(t0 + Duration::from_millis(*ms), &w))
            .collect();
        t.cancel(ids[2]);
        assert_eq!(
            t.next_timeout(t0).map(|d| d.as_millis()),
            Some(10),
            "nearest live deadline"
        );
        let mut due = Vec::new();
        t.fire(t0 + Duration::from_millis(35), &mut due);
        assert_eq!(due.len(), 2, "10 and 30 ms fired, 20 was cancelled");
        assert!(t.poll(ids[0], &w) && t.poll(ids[1], &w));
        assert!(!t.poll(ids[3], &w));
        assert_eq!(
            t.next_timeout(t0 + Duration::from_millis(35))
                .map(|d| d.as_millis()),
            Some(5)
        );
    }

    #[test]
    fn cancelled_entries_do_not_pile_up() {
        let (t0, mut t) = timers();
        let (_, w) = waker();
        let keep = t.insert(t0 + Duration::from_secs(60), &w);
        for _ in 0..100_000 {
            let id = t.insert(t0 + Duration::from_secs(60), &w);
            t.cancel(id);
        }
        assert!(t.heap_len() <= 2 * COMPACT_MIN + 2, "heap {}", t.heap_len());
        assert!(!t.poll(keep, &w));
    }

    #[test]
    fn with_many_live_timers_the_heap_stays_within_one_and_a_half_times_them() {
        let (t0, mut t) = timers();
        let (_, w) = waker();
        let live: Vec<_> = (0..10_000)
            .map(|_| t.insert(t0 + Duration::from_secs(60), &w))
            .collect();
        let mut most = 0;
        for _ in 0..50_000 {
            let id = t.insert(t0 + Duration::from_secs(1), &w);
            t.cancel(id);
            most = most.max(t.heap_len());
        }
        assert!(most <= 15_000 + COMPACT_MIN + 1, "heap reached {most}");
        assert!(live.iter().all(|id| !t.poll(*id, &w)));
    }

    #[test]
    fn a_reused_slot_does_not_answer_for_the_old_timer() {
        let (t0, mut t) = timers();
        let (count, w) = waker();
        let old = t.insert(t0 + Duration::from_millis(1), &w);
        t.cancel(old);
        let new = t.insert(t0 + Duration::from_millis(50), &w);
        let mut due = Vec::new();
        t.fire(t0 + Duration::from_millis(10), &mut due);
        assert!(
            due.is_empty(),
            "the cancelled 1 ms entry must not fire the new timer"
        );
        assert!(t.cancel(old).is_none());
        assert!(!t.poll(new, &w));
        t.fire(t0 + Duration::from_millis(60), &mut due);
        due.drain(..).for_each(Waker::wake);
        assert_eq!(count.0.load(Ordering::Relaxed), 1);
    }
}
