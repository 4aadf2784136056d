//! The access log end to end: lines with the right fields in both formats, the request id
//! forwarded upstream and logged, and reopening on SIGUSR1 after logrotate renamed the file.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};
use support::*;

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";

fn log_config(backend: std::net::SocketAddr, format: &str, path: &Path) -> String {
    config(
        &[format!("addr = \"{backend}\"\nname = \"rec\"")],
        "",
        &format!(
            "[access_log]\nformat = \"{format}\"\npath = \"{}\"\n\
             request_id_from = [\"127.0.0.0/8\"]\n",
            path.display()
        ),
    )
}

/// A JSON-log config whose listener takes a PROXY protocol header and believes
/// X-Forwarded-For from 203.0.113.0/24, and adopts request ids from 10.0.0.0/8.
fn proxied_config(backend: std::net::SocketAddr, path: &Path) -> String {
    log_config(backend, "json", path)
        .replace(
            "listen = \"127.0.0.1:0\"\n[[routes]]",
            "listen = \"127.0.0.1:0\"\nproxy_protocol = true\n\
             real_ip_header = \"X-Forwarded-For\"\nreal_ip_from = [\"203.0.113.0/24\"]\n[[routes]]",
        )
        .replace(
            "request_id_from = [\"127.0.0.0/8\"]",
            "request_id_from = [\"10.0.0.0/8\"]",
        )
}

fn json_lines(path: &Path, n: usize) -> Vec<serde_json::Value> {
    wait_lines(path, n)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn remote_addr_is_the_effective_client_and_peer_addr_the_tcp_peer() {
    let rec = Recorder::start(OK);
    let path = temp_path("realip.json");
    let rl = Ringlb::start(&proxied_config(rec.addr, &path));
    assert!(rl.config_path.exists());

    // Behind an L4 balancer: the PROXY header names the client.
    let mut c = Client::connect(rl.addr());
    let local = c.stream.local_addr().unwrap();
    c.send(b"PROXY TCP4 203.0.113.7 127.0.0.1 51234 80\r\nGET /1 HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(c.response().status, 200);
    // Behind an L7 proxy the PROXY source trusts: X-Forwarded-For names the client.
    let mut c2 = Client::connect(rl.addr());
    c2.send(
        b"PROXY TCP4 203.0.113.8 127.0.0.1 40000 80\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\
          X-Forwarded-For: 198.51.100.9\r\n\r\n",
    );
    assert_eq!(c2.response().status, 200);

    let j = json_lines(&path, 2);
    let by_uri = |u: &str| j.iter().find(|l| l["uri"] == u).expect(u).clone();
    let one = by_uri("/1");
    assert_eq!(one["remote_addr"], "203.0.113.7", "{one}");
    assert_eq!(one["remote_port"], 51234, "{one}");
    assert_eq!(one["peer_addr"], local.to_string(), "{one}");
    let two = by_uri("/2");
    assert_eq!(two["remote_addr"], "198.51.100.9", "{two}");
    assert_eq!(two["remote_port"], serde_json::Value::Null, "{two}");
    assert!(
        two["peer_addr"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.1:")),
        "{two}"
    );
    let _ = std::fs::remove_file(&path);
}

#[test]
fn request_ids_are_adopted_only_from_request_id_from() {
    let rec = Recorder::start(OK);
    let path = temp_path("ids.json");
    let rl = Ringlb::start(&proxied_config(rec.addr, &path));

    // A stranger's id is neither forwarded nor logged.
    let mut c = Client::connect(rl.addr());
    c.send(
        b"PROXY TCP4 192.0.2.1 127.0.0.1 1000 80\r\nGET /stranger HTTP/1.1\r\nHost: h\r\n\
          X-Request-Id: spoofed-id-1\r\n\r\n",
    );
    assert_eq!(c.response().status, 200);
    let ids = forwarded_ids(&rec.next(Duration::from_secs(5)).expect("request"));
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_ne!(ids[0], "spoofed-id-1");
    assert!(
        ids[0].len() == 24 && ids[0].bytes().all(|b| b.is_ascii_hexdigit()),
        "a generated id: {ids:?}"
    );
    let generated = ids[0].clone();

    // A trusted peer's id is adopted.
    let mut c = Client::connect(rl.addr());
    c.send(
        b"PROXY TCP4 10.1.2.3 127.0.0.1 1000 80\r\nGET /trusted HTTP/1.1\r\nHost: h\r\n\
          X-Request-Id: trusted-id-2\r\n\r\n",
    );
    assert_eq!(c.response().status, 200);
    let ids = forwarded_ids(&rec.next(Duration::from_secs(5)).expect("request"));
    assert_eq!(ids, ["trusted-id-2"]);

    let j = json_lines(&path, 2);
    let by_uri = |u: &str| j.iter().find(|l| l["uri"] == u).expect(u).clone();
    assert_eq!(by_uri("/stranger")["request_id"], generated.as_str());
    assert_eq!(by_uri("/trusted")["request_id"], "trusted-id-2");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains("spoofed-id-1"), "{text}");
    let _ = std::fs::remove_file(&path);
}

/// The file's lines once it has at least `n` (lines are written within a second).
fn wait_lines(path: &Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        if lines.len() >= n || Instant::now() > deadline {
            assert_eq!(lines.len(), n, "{}:\n{text}", path.display());
            return lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The X-Request-Id header lines a backend received.
fn forwarded_ids(raw: &[u8]) -> Vec<String> {
    header_lines(raw)
        .into_iter()
        .filter_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("x-request-id")
                .then(|| value.trim().to_string())
        })
        .collect()
}

fn send(c: &mut Client, req: &str) -> (Response, u64) {
    c.send(req.as_bytes());
    let r = c.response();
    let n = (r.head.len() + r.body.len()) as u64;
    (r, n)
}

#[test]
fn json_lines_have_the_fields_and_the_forwarded_id() {
    let rec = Recorder::start(OK);
    let path = temp_path("access.json");
    let rl = Ringlb::start(&log_config(rec.addr, "json", &path));

    let mut c = Client::connect(rl.addr());
    let req1 = "GET /a?b=1 HTTP/1.1\r\nHost: example.test\r\nX-Request-Id: client-id-42\r\n\
                User-Agent: ua/1 \"x\"\r\nReferer: http://r.test/\r\n\r\n";
    let (r1, sent1) = send(&mut c, req1);
    assert_eq!(r1.status, 200);
    let req2 =
        "POST /p HTTP/1.0\r\nHost: h\r\nX-Request-Id: bad id\r\nContent-Length: 3\r\n\r\nabc";
    let (r2, sent2) = send(&mut c, req2);
    assert_eq!(r2.status, 200);
    // Refused before routing: logged with its raw request line, no upstream.
    let bad =
        "GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
    let raw = exchange_raw(rl.addr(), bad.as_bytes());
    assert!(raw.starts_with(b"HTTP/1.1 400"));

    let ids1 = forwarded_ids(&rec.next(Duration::from_secs(5)).expect("request 1"));
    let ids2 = forwarded_ids(&rec.next(Duration::from_secs(5)).expect("request 2"));
    assert_eq!(
        ids1,
        ["client-id-42"],
        "a valid client id is forwarded once, as is"
    );
    assert_eq!(ids2.len(), 1, "{ids2:?}");
    let generated = &ids2[0];
    assert_eq!(generated.len(), 24, "{generated}");
    assert!(
        generated.bytes().all(|b| b.is_ascii_hexdigit()),
        "{generated}"
    );

    let lines = wait_lines(&path, 3);
    let j: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let rec_addr = rec.addr.to_string();

    assert_eq!(j[0]["status"], 200);
    assert_eq!(j[0]["method"], "GET");
    assert_eq!(j[0]["uri"], "/a?b=1");
    assert_eq!(j[0]["protocol"], "HTTP/1.1");
    assert_eq!(j[0]["host"], "example.test");
    assert_eq!(j[0]["listener"], "http");
    assert_eq!(j[0]["upstream"], "app");
    assert_eq!(j[0]["server"], "rec");
    assert_eq!(j[0]["server_addr"], rec_addr.as_str());
    assert_eq!(j[0]["request_id"], "client-id-42");
    assert_eq!(j[0]["user_agent"], "ua/1 \"x\"");
    assert_eq!(j[0]["referer"], "http://r.test/");
    assert_eq!(j[0]["remote_addr"], "127.0.0.1");
    assert_eq!(j[0]["bytes_sent"], sent1);
    assert_eq!(j[0]["bytes_received"], req1.len() as u64);
    assert_eq!(j[0]["attempts"], 1);
    let (rt, ut) = (
        j[0]["request_time"].as_f64(),
        j[0]["upstream_time"].as_f64(),
    );
    assert!(
        matches!((rt, ut), (Some(rt), Some(ut)) if ut <= rt && rt < 5.0),
        "{}",
        lines[0]
    );
    assert!(j[0]["time"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z') && t.len() == 24));

    assert_eq!(j[1]["method"], "POST");
    assert_eq!(j[1]["protocol"], "HTTP/1.0");
    assert_eq!(
        j[1]["request_id"],
        generated.as_str(),
        "the logged id is the forwarded one"
    );
    assert_eq!(j[1]["bytes_sent"], sent2);
    assert_eq!(j[1]["bytes_received"], req2.len() as u64);

    assert_eq!(j[2]["status"], 400);
    assert_eq!(j[2]["uri"], "GET / HTTP/1.1");
    assert_eq!(j[2]["upstream"], serde_json::Value::Null);
    assert_eq!(j[2]["server"], serde_json::Value::Null);
    assert_eq!(j[2]["upstream_time"], serde_json::Value::Null);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn common_lines_are_combined_plus_fields() {
    let rec = Recorder::start(OK);
    let path = temp_path("access.log");
    let rl = Ringlb::start(&log_config(rec.addr, "common", &path));
    let mut c = Client::connect(rl.addr());
    let req = "GET /x%20y HTTP/1.1\r\nHost: h\r\nUser-Agent: curl/8\r\n\r\n";
    let (r, sent) = send(&mut c, req);
    assert_eq!(r.status, 200);
    let id = forwarded_ids(&rec.next(Duration::from_secs(5)).expect("request"));
    assert_eq!(id.len(), 1);

    let line = &wait_lines(&path, 1)[0];
    let (prefix, rest) = line.split_once(" [").expect("[time]");
    assert_eq!(prefix, "127.0.0.1 - -");
    let (time, rest) = rest.split_once("] ").expect("time]");
    assert!(time.ends_with(" +0000") && time.len() == 26, "{time}");
    let expected = format!("\"GET /x%20y HTTP/1.1\" 200 {sent} \"-\" \"curl/8\" rt=");
    assert!(rest.starts_with(&expected), "{rest}\nwanted {expected}");
    let fields: std::collections::HashMap<&str, &str> = rest[expected.len() - 3..]
        .split(' ')
        .filter_map(|kv| kv.split_once('='))
        .collect();
    assert_eq!(fields["listener"], "http");
    assert_eq!(fields["upstream"], "app");
    assert_eq!(fields["server"], "rec");
    assert_eq!(fields["server_addr"], rec.addr.to_string());
    assert_eq!(fields["attempts"], "1");
    assert_eq!(fields["rx"], req.len().to_string());
    assert_eq!(fields["id"], id[0]);
    for k in ["rt", "ut"] {
        let v: f64 = fields[k]
            .parse()
            .unwrap_or_else(|_| panic!("{k} in {line}"));
        assert!((0.0..5.0).contains(&v), "{line}");
    }
    let _ = std::fs::remove_file(&path);
}

#[test]
fn sigusr1_reopens_after_rename() {
    let rec = Recorder::start(OK);
    let path = temp_path("rotate.log");
    let rotated = path.with_extension("log.1");
    let rl = Ringlb::start(&log_config(rec.addr, "json", &path));
    let get = |id: &str| {
        let mut c = Client::connect(rl.addr());
        c.send(format!("GET / HTTP/1.1\r\nHost: h\r\nX-Request-Id: {id}\r\n\r\n").as_bytes());
        assert_eq!(c.response().status, 200);
    };

    get("before-rotate");
    wait_lines(&path, 1);
    std::fs::rename(&path, &rotated).unwrap();
    rl.proc.signal(libc::SIGUSR1);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "no new file at {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    get("after-rotate");

    let new = wait_lines(&path, 1);
    assert!(
        new[0].contains("\"request_id\":\"after-rotate\""),
        "{}",
        new[0]
    );
    let old = wait_lines(&rotated, 1);
    assert!(
        old[0].contains("\"request_id\":\"before-rotate\""),
        "{}",
        old[0]
    );
    assert_eq!(
        rl.admin_get("/live").status,
        200,
        "SIGUSR1 must not stop ringlb"
    );
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(&rotated);
}

#[test]
fn off_forwards_no_request_id() {
    let rec = Recorder::start(OK);
    let rl = Ringlb::start(&config(&[server(rec.addr)], "", ""));
    assert_eq!(rl.get("/").status, 200);
    let raw = rec.next(Duration::from_secs(5)).expect("request");
    assert!(forwarded_ids(&raw).is_empty());
}

#[test]
fn an_unwritable_path_is_a_startup_error() {
    let cfg = config(
        &[server("127.0.0.1:9".parse().unwrap())],
        "",
        "[access_log]\nformat = \"json\"\npath = \"/nonexistent-dir/ringlb/access.log\"\n",
    );
    let path = temp_path("bad-log.toml");
    std::fs::write(&path, cfg).unwrap();
    let mut cmd = std::process::Command::new(RINGLB);
    cmd.args(["run", "-c"]).arg(&path);
    let mut p = spawn(cmd);
    let status = p.wait_exit(Duration::from_secs(10)).expect("exits");
    assert!(!status.success());
    let line = p
        .wait_line(Duration::from_secs(2), |l| l.contains("access log"))
        .expect("an error naming the access log");
    assert!(
        line.contains("/nonexistent-dir/ringlb/access.log"),
        "{line}"
    );
    let _ = std::fs::remove_file(&path);
}
