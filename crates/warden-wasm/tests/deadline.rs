//! Deadline latency: from the wall-clock deadline to the run reported
//! stopped, for a guest running wasm code and for one blocked in a host
//! call. One test alone in its binary. It checks that the deadline stops
//! the run promptly, with bounds loose enough for a loaded CI machine (a
//! broken ticker or timer is late by the run's whole remaining time, or
//! forever); the 5 ms bar itself is measured by bench/wasm.sh.
mod common;

use std::time::{Duration, Instant};

use common::*;
use warden_core::Status;
use warden_wasm::{Input, RunIo};

#[test]
fn a_deadline_stops_the_run_promptly() {
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
    assert!(median < Duration::from_millis(25), "median {median:?}");
    assert!(max < Duration::from_millis(250), "max {max:?}");
}
