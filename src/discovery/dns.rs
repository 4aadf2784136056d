//! A blocking DNS stub client over hickory-proto's wire format: one question per query, UDP
//! first, TCP when the answer is truncated (RFC 1035 §4.2, RFC 7766), each query bounded by
//! `timeout`, the nameservers tried in turn for `attempts` rounds (as the system resolver's
//! `timeout:` and `attempts:` options). Runs on the control thread or the resolver thread,
//! never on a worker.
//!
//! Answers are matched to queries by id, question and source address; anything else that
//! arrives on the socket is ignored until the query times out. An NXDOMAIN is an answer
//! (other nameservers are not asked); SERVFAIL, REFUSED and the like move on to the next one.

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

/// The largest UDP answer asked for (EDNS0), the size DNS flag day 2020 recommends.
const UDP_PAYLOAD: u16 = 1232;

/// What a query got.
#[derive(Debug)]
pub enum Answer {
    /// NOERROR: the records of the answer and additional sections (possibly none).
    Records(Message),
    NxDomain,
}

/// Where and how to ask.
#[derive(Debug, Clone)]
pub struct Client {
    pub nameservers: Vec<SocketAddr>,
    pub timeout: Duration,
    pub attempts: u32,
}

impl Client {
    /// Asks `name` (absolute) for `rtype`; Err says why no nameserver gave an answer.
    pub fn query(&self, name: &Name, rtype: RecordType) -> Result<Answer, String> {
        if self.nameservers.is_empty() {
            return Err("no nameserver: set [resolver] nameservers or /etc/resolv.conf".into());
        }
        let mut why = String::new();
        for _ in 0..self.attempts.max(1) {
            for &ns in &self.nameservers {
                match self.ask(ns, name, rtype) {
                    Ok(m) => match m.response_code() {
                        ResponseCode::NoError => return Ok(Answer::Records(m)),
                        ResponseCode::NXDomain => return Ok(Answer::NxDomain),
                        code => why = format!("{ns}: {code}"),
                    },
                    Err(e) => why = format!("{ns}: {e}"),
                }
            }
        }
        Err(why)
    }

    fn ask(&self, ns: SocketAddr, name: &Name, rtype: RecordType) -> Result<Message, String> {
        let id = query_id();
        let mut q = Message::new();
        q.set_id(id)
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Query)
            .set_recursion_desired(true)
            .add_query(Query::query(name.clone(), rtype));
        let mut edns = Edns::new();
        edns.set_max_payload(UDP_PAYLOAD);
        q.set_edns(edns);
        let bytes = q
            .to_vec()
            .map_err(|e| format!("cannot encode the query: {e}"))?;
        let answer = udp(ns, &bytes, self.timeout, |m| matches(m, id, name, rtype))?;
        if !answer.truncated() {
            return Ok(answer);
        }
        let answer = tcp(ns, &bytes, self.timeout)?;
        if !matches(&answer, id, name, rtype) {
            return Err("the TCP answer does not match the query".into());
        }
        Ok(answer)
    }
}

/// A query id that an off-path sender cannot guess (RFC 5452).
fn query_id() -> u16 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 2];
    // SystemRandom fails only without a kernel source of randomness; any id still works.
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    u16::from_be_bytes(b)
}

/// Whether `m` answers query `id` for `name` / `rtype`.
fn matches(m: &Message, id: u16, name: &Name, rtype: RecordType) -> bool {
    m.id() == id
        && m.message_type() == MessageType::Response
        && m.queries()
            .first()
            .is_some_and(|q| q.query_type() == rtype && q.name().eq_ignore_case(name))
}

fn udp(
    ns: SocketAddr,
    query: &[u8],
    timeout: Duration,
    ours: impl Fn(&Message) -> bool,
) -> Result<Message, String> {
    let local: SocketAddr = match ns.ip() {
        IpAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let io = |e: std::io::Error| e.to_string();
    let socket = UdpSocket::bind(local).map_err(io)?;
    // connect() makes the kernel drop datagrams from other sources.
    socket.connect(ns).map_err(io)?;
    socket.send(query).map_err(io)?;
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; 65535];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("no answer within {timeout:?}"));
        }
        socket.set_read_timeout(Some(left)).map_err(io)?;
        let n = match socket.recv(&mut buf) {
            Ok(n) => n,
            Err(e) if is_timeout(&e) => return Err(format!("no answer within {timeout:?}")),
            Err(e) => return Err(e.to_string()),
        };
        // A datagram that is not a well-formed answer to this query is ignored.
        if let Ok(m) = Message::from_vec(&buf[..n]) {
            if ours(&m) {
                return Ok(m);
            }
        }
    }
}

fn tcp(ns: SocketAddr, query: &[u8], timeout: Duration) -> Result<Message, String> {
    let io = |e: std::io::Error| {
        if is_timeout(&e) {
            format!("TCP: no answer within {timeout:?}")
        } else {
            format!("TCP: {e}")
        }
    };
    let deadline = Instant::now() + timeout;
    let mut s = TcpStream::connect_timeout(&ns, timeout).map_err(io)?;
    let len = u16::try_from(query.len()).map_err(|_| "the query is too long".to_string())?;
    let mut framed = len.to_be_bytes().to_vec();
    framed.extend_from_slice(query);
    let left = || {
        let d = deadline.saturating_duration_since(Instant::now());
        Some(d.max(Duration::from_millis(1)))
    };
    s.set_write_timeout(left()).map_err(io)?;
    s.write_all(&framed).map_err(io)?;
    let mut len = [0u8; 2];
    s.set_read_timeout(left()).map_err(io)?;
    s.read_exact(&mut len).map_err(io)?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.set_read_timeout(left()).map_err(io)?;
    s.read_exact(&mut buf).map_err(io)?;
    Message::from_vec(&buf).map_err(|e| format!("TCP: a malformed answer: {e}"))
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// The addresses of `name` in `m` (answer, then additional section) of type A or AAAA, and
/// the smallest TTL of the records used (CNAMEs included).
pub fn addresses(m: &Message, name: &Name) -> (Vec<IpAddr>, Option<u32>) {
    let mut out = Vec::new();
    let mut ttl: Option<u32> = None;
    // The names that lead to `name`'s addresses: itself and its CNAME targets.
    let mut names = vec![name.clone()];
    for r in m.answers() {
        if let RData::CNAME(c) = r.data() {
            if names.iter().any(|n| n.eq_ignore_case(r.name())) {
                names.push(c.0.clone());
                ttl = Some(ttl.map_or(r.ttl(), |t| t.min(r.ttl())));
            }
        }
    }
    for r in m.answers().iter().chain(m.additionals()) {
        if !names.iter().any(|n| n.eq_ignore_case(r.name())) {
            continue;
        }
        let ip = match r.data() {
            RData::A(a) => IpAddr::V4(a.0),
            RData::AAAA(a) => IpAddr::V6(a.0),
            _ => continue,
        };
        if !out.contains(&ip) {
            out.push(ip);
        }
        ttl = Some(ttl.map_or(r.ttl(), |t| t.min(r.ttl())));
    }
    (out, ttl)
}

trait EqIgnoreCase {
    fn eq_ignore_case(&self, other: &Name) -> bool;
}

impl EqIgnoreCase for Name {
    fn eq_ignore_case(&self, other: &Name) -> bool {
        // Name's PartialEq compares case-insensitively (RFC 4343) and ignores the final dot.
        self == other
    }
}
