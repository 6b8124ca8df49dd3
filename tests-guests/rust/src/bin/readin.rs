//! `readin`: reads a path from stdin and prints that file; on failure
//! prints `error: …` and exits 2. (A callee for module-to-module calls.)
use std::io::{Read, Write};

fn main() {
    let mut path = String::new();
    let _ = std::io::stdin().read_to_string(&mut path);
    match std::fs::read(path.trim()) {
        Ok(data) => std::io::stdout().write_all(&data).expect("write stdout"),
        Err(e) => {
            println!("error: {e}");
            std::process::exit(2);
        }
    }
}
