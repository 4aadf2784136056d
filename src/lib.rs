//! ringlb: a thread-per-core HTTP/1.1 load balancer and reverse proxy on io_uring.
//!
//! # Layout
//! - `config`   — TOML file → validated, typed [`config::Config`] (every problem with its path)
//! - `runtime`  — executors pinned per core, SO_REUSEPORT listeners, lifecycle; `runtime::io`
//!   is the only module that names glommio, apart from executor setup (`runtime`,
//!   `upstream::health`)
//! - `http1`    — I/O-free HTTP/1.1: request/response head parsing, chunked framing, head rewrite
//! - `proxy`    — one client connection: head → route → attempt → response → next
//! - `balance`  — I/O-free balancing algorithms, one file each, behind one enum
//! - `upstream` — shared lock-free server state (atomics), per-core keep-alive pools, the
//!   active health checker (one thread for the process)
//! - `admin`    — the admin listener: liveness, readiness, the JSON runtime API
//! - `tls`      — rustls configs: termination (SNI, tickets shared by all cores), upstream TLS
//! - `metrics`  — per-core counters (one writer each), summed into Prometheus text when scraped
//! - `accesslog` — per-core buffered access log lines (common or JSON), reopened on SIGUSR1
//!
//! # Invariants
//! 1. Nothing on the request path takes a lock or allocates per request in steady state.
//!    Per-core state is `!Send` (`Rc`, `RefCell`, `Cell`); shared state is read through atomics.
//! 2. Data crosses cores in three ways only: the shared server-state table (atomics), the config
//!    snapshot (swapped whole), and control flags (shutdown).
//! 3. Protocol and policy code is I/O-free: `http1` and `balance` never touch sockets or the
//!    runtime. They take bytes, indices and state and return decisions.
//! 4. Config is validated once. After `Config::load` returns `Ok`, nothing re-checks a weight,
//!    an address or a timeout.
//! 5. Servers and upstreams are dense ids (`ServerId(u32)`) indexing `Vec`s; no string-keyed
//!    maps on the hot path.

pub mod accesslog;
pub mod admin;
pub mod balance;
pub mod config;
pub mod http1;
pub mod metrics;
pub mod proxy;
pub mod runtime;
pub mod tls;
pub mod upstream;
