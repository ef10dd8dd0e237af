//! TLS as a client (to a directory, to a database): rustls with ring, trusting exactly the
//! certificates an operator names, or the web's roots.

/// The certificates of `pem` (`source` names it in errors) as trust roots.
pub fn roots_from_pem(pem: &[u8], source: &str) -> Result<rustls::RootCertStore, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| format!("{source} is not PEM: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("a certificate in {source} is not usable: {e}"))?;
    }
    Ok(roots)
}

/// The web's roots (webpki-roots).
pub fn web_roots() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    roots
}

/// A client configuration trusting `roots`, with no client certificate.
pub fn client_config(roots: rustls::RootCertStore) -> Result<rustls::ClientConfig, String> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
