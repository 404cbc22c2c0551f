//! Clocks: wall time for timestamps and token checks, a monotonic clock for counters, and the build date.
use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the epoch at the start of the day this binary was built.
pub const BUILD_EPOCH: u64 = parse_u64(env!("BOXAPI_BUILD_EPOCH"));

const fn parse_u64(s: &str) -> u64 {
    let b = s.as_bytes();
    let mut i = 0;
    let mut n = 0u64;
    while i < b.len() {
        n = n * 10 + (b[i] - b'0') as u64;
        i += 1;
    }
    n
}

/// Wall-clock seconds since the epoch (0 if the clock reads before 1970).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// True when the wall clock is obviously unset (a box boots at the epoch until NTP answers).
pub fn clock_is_unset(now: u64) -> bool {
    now < BUILD_EPOCH
}

/// CLOCK_BOOTTIME in microseconds: keeps counting across suspend and wall-clock jumps.
pub fn monotonic_us() -> u64 {
    use nix::time::{clock_gettime, ClockId};
    clock_gettime(ClockId::CLOCK_BOOTTIME)
        .or_else(|_| clock_gettime(ClockId::CLOCK_MONOTONIC))
        .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1_000)
        .unwrap_or(0)
}

/// Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Days since 1970-01-01 of a civil date (inverse of [`civil_from_days`]).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Broken-down UTC time of a Unix timestamp: (year, month, day, hour, minute, second).
pub fn utc_parts(secs: i64) -> (i64, u32, u32, u32, u32, u32) {
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    (
        y,
        mo,
        d,
        (s / 3600) as u32,
        (s / 60 % 60) as u32,
        (s % 60) as u32,
    )
}

/// RFC 3339 UTC with milliseconds, e.g. `2026-11-22T07:31:02.123Z`.
pub fn rfc3339_millis(t: SystemTime) -> String {
    let mut out = Vec::with_capacity(24);
    push_rfc3339_millis(&mut out, t);
    // Only ASCII digits and separators were written.
    String::from_utf8(out).unwrap_or_default()
}

/// Appends [`rfc3339_millis`]'s text (ASCII: a JSON string's content as it is).
pub fn push_rfc3339_millis(out: &mut Vec<u8>, t: SystemTime) {
    let (secs, millis) = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_millis()),
        Err(_) => (0, 0),
    };
    // Every request writes two of these (card and log): the calendar part is worked out once a
    // second per thread.
    thread_local! {
        static SECOND: std::cell::RefCell<(i64, String)> = const { std::cell::RefCell::new((i64::MIN, String::new())) };
    }
    let calendar = |secs| {
        let (y, mo, d, h, mi, s) = utc_parts(secs);
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}")
    };
    // `try_with`: a line logged from a destructor while this thread exits finds the cache gone
    // and is formatted whole instead of panicking.
    let cached = SECOND.try_with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.0 != secs {
            *cell = (secs, calendar(secs));
        }
        out.extend_from_slice(cell.1.as_bytes());
    });
    if cached.is_err() {
        out.extend_from_slice(calendar(secs).as_bytes());
    }
    let mut fraction = *b".000Z";
    for (i, div) in [100, 10, 1].into_iter().enumerate() {
        fraction[1 + i] = b'0' + (millis / div % 10) as u8;
    }
    out.extend_from_slice(&fraction);
}

/// RFC 3339 UTC without fractions, for dates such as a certificate's notAfter.
pub fn rfc3339(secs: i64) -> String {
    let (y, mo, d, h, mi, s) = utc_parts(secs);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// Parses an RFC 3339 date-time (`2027-01-31T23:59:59Z`, fractions and `±HH:MM` offsets
/// allowed) into Unix seconds; fractions are dropped. A date without a time or a time without an
/// offset is refused: a validity date must not depend on the box's time zone.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b.len() > 40 || !s.is_ascii() {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<u32> {
        let part = &s[from..to];
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())
            .flatten()
    };
    let seps = [(4, b'-'), (7, b'-'), (13, b':'), (16, b':')];
    if seps.iter().any(|&(i, c)| b[i] != c) || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let (y, mo, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (h, mi, sec) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    let days_in_month = match mo {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if y % 4 == 0 && (y % 100 != 0 || y % 400 == 0) => 29,
        2 => 28,
        _ => return None,
    };
    // 60 is a leap second; it is read as the next second's start.
    if d == 0 || d > days_in_month || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = &frac[digits..];
    }
    let offset: i64 = match rest.as_bytes() {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let two = |a: u8, b: u8| -> Option<i64> {
                (a.is_ascii_digit() && b.is_ascii_digit())
                    .then(|| i64::from((a - b'0') * 10 + (b - b'0')))
            };
            let (oh, om) = (two(*h1, *h2)?, two(*m1, *m2)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let o = oh * 3600 + om * 60;
            if *sign == b'-' {
                -o
            } else {
                o
            }
        }
        _ => return None,
    };
    let days = days_from_civil(i64::from(y), mo, d);
    Some(days * 86_400 + i64::from(h * 3600 + mi * 60 + sec) - offset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_known_instants() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_332_662_123);
        assert_eq!(rfc3339_millis(t), "2026-11-22T07:31:02.123Z");
        // The same second again (the calendar part reused), then the next ones.
        let at = |ms: u64| rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms));
        assert_eq!(at(1_795_332_662_007), "2026-11-22T07:31:02.007Z");
        assert_eq!(at(1_795_332_663_040), "2026-11-22T07:31:03.040Z");
        assert_eq!(at(1_795_332_662_999), "2026-11-22T07:31:02.999Z");
        assert_eq!(at(1_795_305_600_000), "2026-11-22T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn parses_rfc3339() {
        assert_eq!(parse_rfc3339("2000-02-29T00:00:00Z"), Some(951_782_400));
        assert_eq!(
            parse_rfc3339("2000-02-29T01:30:00.123+01:30"),
            Some(951_782_400)
        );
        assert_eq!(
            parse_rfc3339("2000-02-28T23:00:00-01:00"),
            Some(951_782_400)
        );
        assert_eq!(parse_rfc3339("2000-02-29t00:00:00z"), Some(951_782_400));
        for bad in [
            "2000-02-29",
            "2000-02-29T00:00:00",
            "2001-02-29T00:00:00Z",
            "2000-13-01T00:00:00Z",
            "2000-02-29T24:00:00Z",
            "2000-02-29T00:00:00.Z",
            "2000-02-29T00:00:00+0100",
            "+2000-02-29T00:00:00Z",
            "2000-02-29T00:00:00Zjunk",
            "２000-02-29T00:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
        for t in [0, 951_782_400, 1_795_332_662, 4_102_444_800] {
            assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t));
        }
    }

    #[test]
    fn civil_round_trip() {
        for days in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn build_epoch_is_recent_and_clock_is_set() {
        let epoch = BUILD_EPOCH;
        assert!(epoch > 1_700_000_000 && epoch <= unix_now());
        assert!(!clock_is_unset(unix_now()));
        assert!(clock_is_unset(0));
    }

    #[test]
    fn monotonic_advances() {
        let a = monotonic_us();
        std::thread::sleep(Duration::from_millis(2));
        assert!(monotonic_us() > a);
    }

    #[test]
    fn rfc3339_round_trip_and_refusals() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339(&rfc3339(1_800_000_000)), Some(1_800_000_000));
        assert_eq!(
            parse_rfc3339("2027-01-15T12:00:00.123+01:00"),
            parse_rfc3339("2027-01-15T11:00:00Z")
        );
        for bad in [
            "",
            "2027-01-15",
            "2027-13-01T00:00:00Z",
            "2027-01-15T12:00:00",
            "2027-01-15T12:00:00+1:00",
            "2027-01-15T12:00:00.Z",
            "２０２７-01-15T12:00:00Z",
            "2027-01-15T12:00:00Zjunk",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
