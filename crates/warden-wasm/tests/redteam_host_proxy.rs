//! Red team, `http`: proxy variables in Warden's own environment must not
//! send a guest's requests through a proxy (which would see them, and
//! could answer for any host). A test binary of its own: it changes the
//! process environment. The origin and the "proxy" listen on a public
//! address of the tests' network namespace (common/net.rs): both are
//! reachable, only the origin may be reached.
mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use common::net::{in_net, PUBLIC};
use common::*;
use warden_core::Status;
use warden_wasm::{Input, RunIo, WasmBackend, WasmConfig};

/// A listener that answers every request with `reply` and counts them.
fn listen(reply: &'static str) -> (u16, Arc<AtomicU32>) {
    let listener = TcpListener::bind((PUBLIC, 0)).expect("bind");
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicU32::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            counter.fetch_add(1, Ordering::SeqCst);
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
            }
            let mut s = stream;
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                reply.len()
            );
        }
    });
    (port, hits)
}

#[test]
fn proxy_variables_of_wardens_environment_are_ignored() {
    // Build the guest before the environment points at a "proxy".
    let guest = rust("hosthttp");
    let ((origin, origin_hits), (proxy, proxy_hits)) =
        in_net(|| (listen("from the origin"), listen("from the proxy")));
    let proxy_url = format!("http://{PUBLIC}:{proxy}");
    for var in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        std::env::set_var(var, &proxy_url);
    }
    std::env::remove_var("NO_PROXY");
    std::env::remove_var("no_proxy");
    in_net(move || {
        // The backend (and its HTTP client) is made under that environment.
        let backend = WasmBackend::with_config(WasmConfig::default()).expect("backend");
        let mut i = inv(&guest, &["GET", &format!("http://{PUBLIC}:{origin}/hello")]);
        i.capabilities = caps(&[&format!("net:http:{PUBLIC}")]);
        let (io, out, _) = RunIo::captured(Input::Empty);
        let outcome = backend.run_with_io(&i, &io).expect("runs");
        assert_eq!(outcome.status, Status::Exited, "{outcome:?}");
        assert_eq!(out.text(), "rc=0 status=200 len=15\nfrom the origin\n");
        assert_eq!(origin_hits.load(Ordering::SeqCst), 1);
        assert_eq!(
            proxy_hits.load(Ordering::SeqCst),
            0,
            "the proxy saw the request"
        );
        // A host the run may not reach is not reached through the proxy
        // either (the proxy would have answered for it).
        let mut i = inv(&guest, &["GET", "http://ungranted.test/"]);
        i.capabilities = caps(&[&format!("net:http:{PUBLIC}")]);
        let (io, out, _) = RunIo::captured(Input::Empty);
        backend.run_with_io(&i, &io).expect("runs");
        assert_eq!(out.text(), "rc=1 status=0 len=0\n");
        assert_eq!(proxy_hits.load(Ordering::SeqCst), 0);
    })
}
