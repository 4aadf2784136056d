//! The result of a run as text for people or one JSON object for scripts.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::time::Duration;

use serde::Serialize;

use super::plan::{Load, Plan, Reuse};
use super::record::{ErrorKind, Recorder};

/// Latency percentiles in microseconds, from intended send to the response's last byte.
#[derive(Serialize, Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub p9999: f64,
    pub max: f64,
    pub mean: f64,
}

#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errors {
    pub connect: u64,
    pub timeout: u64,
    pub reset: u64,
    pub parse: u64,
}

/// The `--json` object. Field names are a contract with scripts (validate.sh, CI).
#[derive(Serialize, Debug)]
pub struct Summary {
    pub url: String,
    /// `"closed"` or `"open"`.
    pub mode: &'static str,
    /// Open loop: the requested rate.
    pub target_rps: Option<f64>,
    pub cores: u16,
    pub connections: u32,
    pub pipeline: u32,
    pub keepalive: bool,
    /// Responses received for measured requests, whatever their status.
    pub requests: u64,
    pub duration_s: f64,
    pub rps: f64,
    /// Response bytes (heads and bodies) of measured requests.
    pub bytes: u64,
    pub bytes_per_s: f64,
    pub latency_us: Latency,
    pub status: BTreeMap<String, u64>,
    pub errors: Errors,
}

impl Summary {
    pub fn new(plan: &Plan, r: &Recorder, elapsed: Duration) -> Summary {
        let secs = elapsed.as_secs_f64();
        let h = &r.latency;
        let us = |ns: u64| (ns as f64 / 1000.0 * 10.0).round() / 10.0;
        let q = |quantile: f64| {
            if h.is_empty() {
                0.0
            } else {
                us(h.value_at_quantile(quantile))
            }
        };
        let e = |k: ErrorKind| r.errors[k as usize];
        Summary {
            url: plan.url.clone(),
            mode: match plan.load {
                Load::Closed => "closed",
                Load::Open { .. } => "open",
            },
            target_rps: match plan.load {
                Load::Closed => None,
                Load::Open { rate } => Some(rate),
            },
            cores: plan.cores,
            connections: plan.connections,
            pipeline: plan.pipeline,
            keepalive: plan.reuse == Reuse::KeepAlive,
            requests: r.responses,
            duration_s: secs,
            rps: r.responses as f64 / secs,
            bytes: r.bytes,
            bytes_per_s: r.bytes as f64 / secs,
            latency_us: Latency {
                p50: q(0.5),
                p90: q(0.9),
                p99: q(0.99),
                p999: q(0.999),
                p9999: q(0.9999),
                max: if h.is_empty() { 0.0 } else { us(h.max()) },
                mean: if h.is_empty() {
                    0.0
                } else {
                    (h.mean() / 100.0).round() / 10.0
                },
            },
            status: r.statuses().map(|(s, n)| (s.to_string(), n)).collect(),
            errors: Errors {
                connect: e(ErrorKind::Connect),
                timeout: e(ErrorKind::Timeout),
                reset: e(ErrorKind::Reset),
                parse: e(ErrorKind::Parse),
            },
        }
    }

    pub fn write_text(&self, w: &mut impl Write) -> io::Result<()> {
        let model = match self.target_rps {
            None => "closed loop".to_string(),
            Some(r) => format!("open loop at {r} req/s"),
        };
        writeln!(
            w,
            "{} — {model}, {} cores, {} connections{}{}",
            self.url,
            self.cores,
            self.connections,
            if self.pipeline > 1 {
                format!(", pipeline {}", self.pipeline)
            } else {
                String::new()
            },
            if self.keepalive {
                ""
            } else {
                ", no keep-alive"
            },
        )?;
        writeln!(
            w,
            "  requests   {:>12}  in {:.2}s  = {:.1} req/s",
            self.requests, self.duration_s, self.rps
        )?;
        writeln!(
            w,
            "  transfer   {:>12}  = {}/s",
            bytes(self.bytes as f64),
            bytes(self.bytes_per_s)
        )?;
        let l = &self.latency_us;
        writeln!(
            w,
            "  latency    (from intended send time; mean {})",
            micros(l.mean)
        )?;
        for (name, v) in [
            ("p50", l.p50),
            ("p90", l.p90),
            ("p99", l.p99),
            ("p99.9", l.p999),
            ("p99.99", l.p9999),
            ("max", l.max),
        ] {
            writeln!(w, "    {name:<8} {:>10}", micros(v))?;
        }
        let statuses: Vec<String> = self
            .status
            .iter()
            .map(|(s, n)| format!("{s}: {n}"))
            .collect();
        writeln!(w, "  status     {}", statuses.join("  "))?;
        let e = &self.errors;
        writeln!(
            w,
            "  errors     connect {}  timeout {}  reset {}  parse {}",
            e.connect, e.timeout, e.reset, e.parse
        )
    }
}

fn micros(us: f64) -> String {
    if us >= 1_000_000.0 {
        format!("{:.2}s", us / 1e6)
    } else if us >= 1000.0 {
        format!("{:.2}ms", us / 1e3)
    } else {
        format!("{us:.1}us")
    }
}

fn bytes(b: f64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = b;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1} {}", UNITS[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(micros(12.34), "12.3us");
        assert_eq!(micros(1500.0), "1.50ms");
        assert_eq!(micros(2_500_000.0), "2.50s");
        assert_eq!(bytes(2048.0), "2.0 KiB");
    }
}
