//! A one-way pipe of batches between two threads of a run. Items travel in batches (one
//! channel operation per batch, not per item), the channel holds a few batches at most (the
//! sender waits when the receiver falls behind, so memory stays bounded), and emptied batch
//! buffers travel back to be filled again, so a run allocates them once.

use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};

/// Batches in flight at most.
const DEPTH: usize = 4;

/// Items per batch: enough that a channel operation is rare, few enough that the buffers
/// (at most `DEPTH + 2` per pipe) stay small — their memory is the run's largest fixed cost.
pub(crate) const BATCH: usize = 512;

/// The sending end.
pub(crate) struct BatchSender<T> {
    tx: SyncSender<Vec<T>>,
    back: Receiver<Vec<T>>,
    batch: Vec<T>,
    size: usize,
    /// Buffers made so far; at most `DEPTH + 2` ever exist (one filling, `DEPTH` queued, one
    /// being read), so a pipe's memory does not depend on timing.
    buffers: usize,
}

/// The receiving end.
pub(crate) struct BatchReceiver<T> {
    rx: Receiver<Vec<T>>,
    back: Sender<Vec<T>>,
    /// The current batch, reversed, so that `pop` yields items in the order they were sent.
    current: Vec<T>,
}

/// A pipe carrying batches of `size` items.
pub(crate) fn pipe<T>(size: usize) -> (BatchSender<T>, BatchReceiver<T>) {
    let (tx, rx) = sync_channel(DEPTH);
    let (back_tx, back_rx) = channel();
    (
        BatchSender { tx, back: back_rx, batch: Vec::with_capacity(size), size, buffers: 1 },
        BatchReceiver { rx, back: back_tx, current: Vec::new() },
    )
}

impl<T> BatchSender<T> {
    /// Sends `item`; returns false once the receiver is gone.
    pub(crate) fn push(&mut self, item: T) -> bool {
        self.batch.push(item);
        self.batch.len() < self.size || self.flush()
    }

    /// Sends what is batched; returns false once the receiver is gone.
    pub(crate) fn flush(&mut self) -> bool {
        if self.batch.is_empty() {
            return true;
        }
        let full = std::mem::take(&mut self.batch);
        if self.tx.send(full).is_err() {
            return false;
        }
        self.batch = match self.back.try_recv() {
            Ok(empty) => empty,
            Err(_) if self.buffers < DEPTH + 2 => {
                self.buffers += 1;
                Vec::with_capacity(self.size)
            }
            // Every buffer is in flight: wait for the receiver to hand one back.
            Err(_) => match self.back.recv() {
                Ok(empty) => empty,
                Err(_) => return false,
            },
        };
        true
    }
}

impl<T> Drop for BatchSender<T> {
    fn drop(&mut self) {
        self.flush();
    }
}

impl<T> BatchReceiver<T> {
    /// The next item, waiting for the sender; `None` when the sender is gone and all is read.
    pub(crate) fn next(&mut self) -> Option<T> {
        if let Some(item) = self.current.pop() {
            return Some(item);
        }
        let done = std::mem::take(&mut self.current);
        if done.capacity() > 0 {
            // The sender may be gone already; then the buffer is simply dropped.
            let _ = self.back.send(done);
        }
        let mut batch = self.rx.recv().ok()?;
        batch.reverse();
        self.current = batch;
        self.current.pop()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_arrive_in_order_across_threads_and_buffers_are_reused() {
        let (mut tx, mut rx) = pipe::<u64>(7);
        let t = std::thread::spawn(move || {
            for i in 0..1_000 {
                assert!(tx.push(i));
            }
        });
        let got: Vec<u64> = std::iter::from_fn(|| rx.next()).collect();
        t.join().unwrap();
        assert_eq!(got, (0..1_000).collect::<Vec<_>>());
    }

    #[test]
    fn a_sender_notices_the_receiver_is_gone() {
        let (mut tx, rx) = pipe::<u8>(1);
        drop(rx);
        assert!(!tx.push(1));
    }
}
