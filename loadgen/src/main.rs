//! loadgen binary: parse the command line and hand over to `serve` or `run`.

use std::io::Write as _;

use clap::Parser as _;
use loadgen::cli::{Cli, Command};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(&args),
        Command::Run(args) => {
            let code = loadgen::run::main(&args)?;
            std::process::exit(code);
        }
    }
}

fn serve(args: &loadgen::cli::ServeArgs) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    // Registered before listening, so a test that signals right after the first
    // "listening" line never hits the default action.
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])?;
    let server = loadgen::serve::start(args)?;
    let mut out = std::io::stdout().lock();
    for inst in server.instances() {
        writeln!(out, "listening on {} name {}", inst.addr, inst.name)?;
    }
    out.flush()?;
    drop(out);
    signals.forever().next();
    // Executors hold no state worth flushing; leaving the process closes every socket.
    std::process::exit(0);
}
