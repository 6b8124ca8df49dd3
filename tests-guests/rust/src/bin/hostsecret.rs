//! `hostsecret NAME...` (a WASI 0.2 component): reads each secret with
//! Warden's WIT interface `warden:host/secret` and prints one line per
//! name: `NAME: Ok(VALUE)` or `NAME: Err(ERROR)`. It imports that
//! interface only, so that no other grant is needed. As a preview-1
//! module it only says so.
#[cfg(target_env = "p2")]
mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "warden:host/host",
    });
}

#[cfg(target_env = "p2")]
fn main() {
    use bindings::warden::host::secret;
    for name in std::env::args().skip(1) {
        match secret::read(&name) {
            Ok(value) => println!("{name}: Ok({})", String::from_utf8_lossy(&value)),
            Err(e) => println!("{name}: Err({e:?})"),
        }
    }
}

#[cfg(not(target_env = "p2"))]
fn main() {
    eprintln!("hostsecret: a WASI 0.2 component guest");
    std::process::exit(2);
}
