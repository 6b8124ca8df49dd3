//! HTTPS: `--tls-cert FILE --tls-key FILE` (PEM). The certificate and key
//! are loaded (and checked to match) at start, before the service listens;
//! each accepted TCP connection then does its TLS handshake in a task of
//! its own, so that a slow or failing client (plain HTTP sent to the TLS
//! port, garbage, a handshake never finished) holds up no other connection
//! and is dropped with a debug line and a count in
//! `warden_tls_handshake_failures_total`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// Longest a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes under way at once; a connection past that is closed at once
/// (a flood of connections that never finish their handshake must not
/// grow the service's memory without bound).
const MAX_HANDSHAKES: usize = 1024;

/// Finished handshakes waiting for the server to take them.
const READY_QUEUE: usize = 64;

/// Why the certificate or key cannot be used; each names its file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("--tls-cert {path}: cannot read")]
    ReadCert {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--tls-key {path}: cannot read")]
    ReadKey {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--tls-cert {path}: not a PEM certificate file: {why}")]
    BadCert { path: PathBuf, why: String },
    #[error("--tls-key {path}: not a PEM private key file: {why}")]
    BadKey { path: PathBuf, why: String },
    #[error("--tls-key {key} cannot serve --tls-cert {cert}: {why}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        why: String,
    },
}

/// The server configuration for a PEM certificate chain (leaf first) and
/// its private key (PKCS#8, PKCS#1 or SEC1), on the ring provider rustls
/// is built with here. Offers HTTP/1.1 by ALPN.
pub fn load(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let cert_pem = std::fs::read(cert).map_err(|source| TlsError::ReadCert {
        path: cert.to_path_buf(),
        source,
    })?;
    let key_pem =
        zeroize::Zeroizing::new(std::fs::read(key).map_err(|source| TlsError::ReadKey {
            path: key.to_path_buf(),
            source,
        })?);
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadCert {
            path: cert.to_path_buf(),
            why: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::BadCert {
            path: cert.to_path_buf(),
            why: "no CERTIFICATE block in it".to_string(),
        });
    }
    let private_key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::BadKey {
        path: key.to_path_buf(),
        why: match e {
            rustls_pki_types::pem::Error::NoItemsFound => "no PRIVATE KEY block in it".to_string(),
            other => other.to_string(),
        },
    })?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Mismatch {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            why: e.to_string(),
        })?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(|e| TlsError::Mismatch {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            why: e.to_string(),
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A listener that hands the server connections whose TLS handshake is
/// done. Dropping it (as the server does when shutdown begins) stops the
/// accepting task: the TCP listener closes, so new connections are
/// refused, and handshakes under way are abandoned.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    accepting: JoinHandle<()>,
}

impl TlsListener {
    /// Starts accepting on `listener` (inside a tokio runtime).
    pub fn new(listener: TcpListener, config: Arc<ServerConfig>) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (sender, ready) = mpsc::channel(READY_QUEUE);
        let accepting = tokio::spawn(accept_loop(listener, TlsAcceptor::from(config), sender));
        Ok(TlsListener {
            ready,
            local,
            accepting,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accepting task ended (it does not, but for its abort):
            // no more connections.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Accepts TCP connections and does each one's handshake in a task of its
/// own (in a set that is dropped, aborting them, with this task).
async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let mut handshakes = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    if handshakes.len() >= MAX_HANDSHAKES {
                        tracing::warn!(%peer, "{MAX_HANDSHAKES} TLS handshakes under way: connection closed");
                        crate::metrics::tls_handshake_failure();
                        continue;
                    }
                    handshakes.spawn(handshake(acceptor.clone(), tcp, peer, ready.clone()));
                }
                Err(e) => {
                    // As axum's own listener: out of descriptors and the
                    // like pass; wait a little rather than spin.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = handshakes.join_next(), if !handshakes.is_empty() => {}
        }
    }
}

async fn handshake(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => {
            // Fails only once the server stopped taking connections.
            let _ = ready.send((tls, peer)).await;
        }
        Ok(Err(e)) => {
            tracing::debug!(%peer, "TLS handshake failed: {e}");
            crate::metrics::tls_handshake_failure();
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake not finished in {HANDSHAKE_TIMEOUT:?}");
            crate::metrics::tls_handshake_failure();
        }
    }
}
