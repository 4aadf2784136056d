//! Upstream servers: the shared state table every core reads on each pick (`state.rs`), the
//! per-core keep-alive pools (`pool.rs`) and the active health checker (`health.rs`).

pub mod health;
pub mod pool;
pub mod state;

pub use pool::Pool;
pub use state::{AdminState, ServerState, StateTable};
