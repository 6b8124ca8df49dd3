//! `hosthttp METHOD URL [BODY [BUFSIZE [REPEAT]]]`: REPEAT (default 1)
//! requests through Warden's `warden.http_request` (preview 1 only). Prints
//! `rc=N status=S len=L` for each, then the body (as much as fits the
//! buffer, 1 MiB by default).
#[cfg(not(target_env = "p2"))]
#[link(wasm_import_module = "warden")]
extern "C" {
    #[allow(clippy::too_many_arguments)]
    fn http_request(
        method: *const u8,
        method_len: usize,
        url: *const u8,
        url_len: usize,
        headers: *const u8,
        headers_len: usize,
        body: *const u8,
        body_len: usize,
        buf: *mut u8,
        cap: usize,
        len_out: *mut u32,
        status_out: *mut u32,
    ) -> i32;
}

#[cfg(not(target_env = "p2"))]
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    let (method, url, body) = (arg(1), arg(2), arg(3));
    let cap: usize = arg(4).parse().unwrap_or(1 << 20);
    let repeat: usize = arg(5).parse().unwrap_or(1);
    for _ in 0..repeat {
        request(&method, &url, &body, cap);
    }
}

#[cfg(not(target_env = "p2"))]
fn request(method: &str, url: &str, body: &str, cap: usize) {
    let headers = "X-Warden-Test: yes\n";
    let mut buf = vec![0u8; cap];
    let (mut len, mut status) = (0u32, 0u32);
    // SAFETY: every pointer/length pair describes a live slice; the out
    // pointers outlive the call.
    let rc = unsafe {
        http_request(
            method.as_ptr(),
            method.len(),
            url.as_ptr(),
            url.len(),
            headers.as_ptr(),
            headers.len(),
            body.as_ptr(),
            body.len(),
            buf.as_mut_ptr(),
            buf.len(),
            &mut len,
            &mut status,
        )
    };
    println!("rc={rc} status={status} len={len}");
    let shown = (len as usize).min(buf.len());
    if rc == 0 || rc == 9 {
        println!("{}", String::from_utf8_lossy(&buf[..shown]));
    }
}

#[cfg(target_env = "p2")]
fn main() {
    eprintln!("hosthttp: a preview-1 guest");
    std::process::exit(2);
}
