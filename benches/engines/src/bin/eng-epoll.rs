//! (d) our own edge-triggered epoll loop: one epoll per thread, nonblocking sockets registered
//! once with EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET (no epoll_ctl after that), reads into one
//! per-thread scratch buffer (only a partial message is kept per connection), writes tried at
//! once and finished on EPOLLOUT.
//!
//! A read that returns less than the scratch buffer is taken as "drained" (as nginx does with
//! EPOLLRDHUP): with ET a later arrival raises a new edge. `--until-eagain` reads until EAGAIN.

use engines::{request_len, response_len, Args, Mode, RoundRobin, FIXED_RESPONSE};
use std::os::fd::IntoRawFd;

const SCRATCH: usize = 64 << 10;
const LISTENER: u64 = u64::MAX;

#[derive(PartialEq)]
enum Kind {
    Client,
    Upstream(usize),
}

struct Conn {
    fd: i32,
    gen: u32,
    kind: Kind,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    out_static: bool,
    out_off: usize,
    connecting: bool,
    busy: bool,
    peer: Option<usize>,
}

struct Engine {
    ep: i32,
    listen_fd: i32,
    conns: Vec<Option<Conn>>,
    gens: Vec<u32>,
    free: Vec<usize>,
    mode: Mode,
    until_eagain: bool,
    backends: Vec<libc::sockaddr_in>,
    pool: Vec<Vec<usize>>,
    rr: RoundRobin,
    scratch: Vec<u8>,
}

fn main() {
    let args = Args::parse();
    engines::pin(args.cpu);
    let listener = engines::listen(args.listen);
    listener.set_nonblocking(true).unwrap();
    // SAFETY: plain epoll syscalls on descriptors we own.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    let mut e = Engine {
        ep,
        listen_fd: listener.into_raw_fd(),
        conns: Vec::new(),
        gens: Vec::new(),
        free: Vec::new(),
        mode: args.mode,
        until_eagain: args.flag("until-eagain"),
        backends: args
            .backends
            .iter()
            .map(|a| match a {
                std::net::SocketAddr::V4(v4) => engines::sockaddr(*v4),
                _ => panic!("IPv4 only"),
            })
            .collect(),
        pool: args.backends.iter().map(|_| Vec::new()).collect(),
        rr: RoundRobin::new(args.backends.len().max(1)),
        scratch: vec![0; SCRATCH],
    };
    e.register(e.listen_fd, LISTENER);
    e.run();
}

fn key(idx: usize, gen: u32) -> u64 {
    ((gen as u64) << 32) | idx as u64
}

impl Engine {
    fn register(&self, fd: i32, data: u64) {
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
            u64: data,
        };
        // SAFETY: ev is a valid epoll_event.
        let r = unsafe { libc::epoll_ctl(self.ep, libc::EPOLL_CTL_ADD, fd, &mut ev) };
        assert!(r == 0, "epoll_ctl");
    }

    fn run(&mut self) {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 512];
        loop {
            // SAFETY: `events` has room for 512 entries.
            let n = unsafe { libc::epoll_wait(self.ep, events.as_mut_ptr(), 512, -1) };
            if n < 0 {
                continue;
            }
            for ev in &events[..n as usize] {
                let (data, bits) = (ev.u64, ev.events);
                if data == LISTENER {
                    self.accept();
                    continue;
                }
                let idx = data as u32 as usize;
                if self.gens[idx] != (data >> 32) as u32 || self.conns[idx].is_none() {
                    continue; // closed earlier in this batch
                }
                if bits & (libc::EPOLLOUT as u32) != 0 {
                    self.writable(idx);
                }
                if self.conns[idx].is_some()
                    && bits
                        & (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLERR | libc::EPOLLHUP)
                            as u32
                        != 0
                {
                    self.readable(idx);
                }
            }
        }
    }

    fn alloc(&mut self, fd: i32, kind: Kind) -> usize {
        let idx = match self.free.pop() {
            Some(i) => i,
            None => {
                self.conns.push(None);
                self.gens.push(0);
                self.conns.len() - 1
            }
        };
        self.gens[idx] = self.gens[idx].wrapping_add(1);
        self.conns[idx] = Some(Conn {
            fd,
            gen: self.gens[idx],
            kind,
            inbuf: Vec::new(),
            out: Vec::new(),
            out_static: false,
            out_off: 0,
            connecting: false,
            busy: false,
            peer: None,
        });
        self.register(fd, key(idx, self.gens[idx]));
        idx
    }

    fn conn(&mut self, idx: usize) -> &mut Conn {
        self.conns[idx].as_mut().expect("live conn")
    }

    fn accept(&mut self) {
        loop {
            // SAFETY: accept4 without an address.
            let fd = unsafe {
                libc::accept4(
                    self.listen_fd,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                )
            };
            if fd < 0 {
                return;
            }
            engines::nodelay(fd);
            self.alloc(fd, Kind::Client);
        }
    }

    fn readable(&mut self, idx: usize) {
        loop {
            let fd = self.conn(idx).fd;
            // SAFETY: reading into our scratch buffer.
            let n = unsafe { libc::read(fd, self.scratch.as_mut_ptr() as *mut _, SCRATCH) };
            if n == 0 || (n < 0 && errno() != libc::EAGAIN) {
                self.close(idx);
                return;
            }
            if n < 0 {
                return;
            }
            let n = n as usize;
            let data = std::mem::take(&mut self.scratch);
            self.on_data(idx, &data[..n]);
            self.scratch = data;
            if self.conns[idx].is_none() || (n < SCRATCH && !self.until_eagain) {
                return;
            }
        }
    }

    fn on_data(&mut self, idx: usize, data: &[u8]) {
        let c = self.conn(idx);
        c.inbuf.extend_from_slice(data);
        match c.kind {
            Kind::Client => self.next_request(idx),
            Kind::Upstream(b) => {
                let Some(total) = response_len(&c.inbuf) else {
                    return;
                };
                debug_assert_eq!(total, c.inbuf.len());
                let client = c.peer.take().expect("response without request");
                let mut resp = std::mem::take(&mut c.inbuf);
                self.pool[b].push(idx);
                let cl = self.conn(client);
                cl.peer = None;
                std::mem::swap(&mut cl.out, &mut resp);
                resp.clear();
                self.conn(idx).inbuf = resp;
                self.send(client, false);
            }
        }
    }

    fn next_request(&mut self, idx: usize) {
        let mode = self.mode;
        let c = self.conn(idx);
        if c.busy {
            return;
        }
        let Some(len) = request_len(&c.inbuf) else {
            return;
        };
        c.busy = true;
        match mode {
            Mode::Fixed => {
                c.inbuf.drain(..len);
                self.send(idx, true);
            }
            Mode::Proxy => {
                let b = self.rr.pick();
                let up = match self.pool[b].pop() {
                    Some(up) => up,
                    None => self.connect(b),
                };
                let req: Vec<u8> = self.conn(idx).inbuf.drain(..len).collect();
                let u = self.conn(up);
                u.out.clear();
                u.out.extend_from_slice(&req);
                u.peer = Some(idx);
                self.conn(idx).peer = Some(up);
                if !self.conn(up).connecting {
                    self.send(up, false);
                }
            }
        }
    }

    fn connect(&mut self, b: usize) -> usize {
        let addr = self.backends[b];
        // SAFETY: plain socket calls; addr is a valid sockaddr_in.
        let fd = unsafe {
            let fd = libc::socket(
                libc::AF_INET,
                libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            );
            engines::nodelay(fd);
            libc::connect(
                fd,
                &addr as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            );
            fd
        };
        let idx = self.alloc(fd, Kind::Upstream(b));
        self.conn(idx).connecting = true; // EPOLLOUT tells when it is done
        idx
    }

    fn send(&mut self, idx: usize, fixed: bool) {
        let c = self.conn(idx);
        c.out_static = fixed;
        c.out_off = 0;
        self.flush(idx);
    }

    /// Writes what is left; returns when done or on EAGAIN (EPOLLOUT resumes it).
    fn flush(&mut self, idx: usize) {
        let c = self.conn(idx);
        let buf: &[u8] = if c.out_static { FIXED_RESPONSE } else { &c.out };
        while c.out_off < buf.len() {
            let rest = &buf[c.out_off..];
            // SAFETY: writing from a live buffer.
            let n = unsafe { libc::write(c.fd, rest.as_ptr() as *const _, rest.len()) };
            if n < 0 {
                if errno() != libc::EAGAIN {
                    self.close(idx);
                }
                return;
            }
            c.out_off += n as usize;
        }
        c.out_off = 0;
        c.out_static = false;
        c.out.clear();
        if c.kind == Kind::Client {
            c.busy = false;
            self.next_request(idx);
        }
    }

    fn writable(&mut self, idx: usize) {
        let c = self.conn(idx);
        if c.connecting {
            c.connecting = false;
            if c.peer.is_some() {
                self.flush(idx);
            }
            return;
        }
        if c.out_off > 0 || !c.out.is_empty() {
            self.flush(idx);
        }
    }

    fn close(&mut self, idx: usize) {
        let Some(c) = self.conns[idx].take() else {
            return;
        };
        debug_assert_eq!(c.gen, self.gens[idx]);
        // SAFETY: closing our own descriptor (epoll drops it).
        unsafe { libc::close(c.fd) };
        self.free.push(idx);
        if let Kind::Upstream(b) = c.kind {
            self.pool[b].retain(|&u| u != idx);
        }
        if let Some(p) = c.peer {
            if let Some(pc) = self.conns[p].as_mut() {
                pc.peer = None;
                pc.busy = false;
                if let Kind::Upstream(b) = pc.kind {
                    // An upstream whose client left mid-request: its response would be
                    // stray, so it goes too.
                    let _ = b;
                    self.close(p);
                }
            }
        }
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}
