//! Termination signals (SIGINT, SIGTERM, SIGHUP, SIGQUIT) stop the runs of a
//! process that asked for it ([`crate::WasmConfig::interrupt_on_signals`],
//! what `warden run` turns on), so that the caller still gets an outcome —
//! status `error`, `signal: N`, "interrupted by signal N", as the jail's —
//! instead of being killed without a report.
//!
//! Prepared once per process and off every run's path: a handler that
//! records the first signal in an atomic and writes a byte to a pipe, and one
//! watcher thread that reads the pipe and wakes the runs waiting in a host
//! call. A running guest sees the signal at its next epoch tick (the epoch
//! callback's deadline check) or fuel yield (`supervise`); a run on a fiber
//! that waits (a host call that blocks, a full output queue) registers its
//! waker here the first time it waits, and only when signals are watched.
//! Handlers (not a blocked mask) because they cover every thread of the
//! process, also threads started before the backend was made.

use std::io;
use std::os::fd::{IntoRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::task::Waker;

/// The signals that stop runs: those that ask a program to end.
const SIGNALS: [libc::c_int; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

/// The first termination signal received (0: none).
static RECEIVED: AtomicI32 = AtomicI32::new(0);
/// Write end of the watcher's pipe (-1 before it exists).
static PIPE: AtomicI32 = AtomicI32::new(-1);
/// Set once the handlers are installed (or why they could not be).
static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();

/// Runs waiting on a fiber, woken when a signal arrives.
static WAITING: Mutex<Vec<(u64, Waker)>> = Mutex::new(Vec::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The termination signal this process received, if any (and if it
/// watches them: nothing else sets it).
#[inline]
pub(crate) fn received() -> Option<i32> {
    match RECEIVED.load(Ordering::Relaxed) {
        0 => None,
        sig => Some(sig),
    }
}

/// True once termination signals are watched in this process.
pub(crate) fn watched() -> bool {
    matches!(INSTALLED.get(), Some(Ok(())))
}

/// Installs the handlers and starts the watcher thread, once per process;
/// later calls return the first call's result.
pub(crate) fn watch() -> io::Result<()> {
    INSTALLED
        .get_or_init(|| install().map_err(|e| e.to_string()))
        .clone()
        .map_err(io::Error::other)
}

fn install() -> io::Result<()> {
    let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    // The handler must never block: a full pipe (a flood of signals) drops
    // the byte, the atomic already holds the signal.
    rustix::fs::fcntl_setfl(&write, rustix::fs::OFlags::NONBLOCK)?;
    std::thread::Builder::new()
        .name("warden-wasm-signals".into())
        .spawn(move || watcher(read))?;
    // Kept open for the life of the process: the handler may run at any
    // time.
    PIPE.store(write.into_raw_fd(), Ordering::SeqCst);
    for sig in SIGNALS {
        set_handler(sig)?;
    }
    // The command line holds these signals from its start (so that one sent
    // before this handler existed is not lost): one pending now is taken by
    // the handler at once.
    unblock()
}

#[allow(unsafe_code)]
fn unblock() -> io::Result<()> {
    // SAFETY: `set` is plain data, initialised by sigemptyset and filled by
    // sigaddset before pthread_sigmask reads it; the old mask is not needed.
    let rc = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in SIGNALS {
            libc::sigaddset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut())
    };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

#[allow(unsafe_code)]
fn set_handler(sig: libc::c_int) -> io::Result<()> {
    // SAFETY: `sigaction` is plain data, fully initialised here (zeroed,
    // then the handler, flags and an empty mask set); `on_signal` is an
    // `extern "C" fn(c_int)` that only touches atomics, errno and write(2),
    // all async-signal-safe; the old action is not needed (null).
    let rc = unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(sig, &action, std::ptr::null_mut())
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[allow(unsafe_code)]
extern "C" fn on_signal(sig: libc::c_int) {
    let _ = RECEIVED.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
    let fd = PIPE.load(Ordering::SeqCst);
    if fd < 0 {
        return;
    }
    let byte = sig as u8;
    // SAFETY: errno is thread-local and `__errno_location` returns a valid
    // pointer to it; it is restored so that the interrupted code does not
    // see write(2)'s errno. `fd` is the pipe's write end, open for the life
    // of the process (never closed after it is published); the buffer is
    // one byte on this stack. write(2) is async-signal-safe.
    unsafe {
        let errno = libc::__errno_location();
        let saved = *errno;
        libc::write(fd, (&byte as *const u8).cast(), 1);
        *errno = saved;
    }
}

/// Reads the pipe; wakes every waiting run at each signal.
fn watcher(read: OwnedFd) {
    let mut buf = [0u8; 16];
    loop {
        match rustix::io::read(&read, &mut buf) {
            Ok(0) => return,
            Ok(_) => {
                let waiting = std::mem::take(&mut *lock());
                for (_, waker) in waiting {
                    waker.wake();
                }
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => return,
        }
    }
}

fn lock() -> std::sync::MutexGuard<'static, Vec<(u64, Waker)>> {
    WAITING.lock().unwrap_or_else(|e| e.into_inner())
}

/// A run waiting on a fiber, to be woken by a signal; unregistered when
/// dropped.
pub(crate) struct Waiting {
    id: u64,
    waker: Waker,
}

impl Waiting {
    /// Registers `waker` (only if signals are watched). The caller checks
    /// [`received`] after this: a signal that came just before is seen
    /// there, one that comes later wakes `waker`.
    pub fn register(waker: &Waker) -> Option<Waiting> {
        if !watched() {
            return None;
        }
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        lock().push((id, waker.clone()));
        Some(Waiting {
            id,
            waker: waker.clone(),
        })
    }

    /// Replaces the registered waker if the run is now polled with another.
    pub fn update(&mut self, waker: &Waker) {
        if self.waker.will_wake(waker) {
            return;
        }
        self.waker = waker.clone();
        let mut waiting = lock();
        match waiting.iter_mut().find(|(id, _)| *id == self.id) {
            Some(entry) => entry.1 = waker.clone(),
            // Already taken by the watcher (a signal came): the caller sees
            // it with `received`.
            None => waiting.push((self.id, waker.clone())),
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        lock().retain(|(id, _)| *id != self.id);
    }
}
