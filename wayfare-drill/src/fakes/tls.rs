//! TLS for the fakes: a rustls server configuration from a PEM certificate chain and its
//! PEM private key, so `examples/fake_gateway.rs` and `examples/fake_seller.rs` can serve
//! `https://` (`--tls-cert`, `--tls-key`) and tests can run partners behind a certificate
//! they made themselves. The ring provider is named explicitly, the one reqwest uses.

use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

/// A server configuration from PEM text: `cert_pem` holds the certificate chain, leaf
/// first; `key_pem` its private key (PKCS#8, PKCS#1 or SEC1).
pub fn server_config_from_pem(cert_pem: &[u8], key_pem: &[u8]) -> io::Result<ServerConfig> {
    let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    let certs = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("certificate PEM: {e}")))?;
    if certs.is_empty() {
        return Err(invalid("no certificate in the certificate PEM".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| invalid(format!("private key PEM: {e}")))?;
    ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| invalid(format!("certificate and key: {e}")))
}

/// [`server_config_from_pem`] of two files; errors name the file.
pub fn server_config(cert: &Path, key: &Path) -> io::Result<ServerConfig> {
    let read = |path: &Path| {
        std::fs::read(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
    };
    server_config_from_pem(&read(cert)?, &read(key)?).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("{} with {}: {e}", cert.display(), key.display()),
        )
    })
}
