//! Go `time.ParseDuration` syntax, as Istio (through jsonpb) accepts it.

use std::time::Duration;

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DurationError {
    /// Not Go duration syntax.
    #[error(
        "invalid duration {0:?}: expected a Go duration such as \"1.5s\", \"100ms\" or \"1h30m\""
    )]
    Syntax(String),
    /// Negative durations make no sense in configuration.
    #[error("duration {0:?} is negative")]
    Negative(String),
    /// Istio requires at least 1ms.
    #[error("duration {0:?} is shorter than 1ms")]
    TooShort(String),
    /// Istio requires millisecond precision.
    #[error("duration {0:?} has a precision finer than 1ms")]
    Precision(String),
}

/// Parses Go duration syntax (`300ms`, `1.5h`, `2h45m`, `1us`, `0`).
pub fn parse_go_duration(s: &str) -> Result<Duration, DurationError> {
    let syntax = || DurationError::Syntax(s.to_string());
    let mut rest = s.trim();
    if let Some(r) = rest.strip_prefix('+') {
        rest = r;
    } else if rest.starts_with('-') {
        return Err(DurationError::Negative(s.to_string()));
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(syntax());
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(syntax)?;
        let num = &rest[..num_end];
        if num.is_empty() || num == "." {
            return Err(syntax());
        }
        let value: f64 = num.parse().map_err(|_| syntax())?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos_per = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(syntax()),
        };
        total += value * nanos_per;
        rest = &rest[unit_end..];
    }
    if !total.is_finite() || total > 1e19 {
        return Err(syntax());
    }
    Ok(Duration::from_nanos(total.round() as u64))
}

/// Istio's `ValidateDuration`: at least 1ms, whole milliseconds.
pub fn parse_istio_duration(s: &str) -> Result<Duration, DurationError> {
    let d = parse_go_duration(s)?;
    if d < Duration::from_millis(1) {
        return Err(DurationError::TooShort(s.to_string()));
    }
    if d.subsec_nanos() % 1_000_000 != 0 {
        return Err(DurationError::Precision(s.to_string()));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_syntax() {
        let ok = [
            ("5m", 300_000),
            ("1h30m", 5_400_000),
            ("100ms", 100),
            ("1.5s", 1500),
            ("0", 0),
            ("2h45m0.5s", 9_900_500),
            ("10s", 10_000),
        ];
        for (s, ms) in ok {
            assert_eq!(
                parse_go_duration(s).unwrap(),
                Duration::from_millis(ms),
                "{s}"
            );
        }
        for bad in ["", "5", "s", "1x", "-1s", "1.2.3s", "ms"] {
            assert!(parse_go_duration(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn istio_bounds() {
        assert_eq!(
            parse_istio_duration("0.5ms"),
            Err(DurationError::TooShort("0.5ms".into()))
        );
        assert_eq!(
            parse_istio_duration("1.0005s"),
            Err(DurationError::Precision("1.0005s".into()))
        );
        assert_eq!(
            parse_istio_duration("1ms").unwrap(),
            Duration::from_millis(1)
        );
    }
}
