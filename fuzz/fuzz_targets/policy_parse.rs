//! Feeds arbitrary bytes to the policy parser, the checker and the
//! capability parser; `warden_policy::fuzz_one` holds the body and its
//! invariants so that a unit test exercises it on stable too.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    warden_policy::fuzz_one(data);
});
