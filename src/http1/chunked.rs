//! The chunked transfer coding (RFC 9112 §7.1), scanned byte by byte so that a body split at
//! any position ends at the same byte.
//!
//! Accepted, and nothing more (each refusal is a place where two parsers could disagree on
//! where the body ends):
//! - chunk-size is 1*16HEXDIG; no sign, no `0x`, no whitespace before it.
//! - SP/HTAB after the size only as BWS before `;` (RFC 9112 §7.1.1). An extension starts with
//!   a token character; its bytes are HTAB, SP, VCHAR or obs-text, at most [`MAX_EXT`] per body.
//! - Every line ends with CRLF: a bare CR or LF is `LineEnding`, and so is data not followed by
//!   CRLF.
//! - Trailer lines are `token ":" value` (no obs-fold, no space before the colon), at most
//!   [`MAX_TRAILER`] bytes per body.

use std::ops::Range;

/// Extension bytes (from the first `;` to the CR of each size line) allowed in one body.
pub const MAX_EXT: u32 = 4 * 1024;
/// Trailer section bytes allowed in one body, final CRLF excluded.
pub const MAX_TRAILER: u32 = 8 * 1024;
/// 16 hex digits fill a u64.
const MAX_DIGITS: u8 = 16;

#[derive(Debug, PartialEq, Eq)]
pub struct Progress {
    /// Bytes of the input that belong to the body; less than the input only when `done`.
    pub consumed: usize,
    /// The last chunk, the trailer section and its final CRLF were consumed.
    pub done: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkError {
    /// Not a hex digit where the size or its line expects one.
    Size,
    /// More than 16 hex digits.
    Overflow,
    /// A chunk extension that is not `;` token followed by visible characters.
    Extension,
    /// A line not ending in CRLF, or data not followed by CRLF.
    LineEnding,
    /// A trailer line that is not `token ":" value`.
    Trailer,
    /// Extensions or trailers past their cap.
    TooLong,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Hex digits of a chunk-size; `digits` counts them.
    Size,
    /// BWS after the size: only more of it or `;` may follow.
    SizeWs,
    /// After `;`: BWS, then the first character of the extension name.
    ExtStart,
    /// The rest of the extensions, up to CR.
    Ext,
    SizeLf,
    /// `size` payload bytes left in this chunk.
    Data,
    DataCr,
    DataLf,
    /// Start of a trailer line, or the CR of the final empty line.
    TrailerStart,
    TrailerName,
    TrailerValue,
    TrailerLf,
    EndLf,
    Done,
    Failed(ChunkError),
}

/// Chunked body scanner. Copy-able, allocation-free; one per body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkedDecoder {
    state: State,
    /// The chunk-size being read, then the payload bytes left in the chunk.
    size: u64,
    digits: u8,
    ext: u32,
    trailer: u32,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    pub fn new() -> Self {
        ChunkedDecoder {
            state: State::Size,
            size: 0,
            digits: 0,
            ext: 0,
            trailer: 0,
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Scans `input` (the next bytes of the body, possibly a split at any position), never past
    /// the end of the message. Calls `data(range)` for each run of payload bytes found (range
    /// into `input`). Returns how many bytes of `input` belong to the body and whether the
    /// message ended (last-chunk, trailers, final CRLF all consumed). Any split of the same bytes
    /// gives the same data and the same end. After an error, every call returns that error.
    pub fn advance(
        &mut self,
        input: &[u8],
        data: &mut impl FnMut(Range<usize>),
    ) -> Result<Progress, ChunkError> {
        match self.scan(input, data) {
            Ok(p) => Ok(p),
            Err(e) => {
                self.state = State::Failed(e);
                Err(e)
            }
        }
    }

    fn scan(
        &mut self,
        input: &[u8],
        data: &mut impl FnMut(Range<usize>),
    ) -> Result<Progress, ChunkError> {
        use ChunkError as E;
        use State::*;

        let mut i = 0;
        while i < input.len() {
            if self.state == Data {
                let left = input.len() - i;
                let n = usize::try_from(self.size).map_or(left, |s| s.min(left));
                data(i..i + n);
                i += n;
                // n <= size, so this cannot wrap.
                self.size -= n as u64;
                if self.size == 0 {
                    self.state = DataCr;
                }
                continue;
            }
            let Some(&b) = input.get(i) else { break };
            i += 1;
            self.state = match self.state {
                Size => match b {
                    _ if b.is_ascii_hexdigit() => {
                        if self.digits == MAX_DIGITS {
                            return Err(E::Overflow);
                        }
                        self.digits += 1;
                        self.size = self.size << 4 | u64::from(hex(b));
                        Size
                    }
                    _ if self.digits == 0 => return Err(E::Size),
                    b';' => self.ext(ExtStart)?,
                    b' ' | b'\t' => self.ext(SizeWs)?,
                    b'\r' => SizeLf,
                    b'\n' => return Err(E::LineEnding),
                    _ => return Err(E::Size),
                },
                SizeWs => match b {
                    b' ' | b'\t' => self.ext(SizeWs)?,
                    b';' => self.ext(ExtStart)?,
                    b'\r' | b'\n' => return Err(E::LineEnding),
                    _ => return Err(E::Size),
                },
                ExtStart => match b {
                    b' ' | b'\t' => self.ext(ExtStart)?,
                    _ if super::is_tchar(b) => self.ext(Ext)?,
                    _ => return Err(E::Extension),
                },
                Ext => match b {
                    b'\r' => SizeLf,
                    b'\n' => return Err(E::LineEnding),
                    _ if text(b) => self.ext(Ext)?,
                    _ => return Err(E::Extension),
                },
                SizeLf => match b {
                    b'\n' if self.size == 0 => TrailerStart,
                    b'\n' => Data,
                    _ => return Err(E::LineEnding),
                },
                // Handled before the match.
                Data => Data,
                DataCr => match b {
                    b'\r' => DataLf,
                    _ => return Err(E::LineEnding),
                },
                DataLf => match b {
                    b'\n' => {
                        self.digits = 0;
                        Size
                    }
                    _ => return Err(E::LineEnding),
                },
                TrailerStart => match b {
                    b'\r' => EndLf,
                    b'\n' => return Err(E::LineEnding),
                    _ if super::is_tchar(b) => self.trailer(TrailerName)?,
                    _ => return Err(E::Trailer),
                },
                TrailerName => match b {
                    b':' => self.trailer(TrailerValue)?,
                    _ if super::is_tchar(b) => self.trailer(TrailerName)?,
                    _ => return Err(E::Trailer),
                },
                TrailerValue => match b {
                    b'\r' => self.trailer(TrailerLf)?,
                    b'\n' => return Err(E::LineEnding),
                    _ if text(b) => self.trailer(TrailerValue)?,
                    _ => return Err(E::Trailer),
                },
                TrailerLf => match b {
                    b'\n' => self.trailer(TrailerStart)?,
                    _ => return Err(E::LineEnding),
                },
                EndLf => match b {
                    b'\n' => {
                        self.state = Done;
                        return Ok(Progress {
                            consumed: i,
                            done: true,
                        });
                    }
                    _ => return Err(E::LineEnding),
                },
                Done => {
                    return Ok(Progress {
                        consumed: i - 1,
                        done: true,
                    })
                }
                Failed(e) => return Err(e),
            };
        }
        match self.state {
            Failed(e) => Err(e),
            Done => Ok(Progress {
                consumed: 0,
                done: true,
            }),
            _ => Ok(Progress {
                consumed: input.len(),
                done: false,
            }),
        }
    }

    /// Counts one extension byte and moves to `next`.
    fn ext(&mut self, next: State) -> Result<State, ChunkError> {
        self.ext += 1;
        if self.ext > MAX_EXT {
            return Err(ChunkError::TooLong);
        }
        Ok(next)
    }

    /// Counts one trailer byte and moves to `next`.
    fn trailer(&mut self, next: State) -> Result<State, ChunkError> {
        self.trailer += 1;
        if self.trailer > MAX_TRAILER {
            return Err(ChunkError::TooLong);
        }
        Ok(next)
    }
}

fn hex(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        b'A'..=b'F' => b - b'A' + 10,
        _ => 0,
    }
}

/// HTAB, SP, VCHAR, obs-text: what a field value may hold (RFC 9110 §5.5).
fn text(b: u8) -> bool {
    b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80
}
