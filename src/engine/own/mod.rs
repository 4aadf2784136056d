//! ringlb's own engines: a single-threaded executor per core on one of two reactors, io_uring
//! (completion-native, the default) or edge-triggered epoll (the fallback where io_uring is
//! refused: Docker's default seccomp profile, `kernel.io_uring_disabled`, old kernels).
//!
//! - [`exec`]: tasks (`async-task`), the run queue, foreign wakes (injector + eventfd), the loop,
//!   and the reactor enum.
//! - [`timer`]: one heap of deadlines per core; the nearest is the reactor's wait timeout.
//! - [`uring`]: the io_uring reactor; one `io_uring_enter` per loop pass, multishot accept and
//!   receive into a provided-buffer ring, sends from reactor-owned buffers.
//! - [`uring_net`]: TCP listener and stream on it.
//! - [`epoll`]: the epoll reactor; one `epoll_wait` per loop pass, sockets registered once (EPOLLET).
//! - [`net`]: nonblocking TCP listener and stream on it (`AsyncRead`/`AsyncWrite` for both, so
//!   futures-rustls runs over them unchanged).
//!
//! Cost per operation: a syscall that succeeds costs just that; one that would block costs one
//! EAGAIN (often none, see `net`) and a waker store; timers are armed only for waits. A wake on
//! the owning thread is a queue push.

mod chunked;
pub(crate) mod epoll;
pub(crate) mod exec;
pub(crate) mod net;
pub(crate) mod timer;
pub(crate) mod uring;
pub(crate) mod uring_net;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod uring_tests;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::thread::JoinHandle;

/// Starts a thread running an executor on the reactor `kind`, pinned to `cpu` when given, that
/// runs `main` to completion. Returns once the thread is set up (pinned, reactor and eventfd
/// made), with what failed if it could not be.
pub(crate) fn start<F, Fut>(
    name: String,
    cpu: Option<usize>,
    kind: exec::Kind,
    io_memory: usize,
    main: F,
) -> io::Result<JoinHandle<()>>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let handle = std::thread::Builder::new().name(name).spawn(move || {
        let ready = cpu
            .map_or(Ok(()), pin)
            .and_then(|()| exec::prepare(kind, io_memory));
        match ready {
            Ok((reactor, remote)) => {
                let _ = tx.send(Ok(()));
                exec::run(reactor, remote, main());
            }
            Err(e) => {
                let _ = tx.send(Err(e));
            }
        }
    })?;
    match rx.recv() {
        Ok(Ok(())) => Ok(handle),
        Ok(Err(e)) => {
            let _ = handle.join();
            Err(e)
        }
        Err(_) => {
            let _ = handle.join();
            Err(io::Error::other("the core's thread ended while starting"))
        }
    }
}

/// Pins the calling thread to one CPU.
fn pin(cpu: usize) -> io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::other(format!("no CPU {cpu}")));
    }
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET writes inside it (cpu < CPU_SETSIZE),
    // and sched_setaffinity reads `size_of` bytes of it for the calling thread (pid 0).
    let r = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("pinning to CPU {cpu}: {e}"),
        ));
    }
    Ok(())
}

/// A nonblocking, close-on-exec TCP socket whose connect to `addr` has begun; true while the
/// connect is still in progress (EINPROGRESS: the engine waits for writability, then reads
/// SO_ERROR). Shared by both reactors.
pub(crate) fn begin_connect(addr: SocketAddr) -> io::Result<(socket2::Socket, bool)> {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking().cloexec(),
        None,
    )?;
    match sock.connect(&addr.into()) {
        Ok(()) => Ok((sock, false)),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok((sock, true)),
        Err(e) => Err(e),
    }
}
