//! Clocks: where an engine that runs by itself takes `now` from.
//!
//! The engine's core calls take `now` as an argument and never read a clock. The calls that
//! act on their own (a permit dropped unsettled, a waiter in the fair queue) ask the
//! engine's [`Clock`]: the [`SystemClock`] in a service, a [`ManualClock`] in tests and
//! virtual time.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::time::Timestamp;

/// A source of the current time.
pub trait Clock: Send + Sync {
    /// The current instant.
    fn now(&self) -> Timestamp;

    /// How a waiter sleeps until an instant of this clock.
    fn timer(&self) -> Timer<'_> {
        Timer::Real { scale: 1.0 }
    }
}

/// How to wait for an instant of a [`Clock`].
#[derive(Clone, Copy, Debug)]
pub enum Timer<'a> {
    /// The clock runs with real time, `scale` times as fast: sleep on a real timer.
    Real {
        /// Clock milliseconds per real millisecond.
        scale: f64,
    },
    /// The clock moves only when told: its sleepers wake when it is advanced.
    Manual(&'a ManualClock),
}

/// The system's wall clock (UTC milliseconds since the Unix epoch).
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        Timestamp(since.as_millis() as u64)
    }
}

/// A clock that moves only when told: for tests and virtual time.
///
/// ```
/// use keysim_engine::{Clock, ManualClock, Timestamp};
/// let clock = ManualClock::new(Timestamp(1_000));
/// clock.advance(500);
/// assert_eq!(clock.now(), Timestamp(1_500));
/// ```
#[derive(Debug, Default)]
pub struct ManualClock {
    now: AtomicU64,
    sleepers: Mutex<Vec<(u64, Waker)>>,
}

impl ManualClock {
    /// A clock standing at `t`.
    pub fn new(t: Timestamp) -> Self {
        Self { now: AtomicU64::new(t.0), sleepers: Mutex::new(Vec::new()) }
    }

    /// Moves the clock to `t` (never backwards) and wakes whoever sleeps until then.
    pub fn set(&self, t: Timestamp) {
        let now = self.now.fetch_max(t.0, Ordering::SeqCst).max(t.0);
        let due: Vec<Waker> = {
            let mut sleepers = self.sleepers.lock().unwrap_or_else(|p| p.into_inner());
            let (due, rest): (Vec<_>, Vec<_>) = sleepers.drain(..).partition(|(at, _)| *at <= now);
            *sleepers = rest;
            due.into_iter().map(|(_, w)| w).collect()
        };
        due.into_iter().for_each(Waker::wake);
    }

    /// Moves the clock `ms` milliseconds on.
    pub fn advance(&self, ms: u64) {
        self.set(self.now().plus(ms));
    }

    /// A future that completes once the clock reaches `t`.
    pub fn sleep_until(&self, t: Timestamp) -> ManualSleep<'_> {
        ManualSleep { clock: self, at: t.0 }
    }

    /// How many sleepers wait for the clock.
    pub fn sleepers(&self) -> usize {
        self.sleepers.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.now.load(Ordering::SeqCst))
    }

    fn timer(&self) -> Timer<'_> {
        Timer::Manual(self)
    }
}

/// What [`ManualClock::sleep_until`] returns.
#[derive(Debug)]
pub struct ManualSleep<'a> {
    clock: &'a ManualClock,
    at: u64,
}

impl Future for ManualSleep<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.clock.now().0 >= self.at {
            return Poll::Ready(());
        }
        let mut sleepers = self.clock.sleepers.lock().unwrap_or_else(|p| p.into_inner());
        // Checked again under the lock: `set` moves the clock before it takes the lock.
        if self.clock.now().0 >= self.at {
            return Poll::Ready(());
        }
        sleepers.retain(|(_, w)| !w.will_wake(cx.waker()));
        sleepers.push((self.at, cx.waker().clone()));
        Poll::Pending
    }
}
