//! Quoting and formatting for the few SQL statements that cannot take bind
//! parameters (`CREATE ROLE`, `GRANT`, `DROP ROLE` are utility statements:
//! PostgreSQL plans no parameters for them), so names and literals must be
//! spelled into the text safely.

/// PostgreSQL truncates identifiers longer than NAMEDATALEN - 1 bytes; a
/// truncated name could silently collide with another role, so we refuse.
pub const MAX_IDENTIFIER_BYTES: usize = 63;

/// Why a name cannot be used as a PostgreSQL identifier.
pub fn identifier_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("is empty")
    } else if name.len() > MAX_IDENTIFIER_BYTES {
        Some("is longer than 63 bytes (PostgreSQL would truncate it)")
    } else if name.chars().any(char::is_control) {
        // NUL cannot cross the protocol; other control characters have no
        // business in a role name and only hide what a name really is.
        Some("contains a control character")
    } else {
        None
    }
}

/// Quotes an identifier the way PostgreSQL's `quote_ident` and libpq's
/// `PQescapeIdentifier` do: always wrapped in double quotes, inner double
/// quotes doubled. Inside a quoted identifier nothing else is special, so
/// `;`, `'`, `--` and spaces stay part of the name. The caller must have
/// checked [`identifier_problem`] (a NUL would end the statement early).
pub fn quote_identifier(name: &str) -> String {
    let mut quoted = String::with_capacity(name.len() + 2);
    quoted.push('"');
    for c in name.chars() {
        if c == '"' {
            quoted.push('"');
        }
        quoted.push(c);
    }
    quoted.push('"');
    quoted
}

/// Quotes a string literal the way `PQescapeLiteral` does: single quotes
/// doubled, and, when a backslash occurs, the `E'…'` form with backslashes
/// doubled, so the result means the same whatever
/// `standard_conforming_strings` is set to.
pub fn quote_literal(text: &str) -> String {
    let has_backslash = text.contains('\\');
    let mut quoted = String::with_capacity(text.len() + 3);
    if has_backslash {
        quoted.push('E');
    }
    quoted.push('\'');
    for c in text.chars() {
        if c == '\'' || c == '\\' {
            quoted.push(c);
        }
        quoted.push(c);
    }
    quoted.push('\'');
    quoted
}

/// Formats unix seconds as an RFC 3339 UTC timestamp (`2026-12-06T23:05:01Z`),
/// which PostgreSQL reads unambiguously whatever the server's `TimeZone`.
pub fn rfc3339_utc(unix_seconds: u64) -> String {
    let days = unix_seconds / 86_400;
    let second_of_day = unix_seconds % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// `civil_from_days`, restricted to dates on or after the epoch).
fn civil_from_days(days_since_epoch: u64) -> (u64, u64, u64) {
    let z = days_since_epoch + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_always_double_quoted_with_inner_quotes_doubled() {
        assert_eq!(quote_identifier("reader"), "\"reader\"");
        assert_eq!(quote_identifier("Mixed Case"), "\"Mixed Case\"");
        assert_eq!(
            quote_identifier("evil\"; DROP ROLE x; --"),
            "\"evil\"\"; DROP ROLE x; --\""
        );
        assert_eq!(quote_identifier("\"\""), "\"\"\"\"\"\"");
    }

    #[test]
    fn literals_double_quotes_and_switch_to_escape_form_for_backslashes() {
        assert_eq!(quote_literal("abc"), "'abc'");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal("a\\b'"), "E'a\\\\b'''");
    }

    #[test]
    fn identifier_problems_are_named() {
        assert!(identifier_problem("reader").is_none());
        assert!(identifier_problem("with \"quote\"; and semicolon").is_none());
        assert!(identifier_problem("").is_some());
        assert!(identifier_problem("nul\0byte").is_some());
        assert!(identifier_problem("new\nline").is_some());
        assert!(identifier_problem(&"x".repeat(63)).is_none());
        assert!(identifier_problem(&"x".repeat(64)).is_some());
        // 63 bytes is the limit, not 63 characters.
        assert!(identifier_problem(&"é".repeat(32)).is_some());
    }

    #[test]
    fn rfc3339_matches_known_instants() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_utc(1_709_251_199), "2024-02-29T23:59:59Z");
        assert_eq!(rfc3339_utc(1_796_598_301), "2026-12-06T23:05:01Z");
        assert_eq!(rfc3339_utc(4_102_444_800), "2100-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(253_402_300_799), "9999-12-31T23:59:59Z");
    }
}
