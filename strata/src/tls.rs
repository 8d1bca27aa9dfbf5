//! TLS settings from the config's files: the rustls configuration a port is served with.

use std::path::Path;
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use strata_shard::PeerTls;

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
    let chain = certificates(certificate_file, "security.tls_cert_file")?;
    let key = private_key(key_file)?;
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

/// The peer port's configurations (`[security] peer_tls`): the node's certificate presented
/// on both sides, and the peer's checked against `tls_ca_file`.
///
/// # Errors
///
/// As [`server_config`], and a CA file missing, unreadable or holding no certificate.
pub fn peer_config(security: &Security) -> Result<PeerTls, TlsError> {
    let certificate_file = required(&security.tls_cert_file, "security.tls_cert_file")?;
    let key_file = required(&security.tls_key_file, "security.tls_key_file")?;
    let authority_file = required(&security.tls_ca_file, "security.tls_ca_file")?;
    let chain = certificates(certificate_file, "security.tls_cert_file")?;
    let key = private_key(key_file)?;
    let mut roots = RootCertStore::empty();
    for certificate in certificates(authority_file, "security.tls_ca_file")? {
        roots.add(certificate).map_err(|error| {
            let file = authority_file.display();
            ("security.tls_ca_file", format!("not a CA certificate in {file}: {error}"))
        })?;
    }
    let roots = Arc::new(roots);
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), provider.clone())
            .build()
            .map_err(|error| ("security.tls_ca_file", error.to_string()))?;
    let mismatch = |error: rustls::Error| {
        ("security.tls_key_file", format!("does not fit the certificate: {error}"))
    };
    let server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|error| ("security.tls_cert_file", error.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(mismatch)?;
    let client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| ("security.tls_cert_file", error.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(mismatch)?;
    Ok(PeerTls { server: Arc::new(server), client: Arc::new(client) })
}

fn private_key(file: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(file).map_err(|error| {
        ("security.tls_key_file", format!("no private key in {}: {error}", file.display()))
    })
}

fn required<'a>(
    file: &'a Option<std::path::PathBuf>,
    key: &'static str,
) -> Result<&'a Path, TlsError> {
    file.as_deref().ok_or_else(|| (key, "must be set for a port served with TLS".to_string()))
}

fn certificates(file: &Path, key: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
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
