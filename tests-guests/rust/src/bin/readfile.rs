//! `readfile PATH`: prints the file's contents; on failure prints the
//! error to stderr and exits 2.
use std::io::Write;

fn main() {
    let path = std::env::args().nth(1).expect("usage: readfile PATH");
    match std::fs::read(&path) {
        Ok(data) => std::io::stdout().write_all(&data).expect("write stdout"),
        Err(e) => {
            eprintln!("readfile {path}: {e}");
            std::process::exit(2);
        }
    }
}
