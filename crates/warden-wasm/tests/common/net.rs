//! A private network namespace for the HTTP tests. Warden's `http` host
//! never connects to loopback, so test servers listen on addresses that
//! stand for a public host (and a private one, and the metadata service)
//! on the loopback device of a namespace of their own, made once per test
//! process. [`in_net`] runs a test's body on a thread moved into it, with
//! a tokio runtime made there: wasmtime-wasi then takes that runtime as the
//! ambient one, so the blocking threads that make the host's connections
//! are started from the namespace too. Needs root (CI runs these as root);
//! without it the tests fail, they do not skip.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use warden_wasm::{HttpConfig, WasmBackend, WasmConfig};

/// Stands for a public host.
pub const PUBLIC: &str = "11.22.33.44";
/// Another public host.
pub const OTHER_PUBLIC: &str = "11.22.33.45";
/// A private (RFC 1918) host.
pub const PRIVATE: &str = "10.11.12.13";
/// The cloud metadata service.
pub const METADATA: &str = "169.254.169.254";

/// The names of [`hosts_file`]: `api.test` and `API2.test` → [`PUBLIC`],
/// `other.test` → [`OTHER_PUBLIC`], `intranet.test` → [`PRIVATE`],
/// `meta.test` → [`METADATA`], `loop.test` and `localhost` → 127.0.0.1 and
/// ::1, `mixed.test` → 127.0.0.1 and [`PUBLIC`].
const HOSTS: &str = "11.22.33.44 api.test api2.test\n11.22.33.45 other.test\n\
10.11.12.13 intranet.test\n169.254.169.254 meta.test\n127.0.0.1 loop.test mixed.test localhost\n\
::1 loop.test localhost\n11.22.33.44 mixed.test\n";

/// The namespace, made once: `unshare --net` runs a shell that brings its
/// loopback up, adds the test addresses and reports; its namespace stays
/// open through this descriptor after the shell is gone.
fn namespace() -> &'static File {
    static NS: OnceLock<File> = OnceLock::new();
    NS.get_or_init(|| {
        let script = format!(
            "set -e; ip link set lo up; for a in {PUBLIC} {OTHER_PUBLIC} {PRIVATE} {METADATA}; do \
             ip addr add $a/32 dev lo; done; echo ready; read _"
        );
        let mut child = Command::new("unshare")
            .args(["--net", "sh", "-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run unshare(1)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read from the namespace's shell");
        if line.trim() != "ready" {
            let out = child.wait_with_output().expect("wait for unshare");
            panic!(
                "making the HTTP tests' network namespace failed (these tests need root): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let ns = File::open(format!("/proc/{}/ns/net", child.id())).expect("open the namespace");
        // Let the shell end (its `read` returns at EOF).
        drop(child.stdin.take());
        let _ = child.wait();
        ns
    })
}

/// Runs `f` on a thread of its own inside the test namespace, with a
/// tokio runtime made (and entered) there; panics pass through.
pub fn in_net<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    let ns = namespace();
    let thread = std::thread::spawn(move || {
        rustix::thread::move_into_link_name_space(
            ns.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .expect("setns into the test namespace (the HTTP tests need root)");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime in the namespace");
        let result = {
            let _entered = runtime.enter();
            f()
        };
        // Calls abandoned at their deadline may still be winding down on
        // the blocking threads: do not wait for them.
        runtime.shutdown_background();
        result
    });
    thread
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// The hosts file of the test names (see [`HOSTS`]), written once.
pub fn hosts_file() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("warden-wasm-hosts-{}", std::process::id()));
        let mut f = File::create(&path).expect("write the test hosts file");
        f.write_all(HOSTS.as_bytes())
            .expect("write the test hosts file");
        path
    })
}

/// `config` resolving names from [`hosts_file`].
pub fn with_hosts(config: HttpConfig) -> HttpConfig {
    HttpConfig {
        hosts_file: Some(hosts_file().to_path_buf()),
        ..config
    }
}

/// A backend whose guests resolve names from [`hosts_file`], with the
/// other settings of `config`.
pub fn backend_with(config: HttpConfig) -> WasmBackend {
    WasmBackend::with_config(WasmConfig {
        http: with_hosts(config),
        ..WasmConfig::default()
    })
    .expect("backend")
}

/// One such backend with the default HTTP settings, per test process.
pub fn backend() -> &'static WasmBackend {
    static B: OnceLock<WasmBackend> = OnceLock::new();
    B.get_or_init(|| backend_with(HttpConfig::default()))
}

/// A small HTTP server started by a test (inside [`in_net`]).
pub struct Server {
    pub addr: std::net::SocketAddr,
    /// Requests it received.
    pub hits: std::sync::Arc<std::sync::atomic::AtomicU32>,
}

impl Server {
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn hits(&self) -> u32 {
        self.hits.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// `http://ADDR:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// An HTTP server on `ip`:`port` (0: any free port) answering each request
/// with 200 and `reply(path)`, then closing; it serves until the process
/// ends.
pub fn http_server(
    ip: &str,
    port: u16,
    reply: impl Fn(&str) -> String + Send + Sync + 'static,
) -> Server {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;
    let bind: std::net::SocketAddr = if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
    .parse()
    .expect("a socket address");
    let listener = std::net::TcpListener::bind(bind).unwrap_or_else(|e| panic!("bind {bind}: {e}"));
    let addr = listener.local_addr().expect("local address");
    let hits = Arc::new(AtomicU32::new(0));
    let count = hits.clone();
    let reply = Arc::new(reply);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            count.fetch_add(1, Ordering::SeqCst);
            let reply = reply.clone();
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(5)));
                let mut reader = BufReader::new(match stream.try_clone() {
                    Ok(s) => s,
                    Err(_) => return,
                });
                let mut first = String::new();
                let _ = reader.read_line(&mut first);
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                }
                let path = first.split(' ').nth(1).unwrap_or("").to_string();
                let body = reply(&path);
                let mut s = stream;
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    Server { addr, hits }
}
