//! Prints its arguments (one `arg:` line each) and its environment
//! (one `NAME=VALUE` line each, sorted).
fn main() {
    for arg in std::env::args() {
        println!("arg:{arg}");
    }
    let mut vars: Vec<(String, String)> = std::env::vars().collect();
    vars.sort();
    for (k, v) in vars {
        println!("{k}={v}");
    }
}
