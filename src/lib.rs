//! ringlb: a thread-per-core HTTP/1.1 load balancer and reverse proxy on io_uring (or epoll).
//!
//! # Layout
//! Modules point one way: each may use only the ones listed below it in this table (the
//! allowed edges are checked by `tests/layers.rs`; `ARCHITECTURE.md` has the picture).
//!
//! | layer    | modules | what |
//! |----------|---------|------|
//! | bin      | `main.rs`, [`server`] | CLI; the process: bind, start cores, signals, reload, stop |
//! | serve    | [`proxy`], [`admin`], [`health`] | client connections; the admin listener; active checks |
//! | (control)| [`discovery`] | the addresses of named servers: system resolver, DNS (A/AAAA/SRV) as TTLs run out |
//! | context  | [`context`] | the configuration generation (`Shared`), per-core `Worker`, generations |
//! | parts    | [`upstream`], [`tls`], [`accesslog`], [`metrics`] | pools; rustls configs; log lines; counters |
//! | state    | [`state`] | server-state table (atomics), lifecycle and its events, connection registry |
//! | engine   | [`engine`] | the only module that names the I/O crate (io-uring): our own executor on io_uring or epoll; cores, sockets, timers, tasks, wake-ups |
//! | model    | [`config`] | TOML file → validated, typed [`config::Config`] (plain data: no files, no sockets) |
//! | core     | [`http1`], [`balance`] | I/O-free HTTP/1.1 framing and balancing policy |
//!
//! # Invariants
//! 1. Nothing on the request path takes a lock or allocates per request in steady state.
//!    Per-core state is `!Send` (`Rc`, `RefCell`, `Cell`); shared state is read through atomics.
//! 2. Data crosses cores in three ways only: the shared server-state table (atomics), the config
//!    snapshot (swapped whole), and control events (stop, reload, log reopen) that wake each
//!    core through its `engine::Signal`.
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
pub mod context;
pub mod discovery;
pub mod engine;
pub mod health;
pub mod http1;
pub mod metrics;
pub mod proxy;
pub mod server;
pub mod state;
pub mod tls;
pub mod upstream;
