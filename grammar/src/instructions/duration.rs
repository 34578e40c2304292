//! Go's `time.ParseDuration`, which HEALTHCHECK's `--interval=30s` style flags are written in.

use std::time::Duration;

/// Parse a Go duration (`300ms`, `1h30m`, `1.5s`, `-2m`, `0`) into signed nanoseconds.
///
/// The error text is Go's, since that is what users of `docker build` see for the same input.
pub(crate) fn parse_go_duration(input: &str) -> Result<i128, String> {
    let invalid = || format!("time: invalid duration {input:?}");
    let (negative, mut rest) = match input.as_bytes().first() {
        Some(b'-') => (true, &input[1..]),
        Some(b'+') => (false, &input[1..]),
        _ => (false, input),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_part, after) = rest.split_at(int_len);
        let (frac_part, after) = match after.strip_prefix('.') {
            Some(after) => {
                let len = after.bytes().take_while(u8::is_ascii_digit).count();
                after.split_at(len)
            }
            None => ("", after),
        };
        // A number needs at least one digit on one side of the point.
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(invalid());
        }
        let unit_len = after
            .char_indices()
            .find(|(_, c)| *c == '.' || c.is_ascii_digit())
            .map_or(after.len(), |(i, _)| i);
        let (unit, after) = after.split_at(unit_len);
        if unit.is_empty() {
            return Err(format!("time: missing unit in duration {input:?}"));
        }
        let scale: i128 = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(format!("time: unknown unit {unit:?} in duration {input:?}")),
        };
        let whole: i128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| invalid())?
        };
        let mut value = whole.checked_mul(scale).ok_or_else(invalid)?;
        // The fraction contributes its digits scaled down; digits beyond nanoseconds vanish.
        let mut place = scale;
        for digit in frac_part.bytes() {
            place /= 10;
            if place == 0 {
                break;
            }
            value += i128::from(digit - b'0') * place;
        }
        total = total.checked_add(value).ok_or_else(invalid)?;
        // Go refuses anything past the range of an int64 of nanoseconds.
        if total > i128::from(i64::MAX) {
            return Err(invalid());
        }
        rest = after;
    }
    Ok(if negative { -total } else { total })
}

/// BuildKit's reading of a HEALTHCHECK duration flag: empty or zero means "not set" (inherit),
/// anything else must be at least 1ms.
pub(crate) fn parse_health_interval(flag: &str, value: &str) -> Result<Option<Duration>, String> {
    if value.is_empty() {
        return Ok(None);
    }
    let nanos = parse_go_duration(value)?;
    if nanos == 0 {
        return Ok(None);
    }
    if nanos < 1_000_000 {
        return Err(format!("Interval {flag:?} cannot be less than 1ms"));
    }
    let nanos = u64::try_from(nanos).map_err(|_| format!("time: invalid duration {value:?}"))?;
    Ok(Some(Duration::from_nanos(nanos)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        let cases: &[(&str, i128)] = &[
            ("0", 0),
            ("-0", 0),
            ("5s", 5_000_000_000),
            ("300ms", 300_000_000),
            ("1h30m", 5_400_000_000_000),
            ("1.5s", 1_500_000_000),
            (".5s", 500_000_000),
            ("1.s", 1_000_000_000),
            ("-2m", -120_000_000_000),
            ("+10us", 10_000),
            ("10\u{b5}s", 10_000),
            ("1ns", 1),
            ("1.0000000009s", 1_000_000_000),
        ];
        for (input, nanos) in cases {
            assert_eq!(parse_go_duration(input), Ok(*nanos), "{input}");
        }
    }

    #[test]
    fn refuses_what_go_refuses() {
        let cases: &[(&str, &str)] = &[
            ("", "time: invalid duration \"\""),
            ("5", "time: missing unit in duration \"5\""),
            ("5x", "time: unknown unit \"x\" in duration \"5x\""),
            ("s", "time: invalid duration \"s\""),
            (".s", "time: invalid duration \".s\""),
            ("-", "time: invalid duration \"-\""),
            ("9999999999h", "time: invalid duration \"9999999999h\""),
        ];
        for (input, message) in cases {
            assert_eq!(parse_go_duration(input).unwrap_err(), *message, "{input}");
        }
    }

    #[test]
    fn health_intervals() {
        assert_eq!(parse_health_interval("interval", ""), Ok(None));
        assert_eq!(parse_health_interval("interval", "0s"), Ok(None));
        assert_eq!(
            parse_health_interval("interval", "30s"),
            Ok(Some(Duration::from_secs(30)))
        );
        assert_eq!(
            parse_health_interval("timeout", "500us").unwrap_err(),
            "Interval \"timeout\" cannot be less than 1ms"
        );
        assert_eq!(
            parse_health_interval("timeout", "-1s").unwrap_err(),
            "Interval \"timeout\" cannot be less than 1ms"
        );
    }
}
