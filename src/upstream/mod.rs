//! Upstream connections: the per-core keep-alive pools (`pool.rs`). The shared server-state
//! table is in `state`, the active health checker in `health`.
//!
//! Uses `config`, `engine` and `state`.

pub mod pool;

pub use pool::Pool;
