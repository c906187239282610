//! An append-only table indexed by a dense id, read without a lock: fixed-size chunks,
//! allocated when first needed, so that a slot never moves and a read is two loads.

use std::sync::OnceLock;

/// Slots per chunk.
const CHUNK: usize = 1 << 10;
/// Chunks at most (a million slots: buckets are far fewer).
const CHUNKS: usize = 1 << 10;

/// The table. Slots are created by [`Slots::ensure`] (callers serialise growth) and read
/// by index from any thread.
pub(crate) struct Slots<T> {
    /// Fixed-size arrays, so that indexing needs no bounds checks beyond the chunk's presence.
    chunks: Box<[OnceLock<Box<[T; CHUNK]>>; CHUNKS]>,
}

impl<T: Default> Slots<T> {
    pub(crate) fn new() -> Self {
        let chunks: Vec<OnceLock<Box<[T; CHUNK]>>> = (0..CHUNKS).map(|_| OnceLock::new()).collect();
        let chunks: Box<[_; CHUNKS]> =
            chunks.into_boxed_slice().try_into().unwrap_or_else(|_| unreachable!("CHUNKS long"));
        Self { chunks }
    }

    /// Makes sure slots `0..=index` exist.
    pub(crate) fn ensure(&self, index: usize) {
        assert!(index < CHUNK * CHUNKS, "more than {} slots", CHUNK * CHUNKS);
        for c in &self.chunks[..=index / CHUNK] {
            c.get_or_init(|| {
                let chunk: Vec<T> = (0..CHUNK).map(|_| T::default()).collect();
                chunk.into_boxed_slice().try_into().unwrap_or_else(|_| unreachable!("CHUNK long"))
            });
        }
    }
}

impl<T> std::ops::Index<usize> for Slots<T> {
    type Output = T;

    #[inline]
    fn index(&self, i: usize) -> &T {
        let chunk = &self.chunks[i / CHUNK];
        &chunk.get().expect("slots are ensured before they are read")[i % CHUNK]
    }
}

impl<T> Default for Slots<T>
where
    T: Default,
{
    fn default() -> Self {
        Self::new()
    }
}

impl<T> std::fmt::Debug for Slots<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let chunks = self.chunks.iter().filter(|c| c.get().is_some()).count();
        f.debug_struct("Slots").field("chunks", &chunks).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_exist_once_ensured_and_keep_their_values() {
        let s: Slots<std::sync::atomic::AtomicU64> = Slots::new();
        s.ensure(0);
        s[0].store(7, std::sync::atomic::Ordering::Relaxed);
        s.ensure(CHUNK + 3);
        s[CHUNK + 3].store(9, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(s[0].load(std::sync::atomic::Ordering::Relaxed), 7);
        assert_eq!(s[CHUNK + 3].load(std::sync::atomic::Ordering::Relaxed), 9);
    }
}
