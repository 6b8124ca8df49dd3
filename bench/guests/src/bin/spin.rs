//! `spin`: runs until stopped (the deadline-latency benchmark's guest).
fn main() {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}
