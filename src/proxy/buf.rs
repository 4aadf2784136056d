//! A connection's read buffer: bytes `[start, end)` are received and not yet consumed.

use crate::runtime::io::Stream;
use std::io;
use std::time::Duration;

pub struct Buf {
    data: Box<[u8]>,
    start: usize,
    end: usize,
}

impl Buf {
    pub fn new(size: usize) -> Buf {
        Buf {
            data: vec![0; size].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    pub fn filled(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    pub fn is_full(&self) -> bool {
        self.start == 0 && self.end == self.data.len()
    }

    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Moves unconsumed bytes to the front, so spans parsed from `filled()` are offsets
    /// from the start of the buffer and the whole capacity is free to read into.
    pub fn compact(&mut self) {
        if self.start > 0 {
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
    }

    /// Reads more bytes after the filled ones; Ok(0) at end of stream or when full.
    pub async fn fill(&mut self, s: &mut Stream, timeout: Duration) -> io::Result<usize> {
        if self.end == self.data.len() {
            self.compact();
            if self.end == self.data.len() {
                return Ok(0);
            }
        }
        let n = s.read(&mut self.data[self.end..], timeout).await?;
        self.end += n;
        Ok(n)
    }
}
