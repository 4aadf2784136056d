//! Helpers for tests that run the `loadgen` binary as a process on 127.0.0.1:0.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_loadgen");

/// A `loadgen serve` process, killed on drop.
pub struct Backend {
    pub child: Child,
    /// `(address, name)` per instance, from the "listening on" lines.
    pub instances: Vec<(SocketAddr, String)>,
}

impl Backend {
    pub fn start(args: &[&str]) -> Backend {
        let mut child = Command::new(BIN)
            .arg("serve")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn loadgen serve");
        let listens = args
            .iter()
            .filter(|a| **a == "--listen" || **a == "-l")
            .count();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut instances = Vec::new();
        while instances.len() < listens {
            let line = lines.next().expect("serve exited early").unwrap();
            let rest = line.strip_prefix("listening on ").expect(&line);
            let (addr, name) = rest.split_once(" name ").expect(&line);
            instances.push((addr.parse().unwrap(), name.to_string()));
        }
        Backend { child, instances }
    }

    pub fn addr(&self) -> SocketAddr {
        self.instances[0].0
    }

    pub fn connect(&self) -> TcpStream {
        connect(self.addr())
    }

    /// Sends SIGTERM and returns the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let status = self.child.wait().unwrap();
        std::mem::forget(self);
        status
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// A response as read off the wire: status, headers (lower-cased names) and decoded body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Reads responses from one connection, keeping bytes that belong to the next one.
pub struct Reader {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Reader {
    pub fn new(stream: TcpStream) -> Reader {
        Reader {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    fn fill(&mut self) -> usize {
        let mut tmp = [0u8; 16384];
        let n = self.stream.read(&mut tmp).unwrap();
        self.buf.extend_from_slice(&tmp[..n]);
        n
    }

    /// Reads one response; `head_request` means the body is absent whatever the headers say.
    pub fn response(&mut self, head_request: bool) -> Response {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut r = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(n) = r.parse(&self.buf).unwrap() {
                let status = r.code.unwrap();
                let headers: Vec<(String, String)> = r
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8_lossy(h.value).into(),
                        )
                    })
                    .collect();
                self.buf.drain(..n);
                let mut resp = Response {
                    status,
                    headers,
                    body: Vec::new(),
                };
                if head_request || status == 204 || status == 304 || status < 200 {
                    return resp;
                }
                if resp.header("transfer-encoding").is_some() {
                    let mut dec = loadgen::http::chunked::Decoder::new();
                    loop {
                        let used = dec
                            .feed(&self.buf, |p| resp.body.extend_from_slice(p))
                            .unwrap();
                        self.buf.drain(..used);
                        if dec.is_done() {
                            return resp;
                        }
                        assert!(self.fill() > 0, "eof in chunked body");
                    }
                }
                let len: usize = match resp.header("content-length") {
                    Some(v) => v.parse().unwrap(),
                    None => {
                        while self.fill() > 0 {}
                        self.buf.len()
                    }
                };
                while self.buf.len() < len {
                    assert!(self.fill() > 0, "eof in body");
                }
                resp.body = self.buf.drain(..len).collect();
                return resp;
            }
            assert!(self.fill() > 0, "eof before a response head");
        }
    }

    /// Reads exactly `n` raw bytes (after a 101, say), buffered ones first.
    pub fn take(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(self.fill() > 0, "eof before {n} bytes");
        }
        self.buf.drain(..n).collect()
    }

    /// True if the peer has closed (reads EOF with nothing buffered).
    pub fn at_eof(&mut self) -> bool {
        self.buf.is_empty() && self.fill() == 0
    }
}

/// One request on a fresh connection.
pub fn get(addr: SocketAddr, path: &str) -> Response {
    let mut r = Reader::new(connect(addr));
    r.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes());
    r.response(false)
}

pub fn request(addr: SocketAddr, raw: &str) -> Response {
    let mut r = Reader::new(connect(addr));
    r.send(raw.as_bytes());
    r.response(raw.starts_with("HEAD "))
}
