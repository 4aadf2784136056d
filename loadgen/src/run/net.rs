//! The load generator's reactor: nonblocking TCP sockets on one epoll instance per core, and
//! timers, driven by one poller task per core. glommio still provides the pinned executor and
//! runs the tasks.
//!
//! Why not glommio's sockets here: glommio 0.9 waits for a socket with an io_uring poll whose
//! completion arrives as task work, and the kernel interrupts the thread (an IPI) to deliver it
//! even while the thread is busy; epoll only wakes a thread that sleeps. Against a loopback
//! server that cost about 40% of closed-loop throughput compared with wrk, so the load
//! generator would have reported its own overhead as the server's.
//!
//! The poller blocks in `epoll_pwait2` only when no other task on the core has touched the
//! reactor since its previous turn: every task of the core waits on this reactor (a socket or
//! a timer), so none can be runnable then, and the wait ends at the earliest timer.

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::io::{self, Read as _, Write as _};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use futures_lite::{AsyncRead, AsyncWrite};

use super::conn::Clock;

const MAX_EVENTS: usize = 256;

#[derive(Default)]
struct Waiters {
    read: Option<Waker>,
    write: Option<Waker>,
    /// Writable (or failed) was reported: a pending connect has finished.
    writable: bool,
}

struct Timer {
    /// 0: free.
    deadline: u64,
    waker: Option<Waker>,
}

/// One core's reactor. Runs on the owning core; takes no lock.
pub struct Net {
    epoll: OwnedFd,
    events: RefCell<Vec<libc::epoll_event>>,
    sockets: RefCell<Vec<Waiters>>,
    free_sockets: RefCell<Vec<usize>>,
    /// `(deadline, timer id)`, earliest first; entries of timers since freed are skipped.
    heap: RefCell<BinaryHeap<Reverse<(u64, usize)>>>,
    timers: RefCell<Vec<Timer>>,
    free_timers: RefCell<Vec<usize>>,
    /// Bumped whenever a task polls one of this reactor's futures.
    generation: Cell<u64>,
    /// Tasks that still use the reactor; the poller stops when none is left.
    users: Cell<usize>,
    pub clock: Clock,
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

impl Net {
    pub fn new(clock: Clock) -> io::Result<Rc<Net>> {
        // SAFETY: epoll_create1 takes no pointers; a non-negative result is a new descriptor
        // that nothing else owns.
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: `fd` was just created above and is owned by nothing else.
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Rc::new(Net {
            epoll,
            events: RefCell::new(vec![libc::epoll_event { events: 0, u64: 0 }; MAX_EVENTS]),
            sockets: RefCell::default(),
            free_sockets: RefCell::default(),
            heap: RefCell::default(),
            timers: RefCell::default(),
            free_timers: RefCell::default(),
            generation: Cell::new(1),
            users: Cell::new(0),
            clock,
        }))
    }

    fn touch(&self) {
        self.generation.set(self.generation.get().wrapping_add(1));
    }

    /// A task starts using the reactor; the poller runs until every user has left.
    pub fn enter(&self) {
        self.users.set(self.users.get() + 1);
    }

    pub fn leave(&self) {
        self.users.set(self.users.get() - 1);
        self.touch();
    }

    fn register(&self, fd: RawFd) -> io::Result<usize> {
        let token = match self.free_sockets.borrow_mut().pop() {
            Some(t) => t,
            None => {
                let mut sockets = self.sockets.borrow_mut();
                sockets.push(Waiters::default());
                sockets.len() - 1
            }
        };
        self.sockets.borrow_mut()[token] = Waiters::default();
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
            u64: token as u64,
        };
        // SAFETY: both descriptors are open (the epoll instance is owned by `self`, `fd` by
        // the caller's socket) and `ev` is a valid event for the duration of the call.
        let r = cvt(unsafe {
            libc::epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev)
        });
        if let Err(e) = r {
            self.free_sockets.borrow_mut().push(token);
            return Err(e);
        }
        Ok(token)
    }

    fn deregister(&self, fd: RawFd, token: usize) {
        // SAFETY: both descriptors are still open; a null event is allowed for DEL.
        let _ = unsafe {
            libc::epoll_ctl(
                self.epoll.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                fd,
                std::ptr::null_mut(),
            )
        };
        self.sockets.borrow_mut()[token] = Waiters::default();
        self.free_sockets.borrow_mut().push(token);
    }

    /// Completes at `deadline` on the run's clock.
    pub fn sleep_until(&self, deadline: u64) -> Sleep<'_> {
        Sleep {
            net: self,
            deadline,
            id: None,
        }
    }

    /// Lets the core's other runnable tasks go first.
    pub fn yield_now(&self) -> YieldNow<'_> {
        YieldNow {
            net: self,
            yielded: false,
        }
    }

    /// The poller: one per core, spawned before the tasks that use the reactor.
    pub async fn run(self: Rc<Self>) {
        let mut seen = 0;
        while self.users.get() > 0 {
            let generation = self.generation.get();
            let idle = generation == seen;
            seen = generation;
            let now = self.clock.now();
            let timeout = if idle {
                self.next_deadline().map(|d| d.saturating_sub(now))
            } else {
                Some(0)
            };
            if self.wait(timeout).is_err() {
                // EINTR and the like: try again on the next turn.
                seen = 0;
            }
            self.fire_timers(self.clock.now());
            futures_lite::future::yield_now().await;
        }
    }

    fn next_deadline(&self) -> Option<u64> {
        let mut heap = self.heap.borrow_mut();
        let timers = self.timers.borrow();
        while let Some(&Reverse((deadline, id))) = heap.peek() {
            if timers[id].deadline == deadline {
                return Some(deadline);
            }
            heap.pop();
        }
        None
    }

    fn fire_timers(&self, now: u64) {
        let mut heap = self.heap.borrow_mut();
        let mut timers = self.timers.borrow_mut();
        while let Some(&Reverse((deadline, id))) = heap.peek() {
            if deadline > now {
                break;
            }
            heap.pop();
            if timers[id].deadline == deadline {
                if let Some(w) = timers[id].waker.take() {
                    w.wake();
                }
            }
        }
    }

    /// Waits up to `timeout_ns` (`None`: forever) for socket events and wakes their waiters.
    fn wait(&self, timeout_ns: Option<u64>) -> io::Result<()> {
        let ts = timeout_ns.map(|ns| libc::timespec {
            tv_sec: (ns / 1_000_000_000) as libc::time_t,
            tv_nsec: (ns % 1_000_000_000) as libc::c_long,
        });
        let ts_ptr = ts
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        let mut events = self.events.borrow_mut();
        // SAFETY: the epoll descriptor is open, `events` has room for MAX_EVENTS entries,
        // `ts_ptr` is null or points to `ts`, which outlives the call; no signal mask.
        let n = cvt(unsafe {
            libc::epoll_pwait2(
                self.epoll.as_raw_fd(),
                events.as_mut_ptr(),
                MAX_EVENTS as libc::c_int,
                ts_ptr,
                std::ptr::null(),
            )
        })?;
        let mut sockets = self.sockets.borrow_mut();
        for ev in &events[..n as usize] {
            let Some(w) = sockets.get_mut(ev.u64 as usize) else {
                continue;
            };
            let flags = ev.events as libc::c_int;
            let failed = flags & (libc::EPOLLERR | libc::EPOLLHUP) != 0;
            if failed || flags & (libc::EPOLLIN | libc::EPOLLRDHUP) != 0 {
                if let Some(r) = w.read.take() {
                    r.wake();
                }
            }
            if failed || flags & libc::EPOLLOUT != 0 {
                w.writable = true;
                if let Some(wr) = w.write.take() {
                    wr.wake();
                }
            }
        }
        Ok(())
    }
}

fn set_waker(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(w) if w.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

/// A timer on the core's reactor.
pub struct Sleep<'a> {
    net: &'a Net,
    deadline: u64,
    id: Option<usize>,
}

impl Future for Sleep<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let net = self.net;
        net.touch();
        if net.clock.now() >= self.deadline {
            self.release();
            return Poll::Ready(());
        }
        let id = match self.id {
            Some(id) => id,
            None => {
                let id = net.free_timers.borrow_mut().pop().unwrap_or_else(|| {
                    let mut timers = net.timers.borrow_mut();
                    timers.push(Timer {
                        deadline: 0,
                        waker: None,
                    });
                    timers.len() - 1
                });
                net.timers.borrow_mut()[id].deadline = self.deadline.max(1);
                net.heap
                    .borrow_mut()
                    .push(Reverse((self.deadline.max(1), id)));
                self.id = Some(id);
                id
            }
        };
        set_waker(&mut net.timers.borrow_mut()[id].waker, cx);
        Poll::Pending
    }
}

impl Sleep<'_> {
    fn release(&mut self) {
        if let Some(id) = self.id.take() {
            let mut timers = self.net.timers.borrow_mut();
            timers[id].deadline = 0;
            timers[id].waker = None;
            self.net.free_timers.borrow_mut().push(id);
        }
    }
}

impl Drop for Sleep<'_> {
    fn drop(&mut self) {
        self.release();
    }
}

pub struct YieldNow<'a> {
    net: &'a Net,
    yielded: bool,
}

impl Future for YieldNow<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.net.touch();
        if self.yielded {
            return Poll::Ready(());
        }
        self.yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// A nonblocking TCP connection registered with the core's reactor.
pub struct Socket {
    net: Rc<Net>,
    stream: std::net::TcpStream,
    token: usize,
}

impl Socket {
    /// Connects without blocking the core; the caller bounds the wait.
    pub async fn connect(net: &Rc<Net>, addr: SocketAddr) -> io::Result<Socket> {
        use socket2::{Domain, Socket as RawSocket, Type};
        let raw = RawSocket::new(Domain::for_address(addr), Type::STREAM.nonblocking(), None)?;
        raw.set_nodelay(true)?;
        match raw.connect(&addr.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        let stream: std::net::TcpStream = raw.into();
        let token = net.register(stream.as_raw_fd())?;
        let socket = Socket {
            net: net.clone(),
            stream,
            token,
        };
        std::future::poll_fn(|cx| {
            socket.net.touch();
            let mut sockets = socket.net.sockets.borrow_mut();
            let w = &mut sockets[socket.token];
            if w.writable {
                Poll::Ready(())
            } else {
                set_waker(&mut w.write, cx);
                Poll::Pending
            }
        })
        .await;
        if let Some(e) = socket.stream.take_error()? {
            return Err(e);
        }
        socket.stream.peer_addr()?;
        Ok(socket)
    }

    fn wait(&self, cx: &Context<'_>, write: bool) {
        let mut sockets = self.net.sockets.borrow_mut();
        let w = &mut sockets[self.token];
        set_waker(if write { &mut w.write } else { &mut w.read }, cx);
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        self.net.deregister(self.stream.as_raw_fd(), self.token);
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        self.net.touch();
        loop {
            match (&self.stream).read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.wait(cx, false);
                    return Poll::Pending;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return Poll::Ready(r),
            }
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.net.touch();
        loop {
            match (&self.stream).write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.wait(cx, true);
                    return Poll::Pending;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return Poll::Ready(r),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.stream.shutdown(std::net::Shutdown::Write))
    }
}
