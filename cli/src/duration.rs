//! Durations on the command line (`--duration`, `--wait`, ...): a number
//! with a unit, `500ms`, `10s`, `1.5s`, `2m`, `1h`, or several (`1m30s`,
//! `1h30m`, `2d`). A bare number is refused: `--warmup 100` meant as
//! milliseconds would be 100 s.

use std::time::Duration;

/// The longest duration a flag that waits or runs for it takes.
const MAX_DURATION: Duration = Duration::from_secs(86_400);

/// The longest age a filter takes (`--older-than`): transactions stay in
/// doubt for days (trial 25B), and a filter waits for nothing.
const MAX_AGE: Duration = Duration::from_secs(3650 * 86_400);

/// Parses a duration to wait or run for, at most a day. Flags taking one
/// accept values starting with `-` (`allow_hyphen_values`), so that `-1s`
/// gets this message rather than clap's hint about an unknown flag.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    parse_up_to(s, MAX_DURATION)
}

/// Parses an age to filter by, at most ten years.
pub fn parse_age(s: &str) -> Result<Duration, String> {
    parse_up_to(s, MAX_AGE)
}

fn parse_up_to(s: &str, max: Duration) -> Result<Duration, String> {
    let s = s.trim();
    if s.starts_with("--") {
        return Err(format!("expected a duration (e.g. 10s), found the flag {s:?}"));
    }
    if s.starts_with('-') {
        return Err(format!("duration {s:?} is negative"));
    }
    if s.is_empty() {
        return Err("empty duration (e.g. 10s, 500ms, 2m)".into());
    }
    // One or more number-unit parts: `90s`, `1m30s`, `1h30m`.
    let mut secs = 0.0;
    let mut rest = s;
    while !rest.is_empty() {
        let split = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let number = &rest[..split];
        let after = &rest[split..];
        let unit_len = after.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(after.len());
        let unit = after[..unit_len].trim();
        let value: f64 = number.parse().map_err(|_| format!("invalid duration {s:?} (e.g. 10s, 500ms, 2m, 1m30s)"))?;
        secs += value
            * match unit {
                "" => return Err(format!("duration {s:?} has no unit (e.g. {s}s or {s}ms)")),
                "ms" => 0.001,
                "s" | "sec" => 1.0,
                "m" | "min" => 60.0,
                "h" => 3600.0,
                "d" => 86_400.0,
                _ => return Err(format!("unknown unit {unit:?} in {s:?} (use ms, s, m, h or d)")),
            };
        rest = &after[unit_len..];
    }
    if !secs.is_finite() || !(0.0..=max.as_secs_f64()).contains(&secs) {
        return Err(format!("duration {s:?} is out of range (at most {}d)", max.as_secs() / 86_400));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert!(parse_duration("100").unwrap_err().contains("no unit"));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("1s500ms").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("1m30").unwrap_err().contains("no unit"));
        assert!(parse_duration("-1s").unwrap_err().contains("negative"));
        assert!(parse_duration("--json").unwrap_err().contains("found the flag"));
        for bad in ["ten", "5x", "", "-1s", "48h", "2d"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(parse_duration("1d").unwrap(), Duration::from_secs(86_400));
    }

    #[test]
    fn ages_reach_years() {
        assert_eq!(parse_age("3d").unwrap(), Duration::from_secs(3 * 86_400));
        assert_eq!(parse_age("48h").unwrap(), Duration::from_secs(48 * 3600));
        assert!(parse_age("3651d").unwrap_err().contains("at most 3650d"));
        assert!(parse_age("-1d").unwrap_err().contains("negative"));
    }
}
