//! Copies stdin to stdout.
use std::io::{self, Read, Write};

fn main() {
    let mut buf = Vec::new();
    io::stdin().read_to_end(&mut buf).expect("read stdin");
    io::stdout().write_all(&buf).expect("write stdout");
}
