//! How BuildKit spells the `created_by` of history entries. BuildKit formats several of them
//! with Go's `%q` verb (`CMD ["/bin/sh" "-c" "x"]`), so the Go quoting rules are reproduced
//! here: tools that compare histories (and people reading `docker history`) see the same text.

use kiln_oci::HealthConfig;
use std::fmt::Write as _;

/// Go's `strconv.Quote`: a double-quoted string with Go escapes.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Go's `%q` of a `[]string`: `["a" "b"]`.
pub fn go_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| go_quote(s)).collect();
    format!("[{}]", quoted.join(" "))
}

/// Go's `time.Duration.String()` of a count of nanoseconds (`0s`, `1m30s`, `500ms`, `1.5s`).
pub fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".to_string();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let n = nanos.unsigned_abs();
    if n < 1_000_000_000 {
        let (unit, div) = if n < 1_000 {
            ("ns", 1)
        } else if n < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        return format!("{sign}{}{unit}", decimal(n, div));
    }
    let secs = n / 1_000_000_000;
    let frac = n % 1_000_000_000;
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let seconds = decimal(s * 1_000_000_000 + frac, 1_000_000_000);
    if h > 0 {
        format!("{sign}{h}h{m}m{seconds}s")
    } else if m > 0 {
        format!("{sign}{m}m{seconds}s")
    } else {
        format!("{sign}{seconds}s")
    }
}

/// `n / div` with the fraction's trailing zeros dropped (`1.5`, `2`).
fn decimal(n: u64, div: u64) -> String {
    let whole = n / div;
    let frac = n % div;
    if frac == 0 {
        return whole.to_string();
    }
    let digits = div.to_string().len() - 1;
    let frac = format!("{frac:0digits$}");
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

/// Go's `%q` of an integer: a quoted character literal (`'\x03'`).
fn go_quote_rune(n: i64) -> String {
    match u32::try_from(n).ok().and_then(char::from_u32) {
        Some('\'') => "'\\''".to_string(),
        Some('\\') => "'\\\\'".to_string(),
        Some(c) if (' '..='~').contains(&c) => format!("'{c}'"),
        Some('\n') => "'\\n'".to_string(),
        Some('\t') => "'\\t'".to_string(),
        Some('\r') => "'\\r'".to_string(),
        Some(c) if (c as u32) < 0x80 => format!("'\\x{:02x}'", c as u32),
        Some(c) if !c.is_control() => format!("'{c}'"),
        Some(c) => format!("'\\u{:04x}'", c as u32),
        None => format!("%!q(int={n})"),
    }
}

/// BuildKit's `HEALTHCHECK %q` of the health config pointer: `&{["CMD-SHELL" "x"] "30s" …}`.
pub fn go_health(h: &HealthConfig) -> String {
    let test = go_list(h.test.as_deref().unwrap_or_default());
    let d = |v: Option<i64>| go_quote(&go_duration(v.unwrap_or(0)));
    format!(
        "&{{{test} {} {} {} {} {}}}",
        d(h.interval),
        d(h.timeout),
        d(h.start_period),
        d(h.start_interval),
        go_quote_rune(h.retries.unwrap_or(0))
    )
}

/// BuildKit's `runCommandString`: the build args RUN sees (`|2 A=1 B=2`), then the command.
pub fn run_command_string(build_args: &[(String, String)], argv: &[String]) -> String {
    let mut parts: Vec<String> = Vec::with_capacity(build_args.len() + argv.len() + 1);
    if !build_args.is_empty() {
        parts.push(format!("|{}", build_args.len()));
        parts.extend(build_args.iter().map(|(k, v)| format!("{k}={v}")));
    }
    parts.extend(argv.iter().cloned());
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_quoting() {
        assert_eq!(go_quote("a \"b\"\n"), r#""a \"b\"\n""#);
        assert_eq!(
            go_list(&["/bin/sh".into(), "-c".into(), "echo hi".into()]),
            r#"["/bin/sh" "-c" "echo hi"]"#
        );
        assert_eq!(go_list(&[]), "[]");
    }

    #[test]
    fn go_durations() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(30_000_000_000), "30s");
        assert_eq!(go_duration(90_000_000_000), "1m30s");
        assert_eq!(go_duration(1_500_000_000), "1.5s");
        assert_eq!(go_duration(500_000_000), "500ms");
        assert_eq!(go_duration(3_600_000_000_000), "1h0m0s");
    }

    #[test]
    fn healthcheck_history_matches_buildkit() {
        let h = HealthConfig {
            test: Some(vec!["CMD-SHELL".into(), "true".into()]),
            interval: Some(30_000_000_000),
            retries: Some(3),
            ..HealthConfig::default()
        };
        assert_eq!(
            go_health(&h),
            r#"&{["CMD-SHELL" "true"] "30s" "0s" "0s" "0s" '\x03'}"#
        );
    }

    #[test]
    fn run_strings_list_build_args_first() {
        let argv = vec!["/bin/sh".to_string(), "-c".into(), "make".into()];
        assert_eq!(run_command_string(&[], &argv), "/bin/sh -c make");
        assert_eq!(
            run_command_string(&[("A".into(), "1".into())], &argv),
            "|1 A=1 /bin/sh -c make"
        );
    }
}
