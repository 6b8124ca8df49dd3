//! `hostwit CMD...` (a WASI 0.2 component): uses Warden's WIT host
//! interfaces `warden:host/{log,kv,http,call}` and prints one line per
//! command: `log LEVEL MESSAGE`, `set NS KEY VALUE`, `get NS KEY`,
//! `list NS PREFIX`, `http URL`, `call NAME INPUT`. As a preview-1 module
//! it only says so.
#[cfg(target_env = "p2")]
mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "warden:host/host",
    });
}

#[cfg(target_env = "p2")]
fn main() {
    use bindings::warden::host::{call, http, kv, log};
    for cmd in std::env::args().skip(1) {
        let w: Vec<&str> = cmd.splitn(4, ' ').collect();
        let arg = |i: usize| w.get(i).copied().unwrap_or("");
        let line = match w[0] {
            "log" => {
                let level = match arg(1) {
                    "warn" => log::Level::Warn,
                    "error" => log::Level::Error,
                    _ => log::Level::Info,
                };
                let rest = cmd.splitn(3, ' ').nth(2).unwrap_or("");
                format!("{:?}", log::write(level, rest))
            }
            "set" => format!(
                "{:?}",
                kv::set(arg(1), arg(2).as_bytes(), arg(3).as_bytes())
            ),
            "get" => match kv::get(arg(1), arg(2).as_bytes()) {
                Ok(Some(v)) => format!("Ok({})", String::from_utf8_lossy(&v)),
                other => format!("{other:?}"),
            },
            "list" => match kv::list_keys(arg(1), arg(2).as_bytes(), None) {
                Ok(page) => {
                    let keys: Vec<String> = page
                        .keys
                        .iter()
                        .map(|k| String::from_utf8_lossy(k).into_owned())
                        .collect();
                    format!("Ok({} more={})", keys.join(","), page.more)
                }
                Err(e) => format!("Err({e:?})"),
            },
            "http" => {
                let request = http::Request {
                    method: "GET".into(),
                    url: arg(1).into(),
                    headers: vec![("X-Warden-Test".into(), "wit".into())],
                    body: Vec::new(),
                };
                match http::send(&request) {
                    Ok(r) => format!("Ok({} {})", r.status, String::from_utf8_lossy(&r.body)),
                    Err(e) => format!("Err({e:?})"),
                }
            }
            "call" => {
                let input = cmd.splitn(3, ' ').nth(2).unwrap_or("");
                match call::invoke(arg(1), input.as_bytes()) {
                    Ok(r) => format!("Ok({} {})", r.exit_code, String::from_utf8_lossy(&r.output)),
                    Err(e) => format!("Err({e:?})"),
                }
            }
            other => format!("unknown command {other}"),
        };
        println!("{cmd}: {line}");
    }
}

#[cfg(not(target_env = "p2"))]
fn main() {
    eprintln!("hostwit: a WASI 0.2 component guest");
    std::process::exit(2);
}
