//! `net:connect` egress from the jail, end to end: the real `warden`
//! binary and real TCP servers. Each test runs in a private network
//! namespace of its own (a test thread unshares one and gives its loopback
//! the addresses below), so that "public", private and metadata addresses
//! all exist and are reachable from the supervisor — and Warden must still
//! refuse the ones no grant opens. Needs root (CI runs as root).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use common::{warden_bin, TempDir};
use serde_json::Value;

const PUBLIC: &str = "11.22.33.44";
const OTHER_PUBLIC: &str = "11.22.33.45";
const PUBLIC6: &str = "2a00:1::5";
const PRIVATE: &str = "10.9.9.9";
const METADATA: &str = "169.254.169.254";
const METADATA6: &str = "fd00:ec2::254";

/// Runs `f` on a thread in a fresh network namespace whose loopback holds
/// the test addresses (and 127.0.0.1, standing for the host's loopback).
fn in_private_net<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    std::thread::spawn(move || {
        // SAFETY: unshare takes flags only; it changes this thread's
        // network namespace, which nothing else in the test process uses.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "unshare(CLONE_NEWNET): {} (the egress tests need root)",
            std::io::Error::last_os_error()
        );
        let ip = |args: &[&str]| {
            // Children are made from this thread, so in its namespace.
            let out = Command::new("ip").args(args).output().expect("run ip");
            assert!(out.status.success(), "ip {args:?}: {out:?}");
        };
        ip(&["link", "set", "lo", "up"]);
        for a in [PUBLIC, OTHER_PUBLIC, PRIVATE, METADATA] {
            ip(&["addr", "add", &format!("{a}/32"), "dev", "lo"]);
        }
        for a in [PUBLIC6, METADATA6] {
            // nodad: usable at once (no tentative phase).
            ip(&[
                "-6",
                "addr",
                "add",
                &format!("{a}/128"),
                "dev",
                "lo",
                "nodad",
            ]);
        }
        f()
    })
    .join()
    .expect("test thread")
}

/// A TCP server on `addr` (port 0: any) that greets each client with
/// `hello from ADDR`, then reads until EOF and answers the byte count.
/// Counts the connections it accepted.
struct Server {
    addr: SocketAddr,
    accepted: Arc<AtomicU64>,
}

fn server(addr: &str) -> Server {
    let bind: SocketAddr = if addr.contains(':') {
        format!("[{addr}]:0")
    } else {
        format!("{addr}:0")
    }
    .parse()
    .unwrap();
    let listener = TcpListener::bind(bind).unwrap_or_else(|e| panic!("bind {bind}: {e}"));
    let local = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicU64::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            count.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                let _ = writeln!(stream, "hello from {}", local.ip());
                let mut n = 0u64;
                let mut buf = [0u8; 65536];
                while let Ok(k) = stream.read(&mut buf) {
                    if k == 0 {
                        break;
                    }
                    n += k as u64;
                }
                let _ = writeln!(stream, "got {n}");
            });
        }
    });
    Server {
        addr: local,
        accepted,
    }
}

/// The client the jailed program runs: for each `HOST PORT [udp]` line of
/// its arguments, one connection attempt, printed as `HOST PORT ok
/// GREETING` or `HOST PORT err ERRNO-NAME`.
const CLIENT: &str = r#"
import errno, socket, sys
for target in sys.argv[1:]:
    host, port, *proto = target.split()
    try:
        if proto == ["udp"]:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.connect((host, int(port)))
            print(target, "ok udp")
            continue
        s = socket.create_connection((host, int(port)), timeout=5)
        line = s.makefile().readline().strip()
        s.shutdown(socket.SHUT_WR)
        print(target, "ok", line)
        s.close()
    except socket.gaierror as e:
        print(target, "err", "resolve")
    except OSError as e:
        print(target, "err", errno.errorcode.get(e.errno, str(e.errno)))
"#;

struct Outcome {
    stdout: String,
    stderr: String,
    report: Value,
}

/// `warden run --report FILE --allow GRANT… -- python3 -c SCRIPT ARGS…`
/// with granted names resolved from `hosts`.
fn run(dir: &TempDir, hosts: &str, grants: &[String], script: &str, args: &[String]) -> Outcome {
    run_on("jail", dir, hosts, grants, script, args)
}

/// [`run`] on backend `backend`.
fn run_on(
    backend: &str,
    dir: &TempDir,
    hosts: &str,
    grants: &[String],
    script: &str,
    args: &[String],
) -> Outcome {
    let hosts_file = dir.root.join("egress-hosts");
    std::fs::write(&hosts_file, hosts).unwrap();
    let report = dir.root.join("report.json");
    let mut command = Command::new(warden_bin());
    command
        .env("WARDEN_EGRESS_HOSTS", &hosts_file)
        .arg("--state")
        .arg(dir.root.join("state"))
        .args([
            "run",
            "--backend",
            backend,
            "--wall-time",
            "60s",
            "--report",
        ])
        .arg(&report);
    for g in grants {
        command.args(["--allow", g]);
    }
    let out = command
        .args(["--", "/usr/bin/python3", "-c", script])
        .args(args)
        .current_dir(dir.work())
        .output()
        .expect("run warden");
    let report: Value = serde_json::from_slice(&std::fs::read(&report).unwrap_or_default())
        .unwrap_or_else(|_| panic!("no report: {out:?}"));
    Outcome {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        report,
    }
}

fn line_for<'a>(stdout: &'a str, target: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| l.starts_with(&format!("{target} ")))
        .unwrap_or_else(|| panic!("no line for {target} in {stdout}"))
}

fn connections(report: &Value) -> Vec<&Value> {
    report["connections"]
        .as_array()
        .expect("connections array")
        .iter()
        .collect()
}

#[test]
fn granted_destinations_work_and_everything_else_is_refused_and_reported() {
    in_private_net(|| {
        let public = server(PUBLIC);
        let port = public.addr.port();
        let other = server(OTHER_PUBLIC);
        let public6 = server(PUBLIC6);
        let private = server(PRIVATE);
        let metadata = server(METADATA);
        let metadata6 = server(METADATA6);
        let host_loopback = server("127.0.0.1");
        let second_port = server(PUBLIC);
        let dir = TempDir::new("egress");
        let hosts = format!(
            "{PUBLIC} api.example\n{PUBLIC6} api6.example\n{PRIVATE} intranet.example\n\
             127.0.0.1 sneaky.example\n{METADATA} meta.example\n"
        );
        let grants = vec![
            format!("net:connect:api.example:{port}"),
            format!("net:connect:api6.example:{}", public6.addr.port()),
            format!("net:connect:{PRIVATE}:{}", private.addr.port()),
            format!("net:connect:intranet.example:{}", private.addr.port()),
            format!("net:connect:sneaky.example:{}", host_loopback.addr.port()),
            format!("net:connect:{METADATA}:{}", metadata.addr.port()),
            format!("net:connect:meta.example:{}", metadata.addr.port()),
        ];
        let targets = vec![
            format!("api.example {port}"),
            format!("{PUBLIC} {port}"),
            format!("api6.example {}", public6.addr.port()),
            format!("{PRIVATE} {}", private.addr.port()),
            // Another port of a granted host, another host, a raw IP.
            format!("api.example {}", second_port.addr.port()),
            format!("{OTHER_PUBLIC} {}", other.addr.port()),
            // A private address through a name, the metadata services
            // named or not, the host's loopback through a name or not.
            format!("intranet.example {}", private.addr.port()),
            format!("{METADATA} {}", metadata.addr.port()),
            format!("meta.example {}", metadata.addr.port()),
            format!("{METADATA6} {}", metadata6.addr.port()),
            format!("sneaky.example {}", host_loopback.addr.port()),
            format!("127.0.0.1 {}", host_loopback.addr.port()),
            // UDP is not net:connect's.
            format!("{PUBLIC} {port} udp"),
        ];
        let o = run(&dir, &hosts, &grants, CLIENT, &targets);
        let out = &o.stdout;
        assert_eq!(
            line_for(out, &format!("api.example {port}")),
            format!("api.example {port} ok hello from {PUBLIC}"),
            "{out}\n{}",
            o.stderr
        );
        assert!(line_for(out, &format!("{PUBLIC} {port}"))
            .ends_with(&format!("ok hello from {PUBLIC}")));
        assert!(
            line_for(out, "api6.example").ends_with(&format!("ok hello from {PUBLIC6}")),
            "{out}"
        );
        assert!(
            line_for(out, PRIVATE).ends_with(&format!("ok hello from {PRIVATE}")),
            "{out}"
        );
        for refused in [
            format!("api.example {}", second_port.addr.port()),
            format!("{OTHER_PUBLIC} {}", other.addr.port()),
            format!("{METADATA} {}", metadata.addr.port()),
            format!("{METADATA6} {}", metadata6.addr.port()),
            format!("{PUBLIC} {port} udp"),
        ] {
            assert_eq!(
                line_for(out, &refused),
                format!("{refused} err EPERM"),
                "{out}"
            );
        }
        // Names pinned to forbidden addresses are not in the jail's hosts.
        for unresolved in ["intranet.example", "meta.example", "sneaky.example"] {
            assert!(
                line_for(out, unresolved).ends_with("err resolve"),
                "{unresolved}: {out}"
            );
        }
        // 127.0.0.1 is the jail's own loopback: the host's is never reached.
        assert!(
            line_for(out, "127.0.0.1").ends_with("err ECONNREFUSED"),
            "{out}"
        );
        for (s, what) in [
            (&other, "another public host"),
            (&private, "the private server"),
            (&metadata, "metadata"),
            (&metadata6, "IPv6 metadata"),
            (&host_loopback, "host loopback"),
            (&second_port, "another port"),
        ] {
            let n = s.accepted.load(Ordering::SeqCst);
            let want = u64::from(what == "the private server");
            assert_eq!(n, want, "{what} accepted {n} connections");
        }
        assert_eq!(public.accepted.load(Ordering::SeqCst), 2);

        let r = &o.report;
        assert_eq!(r["status"], "violation", "{r}");
        let conns = connections(r);
        let allowed: Vec<_> = conns.iter().filter(|c| c["allowed"] == true).collect();
        let refused: Vec<_> = conns.iter().filter(|c| c["allowed"] == false).collect();
        assert_eq!(allowed.len(), 4, "{conns:#?}");
        assert_eq!(refused.len(), 5, "{conns:#?}");
        assert_eq!(allowed[0]["dest"], PUBLIC);
        assert_eq!(allowed[0]["port"], port);
        assert_eq!(allowed[0]["proto"], "tcp");
        assert_eq!(allowed[0]["name"], "api.example");
        assert_eq!(
            allowed[0]["grant"],
            format!("net:connect:api.example:{port}")
        );
        assert!(refused.iter().any(|c| c["dest"] == METADATA6));
        assert!(refused.iter().any(|c| c["proto"] == "udp"));
        for c in &conns {
            assert!(
                c.get("bytes_out").is_some() && c.get("bytes_in").is_some(),
                "{c}"
            );
        }
        let net_violations: Vec<&str> = r["violations"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v["kind"] == "net")
            .map(|v| v["detail"].as_str().unwrap())
            .collect();
        let (dns, connects): (Vec<&str>, Vec<&str>) = net_violations
            .iter()
            .partition(|d| d.starts_with("dns query for "));
        assert_eq!(connects.len(), 5, "{net_violations:?}");
        // The names pinned to forbidden addresses were asked of the stub,
        // which withheld them.
        for name in ["intranet.example", "meta.example", "sneaky.example"] {
            assert!(dns.iter().any(|d| d.contains(name)), "{name}: {dns:?}");
        }
        assert!(
            net_violations
                .iter()
                .any(|d| d.contains(METADATA) && d.contains("metadata")),
            "{net_violations:?}"
        );
        // Each name pinned to a forbidden address is a warning.
        let warnings = r["warnings"].to_string();
        for w in ["intranet.example", "meta.example", "sneaky.example"] {
            assert!(warnings.contains(w), "{w}: {warnings}");
        }
    });
}

#[test]
fn nonblocking_connects_and_bulk_transfers_behave_as_without_warden() {
    in_private_net(|| {
        let public = server(PUBLIC);
        let port = public.addr.port();
        let dir = TempDir::new("egress-async");
        // asyncio connects a non-blocking socket; then 8 MiB one way and
        // the server's count back, after a half-close.
        let script = r#"
import asyncio, sys, socket
async def main(port):
    r, w = await asyncio.open_connection("api.example", port)
    print((await r.readline()).decode().strip())
    sock = w.get_extra_info("socket")
    print("peer", sock.getpeername()[0], "family", sock.family.name)
    w.write(b"x" * (8 << 20)); await w.drain(); w.write_eof()
    print((await r.readline()).decode().strip())
    w.close()
asyncio.run(main(int(sys.argv[1])))
"#;
        let o = run(
            &dir,
            &format!("{PUBLIC} api.example\n"),
            &[format!("net:connect:api.example:{port}")],
            script,
            &[port.to_string()],
        );
        assert_eq!(
            o.stdout,
            format!("hello from {PUBLIC}\npeer {PUBLIC} family AF_INET\ngot 8388608\n"),
            "{}\n{}",
            o.stderr,
            o.report
        );
        assert_eq!(o.report["status"], "exited", "{}", o.report);
        let conns = connections(&o.report);
        assert_eq!(conns.len(), 1);
        // Counted from the socket's own counters: every byte sent, and the
        // greeting and the count received.
        let greeting = format!("hello from {PUBLIC}\n").len() + "got 8388608\n".len();
        assert_eq!(conns[0]["bytes_out"], 8 << 20, "{}", conns[0]);
        assert_eq!(conns[0]["bytes_in"], greeting, "{}", conns[0]);
        // The ledger entry carries the connection too.
        let log = Command::new(warden_bin())
            .arg("--state")
            .arg(dir.root.join("state"))
            .args(["audit", "log"])
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&log.stdout);
        let entry = log
            .lines()
            .find(|l| l.contains("\"connections\""))
            .unwrap_or_else(|| panic!("no entry with connections: {log}"));
        assert!(
            entry.contains(&format!("net:connect:api.example:{port}")) && entry.contains(PUBLIC),
            "{entry}"
        );
    });
}

#[test]
fn rewriting_the_address_after_the_check_reaches_nothing_else() {
    in_private_net(|| {
        let granted = server(PUBLIC);
        let forbidden = server(OTHER_PUBLIC);
        let dir = TempDir::new("egress-race");
        // One thread flips the sockaddr between the granted and a forbidden
        // address while the other calls connect(2) on it, many times.
        let script = r#"
import ctypes, socket, struct, sys, threading
libc = ctypes.CDLL(None, use_errno=True)
port_ok, port_bad = int(sys.argv[1]), int(sys.argv[2])
good = struct.pack("!HH4s8x", 0, port_ok, socket.inet_aton(sys.argv[3]))
bad = struct.pack("!HH4s8x", 0, port_bad, socket.inet_aton(sys.argv[4]))
fam = struct.pack("=H", socket.AF_INET)
good, bad = fam + good[2:], fam + bad[2:]
buf = ctypes.create_string_buffer(good, 16)
stop = False
def flip():
    while not stop:
        ctypes.memmove(buf, bad, 16); ctypes.memmove(buf, good, 16)
t = threading.Thread(target=flip); t.start()
ok = refused = 0
for _ in range(300):
    s = socket.socket()
    if libc.connect(s.fileno(), buf, 16) == 0:
        peer = s.getpeername()
        assert peer[0] == sys.argv[3], peer
        ok += 1
    else:
        refused += 1
    s.close()
stop = True; t.join()
print("ok", ok, "refused", refused)
"#;
        let args = [
            granted.addr.port().to_string(),
            forbidden.addr.port().to_string(),
            PUBLIC.to_string(),
            OTHER_PUBLIC.to_string(),
        ];
        let o = run(
            &dir,
            "",
            &[format!("net:connect:{PUBLIC}:{}", granted.addr.port())],
            script,
            &args,
        );
        assert!(o.stdout.starts_with("ok "), "{}\n{}", o.stdout, o.stderr);
        assert_eq!(
            forbidden.accepted.load(Ordering::SeqCst),
            0,
            "a rewritten address was connected to: {}",
            o.stdout
        );
        let n = |word: &str| -> u64 {
            let words: Vec<&str> = o.stdout.split_whitespace().collect();
            let i = words.iter().position(|w| *w == word).unwrap();
            words[i + 1].parse().unwrap()
        };
        assert_eq!(n("ok") + n("refused"), 300);
        assert_eq!(granted.accepted.load(Ordering::SeqCst), n("ok"));
    });
}

#[test]
fn without_a_grant_the_jail_reaches_nothing_and_connect_is_not_intercepted() {
    in_private_net(|| {
        let public = server(PUBLIC);
        let dir = TempDir::new("egress-none");
        let o = run(
            &dir,
            "",
            &[],
            CLIENT,
            &[format!("{PUBLIC} {}", public.addr.port())],
        );
        assert!(
            line_for(&o.stdout, PUBLIC).ends_with("err ENETUNREACH"),
            "{}",
            o.stdout
        );
        assert_eq!(public.accepted.load(Ordering::SeqCst), 0);
        assert_eq!(o.report["status"], "exited", "{}", o.report);
        assert_eq!(o.report["connections"], serde_json::json!([]));
    });
}

#[test]
fn a_bad_egress_hosts_file_is_one_line_naming_it() {
    let dir = TempDir::new("egress-hosts");
    let hosts = dir.root.join("hosts");
    std::fs::write(&hosts, "11.22.33.44 ok.example\nnot-an-address x\n").unwrap();
    let out = Command::new(warden_bin())
        .env("WARDEN_EGRESS_HOSTS", &hosts)
        .arg("--state")
        .arg(dir.root.join("state"))
        .args([
            "run",
            "--no-audit",
            "--allow",
            "net:connect:ok.example:80",
            "--",
            "true",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("{}:2", hosts.display())) && stderr.contains("not an IP address"),
        "{stderr}"
    );
}

#[test]
fn the_programs_close_closes_the_connection_while_it_runs_on() {
    in_private_net(|| {
        // A server that reads to EOF and notes how long after the accept
        // that came: the program closes at once and then sleeps 3 s.
        let listener = TcpListener::bind(format!("{PUBLIC}:0")).unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let accepted = std::time::Instant::now();
            let mut all = Vec::new();
            let _ = stream.read_to_end(&mut all);
            let _ = tx.send((accepted.elapsed(), all));
        });
        let dir = TempDir::new("egress-close");
        let script = r#"
import socket, sys, time
s = socket.create_connection(("api.example", int(sys.argv[1])))
s.sendall(b"bye"); s.close()
time.sleep(3)
"#;
        let o = run(
            &dir,
            &format!("{PUBLIC} api.example\n"),
            &[format!("net:connect:api.example:{port}")],
            script,
            &[port.to_string()],
        );
        let (after, bytes) = rx.recv().unwrap();
        assert_eq!(bytes, b"bye");
        assert!(
            after < std::time::Duration::from_millis(1500),
            "EOF came {after:?} after the accept: the connection outlived the program's close"
        );
        assert_eq!(o.report["status"], "exited", "{}", o.report);
        assert_eq!(connections(&o.report)[0]["bytes_out"], 3, "{}", o.stderr);
    });
}

#[test]
fn net_limits_cut_connections_past_their_bytes_idleness_and_count() {
    in_private_net(|| {
        let public = server(PUBLIC);
        let port = public.addr.port();
        let hosts = format!("{PUBLIC} api.example\n");
        let grant = format!("net:connect:api.example:{port}");
        // Bytes: 4 MiB written under a 1 MiB limit is cut (EPIPE or a
        // reset) well before it is all sent.
        let dir = TempDir::new("egress-bytes");
        let script = r#"
import socket, sys, time
s = socket.create_connection(("api.example", int(sys.argv[1])))
s.makefile().readline()
sent = 0
try:
    for _ in range(4 * 16):
        s.sendall(b"x" * 65536); sent += 65536
        time.sleep(0.005)
    print("all sent", sent)
except OSError as e:
    print("cut after", sent)
"#;
        let o = run(
            &dir,
            &hosts,
            &[grant.clone(), "net:limit:bytes:1MiB".into()],
            script,
            &[port.to_string()],
        );
        assert!(
            o.stdout.starts_with("cut after"),
            "{}\n{}",
            o.stdout,
            o.stderr
        );
        let sent: u64 = o.stdout.split_whitespace().nth(2).unwrap().parse().unwrap();
        assert!(sent < 3 << 20, "{sent} bytes sent under a 1 MiB limit");
        assert_eq!(
            o.report["limits"]["net_bytes"],
            1 << 20,
            "{}",
            o.report["limits"]
        );
        let reached = o.report["limits_reached"].to_string();
        assert!(reached.contains("net_bytes"), "{reached}");

        // Connections: the third of two allowed is refused.
        let dir = TempDir::new("egress-count");
        let targets = vec![format!("api.example {port}"); 3];
        let o = run(
            &dir,
            &hosts,
            &[grant.clone(), "net:limit:connections:2".into()],
            CLIENT,
            &targets,
        );
        let lines: Vec<&str> = o.stdout.lines().collect();
        assert_eq!(lines.len(), 3, "{}", o.stdout);
        assert!(
            lines[0].contains(" ok ") && lines[1].contains(" ok "),
            "{}",
            o.stdout
        );
        assert!(lines[2].ends_with("err EPERM"), "{}", o.stdout);
        assert!(o.report["violations"]
            .to_string()
            .contains("limit of 2 connections"));
        assert!(o.report["limits_reached"]
            .to_string()
            .contains("net_connections"));

        // Idleness: a connection silent for longer than 300 ms is cut.
        let dir = TempDir::new("egress-idle");
        let script = r#"
import socket, sys, time
s = socket.create_connection(("api.example", int(sys.argv[1])))
s.makefile().readline()
time.sleep(1.5)
try:
    s.sendall(b"late"); print("data", s.recv(100))
except OSError as e:
    print("cut", e.errno)
"#;
        let o = run(
            &dir,
            &hosts,
            &[grant, "net:limit:idle:300ms".into()],
            script,
            &[port.to_string()],
        );
        assert!(
            o.stdout.starts_with("cut") || o.stdout.starts_with("data b''"),
            "{}\n{}",
            o.stdout,
            o.stderr
        );
        assert!(
            o.report["limits_reached"].to_string().contains("net_idle"),
            "{}",
            o.report
        );
    });
}

/// A UDP server on `addr` (port 0: any) answering each datagram with
/// `echo ` and the datagram; counts what it got.
fn udp_echo(addr: &str) -> (u16, Arc<AtomicU64>) {
    let socket = std::net::UdpSocket::bind((addr, 0)).unwrap();
    let port = socket.local_addr().unwrap().port();
    let got = Arc::new(AtomicU64::new(0));
    let count = got.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            count.fetch_add(1, Ordering::SeqCst);
            let mut reply = b"echo ".to_vec();
            reply.extend_from_slice(&buf[..n]);
            let _ = socket.send_to(&reply, from);
        }
    });
    (port, got)
}

/// `net:connect:udp:HOST:PORT`: the program's own socket stays in the
/// jail (connected to a relay there), so datagrams reach the granted
/// destination and nothing else — not by `sendto` another address on the
/// connected socket, not from an unconnected one, not to another port.
#[test]
fn udp_grants_are_relayed_and_sendto_elsewhere_reaches_nothing() {
    in_private_net(|| {
        let (port, granted) = udp_echo(PUBLIC);
        let (other_port, other) = udp_echo(OTHER_PUBLIC);
        let dir = TempDir::new("egress-udp");
        let script = format!(
            r#"
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
s.connect(("ntp.example", {port}))
s.send(b"ping")
print("reply", s.recv(100).decode())
for target in [("{OTHER_PUBLIC}", {other_port}), ("{PUBLIC}", {port} + 1)]:
    try:
        s.sendto(b"leak", target); print("sendto-sent", target[1])
    except OSError as e:
        print("sendto-err", e.errno)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try:
    u.sendto(b"leak", ("{OTHER_PUBLIC}", {other_port})); print("unconnected-sent")
except OSError as e:
    print("unconnected-err", e.errno)
try:
    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).connect(("{OTHER_PUBLIC}", {other_port})); print("other-connected")
except OSError as e:
    print("other-refused", e.errno)
s.send(b"again")
print("reply", s.recv(100).decode())
"#
        );
        let out = run(
            &dir,
            &format!("{PUBLIC} ntp.example\n"),
            &[format!("net:connect:udp:ntp.example:{port}")],
            &script,
            &[],
        );
        let ctx = format!("{}\n{}\n{}", out.stdout, out.stderr, out.report);
        assert!(out.stdout.contains("reply echo ping"), "{ctx}");
        assert!(out.stdout.contains("reply echo again"), "{ctx}");
        assert!(out.stdout.contains("other-refused"), "{ctx}");
        assert_eq!(granted.load(Ordering::SeqCst), 2, "{ctx}");
        assert_eq!(other.load(Ordering::SeqCst), 0, "a datagram leaked\n{ctx}");
        let conns = connections(&out.report);
        let relayed = conns
            .iter()
            .find(|c| c["proto"] == "udp" && c["allowed"] == true)
            .unwrap_or_else(|| panic!("{ctx}"));
        assert_eq!(relayed["port"], port, "{ctx}");
        assert_eq!(relayed["bytes_out"], 9, "ping + again\n{ctx}");
        assert_eq!(relayed["bytes_in"], 19, "{ctx}");
        assert!(
            conns
                .iter()
                .any(|c| c["proto"] == "udp" && c["allowed"] == false),
            "{ctx}"
        );
    });
}

#[test]
fn a_handed_over_socket_is_never_reconnected_and_swapping_descriptors_reaches_nothing() {
    in_private_net(|| {
        let public = server(PUBLIC);
        let port = public.addr.port();
        let host_loopback = server("127.0.0.1");
        let dir = TempDir::new("egress-swap");
        // The program holds a socket of the supervisor's network namespace
        // (the allowed connection). It tries to disconnect it (AF_UNSPEC)
        // and connect it to the host's loopback, directly and by racing a
        // thread that dup2()s it over the descriptor a jail socket's
        // connect to 127.0.0.1 is made on. Meanwhile a server of its own on
        // the jail's loopback must stay reachable.
        let script = r#"
import ctypes, errno, socket, struct, sys, threading
libc = ctypes.CDLL(None, use_errno=True)
port, lport = int(sys.argv[1]), int(sys.argv[2])
handed = socket.create_connection(("api.example", port))
print(handed.makefile().readline().strip())
unspec = struct.pack("=H14x", socket.AF_UNSPEC)
r = libc.connect(handed.fileno(), unspec, len(unspec)); print("unspec", r, errno.errorcode.get(ctypes.get_errno()))
try:
    handed.connect(("127.0.0.1", lport)); print("reconnected!")
except OSError as e:
    print("reconnect", errno.errorcode.get(e.errno))
own = socket.socket(); own.bind(("127.0.0.1", 0)); own.listen(64)
addr = struct.pack("!HH4s8x", 0, lport, socket.inet_aton("127.0.0.1"))
addr = struct.pack("=H", socket.AF_INET) + addr[2:]
buf = ctypes.create_string_buffer(addr, 16)
target = socket.socket()
stop = False
def swap():
    while not stop:
        libc.dup2(handed.fileno(), target.fileno())
        fresh = socket.socket(); libc.dup2(fresh.fileno(), target.fileno()); fresh.close()
t = threading.Thread(target=swap); t.start()
for _ in range(300):
    libc.connect(target.fileno(), buf, 16)
stop = True; t.join()
inner = socket.create_connection(own.getsockname()); print("own loopback ok")
"#;
        let o = run(
            &dir,
            &format!("{PUBLIC} api.example\n"),
            &[format!("net:connect:api.example:{port}")],
            script,
            &[port.to_string(), host_loopback.addr.port().to_string()],
        );
        assert_eq!(
            o.stdout,
            format!("hello from {PUBLIC}\nunspec -1 EISCONN\nreconnect EISCONN\nown loopback ok\n"),
            "{}",
            o.stderr
        );
        assert_eq!(
            host_loopback.accepted.load(Ordering::SeqCst),
            0,
            "the host's loopback was reached"
        );
    });
}

#[test]
fn a_connection_made_from_another_thread_is_handed_over_too() {
    in_private_net(|| {
        let public = server(PUBLIC);
        let port = public.addr.port();
        let dir = TempDir::new("egress-thread");
        let script = r#"
import socket, sys, threading
out = []
def work():
    s = socket.create_connection(("api.example", int(sys.argv[1])), timeout=5)
    out.append(s.makefile().readline().strip())
t = threading.Thread(target=work); t.start(); t.join()
print(out)
"#;
        let o = run(
            &dir,
            &format!("{PUBLIC} api.example\n"),
            &[format!("net:connect:api.example:{port}")],
            script,
            &[port.to_string()],
        );
        assert_eq!(
            o.stdout,
            format!("['hello from {PUBLIC}']\n"),
            "{}",
            o.stderr
        );
        assert_eq!(public.accepted.load(Ordering::SeqCst), 1);
    });
}

#[test]
fn the_dns_stub_answers_granted_names_once_and_refuses_the_rest() {
    in_private_net(|| {
        let public = server(PUBLIC);
        let port = public.addr.port();
        let rebound = server(OTHER_PUBLIC);
        let dir = TempDir::new("egress-dns");
        let hosts = format!(
            "{PUBLIC} a.example.com\n{OTHER_PUBLIC} other.test\n127.0.0.1 local.example.com\n"
        );
        // The program resolves through the jail's resolver (the stub), then
        // the hosts file the supervisor resolves from is rewritten to send
        // a.example.com elsewhere (a rebinding answer): the run keeps the
        // first answer, and the rebound address stays closed.
        let script = r#"
import socket, sys
port, hosts, rebound = int(sys.argv[1]), sys.argv[2], sys.argv[3]
def resolve(name):
    try:
        return sorted({a[4][0] for a in socket.getaddrinfo(name, port, socket.AF_INET, socket.SOCK_STREAM)})
    except socket.gaierror as e:
        return "error %d" % e.errno
print("a", resolve("a.example.com"))
open(hosts, "w").write("%s a.example.com\n" % rebound)
print("again", resolve("a.example.com"))
print("other", resolve("other.test"))
print("local", resolve("local.example.com"))
s = socket.create_connection(("a.example.com", port), timeout=5)
print("line", s.makefile().readline().strip())
try:
    # The jail refuses the connect; gVisor's listener resets it.
    socket.create_connection((rebound, port), timeout=5).recv(1); print("rebound connected")
except OSError as e:
    print("rebound", e.errno)
"#;
        let hosts_file = dir.root.join("egress-hosts");
        for (backend, refusal) in [("jail", libc::EPERM), ("gvisor", libc::ECONNRESET)] {
            let o = run_on(
                backend,
                &dir,
                &hosts,
                &[
                    format!("net:connect:*.example.com:{port}"),
                    format!("fs:write:{}", dir.root.display()),
                ],
                script,
                &[
                    port.to_string(),
                    hosts_file.display().to_string(),
                    OTHER_PUBLIC.to_string(),
                ],
            );
            let want = format!(
            "a ['{PUBLIC}']\nagain ['{PUBLIC}']\nother error -2\nlocal error -2\nline hello from {PUBLIC}\nrebound {refusal}\n"
        );
            assert_eq!(o.stdout, want, "{backend}: {}", o.stderr);
            assert_eq!(rebound.accepted.load(Ordering::SeqCst), 0);
            let conns = connections(&o.report);
            assert_eq!(conns[0]["name"], "a.example.com", "{conns:#?}");
            assert_eq!(
                conns[0]["grant"],
                format!("net:connect:*.example.com:{port}")
            );
            let violations = o.report["violations"].to_string();
            assert!(
                violations.contains("dns query for other.test"),
                "{violations}"
            );
            assert!(
                violations.contains("dns query for local.example.com")
                    && violations.contains("loopback"),
                "{violations}"
            );
        }
    });
}

/// An HTTP server on `addr`:`port` (0: any) answering every request with
/// `200 hello`; counts the requests.
fn http_server(addr: &str, port: u16) -> (u16, Arc<AtomicU64>) {
    use std::io::{BufRead, BufReader};
    let listener = TcpListener::bind((addr, port)).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicU64::new(0));
    let count = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            count.fetch_add(1, Ordering::SeqCst);
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
            }
            let mut s = stream;
            let _ = s.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
            );
        }
    });
    (port, hits)
}

/// A WASM guest's `http` host is under the jail's egress rules:
/// `warden run GUEST.wasm --report` (which execs warden-wasm) resolves a
/// granted name through the hosts file named by WARDEN_EGRESS_HOSTS and
/// reaches its server; loopback and the metadata service are refused by
/// name and by address even when granted; every attempt is in the
/// report's `connections`, each refusal a `net` violation.
#[test]
fn a_wasm_guests_http_requests_go_through_the_same_egress() {
    in_private_net(|| {
        let (port, public_hits) = http_server(PUBLIC, 0);
        let (_, loopback_hits) = http_server("127.0.0.1", port);
        let (_, metadata_hits) = http_server(METADATA, port);
        let dir = TempDir::new("wasm-egress");
        let hosts = dir.root.join("egress-hosts");
        std::fs::write(
            &hosts,
            format!("{PUBLIC} api.example\n127.0.0.1 sneaky.example\n{METADATA} meta.example\n"),
        )
        .unwrap();
        let guest = common::rust_guest("hosthttp");
        let run = |grant: &str, url: &str| {
            let report = dir.root.join("report.json");
            let _ = std::fs::remove_file(&report);
            let out = Command::new(warden_bin())
                .env("WARDEN_EGRESS_HOSTS", &hosts)
                .env("WARDEN_CACHE_DIR", dir.root.join("cache"))
                .arg("--state")
                .arg(dir.root.join("state"))
                .args(["run", "--wall-time", "30s", "--report"])
                .arg(&report)
                .args(["--allow", grant, "--", &guest, "GET", url])
                .current_dir(dir.work())
                .output()
                .expect("run warden");
            let report: Value = serde_json::from_slice(&std::fs::read(&report).unwrap_or_default())
                .unwrap_or_else(|_| panic!("no report: {out:?}"));
            (String::from_utf8_lossy(&out.stdout).into_owned(), report)
        };
        let (stdout, report) = run(
            "net:http:api.example",
            &format!("http://api.example:{port}/hello"),
        );
        assert_eq!(stdout, "rc=0 status=200 len=5\nhello\n", "{report}");
        assert_eq!(report["status"], "exited", "{report}");
        assert_eq!(
            report["connections"],
            serde_json::json!([{
                "dest": PUBLIC,
                "port": port,
                "proto": "tcp",
                "allowed": true,
                "name": "api.example",
                "grant": "net:http:api.example",
                "bytes_out": 0,
                "bytes_in": 5,
            }]),
            "{report}"
        );
        assert_eq!(public_hits.load(Ordering::SeqCst), 1);
        for (grant, url, dest, word) in [
            (
                "net:http:sneaky.example".to_string(),
                format!("http://sneaky.example:{port}/"),
                "sneaky.example",
                "loopback",
            ),
            (
                "net:http:127.0.0.1".to_string(),
                format!("http://127.0.0.1:{port}/"),
                "127.0.0.1",
                "loopback",
            ),
            (
                "net:http:meta.example".to_string(),
                format!("http://meta.example:{port}/"),
                "meta.example",
                "metadata",
            ),
            (
                format!("net:http:{METADATA}"),
                format!("http://{METADATA}:{port}/latest/meta-data/"),
                METADATA,
                "metadata",
            ),
        ] {
            let (stdout, report) = run(&grant, &url);
            assert_eq!(stdout, "rc=1 status=0 len=0\n", "{grant}: {report}");
            assert_eq!(report["status"], "violation", "{grant}: {report}");
            let c = connections(&report);
            assert_eq!(c.len(), 1, "{grant}: {report}");
            assert_eq!(c[0]["dest"], dest, "{report}");
            assert_eq!(c[0]["allowed"], false, "{report}");
            assert!(c[0]["bytes_out"].is_null(), "{report}");
            assert!(
                c[0]["reason"].as_str().is_some_and(|r| r.contains(word)),
                "{report}"
            );
            let net: Vec<&Value> = report["violations"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|v| v["kind"] == "net")
                .collect();
            assert_eq!(net.len(), 1, "{report}");
        }
        assert_eq!(loopback_hits.load(Ordering::SeqCst), 0, "loopback reached");
        assert_eq!(metadata_hits.load(Ordering::SeqCst), 0, "metadata reached");
    })
}

/// A keep-alive HTTP/1.1 server on `addr:80` that answers each request
/// with the Host header it got and the body length it read, and records
/// every request line it saw.
fn host_echo_server(addr: &str) -> Arc<std::sync::Mutex<Vec<String>>> {
    use std::io::{BufRead, BufReader};
    let listener = TcpListener::bind((addr, 80)).unwrap_or_else(|e| panic!("bind {addr}:80: {e}"));
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let log = log.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut out = stream;
                loop {
                    let mut request = String::new();
                    if reader.read_line(&mut request).unwrap_or(0) == 0 {
                        return;
                    }
                    let (mut host, mut length) = (String::new(), 0usize);
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        let lower = line.to_ascii_lowercase();
                        if let Some(v) = lower.strip_prefix("host:") {
                            host = v.trim().to_string();
                        }
                        if let Some(v) = lower.strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0u8; length];
                    let _ = reader.read_exact(&mut body);
                    log.lock()
                        .unwrap()
                        .push(format!("{} {host}", request.trim()));
                    let reply = format!("host={host} body={length}");
                    let _ = write!(
                        out,
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{reply}",
                        reply.len()
                    );
                }
            });
        }
    });
    seen
}

/// `openssl s_server` on `addr:443` with a fresh self-signed certificate
/// for api.example; killed on drop (and its certificate's directory
/// removed with it).
struct TlsServer {
    child: std::process::Child,
    _cert_dir: TempDir,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tls_server(addr: &str) -> TlsServer {
    let dir = TempDir::new("egress-tls-cert");
    let (cert, key) = (dir.root.join("cert.pem"), dir.root.join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=api.example",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl req");
    assert!(made.status.success(), "{made:?}");
    let child = Command::new("openssl")
        .args(["s_server", "-quiet", "-www", "-accept"])
        .arg(format!("{addr}:443"))
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start openssl s_server");
    // Listening once a TCP connect succeeds.
    for _ in 0..100 {
        if std::net::TcpStream::connect((addr, 443)).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    TlsServer {
        child,
        _cert_dir: dir,
    }
}

/// `net:http:HOST` and `net:https:HOST`: the supervisor's proxy carries a
/// request only when its Host header (each request on a kept-alive
/// connection) or its TLS server name names the granted host at the
/// address it was pinned to; another Host, an absolute URL for another
/// host, or another server name closes the connection, and the report's
/// entry for it says why (a net violation). Other ports stay closed.
#[test]
fn http_and_https_grants_are_checked_by_host_header_and_server_name() {
    in_private_net(|| {
        let seen = host_echo_server(PUBLIC);
        let _tls = tls_server(PUBLIC);
        let dir = TempDir::new("egress-http");
        let script = r#"
import http.client, socket, ssl, sys
def attempt(label, f):
    try:
        print(label, "ok", f())
    except Exception as e:
        print(label, "err", type(e).__name__)
c = http.client.HTTPConnection("api.example", 80, timeout=10)
def get(host=None, path="/", body=None):
    c.putrequest("POST" if body else "GET", path, skip_host=host is not None)
    if host is not None:
        c.putheader("Host", host)
    if body:
        c.putheader("Content-Length", str(len(body)))
    c.endheaders(body.encode() if body else None)
    return c.getresponse().read().decode()
attempt("first", get)
attempt("second", lambda: get(body="twelve bytes"))
attempt("other-host", lambda: get(host="other.example"))
c = http.client.HTTPConnection("api.example", 80, timeout=10)
attempt("absolute", lambda: get(host="api.example", path="http://other.example/x"))
def tls(name):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    s = ctx.wrap_socket(socket.create_connection(("api.example", 443), timeout=10), server_hostname=name)
    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    return "tls-" + str(b"HTTP/1.0 200" in data)
attempt("tls-granted", lambda: tls("api.example"))
attempt("tls-other", lambda: tls("evil.example"))
attempt("port-22", lambda: socket.create_connection(("api.example", 22), timeout=5) and "connected")
"#;
        let out = run(
            &dir,
            &format!("{PUBLIC} api.example other.example\n"),
            &["net:http:api.example".into()],
            script,
            &[],
        );
        let ctx = format!("{}\n{}\n{}", out.stdout, out.stderr, out.report);
        assert_eq!(
            line_for(&out.stdout, "first"),
            "first ok host=api.example body=0",
            "{ctx}"
        );
        assert_eq!(
            line_for(&out.stdout, "second"),
            "second ok host=api.example body=12",
            "{ctx}"
        );
        // A refused request is answered 403 with the reason.
        for refused in ["other-host", "absolute"] {
            let line = line_for(&out.stdout, refused);
            assert!(
                line.contains(" ok warden: request refused") && line.contains("other.example"),
                "{refused}\n{ctx}"
            );
        }
        assert_eq!(
            line_for(&out.stdout, "tls-granted"),
            "tls-granted ok tls-True",
            "{ctx}"
        );
        // A refused server name gets a TLS access_denied alert.
        assert!(
            line_for(&out.stdout, "tls-other").contains(" err SSLError"),
            "{ctx}"
        );
        assert!(line_for(&out.stdout, "port-22").contains(" err "), "{ctx}");
        // The server saw the granted requests only.
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 2, "{seen:?}\n{ctx}");
        assert!(seen.iter().all(|l| l.ends_with(" api.example")), "{seen:?}");
        assert_eq!(out.report["status"], "violation", "{ctx}");
        let conns = connections(&out.report);
        let reasons: Vec<String> = conns
            .iter()
            .filter(|c| c["allowed"] == false)
            .map(|c| c["reason"].as_str().unwrap_or("").to_string())
            .collect();
        assert!(
            reasons
                .iter()
                .any(|r| r.contains("Host other.example is not granted")),
            "{reasons:?}"
        );
        assert!(
            reasons
                .iter()
                .any(|r| r.contains("request for other.example")),
            "{reasons:?}"
        );
        assert!(
            reasons
                .iter()
                .any(|r| r.contains("TLS server name evil.example is not granted")),
            "{reasons:?}"
        );
        assert!(
            conns
                .iter()
                .any(|c| c["port"] == 22 && c["allowed"] == false),
            "{conns:?}"
        );
        let granted = conns
            .iter()
            .filter(|c| c["allowed"] == true)
            .map(|c| c["grant"].as_str().unwrap_or(""))
            .collect::<Vec<_>>();
        assert!(
            granted.iter().all(|g| *g == "net:http:api.example"),
            "{granted:?}"
        );
        // net:https opens TLS only: port 80 stays closed.
        let only_tls = run(
            &dir,
            &format!("{PUBLIC} api.example\n"),
            &["net:https:api.example".into()],
            r#"
import socket
try:
    socket.create_connection(("api.example", 80), timeout=5); print("http connected")
except OSError:
    print("http refused")
"#,
            &[],
        );
        assert!(
            only_tls.stdout.contains("http refused"),
            "{}",
            only_tls.stdout
        );
    });
}

/// The same grants under the gVisor backend: its sandbox's network holds
/// only the granted addresses, where the supervisor listens and carries
/// each connection on (the proxy for net:http, a relay for UDP); the DNS
/// stub answers there. Another host, another port, the host's loopback and
/// an ungranted name reach nothing.
#[test]
fn egress_grants_hold_under_gvisor_too() {
    in_private_net(|| {
        let tcp = server(PUBLIC);
        let other = server(OTHER_PUBLIC);
        let on_loopback = server("127.0.0.1");
        let seen = host_echo_server(PUBLIC);
        let _tls = tls_server(PUBLIC);
        let (udp_port, udp_got) = udp_echo(PUBLIC);
        let dir = TempDir::new("egress-gvisor");
        let script = format!(
            r#"
import http.client, socket, ssl
def attempt(label, f):
    try:
        print(label, "ok", f())
    except Exception as e:
        print(label, "err", type(e).__name__)
def line(host, port):
    s = socket.create_connection((host, port), timeout=5)
    return s.makefile().readline().strip()
attempt("tcp", lambda: line("api.example", {tcp}))
attempt("other-host", lambda: line("{OTHER_PUBLIC}", {other}))
attempt("other-port", lambda: line("api.example", {other}))
attempt("loopback", lambda: line("127.0.0.1", {lo}))
attempt("dns", lambda: socket.getaddrinfo("evil.example", 80))
attempt("metadata", lambda: line("{METADATA}", 80))
attempt("ipv6", lambda: socket.create_connection(("{PUBLIC6}", 443), timeout=5) and "connected")
attempt("raw-ip", lambda: line("{PUBLIC}", 8443))
def get(host):
    c = http.client.HTTPConnection("api.example", 80, timeout=10)
    c.putrequest("GET", "/", skip_host=True)
    c.putheader("Host", host)
    c.endheaders()
    return c.getresponse().read().decode()
attempt("http", lambda: get("api.example"))
attempt("http-other", lambda: get("other.example"))
def tls(name):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    s = ctx.wrap_socket(socket.create_connection(("api.example", 443), timeout=10), server_hostname=name)
    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
    return "tls-" + str(b"200" in s.recv(100))
attempt("tls", lambda: tls("api.example"))
attempt("tls-other", lambda: tls("evil.example"))
def udp():
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.settimeout(5)
    u.connect(("api.example", {udp_port}))
    u.send(b"ping")
    return u.recv(100).decode()
attempt("udp", udp)
"#,
            tcp = tcp.addr.port(),
            other = other.addr.port(),
            lo = on_loopback.addr.port(),
        );
        let out = run_on(
            "gvisor",
            &dir,
            &format!("{PUBLIC} api.example\n"),
            &[
                format!("net:connect:api.example:{}", tcp.addr.port()),
                "net:http:api.example".into(),
                format!("net:connect:udp:api.example:{udp_port}"),
            ],
            &script,
            &[],
        );
        let ctx = format!("{}\n{}\n{}", out.stdout, out.stderr, out.report);
        assert_eq!(out.report["backend"], "gvisor", "{ctx}");
        assert_eq!(
            line_for(&out.stdout, "tcp"),
            format!("tcp ok hello from {PUBLIC}"),
            "{ctx}"
        );
        for refused in [
            "other-host",
            "other-port",
            "loopback",
            "dns",
            "tls-other",
            "metadata",
            "ipv6",
            "raw-ip",
        ] {
            assert!(
                line_for(&out.stdout, refused).contains(" err "),
                "{refused}\n{ctx}"
            );
        }
        assert_eq!(
            line_for(&out.stdout, "http"),
            "http ok host=api.example body=0",
            "{ctx}"
        );
        assert_eq!(line_for(&out.stdout, "tls"), "tls ok tls-True", "{ctx}");
        assert!(
            line_for(&out.stdout, "http-other").contains(" ok warden: request refused"),
            "{ctx}"
        );
        assert_eq!(line_for(&out.stdout, "udp"), "udp ok echo ping", "{ctx}");
        assert_eq!(other.accepted.load(Ordering::SeqCst), 0, "{ctx}");
        assert_eq!(on_loopback.accepted.load(Ordering::SeqCst), 0, "{ctx}");
        assert_eq!(udp_got.load(Ordering::SeqCst), 1, "{ctx}");
        assert_eq!(seen.lock().unwrap().len(), 1, "{ctx}");
        assert_eq!(out.report["status"], "violation", "{ctx}");
        let conns = connections(&out.report);
        let reasons: Vec<&str> = conns
            .iter()
            .filter(|c| c["allowed"] == false)
            .filter_map(|c| c["reason"].as_str())
            .collect();
        assert!(
            reasons.iter().any(|r| r.contains("Host other.example")),
            "{ctx}"
        );
        assert!(reasons.iter().any(|r| r.contains("evil.example")), "{ctx}");
        // Attempts to what no grant opens are seen too (on the sandbox's
        // loopback, where they are refused) and listed.
        for (dest, port) in [
            (OTHER_PUBLIC, other.addr.port()),
            (PUBLIC, other.addr.port()),
            ("127.0.0.1", on_loopback.addr.port()),
            (METADATA, 80),
            (PUBLIC, 8443),
        ] {
            assert!(
                conns
                    .iter()
                    .any(|c| c["dest"] == dest && c["port"] == port && c["allowed"] == false),
                "{dest}:{port} not listed\n{ctx}"
            );
        }
        let tcp_entry = conns
            .iter()
            .find(|c| c["port"] == tcp.addr.port() && c["allowed"] == true)
            .unwrap_or_else(|| panic!("{ctx}"));
        assert_eq!(tcp_entry["name"], "api.example", "{ctx}");
        assert!(
            out.report["violations"]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v["detail"]
                    .as_str()
                    .unwrap_or("")
                    .contains("dns query for evil.example")),
            "{ctx}"
        );
    });
}

/// Wildcard grants under gVisor: one listener on `::` at the granted port
/// takes every destination on it, and each connection is judged on its
/// own — public addresses for `*`, names the stub answered for `*.suffix`;
/// the host's loopback, a private address and the metadata service stay
/// refused, and so does another port.
#[test]
fn wildcard_grants_hold_under_gvisor() {
    in_private_net(|| {
        let public = server(PUBLIC);
        let port = public.addr.port();
        let private = TcpListener::bind((PRIVATE, port)).unwrap();
        private.set_nonblocking(true).unwrap();
        let seen = host_echo_server(OTHER_PUBLIC);
        let dir = TempDir::new("egress-gvisor-wild");
        let script = format!(
            r#"
import http.client, socket
def attempt(label, f):
    try:
        print(label, "ok", f())
    except Exception as e:
        print(label, "err", type(e).__name__)
def line(host, port):
    s = socket.create_connection((host, port), timeout=5)
    return s.makefile().readline().strip()
attempt("raw-ip", lambda: line("{PUBLIC}", {port}))
attempt("private", lambda: line("{PRIVATE}", {port}))
attempt("loopback", lambda: line("127.0.0.1", {port}))
attempt("other-port", lambda: line("{PUBLIC}", {other}))
def get(host):
    c = http.client.HTTPConnection(host, 80, timeout=10)
    c.request("GET", "/")
    return c.getresponse().read().decode()
attempt("suffix", lambda: get("www.example.org"))
attempt("not-below", lambda: get("example.net"))
"#,
            other = port + 1,
        );
        let out = run_on(
            "gvisor",
            &dir,
            &format!("{OTHER_PUBLIC} www.example.org example.net\n"),
            &[
                format!("net:connect:*:{port}"),
                "net:http:*.example.org".into(),
            ],
            &script,
            &[],
        );
        let ctx = format!("{}\n{}\n{}", out.stdout, out.stderr, out.report);
        assert_eq!(
            line_for(&out.stdout, "raw-ip"),
            format!("raw-ip ok hello from {PUBLIC}"),
            "{ctx}"
        );
        // A refused destination on the wildcard port was accepted by the
        // listener before it could be judged: it is reset at once.
        for (refused, err) in [
            ("private", "ConnectionResetError"),
            ("loopback", "ConnectionResetError"),
            ("other-port", "ConnectionRefusedError"),
        ] {
            assert_eq!(
                line_for(&out.stdout, refused),
                format!("{refused} err {err}"),
                "{ctx}"
            );
        }
        assert!(
            line_for(&out.stdout, "not-below").contains(" ok warden: request refused"),
            "{ctx}"
        );
        assert_eq!(
            line_for(&out.stdout, "suffix"),
            "suffix ok host=www.example.org body=0",
            "{ctx}"
        );
        assert!(
            private.accept().is_err(),
            "the private address was reached\n{ctx}"
        );
        assert_eq!(seen.lock().unwrap().len(), 1, "{ctx}");
        let conns = connections(&out.report);
        for (dest, allowed) in [(PUBLIC, true), (PRIVATE, false), ("127.0.0.1", false)] {
            assert!(
                conns
                    .iter()
                    .any(|c| c["dest"] == dest && c["port"] == port && c["allowed"] == allowed),
                "{dest}\n{ctx}"
            );
        }
        let suffix = conns
            .iter()
            .find(|c| c["dest"] == OTHER_PUBLIC && c["allowed"] == true)
            .unwrap_or_else(|| panic!("{ctx}"));
        assert_eq!(suffix["name"], "www.example.org", "{ctx}");
        assert_eq!(suffix["grant"], "net:http:*.example.org", "{ctx}");
        // Any port cannot be listened on: refused before anything runs.
        let wide = run_on(
            "gvisor",
            &dir,
            "",
            &["net:connect:api.example:*".into()],
            "print(1)",
            &[],
        );
        assert_eq!(wide.report["status"], "error", "{}", wide.stderr);
        assert!(wide.stderr.contains("gvisor backend"), "{}", wide.stderr);
    });
}

/// `net:dns` alone: the program's resolver reaches the run's DNS stub,
/// which answers no name (none is granted) and records each query.
#[test]
fn net_dns_alone_records_every_query_and_answers_none() {
    in_private_net(|| {
        let dir = TempDir::new("egress-dns-only");
        let out = run(
            &dir,
            "",
            &["net:dns".into()],
            r#"
import socket
try:
    socket.getaddrinfo("asked.example", 443, proto=socket.IPPROTO_TCP); print("resolved")
except socket.gaierror:
    print("nxdomain")
"#,
            &[],
        );
        assert!(
            out.stdout.contains("nxdomain"),
            "{}\n{}",
            out.stdout,
            out.stderr
        );
        let violations = out.report["violations"].as_array().unwrap();
        assert!(
            violations.iter().any(|v| v["detail"]
                .as_str()
                .unwrap_or("")
                .contains("dns query for asked.example")),
            "{}",
            out.report
        );
    });
}

/// Under gVisor the forwarder holds the run's byte limit and idle timeout
/// on what it carries: the connection is cut, and the report says so.
#[test]
fn net_limits_hold_under_gvisor() {
    in_private_net(|| {
        let tcp = server(PUBLIC);
        let dir = TempDir::new("egress-gvisor-limits");
        let port = tcp.addr.port();
        let hosts = format!("{PUBLIC} api.example\n");
        let grant = format!("net:connect:api.example:{port}");
        let bulk = format!(
            r#"
import socket
s = socket.create_connection(("api.example", {port}), timeout=10)
s.makefile().readline()
try:
    for _ in range(64):
        s.sendall(b"x" * 16384)
    s.shutdown(socket.SHUT_WR)
    print("reply", repr(s.recv(100)))
except OSError as e:
    print("cut", e.errno)
"#
        );
        let idle = format!(
            r#"
import socket, time
t = socket.create_connection(("api.example", {port}), timeout=10)
t.makefile().readline()
time.sleep(1.5)
try:
    t.sendall(b"late"); t.shutdown(socket.SHUT_WR)
    print("after idle", repr(t.recv(100)))
except OSError as e:
    print("idle cut", e.errno)
"#
        );
        for (limit, script, name, says) in [
            (
                "net:limit:bytes:64KiB",
                &bulk,
                "net_bytes",
                "net:limit:bytes",
            ),
            ("net:limit:idle:500ms", &idle, "net_idle", "idle timeout"),
        ] {
            let out = run_on(
                "gvisor",
                &dir,
                &hosts,
                &[grant.clone(), limit.into()],
                script,
                &[],
            );
            let ctx = format!("{}\n{}\n{}", out.stdout, out.stderr, out.report);
            assert!(
                !out.stdout.contains("got "),
                "the server answered past the cut\n{ctx}"
            );
            let reached: Vec<&str> = out.report["limits_reached"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|l| l["limit"].as_str())
                .collect();
            assert_eq!(reached, [name], "{ctx}");
            let conn = &connections(&out.report)[0];
            assert_eq!(conn["allowed"], true, "{ctx}");
            assert!(
                conn["reason"].as_str().unwrap_or("").contains(says),
                "{ctx}"
            );
        }
        // The byte limit holds on a connection through the proxy too.
        let _http = host_echo_server(PUBLIC);
        let post = r#"
import http.client
c = http.client.HTTPConnection("api.example", 80, timeout=10)
try:
    c.request("POST", "/", body=b"x" * (1 << 20))
    print("got", c.getresponse().read())
except OSError as e:
    print("cut", e.errno)
"#;
        let out = run_on(
            "gvisor",
            &dir,
            &hosts,
            &[
                "net:http:api.example".into(),
                "net:limit:bytes:64KiB".into(),
            ],
            post,
            &[],
        );
        let ctx = format!("{}\n{}\n{}", out.stdout, out.stderr, out.report);
        assert!(out.stdout.contains("cut "), "{ctx}");
        assert!(!out.stdout.contains("got "), "{ctx}");
        assert_eq!(
            out.report["limits_reached"][0]["limit"], "net_bytes",
            "{ctx}"
        );
        let conn = &connections(&out.report)[0];
        assert_eq!(conn["grant"], "net:http:api.example", "{ctx}");
        assert!(
            conn["reason"]
                .as_str()
                .unwrap_or("")
                .contains("net:limit:bytes"),
            "{ctx}"
        );
    });
}

/// A unix socket server on `path` that greets each client with `hello`.
fn unix_server(path: &std::path::Path, mode: u32, hello: &'static str) {
    use std::os::unix::fs::PermissionsExt;
    let listener = std::os::unix::net::UnixListener::bind(path).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let _ = s.write_all(hello.as_bytes());
        }
    });
}

/// In a run with egress grants, connect(2) is the supervisor's: pathname
/// unix sockets are reached as the program would reach them without any
/// grant — the path looked up in its own view (its root, working
/// directory, mounts), with its own ids — so a granted socket works, one
/// it may not open is refused, a socket outside its view does not exist
/// for it, and a symlink it plants to a host path leads nowhere.
#[test]
fn pathname_unix_sockets_mean_the_same_with_egress_grants() {
    in_private_net(|| {
        use std::os::unix::fs::PermissionsExt;
        let dir = TempDir::new("egress-unix");
        let shared = dir.root.join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
        unix_server(&shared.join("open.sock"), 0o666, "open");
        unix_server(&shared.join("closed.sock"), 0o600, "closed");
        std::os::unix::fs::chown(shared.join("closed.sock"), Some(4242), Some(4242)).unwrap();
        let outside = TempDir::new("egress-unix-outside");
        let hidden = outside.root.join("hidden.sock");
        unix_server(&hidden, 0o666, "hidden");
        let script = format!(
            r#"
import os, socket
def attempt(label, path):
    try:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(5)
        s.connect(path)
        print(label, "ok", s.recv(100).decode())
    except OSError as e:
        print(label, "err", e.errno)
attempt("open", "{shared}/open.sock")
attempt("closed", "{shared}/closed.sock")
attempt("hidden", "{hidden}")
os.symlink("{hidden}", "/tmp/planted")
attempt("planted", "/tmp/planted")
os.chdir("/tmp")
srv = socket.socket(socket.AF_UNIX)
srv.bind("own.sock")
srv.listen(1)
c = socket.socket(socket.AF_UNIX)
c.connect("own.sock")
a, _ = srv.accept()
a.send(b"own")
print("own", "ok", c.recv(10).decode())
"#,
            shared = shared.display(),
            hidden = hidden.display(),
        );
        let read = format!("fs:read:{}", shared.display());
        let plain = run(&dir, "", std::slice::from_ref(&read), &script, &[]);
        let egress = run(
            &dir,
            &format!("{PUBLIC} api.example\n"),
            &[read, "net:connect:api.example:9".into()],
            &script,
            &[],
        );
        let ctx = format!(
            "{}\n{}\n{}\n--- egress ---\n{}\n{}\n{}",
            plain.stdout, plain.stderr, plain.report, egress.stdout, egress.stderr, egress.report
        );
        assert_eq!(line_for(&plain.stdout, "open"), "open ok open", "{ctx}");
        assert_eq!(line_for(&plain.stdout, "closed"), "closed err 13", "{ctx}");
        assert_eq!(line_for(&plain.stdout, "hidden"), "hidden err 2", "{ctx}");
        assert_eq!(line_for(&plain.stdout, "planted"), "planted err 2", "{ctx}");
        assert_eq!(line_for(&plain.stdout, "own"), "own ok own", "{ctx}");
        assert_eq!(plain.stdout, egress.stdout, "{ctx}");
        assert_eq!(egress.report["status"], "exited", "{ctx}");
        assert!(
            egress.report["warnings"].as_array().unwrap().is_empty(),
            "{ctx}"
        );
    });
}

/// Started by an ordinary user, the jail's egress works the same: its
/// init binds the DNS stub's socket in the jail's network namespace and
/// hands it over (the supervisor cannot enter that namespace without
/// root), so a wildcard grant's names resolve through the stub and the
/// connection is made by the supervisor.
#[test]
fn an_ordinary_users_jail_resolves_through_the_stub_and_connects() {
    in_private_net(|| {
        use std::os::unix::fs::PermissionsExt;
        const NOBODY: u32 = 65534;
        let public = server(PUBLIC);
        let port = public.addr.port();
        let dir = TempDir::new("egress-rootless");
        dir.open_to_everyone();
        let bin = dir.private_warden();
        let hosts = dir.root.join("egress-hosts");
        std::fs::write(&hosts, format!("{PUBLIC} a.example.com\n")).unwrap();
        std::fs::set_permissions(&hosts, std::fs::Permissions::from_mode(0o644)).unwrap();
        let state = dir.root.join("state-nobody");
        std::fs::create_dir(&state).unwrap();
        std::os::unix::fs::chown(&state, Some(NOBODY), Some(NOBODY)).unwrap();
        let report = dir.root.join("report-nobody.json");
        let script = format!(
            r#"
import socket
print("resolved", socket.getaddrinfo("a.example.com", {port}, socket.AF_INET, socket.SOCK_STREAM)[0][4][0])
s = socket.create_connection(("a.example.com", {port}), timeout=5)
print("line", s.makefile().readline().strip())
"#
        );
        let out = Command::new("setpriv")
            .args([
                format!("--reuid={NOBODY}"),
                format!("--regid={NOBODY}"),
                "--clear-groups".into(),
            ])
            .arg(&bin)
            .env("WARDEN_EGRESS_HOSTS", &hosts)
            .arg("--state")
            .arg(&state)
            .arg("run")
            .arg("--report")
            .arg(&report)
            .args(["--allow", &format!("net:connect:*.example.com:{port}")])
            .args(["--", "/usr/bin/python3", "-c", &script])
            .current_dir(dir.work())
            .output()
            .unwrap();
        let report = std::fs::read_to_string(&report).unwrap_or_default();
        let ctx = format!("{out:?}\n{report}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            stdout,
            format!("resolved {PUBLIC}\nline hello from {PUBLIC}\n"),
            "{ctx}"
        );
        assert!(!report.contains("DNS stub could not start"), "{ctx}");
        assert_eq!(public.accepted.load(Ordering::SeqCst), 1, "{ctx}");
    });
}
