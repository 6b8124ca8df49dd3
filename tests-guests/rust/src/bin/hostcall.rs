//! `hostcall NAME INPUT`: calls module NAME with INPUT through Warden's
//! `warden.call` (preview 1 only) and prints `rc=N exit=E`, then the
//! callee's output. Run with no arguments (as a callee), it reads a command
//! from stdin: `call NAME INPUT` (the same, nested), `recurse NAME N`
//! (calls NAME with `recurse NAME N-1` until N is 0, printing the depth
//! reached), or `echo TEXT`.
#[cfg(not(target_env = "p2"))]
#[link(wasm_import_module = "warden")]
extern "C" {
    #[allow(clippy::too_many_arguments)]
    fn call(
        name: *const u8,
        name_len: usize,
        input: *const u8,
        input_len: usize,
        buf: *mut u8,
        cap: usize,
        len_out: *mut u32,
        exit_out: *mut i32,
    ) -> i32;
}

#[cfg(not(target_env = "p2"))]
fn invoke(name: &str, input: &str) -> (i32, i32, String) {
    let mut buf = vec![0u8; 1 << 20];
    let (mut len, mut exit) = (0u32, -1i32);
    // SAFETY: every pointer/length pair describes a live slice; the out
    // pointers outlive the call.
    let rc = unsafe {
        call(
            name.as_ptr(),
            name.len(),
            input.as_ptr(),
            input.len(),
            buf.as_mut_ptr(),
            buf.len(),
            &mut len,
            &mut exit,
        )
    };
    let shown = (len as usize).min(buf.len());
    (
        rc,
        exit,
        String::from_utf8_lossy(&buf[..shown]).into_owned(),
    )
}

#[cfg(not(target_env = "p2"))]
fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() >= 2 {
        let input = args.get(2).cloned().unwrap_or_default();
        let (rc, exit, out) = invoke(&args[1], &input);
        println!("rc={rc} exit={exit}");
        print!("{out}");
        return;
    }
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    let line = line.trim_end();
    let (command, rest) = line.split_once(' ').unwrap_or((line, ""));
    let (first, second) = rest.split_once(' ').unwrap_or((rest, ""));
    match command {
        "echo" => print!("{rest}"),
        "call" => {
            let (rc, exit, out) = invoke(first, second);
            println!("rc={rc} exit={exit}");
            print!("{out}");
        }
        "recurse" => {
            let n: u32 = second.parse().unwrap_or(0);
            if n == 0 {
                println!("bottom");
                return;
            }
            let (rc, exit, out) = invoke(first, &format!("recurse {first} {}", n - 1));
            println!("{n}: rc={rc} exit={exit}");
            print!("{out}");
        }
        _ => {
            eprintln!("hostcall: unknown command {line:?}");
            std::process::exit(2);
        }
    }
}

#[cfg(target_env = "p2")]
fn main() {
    eprintln!("hostcall: a preview-1 guest");
    std::process::exit(2);
}
