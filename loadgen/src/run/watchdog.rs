//! Request timeouts without a timer per read: each slot has an `Alarm` with a deadline, and
//! one task per core trips the alarms whose deadline has passed.
//!
//! (A read timeout on the socket itself arms and cancels a reactor timer around every read
//! that waits, which halved closed-loop throughput.)

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use super::net::Net;

/// One slot's deadline; 0 means none.
#[derive(Default)]
pub struct Alarm {
    deadline: Cell<u64>,
    tripped: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Alarm {
    /// Arms the alarm for `at` unless it is already armed.
    pub fn arm(&self, at: u64) {
        if self.deadline.get() == 0 {
            self.deadline.set(at.max(1));
        }
    }

    pub fn disarm(&self) {
        self.deadline.set(0);
        self.tripped.set(false);
    }

    /// Completes once the watchdog has tripped the alarm.
    pub fn rung(&self) -> Rung<'_> {
        Rung(self)
    }
}

pub struct Rung<'a>(&'a Alarm);

impl Future for Rung<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let alarm = self.0;
        if alarm.tripped.get() {
            return Poll::Ready(());
        }
        let mut waker = alarm.waker.borrow_mut();
        match &*waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => *waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

/// The alarms of one core's slots and the task that trips them.
#[derive(Default)]
pub struct Watchdog {
    alarms: RefCell<Vec<Rc<Alarm>>>,
}

impl Watchdog {
    pub fn register(&self) -> Rc<Alarm> {
        let alarm = Rc::new(Alarm::default());
        self.alarms.borrow_mut().push(alarm.clone());
        alarm
    }

    /// Checks every `tick` while the core's reactor has users. Timeouts fire up to one tick
    /// late.
    pub async fn run(self: Rc<Self>, net: Rc<Net>, tick: Duration) {
        let tick = tick.as_nanos() as u64;
        loop {
            net.sleep_until(net.clock.now() + tick).await;
            let now = net.clock.now();
            for alarm in self.alarms.borrow().iter() {
                let d = alarm.deadline.get();
                if d != 0 && now >= d && !alarm.tripped.get() {
                    alarm.tripped.set(true);
                    if let Some(w) = alarm.waker.borrow_mut().take() {
                        w.wake();
                    }
                }
            }
        }
    }
}
