//! Per-client request rate limiting: a token bucket per peer address, in a bounded table.
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// A LAN has few terminals; past this many tracked addresses, idle ones are forgotten.
const MAX_CLIENTS: usize = 4096;

pub struct Limiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl Limiter {
    pub fn new(per_second: u32, burst: u32) -> Self {
        Limiter {
            per_second: f64::from(per_second),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `ip`; when none is left, returns the seconds to wait.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), u64> {
        if self.per_second <= 0.0 {
            return Ok(());
        }
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_CLIENTS && !map.contains_key(&ip) {
            let (rate, burst) = (self.per_second, self.burst);
            map.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * rate < burst
            });
            if map.len() >= MAX_CLIENTS {
                // Thousands of busy addresses on a LAN is itself an attack; memory stays bounded.
                map.clear();
            }
        }
        let (tokens, at) = map.entry(ip).or_insert((self.burst, now));
        *tokens =
            (*tokens + now.duration_since(*at).as_secs_f64() * self.per_second).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / self.per_second).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bursts_then_refills_per_client() {
        let l = Limiter::new(2, 3);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let t = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.check(a, t), Ok(()));
        }
        assert_eq!(l.check(a, t), Err(1));
        assert_eq!(l.check(b, t), Ok(()), "another client is not affected");
        assert_eq!(l.check(a, t + Duration::from_millis(600)), Ok(()));
        assert!(Limiter::new(0, 1).check(a, t).is_ok());
    }

    #[test]
    fn table_stays_bounded() {
        let l = Limiter::new(1, 1);
        let t = Instant::now() + Duration::from_secs(10);
        for i in 0..10_000u32 {
            let _ = l.check(IpAddr::from(i.to_be_bytes()), t);
        }
        assert!(l.buckets.lock().unwrap().len() <= MAX_CLIENTS);
    }
}
