//! Feeds arbitrary bytes to the processor manifest parser and checker
//! (`processor.yaml`); `warden_processor::fuzz_one` holds the body and its
//! invariants.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    warden_processor::fuzz_one(data);
});
