//! Upstream servers: the shared state table every core reads on each pick (`state.rs`) and the
//! per-core keep-alive pools (`pool.rs`).

pub mod pool;
pub mod state;

pub use pool::Pool;
pub use state::{AdminState, ServerState, StateTable};
