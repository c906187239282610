//! The event queue: ordered by (time, sequence), so events at the same instant keep the order
//! they were scheduled in.
//!
//! A timing wheel of one-millisecond slots covers the next [`WHEEL_MS`] milliseconds, where
//! nearly every event of a run falls (completions, arrivals, retries); later events wait in a
//! binary heap and move into the wheel, in order, as it turns to reach them. Pushing and
//! popping cost O(1) for wheel events, against O(log n) sift-downs of a heap.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Milliseconds the wheel covers (a power of two).
pub const WHEEL_MS: u64 = 1 << 12;
const MASK: u64 = WHEEL_MS - 1;

/// An event far in the future.
#[derive(Debug)]
struct Far<E> {
    at: u64,
    seq: u64,
    event: E,
}

impl<E> PartialEq for Far<E> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl<E> Eq for Far<E> {}
impl<E> PartialOrd for Far<E> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<E> Ord for Far<E> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// A priority queue of events in virtual time. Events may not be scheduled before the time
/// of the last event popped (time never runs backwards).
#[derive(Debug)]
pub struct EventQueue<E> {
    slots: Vec<Vec<E>>,
    /// The time of the slot being popped; every earlier event has been popped.
    cursor: u64,
    /// Events of the current slot already popped.
    head: usize,
    /// Events in the wheel.
    near: usize,
    /// One bit per slot: whether it holds events.
    occupied: Vec<u64>,
    far: BinaryHeap<Reverse<Far<E>>>,
    seq: u64,
    started: bool,
}

impl<E: Copy> Default for EventQueue<E> {
    fn default() -> Self {
        Self {
            slots: (0..WHEEL_MS).map(|_| Vec::new()).collect(),
            cursor: 0,
            head: 0,
            near: 0,
            occupied: vec![0; (WHEEL_MS / 64) as usize],
            far: BinaryHeap::new(),
            seq: 0,
            started: false,
        }
    }
}

impl<E: Copy> EventQueue<E> {
    /// Schedules `event` at `at` (clamped to the current time if earlier).
    pub fn push(&mut self, at: u64, event: E) {
        if !self.started {
            // Before the first pop the wheel may still move back to the earliest event.
            self.far.push(Reverse(Far { at, seq: self.seq, event }));
            self.seq += 1;
            return;
        }
        let at = at.max(self.cursor);
        if at < self.cursor + WHEEL_MS {
            self.put(at, event);
        } else {
            self.far.push(Reverse(Far { at, seq: self.seq, event }));
            self.seq += 1;
        }
    }

    /// Moves far events that the wheel now covers into their slots, in (time, seq) order.
    fn migrate(&mut self) {
        while let Some(Reverse(f)) = self.far.peek() {
            if f.at >= self.cursor + WHEEL_MS {
                break;
            }
            let Reverse(f) = self.far.pop().expect("peeked");
            self.put(f.at, f.event);
        }
    }

    fn put(&mut self, at: u64, event: E) {
        let i = (at & MASK) as usize;
        self.slots[i].push(event);
        self.occupied[i / 64] |= 1 << (i % 64);
        self.near += 1;
    }

    /// The time of the first occupied slot after the cursor's (there is one: `near > 0`).
    fn next_occupied(&self) -> u64 {
        let start = ((self.cursor + 1) & MASK) as usize;
        let words = self.occupied.len();
        let first = self.occupied[start / 64] & (!0u64 << (start % 64));
        let (mut w, mut bits) = (start / 64, first);
        for _ in 0..=words {
            if bits != 0 {
                let i = (w * 64 + bits.trailing_zeros() as usize) as u64;
                return self.cursor + ((i.wrapping_sub(self.cursor) & MASK).max(1));
            }
            w = (w + 1) % words;
            bits = self.occupied[w];
        }
        unreachable!("near > 0 means some slot is occupied")
    }

    /// The earliest event, first-scheduled first among equals.
    pub fn pop(&mut self) -> Option<(u64, E)> {
        self.pop_until(u64::MAX)
    }

    /// The earliest event if it is due at or before `limit`; otherwise nothing, and the queue
    /// stays where it is, so that the caller may handle something else due before the next
    /// event and schedule more.
    pub fn pop_until(&mut self, limit: u64) -> Option<(u64, E)> {
        if !self.started {
            if self.far.peek()?.0.at > limit {
                return None;
            }
            self.started = true;
            self.cursor = self.far.peek()?.0.at;
            self.migrate();
        }
        loop {
            let slot = &mut self.slots[(self.cursor & MASK) as usize];
            if self.head < slot.len() {
                let e = slot[self.head];
                self.head += 1;
                self.near -= 1;
                return Some((self.cursor, e));
            }
            let far = self.far.peek().map(|f| f.0.at);
            let next = match (self.near, far) {
                (0, None) => return None,
                (0, Some(f)) => f,
                (_, None) => self.next_occupied(),
                (_, Some(f)) => self.next_occupied().min(f),
            };
            if next > limit {
                return None;
            }
            let slot = &mut self.slots[(self.cursor & MASK) as usize];
            slot.clear();
            let i = (self.cursor & MASK) as usize;
            self.occupied[i / 64] &= !(1 << (i % 64));
            self.head = 0;
            self.cursor = next;
            self.migrate();
        }
    }

    /// Number of pending events.
    pub fn len(&self) -> usize {
        self.near + self.far.len()
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_times_stay_fifo() {
        let mut q = EventQueue::default();
        q.push(5, 'a');
        q.push(1, 'b');
        q.push(5, 'c');
        q.push(1, 'd');
        let order: Vec<char> = std::iter::from_fn(|| q.pop().map(|(_, e)| e)).collect();
        assert_eq!(order, vec!['b', 'd', 'a', 'c']);
    }

    #[test]
    fn pop_until_leaves_later_events_in_place() {
        let mut q = EventQueue::default();
        q.push(10, 'a');
        q.push(30, 'b');
        assert_eq!(q.pop_until(5), None);
        assert_eq!(q.pop_until(10), Some((10, 'a')));
        assert_eq!(q.pop_until(29), None);
        q.push(20, 'c');
        assert_eq!(q.pop_until(u64::MAX), Some((20, 'c')));
        assert_eq!(q.pop(), Some((30, 'b')));
        assert_eq!(q.pop(), None);
    }

    #[test]
    fn matches_a_sorted_reference_across_the_wheel_edge() {
        // Far events scheduled early and near events scheduled later at the same instant must
        // still come out in scheduling order.
        let mut q = EventQueue::default();
        let mut reference: Vec<(u64, u64)> = Vec::new();
        let mut seq = 0u64;
        let mut x = 12345u64;
        let mut rand = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..50 {
            let at = rand() % (3 * WHEEL_MS);
            q.push(at, seq);
            reference.push((at, seq));
            seq += 1;
        }
        let mut out = Vec::new();
        while let Some((now, e)) = q.pop() {
            out.push((now, e));
            if seq < 2_000 {
                for _ in 0..(rand() % 3) {
                    let at = now + rand() % (2 * WHEEL_MS);
                    q.push(at, seq);
                    reference.push((at, seq));
                    seq += 1;
                }
            }
        }
        reference.sort();
        assert_eq!(out, reference);
        assert!(q.is_empty());
    }
}
