//! Feeds arbitrary bytes to the wasm backend as a module file (binary or
//! text; after a `CWASM` prefix, as a precompiled module), run like
//! `warden run` under small memory, fuel, wall-clock and output limits.
//! `warden_wasm::fuzzing` holds the body and its oracle (no panic, no
//! backend failure, every limit held) so that a unit test runs it on stable.
//!
//! Seeds: the test guests, e.g.
//! `cargo fuzz run wasm_bytes fuzz/corpus/wasm_bytes tests-guests/wat`
//! (new inputs go to the first directory only).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use warden_wasm::fuzzing::Fuzzer;

fuzz_target!(|data: &[u8]| {
    static FUZZER: OnceLock<Fuzzer> = OnceLock::new();
    FUZZER.get_or_init(Fuzzer::new).run(data);
});
