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
    /// Patterns of at least [`MIN_FILTERED_LEN`] bytes (every derived
    /// form, and exact values that long): a DFA run only where the gram
    /// filter says a match may start.
    long: Option<(PatternSet, GramFilter)>,
    /// Shorter patterns (exact values under 8 bytes): an automaton of its
    /// own, with aho-corasick's prefilter, so a short value does not slow
    /// down the search for everything else.
    short: Option<PatternSet>,
    /// `[REDACTED:NAME]` per secret.
    replacements: Vec<Vec<u8>>,
    /// The longest pattern, in bytes.
    max_len: usize,
    pattern_count: usize,
}

/// One automaton over some of the patterns.
struct PatternSet {
    matcher: AhoCorasick,
    /// Pattern id → index into `replacements`.
    secret_of: Vec<u32>,
}

impl PatternSet {
    fn build(patterns: &[(Form, u32)], kind: Option<AhoCorasickKind>) -> Option<Self> {
        if patterns.is_empty() {
            return None;
        }
        let matcher = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .kind(kind)
            .prefilter(true)
            .build(patterns.iter().map(|(p, _)| p.as_slice()))
            .expect("an automaton over a bounded set of secret forms builds");
        Some(PatternSet {
            matcher,
            secret_of: patterns.iter().map(|&(_, s)| s).collect(),
        })
    }

    fn found(&self, m: aho_corasick::Match) -> Found {
        Found {
            start: m.start(),
            end: m.end(),
            secret: self.secret_of[m.pattern().as_usize()] as usize,
        }
    }
}

/// A match: the bytes `start..end` are a form of secret `secret`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Found {
    start: usize,
    end: usize,
    secret: usize,
}

/// The next match from `cursor`, searching again only when the one found
/// before starts behind the cursor (`slot`: `None` before any search,
/// `Some(None)` once a search from an earlier position found nothing).
/// A leftmost-longest match from an earlier position that starts at or
/// after `cursor` is also the leftmost-longest match from `cursor`.
fn cached(
    slot: &mut Option<Option<Found>>,
    cursor: usize,
    search: impl FnOnce(usize) -> Option<Found>,
) -> Option<Found> {
    match *slot {
        Some(None) => None,
        Some(Some(found)) if found.start >= cursor => Some(found),
        _ => {
            let found = search(cursor);
            *slot = Some(found);
            found
        }
    }
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

/// Patterns shorter than this are searched without the gram filter.
const MIN_FILTERED_LEN: usize = 8;

impl GramFilter {
    fn new<'p>(patterns: impl Iterator<Item = &'p [u8]> + Clone) -> Option<Self> {
        let shortest = patterns.clone().map(|p| p.len()).min()?;
        if shortest < MIN_FILTERED_LEN {
            return None;
        }
        let gram = (shortest / 2).clamp(4, 8);
        let stride = shortest - gram + 1;
        let grams = patterns.clone().count() * stride;
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
            .field("patterns", &self.pattern_count)
            .finish_non_exhaustive()
    }
}

impl Redactor {
    /// A redactor for `(name, value)` pairs. Names appear in the output
    /// (`[REDACTED:NAME]`); values never do. Empty values are ignored.
    pub fn new<N: AsRef<str>, V: AsRef<[u8]>>(secrets: &[(N, V)]) -> Self {
        let mut long: Vec<(Form, u32)> = Vec::new();
        let mut short: Vec<(Form, u32)> = Vec::new();
        let mut replacements = Vec::with_capacity(secrets.len());
        for (index, (name, value)) in secrets.iter().enumerate() {
            replacements.push(format!("[REDACTED:{}]", name.as_ref()).into_bytes());
            for form in forms(value.as_ref()) {
                if form.len() >= MIN_FILTERED_LEN {
                    long.push((form, index as u32));
                } else {
                    short.push((form, index as u32));
                }
            }
        }
        let max_len = long
            .iter()
            .chain(&short)
            .map(|(p, _)| p.len())
            .max()
            .unwrap_or(0);
        let pattern_count = long.len() + short.len();
        let filter = GramFilter::new(long.iter().map(|(p, _)| p.as_slice()));
        let long = PatternSet::build(&long, Some(AhoCorasickKind::DFA)).map(|set| {
            (
                set,
                filter.expect("long patterns are long enough to filter"),
            )
        });
        Redactor {
            long,
            short: PatternSet::build(&short, None),
            replacements,
            max_len,
            pattern_count,
        }
    }

    /// A redactor that changes nothing.
    pub fn empty() -> Arc<Self> {
        Arc::new(Redactor::new::<&str, &[u8]>(&[]))
    }

    /// Whether there is anything to redact.
    pub fn is_empty(&self) -> bool {
        self.long.is_none() && self.short.is_none()
    }

    /// How many patterns (forms of all values) are searched for.
    pub fn pattern_count(&self) -> usize {
        self.pattern_count
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

    /// The leftmost-longest match of a long pattern in `hay[from..]`:
    /// exactly what the DFA alone finds, with the gram filter choosing
    /// where to run it.
    fn find_long(&self, hay: &[u8], from: usize) -> Option<Found> {
        let (set, filter) = self.long.as_ref()?;
        let stride = filter.stride;
        let mut at = from;
        while at + 8 <= hay.len() {
            if filter.maybe(hay, at) {
                // A match this sample covers starts in (at - stride, at]
                // and ends within max_len of its start.
                let lo = from.max(at.saturating_sub(stride - 1));
                let hi = hay.len().min(at + self.max_len);
                if let Some(found) = set.matcher.find(Input::new(hay).range(lo..hi)) {
                    if found.start() <= at {
                        return Some(set.found(found));
                    }
                }
            }
            at += stride;
        }
        // Too few bytes left to sample: search the rest directly, from the
        // first start no sample covered.
        let lo = from.max(at.saturating_sub(stride - 1));
        let found = set.matcher.find(Input::new(hay).range(lo..))?;
        Some(set.found(found))
    }

    fn find_short(&self, hay: &[u8], from: usize) -> Option<Found> {
        let set = self.short.as_ref()?;
        let found = set.matcher.find(Input::new(hay).range(from..))?;
        Some(set.found(found))
    }

    /// Appends `hay` to `out` with every match that starts before
    /// `decided` replaced, and returns how many bytes of `hay` it used:
    /// at least `decided`, or to the end of the last match. A match is
    /// only final once `max_len` bytes after its start are known (a longer
    /// pattern could still match there), which the caller ensures by
    /// passing `decided <= hay.len() - (max_len - 1)` unless at the end.
    /// Returns whether anything was replaced, too.
    fn redact_into(&self, hay: &[u8], decided: usize, out: &mut Vec<u8>) -> (usize, bool) {
        let mut cursor = 0;
        let mut replaced = false;
        let (mut next_long, mut next_short) = (None, None);
        while cursor < decided {
            let long = cached(&mut next_long, cursor, |from| self.find_long(hay, from));
            let short = cached(&mut next_short, cursor, |from| self.find_short(hay, from));
            // Leftmost-longest over both sets: the earlier start, and of
            // two at the same start the longer.
            let found = match (long, short) {
                (Some(l), Some(s))
                    if (s.start, std::cmp::Reverse(s.end))
                        < (l.start, std::cmp::Reverse(l.end)) =>
                {
                    s
                }
                (Some(l), _) => l,
                (None, s) => match s {
                    Some(s) => s,
                    None => break,
                },
            };
            if found.start >= decided {
                break;
            }
            out.extend_from_slice(&hay[cursor..found.start]);
            out.extend_from_slice(&self.replacements[found.secret]);
            cursor = found.end;
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

    /// Every match, in order, by the long patterns' DFA alone.
    fn unfiltered(r: &Redactor, hay: &[u8]) -> Vec<Found> {
        let (set, _) = r.long.as_ref().expect("long patterns");
        set.matcher.find_iter(hay).map(|m| set.found(m)).collect()
    }

    /// Every match, in order, through the gram filter.
    fn filtered(r: &Redactor, hay: &[u8]) -> Vec<Found> {
        let mut found = Vec::new();
        let mut at = 0;
        while let Some(m) = r.find_long(hay, at) {
            found.push(m);
            at = m.end;
        }
        found
    }

    /// Redaction by one automaton over every form of every value.
    fn reference(secrets: &[(String, Vec<u8>)], hay: &[u8]) -> Vec<u8> {
        let mut patterns = Vec::new();
        let mut secret_of = Vec::new();
        for (i, (_, v)) in secrets.iter().enumerate() {
            for form in forms(v) {
                patterns.push(form.to_vec());
                secret_of.push(i);
            }
        }
        let matcher = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&patterns)
            .unwrap();
        let mut out = Vec::new();
        let mut last = 0;
        for m in matcher.find_iter(hay) {
            out.extend_from_slice(&hay[last..m.start()]);
            let name = &secrets[secret_of[m.pattern().as_usize()]].0;
            out.extend_from_slice(format!("[REDACTED:{name}]").as_bytes());
            last = m.end();
        }
        out.extend_from_slice(&hay[last..]);
        out
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
            prop_assert!(r.long.is_some() && r.short.is_none());
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

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Short values (their own automaton) mixed with long ones (the
        /// filtered DFA) redact exactly like one automaton over all.
        #[test]
        fn short_and_long_sets_combine_leftmost_longest(
            values in prop::collection::vec(
                prop_oneof![
                    "[a-c]{1,7}".prop_map(String::into_bytes),
                    "[a-c0-9]{8,12}".prop_map(String::into_bytes),
                    prop::collection::vec(any::<u8>(), 1..20),
                ],
                1..5,
            ),
            plan in prop::collection::vec(("[a-c0-9=]{0,12}", any::<prop::sample::Index>()), 0..8),
            cuts in prop::collection::vec(any::<usize>(), 0..6),
        ) {
            let named: Vec<(String, Vec<u8>)> = values
                .iter()
                .enumerate()
                .map(|(i, v)| (format!("S{i}"), v.clone()))
                .collect();
            let r = Arc::new(Redactor::new(&named));
            let all: Vec<Form> = values.iter().flat_map(|v| forms(v)).collect();
            let mut hay = Vec::new();
            for (fill, pick) in &plan {
                hay.extend_from_slice(fill.as_bytes());
                let form = pick.get(&all);
                hay.extend_from_slice(form.as_slice());
            }
            let want = reference(&named, &hay);
            prop_assert_eq!(&r.redact(&hay), &want);
            let mut points: Vec<usize> = cuts.iter().map(|c| c % (hay.len() + 1)).collect();
            points.sort_unstable();
            let mut stream = r.stream();
            let mut out = Vec::new();
            let mut last = 0;
            for p in points {
                stream.push(&hay[last..p], &mut out);
                last = p;
            }
            stream.push(&hay[last..], &mut out);
            stream.finish(&mut out);
            prop_assert_eq!(out, want);
        }
    }

    #[test]
    fn filter_geometry() {
        let r = Redactor::new(&[("A", vec![7u8; 16])]);
        let (_, filter) = r.long.as_ref().expect("filter");
        // Shortest pattern 16 bytes: 8-byte grams every 9 bytes.
        assert_eq!((filter.stride, filter.mask), (9, u64::MAX));
        // A 5-byte value: itself in the short set, its hex in the long.
        let r = Redactor::new(&[("A", b"short")]);
        assert!(r.long.is_some() && r.short.is_some());
        let r = Redactor::new(&[("A", b"ab")]);
        assert!(r.long.is_none() && r.short.is_some());
    }
}
