//! The readiness reactor: one epoll instance per core, every socket registered once,
//! edge-triggered, for both directions.
//!
//! Each socket has a [`Source`]: a readiness flag and a waker per direction. An operation tries
//! its syscall while the flag is set; when the kernel says EAGAIN (or a receive came back short,
//! see `net`) the flag is cleared and the task's waker stored. An edge sets the flag and wakes
//! the stored waker only if the flag was clear, so the EPOLLOUT that Linux reports alongside
//! every EPOLLIN costs nothing. The waker is taken when woken, so a socket holds one only while
//! a task waits on it: an idle pooled connection does not keep the task that last used it
//! allocated.
//!
//! Flags and wakers change only in the task that owns the socket and in [`Reactor::park`],
//! which never runs while a task runs. So an edge that arrives after an operation saw EAGAIN is
//! always seen by the next `park`: no edge is lost between the syscall and the wait.
//!
//! A socket leaves the epoll set when its descriptor closes (nothing here duplicates
//! descriptors), so there is no EPOLL_CTL_DEL; its slab slot is freed at the same time. An
//! event's token carries the slot and the slot's generation, so an event for a slot freed and
//! reused in between could not wake the new owner (it cannot happen today: slots are freed only
//! while tasks run, and a `park`'s events are all dispatched before any task runs).
//!
//! Runs on the owning core; takes no lock.

use std::cell::Cell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::task::Waker;
use std::time::Duration;

/// Events taken per `epoll_wait`.
const EVENTS: usize = 256;
/// Token of the executor's eventfd (foreign wakes).
const NOTIFY: u64 = u64::MAX;

/// Which readiness an operation waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dir {
    Read,
    Write,
}

/// What a socket is registered for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Interest {
    /// A connected stream: read, write, peer shutdown.
    Stream,
    /// A listening socket: incoming connections.
    Listen,
}

/// Readiness and wakers of one registered socket.
pub(crate) struct Source {
    readable: Cell<bool>,
    writable: Cell<bool>,
    /// The peer shut down its side or the socket failed: reads end at once from now on.
    hup: Cell<bool>,
    reader: Cell<Option<Waker>>,
    writer: Cell<Option<Waker>>,
}

impl Source {
    pub(crate) fn ready(&self, dir: Dir) -> bool {
        match dir {
            Dir::Read => self.readable.get(),
            Dir::Write => self.writable.get(),
        }
    }

    /// The operation saw EAGAIN (or inferred it): wait for the next edge.
    pub(crate) fn clear(&self, dir: Dir) {
        match dir {
            Dir::Read => self.readable.set(false),
            Dir::Write => self.writable.set(false),
        }
    }

    /// Whether the peer's end of stream (or an error) was seen: a short read does not mean
    /// the socket is drained of its end-of-stream.
    pub(crate) fn hup(&self) -> bool {
        self.hup.get()
    }

    /// Stores the waker to wake on the next edge in `dir` (kept if it wakes the same task).
    pub(crate) fn wait(&self, dir: Dir, waker: &Waker) {
        let cell = match dir {
            Dir::Read => &self.reader,
            Dir::Write => &self.writer,
        };
        match cell.take() {
            Some(w) if w.will_wake(waker) => cell.set(Some(w)),
            old => {
                cell.set(Some(waker.clone()));
                // Dropped after the cell holds the new waker: dropping a task's last waker
                // may schedule it, which touches no source.
                drop(old);
            }
        }
    }

    fn edge(&self, dir: Dir) {
        let (flag, cell) = match dir {
            Dir::Read => (&self.readable, &self.reader),
            Dir::Write => (&self.writable, &self.writer),
        };
        if flag.replace(true) {
            // Nobody saw EAGAIN since the last edge: nobody waits.
            return;
        }
        if let Some(w) = cell.take() {
            w.wake();
        }
    }
}

/// A socket's place in the reactor. Dropping it frees the slot; the descriptor must be closed
/// right after (that is what removes it from the epoll set).
pub(crate) struct Registration {
    source: Rc<Source>,
    token: u64,
}

impl Registration {
    pub(crate) fn source(&self) -> &Source {
        &self.source
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // Outside a running core (teardown after a panic) there is nothing left to free.
        super::exec::try_with_epoll(|r| r.free(self.token));
    }
}

struct Slot {
    gen: u32,
    source: Option<Rc<Source>>,
}

pub(crate) struct Reactor {
    epoll: OwnedFd,
    /// The executor's eventfd, written by threads that wake a task of this core.
    notify: RawFd,
    events: Vec<libc::epoll_event>,
    /// Chunked: grows without moving or copying (see `chunked`).
    slots: super::chunked::Chunked<Slot>,
    free: Vec<u32>,
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

impl Reactor {
    /// A new epoll set that watches `notify` (the executor's eventfd).
    pub(crate) fn new(notify: RawFd) -> io::Result<Reactor> {
        // SAFETY: epoll_create1 takes no pointers; a non-negative result is a new descriptor.
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: `fd` was just created and is owned by nothing else.
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        let r = Reactor {
            epoll,
            notify,
            events: Vec::with_capacity(EVENTS),
            slots: super::chunked::Chunked::new(),
            free: Vec::new(),
        };
        r.ctl_add(notify, (libc::EPOLLIN | libc::EPOLLET) as u32, NOTIFY)?;
        Ok(r)
    }

    fn ctl_add(&self, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: `ev` is a live epoll_event for the duration of the call; the kernel copies it.
        cvt(unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) })?;
        Ok(())
    }

    /// Adds `fd` to the epoll set, edge-triggered, once for its whole life. Both directions
    /// start ready: the first operation tries its syscall.
    pub(crate) fn register(&mut self, fd: RawFd, interest: Interest) -> io::Result<Registration> {
        let events = match interest {
            Interest::Stream => libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET,
            Interest::Listen => libc::EPOLLIN | libc::EPOLLET,
        } as u32;
        let source = Rc::new(Source {
            readable: Cell::new(true),
            writable: Cell::new(true),
            hup: Cell::new(false),
            reader: Cell::new(None),
            writer: Cell::new(None),
        });
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                let i = u32::try_from(self.slots.len())
                    .map_err(|_| io::Error::other("too many sockets on one core"))?;
                self.slots.push(Slot {
                    gen: 0,
                    source: None,
                });
                i
            }
        };
        let slot = &mut self.slots[index as usize];
        let token = (u64::from(slot.gen) << 32) | u64::from(index);
        if let Err(e) = self.ctl_add(fd, events, token) {
            self.free.push(index);
            return Err(e);
        }
        self.slots[index as usize].source = Some(source.clone());
        Ok(Registration { source, token })
    }

    fn free(&mut self, token: u64) {
        let index = (token & u64::from(u32::MAX)) as u32;
        if let Some(slot) = self.slots.get_mut(index as usize) {
            if u64::from(slot.gen) == token >> 32 && slot.source.take().is_some() {
                slot.gen = slot.gen.wrapping_add(1);
                self.free.push(index);
            }
        }
    }

    /// One `epoll_wait` (None: until an event), then sets the flags and wakes the waiters of
    /// what became ready. Returns true when another thread wrote the eventfd.
    pub(crate) fn park(&mut self, timeout: Option<Duration>) -> io::Result<bool> {
        let ms = match timeout {
            None => -1,
            // Rounded up: waking before the deadline would only spin.
            Some(t) => i32::try_from(t.as_nanos().div_ceil(1_000_000)).unwrap_or(i32::MAX),
        };
        self.events.clear();
        // SAFETY: the kernel writes at most `capacity` events into the vector's spare capacity.
        let n = unsafe {
            libc::epoll_wait(
                self.epoll.as_raw_fd(),
                self.events.as_mut_ptr(),
                EVENTS as libc::c_int,
                ms,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::Interrupted => Ok(false),
                _ => Err(e),
            };
        }
        // SAFETY: epoll_wait initialised the first `n` (<= EVENTS = capacity) entries.
        unsafe { self.events.set_len(n as usize) };
        let mut notified = false;
        for ev in &self.events {
            let (flags, token) = (ev.events as libc::c_int, ev.u64);
            if token == NOTIFY {
                notified = true;
                continue;
            }
            let index = (token & u64::from(u32::MAX)) as usize;
            let Some(slot) = self.slots.get(index) else {
                continue;
            };
            let Some(source) = slot
                .source
                .as_ref()
                .filter(|_| u64::from(slot.gen) == token >> 32)
            else {
                continue;
            };
            let closed = flags & (libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) != 0;
            if closed {
                source.hup.set(true);
            }
            if closed || flags & libc::EPOLLIN != 0 {
                source.edge(Dir::Read);
            }
            if flags & (libc::EPOLLOUT | libc::EPOLLHUP | libc::EPOLLERR) != 0 {
                source.edge(Dir::Write);
            }
        }
        if notified {
            let mut count = 0u64;
            // SAFETY: reads 8 bytes into a live u64 from our eventfd (nonblocking); resets it.
            unsafe { libc::read(self.notify, (&mut count as *mut u64).cast(), 8) };
        }
        Ok(notified)
    }

    /// Takes every waker the sources hold, at teardown: a task that waits on its own socket
    /// would otherwise keep itself alive through its waker.
    pub(crate) fn take_wakers(&mut self) -> Vec<Waker> {
        let mut out = Vec::new();
        for s in self.slots.iter().filter_map(|s| s.source.as_ref()) {
            out.extend(s.reader.take());
            out.extend(s.writer.take());
        }
        out
    }
}
