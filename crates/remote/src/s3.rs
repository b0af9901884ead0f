//! An S3-compatible bucket through object_store's S3 client (SigV4 signing, retries with backoff,
//! multipart uploads by id), with lifeboat's metadata as `x-amz-meta-lifeboat-*`.
//!
//! One request object_store has no call for: ListMultipartUploads, which
//! [`S3Remote::abort_uploads_of`] needs to find the uploads of a key whose ids the journal never
//! received (a crash between the store opening the upload and the journal recording its id).
//! That request is made here with object_store's own public parts, so that it goes where, and is
//! signed, sent, timed out and retried as, object_store's requests are:
//!
//! - **Signing**: object_store's public SigV4 signer, [`AwsAuthorizer::try_authorize`], over its
//!   public request type ([`HttpRequest`], an `http::Request<HttpRequestBody>`). No hand-written
//!   SigV4 and no second signing crate (aws-sigv4 would bring the AWS SDK's smithy crates for one
//!   request); the deprecated `authorize` only differs in panicking where `try_authorize` returns
//!   an error. It signs with ring, the crypto provider object_store is built with here.
//! - **Sending**: an [`HttpClient`] from object_store's public [`ReqwestConnector`] with the same
//!   [`ClientOptions`] as the store (request and connect timeouts, plain http only where the
//!   endpoint says so, rustls with the ring provider installed in [`S3Remote::open`]).
//! - **Retrying**: object_store's retry loop is private, so [`S3Remote::send_signed`] retries
//!   with the store's [`RetryConfig`] (same backoff, retry count and `retry_for`), re-signing each
//!   attempt.
//! - **Parsing**: quick-xml's event reader (already in the tree through object_store), strictly:
//!   the root must be `ListMultipartUploadsResult`, every `Upload` must have one `Key` and one
//!   `UploadId`, `IsTruncated` must be there, no DOCTYPE, no entity but XML's five and character
//!   references.
//! - **Errors** are classified like the store's ([`S3Remote::error`]) and pass through the same
//!   [`scrub`] of the secret key.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder, AwsAuthorizer, AwsCredential, Checksum};
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest, HttpRequestBody, ReqwestConnector,
};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as ObjectPath;
use object_store::{
    Attribute, AttributeValue, Attributes, BackoffConfig, ClientOptions, GetOptions, ObjectStore, ObjectStoreExt,
    PutMultipartOptions, PutPayload, RetryConfig,
};
use quick_xml::events::Event;
use reqwest::{Method, StatusCode};

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
    /// For the requests object_store has no call for (ListMultipartUploads): the same client
    /// options, retry settings and URL as the store's, and the credential to sign with (its
    /// `Debug` hides the secret).
    http: HttpClient,
    retry: RetryConfig,
    bucket_endpoint: String,
    region: String,
    credential: AwsCredential,
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
        let region = spec.region.clone().unwrap_or_else(|| "us-east-1".into());
        let client_options = ClientOptions::new()
            .with_timeout(spec.request_timeout)
            .with_connect_timeout(Duration::from_secs(5))
            .with_allow_http(spec.endpoint.as_deref().is_some_and(|e| e.starts_with("http://")));
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(200),
                max_backoff: Duration::from_secs(5),
                base: 2.0,
            },
            max_retries: 8,
            retry_timeout: spec.retry_for,
        };
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region(&region)
            .with_access_key_id(&credentials.access_key_id)
            .with_secret_access_key(credentials.secret_access_key.expose())
            .with_virtual_hosted_style_request(!spec.path_style)
            // x-amz-checksum-sha256 on every part (declared when the upload opens): the store
            // checks each part on receipt and keeps the checksums, beside SigV4's payload hash.
            .with_checksum_algorithm(Checksum::SHA256)
            .with_client_options(client_options.clone())
            .with_retry(retry.clone());
        let endpoint = match &spec.endpoint {
            Some(endpoint) if !endpoint.starts_with("http://") && !endpoint.starts_with("https://") => {
                return Err(config(format!("endpoint {endpoint:?} must start with http:// or https://")));
            }
            Some(endpoint) => Some(endpoint.trim_end_matches('/')),
            None => None,
        };
        if let Some(endpoint) = endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        let secret = &credentials.secret_access_key;
        let store = builder.build().map_err(|e| config(scrub(&e.to_string(), secret)))?;
        let http =
            ReqwestConnector::default().connect(&client_options).map_err(|e| config(scrub(&e.to_string(), secret)))?;
        Ok(S3Remote {
            name: spec.name.clone(),
            store: Arc::new(store),
            bucket: bucket.clone(),
            prefix: prefix.clone(),
            http,
            retry,
            bucket_endpoint: bucket_endpoint(endpoint, bucket, &region, !spec.path_style),
            region,
            credential: AwsCredential {
                key_id: credentials.access_key_id.clone(),
                secret_key: secret.expose().to_string(),
                token: None,
            },
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
        let detail = tidy(&scrub(&e.to_string(), &self.secret));
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

    /// Aborts every open multipart upload of exactly `key` (not of the longer keys its prefix also
    /// matches) and returns how many it aborted. An upload that is gone by the time it is aborted
    /// (completed or aborted by someone else) is not counted.
    pub async fn abort_uploads_of(&self, key: &str) -> Result<usize> {
        let path = self.path(key)?;
        let full_key = path.as_ref();
        let ids = collect_upload_ids(&self.name, full_key, |marker| self.uploads_page(full_key, marker)).await?;
        let mut aborted = 0;
        for id in ids {
            match self.store.abort_multipart(&path, &id).await {
                Ok(()) => aborted += 1,
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => {
                    let error = self.error(e);
                    if !error.to_string().contains("NoSuchUpload") {
                        return Err(error);
                    }
                }
            }
        }
        Ok(aborted)
    }

    /// One page of ListMultipartUploads for the keys that start with `full_key`, from `marker` on.
    async fn uploads_page(&self, full_key: &str, marker: Option<Marker>) -> Result<UploadsPage> {
        let mut url =
            format!("{}?uploads=&max-uploads={UPLOADS_PAGE}&prefix={}", self.bucket_endpoint, strict_encode(full_key));
        if let Some(marker) = &marker {
            url.push_str(&format!("&key-marker={}", strict_encode(&marker.key)));
            if let Some(id) = &marker.upload_id {
                url.push_str(&format!("&upload-id-marker={}", strict_encode(id)));
            }
        }
        let what = format!("ListMultipartUploads of {full_key}");
        let body = self.send_signed(Method::GET, &url, &what).await?;
        let text = std::str::from_utf8(&body).map_err(|_| self.store_error(&what, "the answer is not UTF-8"))?;
        parse_uploads(text).map_err(|e| self.store_error(&what, &format!("the answer does not parse: {e}")))
    }

    /// Sends a request without a body, signed with object_store's SigV4 signer, retrying as the
    /// store does (server errors, 429, connection failures and timeouts, with the store's backoff
    /// until `retry_for` or its retry count runs out). Returns the body of a 2xx answer.
    async fn send_signed(&self, method: Method, url: &str, what: &str) -> Result<Bytes> {
        let started = Instant::now();
        let mut backoff = self.retry.backoff.init_backoff;
        let mut retries = 0;
        loop {
            let failure = match self.send_once(method.clone(), url, what).await? {
                Ok((status, body)) if status.is_success() => return Ok(body),
                Ok((status, body)) if !retryable_status(status) => return Err(self.status_error(what, status, &body)),
                Ok((status, body)) => Failure::Status(status, body),
                Err(e) if !retryable_transport(e.kind()) => return Err(self.transport_error(what, &e, retries)),
                Err(e) => Failure::Transport(e),
            };
            if retries >= self.retry.max_retries || started.elapsed() + backoff > self.retry.retry_timeout {
                return Err(match failure {
                    Failure::Status(status, body) => self.status_error(what, status, &body),
                    Failure::Transport(e) => self.transport_error(what, &e, retries),
                });
            }
            tracing::debug!(what, retries, ?backoff, "retrying a request to remote {}", self.name);
            tokio::time::sleep(backoff).await;
            retries += 1;
            backoff = backoff.mul_f64(self.retry.backoff.base).min(self.retry.backoff.max_backoff);
        }
    }

    /// One attempt: the outer error is one no retry cures (a URL or signing failure), the inner
    /// one a failure to reach the store or read its answer.
    async fn send_once(
        &self,
        method: Method,
        url: &str,
        what: &str,
    ) -> Result<std::result::Result<(StatusCode, Bytes), HttpError>> {
        let mut request = HttpRequest::new(HttpRequestBody::empty());
        *request.method_mut() = method;
        *request.uri_mut() = url.parse().map_err(|e| self.store_error(what, &format!("bad request url: {e}")))?;
        AwsAuthorizer::new(&self.credential, "s3", &self.region)
            .try_authorize(&mut request, None)
            .map_err(|e| self.error(e))?;
        let response = match self.http.execute(request).await {
            Ok(response) => response,
            Err(e) => return Ok(Err(e)),
        };
        let status = response.status();
        Ok(response.into_body().bytes().await.map(|body| (status, body)))
    }

    /// A non-2xx answer, classified as [`S3Remote::error`] classifies object_store's errors.
    fn status_error(&self, what: &str, status: StatusCode, body: &[u8]) -> RemoteError {
        let text = String::from_utf8_lossy(body);
        let (code, message) = parse_error(&text);
        let mut detail = format!("{what}: {status}");
        for part in [&code, &message].into_iter().flatten() {
            detail.push_str(": ");
            detail.push_str(part);
        }
        if code.is_none() && message.is_none() && !text.trim().is_empty() {
            let start: String = text.trim().chars().take(200).collect();
            detail.push_str(&format!(": {start}"));
        }
        let remote = self.name.clone();
        let detail = scrub(&detail, &self.secret);
        let code = code.as_deref().unwrap_or("");
        match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => RemoteError::Denied { remote, detail },
            _ if matches!(code, "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "AccessDenied") => {
                RemoteError::Denied { remote, detail }
            }
            _ if code == "NoSuchBucket" => {
                RemoteError::NoBucket { remote, detail: format!("bucket {} does not exist ({detail})", self.bucket) }
            }
            _ if retryable_status(status) => RemoteError::Unavailable { remote, detail },
            _ => RemoteError::Store { remote, detail },
        }
    }

    /// The store could not be reached, or its answer not read.
    fn transport_error(&self, what: &str, e: &HttpError, retries: usize) -> RemoteError {
        let mut detail = format!("{what}: {e}");
        let mut source = std::error::Error::source(e);
        while let Some(cause) = source {
            // reqwest's errors repeat their cause's words; say each once.
            let cause_text = cause.to_string();
            if !detail.ends_with(&cause_text) {
                detail.push_str(&format!(": {cause_text}"));
            }
            source = cause.source();
        }
        if retries > 0 {
            detail.push_str(&format!(" (after {retries} retries)"));
        }
        let remote = self.name.clone();
        let detail = scrub(&detail, &self.secret);
        if retryable_transport(e.kind()) {
            RemoteError::Unavailable { remote, detail }
        } else {
            RemoteError::Store { remote, detail }
        }
    }

    fn store_error(&self, what: &str, detail: &str) -> RemoteError {
        RemoteError::Store { remote: self.name.clone(), detail: scrub(&format!("{what}: {detail}"), &self.secret) }
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

/// A message with the store's XML error body (`<Error><Code>NoSuchBucket</Code><Message>...`)
/// cut down to `NoSuchBucket: ...`, what an operator reads.
fn tidy(text: &str) -> String {
    let Some(start) = text.find("<Error>") else { return text.to_string() };
    let end = text[start..].find("</Error>").map_or(text.len(), |at| start + at + "</Error>".len());
    let body = &text[start..end];
    let field = |name: &str| {
        let open = format!("<{name}>");
        let from = body.find(&open)? + open.len();
        let to = body[from..].find(&format!("</{name}>"))? + from;
        Some(body[from..to].trim().to_string())
    };
    let summary = match (field("Code"), field("Message")) {
        (Some(code), Some(message)) if !message.is_empty() => format!("{code}: {message}"),
        (Some(code), _) => code,
        _ => return text.to_string(),
    };
    let mut head = &text[..start];
    if let Some(declaration) = head.rfind("<?xml") {
        head = &head[..declaration];
    }
    let head = head.trim_end().trim_end_matches(['(', ':', ' ']);
    format!("{head}: {summary}{}", &text[end..])
}

/// `text` without the secret (the library never prints it, but a message is checked anyway).
fn scrub(text: &str, secret: &Secret) -> String {
    if secret.0.len() >= 8 { text.replace(&secret.0, "…") } else { text.to_string() }
}

/// What one attempt of [`S3Remote::send_signed`] ended with, when a retry may cure it.
enum Failure {
    Status(StatusCode, Bytes),
    Transport(HttpError),
}

/// Answers worth retrying, as object_store retries them; 501 (a store without the request) is
/// not.
fn retryable_status(status: StatusCode) -> bool {
    (status.is_server_error() && status != StatusCode::NOT_IMPLEMENTED)
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
}

/// Transport failures object_store retries for an idempotent request (every request here is a
/// GET).
fn retryable_transport(kind: HttpErrorKind) -> bool {
    matches!(
        kind,
        HttpErrorKind::Connect | HttpErrorKind::Request | HttpErrorKind::Timeout | HttpErrorKind::Interrupted
    )
}

/// The URL of the bucket, as object_store's builder makes it (`bucket_endpoint` in
/// `AmazonS3Builder::build`), so that the requests made here go where the store's go. Note that
/// object_store takes an endpoint given with virtual-hosted requests to include the bucket
/// already.
fn bucket_endpoint(endpoint: Option<&str>, bucket: &str, region: &str, virtual_hosted: bool) -> String {
    match (endpoint, virtual_hosted) {
        (Some(endpoint), true) => endpoint.to_string(),
        (Some(endpoint), false) => format!("{}/{bucket}", endpoint.trim_end_matches('/')),
        (None, true) => format!("https://{bucket}.s3.{region}.amazonaws.com"),
        (None, false) => format!("https://s3.{region}.amazonaws.com/{bucket}"),
    }
}

/// Percent-encodes everything but `A-Z a-z 0-9 - . _ ~`, as SigV4's canonical query does: the URL
/// then carries exactly the bytes that are signed (a `+` or `/` in a key stays what it is).
fn strict_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Uploads asked for per ListMultipartUploads page (S3's default and maximum).
const UPLOADS_PAGE: usize = 1000;

/// Where the next page of a listing starts: after this key, or after this upload of it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Marker {
    key: String,
    upload_id: Option<String>,
}

/// One open upload, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OpenUpload {
    key: String,
    upload_id: String,
}

/// One page of a ListMultipartUploads answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct UploadsPage {
    uploads: Vec<OpenUpload>,
    truncated: bool,
    next_key_marker: Option<String>,
    next_upload_id_marker: Option<String>,
}

impl UploadsPage {
    /// Where the next page starts: the markers the store gave, or (when it gave none) after the
    /// last upload listed, which is where S3 documents them to point.
    fn next_marker(&self) -> Option<Marker> {
        let given = |v: &Option<String>| v.clone().filter(|v| !v.is_empty());
        match given(&self.next_key_marker) {
            Some(key) => Some(Marker { key, upload_id: given(&self.next_upload_id_marker) }),
            None => self.uploads.last().map(|u| Marker { key: u.key.clone(), upload_id: Some(u.upload_id.clone()) }),
        }
    }
}

/// Pages through a listing (`page` fetches the page after a marker) and returns the ids of the
/// uploads whose key is exactly `full_key`: the prefix the store filters by also matches longer
/// keys. A truncated page that gives no way forward, or the same way again, is an error rather
/// than an endless loop or a listing silently cut short.
async fn collect_upload_ids<F, Fut>(remote: &str, full_key: &str, mut page: F) -> Result<Vec<String>>
where
    F: FnMut(Option<Marker>) -> Fut,
    Fut: Future<Output = Result<UploadsPage>>,
{
    let mut ids = Vec::new();
    let mut marker = None;
    loop {
        let answer = page(marker.clone()).await?;
        ids.extend(answer.uploads.iter().filter(|u| u.key == full_key).map(|u| u.upload_id.clone()));
        if !answer.truncated {
            return Ok(ids);
        }
        let next = answer.next_marker();
        if next.is_none() || next == marker {
            return Err(RemoteError::Store {
                remote: remote.into(),
                detail: format!(
                    "ListMultipartUploads of {full_key}: a truncated page gives no new place to go on from \
                     ({next:?}); the store's pagination is broken"
                ),
            });
        }
        marker = next;
    }
}

/// Parses a ListMultipartUploadsResult, strictly (see the module's documentation); errors say
/// what is wrong, without quoting the document.
fn parse_uploads(xml: &str) -> std::result::Result<UploadsPage, String> {
    let mut page = UploadsPage::default();
    let mut truncated = None;
    // The Key and UploadId of the Upload being read.
    let mut upload: Option<(Option<String>, Option<String>)> = None;
    let once = |slot: &mut Option<String>, value: &str, name: &str| match slot {
        Some(_) => Err(format!("{name} appears twice")),
        None => {
            *slot = Some(value.to_string());
            Ok(())
        }
    };
    walk_xml(xml, |path, node| {
        let names: Vec<&str> = path.iter().map(String::as_str).collect();
        match (names.as_slice(), node) {
            ([root], Node::Open) if *root != "ListMultipartUploadsResult" => Err(format!("the root element is {root}")),
            ([_, "Upload"], Node::Open) => {
                upload = Some((None, None));
                Ok(())
            }
            ([_, "Upload"], Node::Close) => match upload.take() {
                Some((Some(key), Some(upload_id))) => {
                    page.uploads.push(OpenUpload { key, upload_id });
                    Ok(())
                }
                _ => Err("an Upload lacks its Key or its UploadId".into()),
            },
            ([_, "Upload", field], Node::Text(value)) => {
                let Some((key, upload_id)) = upload.as_mut() else { return Err("text outside an Upload".into()) };
                match *field {
                    "Key" => once(key, value, "an Upload's Key"),
                    "UploadId" => once(upload_id, value, "an Upload's UploadId"),
                    _ => Ok(()),
                }
            }
            ([_, "IsTruncated"], Node::Text(value)) => {
                let value = match value.trim() {
                    "true" => true,
                    "false" => false,
                    other => return Err(format!("IsTruncated is {other:?}")),
                };
                match truncated.replace(value) {
                    Some(_) => Err("IsTruncated appears twice".into()),
                    None => Ok(()),
                }
            }
            ([_, "NextKeyMarker"], Node::Text(value)) => once(&mut page.next_key_marker, value, "NextKeyMarker"),
            ([_, "NextUploadIdMarker"], Node::Text(value)) => {
                once(&mut page.next_upload_id_marker, value, "NextUploadIdMarker")
            }
            _ => Ok(()),
        }
    })?;
    page.truncated = truncated.ok_or("there is no IsTruncated")?;
    Ok(page)
}

/// The `Code` and `Message` of an S3 error document, when the body is one.
fn parse_error(xml: &str) -> (Option<String>, Option<String>) {
    let (mut code, mut message) = (None, None);
    let walked = walk_xml(xml, |path, node| {
        let names: Vec<&str> = path.iter().map(String::as_str).collect();
        match (names.as_slice(), node) {
            (["Error", "Code"], Node::Text(text)) => code = Some(text.trim().to_string()),
            (["Error", "Message"], Node::Text(text)) => message = Some(text.trim().to_string()),
            _ => {}
        }
        Ok(())
    });
    if walked.is_err() { (None, None) } else { (code, message) }
}

/// What [`walk_xml`] reports of an element.
#[derive(Debug, Clone, Copy)]
enum Node<'a> {
    Open,
    /// The whole text of an element without child elements, just before it closes.
    Text(&'a str),
    Close,
}

/// Walks a small XML document, calling `visit(path, node)` for every element (`path`: the local
/// names from the root down to it): [`Node::Open`], then [`Node::Text`] when it has no child
/// elements (entities and character references resolved, CDATA included, an empty element's
/// text is empty), then [`Node::Close`]. Refuses what is not well-formed, a DOCTYPE, unknown
/// entities, and text or a second element outside the root.
fn walk_xml<F>(xml: &str, mut visit: F) -> std::result::Result<(), String>
where
    F: FnMut(&[String], Node<'_>) -> std::result::Result<(), String>,
{
    let mut reader = quick_xml::Reader::from_str(xml);
    reader.config_mut().check_end_names = true;
    let mut path: Vec<String> = Vec::new();
    // The text of the innermost open element, and whether it has child elements.
    let mut text = String::new();
    let mut has_children = false;
    let mut seen_root = false;
    let name_of =
        |name: &[u8]| String::from_utf8(name.to_vec()).map_err(|_| "an element name is not UTF-8".to_string());
    loop {
        let event = reader.read_event().map_err(|e| format!("at byte {}: {e}", reader.error_position()))?;
        match event {
            Event::Start(_) | Event::Empty(_) if path.is_empty() && seen_root => {
                return Err("a second root element".into());
            }
            Event::Start(start) => {
                path.push(name_of(start.local_name().as_ref())?);
                seen_root = true;
                visit(&path, Node::Open)?;
                text.clear();
                has_children = false;
            }
            Event::Empty(start) => {
                path.push(name_of(start.local_name().as_ref())?);
                seen_root = true;
                visit(&path, Node::Open)?;
                visit(&path, Node::Text(""))?;
                visit(&path, Node::Close)?;
                path.pop();
                text.clear();
                has_children = true;
            }
            Event::End(_) => {
                if !has_children {
                    visit(&path, Node::Text(&text))?;
                }
                visit(&path, Node::Close)?;
                path.pop();
                text.clear();
                has_children = true;
            }
            Event::Text(t) => {
                let t = t.xml10_content().map_err(|e| e.to_string())?;
                if path.is_empty() && !t.trim().is_empty() {
                    return Err("text outside the root element".into());
                }
                text.push_str(&t);
            }
            Event::CData(t) => {
                if path.is_empty() {
                    return Err("CDATA outside the root element".into());
                }
                text.push_str(&t.decode().map_err(|e| e.to_string())?);
            }
            Event::GeneralRef(r) => {
                if path.is_empty() {
                    return Err("a reference outside the root element".into());
                }
                match r.resolve_char_ref().map_err(|e| e.to_string())? {
                    Some(c) => text.push(c),
                    None => {
                        let name = r.decode().map_err(|e| e.to_string())?;
                        let resolved = quick_xml::escape::resolve_predefined_entity(&name)
                            .ok_or_else(|| format!("unknown entity &{name};"))?;
                        text.push_str(resolved);
                    }
                }
            }
            Event::DocType(_) => return Err("a DOCTYPE".into()),
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof if path.is_empty() && seen_root => return Ok(()),
            Event::Eof if !seen_root => return Err("no element".into()),
            Event::Eof => return Err(format!("{} is not closed", path.join("/"))),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_xml_error_body_reads_as_its_code_and_message() {
        let raw = "Client error with status 404 Not Found: <?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>NoSuchBucket</Code><Message>Bucket not found: nope</Message><Resource>/nope</Resource></Error>";
        assert_eq!(super::tidy(raw), "Client error with status 404 Not Found: NoSuchBucket: Bucket not found: nope");
        assert_eq!(super::tidy("plain words"), "plain words");
    }

    use super::*;

    fn upload(key: &str, id: &str) -> OpenUpload {
        OpenUpload { key: key.into(), upload_id: id.into() }
    }

    #[test]
    fn a_listing_parses_with_entities_and_markers() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Bucket>backups</Bucket><KeyMarker></KeyMarker><UploadIdMarker/>
  <NextKeyMarker>p/a&amp;b &lt;&gt;&quot;&apos;</NextKeyMarker>
  <NextUploadIdMarker>id&#x32;</NextUploadIdMarker>
  <Prefix>p/a</Prefix><MaxUploads>2</MaxUploads>
  <IsTruncated>true</IsTruncated>
  <Upload>
    <Key>p/a</Key><UploadId>id1</UploadId>
    <Initiator><ID>x</ID><DisplayName>x</DisplayName></Initiator>
    <StorageClass>STANDARD</StorageClass><Initiated>2026-01-01T00:00:00.000Z</Initiated>
  </Upload>
  <Upload><Key><![CDATA[p/a&b <>"']]></Key><UploadId>id2</UploadId></Upload>
</ListMultipartUploadsResult>"#;
        let page = parse_uploads(xml).unwrap();
        assert_eq!(page.uploads, [upload("p/a", "id1"), upload(r#"p/a&b <>"'"#, "id2")]);
        assert!(page.truncated);
        assert_eq!(page.next_key_marker.as_deref(), Some(r#"p/a&b <>"'"#));
        assert_eq!(page.next_upload_id_marker.as_deref(), Some("id2"));
        assert_eq!(page.next_marker(), Some(Marker { key: r#"p/a&b <>"'"#.into(), upload_id: Some("id2".into()) }));

        let empty = r#"<ListMultipartUploadsResult><IsTruncated>false</IsTruncated></ListMultipartUploadsResult>"#;
        assert_eq!(parse_uploads(empty).unwrap(), UploadsPage::default());
    }

    #[test]
    fn a_listing_that_is_not_one_is_refused() {
        let ok_tail = "<IsTruncated>false</IsTruncated></ListMultipartUploadsResult>";
        for (xml, says) in [
            ("", "no element"),
            ("<Error><Code>x</Code></Error>", "root element is Error"),
            ("<ListMultipartUploadsResult><Upload><Key>a</Key></Upload>", "lacks"),
            (&format!("<ListMultipartUploadsResult><Upload><UploadId>1</UploadId></Upload>{ok_tail}"), "lacks"),
            (
                &format!(
                    "<ListMultipartUploadsResult><Upload><Key>a</Key><Key>b</Key><UploadId>1</UploadId></Upload>{ok_tail}"
                ),
                "twice",
            ),
            ("<ListMultipartUploadsResult></ListMultipartUploadsResult>", "no IsTruncated"),
            (
                "<ListMultipartUploadsResult><IsTruncated>yes</IsTruncated></ListMultipartUploadsResult>",
                "IsTruncated is",
            ),
            ("<ListMultipartUploadsResult><IsTruncated>false</IsTruncated>", "not closed"),
            ("<ListMultipartUploadsResult><IsTruncated>false</Wrong></ListMultipartUploadsResult>", "at byte"),
            (
                &format!(
                    "<ListMultipartUploadsResult><Upload><Key>&ent;</Key><UploadId>1</UploadId></Upload>{ok_tail}"
                ),
                "unknown entity",
            ),
            (&format!("<!DOCTYPE x [<!ENTITY ent \"y\">]><ListMultipartUploadsResult>{ok_tail}"), "DOCTYPE"),
            (&format!("<ListMultipartUploadsResult>{ok_tail}<ListMultipartUploadsResult>{ok_tail}"), "second root"),
            (&format!("<ListMultipartUploadsResult>{ok_tail} trailing"), "outside the root"),
        ] {
            let err = parse_uploads(xml).unwrap_err();
            assert!(err.contains(says), "{xml}: {err}");
        }
    }

    #[test]
    fn error_documents_give_their_code_and_message() {
        let xml = "<?xml version=\"1.0\"?><Error><Code>NoSuchBucket</Code><Message>no &quot;b&quot;</Message></Error>";
        assert_eq!(parse_error(xml), (Some("NoSuchBucket".into()), Some("no \"b\"".into())));
        assert_eq!(parse_error("<html>bad gateway"), (None, None));
    }

    fn page(uploads: &[(&str, &str)], next: Option<(&str, &str)>) -> UploadsPage {
        UploadsPage {
            uploads: uploads.iter().map(|(k, id)| upload(k, id)).collect(),
            truncated: next.is_some(),
            next_key_marker: next.map(|(k, _)| k.to_string()),
            next_upload_id_marker: next.map(|(_, id)| id.to_string()).filter(|id| !id.is_empty()),
        }
    }

    #[tokio::test]
    async fn pages_are_followed_and_only_the_exact_key_is_kept() {
        let pages = [
            page(&[("p/a", "1"), ("p/a", "2")], Some(("p/a", "2"))),
            page(&[("p/a", "3"), ("p/a-longer", "4")], Some(("p/a-longer", ""))),
            page(&[("p/a/inner", "5")], None),
        ];
        let mut asked = Vec::new();
        let ids = collect_upload_ids("r", "p/a", |marker| {
            asked.push(marker.clone());
            let answer = match &marker {
                None => pages[0].clone(),
                Some(m) if m.key == "p/a" => pages[1].clone(),
                Some(_) => pages[2].clone(),
            };
            async move { Ok(answer) }
        })
        .await
        .unwrap();
        assert_eq!(ids, ["1", "2", "3"]);
        assert_eq!(
            asked,
            [
                None,
                Some(Marker { key: "p/a".into(), upload_id: Some("2".into()) }),
                Some(Marker { key: "p/a-longer".into(), upload_id: None }),
            ]
        );
    }

    #[tokio::test]
    async fn a_truncated_page_without_markers_goes_on_after_its_last_upload_and_one_that_stalls_fails() {
        let mut pages = vec![
            UploadsPage { uploads: vec![upload("a", "1")], truncated: true, ..Default::default() },
            UploadsPage { uploads: vec![upload("a", "2")], truncated: false, ..Default::default() },
        ]
        .into_iter();
        let mut asked = Vec::new();
        let ids = collect_upload_ids("r", "a", |marker| {
            asked.push(marker);
            let next = pages.next().unwrap();
            async move { Ok(next) }
        })
        .await
        .unwrap();
        assert_eq!(ids, ["1", "2"]);
        assert_eq!(asked[1], Some(Marker { key: "a".into(), upload_id: Some("1".into()) }));

        // The same marker twice, and a truncated page with nothing to go on from.
        let stalls = || page(&[("a", "1")], Some(("a", "1")));
        let err = collect_upload_ids("r", "a", |_| {
            let answer = stalls();
            async move { Ok(answer) }
        })
        .await
        .unwrap_err();
        assert!(err.to_string().contains("pagination is broken"), "{err}");
        let err = collect_upload_ids("r", "a", |_| async { Ok(UploadsPage { truncated: true, ..Default::default() }) })
            .await
            .unwrap_err();
        assert!(err.to_string().contains("no new place"), "{err}");
    }

    #[test]
    fn query_values_are_encoded_as_sigv4_signs_them() {
        assert_eq!(strict_encode("host-1/a b+c~d_e.f"), "host-1%2Fa%20b%2Bc~d_e.f");
        assert_eq!(strict_encode("é"), "%C3%A9");
    }

    /// The listing goes to the bucket URL object_store's own requests go to, path-style or
    /// virtual-hosted, with an endpoint or on AWS: compared with the URL the store signs for a key.
    #[tokio::test]
    async fn the_listing_goes_where_the_stores_requests_go() {
        use object_store::signer::Signer;
        for (endpoint, path_style) in [
            (Some("http://127.0.0.1:3900/"), true),
            (Some("https://backups.s3.example.com"), false),
            (None, true),
            (None, false),
        ] {
            let mut spec = RemoteSpec::new("r", "s3://backups/p".parse().unwrap());
            spec.endpoint = endpoint.map(str::to_string);
            spec.region = Some("eu-west-3".into());
            spec.path_style = path_style;
            spec.credentials =
                Some(Credentials { access_key_id: "id".into(), secret_access_key: Secret::new("secret-key-long") });
            let remote = S3Remote::open(&spec).unwrap();
            let url = remote
                .store
                .signed_url(Method::GET, &remote.path("k").unwrap(), Duration::from_secs(60))
                .await
                .unwrap();
            let expected = format!("{}/p/k?", remote.bucket_endpoint);
            assert!(url.as_str().starts_with(&expected), "{endpoint:?} {path_style}: {url} is not under {expected}");
        }
    }
}
