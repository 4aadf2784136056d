//! loadgen binary: parse the command line and hand over to `serve` or `run`.

use std::io::Write as _;

use clap::{CommandFactory as _, Parser as _};
use loadgen::cli::{Cli, Command};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(&args),
        Command::Run(args) => {
            // Problems found while validating are argument errors too: exit 2, like clap's.
            let plan = loadgen::run::plan::Plan::from_args(&args).unwrap_or_else(|e| {
                Cli::command()
                    .error(clap::error::ErrorKind::InvalidValue, format!("{e:#}"))
                    .exit()
            });
            let output = if args.json {
                loadgen::run::Output::Json
            } else {
                loadgen::run::Output::Text
            };
            let code = loadgen::run::main(plan, output)?;
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
