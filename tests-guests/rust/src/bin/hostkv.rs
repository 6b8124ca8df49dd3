//! `hostkv CMD...`: uses Warden's key-value host functions (preview 1
//! only), one command per argument, printing one line each:
//! `get NS KEY`, `set NS KEY VALUE`, `del NS KEY`, `list NS PREFIX [AFTER]`,
//! `setbig NS KEY N` (a value of N bytes).
#[cfg(not(target_env = "p2"))]
#[link(wasm_import_module = "warden")]
extern "C" {
    fn kv_get(
        ns: *const u8,
        ns_len: usize,
        key: *const u8,
        key_len: usize,
        buf: *mut u8,
        cap: usize,
        len_out: *mut u32,
    ) -> i32;
    fn kv_set(
        ns: *const u8,
        ns_len: usize,
        key: *const u8,
        key_len: usize,
        value: *const u8,
        value_len: usize,
    ) -> i32;
    fn kv_delete(ns: *const u8, ns_len: usize, key: *const u8, key_len: usize) -> i32;
    fn kv_list(
        ns: *const u8,
        ns_len: usize,
        prefix: *const u8,
        prefix_len: usize,
        after: *const u8,
        after_len: usize,
        buf: *mut u8,
        cap: usize,
        len_out: *mut u32,
    ) -> i32;
}

#[cfg(not(target_env = "p2"))]
fn main() {
    for cmd in std::env::args().skip(1) {
        let w: Vec<&str> = cmd.split(' ').collect();
        let arg = |i: usize| w.get(i).copied().unwrap_or("");
        let (ns, key) = (arg(1), arg(2));
        // SAFETY (all calls below): every pointer/length pair describes a
        // live slice; `len` outlives the call.
        match w[0] {
            "get" => {
                let mut buf = vec![0u8; 16];
                let mut len = 0u32;
                let mut rc = unsafe {
                    kv_get(
                        ns.as_ptr(),
                        ns.len(),
                        key.as_ptr(),
                        key.len(),
                        buf.as_mut_ptr(),
                        buf.len(),
                        &mut len,
                    )
                };
                if rc == 9 {
                    // Too small: ask again with the size the host said.
                    buf = vec![0u8; len as usize];
                    rc = unsafe {
                        kv_get(
                            ns.as_ptr(),
                            ns.len(),
                            key.as_ptr(),
                            key.len(),
                            buf.as_mut_ptr(),
                            buf.len(),
                            &mut len,
                        )
                    };
                }
                if rc == 0 {
                    println!(
                        "{cmd}: rc=0 value={}",
                        String::from_utf8_lossy(&buf[..len as usize])
                    );
                } else {
                    println!("{cmd}: rc={rc}");
                }
            }
            "set" | "setbig" => {
                let value = if w[0] == "setbig" {
                    vec![b'v'; arg(3).parse().unwrap_or(0)]
                } else {
                    arg(3).as_bytes().to_vec()
                };
                let rc = unsafe {
                    kv_set(
                        ns.as_ptr(),
                        ns.len(),
                        key.as_ptr(),
                        key.len(),
                        value.as_ptr(),
                        value.len(),
                    )
                };
                println!("{cmd}: rc={rc}");
            }
            "del" => {
                let rc = unsafe { kv_delete(ns.as_ptr(), ns.len(), key.as_ptr(), key.len()) };
                println!("{cmd}: rc={rc}");
            }
            "list" => {
                let after = arg(3);
                let mut buf = vec![0u8; 1 << 16];
                let mut len = 0u32;
                let rc = unsafe {
                    kv_list(
                        ns.as_ptr(),
                        ns.len(),
                        key.as_ptr(),
                        key.len(),
                        after.as_ptr(),
                        after.len(),
                        buf.as_mut_ptr(),
                        buf.len(),
                        &mut len,
                    )
                };
                if rc != 0 {
                    println!("{cmd}: rc={rc}");
                    continue;
                }
                let b = &buf[..len as usize];
                let u32_at =
                    |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]) as usize;
                let (n, more) = (u32_at(0), u32_at(4));
                let mut keys = Vec::new();
                let mut at = 8;
                for _ in 0..n {
                    let l = u32_at(at);
                    keys.push(String::from_utf8_lossy(&b[at + 4..at + 4 + l]).into_owned());
                    at += 4 + l;
                }
                println!("{cmd}: rc=0 keys={} more={more}", keys.join(","));
            }
            other => println!("{other}: unknown command"),
        }
    }
}

#[cfg(target_env = "p2")]
fn main() {
    eprintln!("hostkv: a preview-1 guest");
    std::process::exit(2);
}
