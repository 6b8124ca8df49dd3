//! Many runs in one process keep the resident set stable. Alone in its
//! test binary so nothing else allocates while it measures.
mod common;

use common::*;
use warden_core::Status;
use warden_wasm::{Output, RunIo};

#[test]
fn ten_thousand_runs_do_not_grow_rss() {
    // Unmetered (epoch) runs, then metered (fuel) ones: each engine has its
    // own pool.
    let module = rust("hello");
    ten_thousand(inv(&module, &[]), "unmetered");
    let mut metered = inv(&module, &[]);
    metered.fuel = Some(1 << 40);
    ten_thousand(metered, "metered");
}

fn ten_thousand(i: warden_core::Invocation, what: &str) {
    let io = RunIo {
        stdin: warden_wasm::Input::Empty,
        stdout: Output::Discard,
        stderr: Output::Discard,
    };
    // Warm up: engines, the module cache, pool slots, allocator arenas.
    for _ in 0..100 {
        backend().run_with_io(&i, &io).unwrap();
    }
    let before = vm_rss_kib();
    let mut at_1000 = 0;
    for n in 1..=10_000 {
        let o = backend().run_with_io(&i, &io).unwrap();
        assert_eq!(o.status, Status::Exited, "run {n}: {o:?}");
        if n == 1_000 {
            at_1000 = vm_rss_kib();
        }
    }
    let after = vm_rss_kib();
    eprintln!(
        "{what}: VmRSS {before} kB after warm-up, {at_1000} kB after 1,000 runs, {after} kB after 10,000 runs"
    );
    assert!(
        at_1000.saturating_sub(before) < 4096,
        "{what}: RSS grew by {} kB over 1,000 runs",
        at_1000 - before
    );
    assert!(
        after.saturating_sub(at_1000) < 1024,
        "{what}: RSS grew by {} kB between runs 1,000 and 10,000",
        after - at_1000
    );
}
