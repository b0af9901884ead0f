//! Off-host copies of lifeboat archives: a remote is an S3-compatible bucket (AWS S3, Backblaze
//! B2, Cloudflare R2, Garage, MinIO, Ceph, ...) or a directory on another disk, and a copy is an
//! archive streamed there, encrypted on the way out with age when the remote asks for it, and
//! checked against what was sent.
//!
//! The crate does the storage and nothing else: when to ship, what the journal and catalog say
//! about a copy, and recovery are the cli's and the machine's (ARCHITECTURE.md). Every operation
//! here is idempotent or says how to undo it, so the cli can journal an intent, carry it out and
//! redo it after a crash:
//!
//! - [`Remote::begin_upload`] opens a multipart upload and returns its id (journal it: it is what
//!   [`Remote::abort_upload`] needs after a crash);
//! - [`Remote::upload`] streams the file's parts into it with bounded memory, hashing the bytes
//!   stored, and completes it; the object's size and metadata are then read back and compared;
//! - [`Remote::fetch`] downloads, hashes, decrypts and hashes again, for verify and restore;
//! - [`Remote::delete`] and [`Remote::abort_upload`] tolerate what is already gone;
//! - [`Remote::abort_uploads_of`] aborts every open upload of a key, ids unknown: what recovery
//!   does for an upload the store may have opened before the journal recorded its id.
//!
//! Credentials come in a [`Credentials`], whose secret never appears in a `Debug`, `Display` or
//! error message of this crate (errors from the storage library are scrubbed of it too).

mod crypt;
mod dir;
mod error;
mod location;
mod s3;
mod transfer;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

pub use crypt::{Encryption, Identities, generate_identity};
pub use error::RemoteError;
pub use location::Location;
pub use s3::{Credentials, Secret};

/// The result type of this crate.
pub type Result<T, E = RemoteError> = std::result::Result<T, E>;

/// The metadata lifeboat stores with every copy (S3 user metadata `x-amz-meta-lifeboat-*`; a
/// directory remote keeps it in a `.meta` file beside the copy). It describes the archive, not the
/// stored bytes: those may be encrypted.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CopyMeta {
    /// The catalog id of the backup on the host that made it.
    pub backup_id: u64,
    /// The sha256 of the archive (the plaintext), as its catalog entry and sidecar record it.
    pub archive_sha256: String,
    /// The archive's size in bytes.
    pub archive_bytes: u64,
    /// `age` when the copy is encrypted, `none` otherwise.
    pub encryption: String,
}

/// What an object on a remote is, as listing or a HEAD request tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Its key, relative to the remote's prefix.
    pub key: String,
    /// Its size in bytes, as stored.
    pub size: u64,
    /// lifeboat's metadata, when the object carries it (not in listings: ask [`Remote::stat`]).
    pub meta: Option<CopyMeta>,
}

/// A copy that [`Remote::upload`] completed and read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCopy {
    pub key: String,
    /// Bytes stored (the age file when encrypted).
    pub stored_bytes: u64,
    /// sha256 of the bytes stored, computed as they were sent.
    pub stored_sha256: String,
    /// Parts the upload took.
    pub parts: usize,
}

/// What [`Remote::fetch`] read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub stored_bytes: u64,
    pub stored_sha256: String,
    /// The archive's bytes and sha256 after decryption (the same as stored when unencrypted).
    pub archive_bytes: u64,
    pub archive_sha256: String,
}

/// One archive to ship: the file, what its catalog entry says of it, and how to store and send it.
#[derive(Debug, Clone, Copy)]
pub struct Shipment<'a> {
    pub source: &'a Path,
    pub meta: &'a CopyMeta,
    pub encryption: &'a Encryption,
    pub options: &'a UploadOptions,
}

/// How an upload streams.
#[derive(Debug, Clone)]
pub struct UploadOptions {
    /// Bytes per part (at least 5 MiB, S3's minimum for all but the last part). Memory is bounded
    /// by about `part_size * (concurrency + 2)`.
    pub part_size: usize,
    /// Parts in flight at once.
    pub concurrency: usize,
    /// Set from outside (a signal) to stop the upload at the next part.
    pub cancel: Option<Arc<AtomicBool>>,
}

impl Default for UploadOptions {
    fn default() -> Self {
        UploadOptions { part_size: DEFAULT_PART_SIZE, concurrency: 2, cancel: None }
    }
}

/// 8 MiB parts: a 1 GB archive in 120 requests, 10,000 parts (S3's limit) reach 80 GB; larger
/// archives get larger parts ([`transfer::part_size_for`]).
pub const DEFAULT_PART_SIZE: usize = 8 << 20;

/// How a remote is reached: what `[[remote]]` in `lifeboat.toml` says, resolved.
#[derive(Debug, Clone)]
pub struct RemoteSpec {
    /// The remote's name in the configuration (used in messages).
    pub name: String,
    pub location: Location,
    /// The S3 endpoint (`http://127.0.0.1:3900`); `None` for AWS.
    pub endpoint: Option<String>,
    /// The S3 region (`garage`, `us-east-1`, ...).
    pub region: Option<String>,
    /// Path-style requests (`endpoint/bucket/key`), what most self-hosted stores want.
    pub path_style: bool,
    /// Needed for `s3://` remotes.
    pub credentials: Option<Credentials>,
    /// Per-request timeout; a request that fails is retried (with backoff) until `retry_for`.
    pub request_timeout: Duration,
    pub retry_for: Duration,
}

impl RemoteSpec {
    /// A spec with the defaults for everything but name and location.
    pub fn new(name: impl Into<String>, location: Location) -> RemoteSpec {
        RemoteSpec {
            name: name.into(),
            location,
            endpoint: None,
            region: None,
            path_style: false,
            credentials: None,
            request_timeout: Duration::from_secs(60),
            retry_for: Duration::from_secs(30),
        }
    }
}

/// A remote, opened: an S3 bucket (and prefix) or a directory.
#[derive(Debug)]
pub struct Remote {
    name: String,
    backend: Backend,
}

#[derive(Debug)]
enum Backend {
    S3(Box<s3::S3Remote>),
    Dir(dir::DirRemote),
}

/// The id of a multipart upload in progress, as the store gave it (a directory remote's is the
/// name of its partial file).
pub type UploadId = String;

impl Remote {
    /// Opens a remote (no request is made: [`Remote::check`] makes one).
    pub fn open(spec: &RemoteSpec) -> Result<Remote> {
        let backend = match &spec.location {
            Location::S3 { .. } => Backend::S3(Box::new(s3::S3Remote::open(spec)?)),
            Location::Dir { path } => Backend::Dir(dir::DirRemote::open(&spec.name, path)?),
        };
        Ok(Remote { name: spec.name.clone(), backend })
    }

    /// The remote's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// One cheap request that fails as an upload would: wrong credentials, a missing bucket, an
    /// endpoint that does not answer, a directory that is not there or not writable.
    pub async fn check(&self) -> Result<()> {
        match &self.backend {
            Backend::S3(r) => r.check().await,
            Backend::Dir(r) => r.check(),
        }
    }

    /// Opens an upload of `key` carrying `meta`. Journal the id before sending anything: after a
    /// crash it is what [`Remote::abort_upload`] needs.
    pub async fn begin_upload(&self, key: &str, meta: &CopyMeta) -> Result<UploadId> {
        location::check_key(key)?;
        match &self.backend {
            Backend::S3(r) => r.begin_upload(key, meta).await,
            Backend::Dir(r) => r.begin_upload(key, meta),
        }
    }

    /// Streams the shipment's file (encrypted when it says so) into the upload `id`, completes it
    /// and reads the object's size and metadata back. Never leaves a complete object that does not
    /// match: a mismatch deletes it and fails.
    pub async fn upload(&self, key: &str, id: &UploadId, shipment: &Shipment<'_>) -> Result<StoredCopy> {
        location::check_key(key)?;
        let meta = shipment.meta;
        let copy = match &self.backend {
            Backend::S3(r) => r.upload(key, id, shipment).await?,
            Backend::Dir(r) => r.upload(key, id, shipment).await?,
        };
        let stat = self.stat(key).await?;
        let fits = stat.as_ref().is_some_and(|info| info.size == copy.stored_bytes && info.meta.as_ref() == Some(meta));
        if !fits {
            let _ = self.delete(key).await;
            return Err(RemoteError::Mismatch {
                remote: self.name.clone(),
                key: key.into(),
                detail: match stat {
                    None => "the object is not there after its upload completed".into(),
                    Some(info) => format!(
                        "the store holds {} bytes with metadata {:?}; {} bytes with {:?} were sent",
                        info.size, info.meta, copy.stored_bytes, meta
                    ),
                },
            });
        }
        Ok(copy)
    }

    /// Aborts an upload in progress; an upload already completed or aborted is left as it is.
    pub async fn abort_upload(&self, key: &str, id: &UploadId) -> Result<()> {
        location::check_key(key)?;
        match &self.backend {
            Backend::S3(r) => r.abort_upload(key, id).await,
            Backend::Dir(r) => r.abort_upload(key, id),
        }
    }

    /// Aborts every upload of `key` still open, whatever its id, and returns how many there were:
    /// what recovery does when a crash may have come between the store opening an upload (in
    /// [`Remote::begin_upload`]) and the journal recording its id, so that no upload is left
    /// open. Only `key` itself, relative to the remote's prefix like every key: not the longer
    /// keys it is a prefix of. A completed copy of `key` is left as it is. Idempotent: a second
    /// call finds nothing and returns 0.
    ///
    /// On S3 it lists the bucket's open uploads under the key (ListMultipartUploads, every page)
    /// and aborts those of exactly that key. On a directory it removes `KEY.partial` (and the
    /// metadata of a copy that never got renamed into place: `KEY.meta.partial`, or `KEY.meta`
    /// when there is no `KEY`), and returns 1 when `KEY.partial` was there, 0 otherwise.
    ///
    /// An upload of `key` begun while this runs may survive it: call it when nothing else uploads
    /// that key (under the project lock, in recovery).
    pub async fn abort_uploads_of(&self, key: &str) -> Result<usize> {
        location::check_key(key)?;
        match &self.backend {
            Backend::S3(r) => r.abort_uploads_of(key).await,
            Backend::Dir(r) => r.abort_uploads_of(key),
        }
    }

    /// The object's size and lifeboat metadata, or `None` when there is no such object.
    pub async fn stat(&self, key: &str) -> Result<Option<ObjectInfo>> {
        location::check_key(key)?;
        match &self.backend {
            Backend::S3(r) => r.stat(key).await,
            Backend::Dir(r) => r.stat(key),
        }
    }

    /// Every object under the remote's prefix (sizes, no metadata).
    pub async fn list(&self) -> Result<Vec<ObjectInfo>> {
        match &self.backend {
            Backend::S3(r) => r.list().await,
            Backend::Dir(r) => r.list(),
        }
    }

    /// Downloads `key` into `out`, hashing what is stored, decrypting it with `identities` when it
    /// is an age file, and hashing the result. An age file without identities, or with identities
    /// that do not open it, is an error; so is a plain file given identities (it was not
    /// encrypted, which the caller should know).
    pub async fn fetch<W: std::io::Write + Send + 'static>(
        &self,
        key: &str,
        out: W,
        identities: Option<Identities>,
    ) -> Result<(Fetched, W)> {
        location::check_key(key)?;
        let body = match &self.backend {
            Backend::S3(r) => r.get(key).await?,
            Backend::Dir(r) => r.get(key)?,
        };
        transfer::fetch(&self.name, key, body, out, identities).await
    }

    /// Deletes `key` (and, on a directory remote, its metadata); no such object is not an error.
    pub async fn delete(&self, key: &str) -> Result<()> {
        location::check_key(key)?;
        match &self.backend {
            Backend::S3(r) => r.delete(key).await,
            Backend::Dir(r) => r.delete(key),
        }
    }

    /// Stores a small object whole (a manifest), replacing what was there.
    pub async fn put_small(&self, key: &str, bytes: Vec<u8>) -> Result<()> {
        location::check_key(key)?;
        match &self.backend {
            Backend::S3(r) => r.put_small(key, bytes).await,
            Backend::Dir(r) => r.put_small(key, &bytes),
        }
    }

    /// Reads a small object whole, up to `limit` bytes (more is an error: a manifest is small).
    pub async fn get_small(&self, key: &str, limit: usize) -> Result<Option<Vec<u8>>> {
        location::check_key(key)?;
        match &self.backend {
            Backend::S3(r) => r.get_small(key, limit).await,
            Backend::Dir(r) => r.get_small(key, limit),
        }
    }
}
