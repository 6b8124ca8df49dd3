//! Sizes, durations, percentages and counts: parsing and canonical formatting.

use std::time::Duration;

/// Longest input quoted back in an error message; longer inputs are cut.
const MAX_QUOTED: usize = 64;

/// The largest CPU share accepted, in percent of one core (1024 cores).
///
/// The crate does no I/O and so cannot know the host's core count; the
/// enforcing backend clamps a share to the cores it has.
pub const MAX_CPU_PERCENT: u32 = 1024 * 100;

/// An invalid size, duration, percentage or count.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// Not a number followed by a known size unit.
    #[error(
        "invalid size {0:?}: expected a number followed by an optional unit (B, KB, KiB, MB, MiB, GB, GiB)"
    )]
    InvalidSize(String),
    /// A size that does not fit in 64 bits.
    #[error("invalid size {0:?}: too large (at most 2^64-1 bytes)")]
    SizeOverflow(String),
    /// Not a number followed by a known duration unit.
    #[error(
        "invalid duration {0:?}: expected a number followed by a unit (ns, us, ms, s, m, h, d), e.g. 250ms or 1.5s"
    )]
    InvalidDuration(String),
    /// A duration larger than `Duration::MAX`.
    #[error("invalid duration {0:?}: too large")]
    DurationOverflow(String),
    /// Not a whole number of percent.
    #[error(
        "invalid CPU share {0:?}: expected a whole number of percent of one core, e.g. 50 or 50%"
    )]
    InvalidPercent(String),
    /// A CPU share outside `1..=MAX_CPU_PERCENT`.
    #[error("invalid CPU share {0:?}: must be between 1% and {MAX_CPU_PERCENT}% of one core")]
    PercentOutOfRange(String),
    /// Not a non-negative whole number.
    #[error("invalid count {0:?}: expected a non-negative whole number")]
    InvalidCount(String),
    /// A count larger than the field allows.
    #[error("invalid count {input:?}: too large (at most {max})")]
    CountOverflow {
        /// The offending input (possibly shortened).
        input: String,
        /// The largest value accepted.
        max: u64,
    },
}

/// Returns `s` shortened for quoting in a message (on a char boundary).
pub(crate) fn excerpt(s: &str) -> String {
    if s.len() <= MAX_QUOTED {
        return s.to_owned();
    }
    let mut end = MAX_QUOTED;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Splits `s` into its leading ASCII digits and the rest.
fn split_digits(s: &str) -> (&str, &str) {
    let end = s
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(s.len());
    s.split_at(end)
}

/// Parses a byte size: `4096`, `512KiB`, `64MiB`, `1GiB`, `100MB`, `1K` (binary).
///
/// Units are case-insensitive; `K`, `M`, `G`, `T` alone are binary (KiB…),
/// `KB`, `MB`, `GB`, `TB` are decimal. Whitespace between the number and the
/// unit is allowed. Zero is accepted: whether it is meaningful is the caller's
/// business.
pub fn parse_size(s: &str) -> Result<u64, ValueError> {
    let invalid = || ValueError::InvalidSize(excerpt(s));
    let trimmed = s.trim();
    let (digits, unit) = split_digits(trimmed);
    if digits.is_empty() {
        return Err(invalid());
    }
    let multiplier: u64 = match unit.trim_start().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => return Err(invalid()),
    };
    let number: u64 = digits
        .parse()
        .map_err(|_| ValueError::SizeOverflow(excerpt(s)))?;
    number
        .checked_mul(multiplier)
        .ok_or_else(|| ValueError::SizeOverflow(excerpt(s)))
}

/// Formats a byte size canonically: the largest binary unit that divides it
/// exactly (`64MiB`, `4KiB`), else plain bytes (`100000000`).
pub fn format_size(bytes: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (1 << 40, "TiB"),
        (1 << 30, "GiB"),
        (1 << 20, "MiB"),
        (1 << 10, "KiB"),
    ];
    if bytes != 0 {
        for (size, unit) in UNITS {
            if bytes % size == 0 {
                return format!("{}{unit}", bytes / size);
            }
        }
    }
    bytes.to_string()
}

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Parses a duration: `100us`, `250ms`, `2s`, `1.5s`, `1m`, `1h`, `1d`.
///
/// A unit is required. Fractions are allowed (`1.5s`) and truncated to whole
/// nanoseconds; negative numbers, unknown units and values above
/// `Duration::MAX` are rejected.
pub fn parse_duration(s: &str) -> Result<Duration, ValueError> {
    let invalid = || ValueError::InvalidDuration(excerpt(s));
    let trimmed = s.trim();
    let (whole, rest) = split_digits(trimmed);
    if whole.is_empty() {
        return Err(invalid());
    }
    let (fraction, unit) = match rest.strip_prefix('.') {
        Some(after_dot) => {
            let (fraction, unit) = split_digits(after_dot);
            if fraction.is_empty() {
                return Err(invalid());
            }
            (fraction, unit)
        }
        None => ("", rest),
    };
    let unit_nanos: u128 = match unit.trim_start() {
        "ns" => 1,
        "us" | "µs" => 1_000,
        "ms" => 1_000_000,
        "s" => NANOS_PER_SEC,
        "m" => 60 * NANOS_PER_SEC,
        "h" => 3_600 * NANOS_PER_SEC,
        "d" => 86_400 * NANOS_PER_SEC,
        _ => return Err(invalid()),
    };
    let overflow = || ValueError::DurationOverflow(excerpt(s));
    let whole: u128 = whole.parse().map_err(|_| overflow())?;
    let mut nanos = whole.checked_mul(unit_nanos).ok_or_else(overflow)?;
    // Only the first 18 fractional digits can matter at nanosecond precision.
    let fraction = &fraction[..fraction.len().min(18)];
    if !fraction.is_empty() {
        let numerator: u128 = fraction.parse().map_err(|_| invalid())?;
        let denominator = 10u128.pow(u32::try_from(fraction.len()).map_err(|_| invalid())?);
        nanos = nanos
            .checked_add(numerator * unit_nanos / denominator)
            .ok_or_else(overflow)?;
    }
    let secs = u64::try_from(nanos / NANOS_PER_SEC).map_err(|_| overflow())?;
    let subsec = u32::try_from(nanos % NANOS_PER_SEC).map_err(|_| overflow())?;
    Ok(Duration::new(secs, subsec))
}

/// Formats a duration canonically: the largest unit (h, m, s, ms, us, ns)
/// that divides it exactly, e.g. `1500ms`, `2s`, `1h`; zero is `0s`.
pub fn format_duration(d: Duration) -> String {
    const UNITS: [(u128, &str); 6] = [
        (3_600 * NANOS_PER_SEC, "h"),
        (60 * NANOS_PER_SEC, "m"),
        (NANOS_PER_SEC, "s"),
        (1_000_000, "ms"),
        (1_000, "us"),
        (1, "ns"),
    ];
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    for (size, unit) in UNITS {
        if nanos % size == 0 {
            return format!("{}{unit}", nanos / size);
        }
    }
    format!("{nanos}ns")
}

/// Parses a CPU share in percent of one core: `50` or `50%`, in
/// `1..=MAX_CPU_PERCENT`.
pub fn parse_percent(s: &str) -> Result<u32, ValueError> {
    let trimmed = s.trim();
    let number = trimmed.strip_suffix('%').unwrap_or(trimmed).trim_end();
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ValueError::InvalidPercent(excerpt(s)));
    }
    match number.parse::<u32>() {
        Ok(p) if (1..=MAX_CPU_PERCENT).contains(&p) => Ok(p),
        _ => Err(ValueError::PercentOutOfRange(excerpt(s))),
    }
}

/// Parses a non-negative whole number no larger than `max`.
pub fn parse_count(s: &str, max: u64) -> Result<u64, ValueError> {
    let trimmed = s.trim();
    if trimmed.is_empty() || !trimmed.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ValueError::InvalidCount(excerpt(s)));
    }
    match trimmed.parse::<u64>() {
        Ok(n) if n <= max => Ok(n),
        _ => Err(ValueError::CountOverflow {
            input: excerpt(s),
            max,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        let cases: &[(&str, u64)] = &[
            ("4096", 4096),
            ("0", 0),
            ("10B", 10),
            ("512KiB", 512 * 1024),
            ("64MiB", 64 << 20),
            ("1GiB", 1 << 30),
            ("2TiB", 2 << 40),
            ("100MB", 100_000_000),
            ("3KB", 3_000),
            ("1GB", 1_000_000_000),
            ("1K", 1024),
            ("1M", 1 << 20),
            ("1G", 1 << 30),
            ("64 MiB", 64 << 20),
            ("64mib", 64 << 20),
            ("18446744073709551615", u64::MAX),
        ];
        for (input, want) in cases {
            assert_eq!(parse_size(input), Ok(*want), "{input}");
        }
    }

    #[test]
    fn sizes_reject() {
        for bad in [
            "", " ", "-1", "+1", "1.5MiB", "MiB", "12XB", "1e3", "0x10", "1 2", "1MiBs", "1.MiB",
        ] {
            assert!(
                matches!(parse_size(bad), Err(ValueError::InvalidSize(_))),
                "{bad:?} -> {:?}",
                parse_size(bad)
            );
        }
        for big in [
            "18446744073709551616",
            "99999999999999999999999",
            "17179869184GiB",
            "16777216TiB",
        ] {
            assert!(
                matches!(parse_size(big), Err(ValueError::SizeOverflow(_))),
                "{big}"
            );
        }
    }

    #[test]
    fn size_error_messages() {
        assert_eq!(
            parse_size("-1").unwrap_err().to_string(),
            r#"invalid size "-1": expected a number followed by an optional unit (B, KB, KiB, MB, MiB, GB, GiB)"#
        );
        assert_eq!(
            parse_size("99999999999999999999").unwrap_err().to_string(),
            r#"invalid size "99999999999999999999": too large (at most 2^64-1 bytes)"#
        );
    }

    #[test]
    fn sizes_format_and_round_trip() {
        assert_eq!(format_size(64 << 20), "64MiB");
        assert_eq!(format_size(4096), "4KiB");
        assert_eq!(format_size(100_000_000), "100000000");
        assert_eq!(format_size(0), "0");
        assert_eq!(format_size(1 << 40), "1TiB");
        assert_eq!(format_size(1536), "1536");
        for n in [
            0,
            1,
            1023,
            1024,
            1536,
            100_000_000,
            u64::MAX,
            u64::MAX - 1023,
            1 << 63,
        ] {
            assert_eq!(parse_size(&format_size(n)), Ok(n), "{n}");
        }
    }

    #[test]
    fn durations_parse() {
        let cases: &[(&str, Duration)] = &[
            ("250ms", Duration::from_millis(250)),
            ("2s", Duration::from_secs(2)),
            ("1m", Duration::from_secs(60)),
            ("1.5s", Duration::from_millis(1500)),
            ("1h", Duration::from_secs(3600)),
            ("1d", Duration::from_secs(86_400)),
            ("100us", Duration::from_micros(100)),
            ("100µs", Duration::from_micros(100)),
            ("7ns", Duration::from_nanos(7)),
            ("0s", Duration::ZERO),
            ("0.25m", Duration::from_secs(15)),
            ("1.0000000001s", Duration::from_secs(1)),
            ("2 s", Duration::from_secs(2)),
        ];
        for (input, want) in cases {
            assert_eq!(parse_duration(input), Ok(*want), "{input}");
        }
    }

    #[test]
    fn durations_reject() {
        for bad in [
            "", "2", "-1s", "1.s", ".5s", "1x", "s", "1.5", "1S", "1h30m", "1e3s", "+1s",
        ] {
            assert!(
                matches!(parse_duration(bad), Err(ValueError::InvalidDuration(_))),
                "{bad:?} -> {:?}",
                parse_duration(bad)
            );
        }
        for big in [
            "18446744073709551616s",
            "999999999999999999999999999999999999999999h",
        ] {
            assert!(
                matches!(parse_duration(big), Err(ValueError::DurationOverflow(_))),
                "{big}"
            );
        }
        assert_eq!(
            parse_duration("-1s").unwrap_err().to_string(),
            r#"invalid duration "-1s": expected a number followed by a unit (ns, us, ms, s, m, h, d), e.g. 250ms or 1.5s"#
        );
    }

    #[test]
    fn durations_format_and_round_trip() {
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
        assert_eq!(format_duration(Duration::from_secs(120)), "2m");
        assert_eq!(format_duration(Duration::from_secs(7200)), "2h");
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(format_duration(Duration::from_nanos(1)), "1ns");
        for d in [
            Duration::ZERO,
            Duration::from_nanos(123_456_789),
            Duration::from_micros(5),
            Duration::MAX,
            Duration::new(u64::MAX, 0),
        ] {
            assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{d:?}");
        }
    }

    #[test]
    fn percents_and_counts() {
        assert_eq!(parse_percent("50"), Ok(50));
        assert_eq!(parse_percent("50%"), Ok(50));
        assert_eq!(parse_percent("400%"), Ok(400));
        assert!(matches!(
            parse_percent("0"),
            Err(ValueError::PercentOutOfRange(_))
        ));
        assert!(matches!(
            parse_percent("999999999999"),
            Err(ValueError::PercentOutOfRange(_))
        ));
        for bad in ["", "%", "-5", "5.5%", "50%%", "x"] {
            assert!(
                matches!(parse_percent(bad), Err(ValueError::InvalidPercent(_))),
                "{bad}"
            );
        }
        assert_eq!(parse_count("64", u32::MAX.into()), Ok(64));
        assert!(matches!(
            parse_count("-1", 10),
            Err(ValueError::InvalidCount(_))
        ));
        assert_eq!(
            parse_count("11", 10).unwrap_err().to_string(),
            r#"invalid count "11": too large (at most 10)"#
        );
    }

    #[test]
    fn long_inputs_are_cut_in_messages() {
        let long = "x".repeat(1000);
        let msg = parse_size(&long).unwrap_err().to_string();
        assert!(msg.len() < 200, "{msg}");
    }
}
