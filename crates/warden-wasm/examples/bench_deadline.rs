//! Deadline latency: how long after its wall-clock deadline a run is
//! reported stopped, timed around the library call (`run_prepared`) from
//! its start: latency = elapsed − wall-clock limit.
//!
//! Cases: a guest spinning in wasm code on the unmetered engine (stopped by
//! the epoch callback at the next tick) and on the metered one (stopped at
//! its next fuel yield), and a guest blocked in one host call (a sleep,
//! abandoned by the timer).
//!
//! Usage: cargo run --release -p warden-wasm --example bench_deadline -- \
//!            GUEST_DIR [RUNS] [WALL_MS]
//! GUEST_DIR holds spin.wasm and sleep.wasm (bench/guests, built by
//! bench/wasm.sh). Defaults: 50 runs per case, a 50 ms limit.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use warden_core::{EffectiveLimits, Invocation, Status};
use warden_policy::Capability;
use warden_wasm::{Input, Output, RunIo, WasmBackend};

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(
        args.next()
            .expect("usage: bench_deadline GUEST_DIR [RUNS] [WALL_MS]"),
    );
    let runs: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(50);
    let wall = Duration::from_millis(args.next().and_then(|n| n.parse().ok()).unwrap_or(50));
    let backend = WasmBackend::new().expect("wasm backend");
    let io = RunIo {
        stdin: Input::Empty,
        stdout: Output::Discard,
        stderr: Output::Discard,
    };
    println!(
        "deadline latency (elapsed − {} ms limit), {runs} runs per case, in µs",
        wall.as_millis()
    );
    println!(
        "{:<44} {:>8} {:>8} {:>8} {:>8}",
        "case", "min", "median", "p99", "max"
    );
    for (case, guest, fuel) in [
        ("wasm code, default limits (epoch)", "spin", None),
        ("wasm code, --fuel (fuel yield)", "spin", Some(1u64 << 60)),
        ("blocked in a host call (timer)", "sleep", None),
    ] {
        let module = dir.join(format!("{guest}.wasm"));
        let inv = Invocation {
            invocation_id: "0".repeat(32),
            argv: vec![module.display().to_string()],
            workdir: PathBuf::from("/"),
            // sleep waits on a clock: it needs clock:read.
            capabilities: vec![Capability::ClockRead],
            limits: EffectiveLimits {
                wall_time: wall,
                ..EffectiveLimits::default()
            },
            fuel,
            ..Invocation::default()
        };
        let prepared = backend
            .prepare(&module, backend.engine_kind(&inv))
            .expect("prepare");
        let mut late: Vec<Duration> = (0..runs + 2)
            .map(|_| {
                let t = Instant::now();
                let o = backend.run_prepared(&prepared, &inv, &io).expect("run");
                let took = t.elapsed();
                assert_eq!(o.status, Status::Timeout, "{o:?}");
                assert!(took >= wall, "stopped early: {took:?}");
                // Idle as long as the run spun: under `chrt -f` a thread
                // spinning back to back uses up the kernel's real-time
                // budget (95% of each second) and is then stopped for 50
                // ms, which would show as deadline latency.
                std::thread::sleep(took);
                took - wall
            })
            .skip(2)
            .collect();
        late.sort();
        let pct = |p: f64| late[((late.len() as f64 * p) as usize).min(late.len() - 1)];
        println!(
            "{case:<44} {:>8.0} {:>8.0} {:>8.0} {:>8.0}",
            us(late[0]),
            us(pct(0.5)),
            us(pct(0.99)),
            us(late[late.len() - 1])
        );
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
