//! Properties shared by the fuzz targets (`fuzz/fuzz_targets/*.rs` include this file) and the
//! tests that replay their corpus. Each function panics when its property fails, and only then.
//! It names only the public `http1` API, through the `use` of its parent module.

use super::*;

use std::net::{IpAddr, Ipv4Addr};

fn in_bounds(s: Span, len: usize) -> bool {
    s.start <= s.end && s.end as usize <= len
}

/// `parse_request` never panics; a complete head stays within the input, and what
/// `write_request_head` makes of it parses back as the same method, path, host and body, and
/// carries no hop-by-hop field, Upgrade or Expect unless tunnelled.
pub fn request(data: &[u8]) {
    let limits = Limits::default();
    // Splits at line endings, where a reader most often stops.
    let cuts: Vec<usize> = (0..data.len())
        .filter(|&i| matches!(data.get(i), Some(b'\r' | b'\n')))
        .flat_map(|i| [i, i + 1])
        .take(64)
        .collect();
    request_split(data, &cuts);
    let mut head = RequestHead::new();
    if parse_request(data, &limits, &mut head) != Ok(Status::Complete) {
        return;
    }
    let n = head.head_len;
    assert!(n <= data.len());
    for s in [head.method_span, head.target, head.path] {
        assert!(in_bounds(s, n));
    }
    for h in &head.headers {
        assert!(in_bounds(h.name, n) && in_bounds(h.value, n));
    }
    let fwd = RequestForward {
        client_ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        proto: Proto::Http,
        default_host: b"default",
        tunnel: false,
        via: Some(b"ringlb"),
        drop_cookie: Some(b"SRV"),
        request_id: Some(b"id"),
        prefix: None,
        edits: None,
    };
    let mut out = Vec::new();
    // Without a tunnel, no hop-by-hop field, upgrade or expectation reaches the server.
    write_request_head(data, &head, &fwd, &mut out);
    let hop = [
        &b"\r\nconnection:"[..],
        b"\r\nkeep-alive:",
        b"\r\nproxy-connection:",
        b"\r\nte:",
        b"\r\ntrailer:",
        b"\r\nupgrade:",
        b"\r\nhttp2-settings:",
        b"\r\nexpect:",
    ];
    let lower = out.to_ascii_lowercase();
    for name in hop {
        assert!(
            !lower.windows(name.len()).any(|w| w == name),
            "{:?} in {:?}",
            String::from_utf8_lossy(name),
            String::from_utf8_lossy(&out)
        );
    }
    out.clear();
    let fwd = RequestForward {
        tunnel: true,
        ..fwd
    };
    write_request_head(data, &head, &fwd, &mut out);
    // ringlb adds at most seven fields; past MAX_HEADERS the copy is refused, as it should be.
    if head.headers.len() + 7 > MAX_HEADERS {
        return;
    }
    let wide = Limits {
        max_head: usize::MAX,
        max_request_line: usize::MAX,
        max_headers: MAX_HEADERS,
    };
    let mut again = RequestHead::new();
    let st = parse_request(&out, &wide, &mut again);
    assert_eq!(
        st,
        Ok(Status::Complete),
        "{:?}",
        String::from_utf8_lossy(&out)
    );
    assert_eq!(again.head_len, out.len());
    assert_eq!(again.method_span.get(&out), head.method_span.get(data));
    assert_eq!(again.body, head.body);
    assert_eq!(again.version, Version::Http11);
    let path = head.path.get(data);
    let target = again.target.get(&out);
    if head.path == head.target || path.first() == Some(&b'/') {
        assert_eq!(target, path);
    } else {
        assert_eq!(target.split_first(), Some((&b'/', path)));
    }
    let host = head.host.map_or(&b"default"[..], |h| h.get(data));
    assert_eq!(again.host.map(|h| h.get(&out)), Some(host));
}

/// Reading a head in pieces ending at `cuts` (sorted or not; each read appended to the buffer,
/// which is parsed again from its start, as the proxy does) ends as reading it at once: the same
/// head when either is complete, `Partial` for both, or an error for both (which error may differ:
/// a prefix can hit a size limit before the byte that makes the whole input invalid).
pub fn request_split(data: &[u8], cuts: &[usize]) {
    let limits = Limits::default();
    let mut whole = RequestHead::new();
    let want = parse_request(data, &limits, &mut whole);
    let mut cuts: Vec<usize> = cuts.iter().copied().filter(|&c| c < data.len()).collect();
    cuts.sort_unstable();
    cuts.push(data.len());
    let mut head = RequestHead::new();
    for c in cuts {
        let got = parse_request(data.get(..c).unwrap_or_default(), &limits, &mut head);
        if got == Ok(Status::Partial) && c < data.len() {
            continue;
        }
        match (got, want) {
            (Err(_), Err(_)) => {}
            (Ok(Status::Complete), Ok(Status::Complete)) => {
                assert_eq!(format!("{head:?}"), format!("{whole:?}"), "split at {c}");
            }
            _ => assert_eq!(
                got,
                want,
                "split at {c}: {:?}",
                String::from_utf8_lossy(data)
            ),
        }
        return;
    }
}

/// `parse_response` never panics; a complete head stays within the input, and what
/// `write_response_head` makes of it parses back with the same status and body framing.
pub fn response(data: &[u8]) {
    for method in [Method::Get, Method::Head] {
        let mut head = ResponseHead::new();
        if parse_response(data, &Limits::default(), method, &mut head) != Ok(Status::Complete) {
            continue;
        }
        let n = head.head_len;
        assert!(n <= data.len() && in_bounds(head.reason, n));
        for h in &head.headers {
            assert!(in_bounds(h.name, n) && in_bounds(h.value, n));
        }
        let fwd = ResponseForward {
            keep_alive: true,
            client_version: Version::Http11,
            dechunk: false,
            edits: None,
            set_cookie: Some(b"SRV=s1"),
            nocache: true,
        };
        let mut out = Vec::new();
        write_response_head(data, &head, &fwd, &mut out);
        if head.headers.len() + 3 > MAX_HEADERS {
            continue;
        }
        let wide = Limits {
            max_head: usize::MAX,
            max_request_line: usize::MAX,
            max_headers: MAX_HEADERS,
        };
        let mut again = ResponseHead::new();
        let st = parse_response(&out, &wide, method, &mut again);
        assert_eq!(
            st,
            Ok(Status::Complete),
            "{:?}",
            String::from_utf8_lossy(&out)
        );
        assert_eq!((again.status, again.body), (head.status, head.body));
        assert_eq!(again.head_len, out.len());
    }
}

/// `ChunkedDecoder` never panics, never claims bytes past the input, and splitting the input
/// at the point the first byte names gives the same payload, end and error as one call.
pub fn chunked(data: &[u8]) {
    let Some((&at, body)) = data.split_first() else {
        return;
    };
    let at = usize::from(at) % (body.len() + 1);
    let whole = decode(&[body]);
    let (a, b) = body.split_at(at);
    assert_eq!(decode(&[a, b]), whole);
    if let Ok((_, used, _)) = &whole {
        assert!(*used <= body.len());
    }
}

/// Payload, bytes consumed, and whether the body ended.
fn decode(pieces: &[&[u8]]) -> Result<(Vec<u8>, usize, bool), ChunkError> {
    let mut d = ChunkedDecoder::new();
    let mut payload = Vec::new();
    let mut used = 0;
    for p in pieces {
        let pr = d.advance(p, &mut |r| {
            payload.extend_from_slice(p.get(r).unwrap_or_default())
        })?;
        assert!(pr.consumed <= p.len());
        used += pr.consumed;
        if pr.done {
            return Ok((payload, used, true));
        }
    }
    Ok((payload, used, false))
}
