//! `loadgen run` as people use wrk and wrk2: human durations, per-interval lines, an
//! HdrHistogram interval log, no pinning unless asked.

mod support;

use std::process::Command;
use std::time::Duration;

use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use hdrhistogram::serialization::Deserializer;
use support::{Backend, BIN};

fn url(b: &Backend) -> String {
    format!("http://{}/", b.addr())
}

#[test]
fn human_durations_are_accepted() {
    let b = Backend::start(&["--listen", "127.0.0.1:0"]);
    let out = Command::new(BIN)
        .args([
            "run",
            &url(&b),
            "-c",
            "2",
            "-d",
            "1s200ms",
            "--warmup",
            "100ms",
        ])
        .args(["--timeout", "1s500ms", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let secs = v["duration_s"].as_f64().unwrap_or_else(|| panic!("{v}"));
    assert!((1.1..1.4).contains(&secs), "{v}");
    // A bad one is a usage error naming the value.
    let out = Command::new(BIN)
        .args(["run", &url(&b), "-d", "1 fortnight"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 fortnight"));
}

#[test]
fn interval_lines_and_the_hdr_log() {
    let b = Backend::start(&["--listen", "127.0.0.1:0"]);
    let log = std::env::temp_dir().join(format!("loadgen-test-{}.hlog", std::process::id()));
    let out = Command::new(BIN)
        .args([
            "run",
            &url(&b),
            "-c",
            "2",
            "-t",
            "2",
            "-d",
            "1500ms",
            "--interval",
            "500ms",
        ])
        .arg("--hdr-log")
        .arg(&log)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // Not a terminal: interval lines only, no progress bar. Responses still in flight when the
    // duration ends may show in one last partial interval on a loaded machine.
    let lines: Vec<&str> = stderr.lines().collect();
    assert!((3..=4).contains(&lines.len()), "{stderr}");
    for (line, end) in lines.iter().zip(["500ms", "1s", "1s 500ms"]) {
        assert!(line.starts_with(&format!("[{end:>6}]")), "{line}");
        assert!(
            line.contains(" req/s  p50 ") && line.contains("ms  p99 "),
            "{line}"
        );
    }
    // The log: a StartTime header and three histograms that decode, in order.
    let text = std::fs::read(&log).unwrap();
    let head = String::from_utf8_lossy(&text);
    assert!(head.contains("#[StartTime: "), "{head}");
    let mut starts = Vec::new();
    let mut total = 0;
    for entry in IntervalLogIterator::new(&text) {
        if let LogEntry::Interval(h) = entry.expect("valid log line") {
            starts.push(h.start_timestamp());
            assert_eq!(h.duration(), Duration::from_millis(500));
            let bytes = base64_decode(h.encoded_histogram());
            let hist: hdrhistogram::Histogram<u64> =
                Deserializer::new().deserialize(&mut &bytes[..]).unwrap();
            total += hist.len();
        }
    }
    // Three intervals, and the partial one the interval lines may show.
    let expected = [0, 500, 1000, 1500].map(Duration::from_millis).to_vec();
    assert!(
        (3..=4).contains(&starts.len()) && starts[..] == expected[..starts.len()],
        "{head}"
    );
    assert!(total > 0);
    let _ = std::fs::remove_file(log);
}

/// Standard base64 (the log's encoding), without a dependency for the test alone.
fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .expect("base64")
}

#[test]
fn executors_are_not_pinned_by_default_and_no_pin_is_still_accepted() {
    let b = Backend::start(&["--listen", "127.0.0.1:0"]);
    for extra in [
        &["--no-pin"][..],
        &[],
        &["--cores", "0-0"],
        &["--first-cpu", "0"],
    ] {
        let out = Command::new(BIN)
            .args(["run", &url(&b), "-c", "1", "-n", "10", "--json"])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{extra:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
