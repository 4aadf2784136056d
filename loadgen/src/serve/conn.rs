//! One downstream connection: read → parse → answer, in order, until close.
//!
//! Pipelined requests are answered in arrival order: every complete request already in the
//! read buffer is answered into the write buffer, which is flushed before the next read (and
//! before any delay, so earlier answers are not held back). Runs on the owning core; takes no
//! lock. Buffers belong to the connection and are reused for every request.

use std::io;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};

use super::route::{self, BodyChoice, Route};
use super::write::{self, ConnHeader};
use super::{Core, Framing, Persistence};
use crate::http::chunked;
use crate::http::request::{self, BodyFraming, Method, RequestHead};
use crate::rt::{self, TcpListener, TcpStream};

const READ_BUF: usize = 16 * 1024;
const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: u64 = 64 << 20;
/// Large bodies are written in pieces once this much is buffered.
const FLUSH_AT: usize = 256 * 1024;
const FILL_PIECE: u64 = 64 * 1024;

pub(super) async fn accept_loop(listener: TcpListener, core: Rc<Core>, instance: usize) {
    loop {
        match rt::accept(&listener).await {
            Ok(stream) => {
                rt::spawn_local(serve(stream, core.clone(), instance)).detach();
            }
            // Out of descriptors or memory: back off instead of spinning.
            Err(_) => rt::sleep(Duration::from_millis(10)).await,
        }
    }
}

async fn serve(mut stream: TcpStream, core: Rc<Core>, instance: usize) {
    let counters = core.counters(instance);
    counters.connections.fetch_add(1, Ordering::Relaxed);
    counters.active.fetch_add(1, Ordering::Relaxed);
    let _ = rt::set_nodelay(&stream);
    if let Some(idle) = core.shared.behaviour.idle_close {
        // A read that waits this long ends the connection (an error ends `run`).
        let _ = rt::set_read_timeout(&stream, Some(idle));
    }
    let mut conn = Conn {
        core: core.clone(),
        instance,
        rbuf: vec![0; READ_BUF],
        start: 0,
        end: 0,
        wbuf: Vec::with_capacity(READ_BUF),
        body: Vec::new(),
        scratch: Vec::new(),
        pending: None,
    };
    let _ = conn.run(&mut stream).await;
    core.counters(instance)
        .active
        .fetch_sub(1, Ordering::Relaxed);
}

/// A request whose head is parsed but whose body may still be arriving.
struct Pending {
    head: RequestHead,
    body: PendingBody,
    continue_sent: bool,
}

enum PendingBody {
    Complete,
    Length(u64),
    /// `parsed`: bytes of the message (head included) the decoder has consumed.
    Chunked {
        decoder: chunked::Decoder,
        parsed: usize,
    },
}

enum Next {
    /// A whole request of `len` bytes at `start`.
    Request(RequestHead, usize),
    NeedMore,
    /// Answer with this status and close.
    Reject(u16),
}

enum After {
    KeepGoing,
    Close,
    Upgrade,
}

/// The body an answer carries.
#[derive(Clone, Copy)]
enum Body<'a> {
    Bytes(&'a [u8]),
    /// That many `x` bytes.
    Fill(u64),
}

impl Body<'_> {
    fn len(&self) -> u64 {
        match self {
            Body::Bytes(b) => b.len() as u64,
            Body::Fill(n) => *n,
        }
    }
}

/// How every answer to one request is framed.
struct Reply<'a> {
    name: &'a str,
    framing: Framing,
    conn: ConnHeader,
    head_only: bool,
}

impl Reply<'_> {
    async fn send(
        &self,
        s: &mut TcpStream,
        w: &mut Vec<u8>,
        status: u16,
        body: Body<'_>,
        content_type: Option<&str>,
    ) -> io::Result<()> {
        let len = write::body_len(status, body.len());
        write::head(
            w,
            status,
            self.name,
            len,
            self.framing,
            self.conn,
            content_type,
        );
        if self.head_only || len.is_none() {
            return Ok(());
        }
        write_body(s, w, body, self.framing).await
    }
}

struct Conn {
    core: Rc<Core>,
    instance: usize,
    /// Read buffer: bytes `start..end` are received and not yet answered.
    rbuf: Vec<u8>,
    start: usize,
    end: usize,
    wbuf: Vec<u8>,
    /// Decoded chunked request body.
    body: Vec<u8>,
    /// `/stats` JSON.
    scratch: Vec<u8>,
    pending: Option<Pending>,
}

impl Conn {
    async fn run(&mut self, s: &mut TcpStream) -> io::Result<()> {
        loop {
            loop {
                match self.next() {
                    Next::Request(head, len) => match self.respond(s, &head, len).await? {
                        After::KeepGoing => self.start += len,
                        After::Close => return flush(s, &mut self.wbuf).await,
                        After::Upgrade => {
                            self.start += len;
                            return self.tunnel(s).await;
                        }
                    },
                    Next::NeedMore => break,
                    Next::Reject(status) => {
                        let name = &self.core.shared.instances[self.instance].name;
                        write::rejection(&mut self.wbuf, status, name);
                        return flush(s, &mut self.wbuf).await;
                    }
                }
            }
            flush(s, &mut self.wbuf).await?;
            self.rbuf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.end == self.rbuf.len() {
                // Bounded: `next` rejects heads over MAX_HEAD and bodies over MAX_BODY.
                self.rbuf.resize(self.rbuf.len() * 2, 0);
            }
            if let Some(p) = &mut self.pending {
                if p.head.expect_continue && p.head.minor >= 1 && !p.continue_sent {
                    p.continue_sent = true;
                    s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
                }
            }
            let n = s.read(&mut self.rbuf[self.end..]).await?;
            if n == 0 {
                return Ok(());
            }
            self.end += n;
        }
    }

    /// Looks for a whole request at `start`.
    fn next(&mut self) -> Next {
        let buf = &self.rbuf[self.start..self.end];
        if self.pending.is_none() {
            let head = match request::parse(buf) {
                Ok(Some(head)) => head,
                Ok(None) if buf.len() > MAX_HEAD => return Next::Reject(431),
                Ok(None) => return Next::NeedMore,
                Err(_) => return Next::Reject(400),
            };
            let body = match head.body {
                BodyFraming::Empty => PendingBody::Complete,
                BodyFraming::Length(n) if n > MAX_BODY => return Next::Reject(413),
                BodyFraming::Length(n) => PendingBody::Length(n),
                BodyFraming::Chunked => {
                    self.body.clear();
                    PendingBody::Chunked {
                        decoder: chunked::Decoder::new(),
                        parsed: head.len,
                    }
                }
            };
            self.pending = Some(Pending {
                head,
                body,
                continue_sent: false,
            });
        }
        let Some(p) = &mut self.pending else {
            return Next::NeedMore;
        };
        let len = match &mut p.body {
            PendingBody::Complete => p.head.len,
            PendingBody::Length(n) => {
                let len = p.head.len + *n as usize;
                if buf.len() < len {
                    return Next::NeedMore;
                }
                len
            }
            PendingBody::Chunked { decoder, parsed } => {
                let body = &mut self.body;
                match decoder.feed(&buf[*parsed..], |b| body.extend_from_slice(b)) {
                    Ok(n) => *parsed += n,
                    Err(_) => return Next::Reject(400),
                }
                if !decoder.is_done() {
                    let too_big = body.len() as u64 > MAX_BODY || buf.len() as u64 > 2 * MAX_BODY;
                    return if too_big {
                        Next::Reject(413)
                    } else {
                        Next::NeedMore
                    };
                }
                *parsed
            }
        };
        let p = self.pending.take().expect("checked above");
        Next::Request(p.head, len)
    }

    async fn respond(
        &mut self,
        s: &mut TcpStream,
        head: &RequestHead,
        len: usize,
    ) -> io::Result<After> {
        let core = self.core.clone();
        let shared = &core.shared;
        let inst = &shared.instances[self.instance];
        let b = &shared.behaviour;
        let name = inst.name.as_str();
        core.counters(self.instance)
            .requests
            .fetch_add(1, Ordering::Relaxed);

        let persistent = head.persistent() && b.persistence == Persistence::KeepAlive;
        let reply = Reply {
            name,
            framing: b.framing,
            conn: match (persistent, head.minor) {
                (false, _) => ConnHeader::Close,
                (true, 0) => ConnHeader::KeepAlive,
                (true, _) => ConnHeader::None,
            },
            head_only: head.method == Method::Head,
        };
        let after = if persistent {
            After::KeepGoing
        } else {
            After::Close
        };

        let req = &self.rbuf[self.start..self.start + len];
        let normal = match route::route(head.method, &req[head.path.clone()], head.websocket) {
            Route::Health => {
                let status = inst.health.load(Ordering::Relaxed);
                let body: &[u8] = if status < 400 {
                    b"ok\n"
                } else {
                    b"unhealthy\n"
                };
                reply
                    .send(s, &mut self.wbuf, status, Body::Bytes(body), None)
                    .await?;
                return Ok(after);
            }
            Route::SetHealth(status) => {
                inst.health.store(status, Ordering::Relaxed);
                reply
                    .send(s, &mut self.wbuf, 200, Body::Bytes(b"ok\n"), None)
                    .await?;
                return Ok(after);
            }
            Route::Stats => {
                use std::io::Write as _;
                let (requests, connections, active) = inst.stats();
                self.scratch.clear();
                let _ = writeln!(
                    self.scratch,
                    r#"{{"requests":{requests},"connections":{connections},"active_connections":{active}}}"#
                );
                let body = Body::Bytes(&self.scratch);
                let ct = Some("application/json");
                reply.send(s, &mut self.wbuf, 200, body, ct).await?;
                return Ok(after);
            }
            Route::WebSocket => {
                let key = head.websocket_key.clone().map(|k| &req[k]);
                write::switching_protocols(&mut self.wbuf, name, key);
                flush(s, &mut self.wbuf).await?;
                return Ok(After::Upgrade);
            }
            Route::Bad(status) => {
                let body = Body::Bytes(crate::http::reason(status).as_bytes());
                reply.send(s, &mut self.wbuf, status, body, None).await?;
                return Ok(after);
            }
            Route::Normal(n) => n,
        };

        let mut delay = b.delay + normal.delay;
        if let Some((lo, hi)) = b.delay_random {
            delay += lo + (hi - lo).mul_f64(fastrand::f64());
        }
        if let Some((after_n, stall)) = b.stall {
            let now = shared.epoch.elapsed().as_nanos() as u64;
            if inst.stall_seen.fetch_add(1, Ordering::Relaxed) + 1 == after_n {
                inst.stall_until
                    .store(now + stall.as_nanos() as u64, Ordering::Relaxed);
            }
            let until = inst.stall_until.load(Ordering::Relaxed);
            delay = delay.max(Duration::from_nanos(until.saturating_sub(now)));
        }
        if !delay.is_zero() {
            flush(s, &mut self.wbuf).await?;
            rt::sleep(delay).await;
        }

        let mut status = normal.status.unwrap_or(b.status);
        if b.fail_ratio > 0.0 && fastrand::f64() < b.fail_ratio {
            status = 500;
        }
        let req = &self.rbuf[self.start..self.start + len];
        let body = match (normal.body, head.body, b.body_size) {
            (BodyChoice::RequestHead, _, _) => Body::Bytes(&req[..head.len]),
            (BodyChoice::Size(n), _, _) => Body::Fill(n),
            (BodyChoice::Default, BodyFraming::Length(_), _) => Body::Bytes(&req[head.len..]),
            (BodyChoice::Default, BodyFraming::Chunked, _) => Body::Bytes(&self.body),
            (BodyChoice::Default, BodyFraming::Empty, Some(n)) => Body::Fill(n),
            (BodyChoice::Default, BodyFraming::Empty, None) => {
                self.scratch.clear();
                self.scratch.extend_from_slice(name.as_bytes());
                self.scratch.push(b'\n');
                Body::Bytes(&self.scratch)
            }
        };
        reply.send(s, &mut self.wbuf, status, body, None).await?;
        Ok(after)
    }

    /// After `101`: echo raw bytes until the peer closes.
    async fn tunnel(&mut self, s: &mut TcpStream) -> io::Result<()> {
        if self.start < self.end {
            s.write_all(&self.rbuf[self.start..self.end]).await?;
        }
        loop {
            let n = s.read(&mut self.rbuf).await?;
            if n == 0 {
                return Ok(());
            }
            s.write_all(&self.rbuf[..n]).await?;
        }
    }
}

async fn write_body(
    s: &mut TcpStream,
    w: &mut Vec<u8>,
    body: Body<'_>,
    framing: Framing,
) -> io::Result<()> {
    let total = body.len();
    let piece = match framing {
        Framing::Chunked => write::chunk_size(total),
        Framing::ContentLength => FILL_PIECE,
    };
    let mut done = 0;
    while done < total {
        let n = piece.min(total - done);
        if framing == Framing::Chunked {
            write::chunk_header(w, n);
        }
        match body {
            Body::Bytes(b) => w.extend_from_slice(&b[done as usize..(done + n) as usize]),
            Body::Fill(_) => w.resize(w.len() + n as usize, b'x'),
        }
        if framing == Framing::Chunked {
            w.extend_from_slice(write::CHUNK_END);
        }
        done += n;
        if w.len() >= FLUSH_AT {
            flush(s, w).await?;
        }
    }
    if framing == Framing::Chunked {
        w.extend_from_slice(write::LAST_CHUNK);
    }
    Ok(())
}

async fn flush(s: &mut TcpStream, w: &mut Vec<u8>) -> io::Result<()> {
    if !w.is_empty() {
        s.write_all(w).await?;
        w.clear();
    }
    Ok(())
}
