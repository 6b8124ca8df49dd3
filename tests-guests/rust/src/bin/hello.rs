//! Prints a greeting to stdout and exits 0.
fn main() {
    println!("hello from rust");
}
