//! `redteam_wit CMD...` (a WASI 0.2 component): hostile uses of Warden's
//! WIT host interfaces, one line of output per command:
//! * `header NAME|VALUE|URL` — a GET with one header as given (the `|`s
//!   split; `\r` and `\n` may be written `%r` and `%n`);
//! * `headers N URL` — a GET with N empty-valued headers `X-N`;
//! * `body N URL` — a POST with a body of N bytes;
//! * `log N` — one record of N bytes;
//! * `kvns NAME` — `kv.set` in namespace NAME (`%0` is a NUL byte);
//! * `kvbig N` — `kv.set` of a key and a value of N bytes each, then
//!   `kv.get` and `kv.list-keys` with keys of N bytes;
//! * `callbig N NAME` — `call.invoke` of NAME with N bytes of input.
//!
//! As a preview-1 module it only says so.
#[cfg(target_env = "p2")]
mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "warden:host/host",
    });
}

/// `Ok` or `Err(NAME)`.
#[cfg(target_env = "p2")]
fn shown(r: Result<(), bindings::warden::host::types::Error>) -> String {
    match r {
        Ok(()) => "Ok".into(),
        Err(e) => format!("Err({})", e.name()),
    }
}

#[cfg(target_env = "p2")]
fn main() {
    use bindings::warden::host::{call, http, kv, log};
    let unescape = |s: &str| {
        s.replace("%r", "\r")
            .replace("%n", "\n")
            .replace("%0", "\0")
    };
    let send = |headers: Vec<(String, String)>, method: &str, body: Vec<u8>, url: &str| {
        let request = http::Request {
            method: method.into(),
            url: url.into(),
            headers,
            body,
        };
        match http::send(&request) {
            Ok(r) => format!("Ok({})", r.status),
            Err(e) => format!("Err({})", e.name()),
        }
    };
    for cmd in std::env::args().skip(1) {
        let (verb, rest) = cmd.split_once(' ').unwrap_or((&cmd, ""));
        let line = match verb {
            "header" => {
                let parts: Vec<String> = rest.splitn(3, '|').map(unescape).collect();
                let arg = |i: usize| parts.get(i).cloned().unwrap_or_default();
                send(vec![(arg(0), arg(1))], "GET", Vec::new(), &arg(2))
            }
            "headers" => {
                let (n, url) = rest.split_once(' ').unwrap_or((rest, ""));
                let n: usize = n.parse().unwrap_or(0);
                let headers = (0..n).map(|i| (format!("X-{i}"), String::new())).collect();
                send(headers, "GET", Vec::new(), url)
            }
            "body" => {
                let (n, url) = rest.split_once(' ').unwrap_or((rest, ""));
                let n: usize = n.parse().unwrap_or(0);
                send(Vec::new(), "POST", vec![b'b'; n], url)
            }
            "log" => {
                let n: usize = rest.parse().unwrap_or(0);
                shown(log::write(log::Level::Info, &"l".repeat(n)))
            }
            "kvns" => shown(kv::set(&unescape(rest), b"k", b"v")),
            "kvbig" => {
                let n: usize = rest.parse().unwrap_or(0);
                let big = vec![b'k'; n];
                let get = match kv::get("ns", &big) {
                    Ok(_) => "Ok".to_string(),
                    Err(e) => format!("Err({})", e.name()),
                };
                let list = match kv::list_keys("ns", &big, Some(&big)) {
                    Ok(_) => "Ok".to_string(),
                    Err(e) => format!("Err({})", e.name()),
                };
                format!(
                    "{} {} {} {get} {list}",
                    shown(kv::set("ns", &big, b"v")),
                    shown(kv::set("ns", b"k", &big)),
                    shown(kv::set(&"n".repeat(n), b"k", b"v")),
                )
            }
            "callbig" => {
                let (n, name) = rest.split_once(' ').unwrap_or((rest, ""));
                let n: usize = n.parse().unwrap_or(0);
                let module = match call::invoke(&"m".repeat(n), b"") {
                    Ok(_) => "Ok".to_string(),
                    Err(e) => format!("Err({})", e.name()),
                };
                match call::invoke(name, &vec![b'i'; n]) {
                    Ok(r) => format!("{module} Ok({})", r.exit_code),
                    Err(e) => format!("{module} Err({})", e.name()),
                }
            }
            other => format!("unknown command {other}"),
        };
        println!("{line}");
    }
}

#[cfg(not(target_env = "p2"))]
fn main() {
    eprintln!("redteam_wit: a WASI 0.2 component guest");
    std::process::exit(2);
}
