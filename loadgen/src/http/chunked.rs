//! Streaming decoder for `Transfer-Encoding: chunked` bodies (RFC 9112 §7.1).
//!
//! Bytes may arrive split anywhere; the decoder keeps its position between calls and hands
//! the payload to a callback, so callers that only need the body's end pass a no-op.

/// Where the decoder is inside the chunked framing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Reading the hex chunk size; `digits` seen so far.
    Size {
        size: u64,
        digits: u8,
    },
    /// Whitespace after the size, before `;` or CR.
    SizeWs {
        size: u64,
    },
    /// Inside a chunk extension, skipped up to CR.
    Ext {
        size: u64,
    },
    /// CR seen after the size line, LF expected.
    SizeLf {
        size: u64,
    },
    /// Payload bytes still to come in this chunk.
    Data {
        remaining: u64,
    },
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    TrailerLine,
    TrailerLf,
    EndLf,
    Done,
}

/// The framing is not valid chunked encoding.
#[derive(Debug, PartialEq, Eq)]
pub struct ChunkedError;

#[derive(Clone, Debug)]
pub struct Decoder {
    state: State,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    pub fn new() -> Self {
        Self {
            state: State::Size { size: 0, digits: 0 },
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes framing and payload from `input`, passing payload slices to `payload`.
    /// Returns how many bytes were consumed; stops right after the final CRLF, so bytes of
    /// a following message are left unconsumed.
    pub fn feed(
        &mut self,
        input: &[u8],
        mut payload: impl FnMut(&[u8]),
    ) -> Result<usize, ChunkedError> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            self.state = match self.state {
                State::Done => return Ok(i),
                State::Data { remaining } => {
                    let avail = (input.len() - i) as u64;
                    let take = remaining.min(avail) as usize;
                    payload(&input[i..i + take]);
                    i += take;
                    let left = remaining - take as u64;
                    self.state = if left == 0 {
                        State::DataCr
                    } else {
                        State::Data { remaining: left }
                    };
                    continue;
                }
                State::Size { size, digits } => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        let d = (b as char).to_digit(16).ok_or(ChunkedError)?;
                        if digits >= 15 {
                            return Err(ChunkedError);
                        }
                        State::Size {
                            size: size * 16 + u64::from(d),
                            digits: digits + 1,
                        }
                    }
                    _ if digits == 0 => return Err(ChunkedError),
                    b' ' | b'\t' => State::SizeWs { size },
                    b';' => State::Ext { size },
                    b'\r' => State::SizeLf { size },
                    _ => return Err(ChunkedError),
                },
                State::SizeWs { size } => match b {
                    b' ' | b'\t' => State::SizeWs { size },
                    b';' => State::Ext { size },
                    b'\r' => State::SizeLf { size },
                    _ => return Err(ChunkedError),
                },
                State::Ext { size } => match b {
                    b'\r' => State::SizeLf { size },
                    b'\n' => return Err(ChunkedError),
                    _ => State::Ext { size },
                },
                State::SizeLf { size } => match (b, size) {
                    (b'\n', 0) => State::TrailerStart,
                    (b'\n', n) => State::Data { remaining: n },
                    _ => return Err(ChunkedError),
                },
                State::DataCr => match b {
                    b'\r' => State::DataLf,
                    _ => return Err(ChunkedError),
                },
                State::DataLf => match b {
                    b'\n' => State::Size { size: 0, digits: 0 },
                    _ => return Err(ChunkedError),
                },
                State::TrailerStart => match b {
                    b'\r' => State::EndLf,
                    b'\n' => return Err(ChunkedError),
                    _ => State::TrailerLine,
                },
                State::TrailerLine => match b {
                    b'\r' => State::TrailerLf,
                    _ => State::TrailerLine,
                },
                State::TrailerLf => match b {
                    b'\n' => State::TrailerStart,
                    _ => return Err(ChunkedError),
                },
                State::EndLf => match b {
                    b'\n' => {
                        self.state = State::Done;
                        return Ok(i + 1);
                    }
                    _ => return Err(ChunkedError),
                },
            };
            i += 1;
        }
        Ok(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_split(input: &[u8], split: usize) -> Result<(Vec<u8>, usize), ChunkedError> {
        let mut d = Decoder::new();
        let mut out = Vec::new();
        let a = d.feed(&input[..split], |p| out.extend_from_slice(p))?;
        let b = d.feed(&input[a..], |p| out.extend_from_slice(p))?;
        assert!(d.is_done());
        Ok((out, a + b))
    }

    #[test]
    fn decodes_at_every_split() {
        let msg =
            b"4\r\nWiki\r\n5;ext=1\r\npedia\r\nE \r\n in\r\n\r\nchunks.\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        for split in 0..msg.len() {
            let (out, used) = decode_split(msg, split).unwrap();
            assert_eq!(out, b"Wikipedia in\r\n\r\nchunks.");
            assert_eq!(&msg[used..], b"NEXT");
        }
    }

    #[test]
    fn rejects_bad_framing() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"4\r\nWikiX",
            b"4\nWiki",
            b"0\r\n\n",
        ] {
            let mut d = Decoder::new();
            assert_eq!(d.feed(bad, |_| {}), Err(ChunkedError), "{bad:?}");
        }
        let mut d = Decoder::new();
        assert_eq!(d.feed(b"ffffffffffffffff1\r\n", |_| {}), Err(ChunkedError));
    }
}
