//! `hello`: the per-invocation benchmark's guest (prints one line).
fn main() {
    println!("Hello, world!");
}
