//! `loadgen run https://...` against a small blocking rustls server in the test process.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::Value;

/// Starts an HTTPS server whose certificate names `names`; returns its address and the
/// certificate as a PEM file (a self-signed certificate is its own CA).
fn https_server(names: &[&str], tag: &str) -> (SocketAddr, PathBuf) {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let ck = rcgen::generate_simple_self_signed(names).unwrap();
    let pem = std::env::temp_dir().join(format!("loadgen-tls-{}-{tag}.pem", std::process::id()));
    std::fs::write(&pem, ck.cert.pem()).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.key_pair.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![CertificateDer::from(ck.cert.der().to_vec())], key)
        .unwrap();
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            let config = config.clone();
            std::thread::spawn(move || {
                let conn = rustls::ServerConnection::new(config).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, tcp);
                let mut buf = Vec::new();
                let mut tmp = [0u8; 4096];
                loop {
                    // Answer every complete request head in the buffer, in order.
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\ntls";
                        if tls.write_all(resp).is_err() {
                            return;
                        }
                    }
                    match tls.read(&mut tmp) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&tmp[..n]),
                    }
                }
            });
        }
    });
    (addr, pem)
}

fn run(args: &[&str]) -> (Option<i32>, Value) {
    let out = Command::new(support::BIN)
        .arg("run")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), v)
}

#[test]
fn https_with_a_ca_file_and_with_insecure() {
    let (addr, pem) = https_server(&["127.0.0.1", "localhost"], "ok");
    let url = format!("https://{addr}/");
    let (code, v) = run(&[
        &url,
        "--ca",
        pem.to_str().unwrap(),
        "-n",
        "300",
        "-c",
        "3",
        "--pipeline",
        "2",
    ]);
    assert_eq!(
        (code, &v["status"]["200"]),
        (Some(0), &Value::from(300)),
        "{v}"
    );
    assert_eq!(v["bytes"].as_u64().unwrap() % 300, 0, "{v}");

    let (code, v) = run(&[&url, "--insecure", "-n", "50", "-c", "5", "--no-keepalive"]);
    assert_eq!(
        (code, &v["status"]["200"]),
        (Some(0), &Value::from(50)),
        "{v}"
    );
}

#[test]
fn https_with_a_certificate_for_another_name_fails_to_connect() {
    let (addr, pem) = https_server(&["example.invalid"], "other");
    let url = format!("https://{addr}/");
    let (code, v) = run(&[&url, "--ca", pem.to_str().unwrap(), "-n", "3", "-c", "1"]);
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(v["errors"]["connect"], 3, "{v}");
}
