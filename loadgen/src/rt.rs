//! The only module that names glommio: pinned executors, TCP sockets and timers.
//!
//! Everything else in the crate is written against `futures_lite` traits and these
//! re-exports, so swapping the runtime touches this file alone.

use std::future::Future;
use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement};

pub use glommio::net::{TcpListener, TcpStream};
pub use glommio::spawn_local;

/// Where executors run: `Pinned(first)` puts core `i` on CPU `(first + i) % cpus`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pinning {
    /// Executor i on CPU (first + i) mod CPUs.
    Pinned(usize),
    /// Executor i on the i-th CPU of the list.
    List(Vec<usize>),
    /// Wherever the kernel puts them.
    Unpinned,
}

/// io_uring memory per executor. RLIMIT_MEMLOCK is small on CI machines and each executor
/// owns three rings, so both this and the ring depth stay small.
const IO_MEMORY: usize = 512 * 1024;
const RING_DEPTH: usize = 256;

/// A running executor thread.
pub struct Core<T: Send + 'static>(glommio::ExecutorJoinHandle<T>);

impl<T: Send + 'static> Core<T> {
    /// Waits for the executor's main future to finish.
    pub fn join(self) -> anyhow::Result<T> {
        self.0
            .join()
            .map_err(|e| anyhow::anyhow!("executor failed: {e}"))
    }
}

/// Starts `cores` executors; executor `i` runs the future that `make(i)` returns.
pub fn start<G, F, T>(cores: usize, pinning: Pinning, make: G) -> anyhow::Result<Vec<Core<T>>>
where
    G: Fn(usize) -> F + Send + Clone + 'static,
    F: Future<Output = T> + 'static,
    T: Send + 'static,
{
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    (0..cores)
        .map(|i| {
            let placement = match &pinning {
                Pinning::Pinned(first) => Placement::Fixed((first + i) % cpus),
                Pinning::List(list) => Placement::Fixed(list[i % list.len()]),
                Pinning::Unpinned => Placement::Unbound,
            };
            let make = make.clone();
            LocalExecutorBuilder::new(placement)
                .name(&format!("loadgen-{i}"))
                .io_memory(IO_MEMORY)
                .ring_depth(RING_DEPTH)
                .spawn(move || make(i))
                .map(Core)
                .map_err(|e| anyhow::anyhow!("cannot start executor {i}: {e}"))
        })
        .collect()
}

/// Sleeps on the current executor's timer.
pub async fn sleep(d: Duration) {
    glommio::timer::sleep(d).await;
}

/// Binds a SO_REUSEPORT listener on the current executor.
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).map_err(Into::into)
}

/// Accepts one connection.
pub async fn accept(listener: &TcpListener) -> std::io::Result<TcpStream> {
    listener.accept().await.map_err(Into::into)
}

/// Sets how long one read may wait before it fails with `TimedOut` (`None`: forever).
/// It costs a timer per waiting read, so it is for test behaviour, not for load.
pub fn set_read_timeout(stream: &TcpStream, d: Option<Duration>) -> std::io::Result<()> {
    stream.set_read_timeout(d).map_err(Into::into)
}

/// Disables Nagle's algorithm: requests and responses are written whole.
pub fn set_nodelay(stream: &TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true).map_err(Into::into)
}
