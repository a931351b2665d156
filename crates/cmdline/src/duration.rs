//! Durations as coreutils' `timeout` and `sleep` write them: a number
//! with an optional unit, `s` (the default), `m`, `h` or `d`.

use std::time::Duration;

/// `90`, `1.5s`, `2m`, `1h`, `2d`. Zero is allowed; what zero means is
/// the option's business.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    let v = value.trim();
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (number, unit) = v.split_at(split);
    let scale = match unit {
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        _ => {
            return Err(format!(
                "{value:?}: unknown unit {unit:?} (use s, m, h or d, as in 90s, 30m, 2h)"
            ))
        }
    };
    number
        .parse::<f64>()
        .ok()
        .map(|n| n * scale)
        .filter(|s| s.is_finite() && *s >= 0.0 && *s < 1e12)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("{value:?} is not a duration such as 90s, 30m or 2h"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let d = |s| parse_duration(s).map(|d| d.as_secs_f64());
        assert_eq!(d("90"), Ok(90.0));
        assert_eq!(d("1.5s"), Ok(1.5));
        assert_eq!(d("2m"), Ok(120.0));
        assert_eq!(d("1h"), Ok(3600.0));
        assert_eq!(d("2d"), Ok(172800.0));
        assert_eq!(d("0"), Ok(0.0));
        for bad in ["", "m", "-1", "1x", "1 h", "1e400", "..", "5ms"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
