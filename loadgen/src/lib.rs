//! loadgen: ringlb's load generator (`loadgen run`) and test backend (`loadgen serve`).
//!
//! # Layout
//! Modules point one way: each may use only those below it (checked by ringlb's
//! `tests/layers.rs`).
//! - `run`, `serve` (top): the load generator (closed and open loop, one upstream connection
//!   loop, TLS, its own epoll reactor per core in `run::net` — why is explained there — and
//!   the report: histograms and counters turned into text or JSON in `run::report`); the test
//!   backend (instances, routes, one downstream connection loop). Neither uses the other.
//! - `cli`: command-line arguments (clap) turned into typed options, validated once.
//! - `rt`: the only module that names glommio: pinned executors, sockets, timers.
//! - `http` (bottom): I/O-free HTTP/1.1 pieces: request heads, response heads, chunked
//!   decoding.
//!
//! # Invariants
//! 1. The request path allocates nothing in steady state: each connection owns its read and
//!    write buffers and reuses them for every request.
//! 2. Per-core state is `!Send` (`Rc`, `Cell`); what cores share is atomics behind an `Arc`.
//! 3. `http` never touches sockets or glommio, so it is unit-tested without a runtime.
//! 4. `run` measures latency from each request's intended send time; in the open loop that
//!    time comes from a fixed timetable, never from when the connection was ready.

pub mod cli;
pub mod http;
pub mod rt;
pub mod run;
pub mod serve;
