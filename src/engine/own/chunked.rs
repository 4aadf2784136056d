//! A growable array that never moves its elements: fixed-size chunks, added as it grows.
//!
//! The reactors' and timers' per-socket slabs grow with the number of connections. A `Vec`
//! would double by copying (a stall of the core at 100k sockets) and leave the old block to
//! the allocator, which keeps it resident: measured at 10,000 idle connections, the slabs'
//! doubling cost ~650 bytes per connection beyond what the connections hold. Chunks are
//! allocated once and kept, so memory follows the high-water mark of sockets, no more.

use std::ops::{Index, IndexMut};

/// Elements per chunk: a power of two, so an index splits with a shift and a mask.
const SHIFT: u32 = 10;
const CHUNK: usize = 1 << SHIFT;

pub(crate) struct Chunked<T> {
    chunks: Vec<Vec<T>>,
    len: usize,
}

impl<T> Chunked<T> {
    pub(crate) const fn new() -> Chunked<T> {
        Chunked {
            chunks: Vec::new(),
            len: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn push(&mut self, value: T) {
        if self.len % CHUNK == 0 {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        if let Some(last) = self.chunks.last_mut() {
            last.push(value);
            self.len += 1;
        }
    }

    pub(crate) fn get(&self, i: usize) -> Option<&T> {
        self.chunks.get(i >> SHIFT)?.get(i & (CHUNK - 1))
    }

    pub(crate) fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        self.chunks.get_mut(i >> SHIFT)?.get_mut(i & (CHUNK - 1))
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().flatten()
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.chunks.iter_mut().flatten()
    }
}

impl<T> Default for Chunked<T> {
    fn default() -> Self {
        Chunked::new()
    }
}

impl<T> Index<usize> for Chunked<T> {
    type Output = T;

    fn index(&self, i: usize) -> &T {
        &self.chunks[i >> SHIFT][i & (CHUNK - 1)]
    }
}

impl<T> IndexMut<usize> for Chunked<T> {
    fn index_mut(&mut self, i: usize) -> &mut T {
        &mut self.chunks[i >> SHIFT][i & (CHUNK - 1)]
    }
}

impl<'a, T> IntoIterator for &'a mut Chunked<T> {
    type Item = &'a mut T;
    type IntoIter = std::iter::Flatten<std::slice::IterMut<'a, Vec<T>>>;

    fn into_iter(self) -> Self::IntoIter {
        self.chunks.iter_mut().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_across_chunks_and_never_moves_an_element() {
        let mut c = Chunked::new();
        c.push(0usize);
        let first: *const usize = &c[0];
        for i in 1..3 * CHUNK + 5 {
            c.push(i);
        }
        assert_eq!(c.len(), 3 * CHUNK + 5);
        assert!(
            std::ptr::eq(first, &c[0]),
            "the first element stayed where it was"
        );
        for i in [0, 1, CHUNK - 1, CHUNK, 2 * CHUNK + 7, 3 * CHUNK + 4] {
            assert_eq!(c[i], i);
            assert_eq!(c.get(i), Some(&i));
        }
        assert_eq!(c.get(3 * CHUNK + 5), None);
        c[CHUNK] = 7;
        *c.get_mut(CHUNK + 1).unwrap() = 8;
        assert_eq!((c[CHUNK], c[CHUNK + 1]), (7, 8));
        assert_eq!(c.iter().count(), c.len());
        assert_eq!(c.iter_mut().count(), c.len());
    }
}
