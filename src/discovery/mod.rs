//! Service discovery: the addresses of server entries that name a host or an SRV record.
//!
//! - A `host:port` entry without `resolve` is looked up with the system resolver
//!   (getaddrinfo: `/etc/hosts`, then DNS as nsswitch says), at start and on every reload.
//! - A `host:port` entry with `resolve = true`, and every `srv` entry, is looked up through
//!   `[resolver]` nameservers (`dns.rs`, hickory-proto's wire format, UDP then TCP), at start,
//!   on every reload, and again on the resolver thread ([`Resolver`]) as each answer's TTL runs
//!   out (within `valid_min..=valid_max`).
//!
//! A lookup that fails (NXDOMAIN, no records, timeouts) keeps the entry's last good addresses
//! (nginx keeps serving the old ones too); it is logged and counted. The resolver thread never
//! changes a generation itself: it sends the new addresses to the control thread
//! ([`Event::Resolved`]), which publishes the next generation as a reload does. Nothing here
//! runs on a worker core.
//!
//! Uses `config` and `state`.

pub mod dns;

use crate::config::{Config, Entry, Resolver as Settings, Source, Target};
use crate::state::{Event, Life, Resolution, Resolved};
use hickory_proto::rr::{Name, RData, RecordType};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One lookup of an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The addresses (sorted) and, from DNS, the smallest TTL of the records used.
    Found(Vec<Target>, Option<Duration>),
    NxDomain,
    Empty,
    Failed(String),
}

impl Outcome {
    pub fn resolution(&self) -> Resolution {
        match self {
            Outcome::Found(..) => Resolution::Success,
            Outcome::NxDomain => Resolution::NxDomain,
            Outcome::Empty => Resolution::Empty,
            Outcome::Failed(_) => Resolution::Failure,
        }
    }

    /// Why there are no addresses, for a log line.
    pub fn why(&self) -> String {
        match self {
            Outcome::Found(..) => "resolved".into(),
            Outcome::NxDomain => "NXDOMAIN (no such name)".into(),
            Outcome::Empty => "no address records".into(),
            Outcome::Failed(why) => why.clone(),
        }
    }
}

/// The nameservers to ask: `[resolver] nameservers`, or those of /etc/resolv.conf.
fn client(s: &Settings) -> dns::Client {
    let nameservers = if s.nameservers.is_empty() {
        std::fs::read_to_string("/etc/resolv.conf")
            .map(|t| resolv_conf(&t))
            .unwrap_or_default()
    } else {
        s.nameservers.clone()
    };
    dns::Client {
        nameservers,
        timeout: s.timeout,
        attempts: s.attempts,
    }
}

/// The `nameserver` lines of a resolv.conf (port 53; an IPv6 zone is dropped).
fn resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.split_whitespace().next())
        .filter_map(|ip| ip.split('%').next()?.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// An absolute DNS name.
fn absolute(name: &str) -> Result<Name, String> {
    let mut n = Name::from_ascii(name).map_err(|e| format!("{name:?}: {e}"))?;
    n.set_fqdn(true);
    Ok(n)
}

/// Looks `entry` up once: with the system resolver, or through `settings` when it re-resolves.
pub fn lookup(entry: &Entry, settings: &Settings) -> Outcome {
    let mut outcome = match (&entry.source, entry.resolve) {
        (Source::Addr(a), _) => Outcome::Found(vec![Target::at(*a)], None),
        (Source::Host { host, port }, false) => system(host, *port),
        (Source::Host { host, port }, true) => host_dns(&client(settings), host, *port, settings),
        (Source::Srv(name), _) => srv(&client(settings), name, settings),
    };
    if let Outcome::Found(targets, _) = &mut outcome {
        if !settings.ipv6 {
            targets.retain(|t| t.addr.is_ipv4());
        }
        targets.sort();
        targets.dedup();
        if targets.is_empty() {
            outcome = Outcome::Empty;
        }
    }
    outcome
}

/// getaddrinfo, as `std` calls it: `/etc/hosts` and DNS as the system is configured.
fn system(host: &str, port: u16) -> Outcome {
    match (host, port).to_socket_addrs() {
        Ok(addrs) => Outcome::Found(addrs.map(Target::at).collect(), None),
        Err(e) => Outcome::Failed(format!("system resolver: {e}")),
    }
}

/// The A (and AAAA) records of `host`, each a target on `port`.
fn host_dns(c: &dns::Client, host: &str, port: u16, s: &Settings) -> Outcome {
    let name = match absolute(host) {
        Ok(n) => n,
        Err(e) => return Outcome::Failed(e),
    };
    match ips(c, &name, s.ipv6) {
        Ok(Some((ips, _))) if ips.is_empty() => Outcome::Empty,
        Ok(Some((ips, ttl))) => Outcome::Found(
            ips.into_iter()
                .map(|ip| Target::at(SocketAddr::new(ip, port)))
                .collect(),
            ttl.map(|t| Duration::from_secs(u64::from(t))),
        ),
        Ok(None) => Outcome::NxDomain,
        Err(e) => Outcome::Failed(e),
    }
}

/// Addresses and the smallest TTL of the records that gave them.
type Addresses = (Vec<IpAddr>, Option<u32>);

/// The addresses of `name` (A, then AAAA) and their smallest TTL; None for NXDOMAIN. Any
/// query that gets no answer fails the whole lookup, so that a lost AAAA answer does not
/// remove the IPv6 servers.
fn ips(c: &dns::Client, name: &Name, ipv6: bool) -> Result<Option<Addresses>, String> {
    let mut all = Vec::new();
    let mut ttl: Option<u32> = None;
    let mut exists = false;
    let types: &[RecordType] = if ipv6 {
        &[RecordType::A, RecordType::AAAA]
    } else {
        &[RecordType::A]
    };
    for &t in types {
        match c.query(name, t)? {
            dns::Answer::NxDomain => {}
            dns::Answer::Records(m) => {
                exists = true;
                let (found, t) = dns::addresses(&m, name);
                all.extend(found);
                ttl = match (ttl, t) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
        }
    }
    Ok(exists.then_some((all, ttl)))
}

/// SRV: each target's addresses on the target's port; the lowest priority is primary, the
/// others are backups; an SRV weight of 0 counts as 1, above 1000 as 1000.
fn srv(c: &dns::Client, name: &str, s: &Settings) -> Outcome {
    let name = match absolute(name) {
        Ok(n) => n,
        Err(e) => return Outcome::Failed(e),
    };
    let m = match c.query(&name, RecordType::SRV) {
        Ok(dns::Answer::Records(m)) => m,
        Ok(dns::Answer::NxDomain) => return Outcome::NxDomain,
        Err(e) => return Outcome::Failed(e),
    };
    let records: Vec<(u16, u16, u16, Name, u32)> = m
        .answers()
        .iter()
        .filter(|r| r.name() == &name)
        .filter_map(|r| match r.data() {
            // "." as the target: the service is decidedly not available (RFC 2782).
            RData::SRV(v) if !v.target().is_root() => Some((
                v.priority(),
                v.weight(),
                v.port(),
                v.target().clone(),
                r.ttl(),
            )),
            _ => None,
        })
        .collect();
    let Some(lowest) = records.iter().map(|r| r.0).min() else {
        return Outcome::Empty;
    };
    let mut targets = Vec::new();
    let mut ttl = records.iter().map(|r| r.4).min();
    for (priority, weight, port, target, _) in records {
        // Most servers put the targets' addresses in the additional section.
        let (mut found, mut t) = dns::addresses(&m, &target);
        if found.is_empty() {
            match ips(c, &target, s.ipv6) {
                Ok(Some((f, tt))) => (found, t) = (f, tt),
                // A target that does not exist serves nothing.
                Ok(None) => continue,
                Err(e) => return Outcome::Failed(format!("target {target}: {e}")),
            }
        }
        ttl = match (ttl, t) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        for ip in found {
            targets.push(Target {
                addr: SocketAddr::new(ip, port),
                weight: Some(u32::from(weight).clamp(1, 1000)),
                backup: priority > lowest,
            });
        }
    }
    if targets.is_empty() {
        return Outcome::Empty;
    }
    Outcome::Found(targets, ttl.map(|t| Duration::from_secs(u64::from(t))))
}

/// When an entry that got `outcome` is asked again: its TTL within the bounds; after a
/// failure, `valid_min` doubled per failure in a row, up to 30 s (and `valid_max`).
pub fn next_after(outcome: &Outcome, failures: u32, s: &Settings) -> Duration {
    match outcome {
        Outcome::Found(_, ttl) => ttl.unwrap_or(s.valid_max).clamp(s.valid_min, s.valid_max),
        _ => {
            let backoff = s
                .valid_min
                .max(Duration::from_millis(500))
                .saturating_mul(1 << failures.saturating_sub(1).min(6));
            backoff
                .min(Duration::from_secs(30))
                .min(s.valid_max.max(s.valid_min))
        }
    }
}

/// What the first lookup of a generation's names left to say.
pub struct Unresolved {
    /// `upstreams.NAME.servers[i].addr` (or `.srv`).
    pub path: String,
    pub message: String,
}

/// Looks up every named entry of `config` (in parallel, one thread per entry) and expands
/// its servers. An entry that does not resolve keeps the addresses it had in `previous` (the
/// generation being replaced), if any. Counts each lookup in `life`.
pub fn resolve_all(
    config: &mut Config,
    previous: Option<&Config>,
    life: Option<&Life>,
) -> Vec<Unresolved> {
    let settings = config.resolver.clone();
    let mut jobs = Vec::new();
    for (u, up) in config.upstreams.iter().enumerate() {
        for (e, entry) in up.entries.iter().enumerate() {
            if entry.is_name() {
                jobs.push((u, e, entry.clone()));
            }
        }
    }
    let outcomes: Vec<Outcome> = std::thread::scope(|scope| {
        let handles: Vec<_> = jobs
            .iter()
            .map(|(_, _, entry)| scope.spawn(|| lookup(entry, &settings)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Outcome::Failed("the lookup panicked".into()))
            })
            .collect()
    });
    let mut problems = Vec::new();
    for ((u, e, entry), outcome) in jobs.into_iter().zip(outcomes) {
        let upstream = config.upstreams[u].name.clone();
        if let Some(life) = life {
            life.resolutions
                .record(&upstream, &entry.name, outcome.resolution());
        }
        let field = if matches!(entry.source, Source::Srv(_)) {
            "srv"
        } else {
            "addr"
        };
        let index = config.upstreams[u]
            .entries
            .iter()
            .filter(|x| x.origin == entry.origin)
            .position(|x| x.name == entry.name)
            .unwrap_or(e);
        let path = format!("upstreams.{upstream}.servers[{index}].{field}");
        match outcome {
            Outcome::Found(targets, _) => config.upstreams[u].entries[e].targets = targets,
            failed => {
                let kept = previous
                    .and_then(|p| p.upstreams.iter().find(|x| x.name == upstream))
                    .and_then(|x| x.entry(&entry.name))
                    .filter(|x| x.source == entry.source)
                    .map(|x| x.targets.clone())
                    .unwrap_or_default();
                let message = if kept.is_empty() {
                    format!("{} does not resolve: {}", entry.source, failed.why())
                } else {
                    format!(
                        "{} does not resolve: {}; its {} last known addresses are kept",
                        entry.source,
                        failed.why(),
                        kept.len()
                    )
                };
                config.upstreams[u].entries[e].targets = kept;
                problems.push(Unresolved { path, message });
            }
        }
    }
    config.expand();
    problems
}

/// The upstreams of `config` without a server whose entries cannot get one later (no entry
/// re-resolves): a configuration that cannot serve them.
pub fn empty_upstreams(config: &Config) -> Vec<String> {
    config
        .upstreams
        .iter()
        .filter(|u| u.servers.is_empty() && !u.entries.iter().any(|e| e.resolve))
        .map(|u| u.name.clone())
        .collect()
}

/// What the resolver thread is told.
enum Msg {
    /// The generation in force: the entries to re-resolve and the addresses it serves.
    Config(Arc<Config>),
}

/// An entry the resolver thread re-resolves.
struct Job {
    upstream: String,
    entry: Entry,
    due: Instant,
    failures: u32,
}

/// The resolver thread: re-resolves every entry with `resolve` (or `srv`) of the generation
/// in force as its TTL runs out, and tells the control thread when an answer differs from
/// the addresses served. Ends when the handle is dropped.
pub struct Resolver {
    tx: mpsc::Sender<Msg>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Resolver {
    pub fn start(config: Arc<Config>, life: Arc<Life>) -> std::io::Result<Resolver> {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("ringlb-resolver".into())
            .spawn(move || run(rx, config, life))?;
        Ok(Resolver {
            tx,
            thread: Some(thread),
        })
    }

    /// A new generation is in force.
    pub fn follow(&self, config: Arc<Config>) {
        let _ = self.tx.send(Msg::Config(config));
    }
}

impl Drop for Resolver {
    fn drop(&mut self) {
        // Closing the channel ends the thread's wait; a lookup in progress ends within its
        // timeouts.
        let (tx, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.tx, tx));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The jobs for `config`: its re-resolved entries, keeping the schedule of those already known
/// (same upstream, name and source). A new entry is due after `valid_min` if it has addresses
/// (it was just looked up), at once if not.
fn jobs(config: &Config, old: Vec<Job>) -> Vec<Job> {
    let now = Instant::now();
    let mut out = Vec::new();
    for u in &config.upstreams {
        for e in u.entries.iter().filter(|e| e.resolve) {
            let before = old.iter().find(|j| {
                j.upstream == u.name && j.entry.name == e.name && j.entry.source == e.source
            });
            let (due, failures) = match before {
                Some(j) => (j.due, j.failures),
                None if e.targets.is_empty() => (now, 0),
                None => (now + config.resolver.valid_min, 0),
            };
            out.push(Job {
                upstream: u.name.clone(),
                entry: e.clone(),
                due,
                failures,
            });
        }
    }
    out
}

fn run(rx: mpsc::Receiver<Msg>, config: Arc<Config>, life: Arc<Life>) {
    let mut settings = config.resolver.clone();
    let mut jobs = self::jobs(&config, Vec::new());
    loop {
        let next = jobs.iter().map(|j| j.due).min();
        let msg = match next {
            None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
            Some(due) => rx.recv_timeout(due.saturating_duration_since(Instant::now())),
        };
        match msg {
            Ok(Msg::Config(c)) => {
                settings = c.resolver.clone();
                jobs = self::jobs(&c, std::mem::take(&mut jobs));
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        let now = Instant::now();
        for job in jobs.iter_mut().filter(|j| j.due <= now) {
            let outcome = lookup(&job.entry, &settings);
            life.resolutions
                .record(&job.upstream, &job.entry.name, outcome.resolution());
            match &outcome {
                Outcome::Found(targets, _) => {
                    job.failures = 0;
                    if *targets != job.entry.targets {
                        job.entry.targets = targets.clone();
                        life.send(Event::Resolved(Resolved {
                            upstream: job.upstream.clone(),
                            entry: job.entry.name.clone(),
                            source: job.entry.source.clone(),
                            targets: targets.clone(),
                        }));
                    }
                }
                failed => {
                    job.failures = job.failures.saturating_add(1);
                    log::warn!(
                        "upstream {}: {} does not resolve ({}): keeping its {} servers",
                        job.upstream,
                        job.entry.source,
                        failed.why(),
                        job.entry.targets.len()
                    );
                }
            }
            job.due = Instant::now() + next_after(&outcome, job.failures, &settings);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_nameservers() {
        let text = "# comment\nsearch x\nnameserver 10.0.0.2\nnameserver fe80::1%eth0\n\
                    nameserver bogus\noptions ndots:5\n";
        let ns = resolv_conf(text);
        assert_eq!(
            ns,
            [
                "10.0.0.2:53".parse::<SocketAddr>().unwrap(),
                "[fe80::1]:53".parse().unwrap()
            ]
        );
    }

    #[test]
    fn ttls_are_bounded_and_failures_back_off() {
        let s = Settings {
            valid_min: Duration::from_secs(1),
            valid_max: Duration::from_secs(60),
            ..Settings::default()
        };
        let found = |ttl: u64| Outcome::Found(Vec::new(), Some(Duration::from_secs(ttl)));
        assert_eq!(next_after(&found(0), 0, &s), Duration::from_secs(1));
        assert_eq!(next_after(&found(30), 0, &s), Duration::from_secs(30));
        assert_eq!(next_after(&found(3600), 0, &s), Duration::from_secs(60));
        let failed = Outcome::NxDomain;
        assert_eq!(next_after(&failed, 1, &s), Duration::from_secs(1));
        assert_eq!(next_after(&failed, 2, &s), Duration::from_secs(2));
        assert_eq!(next_after(&failed, 20, &s), Duration::from_secs(30));
    }

    #[test]
    fn the_system_resolver_reads_etc_hosts() {
        // "localhost" is in /etc/hosts on any Linux host this runs on.
        match system("localhost", 80) {
            Outcome::Found(t, None) => assert!(t.iter().all(|t| t.addr.ip().is_loopback())),
            other => panic!("{other:?}"),
        }
    }
}
