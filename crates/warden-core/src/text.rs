//! Text from a guest made safe to show on a terminal.

/// `text` with control characters and invisible formatting characters
/// (bidirectional overrides and isolates, zero-width marks) escaped, so
/// that a guest's log message cannot move the cursor, forge other lines or
/// display differently from what it says on the caller's terminal.
pub fn printable(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            if c.is_control() || is_invisible_format(c) {
                c.escape_unicode().collect::<Vec<char>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        '\u{061C}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2069}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
    )
}
