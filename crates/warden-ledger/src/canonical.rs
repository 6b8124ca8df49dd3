//! RFC 8785 (JCS) canonical JSON, written and checked without building
//! intermediate trees: [`write_value`] serializes a `serde_json::Value`
//! canonically (what `serde_json_canonicalizer::to_vec` gives, without
//! its per-key buffers), and [`check_entry`] decides in one pass over the
//! bytes whether they are exactly the canonical encoding of a ledger
//! entry, returning the index and previous-entry hash it names.
//!
//! Canonical form, as the serializer writes it: no whitespace; object
//! members sorted by the UTF-16 code units of their keys, no key twice;
//! strings with only `\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t` and
//! `\u00xx` (lowercase, for the other control characters) escaped and
//! everything else raw UTF-8; numbers as ECMAScript's `Number.toString`
//! writes the IEEE double (ryu-js).

use serde_json::Value;

use crate::merkle::Hash;

/// The largest integer every double represents exactly (2^53): up to it
/// an integer's canonical form is its decimal digits.
const EXACT_INT: u64 = 1 << 53;

/// Nesting deeper than serde_json's parser accepts (its recursion limit)
/// is not an entry: the check refuses what a parse would.
const MAX_DEPTH: usize = 128;

/// Appends the canonical JSON of `value` to `out`.
pub fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                write_u64(out, u);
            } else if let Some(i) = n.as_i64() {
                if i.unsigned_abs() <= EXACT_INT {
                    out.push(b'-');
                    write_u64(out, i.unsigned_abs());
                } else {
                    write_f64(out, i as f64);
                }
            } else {
                // A Value holds only finite doubles.
                write_f64(out, n.as_f64().unwrap_or(0.0));
            }
        }
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            // The map's own order is by UTF-8 bytes (or insertion); JCS
            // wants UTF-16 code units, which differ only beyond U+FFFF.
            if !members.iter().all(|(k, _)| k.is_ascii()) || !sorted_bytes(&members) {
                members.sort_by(|a, b| key_cmp(a.0, b.0));
            }
            out.push(b'{');
            for (i, (k, v)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(out, k);
                out.push(b':');
                write_value(out, v);
            }
            out.push(b'}');
        }
    }
}

fn sorted_bytes(members: &[(&String, &Value)]) -> bool {
    members
        .windows(2)
        .all(|w| w[0].0.as_bytes() < w[1].0.as_bytes())
}

/// JCS member order: by UTF-16 code units.
fn key_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    if a.is_ascii() && b.is_ascii() {
        a.as_bytes().cmp(b.as_bytes())
    } else {
        a.encode_utf16().cmp(b.encode_utf16())
    }
}

/// The canonical form of an unsigned integer.
pub fn write_u64(out: &mut Vec<u8>, u: u64) {
    if u <= EXACT_INT {
        let mut buf = [0u8; 20];
        let mut i = buf.len();
        let mut v = u;
        loop {
            i -= 1;
            buf[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        out.extend_from_slice(&buf[i..]);
    } else {
        write_f64(out, u as f64);
    }
}

fn write_f64(out: &mut Vec<u8>, f: f64) {
    let mut buf = ryu_js::Buffer::new();
    out.extend_from_slice(buf.format_finite(f).as_bytes());
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The canonical form of a string.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x0c => b"\\f",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => &[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(b >> 4) as usize],
                HEX[(b & 15) as usize],
            ],
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(esc);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// If `body` is exactly the canonical JSON of a ledger entry — an object
/// with exactly the members `event` (any value), `index` (an unsigned
/// integer), `kind` (a string), `prev` (64 hex digits), `time` (a number)
/// and `v` (`1`) — the index and previous-entry hash it names.
pub fn check_entry(body: &[u8]) -> Option<(u64, Hash)> {
    // Raw bytes in strings must be UTF-8; checked once for all of them.
    std::str::from_utf8(body).ok()?;
    let mut c = Cursor { b: body, i: 0 };
    c.lit(b"{\"event\":")?;
    c.value(1)?;
    c.lit(b",\"index\":")?;
    let index = c.number()?;
    let index = parse_index(index)?;
    c.lit(b",\"kind\":")?;
    c.string()?;
    c.lit(b",\"prev\":\"")?;
    let hex = body.get(c.i..c.i + 64)?;
    let mut prev = [0u8; 32];
    let mut bad = 0u8;
    for (k, pair) in hex.chunks_exact(2).enumerate() {
        let (hi, lo) = (HEX_VALUE[pair[0] as usize], HEX_VALUE[pair[1] as usize]);
        bad |= hi | lo;
        prev[k] = (hi << 4) | (lo & 15);
    }
    if bad > 15 {
        return None;
    }
    c.i += 64;
    c.lit(b"\",\"time\":")?;
    c.number()?;
    c.lit(b",\"v\":1}")?;
    (c.i == body.len()).then_some((index, prev))
}

/// Each byte's value as a hex digit (either case), or 0xff.
static HEX_VALUE: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

fn nibble(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// A canonical number token as an index: an integer a u64 holds.
fn parse_index(token: &[u8]) -> Option<u64> {
    if token.is_empty() || !token.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if token.len() < 20 {
        // Nineteen digits never overflow.
        return Some(token.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')));
    }
    std::str::from_utf8(token).ok()?.parse().ok()
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn lit(&mut self, s: &[u8]) -> Option<()> {
        if self.b.get(self.i..self.i + s.len())? == s {
            self.i += s.len();
            Some(())
        } else {
            None
        }
    }

    fn value(&mut self, depth: usize) -> Option<()> {
        match self.peek()? {
            b'{' => self.object(depth + 1),
            b'[' => self.array(depth + 1),
            b'"' => self.string().map(|_| ()),
            b't' => self.lit(b"true"),
            b'f' => self.lit(b"false"),
            b'n' => self.lit(b"null"),
            _ => self.number().map(|_| ()),
        }
    }

    fn object(&mut self, depth: usize) -> Option<()> {
        if depth >= MAX_DEPTH {
            return None;
        }
        self.i += 1;
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(());
        }
        let mut last: Option<(usize, usize, bool)> = None;
        loop {
            let start = self.i;
            let escaped = self.string()?;
            let key = (start + 1, self.i - 1, escaped);
            if let Some(prev) = last {
                if self.key_order(prev, key) != std::cmp::Ordering::Less {
                    return None;
                }
            }
            last = Some(key);
            self.lit(b":")?;
            self.value(depth)?;
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// Compares two keys (their raw spans between the quotes) in JCS
    /// order.
    fn key_order(&self, a: (usize, usize, bool), b: (usize, usize, bool)) -> std::cmp::Ordering {
        let (ra, rb) = (&self.b[a.0..a.1], &self.b[b.0..b.1]);
        if !a.2 && !b.2 {
            // Up to the first differing byte the keys are the same text;
            // if both bytes there are ASCII they are whole characters, and
            // they (or the lengths) decide in any order.
            match ra.iter().zip(rb).position(|(x, y)| x != y) {
                None => return ra.len().cmp(&rb.len()),
                Some(p) if ra[p] < 0x80 && rb[p] < 0x80 => return ra[p].cmp(&rb[p]),
                Some(_) => {}
            }
        }
        let (da, db) = (unescape(ra), unescape(rb));
        da.encode_utf16().cmp(db.encode_utf16())
    }

    fn array(&mut self, depth: usize) -> Option<()> {
        if depth >= MAX_DEPTH {
            return None;
        }
        self.i += 1;
        if self.peek()? == b']' {
            self.i += 1;
            return Some(());
        }
        loop {
            self.value(depth)?;
            match self.peek()? {
                b',' => self.i += 1,
                b']' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// A canonically escaped string; whether it has escapes.
    fn string(&mut self) -> Option<bool> {
        if self.peek()? != b'"' {
            return None;
        }
        self.i += 1;
        let mut escaped = false;
        loop {
            // Runs of plain bytes (UTF-8 was checked for the whole body).
            self.i += plain_run(self.b.get(self.i..)?)?;
            match self.b[self.i] {
                b'"' => {
                    self.i += 1;
                    return Some(escaped);
                }
                b'\\' => {
                    escaped = true;
                    match *self.b.get(self.i + 1)? {
                        b'"' | b'\\' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 2,
                        b'u' => {
                            // Only control characters without a short form.
                            let h = self.b.get(self.i + 2..self.i + 6)?;
                            if h[0] != b'0' || h[1] != b'0' || !matches!(h[2], b'0' | b'1') {
                                return None;
                            }
                            if !matches!(h[3], b'0'..=b'9' | b'a'..=b'f') {
                                return None;
                            }
                            let code = (h[2] - b'0') * 16 + nibble(h[3])?;
                            if matches!(code, 0x08 | 0x09 | 0x0a | 0x0c | 0x0d) {
                                return None;
                            }
                            self.i += 6;
                        }
                        _ => return None,
                    }
                }
                // A raw control character.
                _ => return None,
            }
        }
    }

    /// A number token in its canonical form; the token.
    fn number(&mut self) -> Option<&'a [u8]> {
        let start = self.i;
        let b = self.b;
        let mut i = self.i;
        if b.get(i) == Some(&b'-') {
            i += 1;
        }
        let int_start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        let int_len = i - int_start;
        if int_len == 0 || (int_len > 1 && b[int_start] == b'0') {
            return None;
        }
        let mut simple = true;
        if b.get(i) == Some(&b'.') {
            simple = false;
            i += 1;
            let s = i;
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            if i == s {
                return None;
            }
        }
        if matches!(b.get(i), Some(b'e' | b'E')) {
            simple = false;
            i += 1;
            if matches!(b.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            let s = i;
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            if i == s {
                return None;
            }
        }
        let token = &b[start..i];
        self.i = i;
        // Short integers are their own canonical form (but not -0).
        if simple && int_len <= 15 && token != b"-0" {
            return Some(token);
        }
        let f: f64 = std::str::from_utf8(token).ok()?.parse().ok()?;
        if !f.is_finite() {
            return None;
        }
        let mut buf = ryu_js::Buffer::new();
        (buf.format_finite(f).as_bytes() == token).then_some(token)
    }
}

/// The length of the run of bytes at the start of `rest` that a string
/// holds as they are (not `"`, `\\` or a control character), if another
/// byte follows. Eight bytes at a time: a byte is flagged when it is below
/// 0x20 or equal to `"` or `\\` (the lowest flag is exact).
fn plain_run(rest: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let special = |b: u8| b == b'"' || b == b'\\' || b < 0x20;
    let mut i = 0;
    while i + 8 <= rest.len() {
        let mut word = [0u8; 8];
        word.copy_from_slice(&rest[i..i + 8]);
        let x = u64::from_le_bytes(word);
        let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
        let flags = (x.wrapping_sub(ONES * 0x20) & !x & HIGH)
            | zero(x ^ (ONES * b'"' as u64))
            | zero(x ^ (ONES * b'\\' as u64));
        if flags != 0 {
            return Some(i + (flags.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    rest[i..].iter().position(|&b| special(b)).map(|p| i + p)
}

/// A key's text with its (canonical) escapes undone.
fn unescape(raw: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len());
    let text = std::str::from_utf8(raw).unwrap_or("");
    let mut chars = text.chars();
    while let Some(ch) = chars.next() {
        if ch != '\\' {
            out.push(ch);
            continue;
        }
        match chars.next() {
            Some('b') => out.push('\u{8}'),
            Some('f') => out.push('\u{c}'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                let code = u32::from_str_radix(&hex, 16).unwrap_or(0);
                out.push(char::from_u32(code).unwrap_or('\0'));
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn canon(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        write_value(&mut out, v);
        out
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<u64>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            (0u64..1 << 54).prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            (-1e6f64..1e6).prop_map(Value::from),
            "\\PC{0,12}".prop_map(Value::String),
            "[\\x00-\\x7f\u{e000}-\u{e010}\u{10000}-\u{10010}]{0,6}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec(
                    ("[a-c\\x00-\\x1f\"\\\\\u{e000}\u{10000}é]{0,4}", inner),
                    0..6
                )
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn writes_what_the_reference_canonicalizer_writes(v in arb_json()) {
            prop_assert_eq!(canon(&v), serde_json_canonicalizer::to_vec(&v).unwrap());
        }

        /// The one-pass check agrees with parse-and-recanonicalize, on
        /// entries and on entries with a byte changed, removed or added.
        #[test]
        fn check_agrees_with_parsing(ev in arb_json(), index in any::<u64>(), time in any::<u64>(),
                                     pos in any::<usize>(), byte in any::<u8>(), op in 0u8..4) {
            let prev = [7u8; 32];
            let entry = serde_json::json!({
                "v": 1, "index": index, "prev": hex::encode(prev), "time": time,
                "kind": "run", "event": ev,
            });
            let body = serde_json_canonicalizer::to_vec(&entry).unwrap();
            let reference = |b: &[u8]| -> Option<(u64, Hash)> {
                let v: Value = serde_json::from_slice(b).ok()?;
                let obj = v.as_object()?;
                let keys: Vec<&str> = obj.keys().map(|k| k.as_str()).collect();
                if keys != ["event", "index", "kind", "prev", "time", "v"] {
                    return None;
                }
                if serde_json_canonicalizer::to_vec(&v).ok()? != b || v["v"] != 1 {
                    return None;
                }
                if !v["kind"].is_string() || !v["time"].is_number() {
                    return None;
                }
                let p = v["prev"].as_str()?;
                if p.len() != 64 { return None; }
                Some((v["index"].as_u64()?, hex::decode(p).ok()?.try_into().ok()?))
            };
            if index <= EXACT_INT {
                prop_assert_eq!(check_entry(&body), Some((index, prev)));
            }
            prop_assert_eq!(check_entry(&body), reference(&body));
            let mut bad = body.clone();
            let at = pos % bad.len();
            match op {
                0 => bad[at] = byte,
                1 => { bad.remove(at); }
                2 => bad.insert(at, byte),
                _ => bad.insert(at, b' '),
            }
            if bad != body {
                // A changed byte may still be canonical (another value);
                // then both must say so, and name the same position.
                prop_assert_eq!(check_entry(&bad), reference(&bad), "{:?}", String::from_utf8_lossy(&bad));
            }
        }
    }

    proptest! {
        #[test]
        fn plain_runs_end_at_the_first_special_byte(bytes in prop::collection::vec(any::<u8>(), 0..40)) {
            let want = bytes.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20);
            prop_assert_eq!(plain_run(&bytes), want);
        }
    }

    #[test]
    fn non_canonical_forms_are_refused() {
        let good = format!(
            "{{\"event\":{{\"a\":1}},\"index\":3,\"kind\":\"run\",\"prev\":\"{}\",\"time\":5,\"v\":1}}",
            "00".repeat(32)
        );
        assert_eq!(check_entry(good.as_bytes()), Some((3, [0; 32])));
        for (from, to) in [
            ("{\"a\":1}", "{\"a\":1.0}"),
            ("{\"a\":1}", "{\"a\":1e0}"),
            ("{\"a\":1}", "{\"a\":01}"),
            ("{\"a\":1}", "{\"a\":-0}"),
            ("{\"a\":1}", "{\"b\":1,\"a\":1}"),
            ("{\"a\":1}", "{\"a\":1,\"a\":1}"),
            ("{\"a\":1}", "{\"a\":\"\\/\"}"),
            ("{\"a\":1}", "{\"a\":\"\\u0041\"}"),
            ("{\"a\":1}", "{\"a\":\"\\u000a\"}"),
            ("{\"a\":1}", "{\"a\":\"\\u001F\"}"),
            ("{\"a\":1}", "{\"a\":\"\\ud800\"}"),
            ("{\"a\":1}", "{\"a\": 1}"),
            ("{\"a\":1}", "{\"a\":[1,]}"),
            ("\"v\":1}", "\"v\":2}"),
            ("\"index\":3", "\"index\":-3"),
            ("\"index\":3", "\"index\":3.5"),
        ] {
            let bad = good.replace(from, to);
            assert_ne!(bad, good);
            assert_eq!(check_entry(bad.as_bytes()), None, "{bad}");
        }
        let escaped = good.replace("{\"a\":1}", "{\"a\":\"\\u001f\\n\"}");
        assert!(check_entry(escaped.as_bytes()).is_some());
        let deep = good.replace(
            "{\"a\":1}",
            &format!("{}{}", "[".repeat(200), "]".repeat(200)),
        );
        assert_eq!(check_entry(deep.as_bytes()), None);
    }
}
