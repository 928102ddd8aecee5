//! Rate limits, each keyed by what it protects: sends and typing per user, logins per IP.

use std::net::IpAddr;
use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use natter_core::Error;
use natter_proto::UserId;

use crate::config::Limits;

/// The node's rate limiters.
pub struct Limiters {
    sends: DefaultKeyedRateLimiter<UserId>,
    typing: DefaultKeyedRateLimiter<UserId>,
    logins: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
}

fn nonzero(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

impl Limiters {
    pub fn new(limits: &Limits) -> Limiters {
        let sends = Quota::per_second(nonzero(limits.sends_per_second))
            .allow_burst(nonzero(limits.sends_per_second.saturating_mul(2)));
        let typing = Quota::per_second(nonzero(limits.typing_per_second))
            .allow_burst(nonzero(limits.typing_per_second.saturating_mul(2)));
        let logins = Quota::per_minute(nonzero(limits.login_attempts_per_minute));
        Limiters {
            sends: DefaultKeyedRateLimiter::keyed(sends),
            typing: DefaultKeyedRateLimiter::keyed(typing),
            logins: DefaultKeyedRateLimiter::keyed(logins),
            clock: DefaultClock::default(),
        }
    }

    fn check<K: std::hash::Hash + Eq + Clone>(
        &self,
        limiter: &DefaultKeyedRateLimiter<K>,
        key: &K,
    ) -> Result<(), Error> {
        limiter.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            Error::rate_limited(wait.as_millis().max(1) as u64)
        })
    }

    pub fn send(&self, user: UserId) -> Result<(), Error> {
        self.check(&self.sends, &user)
    }

    pub fn typing(&self, user: UserId) -> Result<(), Error> {
        self.check(&self.typing, &user)
    }

    pub fn login(&self, ip: IpAddr) -> Result<(), Error> {
        self.check(&self.logins, &ip)
    }

    /// Forget keys that are back to a full budget, so that the maps stay bounded.
    pub fn forget_idle(&self) {
        self.sends.retain_recent();
        self.typing.retain_recent();
        self.logins.retain_recent();
        self.sends.shrink_to_fit();
        self.typing.shrink_to_fit();
        self.logins.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_sends_is_refused_with_a_retry_time() {
        let limits = Limits {
            sends_per_second: 5,
            ..Limits::default()
        };
        let limiters = Limiters::new(&limits);
        let refused = (0..50).filter(|_| limiters.send(1).is_err()).count();
        assert!(refused >= 35, "only {refused} refused");
        let error = limiters.send(1).unwrap_err();
        assert_eq!(error.code, natter_proto::ErrorCode::RateLimited);
        assert!(error.retry_after_ms.is_some());
        // Another user has a budget of their own.
        assert!(limiters.send(2).is_ok());
    }
}
