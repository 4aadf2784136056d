//! Per-interval results: each core hands its interval histogram over every `--interval` (a
//! timer task on the core swaps it out; recording stays a plain histogram increment), the main
//! thread merges the cores' histograms of an interval once all have reported, then prints a
//! line (`--interval`: throughput, p50, p99 on stderr) and appends it to the HdrHistogram
//! interval log (`--hdr-log`: V2 compressed histograms in nanoseconds, readable by
//! HistogramLogProcessor and the HdrHistogram plotter).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::time::{Duration, SystemTime};

use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;

/// One core's histogram of interval `index` (the last one of a core may be partial).
pub struct Part {
    pub index: u64,
    pub hist: Histogram<u64>,
}

/// A finished interval: merged over every core.
struct Done {
    index: u64,
    hist: Histogram<u64>,
}

pub struct Intervals {
    every: Duration,
    cores: usize,
    lines: bool,
    /// Interval index → (cores reported, merged histogram).
    pending: BTreeMap<u64, (usize, Histogram<u64>)>,
    /// The interval log, written at the end (the serializer borrows the file while writing).
    log: Option<std::path::PathBuf>,
    finished: Vec<Done>,
    /// When measuring started, for the log's StartTime.
    started: Option<SystemTime>,
}

impl Intervals {
    pub fn new(
        every: Duration,
        cores: usize,
        lines: bool,
        log: Option<std::path::PathBuf>,
    ) -> Intervals {
        Intervals {
            every,
            cores,
            lines,
            pending: BTreeMap::new(),
            log,
            finished: Vec::new(),
            started: None,
        }
    }

    /// Measuring starts now (wall clock, for the log header).
    pub fn start(&mut self, at: SystemTime) {
        self.started = Some(at);
    }

    /// Takes one core's part; returns the lines of intervals that are now complete.
    pub fn add(&mut self, part: Part) -> Vec<String> {
        let entry = self
            .pending
            .entry(part.index)
            .or_insert_with(|| (0, Histogram::new_from(&part.hist)));
        entry.0 += 1;
        let _ = entry.1.add(&part.hist);
        let mut out = Vec::new();
        while let Some((&index, &(reported, _))) = self.pending.first_key_value() {
            if reported < self.cores {
                break;
            }
            if let Some((_, (_, hist))) = self.pending.pop_first() {
                out.extend(self.finish(index, hist));
            }
        }
        out
    }

    /// The end of the run: whatever is pending (partial intervals) is finished, in order.
    pub fn flush(&mut self) -> Vec<String> {
        let pending = std::mem::take(&mut self.pending);
        pending
            .into_iter()
            .filter_map(|(index, (_, hist))| self.finish(index, hist))
            .collect()
    }

    fn finish(&mut self, index: u64, hist: Histogram<u64>) -> Option<String> {
        let line = self.lines.then(|| line(index, self.every, &hist));
        self.finished.push(Done { index, hist });
        line
    }

    /// Writes the interval log, if asked for.
    pub fn write_log(&self) -> anyhow::Result<()> {
        let Some(path) = &self.log else {
            return Ok(());
        };
        let mut file = std::io::BufWriter::new(
            std::fs::File::create(path)
                .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))?,
        );
        let mut serializer = V2DeflateSerializer::new();
        let start = self.started.unwrap_or_else(SystemTime::now);
        let mut builder = IntervalLogWriterBuilder::new();
        builder
            .add_comment("loadgen latency per interval, in nanoseconds")
            .with_start_time(start)
            .with_base_time(start)
            // The Interval_Max column in milliseconds, as HdrHistogram's Java tools write it.
            .with_max_value_divisor(1_000_000.0);
        let mut writer = builder.begin_log_with(&mut file, &mut serializer)?;
        for d in &self.finished {
            writer
                .write_histogram(
                    &d.hist,
                    self.every * u32::try_from(d.index).unwrap_or(u32::MAX),
                    self.every,
                    None,
                )
                .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
        }
        drop(writer);
        file.flush()?;
        Ok(())
    }
}

/// `[   3s]    10234 req/s  p50   1.20ms  p99   4.81ms`
fn line(index: u64, every: Duration, h: &Histogram<u64>) -> String {
    let end = every * u32::try_from(index + 1).unwrap_or(u32::MAX);
    let rate = h.len() as f64 / every.as_secs_f64();
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1e6;
    format!(
        "[{:>6}] {rate:>10.0} req/s  p50 {:>8.2}ms  p99 {:>8.2}ms",
        humantime::format_duration(Duration::from_millis(end.as_millis() as u64)).to_string(),
        ms(0.5),
        ms(0.99),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};

    fn hist(values: &[u64]) -> Histogram<u64> {
        let mut h = Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("bounds");
        for v in values {
            h.record(*v).expect("record");
        }
        h
    }

    #[test]
    fn intervals_complete_when_every_core_reported() {
        let path = std::env::temp_dir().join(format!("loadgen-hdr-{}.hlog", std::process::id()));
        let mut iv = Intervals::new(Duration::from_secs(1), 2, true, Some(path.clone()));
        iv.start(SystemTime::now());
        assert!(iv
            .add(Part {
                index: 0,
                hist: hist(&[1_000_000])
            })
            .is_empty());
        let lines = iv.add(Part {
            index: 0,
            hist: hist(&[3_000_000]),
        });
        assert_eq!(lines.len(), 1);
        assert!(lines[0].contains("2 req/s"), "{lines:?}");
        assert!(iv
            .add(Part {
                index: 1,
                hist: hist(&[5])
            })
            .is_empty());
        assert_eq!(iv.flush().len(), 1);
        iv.write_log().expect("log");
        let text = std::fs::read(&path).expect("read");
        let entries: Vec<_> = IntervalLogIterator::new(&text)
            .filter_map(|e| match e {
                Ok(LogEntry::Interval(h)) => Some((h.start_timestamp(), h.duration())),
                _ => None,
            })
            .collect();
        assert_eq!(
            entries,
            [
                (Duration::ZERO, Duration::from_secs(1)),
                (Duration::from_secs(1), Duration::from_secs(1))
            ]
        );
        let _ = std::fs::remove_file(path);
    }
}
