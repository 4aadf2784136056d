//! Tests of `http1`, one file per concern, plus property tests and the fuzz corpus replay.

mod checks;
mod chunked;
mod corpus;
mod props;
mod request;
mod response;
mod rewrite;

use super::*;

/// Parses `s` with default limits.
fn req(s: &[u8]) -> Result<(Status, RequestHead), RequestError> {
    req_with(s, &Limits::default())
}

fn req_with(s: &[u8], limits: &Limits) -> Result<(Status, RequestHead), RequestError> {
    let mut head = RequestHead::new();
    parse_request(s, limits, &mut head).map(|st| (st, head))
}

/// Parses a complete request, panicking otherwise (tests only).
fn ok(s: &[u8]) -> RequestHead {
    match req(s) {
        Ok((Status::Complete, head)) => head,
        other => panic!("{:?}: {:?}", String::from_utf8_lossy(s), other.map(|r| r.0)),
    }
}

fn bad(s: &[u8]) -> RequestError {
    match req(s) {
        Err(e) => e,
        Ok((st, _)) => panic!("{:?} parsed as {st:?}", String::from_utf8_lossy(s)),
    }
}

fn res(s: &[u8], method: Method) -> Result<(Status, ResponseHead), ResponseError> {
    let mut head = ResponseHead::new();
    parse_response(s, &Limits::default(), method, &mut head).map(|st| (st, head))
}

fn res_ok(s: &[u8], method: Method) -> ResponseHead {
    match res(s, method) {
        Ok((Status::Complete, head)) => head,
        other => panic!("{:?}: {:?}", String::from_utf8_lossy(s), other.map(|r| r.0)),
    }
}

/// Feeds `input` to a fresh decoder in the given pieces; returns payload, bytes consumed, end.
fn dechunk(pieces: &[&[u8]]) -> Result<(Vec<u8>, usize, bool), ChunkError> {
    let mut d = ChunkedDecoder::new();
    let mut payload = Vec::new();
    let mut used = 0;
    for p in pieces {
        let pr = d.advance(p, &mut |r| payload.extend_from_slice(&p[r]))?;
        used += pr.consumed;
        if pr.done {
            assert!(d.is_done());
            return Ok((payload, used, true));
        }
        assert_eq!(pr.consumed, p.len());
    }
    Ok((payload, used, false))
}
