//! Compiling untrusted modules under the run's deadline.
//!
//! wasmparser bounds the size of what it accepts (a function body of at
//! most 7,654,321 bytes, 50,000 locals, a million functions, …) but nothing
//! bounds how long Cranelift takes over it: register allocation and some
//! optimisation passes have been superlinear on pathological inputs, and
//! wasmtime offers no way to interrupt a compile. So a compile runs on a
//! worker thread and the run waits for it only until its wall-clock
//! deadline; past it the run is reported as a timeout and the worker is left
//! to finish in the background (its result still goes to the caches). Two
//! bounds keep abandoned work from piling up: one compile at a time per
//! (engine, module digest) — later callers wait for the same result — and at
//! most as many compiles at once as the machine has cores (a caller that
//! cannot get a slot before its deadline starts none).

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use wasmtime::component::Component;
use wasmtime::{Engine, Module};

use crate::cache::Digest;
use crate::engines::EngineKind;

/// Stack of a compile thread.
const COMPILE_STACK: usize = 8 << 20;
/// How often a caller waiting for a compile looks for a termination signal
/// (only when signals are watched: see `signals.rs`).
const SIGNAL_POLL: Duration = Duration::from_millis(10);

/// How long to wait before looking again: until `deadline`, and no longer
/// than [`SIGNAL_POLL`] when signals are watched (`None`: without end);
/// `Err` when the deadline has passed or a termination signal came.
fn wait_time(deadline: Option<Instant>) -> Result<Option<Duration>, ()> {
    if crate::signals::received().is_some() {
        return Err(());
    }
    let left = match deadline {
        Some(d) => Some(d.checked_duration_since(Instant::now()).ok_or(())?),
        None => None,
    };
    let slice = crate::signals::watched().then_some(SIGNAL_POLL);
    Ok(match (left, slice) {
        (Some(l), Some(s)) => Some(l.min(s)),
        (l, s) => l.or(s),
    })
}

/// A compiled module or component. Cheap to clone.
#[derive(Clone)]
pub(crate) enum Compiled {
    Module(Module),
    Component(Component),
}

impl Compiled {
    pub fn is_component(&self) -> bool {
        matches!(self, Compiled::Component(_))
    }

    /// The wasmtime artifact (what `Engine::precompile_*` would give).
    pub fn serialize(&self) -> wasmtime::Result<Vec<u8>> {
        match self {
            Compiled::Module(m) => m.serialize(),
            Compiled::Component(c) => c.serialize(),
        }
    }
}

/// Compiles `bytes` (binary or text) in `engine`.
pub(crate) fn compile(engine: &Engine, bytes: &[u8], component: bool) -> Result<Compiled, String> {
    if component {
        Component::new(engine, bytes).map(Compiled::Component)
    } else {
        Module::new(engine, bytes).map(Compiled::Module)
    }
    .map_err(|e| format!("{e:#}"))
}

/// Why a compile gave no module.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The module is invalid (the compiler's message).
    Invalid(String),
    /// The deadline passed first.
    Timeout,
}

type Key = (EngineKind, Digest);

/// Runs compiles on worker threads; shared by a backend's runs.
pub(crate) struct Compiler {
    shared: Arc<Shared>,
}

struct Shared {
    inflight: Mutex<HashMap<Key, Arc<Pending>>>,
    running: Mutex<usize>,
    slot_freed: Condvar,
    max_running: usize,
}

struct Pending {
    state: Mutex<State>,
    done: Condvar,
}

enum State {
    Running,
    Done(Result<Compiled, String>),
    /// Its leader gave up before starting it: a waiter starts it again.
    Abandoned,
}

/// A compile slot, released when dropped.
struct Slot(Arc<Shared>);

impl Drop for Slot {
    fn drop(&mut self) {
        *lock(&self.0.running) -= 1;
        self.0.slot_freed.notify_one();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Default for Compiler {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Compiler::with_max_running(cores.max(2))
    }
}

impl Compiler {
    pub fn with_max_running(max_running: usize) -> Self {
        Compiler {
            shared: Arc::new(Shared {
                inflight: Mutex::new(HashMap::new()),
                running: Mutex::new(0),
                slot_freed: Condvar::new(),
                max_running: max_running.max(1),
            }),
        }
    }

    /// Runs `job` (the compile of the module of `key`, and whatever should
    /// follow it off the caller's clock, such as writing the disk cache) on a
    /// worker thread, or waits for the one already running for `key`; gives
    /// up at `deadline`.
    pub fn run<F>(&self, key: Key, deadline: Option<Instant>, job: F) -> Result<Compiled, Failure>
    where
        F: FnOnce() -> Result<Compiled, String> + Send + 'static,
    {
        let mut job = Some(job);
        loop {
            let (pending, leader) = {
                let mut inflight = lock(&self.shared.inflight);
                match inflight.get(&key) {
                    Some(p) => (p.clone(), false),
                    None => {
                        let p = Arc::new(Pending {
                            state: Mutex::new(State::Running),
                            done: Condvar::new(),
                        });
                        inflight.insert(key, p.clone());
                        (p, true)
                    }
                }
            };
            if leader {
                let Some(job) = job.take() else {
                    // Unreachable: a caller leads at most once (it then
                    // waits for its own compile, which is never abandoned).
                    self.shared.finish(key, &pending, State::Abandoned);
                    return Err(Failure::Timeout);
                };
                let Some(slot) = self.acquire(deadline) else {
                    self.shared.finish(key, &pending, State::Abandoned);
                    return Err(Failure::Timeout);
                };
                self.start(key, pending.clone(), slot, job);
            }
            match pending.wait(deadline) {
                Some(State::Done(result)) => return result.map_err(Failure::Invalid),
                Some(State::Abandoned) => continue,
                Some(State::Running) | None => return Err(Failure::Timeout),
            }
        }
    }

    /// A compile slot, waiting for one until `deadline`.
    fn acquire(&self, deadline: Option<Instant>) -> Option<Slot> {
        let mut running = lock(&self.shared.running);
        while *running >= self.shared.max_running {
            running = match wait_time(deadline).ok()? {
                None => self
                    .shared
                    .slot_freed
                    .wait(running)
                    .unwrap_or_else(|e| e.into_inner()),
                Some(left) => {
                    self.shared
                        .slot_freed
                        .wait_timeout(running, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
        *running += 1;
        Some(Slot(self.shared.clone()))
    }

    fn start<F>(&self, key: Key, pending: Arc<Pending>, slot: Slot, job: F)
    where
        F: FnOnce() -> Result<Compiled, String> + Send + 'static,
    {
        // Shared with the thread so that the job can be taken back if no
        // thread can be started (then it runs here, without a deadline).
        let job = Arc::new(Mutex::new(Some(job)));
        let work = {
            let shared = self.shared.clone();
            let job = job.clone();
            let pending = pending.clone();
            move || {
                let result = match lock(&job).take() {
                    Some(job) => catch_unwind(AssertUnwindSafe(job)).unwrap_or_else(|panic| {
                        let what = panic
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_default();
                        Err(format!("the compiler failed (panic: {what})"))
                    }),
                    None => return,
                };
                shared.finish(key, &pending, State::Done(result));
                drop(slot);
            }
        };
        let spawned = std::thread::Builder::new()
            .name("warden-wasm-compile".into())
            .stack_size(COMPILE_STACK)
            .spawn(work);
        if spawned.is_err() {
            // The closure (and the slot) went with the failed spawn.
            let result = match lock(&job).take() {
                Some(job) => job(),
                None => Err("the compiler thread could not be started".into()),
            };
            self.shared.finish(key, &pending, State::Done(result));
        }
    }
}

impl Shared {
    /// Publishes the outcome of `pending` and forgets it.
    fn finish(&self, key: Key, pending: &Arc<Pending>, state: State) {
        *lock(&pending.state) = state;
        pending.done.notify_all();
        let mut inflight = lock(&self.inflight);
        if inflight.get(&key).is_some_and(|p| Arc::ptr_eq(p, pending)) {
            inflight.remove(&key);
        }
    }
}

impl Pending {
    /// The final state, or `None` at the deadline.
    fn wait(&self, deadline: Option<Instant>) -> Option<State> {
        let mut state = lock(&self.state);
        loop {
            match &*state {
                State::Done(r) => return Some(State::Done(r.clone())),
                State::Abandoned => return Some(State::Abandoned),
                State::Running => {}
            }
            state = match wait_time(deadline).ok()? {
                None => self.done.wait(state).unwrap_or_else(|e| e.into_inner()),
                Some(left) => {
                    self.done
                        .wait_timeout(state, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    fn key(n: u8) -> Key {
        (
            EngineKind {
                metered: false,
                pooled: false,
            },
            [n; 32],
        )
    }

    fn tiny(engine: &Engine) -> Compiled {
        compile(engine, b"(module)", false).unwrap()
    }

    #[test]
    fn a_slow_compile_times_out_and_finishes_in_the_background() {
        let engine = Engine::default();
        let c = Compiler::with_max_running(1);
        let e = engine.clone();
        let started = Instant::now();
        let r = c.run(
            key(1),
            Some(Instant::now() + Duration::from_millis(20)),
            move || {
                std::thread::sleep(Duration::from_millis(300));
                Ok(tiny(&e))
            },
        );
        assert!(matches!(r, Err(Failure::Timeout)));
        assert!(started.elapsed() < Duration::from_millis(250));
        // A second caller for the same key waits for the same compile.
        let ran = Arc::new(AtomicUsize::new(0));
        let ran2 = ran.clone();
        let e = engine.clone();
        let r = c.run(key(1), None, move || {
            ran2.fetch_add(1, Ordering::Relaxed);
            Ok(tiny(&e))
        });
        assert!(r.is_ok());
        assert_eq!(ran.load(Ordering::Relaxed), 0, "joined the running compile");
    }

    #[test]
    fn no_slot_before_the_deadline_starts_nothing() {
        let engine = Engine::default();
        let c = Compiler::with_max_running(1);
        let e = engine.clone();
        let r = c.run(key(1), Some(Instant::now()), move || {
            std::thread::sleep(Duration::from_millis(200));
            Ok(tiny(&e))
        });
        assert!(matches!(r, Err(Failure::Timeout)));
        // The only slot is busy: another module cannot start in time.
        let ran = Arc::new(AtomicUsize::new(0));
        let ran2 = ran.clone();
        let r = c.run(
            key(2),
            Some(Instant::now() + Duration::from_millis(10)),
            move || {
                ran2.fetch_add(1, Ordering::Relaxed);
                Err("x".into())
            },
        );
        assert!(matches!(r, Err(Failure::Timeout)));
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(ran.load(Ordering::Relaxed), 0);
        // Once the slot is free, it can.
        let r = c.run(
            key(2),
            Some(Instant::now() + Duration::from_secs(5)),
            || Err("bad".into()),
        );
        assert!(matches!(r, Err(Failure::Invalid(m)) if m == "bad"));
    }

    #[test]
    fn a_panicking_compile_is_an_error() {
        let c = Compiler::default();
        let r = c.run(key(3), None, || panic!("boom"));
        assert!(matches!(r, Err(Failure::Invalid(m)) if m.contains("boom")));
    }
}
