//! `loadgen run`: the load generator.

use crate::cli::RunArgs;

/// Runs the load and prints the report; returns the process exit code.
pub fn main(_args: &RunArgs) -> anyhow::Result<i32> {
    anyhow::bail!("loadgen run: not implemented yet")
}
