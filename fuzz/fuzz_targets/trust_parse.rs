//! Feeds arbitrary bytes to the signature parsers (DSSE envelope, in-toto
//! Statement, PEM key, RFC 3339 time); `warden_trust::fuzz_one` holds the
//! body so that a unit test runs it on stable too.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    warden_trust::fuzz_one(data);
});
