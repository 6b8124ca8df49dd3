//! `sleep`: sleeps 10 s in one host call (WASI `poll_oneoff` on a clock;
//! under Warden it needs `clock:read`): the deadline-latency benchmark's
//! guest for a run blocked in the host.
fn main() {
    std::thread::sleep(std::time::Duration::from_secs(10));
}
