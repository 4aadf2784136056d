//! The `ringlb` command: parse the command line, load the config, run.

use clap::{Parser, Subcommand};
use ringlb::config::Config;
use ringlb::{server, tls};
use std::path::PathBuf;
use std::process::ExitCode;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Thread-per-core HTTP/1.1 load balancer and reverse proxy on io_uring.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the load balancer (SIGTERM/SIGINT: graceful stop; SIGHUP: reload the config;
    /// SIGUSR1: reopen the access logs; SIGUSR2: binary upgrade).
    Run {
        /// Configuration file (TOML).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Validate a configuration file and print every problem as `file:line:column: path:
    /// message`; exit 1 on errors.
    Check {
        /// Configuration file (TOML).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// Print the effective configuration (TOML, every default written out) when valid.
        #[arg(long)]
        dump: bool,
        /// Do not look up the servers' host and SRV names (by default a name that does not
        /// resolve is a warning).
        #[arg(long)]
        no_resolve: bool,
    },
}

fn main() -> ExitCode {
    // The defaults until the config is read; `[log]` (or RUST_LOG) then applies.
    server::logging::init(&ringlb::config::Log::default());
    let cli = Cli::parse();
    match cli.command {
        Command::Check {
            config,
            dump,
            no_resolve,
        } => match Config::load(&config, &tls::Files) {
            Ok(c) if dump => {
                print!("{}", c.dump());
                ExitCode::SUCCESS
            }
            Ok(c) if no_resolve => {
                println!(
                    "{}: ok ({} listeners, {} upstreams, {} server entries; names not looked up)",
                    config.display(),
                    c.listeners.len(),
                    c.upstreams.len(),
                    c.upstreams.iter().map(|u| u.entries.len()).sum::<usize>()
                );
                ExitCode::SUCCESS
            }
            Ok(mut c) => {
                // Names are looked up as `run` would; one that does not resolve here may on
                // the host that runs it, so it is a warning.
                for w in ringlb::discovery::resolve_all(&mut c, None, None) {
                    eprintln!("{}: warning: {}: {}", config.display(), w.path, w.message);
                }
                for u in ringlb::discovery::empty_upstreams(&c) {
                    eprintln!(
                        "{}: warning: upstreams.{u}: no server now: `ringlb run` would refuse \
                         to start",
                        config.display()
                    );
                }
                println!(
                    "{}: ok ({} listeners, {} upstreams, {} servers)",
                    config.display(),
                    c.listeners.len(),
                    c.upstreams.len(),
                    c.server_count()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                for line in e.lines() {
                    eprintln!("{line}");
                }
                ExitCode::FAILURE
            }
        },
        Command::Run { config } => match run(config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ringlb: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn run(path: PathBuf) -> anyhow::Result<()> {
    let config = Config::load(&path, &tls::Files)
        .map_err(|e| anyhow::anyhow!("{}", e.lines().join("\n")))?;
    server::logging::init(&config.log);
    // A RunError's message already names its cause: keep it as one line.
    server::run(config, &path).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}
