//! Callbacks of finished submissions: a POST of the submission's JSON to
//! its `callback_url`, signed with HMAC-SHA256 under the service's key
//! (`STATE/serve/callback.key`), retried with exponential backoff and full
//! jitter.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// POSTs at most, the first included.
pub const MAX_ATTEMPTS: u32 = 5;
/// The backoff before the second attempt is drawn from 0 … `BASE`, then
/// doubles.
pub const BASE: Duration = Duration::from_millis(500);
/// Longest backoff.
pub const CAP: Duration = Duration::from_secs(8);
/// Longest one attempt may take (connect, send, answer).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest `callback_url`.
pub const MAX_URL_BYTES: usize = 2048;

/// The header carrying `sha256=HEX`.
pub const SIGNATURE_HEADER: &str = "X-Warden-Signature";
/// The header carrying the submission's id.
pub const SUBMISSION_HEADER: &str = "X-Warden-Submission";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("callback key {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("callback key {0}: not 64 hex digits")]
    Malformed(PathBuf),
}

/// The service's signing key: 32 random bytes, kept as 64 hex digits in
/// `STATE/serve/callback.key` (0600), made on first use.
pub struct Key(zeroize::Zeroizing<Vec<u8>>);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(…)")
    }
}

/// Where the key of `state` is.
pub fn key_path(state: &Path) -> PathBuf {
    state.join("serve").join("callback.key")
}

impl Key {
    /// The key of `state`, made (atomically: two services racing agree on
    /// one) when there is none.
    pub fn load_or_create(state: &Path) -> Result<Key, KeyError> {
        let path = key_path(state);
        if let Some(dir) = path.parent() {
            crate::store::private_dirs(dir).map_err(|e| match e {
                crate::store::StoreError::Io(p, e) => KeyError::Io(p, e),
                other => KeyError::Io(dir.to_path_buf(), std::io::Error::other(other)),
            })?;
        }
        let err = |e| KeyError::Io(path.clone(), e);
        match Key::read(&path) {
            Ok(k) => return Ok(k),
            Err(KeyError::Io(_, e)) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut bytes = zeroize::Zeroizing::new(vec![0u8; 32]);
        rustix::rand::getrandom(&mut bytes[..], rustix::rand::GetRandomFlags::empty())
            .map_err(|e| err(e.into()))?;
        let text = zeroize::Zeroizing::new(hex::encode(&bytes[..]));
        // Written under a temporary name and linked into place: no reader
        // sees a half-written key, and a key already there wins.
        let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| {
                f.write_all(text.as_bytes())?;
                f.write_all(b"\n")?;
                f.sync_all()
            })
            .map_err(err)?;
        let linked = std::fs::hard_link(&tmp, &path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(Key(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Key::read(&path),
            Err(e) => Err(err(e)),
        }
    }

    fn read(path: &Path) -> Result<Key, KeyError> {
        let text = zeroize::Zeroizing::new(
            std::fs::read_to_string(path).map_err(|e| KeyError::Io(path.to_path_buf(), e))?,
        );
        let bytes = hex::decode(text.trim()).map_err(|_| KeyError::Malformed(path.into()))?;
        if bytes.len() != 32 {
            return Err(KeyError::Malformed(path.into()));
        }
        Ok(Key(zeroize::Zeroizing::new(bytes)))
    }

    /// `sha256=HEX`: HMAC-SHA256 of `body` under this key.
    pub fn sign(&self, body: &[u8]) -> String {
        // HMAC takes a key of any length: this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }
}

/// A `callback_url` the service will POST to: `http` or `https`, with a
/// host; else the reason (the 400's message).
pub fn check_url(url: &str) -> Result<(), String> {
    if url.len() > MAX_URL_BYTES {
        return Err(format!("longer than {MAX_URL_BYTES} bytes"));
    }
    let uri: axum::http::Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => return Err(format!("scheme {other:?}: only http and https are allowed")),
        None => return Err(format!("{url:?} is not an absolute http(s) URL")),
    }
    match uri.host() {
        Some(h) if !h.is_empty() => {
            // An address literal that no callback may ever reach is
            // refused now rather than at delivery.
            let literal = h.trim_start_matches('[').trim_end_matches(']');
            if let Ok(ip) = literal.parse::<std::net::IpAddr>() {
                if let Err(why) = may_post_to(ip, true) {
                    return Err(format!("host {ip} is {why}: callbacks never go there"));
                }
            }
        }
        _ => return Err(format!("{url:?} has no host")),
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err("credentials in the URL are not accepted".to_string());
    }
    Ok(())
}

/// The wait before attempt `n` (0-based; none before the first): full
/// jitter, a random time in 0 … min(CAP, BASE·2^(n-1)).
pub fn backoff(n: u32) -> Duration {
    if n == 0 {
        return Duration::ZERO;
    }
    let ceiling = BASE
        .saturating_mul(1u32 << (n - 1).min(16))
        .min(CAP)
        .as_millis();
    let mut bytes = [0u8; 8];
    let random = rustix::rand::getrandom(&mut bytes[..], rustix::rand::GetRandomFlags::empty())
        .map_or(u64::MAX / 2, |_| u64::from_le_bytes(bytes));
    let ceiling = u64::try_from(ceiling).unwrap_or(u64::MAX);
    Duration::from_millis(random % (ceiling + 1))
}

/// Whether a callback may be POSTed to `ip`: public addresses, and with
/// `allow_private` private and loopback ones; never link-local, cloud
/// metadata or unroutable ones (a tenant's callback must not become a
/// request to the host's metadata service).
pub fn may_post_to(ip: std::net::IpAddr, allow_private: bool) -> Result<(), &'static str> {
    use warden_egress::AddrClass as C;
    match warden_egress::classify(ip) {
        C::Public => Ok(()),
        C::Private | C::Loopback if allow_private => Ok(()),
        C::Private => Err("a private address (see --callback-allow-private)"),
        C::Loopback => Err("a loopback address (see --callback-allow-private)"),
        C::LinkLocal => Err("a link-local address"),
        C::Metadata => Err("a cloud metadata address"),
        C::Unroutable => Err("an unroutable or reserved address"),
    }
}

/// ureq's resolver, keeping only the addresses a callback may go to: the
/// connection is made to exactly the addresses checked, so a name that
/// resolves differently a moment later (DNS rebinding) gains nothing.
#[derive(Debug)]
struct CheckedResolver {
    allow_private: bool,
}

impl ureq::unversioned::resolver::Resolver for CheckedResolver {
    fn resolve(
        &self,
        uri: &axum::http::Uri,
        config: &ureq::config::Config,
        timeout: ureq::unversioned::transport::NextTimeout,
    ) -> Result<ureq::unversioned::resolver::ResolvedSocketAddrs, ureq::Error> {
        let all = ureq::unversioned::resolver::DefaultResolver::default()
            .resolve(uri, config, timeout)?;
        let mut kept = self.empty();
        let mut refused = None;
        for addr in all.iter() {
            match may_post_to(addr.ip(), self.allow_private) {
                Ok(()) => kept.push(*addr),
                Err(why) => refused = Some((addr.ip(), why)),
            }
        }
        match (kept.is_empty(), refused) {
            (true, Some((ip, why))) => Err(ureq::Error::Io(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!(
                    "callback host {} is {ip}, {why}: not posted to",
                    uri.host().unwrap_or("?")
                ),
            ))),
            (true, None) => Err(ureq::Error::HostNotFound),
            _ => Ok(kept),
        }
    }
}

/// One POST of `body` to `url`, blocking (at most [`ATTEMPT_TIMEOUT`]).
/// `Ok` on a 2xx answer; else what went wrong. No redirect is followed
/// and no proxy of the environment is used; the host's addresses are
/// checked by [`may_post_to`].
pub fn post(
    url: &str,
    id: &str,
    signature: &str,
    body: &[u8],
    allow_private: bool,
) -> Result<(), String> {
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(ATTEMPT_TIMEOUT))
        .max_redirects(0)
        .proxy(None)
        .user_agent("warden-serve")
        .build();
    let agent = ureq::Agent::with_parts(
        config,
        ureq::unversioned::transport::DefaultConnector::new(),
        CheckedResolver { allow_private },
    );
    let response = agent
        .post(url)
        .header("Content-Type", "application/json")
        .header(SIGNATURE_HEADER, signature)
        .header(SUBMISSION_HEADER, id)
        .send(body)
        .map_err(|e| e.to_string())?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("answered {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_made_once_0600_and_signs_as_hmac_sha256() {
        use std::os::unix::fs::PermissionsExt;
        let state = tempfile::tempdir().unwrap();
        let a = Key::load_or_create(state.path()).unwrap();
        let b = Key::load_or_create(state.path()).unwrap();
        assert_eq!(a.0, b.0);
        let meta = std::fs::metadata(key_path(state.path())).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        // RFC 4231 test case 2.
        let k = Key(zeroize::Zeroizing::new(b"Jefe".to_vec()));
        assert_eq!(
            k.sign(b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn only_http_and_https_urls_with_a_host() {
        for good in ["http://127.0.0.1:9/x", "https://hooks.example.com/a?b=c"] {
            assert!(check_url(good).is_ok(), "{good}");
        }
        for bad in [
            "ftp://example.com/",
            "file:///etc/passwd",
            "example.com/x",
            "/relative",
            "http://user:pw@example.com/",
            "",
            "http://169.254.169.254/latest/meta-data/",
            "http://[fd00:ec2::254]/",
            "http://[fe80::1]/",
            "http://0.0.0.0:80/",
        ] {
            assert!(check_url(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn callbacks_go_to_public_addresses_and_private_ones_only_when_allowed() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        assert!(may_post_to(ip("8.8.8.8"), false).is_ok());
        for private in [
            "10.0.0.1",
            "127.0.0.1",
            "::1",
            "fd12::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(may_post_to(ip(private), false).is_err(), "{private}");
            assert!(may_post_to(ip(private), true).is_ok(), "{private}");
        }
        for never in [
            "169.254.169.254",
            "fd00:ec2::254",
            "fe80::1",
            "0.0.0.0",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(may_post_to(ip(never), true).is_err(), "{never}");
        }
    }

    /// A callback to a loopback receiver is not delivered without
    /// `--callback-allow-private`, and is with it.
    #[test]
    fn a_loopback_receiver_is_posted_to_only_when_private_addresses_are_allowed() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!(
            "http://localhost:{}/hook",
            listener.local_addr().unwrap().port()
        );
        let server = std::thread::spawn(move || {
            let (mut c, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf);
            let _ = c.write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n");
        });
        let refused = post(&url, "id", "sha256=00", b"{}", false).unwrap_err();
        assert!(refused.contains("loopback"), "{refused}");
        post(&url, "id", "sha256=00", b"{}", true).unwrap();
        server.join().unwrap();
    }

    #[test]
    fn backoff_is_jittered_under_a_doubling_cap() {
        assert_eq!(backoff(0), Duration::ZERO);
        for n in 1..10 {
            let ceiling = BASE.saturating_mul(1 << (n - 1)).min(CAP);
            for _ in 0..20 {
                assert!(backoff(n) <= ceiling);
            }
        }
    }
}
