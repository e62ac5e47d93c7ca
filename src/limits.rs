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
    alerts: DefaultKeyedRateLimiter<String>,
    probes: DefaultKeyedRateLimiter<String>,
}

/// `limit` requests per `window`: a burst of `limit`, refilled evenly.
fn quota(limit: u32, window: Duration) -> Quota {
    let limit = NonZeroU32::new(limit).unwrap_or(NonZeroU32::MIN);
    let period = (window / limit.get()).max(Duration::from_nanos(1));
    Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(limit))
        .allow_burst(limit)
}

fn check<K: Clone + Hash + Eq>(
    limiter: &DefaultKeyedRateLimiter<K>,
    key: &K,
    name: &'static str,
) -> AppResult<()> {
    limiter.check_key(key).map_err(|not_until| {
        crate::metrics::rate_limited(name);
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
            alerts: RateLimiter::keyed(quota(
                config.throttle_alerts_limit,
                config.throttle_alerts_ttl,
            )),
            probes: RateLimiter::keyed(quota(
                config.throttle_probe_limit,
                config.throttle_probe_ttl,
            )),
        }
    }

    /// The budget every request spends.
    pub fn check_default(&self, ip: &str) -> AppResult<()> {
        check(&self.default, &ip.to_string(), "default")
    }

    /// Login attempts: per client IP and per email, whichever runs out first.
    pub fn check_login(&self, ip: Option<&str>, email: &str) -> AppResult<()> {
        if let Some(ip) = ip {
            check(&self.login_ip, &ip.to_string(), "login")?;
        }
        check(&self.login_email, &email.to_string(), "login")
    }

    /// Health probes and metrics scrapes, per client IP: a budget apart
    /// from the API's.
    pub fn check_probe(&self, ip: &str) -> AppResult<()> {
        check(&self.probes, &ip.to_string(), "probe")
    }

    /// Test alerts, per client IP.
    pub fn check_alerts(&self, ip: &str) -> AppResult<()> {
        check(&self.alerts, &ip.to_string(), "alerts")
    }

    /// Forgets keys that are back to a full budget; called periodically.
    pub fn retain_recent(&self) {
        self.alerts.retain_recent();
        self.probes.retain_recent();
        self.default.retain_recent();
        self.login_ip.retain_recent();
        self.login_email.retain_recent();
    }
}

/// Open connections per key (client IP), bounded.
pub struct ConnectionCounter {
    max: usize,
    open: std::sync::Mutex<std::collections::HashMap<String, usize>>,
}

impl ConnectionCounter {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            open: Default::default(),
        }
    }

    /// Counts a new connection for `key`, or refuses it when `key` already
    /// has the maximum open; the slot is freed when the guard drops.
    pub fn acquire(self: &std::sync::Arc<Self>, key: &str) -> AppResult<ConnectionSlot> {
        let mut open = self
            .open
            .lock()
            .map_err(|_| AppError::internal(anyhow::anyhow!("connection counter poisoned")))?;
        let n = open.entry(key.to_string()).or_insert(0);
        if *n >= self.max {
            return Err(AppError::LimitExceeded(format!(
                "too many open WebSocket connections from this address (at most {})",
                self.max
            )));
        }
        *n += 1;
        crate::metrics::websocket_connections(1.0);
        Ok(ConnectionSlot {
            counter: std::sync::Arc::clone(self),
            key: key.to_string(),
        })
    }
}

pub struct ConnectionSlot {
    counter: std::sync::Arc<ConnectionCounter>,
    key: String,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        crate::metrics::websocket_connections(-1.0);
        if let Ok(mut open) = self.counter.open.lock()
            && let Some(n) = open.get_mut(&self.key)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}
