//! ringlb's own log (stderr), set by `[log]`: levels per module, text or JSON lines, and
//! syslog priority prefixes under systemd.
//!
//! The `log` crate's records are formatted by env_logger (its filter syntax is `RUST_LOG`'s, so
//! `level` + `modules` become one directive such as `info,ringlb::proxy=debug`). The installed
//! logger is a switch over an `ArcSwap`, so a reload applies new `[log]` settings at once, as
//! nginx re-reads `error_log` on reload. `RUST_LOG`, when set, overrides the configured levels
//! (not the format), at start and on every reload.
//!
//! Under systemd (`JOURNAL_STREAM` names the stream that stderr is, as `sd_journal_stream_fd`
//! says to check), each line starts with its syslog priority (`<3>` error, `<4>` warning, `<6>`
//! info, `<7>` debug and trace), which journald strips and keeps as the entry's priority, so
//! `journalctl -u ringlb -p warning` works; the timestamp is left to journald. JSON lines get
//! the prefix too under journald (it is removed before storing), never elsewhere.
//!
//! Nothing here is on the request path: ringlb logs state changes and refusals, not requests
//! (the access log is separate).

use crate::config::{Log, LogStyle};
use arc_swap::ArcSwap;
use std::io::Write;
use std::sync::{Arc, OnceLock};

static LOGGER: OnceLock<Switch> = OnceLock::new();

/// The installed logger: the current env_logger, replaced whole on reload.
struct Switch(ArcSwap<env_logger::Logger>);

impl log::Log for Switch {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        self.0.load().enabled(metadata)
    }
    fn log(&self, record: &log::Record) {
        self.0.load().log(record)
    }
    fn flush(&self) {
        self.0.load().flush()
    }
}

/// Installs the logger with `settings` (the defaults before the config is read). A second
/// call applies `settings` like [`apply`].
pub fn init(settings: &Log) {
    if LOGGER.get().is_some() {
        return apply(settings);
    }
    let logger = build(settings);
    let max = logger.filter();
    let switch = LOGGER.get_or_init(|| Switch(ArcSwap::from_pointee(logger)));
    // A logger set by someone else (a test harness) stays.
    if log::set_logger(switch).is_ok() {
        log::set_max_level(max);
    }
}

/// Applies new settings (a reload). Does nothing before [`init`].
pub fn apply(settings: &Log) {
    if let Some(switch) = LOGGER.get() {
        let logger = build(settings);
        log::set_max_level(logger.filter());
        switch.0.store(Arc::new(logger));
    }
}

/// The `RUST_LOG` override, if set.
fn env_override() -> Option<String> {
    std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
}

fn build(settings: &Log) -> env_logger::Logger {
    let mut b = env_logger::Builder::new();
    b.parse_filters(&env_override().unwrap_or_else(|| settings.directive()));
    b.target(env_logger::Target::Stderr);
    let journal = stderr_is_journal();
    match (settings.format, journal) {
        (LogStyle::Text, false) => {
            b.format_timestamp_millis();
        }
        (LogStyle::Text, true) => {
            b.format(|buf, record| {
                write!(
                    buf,
                    "<{}>{}: {}",
                    priority(record.level()),
                    record.target(),
                    record.args()
                )?;
                let mut kv = TextFields(buf);
                let _ = record.key_values().visit(&mut kv);
                writeln!(kv.0)
            });
        }
        (LogStyle::Json, journal) => {
            b.format(move |buf, record| {
                let line = json_line(&buf.timestamp_millis().to_string(), record);
                if journal {
                    write!(buf, "<{}>", priority(record.level()))?;
                }
                writeln!(buf, "{line}")
            });
        }
    }
    b.build()
}

/// syslog priority of a level (sd-daemon(3)).
fn priority(level: log::Level) -> u8 {
    match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}

/// One JSON object: time (RFC 3339, UTC), level, target, message, fields (the record's
/// key-values, as strings).
fn json_line(time: &str, record: &log::Record) -> String {
    let mut fields = JsonFields(serde_json::Map::new());
    let _ = record.key_values().visit(&mut fields);
    serde_json::json!({
        "time": time,
        "level": record.level().as_str(),
        "target": record.target(),
        "message": record.args().to_string(),
        "fields": fields.0,
    })
    .to_string()
}

struct JsonFields(serde_json::Map<String, serde_json::Value>);

impl<'kvs> log::kv::VisitSource<'kvs> for JsonFields {
    fn visit_pair(
        &mut self,
        key: log::kv::Key<'kvs>,
        value: log::kv::Value<'kvs>,
    ) -> Result<(), log::kv::Error> {
        self.0
            .insert(key.as_str().to_string(), value.to_string().into());
        Ok(())
    }
}

struct TextFields<'a>(&'a mut env_logger::fmt::Formatter);

impl<'kvs> log::kv::VisitSource<'kvs> for TextFields<'_> {
    fn visit_pair(
        &mut self,
        key: log::kv::Key<'kvs>,
        value: log::kv::Value<'kvs>,
    ) -> Result<(), log::kv::Error> {
        write!(self.0, " {key}={value}").map_err(log::kv::Error::boxed)
    }
}

/// Whether stderr is the stream systemd connected to the journal: `JOURNAL_STREAM` is
/// `DEVICE:INODE` of that stream, and a child whose stderr was redirected inherits the variable
/// without the stream, so the two are compared.
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(var) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = var.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    std::fs::metadata("/proc/self/fd/2").is_ok_and(|m| m.dev() == dev && m.ino() == ino)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_carry_fields() {
        let line = json_line(
            "2025-01-01T00:00:00.000Z",
            &log::Record::builder()
                .level(log::Level::Warn)
                .target("ringlb::proxy")
                .args(format_args!("server {} down", "a"))
                .key_values(&[("upstream", "api")])
                .build(),
        );
        let v: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["target"], "ringlb::proxy");
        assert_eq!(v["message"], "server a down");
        assert_eq!(v["fields"]["upstream"], "api");
    }

    #[test]
    fn priorities_follow_syslog() {
        assert_eq!(priority(log::Level::Error), 3);
        assert_eq!(priority(log::Level::Warn), 4);
        assert_eq!(priority(log::Level::Info), 6);
        assert_eq!(priority(log::Level::Debug), 7);
    }
}
