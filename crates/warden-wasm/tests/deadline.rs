//! Deadline latency: from the wall-clock deadline to the run reported
//! stopped, for a guest running wasm code and for one blocked in a host
//! call. One test alone in its binary, so that nothing competes for the
//! CPU while it measures.
mod common;

use std::time::{Duration, Instant};

use common::*;
use warden_core::Status;
use warden_wasm::{Input, RunIo};

#[test]
fn a_deadline_stops_the_run_within_5ms() {
    measure("spin.wat", "wasm code (epoch)", None);
    measure("sleep.wat", "a host call (timer)", None);
    measure("spin.wat", "metered wasm code (fuel yield)", Some(1 << 50));
    measure("sleep.wat", "a metered host call (timer)", Some(1 << 50));
}

fn measure(guest: &str, what: &str, fuel: Option<u64>) {
    let module = wat(guest);
    let mut i = inv(&module, &[]);
    i.fuel = fuel;
    // (sleep.wat waits on a clock: it needs clock:read.)
    i.capabilities = vec![warden_policy::Capability::ClockRead];
    i.limits.wall_time = Duration::from_millis(50);
    let kind = backend().engine_kind(&i);
    let prepared = backend().prepare(&module, kind).unwrap();
    let (io, _, _) = RunIo::captured(Input::Empty);
    let mut late: Vec<Duration> = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let o = backend().run_prepared(&prepared, &i, &io).unwrap();
        let took = t.elapsed();
        assert_eq!(o.status, Status::Timeout, "{o:?}");
        assert!(took >= i.limits.wall_time, "stopped early: {took:?}");
        late.push(took - i.limits.wall_time);
    }
    late.sort();
    let median = late[late.len() / 2];
    let max = late[late.len() - 1];
    eprintln!(
        "deadline latency in {what} over {} runs: min {:?}, median {:?}, max {:?}",
        late.len(),
        late[0],
        median,
        max
    );
    assert!(median < Duration::from_millis(5), "median {median:?}");
    assert!(max < Duration::from_millis(20), "max {max:?}");
}
