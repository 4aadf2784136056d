//! The executor, timers and sockets on loopback, each test on a core of its own.

use super::exec::{self, spawn};
use super::net::{TcpListener, TcpStream};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// Runs `main` on a fresh core and returns its result.
fn on_core<T, F, Fut>(main: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    let (tx, rx) = mpsc::channel();
    let h = super::start(
        "test-core".into(),
        None,
        super::exec::Kind::Epoll,
        0,
        move || async move {
            let _ = tx.send(main().await);
        },
    )
    .expect("core starts");
    assert!(h.join().is_ok(), "core panicked");
    rx.recv().expect("main sent its result")
}

fn loopback() -> std::net::TcpListener {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback")
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
        for word in [&b"hello "[..], b"epoll"] {
            c.write_all(word).await.expect("write");
            let mut buf = [0u8; 64];
            let n = c.read(&mut buf).await.expect("read");
            out.extend_from_slice(&buf[..n]);
        }
        drop(c);
        server.await;
        out
    });
    assert_eq!(got, b"hello epoll");
}

#[test]
fn a_megabyte_through_a_slow_reader_waits_for_writable() {
    const LEN: usize = 1 << 20;
    let got = on_core(|| async {
        let l = TcpListener::from_std(loopback()).expect("listener");
        let addr = l.local_addr().expect("addr");
        let reader = spawn(async move {
            let (mut s, _) = l.accept().await.expect("accept");
            let mut total = 0;
            let mut buf = vec![0u8; 4096];
            loop {
                exec::sleep(Duration::from_micros(200)).await;
                let n = s.read(&mut buf).await.expect("read");
                if n == 0 {
                    return total;
                }
                total += n;
            }
        });
        let mut c = TcpStream::connect(addr, Duration::from_secs(1))
            .await
            .expect("connect");
        c.set_write_timeout(Some(Duration::from_secs(10)));
        c.write_all(&vec![7u8; LEN]).await.expect("write");
        drop(c);
        reader.await
    });
    assert_eq!(got, LEN);
}

#[test]
fn timers_fire_in_deadline_order() {
    let order = on_core(|| async {
        let order = Rc::new(RefCell::new(Vec::new()));
        let tasks: Vec<_> = [30u64, 10, 20, 5]
            .into_iter()
            .map(|ms| {
                let order = order.clone();
                spawn(async move {
                    exec::sleep(Duration::from_millis(ms)).await;
                    order.borrow_mut().push(ms);
                })
            })
            .collect();
        let started = Instant::now();
        for t in tasks {
            t.await;
        }
        assert!(started.elapsed() >= Duration::from_millis(30));
        order.take()
    });
    assert_eq!(order, [5, 10, 20, 30]);
}

#[test]
fn a_read_with_nothing_to_read_times_out() {
    let err = on_core(|| async {
        let l = TcpListener::from_std(loopback()).expect("listener");
        let addr = l.local_addr().expect("addr");
        let mut c = TcpStream::connect(addr, Duration::from_secs(1))
            .await
            .expect("connect");
        let _server_side = l.accept().await.expect("accept");
        c.set_read_timeout(Some(Duration::from_millis(50)));
        let started = Instant::now();
        let mut buf = [0u8; 8];
        let r = c.read(&mut buf).await;
        assert!(started.elapsed() >= Duration::from_millis(50));
        r.expect_err("nothing was sent").kind()
    });
    assert_eq!(err, io::ErrorKind::TimedOut);
}

#[test]
fn connecting_to_a_closed_port_fails() {
    let addr = loopback().local_addr().expect("addr"); // closed when dropped
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
            std::thread::sleep(Duration::from_millis(50));
            raised.store(true, Ordering::Release);
            waker.wake();
        })
    };
    let waited = on_core(move || async move {
        let started = Instant::now();
        // No timer and no socket: the core blocks in epoll_wait until the eventfd is written.
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
    assert!(waited >= Duration::from_millis(40), "{waited:?}");
}

/// Sets its flag when dropped.
struct Dropped(Rc<std::cell::Cell<bool>>);
impl Drop for Dropped {
    fn drop(&mut self) {
        self.0.set(true);
    }
}

#[test]
fn dropping_a_task_cancels_it_and_detach_lets_it_run() {
    let (cancelled, finished) = on_core(|| async {
        let gone = Rc::new(std::cell::Cell::new(false));
        let guard = Dropped(gone.clone());
        let t = spawn(async move {
            let _guard = guard;
            exec::sleep(Duration::from_secs(30)).await;
        });
        exec::yield_now().await;
        drop(t);
        exec::yield_now().await;
        let cancelled = gone.get();

        let done = Rc::new(std::cell::Cell::new(false));
        spawn({
            let done = done.clone();
            async move {
                exec::sleep(Duration::from_millis(10)).await;
                done.set(true);
            }
        })
        .detach();
        exec::sleep(Duration::from_millis(30)).await;
        (cancelled, done.get())
    });
    assert!(cancelled, "the dropped task's future was dropped");
    assert!(finished, "the detached task ran to its end");
}

#[test]
fn tasks_left_at_exit_are_dropped_and_close_their_sockets() {
    let l = loopback();
    let addr = l.local_addr().expect("addr");
    on_core(move || async move {
        let mut c = TcpStream::connect(addr, Duration::from_secs(1))
            .await
            .expect("connect");
        // Waits on its own socket for ever; main ends meanwhile.
        spawn(async move {
            let mut buf = [0u8; 8];
            let _ = c.read(&mut buf).await;
        })
        .detach();
        exec::yield_now().await;
    });
    let (mut s, _) = l.accept().expect("accept");
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let mut buf = [0u8; 8];
    let n = std::io::Read::read(&mut s, &mut buf).expect("the core closed its socket");
    assert_eq!(n, 0);
}

#[test]
fn a_panicking_task_ends_the_core() {
    let h = super::start(
        "test-panic".into(),
        None,
        super::exec::Kind::Epoll,
        0,
        || async {
            spawn(async { panic!("task panics") }).detach();
            exec::sleep(Duration::from_secs(5)).await;
        },
    )
    .expect("core starts");
    assert!(h.join().is_err());
}

#[test]
fn pinning_to_a_cpu_that_does_not_exist_fails_at_start() {
    let r = super::start(
        "test-pin".into(),
        Some(100_000),
        super::exec::Kind::Epoll,
        0,
        || async {},
    );
    assert!(r.is_err());
}

/// What the upstream pool asks before reusing a connection (`is_quiet`), on either engine:
/// after a read drained `s`, with bytes `c` sent later, drained again, after `c` closed.
pub(super) async fn quiet_sequence<S>(
    mut c: S,
    mut s: S,
    quiet: fn(&S) -> bool,
) -> (bool, bool, bool, bool)
where
    S: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin,
{
    let settle = || async {
        for _ in 0..5 {
            exec::sleep(Duration::from_millis(2)).await;
        }
    };
    let mut buf = [0u8; 16];
    c.write_all(b"response").await.expect("write");
    let n = s.read(&mut buf).await.expect("read");
    assert_eq!(n, 8);
    let after_read = quiet(&s);
    c.write_all(b"extra").await.expect("write");
    settle().await;
    let with_bytes = quiet(&s);
    let n = s.read(&mut buf).await.expect("read");
    assert_eq!(&buf[..n], b"extra");
    let drained = quiet(&s);
    drop(c);
    settle().await;
    (after_read, with_bytes, drained, quiet(&s))
}

/// Late bytes or an end of stream make a stream not quiet (from the readiness edges, a peek
/// only when a flag is carried over).
#[test]
fn is_quiet_sees_late_bytes_and_the_end_of_stream() {
    let got = on_core(|| async {
        let l = TcpListener::from_std(loopback()).expect("listener");
        let addr = l.local_addr().expect("addr");
        let c = TcpStream::connect(addr, Duration::from_secs(1))
            .await
            .expect("connect");
        let (s, _) = l.accept().await.expect("accept");
        quiet_sequence(c, s, TcpStream::is_quiet).await
    });
    assert_eq!(got, (true, false, true, false));
}
