//! Prints the wall clock (ns since the epoch), a monotonic delta and eight
//! random bytes from WASI (for deterministic-mode tests).
use std::time::{Instant, SystemTime, UNIX_EPOCH};

fn main() {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let t0 = Instant::now();
    let t1 = Instant::now();
    let mut bytes = [0u8; 8];
    let mut map = std::collections::HashMap::<u32, u32>::new();
    map.insert(1, 1);
    // HashMap's RandomState draws from WASI random_get; print a hash too.
    use std::hash::{BuildHasher, Hasher};
    let mut h = map.hasher().build_hasher();
    h.write_u32(42);
    for (i, b) in h.finish().to_le_bytes().iter().enumerate() {
        bytes[i] = *b;
    }
    println!("wall_ns={now}");
    println!("mono_delta_ns={}", (t1 - t0).as_nanos());
    println!("hash={}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>());
}
