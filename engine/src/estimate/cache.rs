//! A bounded cache in front of an estimator: a hot prompt is tokenized once.
//!
//! Direct-mapped: each prompt hashes to one slot, and a newer prompt simply takes the slot
//! over. Memory is fixed at creation; there is no bookkeeping per hit.

use std::hash::Hasher;
use std::sync::Mutex;

use rustc_hash::FxHasher;

use super::{Estimator, Prompt};

#[derive(Clone, Copy, Default)]
struct Slot {
    key: u64,
    len: u32,
    model: u32,
    tokens: u64,
}

/// An estimator behind a cache of `slots` entries (a power of two).
pub struct Cached<E> {
    inner: E,
    slots: Vec<Mutex<Slot>>,
}

impl<E: Estimator> Cached<E> {
    /// `inner` behind a cache of at least `slots` entries.
    pub fn new(inner: E, slots: usize) -> Self {
        let n = slots.max(1).next_power_of_two();
        Self { inner, slots: (0..n).map(|_| Mutex::new(Slot::default())).collect() }
    }

    /// The estimator behind the cache.
    pub fn inner(&self) -> &E {
        &self.inner
    }
}

fn key(text: &str) -> u64 {
    let mut h = FxHasher::default();
    h.write(text.as_bytes());
    // Never zero, so an empty slot never matches.
    h.finish() | 1
}

impl<E: Estimator> Estimator for Cached<E> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn estimate(&self, model: usize, prompt: &Prompt<'_>) -> u64 {
        let Prompt::Text(text) = prompt else { return self.inner.estimate(model, prompt) };
        let k = key(text);
        let slot = &self.slots[(k as usize) & (self.slots.len() - 1)];
        let (len, m) = (text.len() as u32, model as u32);
        {
            let s = slot.lock().unwrap_or_else(|p| p.into_inner());
            if s.key == k && s.len == len && s.model == m {
                return s.tokens;
            }
        }
        let tokens = self.inner.estimate(model, prompt);
        *slot.lock().unwrap_or_else(|p| p.into_inner()) = Slot { key: k, len, model: m, tokens };
        tokens
    }

    fn observe(&self, model: usize, prompt: &Prompt<'_>, actual: u64) {
        self.inner.observe(model, prompt, actual);
    }

    fn learns(&self) -> bool {
        self.inner.learns()
    }

    fn warmed_up(&self, model: usize, prompt: &Prompt<'_>) -> bool {
        self.inner.warmed_up(model, prompt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Counting(AtomicUsize);

    impl Estimator for Counting {
        fn name(&self) -> &str {
            "counting"
        }
        fn estimate(&self, _model: usize, prompt: &Prompt<'_>) -> u64 {
            self.0.fetch_add(1, Ordering::Relaxed);
            prompt.chars()
        }
    }

    #[test]
    fn a_hot_prompt_is_estimated_once() {
        let c = Cached::new(Counting(AtomicUsize::new(0)), 64);
        for _ in 0..100 {
            assert_eq!(c.estimate(0, &Prompt::Text("a hot prompt")), 12);
        }
        assert_eq!(c.inner().0.load(Ordering::Relaxed), 1);
        assert_eq!(c.estimate(1, &Prompt::Text("a hot prompt")), 12, "per model");
        assert_eq!(c.inner().0.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn memory_is_fixed_and_answers_stay_right() {
        let c = Cached::new(Counting(AtomicUsize::new(0)), 8);
        for i in 0..1_000 {
            let text = "x".repeat(i % 50);
            assert_eq!(c.estimate(0, &Prompt::Text(&text)), (i % 50) as u64);
        }
        assert_eq!(c.slots.len(), 8);
    }
}
