//! Serving one listener: accept (at most `max_connections` at once), TLS when configured,
//! HTTP/1 with a deadline on reading each request's headers, graceful shutdown.
//!
//! `axum::serve` offers none of the limits, so connections are driven by hyper directly; the
//! router is the same.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use super::listen::TlsFiles;

/// How long a client may take, and how many may be connected to one listener.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// From a connection's first byte (or the end of the previous request) to the end of a
    /// request's headers, the TLS handshake included.
    pub header_read_timeout: Duration,
    /// Connections served at once by one listener; more wait in the kernel's backlog.
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 10_000,
        }
    }
}

/// Why a listener's TLS files were refused.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: std::path::PathBuf },
    #[error("{path} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoKey { path: std::path::PathBuf },
    #[error("the certificate and key do not make a TLS server: {0}")]
    Config(#[from] rustls::Error),
}

/// A TLS acceptor from PEM files: the certificate chain (leaf first) and its private key.
pub fn tls_acceptor(files: &TlsFiles) -> Result<TlsAcceptor, TlsError> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_path_buf(),
            source,
        })
    };
    let cert_pem = read(&files.cert)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: files.cert.clone(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(&read(&files.key)?).map_err(|_| TlsError::NoKey {
        path: files.key.clone(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serve `app` on `listener` until `stop` turns true; then stop accepting, let requests in
/// flight finish and close every connection.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    limits: ConnectionLimits,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        // A slot first: at the cap, connections wait in the backlog rather than being
        // accepted and starved.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = stopped(&mut stop) => break,
        };
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, a connection reset before accept: the
                    // listener itself is fine. Pause briefly rather than spin.
                    tracing::warn!("accepting a connection failed: {error}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        while connections.try_join_next().is_some() {}
        connections.spawn(serve_connection(
            stream,
            remote,
            tls.clone(),
            app.clone(),
            limits.header_read_timeout,
            stop.clone(),
            slot,
        ));
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

async fn serve_connection(
    stream: TcpStream,
    remote: SocketAddr,
    tls: Option<TlsAcceptor>,
    app: Router,
    header_read_timeout: Duration,
    stop: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    match tls {
        None => drive(stream, remote, app, header_read_timeout, stop).await,
        Some(acceptor) => {
            match tokio::time::timeout(header_read_timeout, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => drive(stream, remote, app, header_read_timeout, stop).await,
                Ok(Err(error)) => tracing::debug!(%remote, "TLS handshake failed: {error}"),
                Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
            }
        }
    }
}

/// HTTP/1 on one connection, each request tagged with the client's address.
async fn drive<I>(
    io: I,
    remote: SocketAddr,
    app: Router,
    header_read_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(remote));
        tower::ServiceExt::oneshot(app.clone(), request)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(%remote, "connection ended: {error}");
            }
        }
        () = stopped(&mut stop) => {
            // Finish the request in flight, if any, then close.
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

/// Completes once `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}
