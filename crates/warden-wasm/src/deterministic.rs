//! `--deterministic`: a fixed wall clock, a monotonic clock that advances
//! by a fixed step per reading, and random bytes from a fixed seed, so
//! that the same module with the same input writes the same output.
//! Not for secrets: the "secure" random source is deterministic too.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use wasmtime_wasi::{HostMonotonicClock, HostWallClock};

/// What the wall clock always reads: 2000-01-01T00:00:00Z.
pub const FIXED_WALL_CLOCK: Duration = Duration::from_secs(946_684_800);
/// How far the monotonic clock moves per reading, in nanoseconds.
pub const MONOTONIC_STEP_NS: u64 = 1_000;
/// Seed of the random stream.
pub const SEED: u64 = 0x5741_5244_454e_0001;
/// Length of the random byte cycle (the stream repeats after this).
const RANDOM_CYCLE: usize = 1 << 16;

pub(crate) struct FixedWallClock;

impl HostWallClock for FixedWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }

    fn now(&self) -> Duration {
        FIXED_WALL_CLOCK
    }
}

#[derive(Default)]
pub(crate) struct SteppingClock {
    ticks: AtomicU64,
}

impl HostMonotonicClock for SteppingClock {
    fn resolution(&self) -> u64 {
        MONOTONIC_STEP_NS
    }

    fn now(&self) -> u64 {
        self.ticks.fetch_add(1, Ordering::Relaxed) * MONOTONIC_STEP_NS
    }
}

/// `RANDOM_CYCLE` bytes of splitmix64 output from `seed`.
pub(crate) fn random_bytes(seed: u64) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(RANDOM_CYCLE);
    while out.len() < RANDOM_CYCLE {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        out.extend_from_slice(&z.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_bytes_are_reproducible_and_not_constant() {
        let a = random_bytes(SEED);
        assert_eq!(a, random_bytes(SEED));
        assert_ne!(a, random_bytes(SEED + 1));
        assert_eq!(a.len(), RANDOM_CYCLE);
        assert!(a.windows(8).take(64).any(|w| w != &a[..8]));
    }

    #[test]
    fn monotonic_clock_steps() {
        let c = SteppingClock::default();
        assert_eq!(c.now(), 0);
        assert_eq!(c.now(), MONOTONIC_STEP_NS);
    }
}
