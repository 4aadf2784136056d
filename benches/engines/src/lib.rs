//! Shared by the engine prototypes: arguments, CPU pinning and the minimal HTTP/1.1 framing
//! (end of a request head; length of a Content-Length framed response).

use std::net::SocketAddr;

/// The `fixed` mode response.
pub const FIXED_RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, world\n";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    Fixed,
    Proxy,
}

/// `BIN fixed|proxy PORT [BACKEND_ADDR...] [--cpu N] [--FLAG...]`
pub struct Args {
    pub mode: Mode,
    pub listen: SocketAddr,
    pub backends: Vec<SocketAddr>,
    pub cpu: usize,
    /// Engine-specific switches (`--no-defer`, `--no-multishot`, ...).
    pub flags: Vec<String>,
}

impl Args {
    pub fn parse() -> Args {
        let mut it = std::env::args().skip(1);
        let usage = "usage: BIN fixed|proxy PORT [BACKEND_ADDR...] [--cpu N] [--FLAG...]";
        let mode = match it.next().as_deref() {
            Some("fixed") => Mode::Fixed,
            Some("proxy") => Mode::Proxy,
            _ => panic!("{usage}"),
        };
        let port: u16 = it.next().expect(usage).parse().expect("PORT");
        let mut args = Args {
            mode,
            listen: SocketAddr::from(([127, 0, 0, 1], port)),
            backends: Vec::new(),
            cpu: 0,
            flags: Vec::new(),
        };
        while let Some(a) = it.next() {
            if a == "--cpu" {
                args.cpu = it.next().expect("--cpu N").parse().expect("--cpu N");
            } else if let Some(f) = a.strip_prefix("--") {
                args.flags.push(f.to_string());
            } else {
                args.backends.push(a.parse().expect("BACKEND_ADDR"));
            }
        }
        assert!(
            mode == Mode::Fixed || !args.backends.is_empty(),
            "proxy needs backends"
        );
        args
    }

    pub fn flag(&self, name: &str) -> bool {
        self.flags.iter().any(|f| f == name)
    }
}

/// Pins the calling thread to `cpu`.
pub fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET and sched_setaffinity only touch it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Length of the request head (through "\r\n\r\n") if `buf` holds a whole one. The requests
/// are GET without a body, so the head is the request.
pub fn request_len(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// Length of the whole response (head + Content-Length body) if `buf` holds it all.
/// Panics on a response that is not Content-Length framed (the backends always are).
pub fn response_len(buf: &[u8]) -> Option<usize> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(buf).expect("bad upstream response") {
        httparse::Status::Partial => None,
        httparse::Status::Complete(head) => {
            let len = resp
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .map(|h| {
                    std::str::from_utf8(h.value)
                        .unwrap()
                        .trim()
                        .parse::<usize>()
                        .unwrap()
                })
                .expect("response without Content-Length");
            let total = head + len;
            (buf.len() >= total).then_some(total)
        }
    }
}

/// Round-robin cursor over the backends.
pub struct RoundRobin {
    next: usize,
    n: usize,
}

impl RoundRobin {
    pub fn new(n: usize) -> RoundRobin {
        RoundRobin { next: 0, n }
    }

    pub fn pick(&mut self) -> usize {
        let i = self.next;
        self.next = (i + 1) % self.n;
        i
    }
}

/// A listening socket with SO_REUSEADDR and a 4096 backlog (the benches restart servers on
/// the same port while old connections are in TIME_WAIT).
pub fn listen(addr: SocketAddr) -> std::net::TcpListener {
    use std::os::fd::FromRawFd;
    let SocketAddr::V4(v4) = addr else {
        panic!("IPv4 only")
    };
    // SAFETY: plain socket calls on a descriptor we own; sockaddr_in is fully initialised.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket");
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            &one as *const _ as *const libc::c_void,
            4,
        );
        let sa = sockaddr(v4);
        let r = libc::bind(
            fd,
            &sa as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        );
        assert!(r == 0, "bind {addr}: {}", std::io::Error::last_os_error());
        assert!(libc::listen(fd, 4096) == 0, "listen");
        std::net::TcpListener::from_raw_fd(fd)
    }
}

pub fn sockaddr(v4: std::net::SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: v4.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(v4.ip().octets()),
        },
        sin_zero: [0; 8],
    }
}

/// TCP_NODELAY on a descriptor.
pub fn nodelay(fd: i32) {
    let one: libc::c_int = 1;
    // SAFETY: setsockopt reads 4 bytes from `one`.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            &one as *const _ as *const libc::c_void,
            4,
        );
    }
}
