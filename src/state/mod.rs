//! State shared by every core, below the features that read and write it: the server-state
//! table (lock-free atomics, one cache line per server), the process lifecycle and its events,
//! and each core's registry of client connections.
//!
//! Uses `config` and `engine` (for wake-ups) only.

pub mod conns;
pub mod discovery;
pub mod life;
pub mod servers;

pub use conns::Conns;
pub use discovery::{Reply, Resolution, Resolutions, Resolved, ServerChange};
pub use life::{Event, Life};
pub use servers::{
    log_change, now_ms, unix_secs, Active, AdminState, ServerState, StateTable, Status,
    UpstreamQueue,
};
