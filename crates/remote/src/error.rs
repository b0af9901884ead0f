//! The one error type of the crate. No message carries a secret: errors from the storage library
//! pass through [`crate::s3::S3Remote`]'s scrubbing first.

use std::io;
use std::path::PathBuf;

/// What went wrong with a remote. Every message names the remote (and key) concerned and, where
/// there is one, the remedy.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteError {
    /// The `url` of a remote is not one lifeboat understands.
    #[error("remote url {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    /// A key that is not plain path segments (from a hostile listing, say).
    #[error("refusing the object key {key:?}: keys are plain path segments")]
    BadKey { key: String },
    /// The remote's settings do not make a usable client (a bad endpoint, no credentials).
    #[error("remote {remote}: {detail}")]
    Config { remote: String, detail: String },
    /// A credentials file that others may read, or that cannot be read or parsed.
    #[error("credentials file {path}: {detail}")]
    Credentials { path: PathBuf, detail: String },
    /// The store refused the credentials (403, InvalidAccessKeyId, SignatureDoesNotMatch).
    #[error("remote {remote} refused the credentials: {detail}; check the key id and secret")]
    Denied { remote: String, detail: String },
    /// The bucket (or the directory) is not there.
    #[error("remote {remote}: {detail}; create it first")]
    NoBucket { remote: String, detail: String },
    /// The store did not answer, or answered with an error that a retry may cure.
    #[error("remote {remote} is unavailable: {detail}")]
    Unavailable { remote: String, detail: String },
    /// Any other error from the store.
    #[error("remote {remote}: {detail}")]
    Store { remote: String, detail: String },
    /// Reading the local archive, or writing what was fetched, failed.
    #[error("{path}: {source}")]
    Local { path: PathBuf, source: io::Error },
    /// A copy does not match what was sent, or what the catalog says it holds.
    #[error("remote {remote}: {key} does not match: {detail}")]
    Mismatch { remote: String, key: String, detail: String },
    /// The local archive is not the one its catalog entry describes (it changed or rotted on
    /// disk): nothing is shipped, and the local backup itself needs a `lifeboat verify`.
    #[error("{path}: {detail}")]
    ArchiveChanged { path: PathBuf, detail: String },
    /// A copy could not be decrypted: not an age file, no identity for it, or altered.
    #[error("remote {remote}: cannot decrypt {key}: {detail}")]
    Decrypt { remote: String, key: String, detail: String },
    /// An `age1...` recipient or an identity file that does not parse.
    #[error("{0}")]
    Key(String),
    /// The upload was cancelled from outside.
    #[error("the upload of {key} to remote {remote} was cancelled")]
    Cancelled { remote: String, key: String },
}

impl RemoteError {
    /// Whether the copy on the remote is damaged (verify's exit 5), rather than unreachable.
    pub fn is_integrity(&self) -> bool {
        matches!(self, RemoteError::Mismatch { .. } | RemoteError::Decrypt { .. })
    }

    /// Whether the remote's settings or credentials are wrong (exit 2), rather than the remote
    /// being down for now.
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            RemoteError::BadUrl { .. }
                | RemoteError::Config { .. }
                | RemoteError::Credentials { .. }
                | RemoteError::Denied { .. }
                | RemoteError::NoBucket { .. }
                | RemoteError::Key(_)
        )
    }
}
