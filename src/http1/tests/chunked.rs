use super::*;

use ChunkError::*;

const BODY: &[u8] = b"5\r\nhello\r\n1a;name=value\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n";

fn err(input: &[u8]) -> ChunkError {
    match dechunk(&[input]) {
        Err(e) => e,
        Ok(r) => panic!(
            "{:?} gave {r:?}",
            String::from_utf8_lossy(&input[..input.len().min(80)])
        ),
    }
}

#[test]
fn whole_body() {
    let (data, used, done) = dechunk(&[BODY]).unwrap();
    assert_eq!(data, b"helloabcdefghijklmnopqrstuvwxyz");
    assert_eq!((used, done), (BODY.len(), true));
}

#[test]
fn stops_at_the_end() {
    let mut buf = BODY.to_vec();
    buf.extend_from_slice(b"GET / HTTP/1.1\r\n");
    let mut d = ChunkedDecoder::new();
    let p = d.advance(&buf, &mut |_| {}).unwrap();
    assert_eq!(
        p,
        Progress {
            consumed: BODY.len(),
            done: true
        }
    );
    // Once done, nothing more belongs to the body.
    assert_eq!(
        d.advance(b"more", &mut |_| {}),
        Ok(Progress {
            consumed: 0,
            done: true
        })
    );
    assert!(d.is_done());
}

#[test]
fn every_split_gives_the_same_result() {
    let whole = dechunk(&[BODY]).unwrap();
    for i in 0..=BODY.len() {
        assert_eq!(
            dechunk(&[&BODY[..i], &BODY[i..]]).unwrap(),
            whole,
            "split {i}"
        );
    }
    let bytes: Vec<&[u8]> = BODY.chunks(1).collect();
    assert_eq!(dechunk(&bytes).unwrap(), whole);
}

#[test]
fn data_ranges_index_the_input() {
    let mut d = ChunkedDecoder::new();
    let mut ranges = Vec::new();
    d.advance(b"3\r\nab", &mut |r| ranges.push(r)).unwrap();
    d.advance(b"c\r\n0\r\n\r\n", &mut |r| ranges.push(r))
        .unwrap();
    assert_eq!(ranges, vec![3..5, 0..1]);
}

#[test]
fn sizes() {
    assert_eq!(
        dechunk(&[b"A\r\n0123456789\r\n0\r\n\r\n"]).unwrap().0,
        b"0123456789"
    );
    assert_eq!(
        dechunk(&[b"000a\r\n0123456789\r\n00\r\n\r\n"]).unwrap().1,
        24
    );
    // 16 digits fill a u64; the body is then merely long.
    let (_, used, done) = dechunk(&[b"ffffffffffffffff\r\nabc"]).unwrap();
    assert_eq!((used, done), (21, false));
    assert_eq!(err(b"10000000000000000\r\n"), Overflow);
    assert_eq!(err(b"00000000000000000\r\n"), Overflow);
    for s in [
        &b"+5\r\n"[..],
        b"-5\r\n",
        b"0x5\r\n",
        b" 5\r\n",
        b"g\r\n",
        b"\r\n",
        b";a\r\n",
        b"5g\r\n",
    ] {
        assert_eq!(err(s), Size, "{:?}", String::from_utf8_lossy(s));
    }
}

#[test]
fn extensions() {
    for ok in [
        &b"5;a\r\nhello\r\n0\r\n\r\n"[..],
        b"5 ;a=b\r\nhello\r\n0;x=\"y z\"\r\n\r\n",
        b"5\t; a = b ;c\r\nhello\r\n0\r\n\r\n",
    ] {
        assert_eq!(
            dechunk(&[ok]).unwrap().0,
            b"hello",
            "{:?}",
            String::from_utf8_lossy(ok)
        );
    }
    assert_eq!(err(b"5;\r\n"), Extension);
    assert_eq!(err(b"5;;\r\n"), Extension);
    assert_eq!(err(b"5;=b\r\n"), Extension);
    assert_eq!(err(b"5;a\x01\r\n"), Extension);
    assert_eq!(err(b"5;a\x7f\r\n"), Extension);
    // Whitespace after the size only before `;`.
    assert_eq!(err(b"5 \r\n"), LineEnding);
    assert_eq!(err(b"5 x\r\n"), Size);
    let mut long = b"1".to_vec();
    for _ in 0..(4096 / 8) {
        long.extend_from_slice(b";a=bbbbb");
    }
    long.extend_from_slice(b"\r\nx\r\n1;a\r\n");
    assert_eq!(err(&long), TooLong);
}

#[test]
fn line_endings() {
    for s in [
        &b"5\nhello\r\n"[..],
        b"5\rhello\r\n",
        b"5;a\nhello\r\n",
        b"5;a\rhello\r\n",
        b"5\r\nhello\n0\r\n\r\n",
        b"5\r\nhello\r0\r\n\r\n",
        b"5\r\nhelloX\r\n",
        b"5\r\nhello\r\r\n",
        b"0\r\n\n",
        b"0\r\n\rx",
        b"0\nA: b\r\n\r\n",
        b"0\r\nA: b\n\r\n",
        b"0\r\nA: b\rx\r\n",
        b"0\r\n\x0a",
    ] {
        assert_eq!(err(s), LineEnding, "{:?}", String::from_utf8_lossy(s));
    }
}

#[test]
fn trailers() {
    let body = b"3\r\nabc\r\n0\r\nExpires: never\r\nX-Sum:1\r\n\r\nrest";
    let (data, used, done) = dechunk(&[body]).unwrap();
    assert_eq!(
        (data.as_slice(), used, done),
        (&b"abc"[..], body.len() - 4, true)
    );
    for s in [
        &b"0\r\n A: b\r\n\r\n"[..],
        b"0\r\nA : b\r\n\r\n",
        b"0\r\n: b\r\n\r\n",
        b"0\r\nA\r\n\r\n",
        b"0\r\nA: b\x01\r\n\r\n",
    ] {
        assert_eq!(err(s), Trailer, "{:?}", String::from_utf8_lossy(s));
    }
    let mut long = b"0\r\n".to_vec();
    for _ in 0..(8192 / 16) {
        long.extend_from_slice(b"X-Trailer: aaa\r\n");
    }
    // Exactly at the cap.
    let mut at_cap = long.clone();
    at_cap.extend_from_slice(b"\r\n");
    assert!(dechunk(&[&at_cap]).unwrap().2);
    long.extend_from_slice(b"X\r\n\r\n");
    assert_eq!(err(&long), TooLong);
}

#[test]
fn error_sticks() {
    let mut d = ChunkedDecoder::new();
    assert_eq!(d.advance(b"x", &mut |_| {}), Err(Size));
    assert_eq!(d.advance(b"5\r\nhello\r\n", &mut |_| {}), Err(Size));
    assert!(!d.is_done());
}

#[test]
fn empty_input() {
    let mut d = ChunkedDecoder::default();
    assert_eq!(
        d.advance(b"", &mut |_| {}),
        Ok(Progress {
            consumed: 0,
            done: false
        })
    );
}
