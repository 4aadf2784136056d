//! The completion reactor: one io_uring per core, in the place of the epoll reactor under the
//! same executor (`exec`), timers and wakes. [`uring_net`](super::uring_net) puts TCP sockets on it.
//!
//! Setup: `SINGLE_ISSUER | DEFER_TASKRUN` (completions are worked only when the core enters the
//! kernel to wait, so nothing interrupts it), else `SINGLE_ISSUER | COOP_TASKRUN`; a kernel that
//! takes neither is refused ([`build_ring`]), and `auto` falls back to epoll.
//!
//! One loop pass = [`Reactor::park`]: publish the receive buffers given back, re-arm what
//! starved, then one `io_uring_enter` that submits every SQE the tasks queued and waits for a
//! completion until the timers' nearest deadline (EXT_ARG timeout: no kernel timer per
//! operation; the deadlines stay in the executor's heap), then reap every CQE and wake.
//!
//! Operations and who owns their memory while the kernel may use it:
//! - Receive: one multishot `RECV` per stream into the provided-buffer ring (buffer group 0,
//!   registered with IORING_REGISTER_PBUF_RING). The ring's memory belongs to the reactor, so a
//!   dropped read future leaves nothing for the kernel to touch; a stream keeps only the
//!   (buffer id, length) of completions not yet read, and a read copies into the caller's slice
//!   and gives the buffer back. An idle connection holds no buffer. The receive is armed at the
//!   first read and stays armed; it is cancelled when a stream holds [`MAX_PENDING`] unread
//!   buffers (so one slow reader cannot drain the ring; TCP flow control takes over) and
//!   re-armed when the reader catches up; ENOBUFS (ring empty) parks the stream on a starved
//!   list re-armed once buffers come back; a multishot that ends for any other reason without
//!   end of stream or error is re-armed.
//! - Send: the bytes are copied into a send buffer owned by the reactor (pooled, at most
//!   [`SEND_CAP`] per write) and `SEND` is queued; the write returns at once (the kernel takes
//!   the bytes at the next enter, in the same batch as everything else), and the next write or
//!   flush of that stream waits for the completion (one send in flight per stream, so bytes stay
//!   in order; short sends are resubmitted by the reactor). Why a copy rather than pointing the
//!   kernel at the caller's slice and cancelling on drop: `AsyncWrite` lends a slice for one
//!   poll only, so the memory cannot be kept alive past a dropped future without owning it
//!   anyway, and futures-rustls hands over its own short-lived buffers. The price shows with
//!   large bodies (benches/RESULTS.md): at 64 KiB per response this engine costs 0.82x nginx's
//!   CPU per request where epoll, which copies nothing extra, costs 0.63x; the send copy and
//!   the copy out of the receive ring are the difference. An owned-buffer write (the proxy
//!   hands its buffer to the reactor and gets it back at the completion) would remove the
//!   first without giving up cancellation safety.
//! - Connect: a nonblocking `connect(2)`, then a one-shot `POLL_ADD` for POLLOUT on the ring
//!   (no memory in flight); SO_ERROR tells the outcome.
//! - Accept: one multishot `ACCEPT` per listener; accepted descriptors queue in the reactor.
//! - Foreign wakes: a multishot `POLL_ADD` on the executor's eventfd (re-armed if it ends).
//!
//! Closing: a dropped socket hands its descriptor to the reactor. Its receive (or accept, or
//! connect poll) is cancelled with ASYNC_CANCEL; a send in flight is let finish (the caller was
//! told the bytes were written), bounded by [`LINGER`], then cancelled. The descriptor is closed
//! when the last of its operations has posted its final CQE, so the kernel never holds a
//! reference to a socket ringlb thinks closed, nor writes into memory given back. At core exit
//! the reactor cancels everything and waits (bounded) for the final CQEs before freeing the
//! buffers; if they do not come, it leaks the buffers rather than free memory the kernel might
//! still write.
//!
//! Runs on the owning core; takes no lock; allocates only when the slab, the queues or the send
//! pool grow past their high-water mark.

use io_uring::{cqueue, opcode, squeue, types, IoUring};
use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

/// Bytes per provided receive buffer: HAProxy's `bufsize`. A 64 KiB response is four
/// completions and four copies rather than sixteen (4 KiB buffers: 1.17x the req/s and 0.85x the
/// CPU per request with 64 KiB bodies; small bodies unchanged; see benches/RESULTS.md).
pub(crate) const BUF_SIZE: usize = 16 << 10;
/// Unread receive buffers a stream may hold before its receive is paused (128 KiB).
const MAX_PENDING: usize = 8;
/// Receive buffers per ring, at least and at most (`runtime.io_memory` / [`BUF_SIZE`] between).
const MIN_BUFFERS: usize = 256;
const MAX_BUFFERS: usize = 32768;
/// Bytes one write copies and sends at most.
pub(crate) const SEND_CAP: usize = 64 << 10;
/// Bytes of idle send buffers kept for reuse.
const POOL_BYTES: usize = 4 << 20;
/// How long a dropped stream's last send may take before it is cancelled.
const LINGER: Duration = Duration::from_secs(10);
/// Submission queue entries; the completion queue has 4x.
const SQ_ENTRIES: u32 = 1024;
const BGID: u16 = 0;
/// IORING_ENTER_GETEVENTS: run deferred completions (and wait for `min_complete`).
const ENTER_GETEVENTS: u32 = 1;

/// Writes of at least this many bytes first try a plain nonblocking `send(2)` straight from the
/// caller's bytes (no copy into a send buffer, no SQE; the kernel copies either way); what the
/// socket does not take now goes the ring's way. Measured (`BODY_PATH=... benches/ab.py`, same
/// binary with and without, 5 rounds): 64 KiB bodies 0.86x CPU per request and 1.17x req/s;
/// 4 KiB neutral (0.99x); for every write, small bodies 1.02x: so only large writes.
const DIRECT_SEND_MIN: usize = 16 << 10;

const OP_RECV: u64 = 1;
const OP_SEND: u64 = 2;
const OP_POLL: u64 = 3;
const OP_ACCEPT: u64 = 4;
const OP_NOTIFY: u64 = 5;
/// Completions of ASYNC_CANCEL itself: nothing to do.
const OP_CANCEL: u64 = 6;
/// POLLIN on a starved stream (its receive ended with ENOBUFS): its reader reads the socket.
const OP_RPOLL: u64 = 7;

/// A socket's place in the reactor: slab index and the slot's generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Token {
    index: u32,
    gen: u32,
}

fn ud(t: Token, op: u64) -> u64 {
    (u64::from(t.gen) << 32) | (u64::from(t.index) << 8) | op
}

fn split(data: u64) -> (Token, u64) {
    (
        Token {
            index: ((data >> 8) & 0xff_ffff) as u32,
            gen: (data >> 32) as u32,
        },
        data & 0xff,
    )
}

/// The environment variable that makes the io_uring engine skip DEFER_TASKRUN and run with
/// COOP_TASKRUN (`coop_taskrun`), as it does on kernels that refuse DEFER_TASKRUN: a way
/// around a kernel whose DEFER_TASKRUN misbehaves, and how the tests run that path here.
pub(crate) const SETUP_ENV: &str = "RINGLB_IO_URING_SETUP";

/// Whether [`SETUP_ENV`] asks for COOP_TASKRUN; an error naming it for a value it does not
/// know.
pub(crate) fn setup_env() -> io::Result<bool> {
    match std::env::var(SETUP_ENV).as_deref() {
        Err(_) | Ok("" | "defer_taskrun") => Ok(false),
        Ok("coop_taskrun") => Ok(true),
        Ok(other) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{SETUP_ENV}={other:?}: expected \"defer_taskrun\" (the default) or \
                 \"coop_taskrun\""
            ),
        )),
    }
}

/// Creates a ring with `SINGLE_ISSUER | DEFER_TASKRUN`, or `SINGLE_ISSUER | COOP_TASKRUN` where
/// the kernel refuses DEFER_TASKRUN (or [`SETUP_ENV`] asks for it); an error when it takes
/// neither or lacks EXT_ARG (the wait with a timeout). Returns the ring and the flags it got.
pub(crate) fn build_ring(entries: u32) -> io::Result<(IoUring, &'static str)> {
    let coop_only = setup_env()?;
    let mut b = IoUring::builder();
    b.setup_cqsize(entries * 4)
        .setup_single_issuer()
        .setup_submit_all();
    let mut defer = b.clone();
    defer.setup_defer_taskrun();
    let deferred = if coop_only {
        None
    } else {
        defer.build(entries).ok()
    };
    let (ring, flags) = match deferred {
        Some(r) => (r, "SINGLE_ISSUER | DEFER_TASKRUN"),
        None => {
            b.setup_coop_taskrun().setup_taskrun_flag();
            // The kernel's errno, unwrapped: the host check names its cause.
            let r = b.build(entries)?;
            (r, "SINGLE_ISSUER | COOP_TASKRUN")
        }
    };
    if !ring.params().is_feature_ext_arg() {
        return Err(io::Error::other(
            "io_uring lacks IORING_FEAT_EXT_ARG (Linux 5.11+)",
        ));
    }
    Ok((ring, flags))
}

/// Whether this host can run the io_uring engine: a ring with the setup flags above and a
/// provided-buffer ring. The error names what was refused.
pub(crate) fn probe() -> io::Result<&'static str> {
    let (ring, flags) = build_ring(4)?;
    let bufs = BufRing::new(&ring, 8)?;
    drop(ring);
    drop(bufs);
    Ok(flags)
}

/// The provided-buffer ring: `entries` buffers of [`BUF_SIZE`] bytes, handed to the kernel and
/// given back as soon as a stream has read their bytes.
struct BufRing {
    /// Ring of entries shared with the kernel (mmap'ed, page aligned).
    ring: *mut types::BufRingEntry,
    ring_bytes: usize,
    /// The buffers themselves.
    mem: Box<[u8]>,
    entries: u16,
    tail: u16,
    published: u16,
    /// Buffers the kernel filled that are not given back yet.
    out: usize,
    /// Per buffer: the next buffer on the same stream's [`Pending`] list, and its length.
    links: Box<[Link]>,
}

/// The live stream `t` names in `slots` (a free function: borrows only the slots).
fn stream_in(slots: &mut super::chunked::Chunked<Entry>, t: Token) -> Option<&mut StreamState> {
    match slots.get_mut(t.index as usize) {
        Some(Entry {
            gen,
            slot: Slot::Stream(s),
        }) if *gen == t.gen => Some(s),
        _ => None,
    }
}

/// A received buffer's place on its stream's list of unread buffers.
#[derive(Clone, Copy, Default)]
struct Link {
    next: u16,
    len: u32,
}

/// A stream's received, unread buffers, oldest first: a list threaded through the buffer
/// ring's [`Link`]s (a buffer is on at most one stream's list at a time), so a stream holds
/// six bytes for it and no allocation of its own.
#[derive(Clone, Copy, Default)]
struct Pending {
    head: u16,
    tail: u16,
    count: u16,
}

impl Pending {
    fn len(&self) -> usize {
        usize::from(self.count)
    }

    fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn push_back(&mut self, links: &mut [Link], bid: u16, len: u32) {
        let Some(l) = links.get_mut(usize::from(bid)) else {
            return;
        };
        *l = Link { next: 0, len };
        if self.count == 0 {
            self.head = bid;
        } else if let Some(t) = links.get_mut(usize::from(self.tail)) {
            t.next = bid;
        }
        self.tail = bid;
        self.count += 1;
    }

    /// The `i`-th buffer and its length.
    fn get(&self, links: &[Link], i: usize) -> Option<(u16, u32)> {
        if i >= self.len() {
            return None;
        }
        let mut bid = self.head;
        for _ in 0..i {
            bid = links.get(usize::from(bid))?.next;
        }
        Some((bid, links.get(usize::from(bid))?.len))
    }

    fn pop_front(&mut self, links: &[Link]) -> Option<u16> {
        if self.count == 0 {
            return None;
        }
        let bid = self.head;
        self.head = links.get(usize::from(bid)).map_or(0, |l| l.next);
        self.count -= 1;
        Some(bid)
    }
}

impl BufRing {
    fn new(uring: &IoUring, entries: u16) -> io::Result<BufRing> {
        let ring_bytes = usize::from(entries) * std::mem::size_of::<types::BufRingEntry>();
        // SAFETY: an anonymous private mapping of `ring_bytes`, page aligned as the kernel
        // requires; no pointer of ours is passed.
        let ring = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                ring_bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_ANONYMOUS | libc::MAP_PRIVATE,
                -1,
                0,
            )
        };
        if ring == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut br = BufRing {
            ring: ring.cast(),
            ring_bytes,
            mem: vec![0u8; usize::from(entries) * BUF_SIZE].into_boxed_slice(),
            entries,
            tail: 0,
            published: 0,
            out: 0,
            links: vec![Link::default(); usize::from(entries)].into_boxed_slice(),
        };
        // SAFETY: the mapping lives until `br` drops, which is after the ring that uses it
        // (the reactor declares the ring first; `probe` drops the ring first); the kernel pins
        // its pages while registered.
        unsafe {
            uring
                .submitter()
                .register_buf_ring_with_flags(ring as u64, entries, BGID, 0)
        }
        .map_err(|e| io::Error::new(e.kind(), format!("IORING_REGISTER_PBUF_RING: {e}")))?;
        for bid in 0..entries {
            br.push(bid);
        }
        br.publish();
        br.out = 0;
        Ok(br)
    }

    /// Queues buffer `bid` for the kernel (visible at the next `publish`).
    fn push(&mut self, bid: u16) {
        if bid >= self.entries {
            return;
        }
        let at = usize::from(self.tail & (self.entries - 1));
        // SAFETY: `at` < entries, inside the mapping; the kernel reads only entries between
        // its head and the published tail, and this one is past the published tail.
        unsafe {
            let e = &mut *self.ring.add(at);
            e.set_addr(self.mem.as_ptr().add(usize::from(bid) * BUF_SIZE) as u64);
            e.set_len(BUF_SIZE as u32);
            e.set_bid(bid);
        }
        self.tail = self.tail.wrapping_add(1);
        self.out = self.out.saturating_sub(1);
    }

    fn publish(&mut self) {
        if self.published == self.tail {
            return;
        }
        // SAFETY: the tail field of the shared ring header, inside the mapping; the release
        // store orders the entries written before it.
        unsafe {
            let tail = types::BufRingEntry::tail(self.ring) as *const std::sync::atomic::AtomicU16;
            (*tail).store(self.tail, std::sync::atomic::Ordering::Release);
        }
        self.published = self.tail;
    }

    /// The bytes the kernel wrote into buffer `bid`.
    fn get(&self, bid: u16, len: usize) -> &[u8] {
        let start = usize::from(bid) * BUF_SIZE;
        self.mem
            .get(start..start + len.min(BUF_SIZE))
            .unwrap_or_default()
    }

    fn available(&self) -> usize {
        usize::from(self.entries).saturating_sub(self.out)
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: unmaps our own mapping; the ring that registered it is gone (the kernel
        // unpins it at ring exit; it never reads unpinned user memory).
        unsafe { libc::munmap(self.ring.cast(), self.ring_bytes) };
    }
}

#[derive(Default)]
struct StreamState {
    fd: RawFd,
    /// The handle lives (false: the reactor owns the descriptor and closes it when idle).
    open: bool,
    recv_armed: bool,
    recv_cancelling: bool,
    starved: bool,
    pending: Pending,
    /// Bytes of the front pending buffer already read.
    offset: u32,
    eof: bool,
    /// errno of a failed receive (0: none).
    rerr: i32,
    reader: Option<Waker>,
    /// The send in flight: the reactor's copy of the bytes, and how many went out.
    send: Option<Vec<u8>>,
    send_off: usize,
    send_cancelling: bool,
    /// errno of a failed send, reported by the next write or flush (0: none).
    werr: i32,
    writer: Option<Waker>,
    polling: bool,
    poll_res: Option<i32>,
    rpolling: bool,
}

impl StreamState {
    fn idle(&self) -> bool {
        !self.recv_armed && self.send.is_none() && !self.polling && !self.rpolling
    }

    fn should_arm(&self) -> bool {
        self.open
            && !self.recv_armed
            && !self.starved
            && !self.eof
            && self.rerr == 0
            && self.pending.len() < MAX_PENDING / 2
    }
}

#[derive(Default)]
struct ListenState {
    fd: RawFd,
    open: bool,
    armed: bool,
    /// No accept is armed again (`stop_accept`).
    stopped: bool,
    queue: VecDeque<RawFd>,
    err: i32,
    waker: Option<Waker>,
    /// The task waiting in `stop_accept` for the last accept completion.
    stopper: Option<Waker>,
}

enum Slot {
    Free,
    Stream(StreamState),
    Listen(ListenState),
}

struct Entry {
    gen: u32,
    slot: Slot,
}

fn wake(w: &mut Option<Waker>) {
    if let Some(w) = w.take() {
        w.wake();
    }
}

fn store(cell: &mut Option<Waker>, waker: &Waker) {
    match cell {
        Some(w) if w.will_wake(waker) => {}
        _ => *cell = Some(waker.clone()),
    }
}

fn close_fd(fd: RawFd) {
    // SAFETY: closes a descriptor the reactor owns, with no operation of ours in flight on it.
    unsafe { libc::close(fd) };
}

pub(crate) struct Reactor {
    // Declared first: dropped (after `Drop` waited for the final CQEs) before the buffers.
    ring: IoUring,
    bufs: BufRing,
    /// The executor's eventfd, written by threads that wake a task of this core.
    notify: RawFd,
    notify_armed: bool,
    /// Chunked: grows without moving or copying (see `chunked`).
    slots: super::chunked::Chunked<Entry>,
    free: Vec<u32>,
    /// SQEs that did not fit in the submission queue; queued at the next park.
    backlog: VecDeque<squeue::Entry>,
    /// Operations whose final CQE has not arrived.
    inflight: usize,
    starved: Vec<Token>,
    /// Sends of dropped streams, in deadline order (one LINGER each).
    lingering: VecDeque<(Instant, Token)>,
    pool: Vec<Vec<u8>>,
    pool_bytes: usize,
    cqes: Vec<(u64, i32, u32)>,
}

impl Reactor {
    /// A ring (see [`build_ring`]) with a provided-buffer ring of about `io_memory` bytes, that
    /// watches `notify` (the executor's eventfd).
    pub(crate) fn new(notify: RawFd, io_memory: usize) -> io::Result<Reactor> {
        let (ring, flags) = build_ring(SQ_ENTRIES).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "io_uring with SINGLE_ISSUER and DEFER_TASKRUN or COOP_TASKRUN: {e} \
                     (ringlb's io_uring engine needs Linux 6.0+)"
                ),
            )
        })?;
        let entries = (io_memory / BUF_SIZE)
            .next_power_of_two()
            .clamp(MIN_BUFFERS, MAX_BUFFERS);
        let bufs = BufRing::new(&ring, entries as u16)?;
        let mut r = Reactor {
            ring,
            bufs,
            notify,
            notify_armed: false,
            slots: super::chunked::Chunked::new(),
            free: Vec::new(),
            backlog: VecDeque::new(),
            inflight: 0,
            starved: Vec::new(),
            lingering: VecDeque::new(),
            pool: Vec::new(),
            pool_bytes: 0,
            cqes: Vec::with_capacity(SQ_ENTRIES as usize),
        };
        log::info!("io_uring core: {flags}, {entries} receive buffers of {BUF_SIZE} bytes");
        r.arm_notify();
        Ok(r)
    }

    /// Queues an SQE for the next enter.
    ///
    /// Every SQE queued here points only at memory the reactor owns until its final CQE: send
    /// buffers held in the stream's slot (a `Vec`'s heap block, which does not move when the
    /// slab does), the provided-buffer ring, or nothing (poll, cancel, multishot accept with no
    /// address, multishot receive).
    fn push(&mut self, sqe: squeue::Entry, counts: bool) {
        if counts {
            self.inflight += 1;
        }
        if !self.backlog.is_empty() {
            self.backlog.push_back(sqe);
            return;
        }
        // SAFETY: see above: what the entry points at outlives its operation.
        if unsafe { self.ring.submission().push(&sqe) }.is_err() {
            let _ = self.ring.submit();
            // SAFETY: as above.
            if unsafe { self.ring.submission().push(&sqe) }.is_err() {
                self.backlog.push_back(sqe);
            }
        }
    }

    fn cancel(&mut self, data: u64) {
        let sqe = opcode::AsyncCancel::new(data).build().user_data(OP_CANCEL);
        self.push(sqe, false);
    }

    fn arm_notify(&mut self) {
        let sqe = opcode::PollAdd::new(types::Fd(self.notify), libc::POLLIN as u32)
            .multi(true)
            .build()
            .user_data(OP_NOTIFY);
        self.notify_armed = true;
        self.push(sqe, true);
    }

    fn insert(&mut self, slot: Slot) -> io::Result<Token> {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                let i = u32::try_from(self.slots.len())
                    .ok()
                    .filter(|i| *i < (1 << 24))
                    .ok_or_else(|| io::Error::other("too many sockets on one core"))?;
                self.slots.push(Entry {
                    gen: 0,
                    slot: Slot::Free,
                });
                i
            }
        };
        let e = &mut self.slots[index as usize];
        e.slot = slot;
        Ok(Token { index, gen: e.gen })
    }

    fn release(&mut self, t: Token) {
        if let Some(e) = self.slots.get_mut(t.index as usize) {
            if e.gen == t.gen {
                e.slot = Slot::Free;
                e.gen = e.gen.wrapping_add(1);
                self.free.push(t.index);
            }
        }
    }

    fn stream(&mut self, t: Token) -> Option<&mut StreamState> {
        stream_in(&mut self.slots, t)
    }

    fn listener(&mut self, t: Token) -> Option<&mut ListenState> {
        match self.slots.get_mut(t.index as usize) {
            Some(Entry {
                gen,
                slot: Slot::Listen(l),
            }) if *gen == t.gen => Some(l),
            _ => None,
        }
    }

    /// Takes a connected socket; the handle keeps `fd` open until [`Reactor::close`].
    pub(crate) fn add_stream(&mut self, fd: RawFd) -> io::Result<Token> {
        self.insert(Slot::Stream(StreamState {
            fd,
            open: true,
            ..StreamState::default()
        }))
    }

    pub(crate) fn add_listener(&mut self, fd: RawFd) -> io::Result<Token> {
        self.insert(Slot::Listen(ListenState {
            fd,
            open: true,
            ..ListenState::default()
        }))
    }

    fn arm_recv(&mut self, t: Token) {
        let Some(s) = self.stream(t) else { return };
        s.recv_armed = true;
        let sqe = opcode::RecvMulti::new(types::Fd(s.fd), BGID)
            .build()
            .user_data(ud(t, OP_RECV));
        self.push(sqe, true);
    }

    /// Copies pending bytes into `buf` (consuming them unless `peek`); Pending with the waker
    /// stored when there are none yet.
    pub(crate) fn poll_read(
        &mut self,
        t: Token,
        buf: &mut [u8],
        waker: &Waker,
        peek: bool,
    ) -> Poll<io::Result<usize>> {
        let bufs = &mut self.bufs;
        let Some(Entry {
            gen,
            slot: Slot::Stream(s),
        }) = self.slots.get_mut(t.index as usize)
        else {
            return Poll::Ready(Err(io::Error::from_raw_os_error(libc::EBADF)));
        };
        if *gen != t.gen {
            return Poll::Ready(Err(io::Error::from_raw_os_error(libc::EBADF)));
        }
        if !s.pending.is_empty() {
            let mut n = 0;
            let mut offset = s.offset as usize;
            let mut i = 0;
            while n < buf.len() {
                let Some((bid, len)) = s.pending.get(&bufs.links, i) else {
                    break;
                };
                let src = bufs.get(bid, len as usize);
                let src = src.get(offset..).unwrap_or_default();
                let take = src.len().min(buf.len() - n);
                buf[n..n + take].copy_from_slice(&src[..take]);
                n += take;
                offset += take;
                if offset >= len as usize {
                    offset = 0;
                    if peek {
                        i += 1;
                    } else {
                        s.pending.pop_front(&bufs.links);
                        bufs.push(bid);
                    }
                }
            }
            if !peek {
                s.offset = offset as u32;
            }
            if !peek && s.should_arm() {
                self.arm_recv(t);
            }
            return Poll::Ready(Ok(n));
        }
        if s.rerr != 0 {
            return Poll::Ready(Err(io::Error::from_raw_os_error(s.rerr)));
        }
        if s.eof || buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if s.starved {
            // The ring ran dry and may stay dry while other streams hold its buffers unread:
            // this reader takes its bytes from the socket itself, so it never waits on them.
            let flags = libc::MSG_DONTWAIT | if peek { libc::MSG_PEEK } else { 0 };
            // SAFETY: recv(2) into the caller's live slice, within its length; our descriptor.
            let n = unsafe { libc::recv(s.fd, buf.as_mut_ptr().cast(), buf.len(), flags) };
            if n >= 0 {
                if n == 0 && !peek {
                    s.eof = true;
                }
                return Poll::Ready(Ok(n as usize));
            }
            let e = io::Error::last_os_error();
            if !matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) {
                return Poll::Ready(Err(e));
            }
            store(&mut s.reader, waker);
            if !s.rpolling {
                s.rpolling = true;
                let sqe = opcode::PollAdd::new(types::Fd(s.fd), libc::POLLIN as u32)
                    .build()
                    .user_data(ud(t, OP_RPOLL));
                self.push(sqe, true);
            }
            return Poll::Pending;
        }
        store(&mut s.reader, waker);
        if s.should_arm() {
            self.arm_recv(t);
        }
        Poll::Pending
    }

    /// Whether nothing is pending on the stream: no bytes, no end of stream, no error; and
    /// whether the socket must be asked too (`Some(true)`: its multishot receive is not armed,
    /// so bytes may wait in the socket rather than come to the ring). None: not quiet.
    pub(crate) fn is_quiet(&mut self, t: Token) -> Option<bool> {
        let s = self.stream(t)?;
        (s.pending.is_empty() && !s.eof && s.rerr == 0)
            .then_some(!s.recv_armed || s.recv_cancelling || s.starved)
    }

    fn send_sqe(&mut self, t: Token) {
        let Some(s) = self.stream(t) else { return };
        let Some(b) = s.send.as_ref() else { return };
        let rest = b.get(s.send_off..).unwrap_or_default();
        let sqe = opcode::Send::new(types::Fd(s.fd), rest.as_ptr(), rest.len() as u32)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(ud(t, OP_SEND));
        self.push(sqe, true);
    }

    /// Copies up to [`SEND_CAP`] bytes of `buf` into a send buffer and queues its send (a large
    /// `buf` is first offered to the socket directly, see [`DIRECT_SEND_MIN`]); waits (Pending,
    /// waker stored) while the previous send is in flight; reports a failed one.
    pub(crate) fn poll_write(
        &mut self,
        t: Token,
        buf: &[u8],
        waker: &Waker,
    ) -> Poll<io::Result<usize>> {
        let Some(s) = self.stream(t) else {
            return Poll::Ready(Err(io::Error::from_raw_os_error(libc::EBADF)));
        };
        if s.werr != 0 {
            return Poll::Ready(Err(io::Error::from_raw_os_error(s.werr)));
        }
        if s.send.is_some() {
            store(&mut s.writer, waker);
            return Poll::Pending;
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if buf.len() >= DIRECT_SEND_MIN {
            // SAFETY: send(2) from the caller's live slice on our own descriptor; DONTWAIT.
            let n = unsafe {
                libc::send(
                    s.fd,
                    buf.as_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            if n > 0 {
                return Poll::Ready(Ok(n as usize));
            }
            if n < 0 {
                let e = io::Error::last_os_error();
                if !matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) {
                    return Poll::Ready(Err(e));
                }
            }
        }
        let mut b = self.pool.pop().unwrap_or_default();
        self.pool_bytes = self.pool_bytes.saturating_sub(b.capacity());
        let n = buf.len().min(SEND_CAP);
        b.clear();
        b.extend_from_slice(&buf[..n]);
        if let Some(s) = self.stream(t) {
            s.send = Some(b);
            s.send_off = 0;
        }
        self.send_sqe(t);
        Poll::Ready(Ok(n))
    }

    /// Ready once no send is in flight (with the error of a failed one).
    pub(crate) fn poll_flush(&mut self, t: Token, waker: &Waker) -> Poll<io::Result<()>> {
        let Some(s) = self.stream(t) else {
            return Poll::Ready(Err(io::Error::from_raw_os_error(libc::EBADF)));
        };
        if s.werr != 0 {
            Poll::Ready(Err(io::Error::from_raw_os_error(s.werr)))
        } else if s.send.is_some() {
            store(&mut s.writer, waker);
            Poll::Pending
        } else {
            Poll::Ready(Ok(()))
        }
    }

    /// A write or flush timed out: cancel the send in flight; later writes fail with TimedOut.
    pub(crate) fn abort_send(&mut self, t: Token) {
        let Some(s) = self.stream(t) else { return };
        s.werr = libc::ETIMEDOUT;
        s.writer = None;
        if s.send.is_some() && !s.send_cancelling {
            s.send_cancelling = true;
            self.cancel(ud(t, OP_SEND));
        }
    }

    fn give_pool(&mut self, mut b: Vec<u8>) {
        if b.capacity() == 0 || self.pool_bytes + b.capacity() > POOL_BYTES {
            return;
        }
        b.clear();
        self.pool_bytes += b.capacity();
        self.pool.push(b);
    }

    /// Waits for a connecting socket to become writable (POLL_ADD armed at the first poll).
    pub(crate) fn poll_connect(&mut self, t: Token, waker: &Waker) -> Poll<io::Result<()>> {
        let Some(s) = self.stream(t) else {
            return Poll::Ready(Err(io::Error::from_raw_os_error(libc::EBADF)));
        };
        if let Some(res) = s.poll_res.take() {
            return Poll::Ready(if res < 0 {
                Err(io::Error::from_raw_os_error(-res))
            } else {
                Ok(())
            });
        }
        store(&mut s.writer, waker);
        if !s.polling {
            s.polling = true;
            let sqe = opcode::PollAdd::new(types::Fd(s.fd), libc::POLLOUT as u32)
                .build()
                .user_data(ud(t, OP_POLL));
            self.push(sqe, true);
        }
        Poll::Pending
    }

    /// The handle of `t` is gone: its descriptor is the reactor's now. Cancels the receive and
    /// a connect poll, lets a send finish within [`LINGER`], and closes the descriptor once no
    /// operation is in flight.
    pub(crate) fn close(&mut self, t: Token) {
        let bufs = &mut self.bufs;
        let Some(e) = self.slots.get_mut(t.index as usize) else {
            return;
        };
        if e.gen != t.gen {
            return;
        }
        match &mut e.slot {
            Slot::Free => {}
            Slot::Stream(s) => {
                s.open = false;
                while let Some(bid) = s.pending.pop_front(&bufs.links) {
                    bufs.push(bid);
                }
                s.reader = None;
                s.writer = None;
                let (recv, poll, rpoll, send) = (
                    s.recv_armed && !s.recv_cancelling,
                    s.polling,
                    s.rpolling,
                    s.send.is_some() && !s.send_cancelling,
                );
                s.recv_cancelling |= recv;
                let (idle, fd) = (s.idle(), s.fd);
                if idle {
                    close_fd(fd);
                    self.release(t);
                    return;
                }
                if recv {
                    self.cancel(ud(t, OP_RECV));
                }
                if poll {
                    self.cancel(ud(t, OP_POLL));
                }
                if rpoll {
                    self.cancel(ud(t, OP_RPOLL));
                }
                if send {
                    self.lingering.push_back((Instant::now() + LINGER, t));
                }
            }
            Slot::Listen(l) => {
                l.open = false;
                l.waker = None;
                l.stopper = None;
                for fd in l.queue.drain(..) {
                    close_fd(fd);
                }
                let (armed, fd) = (l.armed, l.fd);
                if armed {
                    self.cancel(ud(t, OP_ACCEPT));
                } else {
                    close_fd(fd);
                    self.release(t);
                }
            }
        }
    }

    fn finish_if_closed(&mut self, t: Token) {
        if let Some(s) = self.stream(t) {
            if !s.open && s.idle() {
                close_fd(s.fd);
                self.release(t);
            }
        }
    }

    /// The next accepted descriptor; Pending (waker stored, multishot accept armed) when none.
    pub(crate) fn poll_accept(&mut self, t: Token, waker: &Waker) -> Poll<io::Result<RawFd>> {
        let Some(l) = self.listener(t) else {
            return Poll::Ready(Err(io::Error::from_raw_os_error(libc::EBADF)));
        };
        if let Some(fd) = l.queue.pop_front() {
            return Poll::Ready(Ok(fd));
        }
        if l.err != 0 {
            let e = std::mem::take(&mut l.err);
            return Poll::Ready(Err(io::Error::from_raw_os_error(e)));
        }
        store(&mut l.waker, waker);
        if !l.armed && !l.stopped {
            l.armed = true;
            let sqe = opcode::AcceptMulti::new(types::Fd(l.fd))
                .flags(libc::SOCK_CLOEXEC)
                .build()
                .user_data(ud(t, OP_ACCEPT));
            self.push(sqe, true);
        }
        Poll::Pending
    }

    /// Stops accepting on `t`: cancels its multishot accept and is Ready once the kernel
    /// posted its last completion, so that nothing is accepted for this listener any more
    /// (what was is in its queue). Until then a wake-up of the socket may have gone to this
    /// accept (io_uring waits exclusively on a listening socket, so one wake-up wakes one
    /// waiter): what it left queued in the kernel is for the caller to accept then.
    pub(crate) fn stop_accept(&mut self, t: Token, waker: &Waker) -> Poll<()> {
        let Some(l) = self.listener(t) else {
            return Poll::Ready(());
        };
        if !l.armed {
            l.stopped = true;
            return Poll::Ready(());
        }
        store(&mut l.stopper, waker);
        if !l.stopped {
            l.stopped = true;
            self.cancel(ud(t, OP_ACCEPT));
        }
        Poll::Pending
    }

    /// `fd`, accepted by the caller on listener `t`, joins its queue.
    pub(crate) fn push_accepted(&mut self, t: Token, fd: RawFd) {
        match self.listener(t) {
            Some(l) if l.open => {
                l.queue.push_back(fd);
                wake(&mut l.waker);
            }
            _ => close_fd(fd),
        }
    }

    /// Descriptors accepted but not taken yet.
    pub(crate) fn take_accepted(&mut self, t: Token) -> Vec<RawFd> {
        self.listener(t)
            .map(|l| l.queue.drain(..).collect())
            .unwrap_or_default()
    }

    /// One `io_uring_enter`: submits what was queued and waits for a completion until
    /// `timeout` (None: no limit; zero: do not wait), then handles every CQE. Returns true when
    /// another thread wrote the eventfd.
    pub(crate) fn park(&mut self, timeout: Option<Duration>) -> io::Result<bool> {
        self.bufs.publish();
        if !self.starved.is_empty() && self.bufs.available() >= 16 {
            let starved = std::mem::take(&mut self.starved);
            for &t in &starved {
                if let Some(s) = self.stream(t) {
                    s.starved = false;
                    if s.should_arm() {
                        self.arm_recv(t);
                    }
                }
            }
            self.starved = starved;
            self.starved.clear();
        }
        let now = Instant::now();
        while let Some(&(at, t)) = self.lingering.front() {
            if at > now {
                break;
            }
            self.lingering.pop_front();
            if let Some(s) = self.stream(t) {
                if !s.open && s.send.is_some() && !s.send_cancelling {
                    s.send_cancelling = true;
                    self.cancel(ud(t, OP_SEND));
                }
            }
        }
        let linger = self
            .lingering
            .front()
            .map(|(at, _)| at.saturating_duration_since(now));
        let timeout = match (timeout, linger) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        while let Some(sqe) = self.backlog.pop_front() {
            // SAFETY: as in `push`: what the entry points at outlives its operation.
            if unsafe { self.ring.submission().push(&sqe) }.is_err() {
                self.backlog.push_front(sqe);
                break;
            }
        }
        let r = match timeout {
            Some(t) if t.is_zero() || !self.backlog.is_empty() => {
                let len = self.ring.submission().len() as u32;
                // SAFETY: enter with GETEVENTS and no argument: submits the queued SQEs (whose
                // memory outlives them, see `push`) and runs deferred completions, no wait.
                unsafe {
                    self.ring
                        .submitter()
                        .enter::<libc::sigset_t>(len, 0, ENTER_GETEVENTS, None)
                }
            }
            Some(t) => {
                let ts = types::Timespec::from(t);
                let args = types::SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(1, &args)
            }
            None => self.ring.submitter().submit_and_wait(1),
        };
        if let Err(e) = r {
            match e.raw_os_error() {
                Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN) => {}
                _ => return Err(e),
            }
        }
        let mut cqes = std::mem::take(&mut self.cqes);
        cqes.extend(
            self.ring
                .completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        let mut notified = false;
        for &(data, res, flags) in &cqes {
            let (t, op) = split(data);
            let more = cqueue::more(flags);
            if op != OP_CANCEL && !more {
                self.inflight = self.inflight.saturating_sub(1);
            }
            match op {
                OP_RECV => self.on_recv(t, res, flags),
                OP_SEND => self.on_send(t, res),
                OP_POLL => self.on_poll(t, res),
                OP_RPOLL => {
                    if let Some(s) = self.stream(t) {
                        s.rpolling = false;
                        wake(&mut s.reader);
                    }
                    self.finish_if_closed(t);
                }
                OP_ACCEPT => self.on_accept(t, res, more),
                OP_NOTIFY => {
                    notified = true;
                    if !more {
                        self.notify_armed = false;
                    }
                }
                _ => {}
            }
        }
        cqes.clear();
        self.cqes = cqes;
        if notified {
            let mut count = 0u64;
            // SAFETY: reads 8 bytes into a live u64 from our eventfd (nonblocking); resets it.
            unsafe { libc::read(self.notify, (&mut count as *mut u64).cast(), 8) };
            if !self.notify_armed {
                self.arm_notify();
            }
        }
        Ok(notified)
    }

    fn on_recv(&mut self, t: Token, res: i32, flags: u32) {
        let more = cqueue::more(flags);
        let bid = cqueue::buffer_select(flags);
        if bid.is_some() {
            self.bufs.out += 1;
        }
        let Some(s) = stream_in(&mut self.slots, t) else {
            if let Some(bid) = bid {
                self.bufs.push(bid);
            }
            return;
        };
        let mut give_back = None;
        let mut cancel = false;
        if res > 0 {
            match bid {
                Some(bid) if s.open => {
                    s.pending.push_back(&mut self.bufs.links, bid, res as u32);
                    if s.pending.len() >= MAX_PENDING && more && !s.recv_cancelling {
                        s.recv_cancelling = true;
                        cancel = true;
                    }
                }
                Some(bid) => give_back = Some(bid),
                None => s.rerr = libc::EIO,
            }
        } else if res == 0 {
            s.eof = true;
        } else if res == -libc::ENOBUFS {
            s.starved = true;
        } else if res != -libc::ECANCELED {
            s.rerr = -res;
        }
        let starved = s.starved && !more;
        if !more {
            s.recv_armed = false;
            s.recv_cancelling = false;
        }
        let rearm = !more && s.should_arm() && (res > 0 || s.reader.is_some());
        if res > 0 || !more {
            // A starved reader goes to the socket itself (see `poll_read`).
            wake(&mut s.reader);
        }
        if let Some(bid) = give_back {
            self.bufs.push(bid);
        }
        if cancel {
            self.cancel(ud(t, OP_RECV));
        }
        if starved {
            self.starved.push(t);
        }
        if rearm {
            self.arm_recv(t);
        }
        if !more {
            self.finish_if_closed(t);
        }
    }

    fn on_send(&mut self, t: Token, res: i32) {
        let Some(s) = self.stream(t) else { return };
        let Some(len) = s.send.as_ref().map(Vec::len) else {
            return;
        };
        if res > 0 {
            s.send_off += res as usize;
            if s.send_off < len && !s.send_cancelling {
                self.send_sqe(t);
                return;
            }
        } else if res < 0 && s.werr == 0 {
            s.werr = if res == -libc::ECANCELED {
                libc::ETIMEDOUT
            } else {
                -res
            };
        } else if res == 0 && s.werr == 0 {
            s.werr = libc::EPIPE;
        }
        if s.send_off < len && s.werr == 0 {
            s.werr = libc::EPIPE;
        }
        let b = s.send.take();
        s.send_cancelling = false;
        wake(&mut s.writer);
        if let Some(b) = b {
            self.give_pool(b);
        }
        self.finish_if_closed(t);
    }

    fn on_poll(&mut self, t: Token, res: i32) {
        let Some(s) = self.stream(t) else { return };
        s.polling = false;
        s.poll_res = Some(res);
        wake(&mut s.writer);
        self.finish_if_closed(t);
    }

    fn on_accept(&mut self, t: Token, res: i32, more: bool) {
        let Some(l) = self.listener(t) else {
            if res >= 0 {
                close_fd(res);
            }
            return;
        };
        if res >= 0 {
            if l.open {
                l.queue.push_back(res);
            } else {
                close_fd(res);
            }
        } else if res != -libc::ECANCELED {
            l.err = -res;
        }
        wake(&mut l.waker);
        if !more {
            l.armed = false;
            wake(&mut l.stopper);
            if !l.open {
                close_fd(l.fd);
                self.release(t);
            }
        }
    }

    /// Takes every waker the sockets hold, at teardown: a task that waits on its own socket
    /// would otherwise keep itself alive through its waker.
    pub(crate) fn take_wakers(&mut self) -> Vec<Waker> {
        let mut out = Vec::new();
        for e in &mut self.slots {
            match &mut e.slot {
                Slot::Stream(s) => {
                    out.extend(s.reader.take());
                    out.extend(s.writer.take());
                }
                Slot::Listen(l) => {
                    out.extend(l.waker.take());
                    out.extend(l.stopper.take());
                }
                Slot::Free => {}
            }
        }
        out
    }

    #[cfg(test)]
    pub(crate) fn buffers_out(&self) -> usize {
        self.bufs.out
    }

    #[cfg(test)]
    pub(crate) fn inflight(&self) -> usize {
        self.inflight
    }
}

impl Drop for Reactor {
    fn drop(&mut self) {
        // Cancel everything, then wait (bounded) for the final CQEs, so that no operation is
        // left that could write into the receive buffers or read a send buffer once freed.
        let sqe = opcode::AsyncCancel2::new(types::CancelBuilder::any())
            .build()
            .user_data(OP_CANCEL);
        self.backlog.clear();
        self.push(sqe, false);
        for _ in 0..100 {
            if self.inflight == 0 {
                break;
            }
            let ts = types::Timespec::from(Duration::from_millis(10));
            let args = types::SubmitArgs::new().timespec(&ts);
            let _ = self.ring.submitter().submit_with_args(1, &args);
            let done: Vec<(u64, i32, u32)> = self
                .ring
                .completion()
                .map(|c| (c.user_data(), c.result(), c.flags()))
                .collect();
            for (data, res, flags) in done {
                let op = split(data).1;
                if op != OP_CANCEL && !cqueue::more(flags) {
                    self.inflight = self.inflight.saturating_sub(1);
                }
                if op == OP_ACCEPT && res >= 0 {
                    close_fd(res);
                }
            }
        }
        // Descriptors whose handles are gone are ours to close; open handles close their own.
        for e in &mut self.slots {
            match &mut e.slot {
                Slot::Stream(s) if !s.open => close_fd(s.fd),
                Slot::Listen(l) => {
                    for fd in l.queue.drain(..) {
                        close_fd(fd);
                    }
                    if !l.open {
                        close_fd(l.fd);
                    }
                }
                _ => {}
            }
        }
        if self.inflight != 0 {
            // The kernel may still use the buffers: leak them rather than free them.
            let mem = std::mem::take(&mut self.bufs.mem);
            std::mem::forget(mem);
            for e in &mut self.slots {
                if let Slot::Stream(s) = &mut e.slot {
                    std::mem::forget(s.send.take());
                }
            }
        }
    }
}
