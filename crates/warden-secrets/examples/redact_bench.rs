//! Throughput of `StreamRedactor` on log-like output in 64 KiB chunks
//! with 16 leased secrets (bench/redact/run.sh runs it). Build with
//! `--release`; pin it to one core with `taskset`.
//!
//! Usage: redact_bench [--mib N] [--runs R] [--secrets S]

use std::sync::Arc;
use std::time::Instant;

use warden_secrets::redact::forms;
use warden_secrets::Redactor;

const CHUNK: usize = 64 * 1024;

/// splitmix64: deterministic input without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const WORDS: &[&str] = &[
    "request",
    "handled",
    "connection",
    "opened",
    "closed",
    "user",
    "session",
    "cache",
    "miss",
    "hit",
    "retrying",
    "upstream",
    "timeout",
    "database",
    "query",
    "took",
    "rows",
    "returned",
    "worker",
    "started",
    "stopped",
    "config",
    "loaded",
    "from",
    "file",
    "token",
    "refreshed",
    "queue",
    "depth",
    "scheduler",
    "tick",
    "GET",
    "POST",
    "PUT",
    "DELETE",
    "ok",
    "error",
    "warning",
    "debug",
    "the",
    "a",
    "of",
    "to",
    "in",
    "for",
    "with",
    "on",
    "payload",
    "bytes",
];
const LEVELS: &[&str] = &["INFO ", "DEBUG", "WARN ", "ERROR", "TRACE"];

fn log_text(rng: &mut Rng, size: usize) -> Vec<u8> {
    let mut text = Vec::with_capacity(size + 256);
    while text.len() < size {
        let t = rng.next();
        text.extend_from_slice(
            format!(
                "2026-12-06T{:02}:{:02}:{:02}.{:03}Z {} svc-{}[{}]: ",
                t % 24,
                (t >> 8) % 60,
                (t >> 16) % 60,
                (t >> 24) % 1000,
                LEVELS[rng.below(LEVELS.len())],
                rng.below(8),
                1000 + rng.below(30000)
            )
            .as_bytes(),
        );
        for _ in 0..4 + rng.below(10) {
            text.extend_from_slice(WORDS[rng.below(WORDS.len())].as_bytes());
            text.push(b' ');
        }
        let id = rng.next();
        text.extend_from_slice(
            format!(
                "id={id:016x} path=/api/v1/items/{} status={} latency_ms={}.{}\n",
                rng.below(100000),
                [200, 201, 204, 404, 500][rng.below(5)],
                rng.below(900),
                rng.below(10)
            )
            .as_bytes(),
        );
    }
    text.truncate(size);
    text
}

fn secrets(rng: &mut Rng, count: usize) -> Vec<(String, Vec<u8>)> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.";
    (0..count)
        .map(|i| {
            let len = 16 + rng.below(25);
            let value = (0..len)
                .map(|_| ALPHABET[rng.below(ALPHABET.len())])
                .collect();
            (format!("SECRET_{i}"), value)
        })
        .collect()
}

/// Plants a form of some secret about every `every` bytes.
fn plant(rng: &mut Rng, text: &mut [u8], secrets: &[(String, Vec<u8>)], every: usize) -> usize {
    let mut planted = 0;
    let mut at = every / 2;
    while at + 512 < text.len() {
        let (_, value) = &secrets[rng.below(secrets.len())];
        let all = forms(value);
        let form = &all[rng.below(all.len())];
        text[at..at + form.len()].copy_from_slice(form);
        planted += 1;
        at += every;
    }
    planted
}

/// Seconds to redact `text` once, in CHUNK pieces; and the output size.
fn run_once(redactor: &Arc<Redactor>, text: &[u8]) -> (f64, usize) {
    let mut stream = redactor.stream();
    let mut out = Vec::with_capacity(2 * CHUNK);
    let mut written = 0;
    let start = Instant::now();
    for chunk in text.chunks(CHUNK) {
        out.clear();
        stream.push(chunk, &mut out);
        written += out.len();
    }
    out.clear();
    stream.finish(&mut out);
    written += out.len();
    (start.elapsed().as_secs_f64(), written)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    xs[xs.len() / 2]
}

fn measure(label: &str, redactor: &Arc<Redactor>, text: &[u8], runs: usize) {
    let _ = run_once(redactor, text); // warm up
    let mut rates = Vec::new();
    let mut written = 0;
    for _ in 0..runs {
        let (secs, out) = run_once(redactor, text);
        rates.push(text.len() as f64 / secs / 1e9);
        written = out;
    }
    let mut sorted = rates.clone();
    sorted.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    println!(
        "{label}: median {:.2} GB/s (min {:.2}, max {:.2}; {} runs; {} MiB in, {} bytes out; {} patterns, window {} bytes)",
        median(rates),
        sorted[0],
        sorted[sorted.len() - 1],
        runs,
        text.len() >> 20,
        written,
        redactor.pattern_count(),
        redactor.longest_pattern().saturating_sub(1),
    );
}

fn main() {
    let mut mib = 256usize;
    let mut runs = 5usize;
    let mut count = 16usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || -> usize {
            args.next()
                .and_then(|v| v.parse().ok())
                .expect("a number after the flag")
        };
        match arg.as_str() {
            "--mib" => mib = value(),
            "--runs" => runs = value(),
            "--secrets" => count = value(),
            other => panic!("unknown argument {other}"),
        }
    }
    let mut rng = Rng(0x5eed);
    let secrets = secrets(&mut rng, count);
    let clean = log_text(&mut rng, mib << 20);
    let mut dirty = clean.clone();
    let planted = plant(&mut rng, &mut dirty, &secrets, 1 << 20);

    let build = Instant::now();
    let redactor = Arc::new(Redactor::new(&secrets));
    println!(
        "built the redactor for {count} secrets in {:.1} ms",
        build.elapsed().as_secs_f64() * 1e3
    );
    measure(
        &format!("{count} secrets, {planted} planted"),
        &redactor,
        &dirty,
        runs,
    );
    measure(
        &format!("{count} secrets, none present"),
        &redactor,
        &clean,
        runs,
    );
    measure("no secrets (passthrough)", &Redactor::empty(), &clean, runs);
    // A secret under 8 bytes: its exact value goes to a second automaton.
    let mut with_short = secrets.clone();
    with_short[0].1.truncate(6);
    let fallback = Arc::new(Redactor::new(&with_short));
    measure(
        &format!("{count} secrets, one of 6 bytes (second automaton), none present"),
        &fallback,
        &clean,
        runs,
    );
}
