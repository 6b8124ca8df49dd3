//! The `http` host capability: only hosts granted by `net:http:HOST`, no
//! redirects followed, a per-call deadline, a response-size cap, and no
//! link at all without a grant. A real HTTP server on 127.0.0.1, started
//! here, answers (it stops by itself after a minute).
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::common::*;
use warden_core::Status;
use warden_wasm::{HttpConfig, WasmBackend, WasmConfig};

struct Server {
    port: u16,
    /// Requests for /target (where the redirect points).
    target_hits: Arc<AtomicU32>,
}

fn server() -> &'static Server {
    static S: OnceLock<Server> = OnceLock::new();
    S.get_or_init(|| {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let target_hits = Arc::new(AtomicU32::new(0));
        let hits = target_hits.clone();
        std::thread::spawn(move || {
            let stop = Instant::now() + Duration::from_secs(60);
            let mut served = 0;
            while Instant::now() < stop && served < 500 {
                match listener.accept() {
                    Ok((stream, _)) => {
                        served += 1;
                        let hits = hits.clone();
                        std::thread::spawn(move || serve(stream, port, &hits));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Server { port, target_hits }
    })
}

fn serve(stream: TcpStream, port: u16, target_hits: &AtomicU32) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut length = 0usize;
    let mut test_header = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        if let Some(v) = lower.strip_prefix("x-warden-test:") {
            test_header = v.trim().to_string();
        }
    }
    let mut body = vec![0u8; length];
    let _ = reader.read_exact(&mut body);
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let mut stream = stream;
    let (status, extra, content): (&str, String, Vec<u8>) = match path.as_str() {
        "/hello" => ("200 OK", String::new(), b"hello world".to_vec()),
        "/echo" => (
            "200 OK",
            String::new(),
            format!(
                "{method} {} header={test_header}",
                String::from_utf8_lossy(&body)
            )
            .into_bytes(),
        ),
        "/big" => ("200 OK", String::new(), vec![b'b'; 2 << 20]),
        "/redirect" => (
            "302 Found",
            format!("Location: http://localhost:{port}/target\r\n"),
            b"moved".to_vec(),
        ),
        "/target" => {
            target_hits.fetch_add(1, Ordering::SeqCst);
            ("200 OK", String::new(), b"target".to_vec())
        }
        "/slow" => {
            std::thread::sleep(Duration::from_secs(3));
            ("200 OK", String::new(), b"late".to_vec())
        }
        _ => ("404 Not Found", String::new(), b"no".to_vec()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n",
        content.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&content);
}

fn url(path: &str) -> String {
    format!("http://127.0.0.1:{}{path}", server().port)
}

fn http(grants: &[&str], args: &[&str]) -> Ran {
    let mut i = inv(&rust("hosthttp"), args);
    i.capabilities = caps(grants);
    run(&i)
}

#[test]
fn a_granted_host_is_reached() {
    let r = http(&["net:http:127.0.0.1"], &["GET", &url("/hello")]);
    r.expect_exited();
    assert_eq!(r.stdout, "rc=0 status=200 len=11\nhello world\n");
    // Method, body and headers reach the server.
    let r = http(&["net:http:*"], &["POST", &url("/echo"), "payload"]);
    assert_eq!(
        r.stdout,
        "rc=0 status=200 len=23\nPOST payload header=yes\n"
    );
    // Status codes are responses, not errors.
    let r = http(&["net:http:127.0.0.1"], &["GET", &url("/nothing")]);
    assert!(r.stdout.starts_with("rc=0 status=404"), "{}", r.stdout);
}

#[test]
fn an_ungranted_host_is_refused_and_recorded() {
    let r = http(&["net:http:example.com"], &["GET", &url("/hello")]);
    // DENIED (1), nothing sent.
    assert_eq!(r.stdout, "rc=1 status=0 len=0\n");
    assert_eq!(r.outcome.status, Status::Violation, "{:?}", r.outcome);
    assert_eq!(
        violations_of(&r.outcome, "capability"),
        ["warden.http_request: net:http:127.0.0.1 not granted"]
    );
    // A name is not its address: localhost is not 127.0.0.1.
    let r = http(
        &["net:http:127.0.0.1"],
        &["GET", &format!("http://localhost:{}/hello", server().port)],
    );
    assert_eq!(r.stdout, "rc=1 status=0 len=0\n");
    // Only http and https.
    let r = http(&["net:http:*"], &["GET", "file:///etc/passwd"]);
    assert_eq!(r.stdout, "rc=3 status=0 len=0\n");
}

#[test]
fn without_a_net_http_grant_the_function_is_not_even_linked() {
    let r = http(
        &["net:connect:127.0.0.1:80", "log:write"],
        &["GET", &url("/hello")],
    );
    assert_eq!(r.outcome.status, Status::Error, "{:?}", r.outcome);
    assert_eq!(r.outcome.exit_code, Some(126));
    let error = r.outcome.error.unwrap_or_default();
    assert!(error.contains("warden.http_request"), "{error}");
    assert!(error.contains("net:http:HOST"), "{error}");
}

#[test]
fn redirects_are_not_followed() {
    let before = server().target_hits.load(Ordering::SeqCst);
    let r = http(&["net:http:127.0.0.1"], &["GET", &url("/redirect")]);
    // The 302 itself comes back; localhost (not granted) is never asked.
    assert_eq!(r.stdout, "rc=0 status=302 len=5\nmoved\n");
    assert_eq!(server().target_hits.load(Ordering::SeqCst), before);
}

#[test]
fn an_oversized_response_fails() {
    let r = http(&["net:http:127.0.0.1"], &["GET", &url("/big")]);
    // TOO_LARGE (4): the body is over the 1 MiB cap.
    assert!(r.stdout.starts_with("rc=4 "), "{}", r.stdout);
    assert_eq!(r.outcome.status, Status::Exited);
    // A response larger than the guest's buffer: what fits, and the size.
    let r = http(&["net:http:127.0.0.1"], &["GET", &url("/hello"), "", "5"]);
    assert_eq!(r.stdout, "rc=9 status=200 len=11\nhello\n");
}

#[test]
fn a_slow_server_hits_the_per_call_deadline() {
    let backend = WasmBackend::with_config(WasmConfig {
        http: HttpConfig {
            timeout: Duration::from_millis(300),
            ..HttpConfig::default()
        },
        ..WasmConfig::default()
    })
    .expect("backend");
    let mut i = inv(&rust("hosthttp"), &["GET", &url("/slow")]);
    i.capabilities = caps(&["net:http:127.0.0.1"]);
    // Compile first: only the call is timed.
    backend
        .prepare(&rust("hosthttp"), backend.engine_kind(&i))
        .unwrap();
    let (io, out, _) = warden_wasm::RunIo::captured(warden_wasm::Input::Empty);
    let t = Instant::now();
    let o = backend.run_with_io(&i, &io).unwrap();
    let took = t.elapsed();
    // TIMEOUT (7) for the call; the run goes on and exits normally.
    assert_eq!(out.text(), "rc=7 status=0 len=0\n");
    assert_eq!(o.status, Status::Exited, "{o:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");

    // The run's own wall-clock limit bounds a call too.
    let mut i = inv(&rust("hosthttp"), &["GET", &url("/slow")]);
    i.capabilities = caps(&["net:http:127.0.0.1"]);
    i.limits.wall_time = Duration::from_millis(400);
    crate::common::backend()
        .prepare(&rust("hosthttp"), crate::common::backend().engine_kind(&i))
        .unwrap();
    let t = Instant::now();
    let r = run(&i);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert!(
        r.outcome.status == Status::Timeout || r.stdout.starts_with("rc=7"),
        "{:?} {}",
        r.outcome,
        r.stdout
    );
}

#[test]
fn requests_per_run_are_capped() {
    let backend = WasmBackend::with_config(WasmConfig {
        http: HttpConfig {
            max_requests_per_run: 3,
            ..HttpConfig::default()
        },
        ..WasmConfig::default()
    })
    .expect("backend");
    let mut i = inv(&rust("hosthttp"), &["GET", &url("/hello"), "", "1024", "5"]);
    i.capabilities = caps(&["net:http:127.0.0.1"]);
    let (io, out, _) = warden_wasm::RunIo::captured(warden_wasm::Input::Empty);
    let outcome = backend.run_with_io(&i, &io).expect("runs");
    assert_eq!(outcome.status, Status::Exited, "{outcome:?}");
    let rcs: Vec<String> = out
        .text()
        .lines()
        .filter(|l| l.starts_with("rc="))
        .map(|l| l.split(' ').next().unwrap_or_default().to_string())
        .collect();
    // Three sent, then LIMIT (5).
    assert_eq!(
        rcs,
        ["rc=0", "rc=0", "rc=0", "rc=5", "rc=5"],
        "{}",
        out.text()
    );
}
