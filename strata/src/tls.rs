//! TLS settings from the config's files: the rustls configuration a port is served with.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::Security;

/// A bad TLS setting: the key it belongs to, and what is wrong.
pub type TlsError = (&'static str, String);

/// The server configuration of `[security] tls_cert_file` and `tls_key_file`.
///
/// # Errors
///
/// A file missing, unreadable or holding no certificate or key, or a key that does not match.
pub fn server_config(security: &Security) -> Result<Arc<ServerConfig>, TlsError> {
    let certificate_file = required(&security.tls_cert_file, "security.tls_cert_file")?;
    let key_file = required(&security.tls_key_file, "security.tls_key_file")?;
    let chain = certificates(certificate_file)?;
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|error| {
        ("security.tls_key_file", format!("no private key in {}: {error}", key_file.display()))
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| ("security.tls_cert_file", error.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|error| {
            ("security.tls_key_file", format!("does not fit the certificate: {error}"))
        })?;
    Ok(Arc::new(config))
}

fn required<'a>(
    file: &'a Option<std::path::PathBuf>,
    key: &'static str,
) -> Result<&'a Path, TlsError> {
    file.as_deref().ok_or_else(|| (key, "must be set for a port served with TLS".to_string()))
}

fn certificates(file: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let key = "security.tls_cert_file";
    let unreadable = |error: rustls_pki_types::pem::Error| {
        (key, format!("cannot read certificates from {}: {error}", file.display()))
    };
    let chain = CertificateDer::pem_file_iter(file)
        .map_err(unreadable)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(unreadable)?;
    if chain.is_empty() {
        return Err((key, format!("no certificate in {}", file.display())));
    }
    Ok(chain)
}
