//! The redactor: every form, every alignment, every chunking.

use std::sync::Arc;

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use proptest::prelude::*;
use warden_secrets::redact::forms;
use warden_secrets::{Redactor, StreamRedactor, MIN_DERIVED_LEN};

const MARK: &str = "[REDACTED:TOKEN]";

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

fn redactor(value: &[u8]) -> Arc<Redactor> {
    Arc::new(Redactor::new(&[("TOKEN", value)]))
}

fn stream(r: &Arc<Redactor>, pieces: &[&[u8]]) -> Vec<u8> {
    let mut s = r.stream();
    let mut out = Vec::new();
    for piece in pieces {
        s.push(piece, &mut out);
        assert!(s.held_back() < r.longest_pattern().max(1));
    }
    s.finish(&mut out);
    out
}

fn redacted_once(r: &Redactor, text: &[u8]) -> String {
    String::from_utf8(r.redact(text)).unwrap()
}

#[test]
fn every_named_form_is_redacted() {
    let value = "p@ss/w0rd+\"quoted\"\\ é ✓ <&> 😀";
    let v = value.as_bytes();
    let r = redactor(v);
    let json = serde_json::to_string(value).unwrap();
    let named: Vec<(&str, String)> = vec![
        ("exact", value.to_string()),
        ("hex", hex::encode(v)),
        ("HEX", hex::encode_upper(v)),
        ("base64", STANDARD.encode(v)),
        ("base64 unpadded", STANDARD_NO_PAD.encode(v)),
        ("base64url", URL_SAFE.encode(v)),
        ("base64url unpadded", URL_SAFE_NO_PAD.encode(v)),
        ("json (serde_json)", json[1..json.len() - 1].to_string()),
        (
            "json ascii (python)",
            "p@ss/w0rd+\\\"quoted\\\"\\\\ \\u00e9 \\u2713 <&> \\ud83d\\ude00".to_string(),
        ),
        (
            "json go",
            "p@ss/w0rd+\\\"quoted\\\"\\\\ é ✓ \\u003c\\u0026\\u003e 😀".to_string(),
        ),
        (
            "json php",
            "p@ss\\/w0rd+\\\"quoted\\\"\\\\ \\u00e9 \\u2713 <&> \\ud83d\\ude00".to_string(),
        ),
        (
            "url",
            "p%40ss%2Fw0rd%2B%22quoted%22%5C%20%C3%A9%20%E2%9C%93%20%3C%26%3E%20%F0%9F%98%80"
                .to_string(),
        ),
        (
            "url lowercase",
            "p%40ss%2fw0rd%2b%22quoted%22%5c%20%c3%a9%20%e2%9c%93%20%3c%26%3e%20%f0%9f%98%80"
                .to_string(),
        ),
        (
            "form url",
            "p%40ss%2Fw0rd%2B%22quoted%22%5C+%C3%A9+%E2%9C%93+%3C%26%3E+%F0%9F%98%80".to_string(),
        ),
    ];
    for (what, form) in named {
        let text = format!("before {form} after");
        assert_eq!(
            redacted_once(&r, text.as_bytes()),
            format!("before {MARK} after"),
            "{what}: {form}"
        );
    }
    // \u-escapes of every character but ASCII letters and digits, in
    // both hex cases.
    for upper in [false, true] {
        let mut escaped = String::new();
        for c in value.chars() {
            if c.is_ascii_alphanumeric() {
                escaped.push(c);
            } else {
                for unit in c.encode_utf16(&mut [0; 2]) {
                    escaped.push_str(&if upper {
                        format!("\\u{unit:04X}")
                    } else {
                        format!("\\u{unit:04x}")
                    });
                }
            }
        }
        let text = format!("x{escaped}y");
        assert_eq!(
            redacted_once(&r, text.as_bytes()),
            format!("x{MARK}y"),
            "{escaped}"
        );
    }
}

#[test]
fn json_form_matches_serde_json_for_control_characters() {
    let value = "line1\nline2\ttab\u{1}\u{7f}\r\u{8}\u{c}end";
    let json = serde_json::to_string(value).unwrap();
    let r = redactor(value.as_bytes());
    let text = format!("{{\"msg\":{json}}}");
    assert_eq!(
        redacted_once(&r, text.as_bytes()),
        format!("{{\"msg\":\"{MARK}\"}}")
    );
    // The same value inside a ledger entry, through redact_str.
    let entry = serde_json::json!({"error": format!("failed with {value}")}).to_string();
    let clean = r.redact_str(&entry);
    assert!(!clean.contains(&json[1..json.len() - 1]), "{clean}");
    assert!(clean.contains(MARK), "{clean}");
}

/// The secret inside longer base64 text at every offset: what remains
/// around the marker is only the characters that also carry bits of the
/// neighbours (at most one on each side), never the value's own.
#[test]
fn base64_at_every_alignment_with_random_neighbours() {
    let value = b"sk_live_0123456789abcdefXYZ";
    let r = redactor(value);
    let mut seed = 1u64;
    let mut byte = || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) as u8
    };
    for prefix_len in 0usize..12 {
        for suffix_len in 0..5 {
            for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
                let prefix: Vec<u8> = (0..prefix_len).map(|_| byte()).collect();
                let suffix: Vec<u8> = (0..suffix_len).map(|_| byte()).collect();
                let plain = [&prefix[..], value, &suffix[..]].concat();
                let encoded = engine.encode(&plain);
                let out = redacted_once(&r, encoded.as_bytes());
                let at = out
                    .find(MARK)
                    .unwrap_or_else(|| panic!("not found in {encoded}"));
                let kept_before = at;
                let kept_after = out.len() - at - MARK.len();
                // Characters wholly inside the value's bits must be gone.
                let first_inner = (8 * prefix_len).div_ceil(6);
                let last_inner = 8 * (prefix_len + value.len()) / 6;
                assert!(
                    kept_before <= first_inner,
                    "{prefix_len}/{suffix_len}: {out}"
                );
                assert!(
                    encoded.len() - kept_after >= last_inner,
                    "{prefix_len}/{suffix_len}: {encoded} -> {out}"
                );
                assert_eq!(&out[..at], &encoded[..at]);
                assert_eq!(
                    &out[at + MARK.len()..],
                    &encoded[encoded.len() - kept_after..]
                );
            }
        }
    }
}

#[test]
fn short_values_are_redacted_exactly_but_not_their_short_forms() {
    let r = redactor(b"abc");
    assert_eq!(
        redacted_once(&r, b"xabcx 616263 YWJj"),
        format!("x{MARK}x 616263 YWJj")
    );
    // 8 bytes: hex (16 chars) and base64 (10+ chars) are long enough.
    let r = redactor(b"abcdefgh");
    let text = format!(
        "{} {}",
        hex::encode("abcdefgh"),
        STANDARD.encode("abcdefgh")
    );
    assert_eq!(redacted_once(&r, text.as_bytes()), format!("{MARK} {MARK}"));
    assert!(forms(b"abcdefgh")
        .iter()
        .skip(1)
        .all(|f| f.len() >= MIN_DERIVED_LEN));
}

#[test]
fn output_without_secrets_is_unchanged_and_empty_values_are_ignored() {
    let r = Arc::new(Redactor::new(&[
        ("EMPTY", &b""[..]),
        ("TOKEN", &b"0123456789abcdef"[..]),
    ]));
    let text = b"nothing to see here, 0123456789abcde and 123456789abcdef".repeat(100);
    assert_eq!(stream(&r, &[&text[..100], &text[100..]]), text);
    let none = Redactor::empty();
    assert!(none.is_empty());
    assert_eq!(stream(&none, &[b"a", b"b"]), b"ab");
    assert_eq!(none.redact_str("x"), "x");
}

#[test]
fn leftmost_longest_between_secrets() {
    let r = Redactor::new(&[
        ("SHORT", &b"secret-one"[..]),
        ("LONG", &b"secret-one-two"[..]),
    ]);
    assert_eq!(
        redacted_once(&r, b"a secret-one-two b"),
        "a [REDACTED:LONG] b"
    );
    assert_eq!(
        redacted_once(&r, b"a secret-one-tw b"),
        "a [REDACTED:SHORT]-tw b"
    );
}

/// A value split at every point, two and three ways, in every form.
#[test]
fn every_split_point_gives_the_same_output() {
    let value = b"Zm9v-bar_baz.9876543210";
    let r = redactor(value);
    for form in forms(value) {
        let text = [b"<start> ".as_slice(), &form, b" <mid> ", &form, b" <end>"].concat();
        let whole = r.redact(&text);
        assert!(!contains(&whole, &form));
        assert_eq!(
            whole
                .windows(MARK.len())
                .filter(|w| *w == MARK.as_bytes())
                .count(),
            2
        );
        for i in 0..=text.len() {
            assert_eq!(stream(&r, &[&text[..i], &text[i..]]), whole, "split at {i}");
        }
        if form.len() == value.len() {
            for i in 0..=text.len() {
                for j in i..=text.len() {
                    let out = stream(&r, &[&text[..i], &text[i..j], &text[j..]]);
                    assert_eq!(out, whole, "split at {i}, {j}");
                }
            }
        }
    }
    // One byte at a time.
    let text = [b"aa".as_slice(), value, b"bb"].concat();
    let pieces: Vec<&[u8]> = text.chunks(1).collect();
    assert_eq!(stream(&r, &pieces), format!("aa{MARK}bb").into_bytes());
}

#[test]
fn debug_shows_no_values() {
    let r = redactor(b"super-secret-value");
    let mut s = r.stream();
    let mut out = Vec::new();
    s.push(b"super-secret", &mut out);
    let shown = format!("{r:?} {s:?}");
    assert!(!shown.contains("super"), "{shown}");
}

fn value_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 8..40),
        "[A-Za-z0-9_.+/=-]{8,40}".prop_map(String::into_bytes),
    ]
}

/// Filler made of the characters encoded forms are made of.
fn filler() -> impl Strategy<Value = Vec<u8>> {
    "[A-Za-z0-9+/=%\\\\ \n\"_-]{0,60}".prop_map(String::into_bytes)
}

fn chunked(text: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (text.len() + 1)).collect();
    points.sort_unstable();
    let mut pieces = Vec::new();
    let mut last = 0;
    for p in points {
        pieces.push(text[last..p].to_vec());
        last = p;
    }
    pieces.push(text[last..].to_vec());
    pieces
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Random text with two secrets planted in random forms, cut into
    /// random chunks: no form survives, and streaming equals one pass.
    #[test]
    fn planted_secrets_never_leak(
        a in value_strategy(),
        b in value_strategy(),
        plan in prop::collection::vec((filler(), 0usize..2, any::<prop::sample::Index>()), 1..6),
        tail in filler(),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let values = [a, b];
        let r = Arc::new(Redactor::new(&[("A", &values[0]), ("B", &values[1])]));
        let all_forms: Vec<_> = values.iter().map(|v| forms(v)).collect();
        let mut text = Vec::new();
        for (fill, which, pick) in &plan {
            text.extend_from_slice(fill);
            let form = pick.get(all_forms[*which].as_slice());
            text.extend_from_slice(form.as_slice());
        }
        text.extend_from_slice(&tail);
        let pieces = chunked(&text, &cuts);
        let refs: Vec<&[u8]> = pieces.iter().map(|p| p.as_slice()).collect();
        let out = stream(&r, &refs);
        prop_assert_eq!(&out, &r.redact(&text));
        for (v, fs) in values.iter().zip(&all_forms) {
            // A value that is part of the marker text cannot be checked.
            prop_assume!(!contains(b"[REDACTED:A][REDACTED:B]", v));
            for form in fs {
                prop_assert!(!contains(&out, form), "form {:?} left in {:?}", form, out);
            }
        }
    }

    /// Text without any secret comes out byte for byte, however chunked.
    #[test]
    fn clean_text_is_untouched(
        value in value_strategy(),
        text in prop::collection::vec(any::<u8>(), 0..2000),
        cuts in prop::collection::vec(any::<usize>(), 0..20),
    ) {
        prop_assume!(forms(&value).iter().all(|f| !contains(&text, f)));
        let r = redactor(&value);
        let pieces = chunked(&text, &cuts);
        let refs: Vec<&[u8]> = pieces.iter().map(|p| p.as_slice()).collect();
        prop_assert_eq!(stream(&r, &refs), text);
    }
}

#[test]
fn stream_redactor_can_be_built_directly() {
    let r = redactor(b"0123456789");
    let mut s = StreamRedactor::new(Arc::clone(&r));
    let mut out = Vec::new();
    s.push(b"x01234", &mut out);
    s.push(b"56789y", &mut out);
    s.finish(&mut out);
    assert_eq!(out, format!("x{MARK}y").into_bytes());
}
