//! A connection's read buffer: bytes `[start, end)` are received and not yet consumed.

use crate::engine::Stream;
use std::io;
use std::time::Duration;

pub struct Buf {
    data: Box<[u8]>,
    start: usize,
    end: usize,
}

impl Buf {
    /// No storage until `ensure`.
    pub fn empty() -> Buf {
        Buf {
            data: Box::default(),
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

// Idle keep-alive connections hold no large buffers: they return them here while waiting,
// and take them back when the next request arrives. One free list per core (thread-local:
// an engine core is one thread), bounded in bytes so that memory taken by a burst of
// connections goes back to the allocator (and the allocator's to the system) once they end.
thread_local! {
    static FREE: std::cell::RefCell<Free> = std::cell::RefCell::new(Free::default());
}

/// Bytes kept for reuse per core, all kinds together: enough for the buffers of a few dozen
/// exchanges in flight; beyond it a buffer given back is freed. mimalloc's own per-thread
/// free lists make a fresh allocation cheap; this list mostly saves zeroing.
const KEEP_BYTES: usize = 2 << 20;

#[derive(Default)]
struct Free {
    /// By exact length (a few distinct sizes: the growth steps of request buffers, and the
    /// response buffer).
    bytes: Vec<(usize, Vec<Box<[u8]>>)>,
    vecs: Vec<Vec<u8>>,
    headers: Vec<Vec<crate::http1::Header>>,
    /// Bytes held by the three lists.
    held: usize,
}

impl Free {
    /// Whether `size` more bytes may be kept; if so they are counted.
    fn admit(&mut self, size: usize) -> bool {
        if self.held + size > KEEP_BYTES {
            return false;
        }
        self.held += size;
        true
    }
}

fn headers_bytes(v: &Vec<crate::http1::Header>) -> usize {
    v.capacity() * std::mem::size_of::<crate::http1::Header>()
}

fn take_bytes(size: usize) -> Box<[u8]> {
    FREE.with(|f| {
        let mut f = f.borrow_mut();
        let b = f
            .bytes
            .iter_mut()
            .find(|(len, _)| *len == size)
            .and_then(|(_, stack)| stack.pop());
        if b.is_some() {
            f.held -= size;
        }
        b
    })
    .unwrap_or_else(|| vec![0; size].into_boxed_slice())
}

fn give_bytes(b: Box<[u8]>) {
    if b.is_empty() {
        return;
    }
    FREE.with(|f| {
        let mut f = f.borrow_mut();
        let len = b.len();
        if !f.admit(len) {
            return;
        }
        match f.bytes.iter_mut().find(|(l, _)| *l == len) {
            Some((_, stack)) => stack.push(b),
            None => f.bytes.push((len, vec![b])),
        }
    });
}

/// A cleared Vec with at least `cap` capacity, reused when one is free.
pub fn take_vec(cap: usize) -> Vec<u8> {
    FREE.with(|f| {
        let mut f = f.borrow_mut();
        let v = f.vecs.pop()?;
        f.held -= v.capacity();
        Some(v)
    })
    .filter(|v| v.capacity() >= cap)
    .unwrap_or_else(|| Vec::with_capacity(cap))
}

pub fn give_vec(mut v: Vec<u8>) {
    if v.capacity() == 0 {
        return;
    }
    v.clear();
    FREE.with(|f| {
        let mut f = f.borrow_mut();
        if f.admit(v.capacity()) {
            f.vecs.push(v);
        }
    });
}

pub fn take_headers() -> Vec<crate::http1::Header> {
    FREE.with(|f| {
        let mut f = f.borrow_mut();
        let v = f.headers.pop()?;
        f.held -= headers_bytes(&v);
        Some(v)
    })
    .unwrap_or_else(|| Vec::with_capacity(crate::http1::MAX_HEADERS))
}

pub fn give_headers(mut v: Vec<crate::http1::Header>) {
    if v.capacity() == 0 {
        return;
    }
    v.clear();
    FREE.with(|f| {
        let mut f = f.borrow_mut();
        if f.admit(headers_bytes(&v)) {
            f.headers.push(v);
        }
    });
}

impl Buf {
    /// Returns the storage to the core's free list; only an empty buffer gives it up.
    pub fn release(&mut self) {
        if self.start == self.end {
            give_bytes(std::mem::take(&mut self.data));
            self.start = 0;
            self.end = 0;
        }
    }

    /// Storage of `size` bytes, if released.
    pub fn ensure(&mut self, size: usize) {
        if self.data.is_empty() {
            self.data = take_bytes(size);
        }
    }

    /// Storage of at least `size` bytes, keeping what is buffered: a buffer that started
    /// small grows as what it must hold grows (a request head, then a body to stream).
    pub fn grow_to(&mut self, size: usize) {
        if self.data.len() >= size {
            return;
        }
        let mut bigger = take_bytes(size);
        let n = self.len();
        bigger[..n].copy_from_slice(self.filled());
        give_bytes(std::mem::replace(&mut self.data, bigger));
        self.start = 0;
        self.end = n;
    }

    /// The storage size.
    pub fn capacity(&self) -> usize {
        self.data.len()
    }

    /// Appends `bytes` (the caller made sure they fit).
    #[cfg(test)]
    pub fn push(&mut self, bytes: &[u8]) {
        self.compact();
        let n = bytes.len().min(self.data.len() - self.end);
        self.data[self.end..self.end + n].copy_from_slice(&bytes[..n]);
        self.end += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grow_keeps_the_bytes_and_the_free_list_is_bounded() {
        let mut b = Buf::empty();
        b.ensure(16);
        b.push(b"0123456789");
        b.consume(4);
        b.grow_to(64);
        assert_eq!(b.filled(), b"456789");
        assert_eq!(b.capacity(), 64);
        // Giving back far more than KEEP_BYTES keeps at most KEEP_BYTES.
        for _ in 0..(KEEP_BYTES / 4096) * 3 {
            give_bytes(vec![0; 4096].into_boxed_slice());
            give_vec(Vec::with_capacity(4096));
        }
        FREE.with(|f| assert!(f.borrow().held <= KEEP_BYTES));
    }
}
