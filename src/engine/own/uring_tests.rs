//! The io_uring reactor and its sockets on loopback, each test on a core of its own.

use super::exec::{self, spawn, Kind};
use super::uring_net::{TcpListener, TcpStream};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// Runs `main` on a fresh io_uring core and returns its result.
fn on_core<T, F, Fut>(main: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    let (tx, rx) = mpsc::channel();
    let h = super::start(
        "uring-test".into(),
        None,
        Kind::Uring,
        0,
        move || async move {
            let _ = tx.send(main().await);
        },
    )
    .expect("io_uring core starts");
    assert!(h.join().is_ok(), "core panicked");
    rx.recv().expect("main sent its result")
}

fn loopback() -> std::net::TcpListener {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback")
}

async fn pair(l: &TcpListener) -> (TcpStream, TcpStream) {
    let addr = l.local_addr().expect("addr");
    let c = TcpStream::connect(addr, Duration::from_secs(1))
        .await
        .expect("connect");
    let (s, _) = l.accept().await.expect("accept");
    (c, s)
}

fn buffers_out() -> usize {
    exec::with_uring(|r| r.buffers_out())
}

fn inflight() -> usize {
    exec::with_uring(|r| r.inflight())
}

/// Lets the core run a few loop passes (completions of cancels and closes arrive).
async fn settle() {
    for _ in 0..5 {
        exec::sleep(Duration::from_millis(2)).await;
    }
}

#[test]
fn echo_over_loopback() {
    let got = on_core(|| async {
        let l = TcpListener::from_std(loopback()).expect("listener");
        let addr = l.local_addr().expect("addr");
        let server = spawn(async move {
            let (mut s, _) = l.accept().await.expect("accept");
            let mut buf = [0u8; 64];
            loop {
                let n = s.read(&mut buf).await.expect("read");
                if n == 0 {
                    return;
                }
                s.write_all(&buf[..n]).await.expect("write");
            }
        });
        let mut c = TcpStream::connect(addr, Duration::from_secs(1))
            .await
            .expect("connect");
        let mut out = Vec::new();
        for word in [&b"hello "[..], b"io_uring"] {
            c.write_all(word).await.expect("write");
            let mut buf = [0u8; 64];
            let n = c.read(&mut buf).await.expect("read");
            out.extend_from_slice(&buf[..n]);
        }
        drop(c);
        server.await;
        out
    });
    assert_eq!(got, b"hello io_uring");
}

#[test]
fn eight_megabytes_each_way_through_slow_readers_arrive_intact() {
    const LEN: usize = 8 << 20;
    let ok = on_core(|| async {
        let l = TcpListener::from_std(loopback()).expect("listener");
        let (mut c, mut s) = pair(&l).await;
        let data: Vec<u8> = (0..LEN).map(|i| (i % 251) as u8).collect();
        let expect = data.clone();
        let writer = spawn(async move {
            c.set_write_timeout(Some(Duration::from_secs(10)));
            c.write_all(&data).await.expect("write");
            c.flush().await.expect("flush");
            c
        });
        let mut got = Vec::with_capacity(LEN);
        let mut buf = vec![0u8; 7000];
        while got.len() < LEN {
            if got.len() % (1 << 20) < 7000 {
                exec::sleep(Duration::from_millis(5)).await;
            }
            let n = s.read(&mut buf).await.expect("read");
            assert!(n > 0, "early end of stream");
            got.extend_from_slice(&buf[..n]);
        }
        drop(writer.await);
        let mut rest = [0u8; 8];
        assert_eq!(s.read(&mut rest).await.expect("eof"), 0);
        got == expect && buffers_out() == 0
    });
    assert!(ok, "bytes arrive in order and every buffer went back");
}

#[test]
fn a_read_with_nothing_to_read_times_out_and_the_stream_still_works() {
    let (kind, got) = on_core(|| async {
        let l = TcpListener::from_std(loopback()).expect("listener");
        let (mut c, mut s) = pair(&l).await;
        c.set_read_timeout(Some(Duration::from_millis(50)));
        let started = Instant::now();
        let mut buf = [0u8; 8];
        let r = c.read(&mut buf).await;
        assert!(started.elapsed() >= Duration::from_millis(50));
        let kind = r.expect_err("nothing was sent").kind();
        // A read future dropped while waiting (a timeout around it) leaves nothing behind.
        let raced = futures_lite::future::or(
            async {
                let _ = c.read(&mut buf).await;
                false
            },
            async {
                exec::sleep(Duration::from_millis(20)).await;
                true
            },
        )
        .await;
        assert!(raced, "the sleep wins");
        s.write_all(b"late").await.expect("write");
        c.set_read_timeout(Some(Duration::from_secs(2)));
        let n = c.read(&mut buf).await.expect("read");
        (kind, buf[..n].to_vec())
    });
    assert_eq!(kind, io::ErrorKind::TimedOut);
    assert_eq!(got, b"late");
}

#[test]
fn a_write_to_a_peer_that_never_reads_times_out_and_its_send_is_cancelled() {
    let (kind, leftover) = on_core(|| async {
        let l = TcpListener::from_std(loopback()).expect("listener");
        let base = inflight();
        let (mut c, s) = pair(&l).await;
        c.set_write_timeout(Some(Duration::from_millis(100)));
        let big = vec![1u8; 1 << 20];
        let mut kind = None;
        for _ in 0..64 {
            if let Err(e) = c.write_all(&big).await {
                kind = Some(e.kind());
                break;
            }
        }
        // Later writes keep failing; dropping both ends leaves no operation in flight.
        assert!(c.write_all(b"x").await.is_err());
        drop(c);
        drop(s);
        drop(l);
        settle().await;
        (kind, inflight().saturating_sub(base))
    });
    assert_eq!(kind, Some(io::ErrorKind::TimedOut));
    assert_eq!(leftover, 0, "every cancelled operation completed");
}

#[test]
fn idle_connections_hold_no_receive_buffer() {
    const CONNS: usize = 300;
    let (out, armed) = on_core(|| async {
        let l = TcpListener::from_std(loopback()).expect("listener");
        let base = inflight();
        let mut conns = Vec::new();
        for i in 0..CONNS {
            let (mut c, mut s) = pair(&l).await;
            c.write_all(format!("request {i}").as_bytes())
                .await
                .expect("write");
            let mut buf = [0u8; 64];
            let n = s.read(&mut buf).await.expect("read");
            assert!(n > 0);
            conns.push((c, s));
        }
        settle().await;
        // Every server side keeps its multishot receive armed, and no buffer.
        let r = (buffers_out(), inflight() - base);
        drop(conns);
        drop(l);
        settle().await;
        assert_eq!(inflight(), base, "closing cancelled every receive");
        r
    });
    assert_eq!(out, 0);
    assert!(armed >= CONNS, "{armed} receives armed");
}

#[test]
fn an_exhausted_buffer_ring_recovers_and_loses_nothing() {
    // 40 streams x 128 KiB unread: far more than the ring's 512 x 4 KiB, so receives end with
    // ENOBUFS or pause, and must resume as buffers come back.
    const STREAMS: usize = 40;
    const LEN: usize = 128 << 10;
    let ok = on_core(|| async {
        let l = TcpListener::from_std(loopback()).expect("listener");
        let mut readers = Vec::new();
        let mut writers = Vec::new();
        for i in 0..STREAMS {
            let (mut c, mut s) = pair(&l).await;
            // Arm every receive first.
            let mut one = [0u8; 1];
            c.write_all(&[i as u8]).await.expect("write");
            s.read_exact(&mut one).await.expect("read");
            writers.push(spawn(async move {
                c.set_write_timeout(Some(Duration::from_secs(10)));
                c.write_all(&vec![i as u8; LEN]).await.expect("write");
                c.flush().await.expect("flush");
                c
            }));
            readers.push(s);
        }
        settle().await;
        let mut ok = true;
        let mut buf = vec![0u8; 10_000];
        for (i, s) in readers.iter_mut().enumerate() {
            s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut total = 0;
            while total < LEN {
                let n = s.read(&mut buf).await.expect("read");
                assert!(n > 0, "early end of stream");
                ok &= buf[..n].iter().all(|&b| b == i as u8);
                total += n;
            }
            ok &= total == LEN;
        }
        for w in writers {
            drop(w.await);
        }
        settle().await;
        ok && buffers_out() == 0
    });
    assert!(ok);
}

#[test]
fn peek_does_not_consume() {
    let got = on_core(|| async {
        let l = TcpListener::from_std(loopback()).expect("listener");
        let (mut c, s) = pair(&l).await;
        c.write_all(b"GET /").await.expect("write");
        let mut one = [0u8; 1];
        let n = s.peek(&mut one).await.expect("peek");
        assert_eq!(n, 1);
        let mut s = s;
        let mut buf = [0u8; 16];
        let n = s.read(&mut buf).await.expect("read");
        (one[0], buf[..n].to_vec(), s.is_quiet())
    });
    assert_eq!(got, (b'G', b"GET /".to_vec(), true));
}

#[test]
fn a_dropped_stream_closes_its_socket() {
    let l = loopback();
    let addr = l.local_addr().expect("addr");
    on_core(move || async move {
        let mut c = TcpStream::connect(addr, Duration::from_secs(1))
            .await
            .expect("connect");
        // A read waits (receive armed) when the stream is dropped.
        let _ = futures_lite::future::or(
            async {
                let mut buf = [0u8; 8];
                let _ = c.read(&mut buf).await;
            },
            exec::sleep(Duration::from_millis(10)),
        )
        .await;
        drop(c);
        settle().await;
    });
    let (mut s, _) = l.accept().expect("accept");
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let mut buf = [0u8; 8];
    let n = std::io::Read::read(&mut s, &mut buf).expect("the core closed its socket");
    assert_eq!(n, 0);
}

#[test]
fn bytes_written_just_before_a_drop_are_delivered() {
    let l = loopback();
    let addr = l.local_addr().expect("addr");
    let reader = std::thread::spawn(move || {
        let (mut s, _) = l.accept().expect("accept");
        let mut all = Vec::new();
        std::io::Read::read_to_end(&mut s, &mut all).expect("read");
        all.len()
    });
    on_core(move || async move {
        let mut c = TcpStream::connect(addr, Duration::from_secs(1))
            .await
            .expect("connect");
        c.write_all(&vec![5u8; 200_000]).await.expect("write");
        drop(c);
        settle().await;
    });
    assert_eq!(reader.join().expect("reader"), 200_000);
}

#[test]
fn connecting_to_a_closed_port_fails() {
    let addr = loopback().local_addr().expect("addr");
    let err = on_core(move || async move {
        TcpStream::connect(addr, Duration::from_secs(1))
            .await
            .map(|_| ())
            .expect_err("nothing listens")
            .kind()
    });
    assert_eq!(err, io::ErrorKind::ConnectionRefused);
}

#[test]
fn a_wake_from_another_thread_reaches_a_parked_core() {
    let raised = Arc::new(AtomicBool::new(false));
    let waker = Arc::new(atomic_waker::AtomicWaker::new());
    let raiser = {
        let (raised, waker) = (raised.clone(), waker.clone());
        std::thread::spawn(move || {
            for _ in 0..3 {
                std::thread::sleep(Duration::from_millis(30));
                waker.wake();
            }
            raised.store(true, Ordering::Release);
            waker.wake();
        })
    };
    let waited = on_core(move || async move {
        let started = Instant::now();
        // No timer and no socket: the core waits in io_uring_enter until the eventfd fires.
        std::future::poll_fn(|cx| {
            waker.register(cx.waker());
            if raised.load(Ordering::Acquire) {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
        .await;
        started.elapsed()
    });
    raiser.join().expect("raiser");
    // The raiser started before the core did, so the core saw less than its 90 ms.
    assert!(waited >= Duration::from_millis(40), "{waited:?}");
}

#[test]
fn accept_queued_drains_without_waiting_and_dropping_the_listener_stops_accepting() {
    let (queued, refused) = on_core(|| async {
        let std_l = loopback();
        let addr = std_l.local_addr().expect("addr");
        let l = TcpListener::from_std(std_l).expect("listener");
        let mut clients = Vec::new();
        for _ in 0..3 {
            clients.push(
                TcpStream::connect(addr, Duration::from_secs(1))
                    .await
                    .expect("connect"),
            );
        }
        let (_first, _) = l.accept().await.expect("accept");
        settle().await;
        let queued = l.accept_queued().len();
        drop(l);
        settle().await;
        let refused = TcpStream::connect(addr, Duration::from_secs(1))
            .await
            .is_err();
        (queued, refused)
    });
    assert_eq!(queued, 2);
    assert!(refused, "the listening socket is closed");
}

/// Late bytes or an end of stream make a stream not quiet, seen from the ring (the socket is
/// asked only when the receive is not armed).
#[test]
fn is_quiet_sees_late_bytes_and_the_end_of_stream() {
    let got = on_core(|| async {
        let l = TcpListener::from_std(loopback()).expect("listener");
        let (c, s) = pair(&l).await;
        super::tests::quiet_sequence(c, s, TcpStream::is_quiet).await
    });
    assert_eq!(got, (true, false, true, false));
}

/// `make test` runs these tests again with RINGLB_IO_URING_SETUP=coop_taskrun: the ring they
/// run on is then a COOP_TASKRUN one, as on kernels without DEFER_TASKRUN.
#[test]
fn the_ring_takes_the_setup_the_environment_asks_for() {
    let flags = on_core(|| async { super::uring::build_ring(4).map(|(_, f)| f) }).expect("ring");
    if std::env::var(super::uring::SETUP_ENV).as_deref() == Ok("coop_taskrun") {
        assert_eq!(flags, "SINGLE_ISSUER | COOP_TASKRUN");
    } else {
        assert!(flags.starts_with("SINGLE_ISSUER | "), "{flags}");
    }
}
