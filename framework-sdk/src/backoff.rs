//! Exponential reconnection backoff with jitter.
//!
//! Jitter keeps a fleet of frameworks that lost the same master from reconnecting in
//! lockstep. Its randomness comes from std's per-instance `RandomState` keys, which
//! is plenty for spreading retries and spares a dependency on a random-number crate.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// Delays that double from `min` to `max`, each drawn uniformly from its upper half.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    /// Smallest ceiling; invariant: `0 < min <= max`.
    min: Duration,
    /// Largest ceiling.
    max: Duration,
    /// Ceiling of the next delay; invariant: `min <= ceiling <= max`.
    ceiling: Duration,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        let max = max.max(min);
        Backoff {
            min,
            max,
            ceiling: min,
        }
    }

    /// The next delay, in `[ceiling / 2, ceiling]`; then doubles the ceiling.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling;
        self.ceiling = ceiling.saturating_mul(2).min(self.max);
        let half = ceiling / 2;
        let spread = u64::try_from((ceiling - half).as_nanos()).unwrap_or(u64::MAX);
        let jitter = if spread == 0 {
            0
        } else {
            random_u64() % spread
        };
        half + Duration::from_nanos(jitter)
    }

    /// Back to the smallest delay, after a connection that worked.
    pub(crate) fn reset(&mut self) {
        self.ceiling = self.min;
    }
}

fn random_u64() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(0);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_reset() {
        let min = Duration::from_millis(100);
        let max = Duration::from_millis(800);
        let mut backoff = Backoff::new(min, max);
        let ceilings = [100, 200, 400, 800, 800, 800];
        for ceiling in ceilings {
            let ceiling = Duration::from_millis(ceiling);
            let delay = backoff.next_delay();
            assert!(
                delay >= ceiling / 2 && delay <= ceiling,
                "{delay:?} not within the upper half of {ceiling:?}"
            );
        }
        backoff.reset();
        assert!(backoff.next_delay() <= min);
    }
}
