//! TLS for remote channels. rattler's HTTP client is reqwest with rustls and no crypto provider
//! of its own (`rustls-no-provider`): the process uses ring, as kube and the S3 client do, so the
//! binary carries one TLS stack and one provider. Certificates are verified against the
//! system's trust store (`SSL_CERT_FILE` / `SSL_CERT_DIR` are honoured).

/// Installs ring as the process's default rustls crypto provider, unless one already is.
/// Called before any remote channel is touched; cheap and idempotent.
pub fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race to another thread installing one is fine: a provider is installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}
