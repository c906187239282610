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
        Timer::Real { scale: 1.0, lag: std::time::Duration::ZERO }
    }
}

/// How to wait for an instant of a [`Clock`].
#[derive(Clone, Copy, Debug)]
pub enum Timer<'a> {
    /// The clock runs with real time, `scale` times as fast: sleep on a real timer.
    Real {
        /// Clock milliseconds per real millisecond.
        scale: f64,
        /// Real time to sleep beyond the instant: when the provider counts a request a
        /// little after the engine does (the request's trip), waking this much after a slot
        /// frees keeps a waiter from reaching the provider before the request it replaces
        /// has left the provider's window.
        lag: std::time::Duration,
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
/// use keysim_engine::clock::{Clock, ManualClock};
/// use keysim_engine::Timestamp;
/// let clock = ManualClock::new(Timestamp(1_000));
/// clock.advance(500);
/// assert_eq!(clock.now(), Timestamp(1_500));
/// ```
#[derive(Debug, Default)]
pub struct ManualClock {
    now: AtomicU64,
    /// Sleepers by id: the instant each waits for and its waker.
    sleepers: Mutex<Vec<(u64, u64, Waker)>>,
    next_sleeper: AtomicU64,
}

impl ManualClock {
    /// A clock standing at `t`.
    pub fn new(t: Timestamp) -> Self {
        Self { now: AtomicU64::new(t.0), sleepers: Mutex::new(Vec::new()), next_sleeper: AtomicU64::new(0) }
    }

    /// Moves the clock to `t` (never backwards) and wakes whoever sleeps until then.
    pub fn set(&self, t: Timestamp) {
        let now = self.now.fetch_max(t.0, Ordering::SeqCst).max(t.0);
        let due: Vec<Waker> = {
            let mut sleepers = self.sleepers.lock().unwrap_or_else(|p| p.into_inner());
            let (due, rest): (Vec<_>, Vec<_>) = sleepers.drain(..).partition(|(_, at, _)| *at <= now);
            *sleepers = rest;
            due.into_iter().map(|(_, _, w)| w).collect()
        };
        due.into_iter().for_each(Waker::wake);
    }

    /// Moves the clock `ms` milliseconds on.
    pub fn advance(&self, ms: u64) {
        self.set(self.now().plus(ms));
    }

    /// A future that completes once the clock reaches `t`.
    pub fn sleep_until(&self, t: Timestamp) -> ManualSleep<'_> {
        ManualSleep { clock: self, at: t.0, id: self.next_sleeper.fetch_add(1, Ordering::Relaxed) }
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
    id: u64,
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
        match sleepers.iter_mut().find(|(id, _, _)| *id == self.id) {
            Some(s) => s.2 = cx.waker().clone(),
            None => sleepers.push((self.id, self.at, cx.waker().clone())),
        }
        Poll::Pending
    }
}

impl Drop for ManualSleep<'_> {
    fn drop(&mut self) {
        // A sleep given up leaves no waker behind.
        self.clock.sleepers.lock().unwrap_or_else(|p| p.into_inner()).retain(|(id, _, _)| *id != self.id);
    }
}

/// Wall-clock time in Unix milliseconds, optionally running `scale` times faster than real
/// time from the moment it was made (lab runs in step with a fake on the same scale), letting
/// queued requests go `lag` after their slot frees.
#[derive(Clone, Copy, Debug)]
pub struct ScaledClock {
    origin: std::time::Instant,
    origin_ms: u64,
    scale: f64,
    lag: std::time::Duration,
}

/// Real time a queued request waits beyond the instant its slot frees when requests travel
/// over a network: more than the scheduling jitter between two requests' trips on loopback
/// or a LAN, so that one sent exactly at a window's edge cannot reach the provider before
/// the request it replaces has left the provider's window.
pub const EDGE_GUARD: std::time::Duration = std::time::Duration::from_millis(25);

impl ScaledClock {
    /// Real time, sped up `scale` times (1 for real time; anything not positive and finite
    /// counts as 1), with no lag.
    pub fn new(scale: f64) -> Self {
        let origin_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        Self::starting_at(origin_ms, scale)
    }

    /// A clock that reads `origin_ms` now and runs `scale` times faster than real time.
    pub fn starting_at(origin_ms: u64, scale: f64) -> Self {
        let scale = if scale.is_finite() && scale > 0.0 { scale } else { 1.0 };
        Self { origin: std::time::Instant::now(), origin_ms, scale, lag: std::time::Duration::ZERO }
    }

    /// The same clock, letting queued requests go `lag` (real time) after their slot frees.
    pub fn with_lag(self, lag: std::time::Duration) -> Self {
        Self { lag, ..self }
    }

    /// Now, in Unix milliseconds on this clock.
    pub fn now_ms(&self) -> u64 {
        self.origin_ms + (self.origin.elapsed().as_secs_f64() * 1000.0 * self.scale) as u64
    }

    /// How long `ms` of this clock's time takes in real time.
    pub fn real(&self, ms: u64) -> std::time::Duration {
        std::time::Duration::from_secs_f64(ms as f64 / 1000.0 / self.scale)
    }

    /// How much faster than real time it runs.
    pub fn scale(&self) -> f64 {
        self.scale
    }
}

impl Clock for ScaledClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.now_ms())
    }

    fn timer(&self) -> Timer<'_> {
        Timer::Real { scale: self.scale, lag: self.lag }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    #[test]
    fn every_sleep_of_one_task_wakes_and_dropped_ones_leave_nothing() {
        let clock = ManualClock::new(Timestamp(0));
        let mut cx = Context::from_waker(Waker::noop());
        let mut a = std::pin::pin!(clock.sleep_until(Timestamp(10)));
        let mut b = std::pin::pin!(clock.sleep_until(Timestamp(20)));
        assert!(a.as_mut().poll(&mut cx).is_pending() && b.as_mut().poll(&mut cx).is_pending());
        assert_eq!(clock.sleepers(), 2, "the same task's two sleeps are both kept");
        clock.advance(10);
        assert!(a.as_mut().poll(&mut cx).is_ready() && b.as_mut().poll(&mut cx).is_pending());
        {
            let mut c = std::pin::pin!(clock.sleep_until(Timestamp(30)));
            assert!(c.as_mut().poll(&mut cx).is_pending());
        }
        clock.advance(10);
        assert!(b.as_mut().poll(&mut cx).is_ready());
        assert_eq!(clock.sleepers(), 0, "a dropped sleep leaves no waker behind");
    }
}
