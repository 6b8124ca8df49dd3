//! The `http` host capability: only hosts granted by `net:http:HOST`, no
//! redirects followed, a per-call deadline, a response-size cap, and no
//! link at all without a grant; names resolved once per run (here from a
//! test hosts file), addresses judged as a jailed run's connections are
//! (never loopback or metadata, private only when granted by address);
//! every attempt in the report's `connections`. A real HTTP server,
//! started here on a "public" address of the tests' own network namespace,
//! answers (it stops by itself after a minute).
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::common::net::{self, in_net, METADATA, OTHER_PUBLIC, PRIVATE, PUBLIC};
use crate::common::*;
use warden_core::{Connection, Invocation, Status};
use warden_wasm::{HttpConfig, WasmBackend};

struct Server {
    port: u16,
    /// Requests for /target (where the redirect points).
    target_hits: Arc<AtomicU32>,
}

/// The server on [`PUBLIC`], started (inside the namespace) on first use.
fn server() -> &'static Server {
    static S: OnceLock<Server> = OnceLock::new();
    S.get_or_init(|| {
        let listener = TcpListener::bind((PUBLIC, 0)).expect("bind the public address");
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
            format!("Location: http://api.test:{port}/target\r\n"),
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
    format!("http://{PUBLIC}:{}{path}", server().port)
}

/// `http://api.test:PORT{path}`: the server through a name of the test
/// hosts file.
fn named_url(path: &str) -> String {
    format!("http://api.test:{}{path}", server().port)
}

fn ran_on(backend: &WasmBackend, i: &Invocation) -> Ran {
    let (io, out, err) = warden_wasm::RunIo::captured(warden_wasm::Input::Empty);
    let outcome = backend.run_with_io(i, &io).expect("backend runs");
    Ran {
        outcome,
        stdout: out.text(),
        stderr: err.text(),
    }
}

/// `hosthttp ARGS` with `grants`, names from the test hosts file.
fn http(grants: &[&str], args: &[&str]) -> Ran {
    let mut i = inv(&rust("hosthttp"), args);
    i.capabilities = caps(grants);
    ran_on(net::backend(), &i)
}

#[test]
fn a_granted_host_is_reached() {
    in_net(|| {
        let r = http(&[&format!("net:http:{PUBLIC}")], &["GET", &url("/hello")]);
        r.expect_exited();
        assert_eq!(r.stdout, "rc=0 status=200 len=11\nhello world\n");
        assert_eq!(
            r.outcome.connections,
            [Connection {
                dest: PUBLIC.into(),
                port: server().port,
                proto: "tcp",
                allowed: true,
                name: Some(PUBLIC.into()),
                grant: Some(format!("net:http:{PUBLIC}")),
                reason: None,
                bytes_out: Some(0),
                bytes_in: Some(11),
            }]
        );
        // Method, body and headers reach the server.
        let r = http(&["net:http:*"], &["POST", &url("/echo"), "payload"]);
        assert_eq!(
            r.stdout,
            "rc=0 status=200 len=23\nPOST payload header=yes\n"
        );
        assert_eq!(r.outcome.connections[0].bytes_out, Some(7));
        assert_eq!(r.outcome.connections[0].bytes_in, Some(23));
        // Status codes are responses, not errors.
        let r = http(&[&format!("net:http:{PUBLIC}")], &["GET", &url("/nothing")]);
        assert!(r.stdout.starts_with("rc=0 status=404"), "{}", r.stdout);
    })
}

#[test]
fn a_granted_name_is_resolved_through_the_hosts_file() {
    in_net(|| {
        let r = http(&["net:http:api.test"], &["GET", &named_url("/hello")]);
        r.expect_exited();
        assert_eq!(r.stdout, "rc=0 status=200 len=11\nhello world\n");
        let c = &r.outcome.connections;
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!(c[0].dest, PUBLIC);
        assert_eq!(c[0].name.as_deref(), Some("api.test"));
        assert_eq!(c[0].grant.as_deref(), Some("net:http:api.test"));
        assert!(c[0].allowed && c[0].reason.is_none(), "{c:?}");
        // Under a wildcard grant, in any case.
        let r = http(
            &["net:http:*.test"],
            &["GET", &format!("http://API2.test:{}/hello", server().port)],
        );
        assert_eq!(r.stdout, "rc=0 status=200 len=11\nhello world\n");
        assert_eq!(r.outcome.connections[0].name.as_deref(), Some("api2.test"));
        // A name the hosts file does not know fails (it is not looked up
        // anywhere else), and says so.
        let r = http(
            &["net:http:unknown.test"],
            &[
                "GET",
                &format!("http://unknown.test:{}/hello", server().port),
            ],
        );
        assert_eq!(r.stdout, "rc=8 status=0 len=0\n");
        assert_eq!(r.outcome.status, Status::Exited, "{:?}", r.outcome);
        let c = &r.outcome.connections[0];
        assert_eq!(c.dest, "unknown.test");
        assert!(c.allowed, "{c:?}");
        assert!(
            c.reason
                .as_deref()
                .is_some_and(|r| r.contains("did not resolve")),
            "{c:?}"
        );
        assert_eq!((c.bytes_out, c.bytes_in), (None, None));
    })
}

#[test]
fn an_ungranted_host_is_refused_and_recorded() {
    in_net(|| {
        let r = http(&["net:http:example.com"], &["GET", &url("/hello")]);
        // DENIED (1), nothing sent.
        assert_eq!(r.stdout, "rc=1 status=0 len=0\n");
        assert_eq!(r.outcome.status, Status::Violation, "{:?}", r.outcome);
        assert_eq!(
            violations_of(&r.outcome, "capability"),
            [format!(
                "warden.http_request: net:http:{PUBLIC} not granted"
            )]
        );
        assert_eq!(
            r.outcome.connections,
            [Connection {
                dest: PUBLIC.into(),
                port: server().port,
                proto: "tcp",
                allowed: false,
                name: Some(PUBLIC.into()),
                grant: None,
                reason: Some(format!("net:http:{PUBLIC} not granted")),
                bytes_out: None,
                bytes_in: None,
            }]
        );
        // A name is not its address: api.test is not 11.22.33.44.
        let r = http(
            &[&format!("net:http:{PUBLIC}")],
            &["GET", &named_url("/hello")],
        );
        assert_eq!(r.stdout, "rc=1 status=0 len=0\n");
        // Only http and https.
        let r = http(&["net:http:*"], &["GET", "file:///etc/passwd"]);
        assert_eq!(r.stdout, "rc=3 status=0 len=0\n");
    })
}

/// The details of the `net` violations of `r`.
fn net_violations(r: &Ran) -> Vec<String> {
    violations_of(&r.outcome, "net")
}

#[test]
fn loopback_metadata_and_private_names_are_refused_at_connect_time_and_recorded() {
    in_net(|| {
        // Servers where no request may arrive: the namespace's loopback
        // (standing for the host's), the metadata address, a private one.
        let lo = net::http_server("127.0.0.1", 0, |_| "loopback".into());
        let lo6 = net::http_server("::1", lo.port(), |_| "loopback".into());
        let meta = net::http_server(METADATA, lo.port(), |_| "metadata".into());
        let private = net::http_server(PRIVATE, lo.port(), |_| "private".into());
        let port = lo.port();
        let cases: Vec<(String, String, &str)> = vec![
            // Granted, and refused all the same: never loopback.
            (
                "net:http:127.0.0.1".into(),
                format!("http://127.0.0.1:{port}/"),
                "loopback",
            ),
            (
                "net:http:[::1]".into(),
                format!("http://[::1]:{port}/"),
                "loopback",
            ),
            (
                "net:http:[::ffff:127.0.0.1]".into(),
                format!("http://[::ffff:127.0.0.1]:{port}/"),
                "loopback",
            ),
            (
                "net:http:localhost".into(),
                format!("http://localhost:{port}/"),
                "loopback",
            ),
            (
                "net:http:loop.test".into(),
                format!("http://loop.test:{port}/"),
                "loopback",
            ),
            (
                "net:http:*".into(),
                format!("http://127.0.0.1:{port}/"),
                "loopback",
            ),
            // Never the metadata service, by name or by address.
            (
                "net:http:meta.test".into(),
                format!("http://meta.test:{port}/"),
                "metadata",
            ),
            (
                format!("net:http:{METADATA}"),
                format!("http://{METADATA}:{port}/latest/meta-data/"),
                "metadata",
            ),
            // A private address not through a name, nor through `*`.
            (
                "net:http:intranet.test".into(),
                format!("http://intranet.test:{port}/"),
                "private",
            ),
            (
                "net:http:*".into(),
                format!("http://{PRIVATE}:{port}/"),
                "private",
            ),
        ];
        for (grant, url, word) in &cases {
            let r = http(&[grant], &["GET", url]);
            assert_eq!(r.stdout, "rc=1 status=0 len=0\n", "{grant} {url}");
            assert_eq!(r.outcome.status, Status::Violation, "{grant} {url}");
            let c = &r.outcome.connections;
            assert_eq!(c.len(), 1, "{grant} {url}: {c:?}");
            assert!(!c[0].allowed, "{grant} {url}: {c:?}");
            assert_eq!(c[0].port, port);
            assert_eq!(c[0].grant, None);
            assert_eq!((c[0].bytes_out, c[0].bytes_in), (None, None));
            let reason = c[0].reason.clone().unwrap_or_default();
            assert!(reason.contains(word), "{grant} {url}: {reason}");
            assert!(reason.contains("may not be connected to"), "{reason}");
            let v = net_violations(&r);
            assert_eq!(v.len(), 1, "{grant} {url}: {v:?}");
            assert!(
                v[0].starts_with("warden.http_request: tcp connection to ") && v[0].contains(word),
                "{v:?}"
            );
            assert!(violations_of(&r.outcome, "capability").is_empty());
        }
        // The name is the dest when no address was allowed; the address
        // when it was the URL's.
        let r = http(
            &["net:http:meta.test"],
            &["GET", &format!("http://meta.test:{port}/")],
        );
        assert_eq!(r.outcome.connections[0].dest, "meta.test");
        assert_eq!(
            net_violations(&r),
            [format!(
                "warden.http_request: tcp connection to meta.test:{port} refused: meta.test \
                 resolves only to {METADATA} (a cloud metadata address), which may not be \
                 connected to"
            )]
        );
        let r = http(
            &["net:http:127.0.0.1"],
            &["GET", &format!("http://127.0.0.1:{port}/")],
        );
        assert_eq!(r.outcome.connections[0].dest, "127.0.0.1");
        // The system's resolver too: `localhost` is loopback wherever it
        // comes from.
        let mut i = inv(
            &rust("hosthttp"),
            &["GET", &format!("http://localhost:{port}/")],
        );
        i.capabilities = caps(&["net:http:localhost"]);
        let r = ran_on(backend(), &i);
        assert_eq!(r.stdout, "rc=1 status=0 len=0\n", "{:?}", r.outcome);
        assert!(
            net_violations(&r)[0].contains("loopback"),
            "{:?}",
            r.outcome
        );
        for s in [&lo, &lo6, &meta] {
            assert_eq!(s.hits(), 0, "{} was reached", s.addr);
        }
        assert_eq!(private.hits(), 0, "a private address was reached by name");
        // A private address granted as an address is reached.
        let r = http(
            &[&format!("net:http:{PRIVATE}")],
            &["GET", &format!("http://{PRIVATE}:{port}/")],
        );
        assert_eq!(
            r.stdout, "rc=0 status=200 len=7\nprivate\n",
            "{:?}",
            r.outcome
        );
        assert_eq!(private.hits(), 1);
        // A name with a loopback and a public address goes to the public
        // one only, and the report says the other was not used.
        let public = net::http_server(PUBLIC, port, |_| "public".into());
        let r = http(
            &["net:http:mixed.test"],
            &["GET", &format!("http://mixed.test:{port}/")],
        );
        assert_eq!(
            r.stdout, "rc=0 status=200 len=6\npublic\n",
            "{:?}",
            r.outcome
        );
        assert_eq!(r.outcome.connections[0].dest, PUBLIC);
        assert!(
            r.outcome
                .warnings
                .iter()
                .any(|w| w.contains("mixed.test resolves to 127.0.0.1") && w.contains("not used")),
            "{:?}",
            r.outcome.warnings
        );
        assert_eq!(public.hits(), 1);
        assert_eq!(lo.hits(), 0);
    })
}

#[test]
fn a_name_is_resolved_once_per_run() {
    in_net(|| {
        // pin.test is PUBLIC until the first request arrives, which
        // rewrites the hosts file to point it at OTHER_PUBLIC (same port).
        let dir = TempDir::new("pin");
        let hosts = dir.path().join("hosts");
        std::fs::write(&hosts, format!("{PUBLIC} pin.test\n")).unwrap();
        let rewrite = hosts.clone();
        let first = net::http_server(PUBLIC, 0, move |_| {
            std::fs::write(&rewrite, format!("{OTHER_PUBLIC} pin.test\n")).unwrap();
            "first".into()
        });
        let other = net::http_server(OTHER_PUBLIC, first.port(), |_| "other".into());
        let backend = WasmBackend::with_config(warden_wasm::WasmConfig {
            http: HttpConfig {
                hosts_file: Some(hosts.clone()),
                ..HttpConfig::default()
            },
            ..warden_wasm::WasmConfig::default()
        })
        .unwrap();
        let url = format!("http://pin.test:{}/", first.port());
        let mut i = inv(&rust("hosthttp"), &["GET", &url, "", "1024", "3"]);
        i.capabilities = caps(&["net:http:pin.test"]);
        let r = ran_on(&backend, &i);
        r.expect_exited();
        assert_eq!(
            r.stdout,
            "rc=0 status=200 len=5\nfirst\n".repeat(3),
            "{:?}",
            r.outcome
        );
        assert_eq!((first.hits(), other.hits()), (3, 0));
        let dests: Vec<&str> = r
            .outcome
            .connections
            .iter()
            .map(|c| c.dest.as_str())
            .collect();
        assert_eq!(dests, [PUBLIC; 3]);
        // The next run resolves afresh.
        let mut i = inv(&rust("hosthttp"), &["GET", &url]);
        i.capabilities = caps(&["net:http:pin.test"]);
        let r = ran_on(&backend, &i);
        assert_eq!(
            r.stdout, "rc=0 status=200 len=5\nother\n",
            "{:?}",
            r.outcome
        );
        assert_eq!(r.outcome.connections[0].dest, OTHER_PUBLIC);
    })
}

#[test]
fn the_connections_listed_are_capped() {
    // 300 refused calls (no grant covers the host): 256 listed, the rest
    // counted in a warning.
    let mut i = inv(
        &rust("hosthttp"),
        &["GET", "http://ungranted.test/", "", "16", "300"],
    );
    i.capabilities = caps(&["net:http:granted.test"]);
    let r = ran_on(net::backend(), &i);
    assert_eq!(r.outcome.connections.len(), 256);
    assert!(r.outcome.connections.iter().all(|c| !c.allowed));
    assert!(
        r.outcome
            .warnings
            .iter()
            .any(|w| w.contains("44 more connection attempts")),
        "{:?}",
        r.outcome.warnings
    );
}

#[test]
fn without_a_net_http_grant_the_function_is_not_even_linked() {
    let r = http(
        &["net:connect:127.0.0.1:80", "log:write"],
        &["GET", "http://127.0.0.1/hello"],
    );
    assert_eq!(r.outcome.status, Status::Error, "{:?}", r.outcome);
    assert_eq!(r.outcome.exit_code, Some(126));
    let error = r.outcome.error.unwrap_or_default();
    assert!(error.contains("warden.http_request"), "{error}");
    assert!(error.contains("net:http:HOST"), "{error}");
}

#[test]
fn redirects_are_not_followed() {
    in_net(|| {
        let before = server().target_hits.load(Ordering::SeqCst);
        let r = http(
            &[&format!("net:http:{PUBLIC}")],
            &["GET", &url("/redirect")],
        );
        // The 302 itself comes back; api.test (not granted) is never asked.
        assert_eq!(r.stdout, "rc=0 status=302 len=5\nmoved\n");
        assert_eq!(server().target_hits.load(Ordering::SeqCst), before);
        assert_eq!(r.outcome.connections.len(), 1);
    })
}

#[test]
fn an_oversized_response_fails() {
    in_net(|| {
        let r = http(&[&format!("net:http:{PUBLIC}")], &["GET", &url("/big")]);
        // TOO_LARGE (4): the body is over the 1 MiB cap.
        assert!(r.stdout.starts_with("rc=4 "), "{}", r.stdout);
        assert_eq!(r.outcome.status, Status::Exited);
        let c = &r.outcome.connections[0];
        assert!(
            c.allowed && c.reason.as_deref().is_some_and(|r| r.contains("too large")),
            "{c:?}"
        );
        assert_eq!(c.bytes_in, None);
        // A response larger than the guest's buffer: what fits, and the size.
        let r = http(
            &[&format!("net:http:{PUBLIC}")],
            &["GET", &url("/hello"), "", "5"],
        );
        assert_eq!(r.stdout, "rc=9 status=200 len=11\nhello\n");
    })
}

#[test]
fn a_slow_server_hits_the_per_call_deadline() {
    in_net(|| {
        let backend = net::backend_with(HttpConfig {
            timeout: Duration::from_millis(300),
            ..HttpConfig::default()
        });
        let mut i = inv(&rust("hosthttp"), &["GET", &url("/slow")]);
        i.capabilities = caps(&[&format!("net:http:{PUBLIC}")]);
        // Compile first: only the call is timed.
        backend
            .prepare(&rust("hosthttp"), backend.engine_kind(&i))
            .unwrap();
        let t = Instant::now();
        let r = ran_on(&backend, &i);
        let took = t.elapsed();
        // TIMEOUT (7) for the call; the run goes on and exits normally.
        assert_eq!(r.stdout, "rc=7 status=0 len=0\n");
        assert_eq!(r.outcome.status, Status::Exited, "{:?}", r.outcome);
        assert!(took < Duration::from_secs(2), "{took:?}");
        let c = &r.outcome.connections[0];
        assert!(c.allowed, "{c:?}");
        assert_eq!(c.dest, PUBLIC);
        assert_eq!(c.reason.as_deref(), Some("deadline reached"));

        // The run's own wall-clock limit bounds a call too.
        let mut i = inv(&rust("hosthttp"), &["GET", &url("/slow")]);
        i.capabilities = caps(&[&format!("net:http:{PUBLIC}")]);
        i.limits.wall_time = Duration::from_millis(400);
        net::backend()
            .prepare(&rust("hosthttp"), net::backend().engine_kind(&i))
            .unwrap();
        let t = Instant::now();
        let r = http_inv(&i);
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        assert!(
            r.outcome.status == Status::Timeout || r.stdout.starts_with("rc=7"),
            "{:?} {}",
            r.outcome,
            r.stdout
        );
    })
}

fn http_inv(i: &Invocation) -> Ran {
    ran_on(net::backend(), i)
}

#[test]
fn requests_per_run_are_capped() {
    in_net(|| {
        let backend = net::backend_with(HttpConfig {
            max_requests_per_run: 3,
            ..HttpConfig::default()
        });
        let mut i = inv(&rust("hosthttp"), &["GET", &url("/hello"), "", "1024", "5"]);
        i.capabilities = caps(&[&format!("net:http:{PUBLIC}")]);
        let r = ran_on(&backend, &i);
        assert_eq!(r.outcome.status, Status::Exited, "{:?}", r.outcome);
        let rcs: Vec<String> = r
            .stdout
            .lines()
            .filter(|l| l.starts_with("rc="))
            .map(|l| l.split(' ').next().unwrap_or_default().to_string())
            .collect();
        // Three sent, then LIMIT (5).
        assert_eq!(
            rcs,
            ["rc=0", "rc=0", "rc=0", "rc=5", "rc=5"],
            "{}",
            r.stdout
        );
        // Only what was sent is a connection.
        assert_eq!(r.outcome.connections.len(), 3);
    })
}
