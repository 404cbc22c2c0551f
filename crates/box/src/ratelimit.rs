//! Per-terminal request rate limiting: a token bucket per terminal (an IPv4 address, the MAC behind
//! an IPv6 address), in a bounded table that forgets the least recently seen terminal first. An
//! IPv6 host rotating addresses is one terminal, and can only push out itself or idle entries,
//! never reset everyone's buckets.
use boxapi_core::fair::Terminal;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Instant;

/// A LAN has a few dozen terminals; this bounds the table whatever arrives.
const MAX_TERMINALS: usize = 4096;

struct Bucket {
    tokens: f64,
    at: Instant,
    /// Position in `Table::order` (last use).
    seq: u64,
}

struct Table {
    per_second: f64,
    burst: f64,
    buckets: HashMap<Terminal, Bucket>,
    /// Last-use order: the first entry is the least recently seen terminal.
    order: BTreeMap<u64, Terminal>,
    next: u64,
}

pub struct Limiter {
    table: Mutex<Table>,
}

impl Limiter {
    pub fn new(per_second: u32, burst: u32) -> Self {
        Limiter {
            table: Mutex::new(Table {
                per_second: f64::from(per_second),
                burst: f64::from(burst.max(1)),
                buckets: HashMap::new(),
                order: BTreeMap::new(),
                next: 0,
            }),
        }
    }

    /// Applies a reloaded configuration; buckets keep their level (capped at the new burst).
    pub fn configure(&self, per_second: u32, burst: u32) {
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        t.per_second = f64::from(per_second);
        t.burst = f64::from(burst.max(1));
        let burst = t.burst;
        for b in t.buckets.values_mut() {
            b.tokens = b.tokens.min(burst);
        }
    }

    /// Takes one token for `terminal`; when none is left, returns the seconds to wait.
    pub fn check(&self, terminal: Terminal, now: Instant) -> Result<(), u64> {
        let mut guard = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let t = &mut *guard;
        if t.per_second <= 0.0 {
            return Ok(());
        }
        let seq = t.next;
        t.next += 1;
        if !t.buckets.contains_key(&terminal) && t.buckets.len() >= MAX_TERMINALS {
            // Forget the least recently seen terminal only.
            if let Some((_, oldest)) = t.order.pop_first() {
                t.buckets.remove(&oldest);
            }
        }
        let (rate, burst) = (t.per_second, t.burst);
        let b = t.buckets.entry(terminal).or_insert(Bucket {
            tokens: burst,
            at: now,
            seq,
        });
        t.order.remove(&b.seq);
        b.seq = seq;
        t.order.insert(seq, terminal);
        b.tokens = (b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - b.tokens) / rate).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;
    use std::time::Duration;

    fn ip(s: &str) -> Terminal {
        Terminal::of_ip(s.parse::<IpAddr>().unwrap())
    }

    #[test]
    fn bursts_then_refills_per_terminal() {
        let l = Limiter::new(2, 3);
        let (a, b) = (ip("10.0.0.1"), ip("10.0.0.2"));
        let t = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.check(a, t), Ok(()));
        }
        assert_eq!(l.check(a, t), Err(1));
        assert_eq!(l.check(b, t), Ok(()), "another terminal is not affected");
        assert_eq!(l.check(a, t + Duration::from_millis(600)), Ok(()));
        assert!(Limiter::new(0, 1).check(a, t).is_ok());
    }

    #[test]
    fn a_mac_terminal_is_one_bucket_whatever_its_addresses() {
        let l = Limiter::new(1, 2);
        let mac = Terminal::Mac([2, 0, 0, 0, 0, 1]);
        let t = Instant::now();
        assert!(l.check(mac, t).is_ok());
        assert!(l.check(mac, t).is_ok());
        assert!(l.check(mac, t).is_err());
    }

    #[test]
    fn a_flood_of_new_terminals_evicts_the_oldest_only() {
        let l = Limiter::new(1, 1);
        let t = Instant::now();
        let busy = ip("192.168.1.10");
        assert!(l.check(busy, t).is_ok());
        assert!(l.check(busy, t).is_err(), "its bucket is empty");
        for i in 0..10_000u32 {
            // Keep the busy terminal recently seen while thousands of others arrive.
            if i % 1000 == 0 {
                assert!(l.check(busy, t).is_err(), "still limited after {i} others");
            }
            let _ = l.check(
                Terminal::of_ip(IpAddr::from((0x0a00_0000 + i).to_be_bytes())),
                t,
            );
        }
        assert!(l.table.lock().unwrap().buckets.len() <= MAX_TERMINALS);
        assert!(l.check(busy, t).is_err(), "never reset by the flood");
    }

    #[test]
    fn reconfigure_applies_new_limits() {
        let l = Limiter::new(0, 1);
        let a = ip("10.0.0.1");
        let t = Instant::now();
        assert!(l.check(a, t).is_ok());
        l.configure(1, 1);
        assert!(l.check(a, t).is_ok());
        assert!(l.check(a, t).is_err());
        l.configure(0, 1);
        assert!(l.check(a, t).is_ok());
    }
}
