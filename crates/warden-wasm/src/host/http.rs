//! `http`: outgoing requests to hosts granted by `net:http:HOST`.
//!
//! Only `http` and `https` URLs; the URL's host must be covered by a
//! grant (`HostPattern::covers`: an exact name, `*.suffix`, an IP literal
//! granted as such, or `*`). Redirects are never followed (a 3xx is
//! returned to the guest, which may ask again — and be checked again); no
//! proxy is taken from the environment; each call has a deadline of at
//! most [`HttpConfig::timeout`] that never passes the run's own; request
//! and response bodies are capped.

use std::time::{Duration, Instant};

use ureq::http;
use warden_policy::Capability;

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
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            timeout: Duration::from_secs(10),
            max_response_bytes: 1 << 20,
            max_request_bytes: 1 << 20,
            max_requests_per_run: 100,
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

/// The client of a backend: redirects off, no proxy, status codes as
/// responses (not errors).
pub(crate) fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .max_redirects(0)
        .proxy(None)
        .http_status_as_error(false)
        .user_agent("warden")
        .max_idle_connections(16)
        .max_idle_connections_per_host(2)
        .build()
        .new_agent()
}

/// The URL parsed, and the capability its host needs.
fn url_host(url: &str) -> Result<(http::Uri, Capability), HostError> {
    if url.len() > MAX_URL_BYTES {
        return Err(HostError::TooLarge(format!(
            "URL of {} bytes (at most {MAX_URL_BYTES})",
            url.len()
        )));
    }
    let uri: http::Uri = url
        .parse()
        .map_err(|e| HostError::Invalid(format!("URL {url:?}: {e}")))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err(HostError::Invalid("only http:// and https:// URLs".into())),
    }
    let host = uri
        .host()
        .filter(|h| !h.is_empty() && !h.contains('*'))
        .ok_or_else(|| HostError::Invalid(format!("URL {url:?} has no host")))?;
    let needed: Capability = format!("net:http:{host}")
        .parse()
        .map_err(|_| HostError::Invalid(format!("URL host {host:?} is not a valid host")))?;
    Ok((uri, needed))
}

/// Checks the grant and the request, then sends it on a blocking thread,
/// bounded by the per-call deadline.
pub(crate) async fn send(
    state: &mut HostState,
    function: &'static str,
    req: Request,
) -> Result<Response, HostError> {
    let (uri, needed) = url_host(&req.url)?;
    state.require(function, needed)?;
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
    let agent = shared.http_agent.clone();
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
    let mut builder = http::Request::builder().method(method.as_str()).uri(uri);
    for (name, value) in &req.headers {
        if FORBIDDEN_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(HostError::Invalid(format!(
                "header {name:?} may not be set"
            )));
        }
        builder = builder.header(name.as_str(), value.as_str());
    }
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
    let call = wasmtime_wasi::runtime::spawn_blocking(move || {
        // The blocking pool may start this late (when it is busy): never
        // send a request after the guest has stopped waiting for it.
        let left = call_deadline.map_or(timeout, |d| d.saturating_duration_since(Instant::now()));
        if left.is_zero() {
            return Err(HostError::Timeout);
        }
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
    });
    // The client's own timeout bounds the blocking thread; this one
    // bounds the guest's wait even if the client overstays.
    match tokio::time::timeout(timeout.saturating_add(Duration::from_millis(50)), call).await {
        Ok(result) => result,
        Err(_) => Err(HostError::Timeout),
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
    use warden_policy::HostPattern;

    #[test]
    fn url_hosts_become_capabilities() {
        let (_, c) = url_host("http://api.example.com:8080/x?y").unwrap();
        assert_eq!(
            c,
            Capability::NetHttp(HostPattern::Name("api.example.com".into()))
        );
        let (_, c) = url_host("https://127.0.0.1/").unwrap();
        assert_eq!(c.to_string(), "net:http:127.0.0.1");
        let (_, c) = url_host("http://[::1]:80/").unwrap();
        assert_eq!(c.to_string(), "net:http:[::1]");
        let (_, c) = url_host("http://user:pw@Example.COM/").unwrap();
        assert_eq!(c.to_string(), "net:http:example.com");
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
        let (_, api) = url_host("http://api.example.com/").unwrap();
        let (_, apex) = url_host("http://example.com/").unwrap();
        assert!(wildcard.subsumes(&api));
        assert!(!wildcard.subsumes(&apex));
    }
}
