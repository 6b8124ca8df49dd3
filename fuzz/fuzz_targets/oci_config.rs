//! Feeds arbitrary bytes to warden-oci as a bundle's `config.json`: parsed,
//! checked, mount options read, the seccomp profile compiled;
//! `warden_oci::fuzz_one` holds the body and its invariants.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    warden_oci::fuzz_one(data);
});
