//! A cheap real-clock stopwatch for the engine's decision time.
//!
//! Reading the OS clock twice costs about as much as an admission (70 ns in a VM), which
//! would both slow runs down and inflate the figure it measures. On x86-64 with an invariant
//! time-stamp counter the stopwatch reads the TSC (about 12 ns) and converts ticks to
//! nanoseconds with a rate calibrated once against the OS clock; elsewhere it falls back to
//! [`std::time::Instant`].

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A started measurement.
#[derive(Clone, Copy, Debug)]
pub enum Mark {
    /// A TSC reading.
    Tsc(u64),
    /// An OS clock reading.
    Os(Instant),
}

/// Nanoseconds per TSC tick, or `None` where the TSC is not usable.
fn tsc_rate() -> Option<f64> {
    static RATE: OnceLock<Option<f64>> = OnceLock::new();
    *RATE.get_or_init(calibrate)
}

#[cfg(target_arch = "x86_64")]
fn read_tsc() -> u64 {
    // SAFETY: RDTSC is available on every x86-64 processor and has no preconditions.
    unsafe { core::arch::x86_64::_rdtsc() }
}

#[cfg(not(target_arch = "x86_64"))]
fn read_tsc() -> u64 {
    0
}

#[cfg(target_arch = "x86_64")]
fn calibrate() -> Option<f64> {
    // CPUID 0x8000_0007 EDX bit 8: the TSC runs at a constant rate in every power state.
    #[allow(unused_unsafe)]
    // SAFETY: CPUID is available on every x86-64 processor.
    let max_ext = unsafe { core::arch::x86_64::__cpuid(0x8000_0000) }.eax;
    if max_ext < 0x8000_0007 {
        return None;
    }
    #[allow(unused_unsafe)]
    // SAFETY: as above; the leaf exists (checked against the highest extended leaf).
    let invariant = unsafe { core::arch::x86_64::__cpuid(0x8000_0007) }.edx & (1 << 8) != 0;
    if !invariant {
        return None;
    }
    let (t0, c0) = (Instant::now(), read_tsc());
    while t0.elapsed() < Duration::from_millis(5) {
        std::hint::spin_loop();
    }
    let (ns, ticks) = (t0.elapsed().as_nanos() as f64, read_tsc().wrapping_sub(c0) as f64);
    (ticks > 0.0).then_some(ns / ticks)
}

#[cfg(not(target_arch = "x86_64"))]
fn calibrate() -> Option<f64> {
    None
}

/// Starts a measurement.
#[inline]
pub fn start() -> Mark {
    match tsc_rate() {
        Some(_) => Mark::Tsc(read_tsc()),
        None => Mark::Os(Instant::now()),
    }
}

/// Nanoseconds since `mark`, at least 1.
#[inline]
pub fn elapsed_ns(mark: Mark) -> u64 {
    let ns = match (mark, tsc_rate()) {
        (Mark::Tsc(c0), Some(rate)) => (read_tsc().wrapping_sub(c0) as f64 * rate) as u64,
        (Mark::Os(t0), _) => t0.elapsed().as_nanos() as u64,
        (Mark::Tsc(_), None) => 0,
    };
    ns.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_a_known_wait() {
        let m = start();
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_millis(20) {
            std::hint::spin_loop();
        }
        let ns = elapsed_ns(m);
        assert!((15_000_000..200_000_000).contains(&ns), "{ns} ns for a 20 ms wait");
    }
}
