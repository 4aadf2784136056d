//! The generations one core serves: the newest, which new connections are given, and the
//! retired ones still finishing connections. Runs on the owning core; takes no lock.

use super::{Current, Shared, Worker};
use std::cell::RefCell;
use std::rc::{Rc, Weak};
use std::sync::Arc;

/// The worker new connections are given, and the retired ones still serving connections.
pub struct Generations {
    index: usize,
    published: Arc<Current>,
    current: RefCell<Rc<Worker>>,
    retired: RefCell<Vec<Weak<Worker>>>,
}

impl Generations {
    /// Core `index` serving the generation published in `current`.
    pub fn new(index: usize, current: Arc<Current>) -> Generations {
        let first = Rc::new(Worker::new(index, current.load_full(), current.clone()));
        Generations {
            index,
            published: current,
            current: RefCell::new(first),
            retired: RefCell::new(Vec::new()),
        }
    }
}

impl Generations {
    pub fn current(&self) -> Rc<Worker> {
        self.current.borrow().clone()
    }

    /// The worker for a new connection: the published generation's, switching to it first
    /// if a reload just published one (so no connection accepted after a reload uses the
    /// old configuration or certificates).
    pub fn for_new_connection(&self) -> Rc<Worker> {
        let published = self.published.load().generation;
        if published != self.current.borrow().shared.generation {
            self.follow(self.published.load_full());
        }
        self.current()
    }

    pub fn live(&self) -> Vec<Rc<Worker>> {
        let mut all = vec![self.current()];
        all.extend(self.retired.borrow().iter().filter_map(Weak::upgrade));
        all
    }

    /// Moves to `shared` when it is newer than the current worker's generation.
    pub fn follow(&self, shared: Arc<Shared>) {
        if shared.generation <= self.current.borrow().shared.generation {
            return;
        }
        let next = Rc::new(Worker::new(self.index, shared, self.published.clone()));
        let old = self.current.replace(next.clone());
        old.retire(next);
        let mut retired = self.retired.borrow_mut();
        retired.retain(|w| w.strong_count() > 0);
        retired.push(Rc::downgrade(&old));
    }
}
