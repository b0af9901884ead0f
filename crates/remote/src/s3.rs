//! An S3-compatible bucket through object_store's S3 client (SigV4 signing, retries with backoff,
//! multipart uploads by id), with lifeboat's metadata as `x-amz-meta-lifeboat-*`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder, Checksum};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as ObjectPath;
use object_store::{
    Attribute, AttributeValue, Attributes, BackoffConfig, ClientOptions, GetOptions, ObjectStore, ObjectStoreExt,
    PutMultipartOptions, PutPayload, RetryConfig,
};

use crate::crypt::check_private;
use crate::transfer::{self, PartSink};
use crate::{CopyMeta, Location, ObjectInfo, RemoteError, RemoteSpec, Result, Shipment, StoredCopy, UploadId};

/// A secret (an S3 secret key): never printed, by `Debug` or otherwise.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(secret: impl Into<String>) -> Secret {
        Secret(secret.into())
    }

    /// The secret itself, for the one place that signs with it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// An access key: its id (not secret: stores print it in errors) and its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: Secret,
}

impl Credentials {
    /// `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` from the environment, when both are set.
    pub fn from_env() -> Option<Credentials> {
        let id = std::env::var("AWS_ACCESS_KEY_ID").ok().filter(|v| !v.is_empty())?;
        let secret = std::env::var("AWS_SECRET_ACCESS_KEY").ok().filter(|v| !v.is_empty())?;
        Some(Credentials { access_key_id: id, secret_access_key: Secret(secret) })
    }

    /// A credentials file that only its owner may read: `KEY=value` lines (what systemd's
    /// `EnvironmentFile` reads) or an AWS shared-credentials file (`key = value` under
    /// `[default]`), with the keys `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` in either case.
    pub fn from_file(path: &Path) -> Result<Credentials> {
        let fail = |detail: String| RemoteError::Credentials { path: path.into(), detail };
        let file = std::fs::File::open(path).map_err(|e| fail(format!("cannot open it: {e}")))?;
        check_private(path, &file)?;
        let text = std::io::read_to_string(file).map_err(|e| fail(format!("cannot read it: {e}")))?;
        let (mut id, mut secret) = (None, None);
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') || line.starts_with('[') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(fail("a line is neither KEY=value nor a [section] (the line is not shown)".into()));
            };
            let value = value.trim().trim_matches('"').trim_matches('\'').to_string();
            match key.trim().to_ascii_lowercase().trim_start_matches("export ") {
                "aws_access_key_id" => id = Some(value),
                "aws_secret_access_key" => secret = Some(value),
                _ => {}
            }
        }
        match (id, secret) {
            (Some(id), Some(secret)) if !id.is_empty() && !secret.is_empty() => {
                Ok(Credentials { access_key_id: id, secret_access_key: Secret(secret) })
            }
            _ => Err(fail("it needs both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY".into())),
        }
    }
}

/// The metadata keys, as `x-amz-meta-<key>`.
const META_BACKUP_ID: &str = "lifeboat-backup-id";
const META_SHA256: &str = "lifeboat-archive-sha256";
const META_BYTES: &str = "lifeboat-archive-bytes";
const META_ENCRYPTION: &str = "lifeboat-encryption";

#[derive(Debug)]
pub(crate) struct S3Remote {
    name: String,
    store: Arc<AmazonS3>,
    bucket: String,
    prefix: String,
    /// Kept to scrub it from any message the client library makes.
    secret: Secret,
}

impl S3Remote {
    pub fn open(spec: &RemoteSpec) -> Result<S3Remote> {
        let Location::S3 { bucket, prefix } = &spec.location else { unreachable!("an S3 remote has an s3:// url") };
        let config = |detail: String| RemoteError::Config { remote: spec.name.clone(), detail };
        let credentials = spec.credentials.clone().ok_or_else(|| {
            config("no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or credentials_file".into())
        })?;
        // reqwest is built without a default TLS provider; ring is the one already in the tree
        // (ureq's). aws-lc-rs would add post-quantum key exchange, and a C build.
        #[allow(deprecated)]
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region(spec.region.clone().unwrap_or_else(|| "us-east-1".into()))
            .with_access_key_id(&credentials.access_key_id)
            .with_secret_access_key(credentials.secret_access_key.expose())
            .with_virtual_hosted_style_request(!spec.path_style)
            // x-amz-checksum-sha256 on every part (declared when the upload opens): the store
            // checks each part on receipt and keeps the checksums, beside SigV4's payload hash.
            .with_checksum_algorithm(Checksum::SHA256)
            .with_client_options(
                ClientOptions::new()
                    .with_timeout(spec.request_timeout)
                    .with_connect_timeout(Duration::from_secs(5))
                    .with_allow_http(spec.endpoint.as_deref().is_some_and(|e| e.starts_with("http://"))),
            )
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(200),
                    max_backoff: Duration::from_secs(5),
                    base: 2.0,
                },
                max_retries: 8,
                retry_timeout: spec.retry_for,
            });
        if let Some(endpoint) = &spec.endpoint {
            if !endpoint.starts_with("http://") && !endpoint.starts_with("https://") {
                return Err(config(format!("endpoint {endpoint:?} must start with http:// or https://")));
            }
            builder = builder.with_endpoint(endpoint.trim_end_matches('/'));
        }
        let store = builder.build().map_err(|e| config(scrub(&e.to_string(), &credentials.secret_access_key)))?;
        Ok(S3Remote {
            name: spec.name.clone(),
            store: Arc::new(store),
            bucket: bucket.clone(),
            prefix: prefix.clone(),
            secret: credentials.secret_access_key,
        })
    }

    fn path(&self, key: &str) -> Result<ObjectPath> {
        let full = if self.prefix.is_empty() { key.to_string() } else { format!("{}/{key}", self.prefix) };
        ObjectPath::parse(&full).map_err(|_| RemoteError::BadKey { key: key.into() })
    }

    /// Maps the client library's error to ours, by what the operator should do, scrubbed.
    fn error(&self, e: object_store::Error) -> RemoteError {
        let remote = self.name.clone();
        let detail = scrub(&e.to_string(), &self.secret);
        let has = |needle: &str| detail.contains(needle);
        match e {
            object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. } => {
                RemoteError::Denied { remote, detail }
            }
            _ if has("InvalidAccessKeyId")
                || has("SignatureDoesNotMatch")
                || has("AccessDenied")
                || has("403 Forbidden") =>
            {
                RemoteError::Denied { remote, detail }
            }
            _ if has("NoSuchBucket") => {
                RemoteError::NoBucket { remote, detail: format!("bucket {} does not exist ({detail})", self.bucket) }
            }
            _ if has("error sending request")
                || has("connect")
                || has("timed out")
                || has("Timeout")
                || has("Server error")
                || has("retries") =>
            {
                RemoteError::Unavailable { remote, detail }
            }
            _ => RemoteError::Store { remote, detail },
        }
    }

    pub async fn check(&self) -> Result<()> {
        // A listing, not a HEAD: only a body tells a missing bucket from a missing key.
        let prefix = (!self.prefix.is_empty()).then(|| ObjectPath::from(self.prefix.as_str()));
        let mut listing = self.store.list(prefix.as_ref());
        match listing.next().await {
            Some(Err(e)) => Err(self.error(e)),
            _ => Ok(()),
        }
    }

    pub async fn begin_upload(&self, key: &str, meta: &CopyMeta) -> Result<UploadId> {
        let path = self.path(key)?;
        let mut attributes = Attributes::new();
        for (name, value) in [
            (META_BACKUP_ID, meta.backup_id.to_string()),
            (META_SHA256, meta.archive_sha256.clone()),
            (META_BYTES, meta.archive_bytes.to_string()),
            (META_ENCRYPTION, meta.encryption.clone()),
        ] {
            attributes.insert(Attribute::Metadata(name.into()), AttributeValue::from(value));
        }
        let options = PutMultipartOptions { attributes, ..Default::default() };
        self.store.create_multipart_opts(&path, options).await.map_err(|e| self.error(e))
    }

    pub async fn upload(&self, key: &str, id: &UploadId, shipment: &Shipment<'_>) -> Result<StoredCopy> {
        let meta = shipment.meta;
        let path = self.path(key)?;
        let part_size = transfer::part_size_for(meta.archive_bytes, shipment.options.part_size);
        let sink = S3Parts { remote: self, path: &path, id };
        let sent = transfer::send_parts(&self.name, key, shipment, part_size, &sink).await?;
        let parts = sent.parts.len();
        self.store.complete_multipart(&path, id, sent.parts).await.map_err(|e| self.error(e))?;
        Ok(StoredCopy { key: key.into(), stored_bytes: sent.stored_bytes, stored_sha256: sent.stored_sha256, parts })
    }

    pub async fn abort_upload(&self, key: &str, id: &UploadId) -> Result<()> {
        let path = self.path(key)?;
        match self.store.abort_multipart(&path, id).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => {
                let error = self.error(e);
                // Aborting an upload that was completed or aborted already is what recovery does.
                if error.to_string().contains("NoSuchUpload") { Ok(()) } else { Err(error) }
            }
        }
    }

    pub async fn stat(&self, key: &str) -> Result<Option<ObjectInfo>> {
        let path = self.path(key)?;
        let options = GetOptions { head: true, ..Default::default() };
        let result = match self.store.get_opts(&path, options).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.error(e)),
        };
        let get = |name: &str| {
            result.attributes.get(&Attribute::Metadata(name.to_string().into())).map(|v| v.as_ref().to_string())
        };
        let meta = (|| {
            Some(CopyMeta {
                backup_id: get(META_BACKUP_ID)?.parse().ok()?,
                archive_sha256: get(META_SHA256)?,
                archive_bytes: get(META_BYTES)?.parse().ok()?,
                encryption: get(META_ENCRYPTION)?,
            })
        })();
        Ok(Some(ObjectInfo { key: key.into(), size: result.meta.size, meta }))
    }

    pub async fn list(&self) -> Result<Vec<ObjectInfo>> {
        let prefix = (!self.prefix.is_empty()).then(|| ObjectPath::from(self.prefix.as_str()));
        let mut listing = self.store.list(prefix.as_ref());
        let mut objects = Vec::new();
        while let Some(item) = listing.next().await {
            let item = item.map_err(|e| self.error(e))?;
            let full = item.location.to_string();
            let key = match &prefix {
                Some(_) => full.strip_prefix(&format!("{}/", self.prefix)).unwrap_or(&full).to_string(),
                None => full,
            };
            objects.push(ObjectInfo { key, size: item.size, meta: None });
        }
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(objects)
    }

    pub async fn get(&self, key: &str) -> Result<transfer::Body> {
        let path = self.path(key)?;
        let result = self.store.get(&path).await.map_err(|e| match e {
            object_store::Error::NotFound { .. } => RemoteError::Mismatch {
                remote: self.name.clone(),
                key: key.into(),
                detail: "the object is not there".into(),
            },
            e => self.error(e),
        })?;
        let name = self.name.clone();
        let secret = self.secret.clone();
        Ok(Box::pin(result.into_stream().map(move |chunk| {
            chunk.map_err(|e| RemoteError::Unavailable { remote: name.clone(), detail: scrub(&e.to_string(), &secret) })
        })))
    }

    pub async fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key)?;
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error(e)),
        }
    }

    pub async fn put_small(&self, key: &str, bytes: Vec<u8>) -> Result<()> {
        let path = self.path(key)?;
        self.store.put(&path, PutPayload::from(bytes)).await.map_err(|e| self.error(e))?;
        Ok(())
    }

    pub async fn get_small(&self, key: &str, limit: usize) -> Result<Option<Vec<u8>>> {
        let path = self.path(key)?;
        let result = match self.store.get(&path).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.error(e)),
        };
        if result.meta.size > limit as u64 {
            return Err(RemoteError::Store {
                remote: self.name.clone(),
                detail: format!("{key} is {} bytes, more than the {limit} expected", result.meta.size),
            });
        }
        Ok(Some(result.bytes().await.map_err(|e| self.error(e))?.to_vec()))
    }
}

/// The parts of one multipart upload.
struct S3Parts<'a> {
    remote: &'a S3Remote,
    path: &'a ObjectPath,
    id: &'a UploadId,
}

impl PartSink for S3Parts<'_> {
    type Part = PartId;

    async fn put_part(&self, index: usize, data: Bytes) -> Result<PartId> {
        self.remote
            .store
            .put_part(self.path, self.id, index, PutPayload::from(data))
            .await
            .map_err(|e| self.remote.error(e))
    }
}

/// `text` without the secret (the library never prints it, but a message is checked anyway).
fn scrub(text: &str, secret: &Secret) -> String {
    if secret.0.len() >= 8 { text.replace(&secret.0, "…") } else { text.to_string() }
}
