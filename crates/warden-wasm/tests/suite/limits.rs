//! Each limit, hit, with the status it must produce.
use std::time::{Duration, Instant};

use crate::common::*;
use warden_core::Status;

#[test]
fn wall_time_stops_an_infinite_loop() {
    let mut i = inv(&wat("spin.wat"), &[]);
    i.limits.wall_time = Duration::from_millis(100);
    let t = Instant::now();
    let r = run(&i);
    let took = t.elapsed();
    assert_eq!(r.outcome.status, Status::Timeout, "{:?}", r.outcome);
    assert_eq!(r.outcome.exit_status(), 124);
    assert!(took >= Duration::from_millis(100), "{took:?}");
    assert!(took < Duration::from_millis(600), "{took:?}");
    assert!(r.outcome.wall_ms >= 100);
}

#[test]
fn wall_time_stops_a_loop_in_the_start_function() {
    let mut i = inv(&wat("start_spin.wat"), &[]);
    i.limits.wall_time = Duration::from_millis(100);
    let r = run(&i);
    assert_eq!(r.outcome.status, Status::Timeout, "{:?}", r.outcome);
}

#[test]
fn wall_time_also_holds_with_fuel_metering() {
    let mut i = inv(&wat("spin.wat"), &[]);
    i.limits.wall_time = Duration::from_millis(100);
    i.fuel = Some(1 << 40);
    let r = run(&i);
    assert_eq!(r.outcome.status, Status::Timeout, "{:?}", r.outcome);
    // The metered engine makes the guest yield every 10⁶ units of fuel
    // (where the deadline is checked) and the count is written back at each
    // yield, so a run stopped in a call-free loop reports what it used:
    // 100 ms of a one-instruction loop is tens of millions of units.
    let used = r.outcome.fuel_consumed.expect("fuel_consumed");
    assert!(used > 1_000_000, "{:?}", r.outcome);
    assert_eq!(r.outcome.enforcement["wall_time"], "fuel_yield");
}

#[test]
fn cpu_time_is_enforced_with_fuel_metering_too() {
    let mut i = inv(&wat("spin.wat"), &[]);
    i.limits.cpu_time = Some(Duration::from_millis(150));
    i.limits.wall_time = Duration::from_secs(10);
    i.fuel = Some(1 << 50);
    let t = Instant::now();
    let r = run(&i);
    assert_eq!(r.outcome.status, Status::CpuLimit, "{:?}", r.outcome);
    assert!(r.outcome.cpu_ms >= 150, "{:?}", r.outcome);
    assert!(t.elapsed() < Duration::from_secs(3));
    assert_eq!(
        r.outcome.enforcement["cpu_time"],
        "fuel_yield_thread_cputime"
    );
}

#[test]
fn a_fuel_budget_still_ends_in_cpu_limit_with_the_exact_count() {
    // Exhaustion lands on the budget exactly, yields or not.
    let mut i = inv(&wat("spin.wat"), &[]);
    i.fuel = Some(12_345_678);
    let r = run(&i);
    assert_eq!(r.outcome.status, Status::CpuLimit, "{:?}", r.outcome);
    assert_eq!(r.outcome.fuel_consumed, Some(12_345_678));
}

#[test]
fn memory_growth_past_the_limit_is_refused() {
    let mut i = inv(&wat("grow_bomb.wat"), &[]);
    i.limits.memory_bytes = 16 << 20;
    let r = run(&i);
    assert_eq!(r.outcome.status, Status::MemoryLimit, "{:?}", r.outcome);
    assert!(r.outcome.peak_memory_bytes <= 16 << 20);
    assert!(r.outcome.peak_memory_bytes >= 15 << 20, "{:?}", r.outcome);
    assert!(r.outcome.error.as_deref().unwrap().contains("refused"));
}

#[test]
fn a_rust_allocation_bomb_hits_the_memory_limit() {
    let mut i = inv(&rust("alloc"), &[]);
    i.limits.memory_bytes = 32 << 20;
    let r = run(&i);
    assert_eq!(r.outcome.status, Status::MemoryLimit, "{:?}", r.outcome);
    assert!(r.outcome.peak_memory_bytes <= 32 << 20);
}

#[test]
fn table_growth_is_capped_too() {
    let mut i = inv(&wat("table_bomb.wat"), &[]);
    i.limits.memory_bytes = 16 << 20;
    let r = run(&i);
    assert_eq!(r.outcome.status, Status::MemoryLimit, "{:?}", r.outcome);
    assert!(r.outcome.error.as_deref().unwrap().contains("table"));
}

#[test]
fn a_huge_initial_memory_is_refused_at_instantiation() {
    let r = run(&inv(&wat("huge_memory.wat"), &[]));
    assert_eq!(r.outcome.status, Status::MemoryLimit, "{:?}", r.outcome);
    assert_eq!(r.outcome.peak_memory_bytes, 0);
}

#[test]
fn fuel_exhaustion_is_a_cpu_limit() {
    let mut i = inv(&wat("count.wat"), &[]);
    i.fuel = Some(1_000_000);
    let r = run(&i);
    assert_eq!(r.outcome.status, Status::CpuLimit, "{:?}", r.outcome);
    assert_eq!(r.outcome.fuel_consumed, Some(1_000_000));
    assert!(r.outcome.error.as_deref().unwrap().contains("fuel"));
}

#[test]
fn cpu_time_is_enforced_at_epoch_ticks() {
    let mut i = inv(&wat("spin.wat"), &[]);
    i.limits.cpu_time = Some(Duration::from_millis(150));
    i.limits.wall_time = Duration::from_secs(10);
    let t = Instant::now();
    let r = run(&i);
    assert_eq!(r.outcome.status, Status::CpuLimit, "{:?}", r.outcome);
    assert!(r.outcome.cpu_ms >= 150, "{:?}", r.outcome);
    assert!(t.elapsed() < Duration::from_secs(3));
    assert_eq!(r.outcome.enforcement["cpu_time"], "epoch_thread_cputime");
}

#[test]
fn a_cpu_share_throttles() {
    let mut i = inv(&wat("spin.wat"), &[]);
    i.limits.cpu_percent = Some(25);
    i.limits.wall_time = Duration::from_millis(400);
    let r = run(&i);
    assert_eq!(r.outcome.status, Status::Timeout, "{:?}", r.outcome);
    // 25% of 400 ms is 100 ms; leave room for tick granularity and load.
    assert!(r.outcome.cpu_ms <= 180, "{:?}", r.outcome);
    assert_eq!(r.outcome.enforcement["cpu_share"], "epoch_throttle");
}

#[test]
fn output_is_capped_and_truncated() {
    let mut i = inv(&wat("flood.wat"), &[]);
    i.limits.output_bytes = 10_000;
    let r = run(&i);
    assert_eq!(r.outcome.status, Status::OutputLimit, "{:?}", r.outcome);
    assert!(r.outcome.truncated);
    assert_eq!(r.outcome.stdout_bytes, 10_000);
    assert_eq!(r.stdout.len(), 10_000);
}

#[test]
fn stdout_and_stderr_share_the_cap() {
    // readfile of a missing file writes to stderr only: a cap smaller
    // than its message truncates it.
    let mut i = inv(&rust("readfile"), &["/nonexistent/file"]);
    i.limits.output_bytes = 8;
    let r = run(&i);
    assert_eq!(r.outcome.status, Status::OutputLimit, "{:?}", r.outcome);
    assert_eq!(r.outcome.stderr_bytes, 8);
    assert_eq!(r.stderr.len(), 8);
}

#[test]
fn output_below_the_cap_is_not_truncated() {
    let mut i = inv(&rust("hello"), &[]);
    i.limits.output_bytes = 16;
    let r = run(&i);
    assert_eq!(r.outcome.status, Status::Exited, "{:?}", r.outcome);
    assert!(!r.outcome.truncated);
}

#[test]
fn wall_time_stops_a_guest_blocked_in_a_host_call() {
    let mut i = inv(&wat("sleep.wat"), &[]);
    // Sleeping waits on a clock: it needs clock:read.
    i.capabilities = vec![warden_policy::Capability::ClockRead];
    i.limits.wall_time = Duration::from_millis(100);
    let t = Instant::now();
    let r = run(&i);
    let took = t.elapsed();
    assert_eq!(
        r.outcome.status,
        Status::Timeout,
        "{:?} after {took:?}",
        r.outcome
    );
    assert!(took < Duration::from_millis(600), "{took:?}");
}

#[test]
fn cpu_ms_counts_work_not_waiting() {
    // Without a CPU limit the clock is read lazily (run.rs, CpuBase): a
    // guest that spins reports about its wall time, one that sleeps in a
    // host call reports next to nothing; metered or not.
    for fuel in [None, Some(1u64 << 50)] {
        let mut spin = inv(&wat("spin.wat"), &[]);
        spin.limits.wall_time = Duration::from_millis(300);
        spin.fuel = fuel;
        let r = run(&spin);
        assert_eq!(r.outcome.status, Status::Timeout, "{:?}", r.outcome);
        // At most its wall time; well above nothing even when the tests
        // running beside it take most of the CPU.
        assert!(
            (50..=r.outcome.wall_ms + 5).contains(&r.outcome.cpu_ms),
            "fuel {fuel:?}: {:?}",
            r.outcome
        );

        let mut sleep = inv(&wat("sleep.wat"), &[]);
        sleep.capabilities = vec![warden_policy::Capability::ClockRead];
        sleep.limits.wall_time = Duration::from_millis(300);
        sleep.fuel = fuel;
        let r = run(&sleep);
        assert_eq!(r.outcome.status, Status::Timeout, "{:?}", r.outcome);
        assert!(r.outcome.cpu_ms < 50, "fuel {fuel:?}: {:?}", r.outcome);
    }
}
