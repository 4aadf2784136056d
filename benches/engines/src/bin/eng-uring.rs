//! (b) our own io_uring loop on the `io-uring` crate: callback/state-machine design (no
//! futures), one ring per thread, one `submit_and_wait(1)` per loop pass (all SQEs queued while
//! handling the previous batch of CQEs go in with it).
//!
//! Default: IORING_SETUP_SINGLE_ISSUER | DEFER_TASKRUN (falls back to COOP_TASKRUN when
//! refused), multishot accept, multishot recv into a provided buffer ring
//! (IORING_REGISTER_PBUF_RING), plain send. Switches:
//!   --no-defer      SINGLE_ISSUER | COOP_TASKRUN | TASKRUN_FLAG instead of DEFER_TASKRUN
//!   --no-flags      no setup flags at all
//!   --no-multishot  one-shot recv (still from the buffer ring), re-armed after each completion

use engines::{request_len, response_len, Args, Mode, RoundRobin, FIXED_RESPONSE};
use io_uring::{cqueue, opcode, squeue, types, IoUring};
use std::os::fd::AsRawFd;

const BGID: u16 = 0;
const BUF_SIZE: usize = 2048;
const BUF_COUNT: u16 = 1024;

const OP_ACCEPT: u64 = 1;
const OP_RECV: u64 = 2;
const OP_SEND: u64 = 3;
const OP_CONNECT: u64 = 4;

fn ud(idx: usize, op: u64) -> u64 {
    ((idx as u64) << 8) | op
}

/// The provided buffer ring: BUF_COUNT buffers of BUF_SIZE bytes, handed to the kernel, each
/// given back as soon as its bytes are consumed.
struct BufRing {
    ring: *mut types::BufRingEntry,
    mem: Vec<u8>,
    tail: u16,
}

impl BufRing {
    fn new(uring: &IoUring) -> BufRing {
        let bytes = BUF_COUNT as usize * std::mem::size_of::<types::BufRingEntry>();
        // SAFETY: an anonymous private mapping, page aligned as the kernel requires.
        let ring = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_ANONYMOUS | libc::MAP_PRIVATE,
                -1,
                0,
            )
        };
        assert!(ring != libc::MAP_FAILED, "mmap");
        let mut br = BufRing {
            ring: ring as *mut types::BufRingEntry,
            mem: vec![0; BUF_COUNT as usize * BUF_SIZE],
            tail: 0,
        };
        // SAFETY: the ring memory lives as long as the process (never unmapped).
        unsafe {
            uring
                .submitter()
                .register_buf_ring_with_flags(ring as u64, BUF_COUNT, BGID, 0)
        }
        .expect("IORING_REGISTER_PBUF_RING");
        for bid in 0..BUF_COUNT {
            br.push(bid);
        }
        br.publish();
        br
    }

    fn push(&mut self, bid: u16) {
        // SAFETY: the index is masked into the ring; the buffer lies inside `mem`.
        unsafe {
            let e = &mut *self.ring.add((self.tail & (BUF_COUNT - 1)) as usize);
            e.set_addr(self.mem.as_ptr().add(bid as usize * BUF_SIZE) as u64);
            e.set_len(BUF_SIZE as u32);
            e.set_bid(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        // SAFETY: the tail field of the shared ring header; release orders the entries before it.
        unsafe {
            let tail = types::BufRingEntry::tail(self.ring) as *const std::sync::atomic::AtomicU16;
            (*tail).store(self.tail, std::sync::atomic::Ordering::Release);
        }
    }

    fn get(&self, bid: u16, len: usize) -> &[u8] {
        &self.mem[bid as usize * BUF_SIZE..][..len]
    }
}

#[derive(PartialEq)]
enum Kind {
    Client,
    Upstream(usize),
}

struct Conn {
    fd: i32,
    kind: Kind,
    /// Received bytes not yet making a whole request/response.
    inbuf: Vec<u8>,
    /// Bytes being sent (an upstream's request, a client's proxied response).
    out: Vec<u8>,
    out_static: bool,
    out_off: usize,
    recv_armed: bool,
    sending: bool,
    connecting: bool,
    /// A client with a request in flight (until its response is sent).
    busy: bool,
    closing: bool,
    /// The client <-> upstream pairing while a request is at the upstream.
    peer: Option<usize>,
    addr: Box<libc::sockaddr_in>,
}

struct Engine {
    ring: IoUring,
    bufs: BufRing,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    mode: Mode,
    multishot: bool,
    listen_fd: i32,
    backends: Vec<libc::sockaddr_in>,
    pool: Vec<Vec<usize>>,
    rr: RoundRobin,
}

fn main() {
    let args = Args::parse();
    engines::pin(args.cpu);
    let listener = engines::listen(args.listen);
    let ring = build_ring(&args);
    let bufs = BufRing::new(&ring);
    let backends: Vec<_> = args
        .backends
        .iter()
        .map(|a| match a {
            std::net::SocketAddr::V4(v4) => engines::sockaddr(*v4),
            _ => panic!("IPv4 only"),
        })
        .collect();
    let mut e = Engine {
        ring,
        bufs,
        conns: Vec::new(),
        free: Vec::new(),
        mode: args.mode,
        multishot: !args.flag("no-multishot"),
        listen_fd: listener.as_raw_fd(),
        pool: backends.iter().map(|_| Vec::new()).collect(),
        rr: RoundRobin::new(backends.len().max(1)),
        backends,
    };
    e.arm_accept();
    e.run();
}

fn build_ring(args: &Args) -> IoUring {
    let mut b = IoUring::builder();
    b.setup_cqsize(8192);
    if args.flag("no-flags") {
        eprintln!("io_uring: no setup flags");
        return b.build(1024).expect("io_uring");
    }
    b.setup_single_issuer();
    if !args.flag("no-defer") {
        let mut d = b.clone();
        d.setup_defer_taskrun();
        match d.build(1024) {
            Ok(r) => {
                eprintln!("io_uring: SINGLE_ISSUER | DEFER_TASKRUN");
                return r;
            }
            Err(e) => eprintln!("DEFER_TASKRUN refused ({e}); COOP_TASKRUN instead"),
        }
    }
    b.setup_coop_taskrun().setup_taskrun_flag();
    eprintln!("io_uring: SINGLE_ISSUER | COOP_TASKRUN | TASKRUN_FLAG");
    b.build(1024).expect("io_uring")
}

impl Engine {
    fn push(&mut self, sqe: squeue::Entry) {
        // SAFETY: every buffer an SQE points at (conn.out, the static response, conn.addr)
        // stays put until its CQE arrives: a conn is freed only with no operation pending.
        unsafe {
            while self.ring.submission().push(&sqe).is_err() {
                self.ring.submit().expect("submit");
            }
        }
    }

    fn run(&mut self) {
        let mut batch: Vec<(u64, i32, u32)> = Vec::with_capacity(1024);
        loop {
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
                Err(e) => panic!("io_uring_enter: {e}"),
            }
            batch.extend(
                self.ring
                    .completion()
                    .map(|c| (c.user_data(), c.result(), c.flags())),
            );
            for &(data, res, flags) in &batch {
                let idx = (data >> 8) as usize;
                match data & 0xff {
                    OP_ACCEPT => self.on_accept(res, flags),
                    OP_RECV => self.on_recv(idx, res, flags),
                    OP_SEND => self.on_send(idx, res),
                    OP_CONNECT => self.on_connect(idx, res),
                    _ => unreachable!(),
                }
            }
            batch.clear();
            self.bufs.publish();
        }
    }

    fn arm_accept(&mut self) {
        let sqe = opcode::AcceptMulti::new(types::Fd(self.listen_fd))
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(OP_ACCEPT);
        self.push(sqe);
    }

    fn alloc(&mut self, fd: i32, kind: Kind) -> usize {
        let c = Conn {
            fd,
            kind,
            inbuf: Vec::new(),
            out: Vec::new(),
            out_static: false,
            out_off: 0,
            recv_armed: false,
            sending: false,
            connecting: false,
            busy: false,
            closing: false,
            peer: None,
            addr: Box::new(unsafe { std::mem::zeroed() }),
        };
        match self.free.pop() {
            Some(i) => {
                self.conns[i] = Some(c);
                i
            }
            None => {
                self.conns.push(Some(c));
                self.conns.len() - 1
            }
        }
    }

    fn conn(&mut self, idx: usize) -> &mut Conn {
        self.conns[idx].as_mut().expect("live conn")
    }

    fn on_accept(&mut self, res: i32, flags: u32) {
        if !cqueue::more(flags) {
            self.arm_accept();
        }
        if res < 0 {
            return;
        }
        engines::nodelay(res);
        let idx = self.alloc(res, Kind::Client);
        self.arm_recv(idx);
    }

    fn arm_recv(&mut self, idx: usize) {
        let c = self.conn(idx);
        c.recv_armed = true;
        let fd = types::Fd(c.fd);
        let sqe = if self.multishot {
            opcode::RecvMulti::new(fd, BGID).build()
        } else {
            opcode::Recv::new(fd, std::ptr::null_mut(), BUF_SIZE as u32)
                .buf_group(BGID)
                .build()
                .flags(squeue::Flags::BUFFER_SELECT)
        };
        self.push(sqe.user_data(ud(idx, OP_RECV)));
    }

    fn on_recv(&mut self, idx: usize, res: i32, flags: u32) {
        if !cqueue::more(flags) {
            self.conn(idx).recv_armed = false;
        }
        if res > 0 {
            let bid = cqueue::buffer_select(flags).expect("provided buffer");
            let data = self.bufs.get(bid, res as usize) as *const [u8];
            // SAFETY: the buffer is ours until it is pushed back below; `on_data` never
            // touches the buffer ring.
            self.on_data(idx, unsafe { &*data });
            self.bufs.push(bid);
        } else if res == 0 || res != -libc::ENOBUFS {
            self.close(idx);
        }
        let c = self.conn(idx);
        if !c.recv_armed && !c.closing {
            self.arm_recv(idx);
        }
        self.maybe_free(idx);
    }

    fn on_data(&mut self, idx: usize, data: &[u8]) {
        let c = self.conn(idx);
        match c.kind {
            Kind::Client => {
                c.inbuf.extend_from_slice(data);
                self.next_request(idx);
            }
            Kind::Upstream(b) => {
                c.inbuf.extend_from_slice(data);
                let Some(total) = response_len(&c.inbuf) else {
                    return;
                };
                debug_assert_eq!(total, c.inbuf.len());
                let client = c.peer.take().expect("response without request");
                let mut resp = std::mem::take(&mut c.inbuf);
                self.pool[b].push(idx);
                let cl = self.conn(client);
                cl.peer = None;
                if cl.closing {
                    cl.busy = false;
                    self.maybe_free(client);
                    return;
                }
                // The response buffer moves to the client; the client's old one comes back.
                std::mem::swap(&mut cl.out, &mut resp);
                resp.clear();
                self.conn(idx).inbuf = resp;
                self.send(client, false);
            }
        }
    }

    /// Handles the next whole request in a client's inbuf, unless one is in flight.
    fn next_request(&mut self, idx: usize) {
        let mode = self.mode;
        let c = self.conn(idx);
        if c.busy || c.closing {
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
                let (cl, u) = self.pair(idx, up);
                u.out.clear();
                u.out.extend_from_slice(&cl.inbuf[..len]);
                cl.inbuf.drain(..len);
                cl.peer = Some(up);
                u.peer = Some(idx);
                if !u.connecting {
                    self.send(up, false);
                }
            }
        }
    }

    fn pair(&mut self, a: usize, b: usize) -> (&mut Conn, &mut Conn) {
        assert_ne!(a, b);
        let (lo, hi) = self.conns.split_at_mut(a.max(b));
        let (x, y) = (lo[a.min(b)].as_mut().unwrap(), hi[0].as_mut().unwrap());
        if a < b {
            (x, y)
        } else {
            (y, x)
        }
    }

    fn connect(&mut self, b: usize) -> usize {
        // SAFETY: a plain socket call.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        assert!(fd >= 0, "socket");
        engines::nodelay(fd);
        let idx = self.alloc(fd, Kind::Upstream(b));
        let addr = self.backends[b];
        let c = self.conn(idx);
        *c.addr = addr;
        c.connecting = true;
        let sqe = opcode::Connect::new(
            types::Fd(fd),
            &*c.addr as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        )
        .build()
        .user_data(ud(idx, OP_CONNECT));
        self.push(sqe);
        idx
    }

    fn on_connect(&mut self, idx: usize, res: i32) {
        self.conn(idx).connecting = false;
        if res < 0 {
            eprintln!("connect: {}", std::io::Error::from_raw_os_error(-res));
            self.close(idx);
            self.maybe_free(idx);
            return;
        }
        self.arm_recv(idx);
        self.send(idx, false);
    }

    fn send(&mut self, idx: usize, fixed: bool) {
        let c = self.conn(idx);
        c.out_static = fixed;
        c.out_off = 0;
        self.send_rest(idx);
    }

    fn send_rest(&mut self, idx: usize) {
        let c = self.conn(idx);
        let buf: &[u8] = if c.out_static { FIXED_RESPONSE } else { &c.out };
        let rest = &buf[c.out_off..];
        c.sending = true;
        let sqe = opcode::Send::new(types::Fd(c.fd), rest.as_ptr(), rest.len() as u32)
            .build()
            .user_data(ud(idx, OP_SEND));
        self.push(sqe);
    }

    fn on_send(&mut self, idx: usize, res: i32) {
        let c = self.conn(idx);
        c.sending = false;
        if res < 0 {
            self.close(idx);
            self.maybe_free(idx);
            return;
        }
        c.out_off += res as usize;
        let len = if c.out_static {
            FIXED_RESPONSE.len()
        } else {
            c.out.len()
        };
        if c.out_off < len {
            self.send_rest(idx);
            return;
        }
        if c.kind == Kind::Client {
            c.busy = false;
            self.next_request(idx);
        }
    }

    /// Starts closing: shuts the socket down so a pending multishot recv ends.
    fn close(&mut self, idx: usize) {
        let c = self.conn(idx);
        if c.closing {
            return;
        }
        c.closing = true;
        // SAFETY: shutdown on our own descriptor.
        unsafe { libc::shutdown(c.fd, libc::SHUT_RDWR) };
        if let Kind::Upstream(b) = c.kind {
            self.pool[b].retain(|&u| u != idx);
            if let Some(client) = self.conn(idx).peer.take() {
                let cl = self.conn(client);
                cl.peer = None;
                cl.busy = false;
                self.close(client);
                self.maybe_free(client);
            }
        }
    }

    /// Frees a closing conn once no operation refers to it.
    fn maybe_free(&mut self, idx: usize) {
        let c = self.conn(idx);
        if c.closing && !c.recv_armed && !c.sending && !c.connecting && c.peer.is_none() {
            if c.kind == Kind::Client && c.busy {
                return;
            }
            // SAFETY: closing our own descriptor, no operation pending on it.
            unsafe { libc::close(c.fd) };
            self.conns[idx] = None;
            self.free.push(idx);
        }
    }
}
