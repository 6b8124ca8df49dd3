//! `warden serve --tls-cert --tls-key`: the real service over HTTPS on a
//! loopback port, with a certificate made by `openssl` for 127.0.0.1 and a
//! client that trusts only that certificate. Also what a bad certificate,
//! key or client meets.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{serve_bin, warden_bin};
use serde_json::{json, Value};

fn openssl(args: &[&std::ffi::OsStr]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl (scripts/setup.sh installs it)");
    assert!(out.status.success(), "openssl {args:?}: {out:?}");
}

/// A certificate authority made for one test, and a server certificate
/// for IP 127.0.0.1 that it signed: (CA certificate, server certificate,
/// server key), in `dir` under `name`.
fn certificate(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let file = |suffix: &str| dir.join(format!("{name}{suffix}"));
    let (ca, ca_key) = (file("-ca.crt"), file("-ca.key"));
    let (cert, key, csr, ext) = (file(".crt"), file(".key"), file(".csr"), file(".ext"));
    let s = |s: &'static str| std::ffi::OsStr::new(s);
    let p = |p: &PathBuf| p.as_os_str().to_owned();
    let (ca_s, ca_key_s, cert_s, key_s, csr_s, ext_s) =
        (p(&ca), p(&ca_key), p(&cert), p(&key), p(&csr), p(&ext));
    let ec = [
        s("-newkey"),
        s("ec"),
        s("-pkeyopt"),
        s("ec_paramgen_curve:P-256"),
        s("-nodes"),
    ];
    openssl(
        &[
            &[s("req"), s("-x509")],
            &ec[..],
            &[s("-days"), s("2"), s("-subj"), s("/CN=warden-test-ca")],
            &[s("-keyout"), &ca_key_s, s("-out"), &ca_s],
        ]
        .concat(),
    );
    openssl(
        &[
            &[s("req"), s("-new")],
            &ec[..],
            &[s("-subj"), s("/CN=127.0.0.1")],
            &[s("-keyout"), &key_s, s("-out"), &csr_s],
        ]
        .concat(),
    );
    std::fs::write(
        &ext,
        "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\n",
    )
    .unwrap();
    openssl(&[
        s("x509"),
        s("-req"),
        s("-in"),
        &csr_s,
        s("-CA"),
        &ca_s,
        s("-CAkey"),
        &ca_key_s,
        s("-CAcreateserial"),
        s("-days"),
        s("2"),
        s("-extfile"),
        &ext_s,
        s("-out"),
        &cert_s,
    ]);
    (ca, cert, key)
}

struct Tls {
    child: Child,
    base: String,
    key: String,
    _state: tempfile::TempDir,
}

impl Drop for Tls {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(state: tempfile::TempDir, cert: &Path, key: &Path) -> Tls {
    let mut child = Command::new(serve_bin())
        .arg("--state")
        .arg(state.path())
        .args(["--listen", "127.0.0.1:0", "--warden"])
        .arg(warden_bin())
        .arg("--tls-cert")
        .arg(cert)
        .arg("--tls-key")
        .arg(key)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start warden-serve");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let (mut api_key, mut base) = (None, None);
    let mut seen = Vec::new();
    while api_key.is_none() || base.is_none() {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("warden-serve ended: {seen:?}"))
            .unwrap();
        if let Some(k) = line.strip_prefix("warden: development API key: ") {
            api_key = Some(k.trim().to_string());
        }
        if let Some(rest) = line.strip_prefix("warden: listening on ") {
            base = rest.split_whitespace().next().map(str::to_string);
        }
        seen.push(line);
    }
    // Keep draining its stderr so that it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Tls {
        child,
        base: base.unwrap(),
        key: api_key.unwrap(),
        _state: state,
    }
}

/// An HTTPS client that trusts only the authority `ca`.
fn client(ca: &Path) -> ureq::Agent {
    let pem = std::fs::read(ca).unwrap();
    let root = ureq::tls::Certificate::from_pem(&pem).unwrap();
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::Specific(Arc::new(vec![root])))
        .build();
    ureq::Agent::config_builder()
        .tls_config(tls)
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

#[test]
fn execute_over_https_with_a_certificate_the_client_checks() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificate(dir.path(), "server");
    let s = serve(tempfile::tempdir().unwrap(), &cert, &key);
    assert!(s.base.starts_with("https://127.0.0.1:"), "{}", s.base);
    let agent = client(&ca);

    let mut health = agent.get(format!("{}/healthz", s.base)).call().unwrap();
    assert_eq!(health.status(), 200);
    let _ = health.body_mut().read_to_string();

    let body = json!({
        "language": "sh",
        "files": [{"name": "main.sh", "content": "echo over tls; cat"}],
        "stdin": "secret input\n",
    });
    let mut answer = agent
        .post(format!("{}/v1/execute", s.base))
        .header("Authorization", &format!("Bearer {}", s.key))
        .header("Content-Type", "application/json")
        .send(body.to_string().as_bytes())
        .unwrap();
    let status = answer.status();
    let text = answer.body_mut().read_to_string().unwrap();
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["stdout"], "over tls\nsecret input\n", "{v}");
    assert_eq!(v["report"]["status"], "exited", "{v}");

    // Without the key over TLS: the same 401 as over plain HTTP.
    let mut anonymous = agent
        .post(format!("{}/v1/execute", s.base))
        .header("Content-Type", "application/json")
        .send(body.to_string().as_bytes())
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let _ = anonymous.body_mut().read_to_string();

    // A client that trusts another certificate refuses the service's.
    let (other, _, _) = certificate(dir.path(), "other");
    let refused = client(&other).get(format!("{}/healthz", s.base)).call();
    assert!(refused.is_err(), "an untrusted certificate was accepted");
}

#[test]
fn plain_http_and_stalled_handshakes_hold_up_no_one() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificate(dir.path(), "server");
    let s = serve(tempfile::tempdir().unwrap(), &cert, &key);
    let addr = s.base.trim_start_matches("https://").to_string();

    // Connections that never finish a handshake stay open, waiting…
    let stalled: Vec<TcpStream> = (0..8).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    // …and plain HTTP sent to the TLS port is answered by a closed
    // connection (a TLS alert at most), never by an HTTP answer.
    let mut plain = TcpStream::connect(&addr).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let _ = plain.read_to_end(&mut got);
    assert!(
        !String::from_utf8_lossy(&got).contains("HTTP/1.1"),
        "plain HTTP was answered over the TLS port: {got:?}"
    );

    // Meanwhile a real client is served at once.
    let started = Instant::now();
    let mut health = client(&ca)
        .get(format!("{}/healthz", s.base))
        .call()
        .unwrap();
    assert_eq!(health.status(), 200);
    let _ = health.body_mut().read_to_string();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a healthy client waited {:?} behind stalled handshakes",
        started.elapsed()
    );
    drop(stalled);

    let mut metrics = client(&ca)
        .get(format!("{}/metrics", s.base))
        .call()
        .unwrap();
    let text = metrics.body_mut().read_to_string().unwrap();
    let failures = text
        .lines()
        .find(|l| l.starts_with("warden_tls_handshake_failures_total"))
        .unwrap_or_else(|| panic!("no handshake failure counted:\n{text}"));
    let n: f64 = failures.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n >= 1.0, "{failures}");
}

/// Starts warden-serve with these arguments and expects it to stop at
/// once with `code` and one stderr line containing each of `words`.
fn refused_to_start(args: &[&std::ffi::OsStr], code: i32, words: &[&str]) {
    let state = tempfile::tempdir().unwrap();
    let out = Command::new(serve_bin())
        .arg("--state")
        .arg(state.path())
        .args(["--listen", "127.0.0.1:0", "--warden"])
        .arg(warden_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    for word in words {
        assert!(stderr.contains(word), "{word:?} not in {stderr}");
    }
    assert!(!stderr.contains("listening"), "{stderr}");
}

#[test]
fn a_bad_certificate_or_key_stops_the_service_before_it_listens() {
    let dir = tempfile::tempdir().unwrap();
    let (_, cert, key) = certificate(dir.path(), "server");
    let (_, _, other_key) = certificate(dir.path(), "other");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a pem file\n").unwrap();
    let missing = dir.path().join("missing.pem");
    let os = |p: &Path| p.as_os_str().to_owned();
    let flag = |s: &str| std::ffi::OsString::from(s);

    let only_cert = [flag("--tls-cert"), os(&cert)];
    refused_to_start(
        &only_cert.iter().map(|s| s.as_os_str()).collect::<Vec<_>>(),
        2,
        &["--tls-cert needs --tls-key"],
    );
    let cases: [(PathBuf, PathBuf, &[&str]); 4] = [
        (missing.clone(), key.clone(), &["--tls-cert", "missing.pem"]),
        (
            cert.clone(),
            garbage.clone(),
            &["--tls-key", "no PRIVATE KEY"],
        ),
        (
            garbage.clone(),
            key.clone(),
            &["--tls-cert", "no CERTIFICATE"],
        ),
        (cert.clone(), other_key, &["cannot serve --tls-cert"]),
    ];
    for (c, k, words) in cases {
        let args = [flag("--tls-cert"), os(&c), flag("--tls-key"), os(&k)];
        refused_to_start(
            &args.iter().map(|s| s.as_os_str()).collect::<Vec<_>>(),
            125,
            words,
        );
    }
}
