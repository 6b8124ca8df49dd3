//! `kill -9` at any moment loses nothing acknowledged and leaves a ledger
//! that verifies. Writer processes (this test binary run again, as the
//! `crash_child` test, with `WARDEN_LEDGER_CRASH_DIR` set) append to one
//! ledger at once, each printing `ack INDEX LEAF` once an append returned;
//! they are killed with SIGKILL at random moments, and then every printed
//! entry must be in the ledger with that leaf hash, and `verify` clean.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use warden_ledger::group::GroupLedger;
use warden_ledger::merkle;
use warden_ledger::store::{Ledger, Prepared};

const DIR_ENV: &str = "WARDEN_LEDGER_CRASH_DIR";
const MODE_ENV: &str = "WARDEN_LEDGER_CRASH_MODE";

fn event(n: u64) -> serde_json::Value {
    serde_json::json!({"argv": ["python3", format!("job{n}.py")], "status": "exited", "pid": std::process::id()})
}

fn ack(out: &mut impl Write, index: u64, leaf: &merkle::Hash) {
    writeln!(out, "ack {index} {}", hex::encode(leaf)).unwrap();
    out.flush().unwrap();
}

/// The writer: appends until killed. Does nothing in a normal test run.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(DIR_ENV) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let mode = std::env::var(MODE_ENV).unwrap_or_default();
    let mut out = std::io::stdout().lock();
    match mode.as_str() {
        // A `warden run` each time: open, append one, close.
        "reopen" => {
            for n in 0.. {
                let mut l = Ledger::open(&dir).unwrap();
                let a = l.append(n, &[("run", event(n))]).unwrap();
                ack(&mut out, a[0].0, &a[0].1);
            }
        }
        // Batches, acknowledged after each commit.
        "batch" => {
            let mut l = Ledger::open(&dir).unwrap();
            for n in 0u64.. {
                let events = (0..25).map(|i| ("run", event(n * 25 + i)));
                let mut acks = Vec::new();
                l.append_iter(n, events, |i, h| acks.push((i, *h))).unwrap();
                for (i, h) in acks {
                    ack(&mut out, i, &h);
                }
            }
        }
        // A bulk import: transactions written and checkpointed on other
        // threads.
        "stream" => {
            let mut l = Ledger::open(&dir).unwrap();
            let events = (0u64..).map(|n| Prepared::new(n, "run", &event(n)));
            l.append_stream(events, 40, |i, h| ack(&mut out, i, h))
                .unwrap();
        }
        // Threads sharing commits.
        "group" => {
            let group = GroupLedger::new(Ledger::open(&dir).unwrap());
            drop(out);
            std::thread::scope(|s| {
                for t in 0..4u64 {
                    let group = &group;
                    s.spawn(move || {
                        for n in 0.. {
                            let (i, h) = group.append(n, "run", &event(t << 32 | n)).unwrap();
                            ack(&mut std::io::stdout().lock(), i, &h);
                        }
                    });
                }
            });
        }
        // One connection, one entry at a time.
        _ => {
            let mut l = Ledger::open(&dir).unwrap();
            for n in 0.. {
                let a = l.append(n, &[("run", event(n))]).unwrap();
                ack(&mut out, a[0].0, &a[0].1);
            }
        }
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

fn spawn(dir: &Path, mode: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(DIR_ENV, dir)
        .env(MODE_ENV, mode)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn kill_9_loses_nothing_acknowledged() {
    let dir = std::env::temp_dir().join(format!("warden-ledger-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("seed {seed}");
    let mut rng = Rng(seed);
    let modes = ["single", "reopen", "batch", "group", "stream"];
    let mut acked: BTreeMap<u64, String> = BTreeMap::new();
    for iteration in 0..20 {
        // Four writers of mixed kinds, killed one by one at random times.
        let mut children: Vec<(Child, Instant)> = (0..4)
            .map(|k| {
                let mode = modes[(iteration + k + rng.next(5) as usize) % modes.len()];
                let kill_at = Instant::now() + Duration::from_millis(30 + rng.next(400));
                (spawn(&dir, mode), kill_at)
            })
            .collect();
        let readers: Vec<_> = children
            .iter_mut()
            .map(|(c, _)| {
                let stdout = c.stdout.take().unwrap();
                std::thread::spawn(move || {
                    let mut acks = Vec::new();
                    for line in std::io::BufReader::new(stdout).lines() {
                        let Ok(line) = line else { break };
                        let mut f = line.split(' ');
                        if f.next() == Some("ack") {
                            let index: u64 = f.next().unwrap().parse().unwrap();
                            acks.push((index, f.next().unwrap().to_string()));
                        }
                    }
                    acks
                })
            })
            .collect();
        children.sort_by_key(|(_, at)| *at);
        for (child, at) in &mut children {
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
            // SIGKILL.
            child.kill().unwrap();
            child.wait().unwrap();
        }
        for r in readers {
            for (index, leaf) in r.join().unwrap() {
                // An index acknowledged twice would be a lost entry.
                if let Some(old) = acked.insert(index, leaf.clone()) {
                    panic!("index {index} acknowledged twice ({old}, {leaf})");
                }
            }
        }
        let ledger = Ledger::open(&dir).unwrap();
        let size = match ledger.verify().unwrap() {
            Ok(size) => size,
            Err(t) => panic!("iteration {iteration}: {t}"),
        };
        for (index, leaf) in &acked {
            assert!(
                *index < size,
                "iteration {iteration}: entry {index} lost (size {size})"
            );
            let body = ledger.entry(*index).unwrap().unwrap();
            assert_eq!(
                &hex::encode(merkle::leaf_hash(&body)),
                leaf,
                "entry {index}"
            );
        }
        eprintln!(
            "iteration {iteration}: {size} entries, {} acknowledged",
            acked.len()
        );
    }
    assert!(acked.len() > 100, "the writers wrote: {}", acked.len());
    std::fs::remove_dir_all(&dir).unwrap();
}
