//! `http`: outgoing requests to hosts granted by `net:http:HOST`.
//!
//! Only `http` and `https` URLs; the URL's host must be covered by a
//! grant (`HostPattern::covers`: an exact name, `*.suffix`, an IP literal
//! granted as such, or `*`). Redirects are never followed (a 3xx is
//! returned to the guest, which may ask again — and be checked again); no
//! proxy is taken from the environment; each call has a deadline of at
//! most [`HttpConfig::timeout`] that never passes the run's own; request
//! and response bodies are capped.
//!
//! Where a request may go is decided as for a jailed run's connections
//! (`warden_egress`): a name is resolved the way a jailed run resolves it
//! (the hosts file named by `WARDEN_EGRESS_HOSTS`, else the system's
//! resolver; or [`HttpConfig::hosts_file`]), at most once per run — the
//! first answer is pinned, so a rebinding DNS answer gains nothing — and
//! only to addresses whose class allows it: never loopback, link-local,
//! cloud metadata or unroutable ones, private ones only through a grant
//! naming the address itself. The client's resolver hands out exactly
//! those addresses and its connector connects to nothing else. Every
//! attempt is recorded for the report's `connections`; a refused address is
//! a `net` violation.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use ureq::http;
use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{
    time::Duration as UreqDuration, ConnectionDetails, Connector, NextTimeout, RustlsConnector,
    TcpConnector, Transport,
};
use warden_core::Connection;
use warden_egress::{RunNames, Unreachable};
use warden_policy::{Capability, HostPattern};

use super::{HostError, HostState};

/// Settings of the `http` capability, fixed per backend.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// Longest a call may take (connect, send, receive the whole body).
    pub timeout: Duration,
    /// Largest response body; a larger one fails the call (`too-large`).
    pub max_response_bytes: u64,
    /// Largest request body.
    pub max_request_bytes: usize,
    /// Requests a run may send, the modules it calls included.
    pub max_requests_per_run: u32,
    /// A hosts-format file guests' host names are resolved from (read once
    /// per run, at its first request), instead of what a jailed run uses
    /// (the file named by `WARDEN_EGRESS_HOSTS`, else the system's
    /// resolver). `None` (the default): as a jailed run.
    pub hosts_file: Option<PathBuf>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            timeout: Duration::from_secs(10),
            max_response_bytes: 1 << 20,
            max_request_bytes: 1 << 20,
            max_requests_per_run: 100,
            hosts_file: None,
        }
    }
}

/// Methods a guest may use.
const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
/// Longest URL, in bytes.
pub const MAX_URL_BYTES: usize = 8 << 10;
/// Request headers per call.
pub const MAX_HEADERS: usize = 64;
/// Bytes of request headers (names and values) per call.
pub const MAX_HEADER_BYTES: usize = 16 << 10;
/// Response headers passed back (the rest are dropped).
const MAX_RESPONSE_HEADERS: usize = 64;
/// Connection attempts listed in a run's report (as the jail lists);
/// later ones are counted only.
pub(crate) const MAX_RECORDED: usize = 256;
/// Header names a guest may not set: the host is the URL's, and the
/// framing and hop-by-hop headers are the client's (a guest's
/// `Content-Length: 0` would silently drop its body, a larger one stall
/// the call until its deadline).
const FORBIDDEN_HEADERS: &[&str] = &[
    "host",
    "connection",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "expect",
    "te",
    "trailer",
    "keep-alive",
    "proxy-connection",
];

/// What a guest asks for.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// What it gets back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// The TLS connector every call's client wraps its connection in: one per
/// backend, so that its TLS configuration (root certificates) is built
/// once.
pub(crate) fn tls() -> Arc<RustlsConnector> {
    Arc::new(RustlsConnector::default())
}

/// The network state of one run, shared with the modules it calls: the
/// names it resolved (pinned for the run) and the connections it
/// attempted.
#[derive(Debug, Default)]
pub(crate) struct RunNet {
    /// Made at the run's first request (reading the hosts file then).
    names: OnceLock<Result<Arc<RunNames>, String>>,
    log: Mutex<NetLog>,
}

#[derive(Debug, Default)]
struct NetLog {
    connections: Vec<Connection>,
    /// Attempts past [`MAX_RECORDED`].
    unrecorded: u64,
    /// Addresses names resolved to that were never used, said once each.
    dropped: BTreeSet<String>,
}

impl RunNet {
    /// The run's names, made on first use from `hosts_file` or as a
    /// jailed run resolves.
    fn names(&self, hosts_file: Option<&std::path::Path>) -> Result<Arc<RunNames>, HostError> {
        self.names
            .get_or_init(|| {
                match hosts_file {
                    Some(path) => RunNames::from_hosts_file(path),
                    None => RunNames::for_run(),
                }
                .map(Arc::new)
                .map_err(|e| e.to_string())
            })
            .clone()
            .map_err(HostError::Failed)
    }

    fn with_log<R>(&self, f: impl FnOnce(&mut NetLog) -> R) -> R {
        f(&mut self.log.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn record(&self, c: Connection) {
        self.with_log(|log| {
            if log.connections.len() < MAX_RECORDED {
                log.connections.push(c);
            } else {
                log.unrecorded += 1;
            }
        });
    }

    /// What the report gets: the connections, and warnings (addresses
    /// never used, attempts not listed).
    pub fn take(&self) -> (Vec<Connection>, Vec<String>) {
        self.with_log(|log| {
            let mut warnings: Vec<String> = std::mem::take(&mut log.dropped).into_iter().collect();
            if log.unrecorded > 0 {
                warnings.push(format!(
                    "http: {} more connection attempts were made than the report lists (at most {MAX_RECORDED})",
                    log.unrecorded
                ));
            }
            (std::mem::take(&mut log.connections), warnings)
        })
    }
}

/// A request's URL, parsed once: what its connection uses, and what it
/// needs granted.
struct Target {
    uri: http::Uri,
    /// `net:http:HOST`.
    needed: Capability,
    /// The host as the connection uses it: lower-case, an IPv6 address
    /// without its brackets.
    host: String,
    port: u16,
}

/// The URL parsed, and the capability its host needs.
fn url_host(url: &str) -> Result<Target, HostError> {
    if url.len() > MAX_URL_BYTES {
        return Err(HostError::TooLarge(format!(
            "URL of {} bytes (at most {MAX_URL_BYTES})",
            url.len()
        )));
    }
    let uri: http::Uri = url
        .parse()
        .map_err(|e| HostError::Invalid(format!("URL {url:?}: {e}")))?;
    let default_port = match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("http") => 80,
        Some(s) if s.eq_ignore_ascii_case("https") => 443,
        _ => return Err(HostError::Invalid("only http:// and https:// URLs".into())),
    };
    let host = uri
        .host()
        .filter(|h| !h.is_empty() && !h.contains('*'))
        .ok_or_else(|| HostError::Invalid(format!("URL {url:?} has no host")))?;
    // An https URL is within net:https (or net:http, which covers it).
    let scheme = if default_port == 443 { "https" } else { "http" };
    let needed: Capability = format!("net:{scheme}:{host}")
        .parse()
        .map_err(|_| HostError::Invalid(format!("URL host {host:?} is not a valid host")))?;
    let port = uri.port_u16().unwrap_or(default_port);
    let host = bare_host(host);
    Ok(Target {
        uri,
        needed,
        host,
        port,
    })
}

/// `host` lower-case, without the brackets of an IPv6 literal.
fn bare_host(host: &str) -> String {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
        .to_ascii_lowercase()
}

/// `host:port` as written in a URL (`[::1]:80`).
fn shown(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Checks the grant and the request, then sends it on a blocking thread,
/// bounded by the per-call deadline.
pub(crate) async fn send(
    state: &mut HostState,
    function: &'static str,
    req: Request,
) -> Result<Response, HostError> {
    let target = url_host(&req.url)?;
    let net = state.kv_session()?.net();
    let Some(grant) = state
        .grants
        .iter()
        .find(|g| g.subsumes(&target.needed))
        .cloned()
    else {
        net.record(Connection {
            dest: target.host.clone(),
            port: target.port,
            proto: "tcp",
            allowed: false,
            name: Some(target.host.clone()),
            grant: None,
            reason: Some(format!("{} not granted", target.needed)),
            bytes_out: None,
            bytes_in: None,
        });
        return Err(state.deny(function, target.needed.to_string()));
    };
    // A private address only through a grant that names it: an IP
    // literal granted as one (`*` does not name it).
    let named = state.grants.iter().any(|g| {
        matches!(
            g,
            Capability::NetHttp(HostPattern::Ip(_)) | Capability::NetHttps(HostPattern::Ip(_))
        ) && g.subsumes(&target.needed)
    });
    let method = req.method.to_ascii_uppercase();
    if !METHODS.contains(&method.as_str()) {
        return Err(HostError::Invalid(format!(
            "method {:?} (expected one of {})",
            req.method,
            METHODS.join(", ")
        )));
    }
    let shared = state.shared()?;
    let config = shared.http.clone();
    let tls = shared.http_tls.clone();
    if req.body.len() > config.max_request_bytes {
        return Err(HostError::TooLarge(format!(
            "request body of {} bytes (at most {})",
            req.body.len(),
            config.max_request_bytes
        )));
    }
    state
        .kv_session()?
        .count_http_request(config.max_requests_per_run)?;
    let header_bytes: usize = req.headers.iter().map(|(k, v)| k.len() + v.len()).sum();
    if req.headers.len() > MAX_HEADERS || header_bytes > MAX_HEADER_BYTES {
        return Err(HostError::TooLarge(format!(
            "at most {MAX_HEADERS} request headers, {MAX_HEADER_BYTES} bytes in all"
        )));
    }
    let mut builder = http::Request::builder()
        .method(method.as_str())
        .uri(target.uri.clone());
    for (name, value) in &req.headers {
        if FORBIDDEN_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(HostError::Invalid(format!(
                "header {name:?} may not be set"
            )));
        }
        builder = builder.header(name.as_str(), value.as_str());
    }
    let body_len = req.body.len() as u64;
    let request = builder
        .body(req.body)
        .map_err(|e| HostError::Invalid(format!("request: {e}")))?;

    let remaining = state.deadline.saturating_duration_since(Instant::now());
    let timeout = config.timeout.min(remaining);
    if timeout.is_zero() {
        return Err(HostError::Timeout);
    }
    let cap = config.max_response_bytes;
    let call_deadline = Instant::now().checked_add(timeout);
    let attempt = Arc::new(Mutex::new(Attempt::default()));
    let call = {
        let attempt = attempt.clone();
        let net = net.clone();
        let host = target.host.clone();
        wasmtime_wasi::runtime::spawn_blocking(move || {
            // The blocking pool may start this late (when it is busy): never
            // send a request after the guest has stopped waiting for it.
            let left =
                call_deadline.map_or(timeout, |d| d.saturating_duration_since(Instant::now()));
            if left.is_zero() {
                return Err(HostError::Timeout);
            }
            let names = net.names(config.hosts_file.as_deref())?;
            let reach = match names.reach(&host, named) {
                Ok(reach) => reach,
                Err(e @ Unreachable::Refused { .. }) => {
                    let why = e.to_string();
                    lock(&attempt).refused = Some(why.clone());
                    return Err(HostError::Refused(why));
                }
                Err(e @ Unreachable::NotResolved { .. }) => {
                    return Err(HostError::Failed(e.to_string()))
                }
            };
            if !reach.dropped.is_empty() {
                net.with_log(|log| {
                    for (ip, class) in &reach.dropped {
                        log.dropped.insert(format!(
                            "http: {host} resolves to {ip}, {}; not used",
                            class.describe()
                        ));
                    }
                });
            }
            lock(&attempt).addrs = reach.addrs.clone();
            let agent = call_agent(&host, reach.addrs, named, tls, attempt.clone());
            let left =
                call_deadline.map_or(timeout, |d| d.saturating_duration_since(Instant::now()));
            let request = agent
                .configure_request(request)
                .timeout_global(Some(left))
                .build();
            let mut response = agent.run(request).map_err(transport)?;
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .take(MAX_RESPONSE_HEADERS)
                .map(|(k, v)| {
                    (
                        k.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            let body = response
                .body_mut()
                .with_config()
                .limit(cap)
                .read_to_vec()
                .map_err(transport)?;
            Ok(Response {
                status,
                headers,
                body,
            })
        })
    };
    // The client's own timeout bounds the blocking thread; this one
    // bounds the guest's wait even if the client overstays.
    let result =
        match tokio::time::timeout(timeout.saturating_add(Duration::from_millis(50)), call).await {
            Ok(result) => result,
            Err(_) => Err(HostError::Timeout),
        };
    let attempt = std::mem::take(&mut *lock(&attempt));
    let dest = attempt
        .connected
        .or(attempt.addrs.first().copied())
        .map_or_else(|| target.host.clone(), |ip| ip.to_string());
    let refused = attempt.refused.is_some();
    if let Some(why) = &attempt.refused {
        state.refuse_net(format!(
            "{function}: tcp connection to {} refused: {why}",
            shown(&dest, target.port)
        ));
    }
    net.record(Connection {
        dest,
        port: target.port,
        proto: "tcp",
        allowed: !refused,
        name: Some(target.host),
        grant: (!refused).then(|| grant.to_string()),
        reason: match (&attempt.refused, &result) {
            (Some(why), _) => Some(why.clone()),
            (None, Err(e)) => Some(e.to_string()),
            (None, Ok(_)) => None,
        },
        bytes_out: attempt.connected.map(|_| body_len),
        bytes_in: result.as_ref().ok().map(|r| r.body.len() as u64),
    });
    result
}

fn lock(attempt: &Mutex<Attempt>) -> std::sync::MutexGuard<'_, Attempt> {
    attempt.lock().unwrap_or_else(|e| e.into_inner())
}

/// What one call's connection did, as far as it got.
#[derive(Debug, Default)]
struct Attempt {
    /// The addresses it could go to (checked).
    addrs: Vec<IpAddr>,
    /// The address it connected to.
    connected: Option<IpAddr>,
    /// Why it was refused (every address of its host forbidden).
    refused: Option<String>,
}

/// The client of one call: redirects off, no proxy, status codes as
/// responses (not errors); its resolver hands out `addrs` for `host` and
/// nothing else, and its connector connects to those only and records
/// which one it reached in `attempt`.
fn call_agent(
    host: &str,
    addrs: Vec<IpAddr>,
    named: bool,
    tls: Arc<RustlsConnector>,
    attempt: Arc<Mutex<Attempt>>,
) -> ureq::Agent {
    let config = ureq::Agent::config_builder()
        .max_redirects(0)
        .proxy(None)
        .http_status_as_error(false)
        .user_agent("warden")
        .build();
    ureq::Agent::with_parts(
        config,
        PinnedConnector { named, attempt }.chain(SharedTls(tls)),
        PinnedResolver {
            host: host.to_string(),
            addrs,
        },
    )
}

/// Resolves the call's host to the addresses checked for it, and any
/// other host to nothing.
#[derive(Debug)]
struct PinnedResolver {
    host: String,
    addrs: Vec<IpAddr>,
}

impl Resolver for PinnedResolver {
    fn resolve(
        &self,
        uri: &http::Uri,
        _config: &ureq::config::Config,
        _timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let host = uri.host().map(bare_host);
        if host.as_deref() != Some(self.host.as_str()) {
            return Err(ureq::Error::HostNotFound);
        }
        let port = uri
            .port_u16()
            .unwrap_or(if uri.scheme_str() == Some("https") {
                443
            } else {
                80
            });
        let mut out = self.empty();
        // As many as ureq keeps (the names' tables keep no more).
        for ip in self.addrs.iter().take(16) {
            out.push(SocketAddr::new(*ip, port));
        }
        if out.is_empty() {
            return Err(ureq::Error::HostNotFound);
        }
        Ok(out)
    }
}

/// Connects a TCP socket to the first of the resolved addresses that
/// answers (each given a share of the time left), only to addresses whose
/// class the call may reach (the resolver handed out no other: checked
/// again all the same), and records the one it reached.
#[derive(Debug)]
struct PinnedConnector {
    named: bool,
    attempt: Arc<Mutex<Attempt>>,
}

impl Connector<()> for PinnedConnector {
    type Out = <TcpConnector as Connector<()>>::Out;

    fn connect(
        &self,
        details: &ConnectionDetails,
        _chained: Option<()>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        let started = Instant::now();
        let budget = details.timeout.after;
        let allowed: Vec<SocketAddr> = details
            .addrs
            .iter()
            .copied()
            .filter(|a| warden_egress::may_connect(a.ip(), self.named).is_ok())
            .collect();
        let mut last = None;
        for (i, addr) in allowed.iter().enumerate() {
            let after = if budget.is_not_happening() {
                UreqDuration::NotHappening
            } else {
                let left = budget.saturating_sub(started.elapsed());
                if left.is_zero() {
                    return Err(ureq::Error::Timeout(details.timeout.reason));
                }
                // The last address gets all that is left, the others an
                // equal share of it.
                let share = left / (allowed.len() - i) as u32;
                UreqDuration::Exact(share.max(Duration::from_millis(10)).min(left))
            };
            let mut one = details.resolver.empty();
            one.push(*addr);
            let single = ConnectionDetails {
                uri: details.uri,
                addrs: one,
                config: details.config,
                request_level: details.request_level,
                resolver: details.resolver,
                now: details.now,
                timeout: NextTimeout {
                    after,
                    ..details.timeout
                },
                current_time: details.current_time.clone(),
                run_connector: details.run_connector.clone(),
                register_shutdown: details.register_shutdown.clone(),
            };
            match TcpConnector::default().connect(&single, None) {
                Ok(Some(transport)) => {
                    lock(&self.attempt).connected = Some(addr.ip());
                    return Ok(Some(transport));
                }
                Ok(None) => {}
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            ureq::Error::Io(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "no address of the host may be connected to",
            ))
        }))
    }
}

/// The backend's one TLS connector, for every call's client.
#[derive(Debug)]
struct SharedTls(Arc<RustlsConnector>);

impl<In: Transport> Connector<In> for SharedTls {
    type Out = <RustlsConnector as Connector<In>>::Out;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        self.0.connect(details, chained)
    }
}

fn transport(e: ureq::Error) -> HostError {
    match e {
        ureq::Error::Timeout(_) => HostError::Timeout,
        ureq::Error::BodyExceedsLimit(n) => {
            HostError::TooLarge(format!("response body over {n} bytes"))
        }
        ureq::Error::Io(e) if e.kind() == std::io::ErrorKind::TimedOut => HostError::Timeout,
        other => HostError::Failed(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_hosts_become_capabilities() {
        let t = url_host("http://api.example.com:8080/x?y").unwrap();
        assert_eq!(
            t.needed,
            Capability::NetHttp(HostPattern::Name("api.example.com".into()))
        );
        assert_eq!((t.host.as_str(), t.port), ("api.example.com", 8080));
        let t = url_host("https://127.0.0.1/").unwrap();
        assert_eq!(t.needed.to_string(), "net:https:127.0.0.1");
        assert_eq!((t.host.as_str(), t.port), ("127.0.0.1", 443));
        // net:http covers an https URL; net:https does not cover http.
        let http: Capability = "net:http:127.0.0.1".parse().unwrap();
        let https: Capability = "net:https:127.0.0.1".parse().unwrap();
        assert!(http.subsumes(&t.needed) && https.subsumes(&t.needed));
        assert!(!https.subsumes(&url_host("http://127.0.0.1/").unwrap().needed));
        let t = url_host("http://[::1]/").unwrap();
        assert_eq!(t.needed.to_string(), "net:http:[::1]");
        assert_eq!((t.host.as_str(), t.port), ("::1", 80));
        let t = url_host("http://user:pw@Example.COM/").unwrap();
        assert_eq!(t.needed.to_string(), "net:http:example.com");
        assert_eq!(t.host, "example.com");
        for bad in [
            "ftp://example.com/",
            "file:///etc/passwd",
            "/relative",
            "http://*.x.com/",
            "example.com",
        ] {
            assert!(url_host(bad).is_err(), "{bad}");
        }
        let wildcard: Capability = "net:http:*.example.com".parse().unwrap();
        let api = url_host("http://api.example.com/").unwrap().needed;
        let apex = url_host("http://example.com/").unwrap().needed;
        assert!(wildcard.subsumes(&api));
        assert!(!wildcard.subsumes(&apex));
    }
}
