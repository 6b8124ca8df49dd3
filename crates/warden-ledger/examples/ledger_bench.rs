//! Measurements of the ledger (bench/ledger/run.sh runs them):
//!
//! - `ledger_bench bulk DIR [N] [BATCH]`: N events (default 1,000,000)
//!   through `Ledger::append_stream` in transactions of BATCH (1000), then
//!   `verify` of the result, then inclusion and consistency proofs in it.
//!   `bulk-only` appends only; `bulk-iter` calls `Ledger::append_iter`
//!   once per batch instead.
//! - `ledger_bench group DIR [THREADS] [SECONDS]`: THREADS writers (8)
//!   through one `GroupLedger`, each appending one entry at a time and
//!   waiting for it to be durable; throughput and ack latency.
//! - `ledger_bench open DIR` / `ledger_bench append1 DIR`: open the ledger
//!   (and append one entry), close, exit: for `hyperfine -N`, the
//!   per-process cost of a `warden run`'s entry is the difference.
//!   `append1-timed` prints the time of each step.
//! - `ledger_bench verify DIR`, `ledger_bench proofs DIR`: those alone on
//!   an existing ledger.

use std::path::Path;
use std::time::{Duration, Instant};

use warden_ledger::group::GroupLedger;
use warden_ledger::merkle;
use warden_ledger::store::{Ledger, Prepared};

/// An event shaped like the engine's run entries (about 400 bytes).
fn event(i: u64) -> serde_json::Value {
    serde_json::json!({
        "principal": "os:root",
        "tenant": "default",
        "argv": ["python3", format!("/srv/jobs/job-{i}.py"), "--input", "data.csv"],
        "invocation_id": format!("inv-{:016x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        "backend": "jail",
        "policy_digest": "sha256:4b227777d4dd1fc61c6f884f48641d02b4d121d3fd328cb08b5531fcacdabf8a",
        "capabilities": ["fs:read:/srv/jobs", "mem:limit:256MB", "time:limit:30s"],
        "status": "exited",
        "exit_code": 0,
        "signal": null,
        "wall_ms": 120 + i % 1000,
        "cpu_ms": 80 + i % 700,
        "peak_memory_bytes": 31_457_280u64 + i,
        "stdout_bytes": 1024,
        "stderr_bytes": 0,
        "violations": [],
        "limits_reached": [],
        "error": null,
    })
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn bulk(dir: &Path, n: u64, batch: u64) {
    bulk_only(dir, n, batch, true);
    verify(dir);
    proofs(dir);
}

/// Through `append_stream` (`stream`) or `append_iter` called once per
/// batch; the events' JSON values are made in the loop, as a caller
/// parsing input would.
fn bulk_only(dir: &Path, n: u64, batch: u64, stream: bool) {
    let mut ledger = Ledger::open(dir).expect("open");
    let start_size = ledger.size().expect("size");
    let t = Instant::now();
    let mut acked = 0u64;
    let how = if stream {
        let events = (start_size..start_size + n).map(|i| Prepared::new(now(), "run", &event(i)));
        ledger
            .append_stream(events, batch as usize, |_, _| acked += 1)
            .expect("append");
        "append_stream"
    } else {
        let mut next = start_size;
        while next < start_size + n {
            let end = (next + batch).min(start_size + n);
            let events = (next..end).map(|i| ("run", event(i)));
            ledger
                .append_iter(now(), events, |_, _| acked += 1)
                .expect("append");
            next = end;
        }
        "append_iter"
    };
    let el = t.elapsed();
    let size = ledger.size().expect("size");
    assert_eq!(size, start_size + n);
    let sample = ledger.entry(size - 1).expect("entry").expect("present");
    println!(
        "bulk append ({how}): {n} entries of {} bytes in batches of {batch}: {:.2} s, {:.0} entries/s (acknowledged {acked})",
        sample.len(),
        el.as_secs_f64(),
        n as f64 / el.as_secs_f64()
    );
}

fn verify(dir: &Path) {
    let ledger = Ledger::open(dir).expect("open");
    let t = Instant::now();
    let result = ledger.verify().expect("verify");
    let el = t.elapsed();
    match result {
        Ok(size) => println!("verify: {size} entries in {:.3} s", el.as_secs_f64()),
        Err(t) => {
            println!("verify: TAMPER {t}");
            std::process::exit(1);
        }
    }
}

fn proofs(dir: &Path) {
    let ledger = Ledger::open(dir).expect("open");
    let size = ledger.size().expect("size");
    let root = ledger.root(size).expect("root");
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let rounds = 2000;
    let (mut inc, mut con) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let index = next() % size;
        let t = Instant::now();
        let p = ledger.inclusion_proof(index, size).expect("inclusion");
        inc.push(t.elapsed());
        let leaf = merkle::leaf_hash(&ledger.entry(index).expect("entry").expect("present"));
        merkle::verify_inclusion(index, size, &leaf, &p, &root).expect("inclusion verifies");
        let old = 1 + next() % size;
        let t = Instant::now();
        let c = ledger.consistency_proof(old, size).expect("consistency");
        con.push(t.elapsed());
        let old_root = ledger.root(old).expect("old root");
        merkle::verify_consistency(old, size, &old_root, &root, &c).expect("consistency verifies");
    }
    inc.sort();
    con.sort();
    println!(
        "proofs in {size} entries ({rounds} each, random): inclusion median {:.3} ms p99 {:.3} ms; consistency median {:.3} ms p99 {:.3} ms",
        ms(quantile(&inc, 0.5)),
        ms(quantile(&inc, 0.99)),
        ms(quantile(&con, 0.5)),
        ms(quantile(&con, 0.99)),
    );
}

fn group(dir: &Path, threads: u64, seconds: f64) {
    let group = GroupLedger::new(Ledger::open(dir).expect("open"));
    let before = group.with_ledger(|l| l.size()).expect("size");
    let stop = Instant::now() + Duration::from_secs_f64(seconds);
    let t = Instant::now();
    let mut lat: Vec<Duration> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|w| {
                let group = &group;
                s.spawn(move || {
                    let mut lat = Vec::new();
                    let mut i = 0u64;
                    while Instant::now() < stop {
                        let ev = event(w << 32 | i);
                        let t = Instant::now();
                        group.append(now(), "run", &ev).expect("append");
                        lat.push(t.elapsed());
                        i += 1;
                    }
                    lat
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("writer"))
            .collect()
    });
    let el = t.elapsed();
    let (commits, entries, committing) = group.stats();
    lat.sort();
    println!(
        "group commit: {threads} threads, {entries} entries in {:.2} s: {:.0} acknowledged entries/s, {commits} commits ({:.1} entries each, {:.3} ms each), ack latency p50 {:.3} ms p99 {:.3} ms max {:.3} ms",
        el.as_secs_f64(),
        entries as f64 / el.as_secs_f64(),
        entries as f64 / commits.max(1) as f64,
        ms(committing) / commits.max(1) as f64,
        ms(quantile(&lat, 0.5)),
        ms(quantile(&lat, 0.99)),
        ms(quantile(&lat, 1.0)),
    );
    let ledger = group.into_inner();
    let after = ledger.size().expect("size");
    assert_eq!(after - before, entries, "every acknowledged entry is there");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: ledger_bench bulk|group|open|append1|verify|proofs DIR [ARGS]";
    let (Some(mode), Some(dir)) = (args.get(1), args.get(2)) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let dir = Path::new(dir);
    let num = |i: usize, d: f64| -> f64 { args.get(i).and_then(|a| a.parse().ok()).unwrap_or(d) };
    match mode.as_str() {
        "bulk" => bulk(dir, num(3, 1e6) as u64, num(4, 1000.0) as u64),
        "bulk-only" => bulk_only(dir, num(3, 1e6) as u64, num(4, 1000.0) as u64, true),
        "bulk-iter" => bulk_only(dir, num(3, 1e6) as u64, num(4, 1000.0) as u64, false),
        "group" => group(dir, num(3, 8.0) as u64, num(4, 5.0)),
        "verify" => verify(dir),
        "micro" => {
            let body = warden_ledger::store::encode_entry(5, &[1; 32], 7, "run", &event(5))
                .expect("encode");
            let t = Instant::now();
            let mut ok = 0;
            for _ in 0..1_000_000 {
                ok += warden_ledger::canonical::check_entry(std::hint::black_box(&body)).is_some()
                    as u32;
            }
            println!("check_entry: {:.3} us ({ok})", t.elapsed().as_secs_f64());
            let t = Instant::now();
            for _ in 0..1_000_000 {
                std::hint::black_box(merkle::leaf_hash(std::hint::black_box(&body)));
            }
            println!("leaf_hash: {:.3} us", t.elapsed().as_secs_f64());
            let ev = event(5);
            let t = Instant::now();
            for _ in 0..1_000_000 {
                std::hint::black_box(warden_ledger::store::Prepared::new(
                    7,
                    "run",
                    std::hint::black_box(&ev),
                ));
            }
            println!("prepare: {:.3} us", t.elapsed().as_secs_f64());
            let t = Instant::now();
            for i in 0..1_000_000 {
                std::hint::black_box(event(i));
            }
            println!("event value: {:.3} us", t.elapsed().as_secs_f64());
        }
        "proofs" => proofs(dir),
        // What `warden run` does before its run (the engine's Audit::open:
        // open, read the origin) ...
        "open" => {
            let l = Ledger::open(dir).expect("open");
            l.origin("bench.local/ledger").expect("origin");
        }
        // ... and after it: one durable entry.
        "append1" => {
            let mut l = Ledger::open(dir).expect("open");
            l.origin("bench.local/ledger").expect("origin");
            l.append(now(), &[("run", event(now()))]).expect("append");
        }
        // append1 with the time of each step on stderr (microseconds).
        "append1-timed" => {
            let t = Instant::now();
            let mut l = Ledger::open(dir).expect("open");
            let opened = t.elapsed();
            l.origin("bench.local/ledger").expect("origin");
            let origin = t.elapsed();
            l.append(now(), &[("run", event(now()))]).expect("append");
            let appended = t.elapsed();
            drop(l);
            let closed = t.elapsed();
            eprintln!(
                "open {} origin {} append {} close {}",
                opened.as_micros(),
                (origin - opened).as_micros(),
                (appended - origin).as_micros(),
                (closed - appended).as_micros()
            );
        }
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    }
}
