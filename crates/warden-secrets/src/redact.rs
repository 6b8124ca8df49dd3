//! Redaction of leased secret values from everything a run emits.
//!
//! [`Redactor::new`] expands every value into the forms a program might
//! print it in ([`forms`]: exact bytes, hex, base64 at every alignment,
//! URL and JSON escapes) and builds one leftmost-longest multi-pattern
//! matcher over all of them; each match becomes `[REDACTED:NAME]`.
//! [`StreamRedactor`] applies it to a stream cut into arbitrary chunks,
//! holding back only the bytes that could still begin a match (fewer than
//! the longest pattern), so the output equals redacting the whole stream
//! at once without ever buffering it.
//!
//! The patterns themselves live inside the matcher's tables, which are
//! not wiped on drop (the matcher offers no way to); every buffer of ours
//! that held a value or a form of one is.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use aho_corasick::{AhoCorasick, AhoCorasickKind, Input, MatchKind};
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use zeroize::{Zeroize, Zeroizing};

/// Derived forms (every form but the exact value) shorter than this are
/// not redacted: a short encoding is common in ordinary output, and
/// replacing it everywhere would destroy the output while protecting a
/// value that short anyway cannot be kept secret. The exact value is
/// always redacted, however short.
pub const MIN_DERIVED_LEN: usize = 8;

type Form = Zeroizing<Vec<u8>>;

/// Every form of `value` that is redacted, deduplicated, the exact value
/// first. Derived forms shorter than [`MIN_DERIVED_LEN`] are left out.
pub fn forms(value: &[u8]) -> Vec<Form> {
    let mut all: Vec<Form> = Vec::new();
    if value.is_empty() {
        return all;
    }
    all.push(Zeroizing::new(value.to_vec()));
    hex_forms(value, &mut all);
    base64_forms(value, &mut all);
    url_forms(value, &mut all);
    if let Ok(text) = std::str::from_utf8(value) {
        json_forms(text, &mut all);
    }
    let mut seen: HashSet<&[u8]> = HashSet::new();
    let mut keep = vec![false; all.len()];
    for (i, form) in all.iter().enumerate() {
        keep[i] = (i == 0 || form.len() >= MIN_DERIVED_LEN) && seen.insert(form.as_slice());
    }
    drop(seen);
    let mut keep = keep.into_iter();
    all.retain(|_| keep.next().unwrap_or(false));
    all
}

fn hex_forms(value: &[u8], all: &mut Vec<Form>) {
    for upper in [false, true] {
        let mut form = Zeroizing::new(vec![0u8; value.len() * 2]);
        hex::encode_to_slice(value, &mut form).expect("buffer is twice the value");
        if upper {
            form.make_ascii_uppercase();
        }
        all.push(form);
    }
}

/// Base64 of `value` as it appears inside a longer base64 text, for each
/// of the three offsets (mod 3) the value can start at. With `a` bytes
/// before it, the characters that depend only on the value's bits are
/// those from `ceil(8a/6)` to `floor(8(a+len)/6)` (the "core"); the
/// characters around them also carry bits of the neighbours. When the
/// value ends the text, its last partial character and the padding are
/// determined too, so "core + tail" (unpadded and padded) are forms as
/// well. Standard and URL-safe alphabets both.
fn base64_forms(value: &[u8], all: &mut Vec<Form>) {
    for align in 0..3usize {
        let mut shifted = Zeroizing::new(vec![0u8; align + value.len()]);
        shifted[align..].copy_from_slice(value);
        let start = (8 * align).div_ceil(6);
        let core_end = 8 * (align + value.len()) / 6;
        for (unpadded, padded) in [(&STANDARD_NO_PAD, &STANDARD), (&URL_SAFE_NO_PAD, &URL_SAFE)] {
            let raw = Zeroizing::new(unpadded.encode(&*shifted));
            all.push(Zeroizing::new(raw.as_bytes()[start..core_end].to_vec()));
            all.push(Zeroizing::new(raw.as_bytes()[start..].to_vec()));
            let pad = Zeroizing::new(padded.encode(&*shifted));
            all.push(Zeroizing::new(pad.as_bytes()[start..].to_vec()));
        }
    }
}

/// Percent-encoding of every byte outside RFC 3986's unreserved set, with
/// upper- and lowercase hex digits, and the same with `+` for a space (as
/// HTML forms encode it).
fn url_forms(value: &[u8], all: &mut Vec<Form>) {
    let has_space = value.contains(&b' ');
    for upper in [true, false] {
        for plus_for_space in [false, true] {
            if plus_for_space && !has_space {
                continue;
            }
            let mut form = Zeroizing::new(Vec::with_capacity(value.len() * 3));
            for &b in value {
                if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                    form.push(b);
                } else if b == b' ' && plus_for_space {
                    form.push(b'+');
                } else {
                    form.push(b'%');
                    push_hex_byte(&mut form, b, upper);
                }
            }
            all.push(form);
        }
    }
}

fn push_hex_byte(out: &mut Vec<u8>, b: u8, upper: bool) {
    let digits = if upper {
        b"0123456789ABCDEF"
    } else {
        b"0123456789abcdef"
    };
    out.push(digits[usize::from(b >> 4)]);
    out.push(digits[usize::from(b & 15)]);
}

/// How a JSON encoder escapes a string's characters.
#[derive(Clone, Copy, Default)]
struct JsonStyle {
    /// Every character but ASCII letters and digits as `\uXXXX`.
    all_but_alnum: bool,
    /// Non-ASCII characters as `\uXXXX` (Python's default, PHP's).
    ascii_only: bool,
    /// `/` as `\/` (PHP's default).
    escape_slash: bool,
    /// `<`, `>`, `&`, U+2028 and U+2029 as `\uXXXX` (Go's default).
    html_safe: bool,
    /// Uppercase hex digits in `\uXXXX`.
    upper: bool,
}

/// The string's characters as a JSON encoder writes them between the
/// quotes: serde_json's escapes (`\"`, `\\`, `\b \f \n \r \t`, `\u00XX`
/// for other controls) plus the variants of common encoders.
fn json_forms(text: &str, all: &mut Vec<Form>) {
    let plain = JsonStyle::default();
    let styles = [
        plain,
        JsonStyle {
            ascii_only: true,
            ..plain
        },
        JsonStyle {
            ascii_only: true,
            upper: true,
            ..plain
        },
        JsonStyle {
            all_but_alnum: true,
            ..plain
        },
        JsonStyle {
            all_but_alnum: true,
            upper: true,
            ..plain
        },
        JsonStyle {
            html_safe: true,
            ..plain
        },
        JsonStyle {
            escape_slash: true,
            ..plain
        },
        JsonStyle {
            escape_slash: true,
            ascii_only: true,
            ..plain
        },
    ];
    for style in styles {
        all.push(json_escape(text, style));
    }
}

fn json_escape(text: &str, style: JsonStyle) -> Form {
    let mut out = Zeroizing::new(Vec::with_capacity(text.len() * 2));
    let mut units = [0u16; 2];
    for c in text.chars() {
        let as_unicode = if style.all_but_alnum {
            !c.is_ascii_alphanumeric()
        } else {
            (style.ascii_only && !c.is_ascii())
                || (style.html_safe && matches!(c, '<' | '>' | '&' | '\u{2028}' | '\u{2029}'))
        };
        if as_unicode {
            for unit in c.encode_utf16(&mut units).iter() {
                out.extend_from_slice(b"\\u");
                push_hex_byte(&mut out, (unit >> 8) as u8, style.upper);
                push_hex_byte(&mut out, (unit & 0xff) as u8, style.upper);
            }
            continue;
        }
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '/' if style.escape_slash => out.extend_from_slice(b"\\/"),
            '\u{8}' => out.extend_from_slice(b"\\b"),
            '\u{c}' => out.extend_from_slice(b"\\f"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c if (c as u32) < 0x20 => {
                out.extend_from_slice(b"\\u00");
                push_hex_byte(&mut out, c as u8, style.upper);
            }
            c => {
                let mut utf8 = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
                utf8.zeroize();
            }
        }
    }
    units.zeroize();
    out
}

/// Redacts the secrets leased to one invocation. Built once per
/// invocation; shared by its streams ([`Redactor::stream`]).
pub struct Redactor {
    /// `None` when there is nothing to redact.
    matcher: Option<AhoCorasick>,
    /// Pattern id → index into `replacements`.
    pattern_secret: Vec<u32>,
    /// `[REDACTED:NAME]` per secret.
    replacements: Vec<Vec<u8>>,
    /// The longest pattern, in bytes.
    max_len: usize,
    /// Skips most of the text without running the matcher over it;
    /// `None` when some pattern is too short for it.
    filter: Option<GramFilter>,
}

/// A prefilter that looks at one K-byte gram every S bytes, S = W - K + 1
/// with W the shortest pattern, and runs the matcher only near grams that
/// occur at offsets 0..S of some pattern. Every occurrence of a pattern
/// starting at i covers a sampled position j in [i, i+S), and the gram at
/// j lies within the pattern's first W bytes, at offset j - i < S: so a
/// position whose gram is not in the set cannot be inside the first S
/// bytes of any match, and no match is missed. The set is a bitmap of
/// hashed grams sized for a false-positive rate of ~1/512 per sample.
struct GramFilter {
    bits: Vec<u64>,
    /// 64 - log2(bitmap bits): the hash's top bits index the bitmap.
    shift: u32,
    /// Keeps the low K bytes of an 8-byte little-endian load.
    mask: u64,
    /// S: bytes between samples.
    stride: usize,
}

/// Patterns shorter than this disable the gram filter (the matcher then
/// scans every byte, at about half the speed).
const MIN_FILTERED_LEN: usize = 8;

impl GramFilter {
    fn new(patterns: &[Form]) -> Option<Self> {
        let shortest = patterns.iter().map(|p| p.len()).min()?;
        if shortest < MIN_FILTERED_LEN {
            return None;
        }
        let gram = (shortest / 2).clamp(4, 8);
        let stride = shortest - gram + 1;
        let grams = patterns.len() * stride;
        let bits_log2 = (grams * 512)
            .next_power_of_two()
            .trailing_zeros()
            .clamp(16, 26);
        let mut filter = GramFilter {
            bits: vec![0; 1 << (bits_log2 - 6)],
            shift: 64 - bits_log2,
            mask: if gram == 8 {
                u64::MAX
            } else {
                (1u64 << (8 * gram)) - 1
            },
            stride,
        };
        for pattern in patterns {
            for offset in 0..stride {
                let mut word = [0u8; 8];
                word[..gram].copy_from_slice(&pattern[offset..offset + gram]);
                let slot = filter.slot(u64::from_le_bytes(word));
                filter.bits[slot >> 6] |= 1 << (slot & 63);
                word.zeroize();
            }
        }
        Some(filter)
    }

    #[inline(always)]
    fn slot(&self, word: u64) -> usize {
        ((word & self.mask).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> self.shift) as usize
    }

    #[inline(always)]
    fn maybe(&self, hay: &[u8], at: usize) -> bool {
        let word = u64::from_le_bytes(hay[at..at + 8].try_into().expect("8 bytes"));
        let slot = self.slot(word);
        self.bits[slot >> 6] & (1 << (slot & 63)) != 0
    }
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<_> = self
            .replacements
            .iter()
            .map(|r| String::from_utf8_lossy(r))
            .collect();
        f.debug_struct("Redactor")
            .field("replacements", &names)
            .field("patterns", &self.pattern_secret.len())
            .finish_non_exhaustive()
    }
}

impl Redactor {
    /// A redactor for `(name, value)` pairs. Names appear in the output
    /// (`[REDACTED:NAME]`); values never do. Empty values are ignored.
    pub fn new<N: AsRef<str>, V: AsRef<[u8]>>(secrets: &[(N, V)]) -> Self {
        let mut patterns: Vec<Form> = Vec::new();
        let mut pattern_secret = Vec::new();
        let mut replacements = Vec::with_capacity(secrets.len());
        for (index, (name, value)) in secrets.iter().enumerate() {
            replacements.push(format!("[REDACTED:{}]", name.as_ref()).into_bytes());
            for form in forms(value.as_ref()) {
                patterns.push(form);
                pattern_secret.push(index as u32);
            }
        }
        let max_len = patterns.iter().map(|p| p.len()).max().unwrap_or(0);
        let filter = GramFilter::new(&patterns);
        let matcher = (!patterns.is_empty()).then(|| {
            AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .kind(Some(AhoCorasickKind::DFA))
                .prefilter(true)
                .build(patterns.iter().map(|p| p.as_slice()))
                .expect("a DFA over a bounded set of secret forms builds")
        });
        Redactor {
            matcher,
            pattern_secret,
            replacements,
            max_len,
            filter,
        }
    }

    /// A redactor that changes nothing.
    pub fn empty() -> Arc<Self> {
        Arc::new(Redactor::new::<&str, &[u8]>(&[]))
    }

    /// Whether there is anything to redact.
    pub fn is_empty(&self) -> bool {
        self.matcher.is_none()
    }

    /// How many patterns (forms of all values) are searched for.
    pub fn pattern_count(&self) -> usize {
        self.pattern_secret.len()
    }

    /// The longest pattern, in bytes: a stream holds back one byte less.
    pub fn longest_pattern(&self) -> usize {
        self.max_len
    }

    /// A streaming redactor for one output stream.
    pub fn stream(self: &Arc<Self>) -> StreamRedactor {
        StreamRedactor::new(Arc::clone(self))
    }

    /// Redacts a whole buffer.
    pub fn redact(&self, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(bytes.len());
        self.redact_into(bytes, bytes.len(), &mut out);
        out
    }

    /// Redacts a report field, error message, log line or ledger entry.
    /// (A match can split a UTF-8 sequence only when a value is not valid
    /// UTF-8; the pieces left are then shown lossily.)
    pub fn redact_str(&self, text: &str) -> String {
        if self.is_empty() {
            return text.to_string();
        }
        match String::from_utf8(self.redact(text.as_bytes())) {
            Ok(text) => text,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        }
    }

    /// The leftmost-longest match in `hay[from..]`: exactly what the
    /// matcher alone finds, but with the gram filter choosing where to run
    /// it.
    fn find(&self, matcher: &AhoCorasick, hay: &[u8], from: usize) -> Option<aho_corasick::Match> {
        let Some(filter) = &self.filter else {
            return matcher.find(Input::new(hay).range(from..));
        };
        let stride = filter.stride;
        let mut at = from;
        while at + 8 <= hay.len() {
            if filter.maybe(hay, at) {
                // A match this sample covers starts in (at - stride, at]
                // and ends within max_len of its start.
                let lo = from.max(at.saturating_sub(stride - 1));
                let hi = hay.len().min(at + self.max_len);
                if let Some(found) = matcher.find(Input::new(hay).range(lo..hi)) {
                    if found.start() <= at {
                        return Some(found);
                    }
                }
            }
            at += stride;
        }
        // Too few bytes left to sample: search the rest directly, from the
        // first start no sample covered.
        let lo = from.max(at.saturating_sub(stride - 1));
        matcher.find(Input::new(hay).range(lo..))
    }

    /// Appends `hay` to `out` with every match that starts before
    /// `decided` replaced, and returns how many bytes of `hay` it used:
    /// at least `decided`, or to the end of the last match. A match is
    /// only final once `max_len` bytes after its start are known (a longer
    /// pattern could still match there), which the caller ensures by
    /// passing `decided <= hay.len() - (max_len - 1)` unless at the end.
    /// Returns whether anything was replaced, too.
    fn redact_into(&self, hay: &[u8], decided: usize, out: &mut Vec<u8>) -> (usize, bool) {
        let Some(matcher) = &self.matcher else {
            out.extend_from_slice(&hay[..decided]);
            return (decided, false);
        };
        let mut cursor = 0;
        let mut replaced = false;
        while cursor < decided {
            let Some(found) = self.find(matcher, hay, cursor) else {
                break;
            };
            if found.start() >= decided {
                break;
            }
            out.extend_from_slice(&hay[cursor..found.start()]);
            let secret = self.pattern_secret[found.pattern().as_usize()] as usize;
            out.extend_from_slice(&self.replacements[secret]);
            cursor = found.end();
            replaced = true;
        }
        if cursor < decided {
            out.extend_from_slice(&hay[cursor..decided]);
            cursor = decided;
        }
        (cursor, replaced)
    }
}

/// Redacts one output stream (stdout, stderr, a log) chunk by chunk.
pub struct StreamRedactor {
    redactor: Arc<Redactor>,
    /// Bytes not yet emitted: fewer than the longest pattern after each
    /// `push`. Wiped as it is consumed and on drop.
    pending: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for StreamRedactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamRedactor")
            .field("held_back", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl StreamRedactor {
    pub fn new(redactor: Arc<Redactor>) -> Self {
        StreamRedactor {
            redactor,
            pending: Zeroizing::new(Vec::new()),
        }
    }

    /// Redacts `chunk` (the stream's next bytes) and appends to `out`
    /// everything that can no longer be part of a match.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        if self.redactor.is_empty() {
            out.extend_from_slice(chunk);
            return;
        }
        self.append(chunk);
        let keep = self.redactor.max_len - 1;
        let decided = self.pending.len().saturating_sub(keep);
        if decided == 0 {
            return;
        }
        let (used, replaced) = self.redactor.redact_into(&self.pending, decided, out);
        self.consume(used, replaced);
    }

    /// Ends the stream: appends whatever was held back, redacted.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        let len = self.pending.len();
        let (used, replaced) = self.redactor.redact_into(&self.pending, len, out);
        self.consume(used, replaced);
    }

    /// How many bytes are held back now.
    pub fn held_back(&self) -> usize {
        self.pending.len()
    }

    fn append(&mut self, chunk: &[u8]) {
        let needed = self.pending.len() + chunk.len();
        if needed > self.pending.capacity() {
            // Grow by hand so the old buffer is wiped, not just freed.
            let mut grown =
                Zeroizing::new(Vec::with_capacity(needed.max(2 * self.pending.capacity())));
            grown.extend_from_slice(&self.pending);
            self.pending = grown;
        }
        self.pending.extend_from_slice(chunk);
    }

    fn consume(&mut self, used: usize, replaced: bool) {
        let before = self.pending.len();
        self.pending.drain(..used);
        if replaced {
            // The drained bytes held a value: wipe their stale copies.
            let stale = before - self.pending.len();
            for byte in &mut self.pending.spare_capacity_mut()[..stale] {
                byte.write(0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every match, in order, by the matcher alone over the whole text.
    fn unfiltered(r: &Redactor, hay: &[u8]) -> Vec<(usize, usize, usize)> {
        let matcher = r.matcher.as_ref().expect("patterns");
        matcher
            .find_iter(hay)
            .map(|m| (m.start(), m.end(), m.pattern().as_usize()))
            .collect()
    }

    /// Every match, in order, through the gram filter.
    fn filtered(r: &Redactor, hay: &[u8]) -> Vec<(usize, usize, usize)> {
        let matcher = r.matcher.as_ref().expect("patterns");
        let mut found = Vec::new();
        let mut at = 0;
        while let Some(m) = r.find(matcher, hay, at) {
            found.push((m.start(), m.end(), m.pattern().as_usize()));
            at = m.end();
        }
        found
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn the_gram_filter_misses_nothing(
            values in prop::collection::vec(prop::collection::vec(any::<u8>(), 8..30), 1..4),
            plan in prop::collection::vec(
                ("[a-f0-9A-Z+/=]{0,20}", any::<prop::sample::Index>(), 0usize..6),
                0..8,
            ),
        ) {
            let named: Vec<(String, Vec<u8>)> = values
                .iter()
                .enumerate()
                .map(|(i, v)| (format!("S{i}"), v.clone()))
                .collect();
            let r = Redactor::new(&named);
            prop_assert!(r.filter.is_some());
            let all: Vec<Form> = values.iter().flat_map(|v| forms(v)).collect();
            let mut hay = Vec::new();
            for (fill, pick, cut) in &plan {
                hay.extend_from_slice(fill.as_bytes());
                let form = pick.get(&all);
                // Sometimes only part of a form, to tease near misses.
                hay.extend_from_slice(&form[..form.len().saturating_sub(*cut)]);
            }
            prop_assert_eq!(filtered(&r, &hay), unfiltered(&r, &hay));
        }
    }

    #[test]
    fn filter_geometry() {
        let r = Redactor::new(&[("A", vec![7u8; 16])]);
        let filter = r.filter.as_ref().expect("filter");
        // Shortest pattern 16 bytes: 8-byte grams every 9 bytes.
        assert_eq!((filter.stride, filter.mask), (9, u64::MAX));
        assert!(Redactor::new(&[("A", b"short")]).filter.is_none());
    }
}
