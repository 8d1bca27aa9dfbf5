//! Connecting to shared storage: S3-compatible servers (path-style requests, plain HTTP
//! allowed, for `MinIO`, Ceph RGW, Garage or AWS) or a local directory.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::{BackoffConfig, ClientOptions, RetryConfig};

use crate::error::ArchiveError;
use crate::Store;

/// Requests a store call makes before it gives up; the uploader then backs off on its own.
const REQUEST_RETRIES: usize = 2;
const REQUEST_RETRY_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// One request, a segment part included, must finish within this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Where the archive lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreLocation {
    /// A directory (shared by the nodes of one machine, or a mounted filesystem).
    Directory(PathBuf),
    /// An S3-compatible server.
    S3 {
        /// `http://host:port` or `https://host:port`.
        endpoint: String,
        bucket: String,
        access_key: String,
        secret_key: String,
    },
}

impl std::fmt::Display for StoreLocation {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreLocation::Directory(path) => write!(formatter, "directory {}", path.display()),
            StoreLocation::S3 { endpoint, bucket, .. } => {
                write!(formatter, "s3 {endpoint}/{bucket}")
            }
        }
    }
}

/// Opens the store. Nothing is requested yet: an unreachable server shows at the first call.
///
/// # Errors
///
/// [`ArchiveError::Config`] when the directory cannot be created or the S3 settings are
/// unusable.
pub fn connect(location: &StoreLocation) -> Result<Store, ArchiveError> {
    match location {
        StoreLocation::Directory(path) => {
            std::fs::create_dir_all(path).map_err(|error| ArchiveError::Config {
                reason: format!("cannot create {}: {error}", path.display()),
            })?;
            let store = LocalFileSystem::new_with_prefix(path).map_err(|error| {
                ArchiveError::Config { reason: format!("cannot use {}: {error}", path.display()) }
            })?;
            Ok(Arc::new(store))
        }
        StoreLocation::S3 { endpoint, bucket, access_key, secret_key } => {
            let retry = RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: REQUEST_RETRIES,
                retry_timeout: REQUEST_RETRY_TIMEOUT,
            };
            let client = ClientOptions::new()
                .with_connect_timeout(CONNECT_TIMEOUT)
                .with_timeout(REQUEST_TIMEOUT)
                .with_allow_http(true);
            let store = AmazonS3Builder::new()
                .with_endpoint(endpoint)
                .with_bucket_name(bucket)
                .with_access_key_id(access_key)
                .with_secret_access_key(secret_key)
                .with_region("us-east-1")
                .with_allow_http(true)
                .with_virtual_hosted_style_request(false)
                // No SHA-256 of every payload for the signature: it would cost the node more CPU
                // than the upload itself. Every object's CRC32C is in its manifest and checked
                // on every read.
                .with_unsigned_payload(true)
                .with_retry(retry)
                .with_client_options(client)
                .build()
                .map_err(|error| ArchiveError::Config { reason: error.to_string() })?;
            Ok(Arc::new(store))
        }
    }
}
