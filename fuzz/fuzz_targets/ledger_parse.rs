//! Feeds arbitrary bytes to the ledger's parsers: the offline audit
//! bundle verifier, C2SP checkpoints, verifier keys and signed notes;
//! `warden_ledger::bundle::fuzz_one` holds the body so that a unit test
//! runs it on stable too.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    warden_ledger::bundle::fuzz_one(data);
});
