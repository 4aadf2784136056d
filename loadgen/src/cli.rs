//! Command-line arguments. clap checks shapes; `*Args::validate` turns them into typed options
//! once, so nothing downstream re-checks a rate or a duration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "loadgen",
    version,
    about = "ringlb's load generator and test backend"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run an HTTP/1.1 test backend (one instance per --listen address).
    Serve(ServeArgs),
    /// Send load to URL and report throughput and latency.
    Run(RunArgs),
}

/// Options shared by both subcommands: how many executors and where they run.
///
/// By default executors are not pinned: the kernel places them (wrk and oha do the same), so a
/// load generator started beside the server under test does not pile onto CPU 0. Pin with a CPU
/// list (`--cores 2,3` or `--cores 4-7`: one executor per listed CPU) or `--first-cpu N`
/// (executor i on CPU N + i).
#[derive(Args, Debug, Clone)]
pub struct CoreArgs {
    /// Executors (threads): a number (not pinned), or a CPU list such as 2,3 or 4-7 (one
    /// executor pinned to each).
    #[arg(short = 't', long = "cores", alias = "threads", default_value = "1",
          value_parser = parse_cores, value_name = "N|LIST")]
    pub cores: Cores,
    /// Pin executor i to CPU (N + i) mod CPUs.
    #[arg(long, value_name = "N")]
    pub first_cpu: Option<usize>,
    /// Accepted for old scripts; executors are unpinned unless a CPU list or --first-cpu is
    /// given.
    #[arg(long, hide = true)]
    pub no_pin: bool,
}

/// `--cores`: a count, or the CPUs to pin to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cores {
    Count(u16),
    List(Vec<usize>),
}

impl CoreArgs {
    /// The number of executors.
    pub fn count(&self) -> u16 {
        match &self.cores {
            Cores::Count(n) => *n,
            Cores::List(cpus) => u16::try_from(cpus.len()).unwrap_or(u16::MAX),
        }
    }

    pub fn pinning(&self) -> crate::rt::Pinning {
        match (&self.cores, self.first_cpu) {
            (Cores::List(cpus), _) => crate::rt::Pinning::List(cpus.clone()),
            (Cores::Count(_), Some(first)) => crate::rt::Pinning::Pinned(first),
            (Cores::Count(_), None) => crate::rt::Pinning::Unpinned,
        }
    }
}

/// `4` (a count, 1..=1024), or a CPU list: `0,2`, `4-7`, `0,4-5`.
pub fn parse_cores(s: &str) -> Result<Cores, String> {
    let s = s.trim();
    if let Ok(n) = s.parse::<u16>() {
        return match n {
            1..=1024 => Ok(Cores::Count(n)),
            _ => Err(format!("'{s}': between 1 and 1024 executors")),
        };
    }
    let mut cpus = Vec::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        let bad = || format!("'{s}' is neither a count nor a CPU list (e.g. 4, 0,2 or 4-7)");
        let (lo, hi): (usize, usize) = (
            lo.trim().parse().map_err(|_| bad())?,
            hi.trim().parse().map_err(|_| bad())?,
        );
        if lo > hi || hi >= 4096 {
            return Err(bad());
        }
        for cpu in lo..=hi {
            if cpus.contains(&cpu) {
                return Err(format!("'{s}': CPU {cpu} is listed twice"));
            }
            cpus.push(cpu);
        }
    }
    match cpus.len() {
        0 => Err(format!("'{s}' lists no CPU")),
        1..=1024 => Ok(Cores::List(cpus)),
        _ => Err(format!("'{s}': at most 1024 CPUs")),
    }
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on; repeat for several instances. Port 0 picks a free port.
    #[arg(short, long = "listen", required = true, value_name = "ADDR")]
    pub listen: Vec<SocketAddr>,
    /// Instance name (X-Backend header and default body). With several --listen addresses
    /// instance i is NAME-i; without --name an instance is named by its bound address.
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub cores: CoreArgs,
    /// Default response body: this many 'x' bytes instead of "<name>\n".
    #[arg(long, value_name = "BYTES")]
    pub body_size: Option<u64>,
    /// Default response status.
    #[arg(long, default_value_t = 200, value_parser = parse_status)]
    pub status: u16,
    /// Fixed delay before every response (e.g. 50ms).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub delay: Option<Duration>,
    /// Extra uniformly random delay per response, e.g. 0ms..20ms.
    #[arg(long, value_parser = parse_duration_range, value_name = "MIN..MAX")]
    pub delay_random: Option<(Duration, Duration)>,
    /// Fraction of responses (0..=1) answered with 500.
    #[arg(long, default_value_t = 0.0, value_parser = parse_ratio)]
    pub fail_ratio: f64,
    /// Frame responses with Transfer-Encoding: chunked (several chunks).
    #[arg(long)]
    pub chunked: bool,
    /// Send Connection: close and close after every response.
    #[arg(long)]
    pub close: bool,
    /// Close a keep-alive connection, without a word, once it has been idle this long
    /// (the race every client of a keep-alive pool must survive).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub idle_close: Option<Duration>,
    /// After this many requests the instance stalls once, for --stall.
    #[arg(long, value_name = "N", requires = "stall")]
    pub stall_once_after: Option<u64>,
    /// How long the one stall lasts (with --stall-once-after).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION",
          requires = "stall_once_after")]
    pub stall: Option<Duration>,
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Target, http://host:port/path or https://host:port/path.
    pub url: String,
    /// Keep-alive connections in total, split across cores.
    #[arg(short = 'c', long, default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub connections: u32,
    #[command(flatten)]
    pub cores: CoreArgs,
    /// How long to measure (after --warmup). Default 10s unless -n is given.
    #[arg(short = 'd', long, value_parser = parse_duration, value_name = "DURATION")]
    pub duration: Option<Duration>,
    /// Stop after this many measured requests.
    #[arg(short = 'n', long, value_name = "N", conflicts_with = "duration",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub requests: Option<u64>,
    /// Request method.
    #[arg(short = 'm', long, default_value = "GET")]
    pub method: String,
    /// Extra request header, 'Name: value'; repeatable.
    #[arg(short = 'H', long = "header", value_name = "HEADER")]
    pub headers: Vec<String>,
    /// Request body.
    #[arg(long, conflicts_with = "body_file")]
    pub body: Option<String>,
    /// Request body read from a file.
    #[arg(long, value_name = "FILE")]
    pub body_file: Option<PathBuf>,
    /// Requests in flight per connection (HTTP/1.1 pipelining).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub pipeline: u32,
    /// Open loop: send this many requests per second in total on a fixed timetable and
    /// measure latency from each request's intended send time.
    #[arg(short = 'R', long, value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// Run this long before measuring; those requests are not reported.
    #[arg(long, value_parser = parse_duration, default_value = "0s", value_name = "DURATION")]
    pub warmup: Duration,
    /// Per-request timeout (also bounds connecting).
    #[arg(long, value_parser = parse_duration, default_value = "2s", value_name = "DURATION")]
    pub timeout: Duration,
    /// Open a new connection for every request.
    #[arg(long)]
    pub no_keepalive: bool,
    /// PEM file of CA certificates to trust for https://.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Accept any server certificate for https://.
    #[arg(long, conflicts_with = "ca")]
    pub insecure: bool,
    /// Print one JSON result object on stdout instead of the text report.
    #[arg(long)]
    pub json: bool,
    /// Print throughput, p50 and p99 of each interval of this length on stderr (e.g. 1s).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub interval: Option<Duration>,
    /// Write every interval's latency histogram (nanoseconds; --interval, default 1s) to FILE
    /// as an HdrHistogram interval log, for HistogramLogProcessor or the HdrHistogram plotter.
    #[arg(long, value_name = "FILE")]
    pub hdr_log: Option<PathBuf>,
}

/// Parses durations as people write them (humantime: `1m30s`, `1500ms`, `2h`, `100us`), a
/// decimal with one unit (`1.5s`), or a bare `0`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(d);
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("'{s}' needs a unit: ns, us, ms, s, m or h (e.g. 10s, 1m30s)"))?;
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration (e.g. 250ms, 1.5s, 1m30s)"))?;
    let secs_per_unit = match unit {
        "ns" => 1e-9,
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => {
            return Err(format!(
                "'{s}': unknown unit '{unit}' (ns, us, ms, s, m, h; e.g. 1m30s)"
            ))
        }
    };
    Duration::try_from_secs_f64(value * secs_per_unit).map_err(|e| format!("'{s}': {e}"))
}

/// Parses `MIN..MAX`, two durations with MIN <= MAX.
pub fn parse_duration_range(s: &str) -> Result<(Duration, Duration), String> {
    let (lo, hi) = s
        .split_once("..")
        .ok_or_else(|| format!("'{s}' is not a range (e.g. 0ms..20ms)"))?;
    let (lo, hi) = (parse_duration(lo)?, parse_duration(hi)?);
    if lo > hi {
        return Err(format!("'{s}': the minimum is above the maximum"));
    }
    Ok((lo, hi))
}

/// A final status code a server may send: 200..=599.
pub fn parse_status(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(code @ 200..=599) => Ok(code),
        _ => Err(format!("'{s}' is not a final status code (200..=599)")),
    }
}

fn parse_ratio(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("'{s}' is not a ratio between 0 and 1")),
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!(
            "'{s}' is not a positive rate in requests per second"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("50ms"), Ok(Duration::from_millis(50)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1h 2m"), Ok(Duration::from_secs(3720)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("10 parsecs").is_err());
        assert_eq!(
            parse_duration_range("0ms..20ms"),
            Ok((Duration::ZERO, Duration::from_millis(20)))
        );
        assert!(parse_duration_range("5ms..1ms").is_err());
    }

    #[test]
    fn cores() {
        assert_eq!(parse_cores("4"), Ok(Cores::Count(4)));
        assert_eq!(parse_cores("0,2"), Ok(Cores::List(vec![0, 2])));
        assert_eq!(parse_cores("4-6,1"), Ok(Cores::List(vec![4, 5, 6, 1])));
        assert!(parse_cores("0").is_err());
        assert!(parse_cores("3-1").is_err());
        assert!(parse_cores("1,1").is_err());
        assert!(parse_cores("x").is_err());
    }

    #[test]
    fn statuses() {
        assert_eq!(parse_status("503"), Ok(503));
        assert!(parse_status("101").is_err());
        assert!(parse_status("abc").is_err());
    }
}
