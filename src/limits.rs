//! Per-client rate limits (governor), keyed by client IP and, for login, by
//! the email tried as well.

use std::hash::Hash;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::Config;
use crate::error::{AppError, AppResult};

pub struct Limiters {
    default: DefaultKeyedRateLimiter<String>,
    login_ip: DefaultKeyedRateLimiter<String>,
    login_email: DefaultKeyedRateLimiter<String>,
}

/// `limit` requests per `window`: a burst of `limit`, refilled evenly.
fn quota(limit: u32, window: Duration) -> Quota {
    let limit = NonZeroU32::new(limit).unwrap_or(NonZeroU32::MIN);
    let period = (window / limit.get()).max(Duration::from_nanos(1));
    Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(limit))
        .allow_burst(limit)
}

fn check<K: Clone + Hash + Eq>(limiter: &DefaultKeyedRateLimiter<K>, key: &K) -> AppResult<()> {
    limiter.check_key(key).map_err(|not_until| {
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        AppError::RateLimited {
            retry_after_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
        }
    })
}

impl Limiters {
    pub fn new(config: &Config) -> Self {
        Self {
            default: RateLimiter::keyed(quota(
                config.throttle_default_limit,
                config.throttle_default_ttl,
            )),
            login_ip: RateLimiter::keyed(quota(
                config.throttle_login_limit,
                config.throttle_login_ttl,
            )),
            login_email: RateLimiter::keyed(quota(
                config.throttle_login_limit,
                config.throttle_login_ttl,
            )),
        }
    }

    /// The budget every request spends.
    pub fn check_default(&self, ip: &str) -> AppResult<()> {
        check(&self.default, &ip.to_string())
    }

    /// Login attempts: per client IP and per email, whichever runs out first.
    pub fn check_login(&self, ip: Option<&str>, email: &str) -> AppResult<()> {
        if let Some(ip) = ip {
            check(&self.login_ip, &ip.to_string())?;
        }
        check(&self.login_email, &email.to_string())
    }

    /// Forgets keys that are back to a full budget; called periodically.
    pub fn retain_recent(&self) {
        self.default.retain_recent();
        self.login_ip.retain_recent();
        self.login_email.retain_recent();
    }
}
