//! `writefile PATH TEXT`: writes TEXT to PATH; on failure prints the error
//! to stderr and exits 2.
fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: writefile PATH TEXT");
    let text = args.next().unwrap_or_default();
    if let Err(e) = std::fs::write(&path, text) {
        eprintln!("writefile {path}: {e}");
        std::process::exit(2);
    }
}
