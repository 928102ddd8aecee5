//! Reconnect delays: exponential backoff with full jitter.
//!
//! Full jitter (a uniform delay between zero and the exponential ceiling) spreads out the
//! reconnects of many clients that lost the same server at the same moment, which a fixed or
//! "equal jitter" delay would keep in lockstep.

use std::time::Duration;

use rand::Rng;

/// How long to wait before reconnect attempt `n`: uniform in `[0, min(cap, base · 2ⁿ)]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The ceiling of the first attempt's delay.
    pub base: Duration,
    /// No delay is ever longer than this.
    pub cap: Duration,
}

impl Default for Backoff {
    /// 100 ms doubling up to 10 s.
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(10),
        }
    }
}

impl Backoff {
    /// The longest delay attempt `attempt` (0-based) may wait.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        // Past 2^31 the product saturates at the cap anyway; clamping the exponent keeps the
        // multiplication from overflowing.
        let factor = 1u32 << attempt.min(31);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// A random delay for attempt `attempt`, drawn from `rng`.
    pub fn delay<R: Rng + ?Sized>(&self, attempt: u32, rng: &mut R) -> Duration {
        let ceiling = self.ceiling(attempt);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rng.random_range(0..=nanos))
    }

    /// A random delay for attempt `attempt`, from the thread's generator.
    pub fn next_delay(&self, attempt: u32) -> Duration {
        self.delay(attempt, &mut rand::rng())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn ceiling_doubles_up_to_the_cap() {
        let b = Backoff::default();
        assert_eq!(b.ceiling(0), Duration::from_millis(100));
        assert_eq!(b.ceiling(1), Duration::from_millis(200));
        assert_eq!(b.ceiling(6), Duration::from_millis(6400));
        assert_eq!(b.ceiling(7), Duration::from_secs(10));
        assert_eq!(b.ceiling(40), Duration::from_secs(10));
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(10));
    }

    #[test]
    fn delays_stay_within_the_ceiling_and_are_spread() {
        let b = Backoff::default();
        let mut rng = StdRng::seed_from_u64(7);
        for attempt in 0..20 {
            let mut distinct = std::collections::HashSet::new();
            for _ in 0..50 {
                let d = b.delay(attempt, &mut rng);
                assert!(d <= b.ceiling(attempt), "{d:?} at attempt {attempt}");
                distinct.insert(d);
            }
            // Full jitter: not every client waits the same time.
            assert!(distinct.len() > 40);
        }
    }

    #[test]
    fn zero_base_never_waits() {
        let b = Backoff {
            base: Duration::ZERO,
            cap: Duration::from_secs(1),
        };
        assert_eq!(b.next_delay(5), Duration::ZERO);
    }
}
