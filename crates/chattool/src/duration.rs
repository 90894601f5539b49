//! Durations as the model writes and reads them (spec/chattool.md §9.1): Go's grammar —
//! one or more `<decimal><unit>` with units `ns`, `us`, `µs`, `ms`, `s`, `m`, `h`, an optional
//! leading sign — and Go's formatting (`10s`, `1m30s`, `5m0s`, `1h0m0s`, `1.5s`, `500ms`).

use std::time::Duration;

/// A parsed duration: Go durations may be negative, which callers reject with their own text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signed {
    /// The value was negative.
    pub negative: bool,
    /// Its magnitude.
    pub magnitude: Duration,
}

impl Signed {
    /// Zero or negative.
    pub fn is_non_positive(&self) -> bool {
        self.negative || self.magnitude.is_zero()
    }
}

/// Parses Go's duration grammar; the error text matches Go's `time: invalid duration "<v>"`
/// family so model-facing messages read as the reference's do.
pub fn parse(text: &str) -> Result<Signed, String> {
    let invalid = || format!("time: invalid duration \"{text}\"");
    let mut rest = text;
    let mut negative = false;
    if let Some(r) = rest.strip_prefix('-') {
        negative = true;
        rest = r;
    } else if let Some(r) = rest.strip_prefix('+') {
        rest = r;
    }
    if rest == "0" {
        return Ok(Signed {
            negative: false,
            magnitude: Duration::ZERO,
        });
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total_nanos: u128 = 0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = &rest[..number_len];
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(invalid());
        }
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3_600 * 1_000_000_000,
            "" => return Err(format!("time: missing unit in duration \"{text}\"")),
            other => {
                return Err(format!(
                    "time: unknown unit \"{other}\" in duration \"{text}\""
                ));
            }
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| invalid())?
        };
        let mut nanos = whole.checked_mul(scale).ok_or_else(invalid)?;
        let mut place = scale;
        for digit in fraction.chars() {
            place /= 10;
            if place == 0 {
                break;
            }
            nanos += u128::from(digit.to_digit(10).ok_or_else(invalid)?) * place;
        }
        total_nanos = total_nanos.checked_add(nanos).ok_or_else(invalid)?;
    }
    let nanos = u64::try_from(total_nanos).map_err(|_| invalid())?;
    Ok(Signed {
        negative,
        magnitude: Duration::from_nanos(nanos),
    })
}

/// Formats like Go's `time.Duration.String`.
pub fn format(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    if nanos < 1_000_000_000 {
        let (value, unit, scale) = if nanos < 1_000 {
            return format!("{nanos}ns");
        } else if nanos < 1_000_000 {
            (nanos, "µs", 1_000)
        } else {
            (nanos, "ms", 1_000_000)
        };
        return format!("{}{unit}", decimal(value, scale));
    }
    let hours = nanos / 3_600_000_000_000;
    let minutes = (nanos / 60_000_000_000) % 60;
    let seconds_nanos = nanos % 60_000_000_000;
    let seconds = decimal(seconds_nanos, 1_000_000_000);
    if hours > 0 {
        format!("{hours}h{minutes}m{seconds}s")
    } else if minutes > 0 {
        format!("{minutes}m{seconds}s")
    } else {
        format!("{seconds}s")
    }
}

/// `value / scale` with the fraction's trailing zeros removed.
fn decimal(value: u128, scale: u128) -> String {
    let whole = value / scale;
    let fraction = value % scale;
    if fraction == 0 {
        return whole.to_string();
    }
    let digits = scale.to_string().len() - 1;
    let text = format!("{fraction:0digits$}");
    format!("{whole}.{}", text.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Duration {
        let parsed = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert!(!parsed.negative);
        parsed.magnitude
    }

    #[test]
    fn go_grammar_parses() {
        assert_eq!(ok("30s"), Duration::from_secs(30));
        assert_eq!(ok("1.5h"), Duration::from_secs(5400));
        assert_eq!(ok("2h45m"), Duration::from_secs(9900));
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok("1us"), Duration::from_micros(1));
        assert_eq!(ok("1µs"), Duration::from_micros(1));
        assert_eq!(ok("0"), Duration::ZERO);
        assert_eq!(ok(".5s"), Duration::from_millis(500));
        assert!(parse("-1s").unwrap().negative);
        assert!(parse("0s").unwrap().is_non_positive());
    }

    #[test]
    fn bad_durations_say_why_like_go() {
        assert_eq!(
            parse("soon").unwrap_err(),
            "time: invalid duration \"soon\""
        );
        assert_eq!(
            parse("10").unwrap_err(),
            "time: missing unit in duration \"10\""
        );
        assert_eq!(
            parse("10d").unwrap_err(),
            "time: unknown unit \"d\" in duration \"10d\""
        );
        assert_eq!(parse("").unwrap_err(), "time: invalid duration \"\"");
    }

    #[test]
    fn formatting_follows_go() {
        for (d, text) in [
            (Duration::from_secs(10), "10s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(300), "5m0s"),
            (Duration::from_secs(3600), "1h0m0s"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_micros(1500), "1.5ms"),
            (Duration::ZERO, "0s"),
        ] {
            assert_eq!(format(d), text);
        }
    }
}
