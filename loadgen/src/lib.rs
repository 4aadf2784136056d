//! loadgen: ringlb's load generator (`loadgen run`) and test backend (`loadgen serve`).
//!
//! # Layout
//! - `cli`: command-line arguments (clap) turned into typed options, validated once.
//! - `rt`: the only module that names glommio: pinned executors, sockets, timers.
//! - `http`: I/O-free HTTP/1.1 pieces: request heads, response heads, chunked decoding.
//! - `serve`: the test backend: instances, routes, one downstream connection loop.
//! - `run`: the load generator: closed and open loop, one upstream connection loop, TLS, and
//!   its own epoll reactor per core (`run::net`; why is explained there).
//! - `report`: histograms and counters turned into text or JSON.
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
pub mod report;
pub mod rt;
pub mod run;
pub mod serve;
