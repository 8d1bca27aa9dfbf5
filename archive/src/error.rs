//! Errors of the archive: each names the object (or file) it is about.

use strata_wal::WalError;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// Shared storage refused or failed a request (after the client's own bounded retries).
    #[error("shared storage: {operation} {object}: {source}")]
    Store {
        operation: &'static str,
        object: String,
        #[source]
        source: object_store::Error,
    },
    /// An object the manifest lists is not in the archive.
    #[error("object {object} is missing from the archive")]
    Missing { object: String },
    /// An object does not match its manifest entry or does not validate.
    #[error("object {object} is corrupt: {reason}")]
    Corrupt { object: String, reason: String },
    /// The archive cannot give what was asked: no data, or a gap in the segments.
    #[error("archive incomplete: {reason}")]
    Incomplete { reason: String },
    /// A local file the uploader reads cannot be read.
    #[error("cannot read {path}: {reason}")]
    Local { path: String, reason: String },
    /// A manifest in the archive was written by a leader of a newer epoch than this node's: a
    /// newer leader archives now, and this node must not put back its older view.
    #[error(
        "{object} was written at epoch {stored_epoch}, newer than this node's epoch \
         {own_epoch}: another leader archives now, so this node stops writing it until restarted"
    )]
    Fenced {
        object: String,
        /// The partition whose manifest it is; `None` for the cluster manifest.
        partition: Option<u32>,
        stored_epoch: u64,
        own_epoch: u64,
    },
    /// Unusable settings.
    #[error("shared storage settings: {reason}")]
    Config { reason: String },
    #[error(transparent)]
    Wal(#[from] WalError),
}

impl ArchiveError {
    pub(crate) fn store(
        operation: &'static str,
        object: &impl ToString,
        source: object_store::Error,
    ) -> Self {
        match source {
            object_store::Error::NotFound { .. } => {
                ArchiveError::Missing { object: object.to_string() }
            }
            source => ArchiveError::Store { operation, object: object.to_string(), source },
        }
    }
}
