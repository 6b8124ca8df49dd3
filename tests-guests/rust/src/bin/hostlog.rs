//! `hostlog CMD...`: logs through Warden's `warden.log` host function
//! (preview 1 only) and prints each status code. Commands: `L:MESSAGE`
//! (L = level 0 trace … 4 error), `flood:N` (N info records), `big:N` (one
//! record of N bytes).
#[cfg(not(target_env = "p2"))]
#[link(wasm_import_module = "warden")]
extern "C" {
    fn log(level: i32, message: *const u8, len: usize) -> i32;
}

#[cfg(not(target_env = "p2"))]
fn put(level: i32, message: &[u8]) -> i32 {
    // SAFETY: the pointer and length describe a live slice.
    unsafe { log(level, message.as_ptr(), message.len()) }
}

#[cfg(not(target_env = "p2"))]
fn main() {
    for cmd in std::env::args().skip(1) {
        let (head, rest) = cmd.split_once(':').unwrap_or((cmd.as_str(), ""));
        let rc = match head {
            "flood" => {
                let n: usize = rest.parse().unwrap_or(0);
                let mut last = 0;
                for i in 0..n {
                    last = put(2, format!("record {i}").as_bytes());
                }
                last
            }
            "big" => put(2, &vec![b'x'; rest.parse().unwrap_or(0)]),
            level => put(level.parse().unwrap_or(-1), rest.as_bytes()),
        };
        println!("rc={rc}");
    }
}

#[cfg(target_env = "p2")]
fn main() {
    eprintln!("hostlog: a preview-1 guest");
    std::process::exit(2);
}
