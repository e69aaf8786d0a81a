//! Times on the command line: the API speaks milliseconds since the epoch; operators read and
//! type UTC times (RFC 3339) and durations back from now (`2h`).
//!
//! The calendar is `humantime`'s (RFC 3339 in UTC both ways, and `2h 30m`-style durations):
//! no dependencies of its own and a few KB of code, where `time` or `jiff` would bring time
//! zones the command does not show. Times are printed in the same form `--since` reads, so a
//! time copied from `history` can be pasted back.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `--since` could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected a duration like 30m, 2h, 7d, a UTC time like 2026-11-23T15:04:05Z or 2026-11-23, or epoch milliseconds; found `{given}`{}", .why.as_ref().map_or(String::new(), |w| format!(" ({w})")))]
pub struct SinceError {
    /// What was given.
    pub given: String,
    /// What the parser found wrong, when it says (e.g. a day out of range).
    pub why: Option<String>,
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `ms` since the epoch as an RFC 3339 UTC time to the second: `2026-11-23T15:04:05Z`.
pub fn format_ms(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// `--since`: a duration back from `now` (`90s`, `30m`, `2h`, `7d`, `1h 30m`), a UTC date
/// (`2026-11-23`) or date-time (`2026-11-23T15:04:05Z`, `2026-11-23 15:04`), or epoch
/// milliseconds (11 digits or more, so it cannot be mistaken for a year or a duration).
pub fn parse_since(s: &str, now: u64) -> Result<u64, SinceError> {
    let bad = |why: Option<String>| SinceError {
        given: s.to_string(),
        why,
    };
    let t = s.trim();
    if t.len() >= 11 && t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse().map_err(|_| bad(None));
    }
    if t.starts_with(|c: char| c.is_ascii_digit()) && !t.contains('-') {
        let d = humantime::parse_duration(t).map_err(|e| bad(Some(e.to_string())))?;
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        return Ok(now.saturating_sub(ms));
    }
    // humantime reads `YYYY-MM-DD[T ]HH:MM:SS[.frac][Z]`; a date alone means its midnight
    // and a time without seconds its first second.
    let full = match t.len() {
        10 => format!("{t}T00:00:00Z"),
        16 => format!("{t}:00Z"),
        _ => t.to_string(),
    };
    let at = humantime::parse_rfc3339_weak(&full).map_err(|e| bad(Some(e.to_string())))?;
    at.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .map_err(|_| bad(Some("before 1970".into())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_count_back_from_now() {
        assert_eq!(parse_since("90s", 100_000), Ok(10_000));
        assert_eq!(parse_since("2h", 10_000_000), Ok(2_800_000));
        assert_eq!(parse_since("7d", 700_000_000), Ok(95_200_000));
        assert_eq!(parse_since("1h 30m", 6_000_000), Ok(600_000));
        assert_eq!(parse_since("1h30m", 6_000_000), Ok(600_000));
        // Further back than the epoch is the epoch, not an error.
        assert_eq!(parse_since("30m", 1_000), Ok(0));
    }

    #[test]
    fn utc_times_in_every_accepted_form() {
        assert_eq!(parse_since("1970-01-02", 0), Ok(86_400_000));
        assert_eq!(
            parse_since("2026-11-23T15:04:05Z", 0),
            Ok(1_795_446_245_000)
        );
        assert_eq!(parse_since("2026-11-23 15:04:05", 0), Ok(1_795_446_245_000));
        assert_eq!(parse_since("2026-11-23T15:04", 0), Ok(1_795_446_240_000));
        assert_eq!(
            parse_since("2026-11-23T15:04:05.250Z", 0),
            Ok(1_795_446_245_250)
        );
        assert_eq!(parse_since("1795446245000", 0), Ok(1_795_446_245_000));
        // Leap years: 2024-02-29 exists, 2026-02-29 does not.
        assert_eq!(
            parse_since("2024-03-01", 0).map(|ms| ms / 86_400_000),
            Ok(19_783)
        );
        assert_eq!(
            parse_since("2024-02-29", 0).map(|ms| ms / 86_400_000),
            Ok(19_782)
        );
    }

    #[test]
    fn nonsense_is_refused_with_the_accepted_forms() {
        for bad in [
            "yesterday",
            "",
            "2h ago",
            "2026-02-29",
            "2026-13-01",
            "2026-11-23T25:00:00Z",
            "1969-12-31",
            "2026-11-23T15:04:05+02:00",
        ] {
            let e = parse_since(bad, 0).expect_err(bad);
            assert!(e.to_string().contains("2026-11-23T15:04:05Z"), "{e}");
            assert!(e.to_string().contains(&format!("`{bad}`")), "{e}");
        }
    }

    #[test]
    fn times_print_as_since_reads_them() {
        assert_eq!(format_ms(1_795_446_245_000), "2026-11-23T15:04:05Z");
        assert_eq!(format_ms(1_795_446_245_999), "2026-11-23T15:04:05Z");
        assert_eq!(format_ms(0), "1970-01-01T00:00:00Z");
        for ms in [0, 951_782_400_000, 1_795_446_245_000, 4_102_444_800_000] {
            assert_eq!(parse_since(&format_ms(ms), 0), Ok(ms));
        }
    }
}
