//! How often joins are tried: token buckets per remote address and for the whole endpoint, so a
//! flood of join attempts (each one a TLS handshake and a token lookup, and a CSR signature when
//! the token checks out) cannot take the coordinator's time from its members. Sans-IO: the
//! caller passes the clock.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// A bucket of `burst` tokens refilled at `per_second`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Debug, Clone, Copy)]
pub struct Rate {
    pub burst: f64,
    pub per_second: f64,
}

impl Bucket {
    fn full(rate: Rate, now: Instant) -> Self {
        Self {
            tokens: rate.burst,
            at: now,
        }
    }

    fn take(&mut self, rate: Rate, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.per_second).min(rate.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn is_full(&self, rate: Rate, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens + elapsed * rate.per_second >= rate.burst
    }
}

/// Join attempts allowed per address and in all.
#[derive(Debug)]
pub struct JoinLimit {
    per_address: Rate,
    overall: Rate,
    addresses: HashMap<IpAddr, Bucket>,
    all: Bucket,
}

/// Addresses remembered at most; full buckets are forgotten first.
const MAX_ADDRESSES: usize = 10_000;

impl JoinLimit {
    /// A fleet's boards may power on together behind one NAT: 20 at once per address, then two a
    /// second; 200 at once in all, then 50 a second.
    pub fn new(now: Instant) -> Self {
        Self::with_rates(
            Rate {
                burst: 20.0,
                per_second: 2.0,
            },
            Rate {
                burst: 200.0,
                per_second: 50.0,
            },
            now,
        )
    }

    pub fn with_rates(per_address: Rate, overall: Rate, now: Instant) -> Self {
        Self {
            per_address,
            overall,
            addresses: HashMap::new(),
            all: Bucket::full(overall, now),
        }
    }

    /// Whether a join attempt from `ip` may go ahead now.
    pub fn admit(&mut self, ip: IpAddr, now: Instant) -> bool {
        if self.addresses.len() >= MAX_ADDRESSES && !self.addresses.contains_key(&ip) {
            let rate = self.per_address;
            self.addresses.retain(|_, b| !b.is_full(rate, now));
            if self.addresses.len() >= MAX_ADDRESSES {
                // Still full of recent callers: a flood from many addresses; the overall bucket
                // decides alone.
                return self.all.take(self.overall, now);
            }
        }
        let rate = self.per_address;
        let bucket = self
            .addresses
            .entry(ip)
            .or_insert_with(|| Bucket::full(rate, now));
        bucket.take(rate, now) && self.all.take(self.overall, now)
    }

    /// How long until `ip` may try again (for the refusal's message).
    pub fn retry_after(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.per_address.per_second.max(0.001))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn a_burst_from_one_address_is_cut_and_refills_with_time() {
        let t0 = Instant::now();
        let mut limit = JoinLimit::new(t0);
        let admitted = (0..100).filter(|_| limit.admit(ip(1), t0)).count();
        assert_eq!(admitted, 20);
        // Another address is not held back by the first one's flood.
        assert!(limit.admit(ip(2), t0));
        // Two a second come back.
        let later = t0 + Duration::from_secs(5);
        let admitted = (0..100).filter(|_| limit.admit(ip(1), later)).count();
        assert_eq!(admitted, 10);
    }

    #[test]
    fn many_addresses_are_bounded_by_the_overall_rate_and_the_table_stays_bounded() {
        let t0 = Instant::now();
        let mut limit = JoinLimit::new(t0);
        let mut admitted = 0;
        for i in 0..30_000u32 {
            let ip = IpAddr::from(i.to_be_bytes());
            if limit.admit(ip, t0) {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 200);
        assert!(limit.addresses.len() <= MAX_ADDRESSES);
    }

    proptest::proptest! {
        #[test]
        fn never_more_than_the_burst_plus_the_refill(gaps in proptest::collection::vec(0u64..2_000, 1..300)) {
            let t0 = Instant::now();
            let mut limit = JoinLimit::new(t0);
            let mut now = t0;
            let mut admitted = 0u64;
            for gap in &gaps {
                now += Duration::from_millis(*gap);
                if limit.admit(ip(7), now) {
                    admitted += 1;
                }
            }
            let elapsed = now.duration_since(t0).as_secs_f64();
            proptest::prop_assert!(admitted as f64 <= 20.0 + elapsed * 2.0 + 1e-9);
        }
    }
}
