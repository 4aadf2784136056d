//! A small authoritative DNS server on loopback (UDP and TCP on one port), whose answers a
//! test changes while ringlb runs. The wire format is hickory-proto's.
//!
//! A name with no record of any type answers NXDOMAIN; a known name answers NOERROR with
//! its records of the asked type (possibly none). SRV answers carry the targets' A records
//! in the additional section. With `truncate_udp`, every UDP answer is empty with the TC
//! bit set, so the client must ask again over TCP.

use arc_swap::ArcSwap;
use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Default)]
struct Zone {
    /// Lowercase name without the final dot → records.
    names: BTreeMap<String, Vec<RData>>,
    ttl: u32,
    truncate_udp: bool,
}

pub struct Dns {
    pub addr: SocketAddr,
    zone: Arc<ArcSwap<Zone>>,
    stop: Arc<AtomicBool>,
    /// Queries answered over UDP and over TCP.
    pub udp_queries: Arc<AtomicUsize>,
    pub tcp_queries: Arc<AtomicUsize>,
}

fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl Dns {
    /// Listens on 127.0.0.1 (UDP and TCP, the same port); answers with TTL `ttl`.
    pub fn start(ttl: u32) -> Dns {
        let (udp, tcp) = (0..50)
            .find_map(|_| {
                let udp = UdpSocket::bind("127.0.0.1:0").ok()?;
                let tcp = TcpListener::bind(udp.local_addr().ok()?).ok()?;
                Some((udp, tcp))
            })
            .expect("a UDP and TCP port on loopback");
        let addr = udp.local_addr().unwrap();
        let zone = Arc::new(ArcSwap::from_pointee(Zone {
            ttl,
            ..Zone::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (udp_queries, tcp_queries) =
            (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        udp.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        {
            let (zone, stop, count) = (zone.clone(), stop.clone(), udp_queries.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 4096];
                while !stop.load(Relaxed) {
                    let Ok((n, from)) = udp.recv_from(&mut buf) else {
                        continue;
                    };
                    let z = zone.load();
                    if let Some(answer) = answer(&z, &buf[..n], z.truncate_udp) {
                        count.fetch_add(1, Relaxed);
                        let _ = udp.send_to(&answer, from);
                    }
                }
            });
        }
        tcp.set_nonblocking(true).unwrap();
        {
            let (zone, stop, count) = (zone.clone(), stop.clone(), tcp_queries.clone());
            std::thread::spawn(move || {
                while !stop.load(Relaxed) {
                    let Ok((mut s, _)) = tcp.accept() else {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    };
                    let _ = s.set_nonblocking(false);
                    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                    let mut len = [0u8; 2];
                    if s.read_exact(&mut len).is_err() {
                        continue;
                    }
                    let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
                    if s.read_exact(&mut q).is_err() {
                        continue;
                    }
                    if let Some(a) = answer(&zone.load(), &q, false) {
                        count.fetch_add(1, Relaxed);
                        let mut out = (a.len() as u16).to_be_bytes().to_vec();
                        out.extend_from_slice(&a);
                        let _ = s.write_all(&out);
                    }
                }
            });
        }
        Dns {
            addr,
            zone,
            stop,
            udp_queries,
            tcp_queries,
        }
    }

    fn edit(&self, f: impl Fn(&mut Zone)) {
        self.zone.rcu(|z| {
            let mut z = (**z).clone();
            f(&mut z);
            z
        });
    }

    /// `name`'s A records (replacing its records); an empty list leaves the name with no
    /// address (NOERROR, no answer).
    pub fn set_a(&self, name: &str, ips: &[Ipv4Addr]) {
        let records: Vec<RData> = ips.iter().map(|ip| RData::A(A(*ip))).collect();
        self.edit(|z| {
            z.names.insert(key(name), records.clone());
        });
    }

    /// `name`'s SRV records: (priority, weight, port, target).
    pub fn set_srv(&self, name: &str, targets: &[(u16, u16, u16, &str)]) {
        let records: Vec<RData> = targets
            .iter()
            .map(|&(p, w, port, t)| {
                RData::SRV(SRV::new(
                    p,
                    w,
                    port,
                    Name::from_ascii(format!("{}.", key(t))).unwrap(),
                ))
            })
            .collect();
        self.edit(|z| {
            z.names.insert(key(name), records.clone());
        });
    }

    /// `name` no longer exists: NXDOMAIN.
    pub fn remove(&self, name: &str) {
        self.edit(|z| {
            z.names.remove(&key(name));
        });
    }

    /// Every UDP answer truncated (TC), so clients must use TCP.
    pub fn truncate_udp(&self, on: bool) {
        self.edit(|z| z.truncate_udp = on);
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
    }
}

/// The answer to the query in `bytes`, or None when it is not a query.
fn answer(z: &Zone, bytes: &[u8], truncated: bool) -> Option<Vec<u8>> {
    let q = Message::from_vec(bytes).ok()?;
    let query = q.queries().first()?.clone();
    let mut m = Message::new();
    m.set_id(q.id())
        .set_message_type(MessageType::Response)
        .set_op_code(q.op_code())
        .set_authoritative(true)
        .set_recursion_desired(q.recursion_desired())
        .add_query(query.clone());
    if truncated {
        m.set_truncated(true);
        return m.to_vec().ok();
    }
    let name = key(&query.name().to_ascii());
    match z.names.get(&name) {
        None => {
            m.set_response_code(ResponseCode::NXDomain);
        }
        Some(records) => {
            for r in records
                .iter()
                .filter(|r| r.record_type() == query.query_type())
            {
                m.add_answer(Record::from_rdata(query.name().clone(), z.ttl, r.clone()));
                if let RData::SRV(srv) = r {
                    let target = key(&srv.target().to_ascii());
                    for a in z.names.get(&target).into_iter().flatten() {
                        if a.record_type() == RecordType::A {
                            m.add_additional(Record::from_rdata(
                                srv.target().clone(),
                                z.ttl,
                                a.clone(),
                            ));
                        }
                    }
                }
            }
        }
    }
    m.to_vec().ok()
}
