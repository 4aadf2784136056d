// Criterion benchmarks of the `http1` hot path: head parsing, head rewriting, chunked scanning.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringlb::http1::{
    parse_request, parse_response, write_request_head, write_response_head, ChunkedDecoder, Limits,
    Method, Proto, RequestForward, RequestHead, ResponseForward, ResponseHead, Status, Version,
};

/// A browser-like GET of about 300 bytes.
const REQUEST: &[u8] = b"GET /api/v1/items?page=2&sort=desc HTTP/1.1\r\n\
Host: shop.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: text/html,application/xhtml+xml,*/*;q=0.8\r\n\
Accept-Language: en-US,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br\r\n\
Cookie: SRV=s2; session=8f14e45fceea167a\r\n\
Connection: keep-alive\r\n\r\n";

const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\n\
Date: Tue, 25 Nov 2025 10:00:00 GMT\r\n\
Server: nginx\r\n\
Content-Type: application/json; charset=utf-8\r\n\
Content-Length: 1432\r\n\
Cache-Control: max-age=60\r\n\
ETag: \"5f2b-1432\"\r\n\
Connection: keep-alive\r\n\r\n";

fn parse(c: &mut Criterion) {
    let limits = Limits::default();
    let mut g = c.benchmark_group("parse_request");
    g.throughput(Throughput::Bytes(REQUEST.len() as u64));
    let mut head = RequestHead::new();
    g.bench_function("small", |b| {
        b.iter(|| {
            let st = parse_request(black_box(REQUEST), &limits, &mut head);
            assert_eq!(st, Ok(Status::Complete));
        })
    });
    g.finish();

    let mut g = c.benchmark_group("parse_response");
    g.throughput(Throughput::Bytes(RESPONSE.len() as u64));
    let mut head = ResponseHead::new();
    g.bench_function("small", |b| {
        b.iter(|| {
            let st = parse_response(black_box(RESPONSE), &limits, Method::Get, &mut head);
            assert_eq!(st, Ok(Status::Complete));
        })
    });
    g.finish();
}

fn rewrite(c: &mut Criterion) {
    let limits = Limits::default();
    let mut head = RequestHead::new();
    assert_eq!(
        parse_request(REQUEST, &limits, &mut head),
        Ok(Status::Complete)
    );
    let fwd = RequestForward {
        client_ip: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)),
        proto: Proto::Https,
        default_host: b"backend",
        tunnel: false,
        via: Some(b"ringlb"),
        drop_cookie: Some(b"SRV"),
        request_id: None,
        prefix: None,
        edits: None,
    };
    let mut out = Vec::with_capacity(1024);
    let mut g = c.benchmark_group("rewrite_request");
    g.throughput(Throughput::Bytes(REQUEST.len() as u64));
    g.bench_function("small", |b| {
        b.iter(|| {
            out.clear();
            write_request_head(black_box(REQUEST), &head, &fwd, &mut out);
            black_box(out.len())
        })
    });
    g.finish();

    let mut res = ResponseHead::new();
    assert_eq!(
        parse_response(RESPONSE, &limits, Method::Get, &mut res),
        Ok(Status::Complete)
    );
    let fwd = ResponseForward {
        keep_alive: true,
        client_version: Version::Http11,
        dechunk: false,
        set_cookie: Some(b"SRV=s2; Path=/; HttpOnly"),
        nocache: true,
        edits: None,
    };
    let mut g = c.benchmark_group("rewrite_response");
    g.throughput(Throughput::Bytes(RESPONSE.len() as u64));
    g.bench_function("small", |b| {
        b.iter(|| {
            out.clear();
            write_response_head(black_box(RESPONSE), &res, &fwd, &mut out);
            black_box(out.len())
        })
    });
    g.finish();
}

/// 16 KiB of payload in 1 KiB chunks, with a trailer.
fn chunked_body() -> Vec<u8> {
    let mut body = Vec::new();
    for i in 0..16u8 {
        body.extend_from_slice(b"400\r\n");
        body.extend_from_slice(&[b'a' + i; 1024]);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\nX-Checksum: 1\r\n\r\n");
    body
}

fn chunked(c: &mut Criterion) {
    let body = chunked_body();
    let mut g = c.benchmark_group("chunked_scan");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("16KiB", |b| {
        b.iter(|| {
            let mut d = ChunkedDecoder::new();
            let mut n = 0;
            let p = d.advance(black_box(&body), &mut |r| n += r.len()).unwrap();
            assert!(p.done);
            n
        })
    });
    // The same body arriving in 1500-byte reads.
    g.bench_function("16KiB_split", |b| {
        b.iter(|| {
            let mut d = ChunkedDecoder::new();
            let mut n = 0;
            for piece in black_box(&body).chunks(1500) {
                d.advance(piece, &mut |r| n += r.len()).unwrap();
            }
            assert!(d.is_done());
            n
        })
    });
    g.finish();
}

criterion_group!(benches, parse, rewrite, chunked);
criterion_main!(benches);
