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
    /// Run the load balancer (SIGTERM/SIGINT: graceful stop; SIGHUP: reload the config).
    Run {
        /// Configuration file (TOML).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Validate a configuration file and print every problem with its path; exit 1 on errors.
    Check {
        /// Configuration file (TOML).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => match Config::load(&config, &tls::Files) {
            Ok(c) => {
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
    // A RunError's message already names its cause: keep it as one line.
    server::run(config, &path).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}
