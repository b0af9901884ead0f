//! The S3 backend against Garage, a real S3-compatible distributed store: three nodes on loopback
//! with replication factor 3 (`tests/support/garage.rs` starts them). Copies ship and fetch back
//! encrypted; one node killed during an upload, the copy still completes (quorum); the whole
//! cluster down is a clear "unavailable" and the copy ships once it is back; wrong credentials
//! and a missing bucket are configuration errors that never show the secret; an object altered
//! or truncated behind lifeboat's back is caught; a cancelled upload, aborted, leaves nothing;
//! uploads whose ids were lost are found by key and aborted, and only those of that key.

#[path = "../../../tests/support/garage.rs"]
mod garage;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use garage::GarageCluster;
use lifeboat_remote::*;
use sha2::{Digest, Sha256};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An archive-sized file of pseudo-random bytes and the metadata its catalog entry would give.
fn archive(dir: &Path, len: usize, encryption: &str) -> (PathBuf, CopyMeta) {
    let mut state = 0x2545f4914f6cdd1du64 ^ len as u64;
    let mut data = vec![0u8; len];
    for chunk in data.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let bytes = state.to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
    let path = dir.join(format!("backup-{len}.tar.gz"));
    std::fs::write(&path, &data).unwrap();
    let meta = CopyMeta {
        backup_id: 42,
        archive_sha256: hex(&Sha256::digest(&data)),
        archive_bytes: len as u64,
        encryption: encryption.into(),
    };
    (path, meta)
}

fn spec(cluster: &GarageCluster, prefix: &str) -> RemoteSpec {
    let access = cluster.access();
    let mut spec = RemoteSpec::new("offsite", format!("s3://{}/{prefix}", access.bucket).parse().unwrap());
    spec.endpoint = Some(access.endpoint.clone());
    spec.region = Some(access.region.clone());
    spec.path_style = true;
    spec.credentials = Some(Credentials {
        access_key_id: access.key_id.clone(),
        secret_access_key: Secret::new(access.secret.clone()),
    });
    spec.request_timeout = Duration::from_secs(20);
    spec.retry_for = Duration::from_secs(20);
    spec
}

fn parts() -> UploadOptions {
    UploadOptions { part_size: 5 << 20, concurrency: 2, cancel: None }
}

fn start() -> Option<GarageCluster> {
    garage::garage_binary()?;
    let started = Instant::now();
    let cluster = GarageCluster::start(3, 3);
    eprintln!("a three-node Garage cluster started in {:.1} s", started.elapsed().as_secs_f64());
    Some(cluster)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_copy_ships_to_three_nodes_and_fetches_back() {
    let Some(cluster) = start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (source, meta) = archive(tmp.path(), (17 << 20) + 5, "age");
    let (secret, public) = generate_identity();
    let enc = Encryption::to_recipients(&[public]).unwrap();
    let remote = Remote::open(&spec(&cluster, "host-1/demo")).unwrap();
    remote.check().await.unwrap();

    let key = "backup-42.tar.gz.age";
    let id = remote.begin_upload(key, &meta).await.unwrap();
    let copy = remote
        .upload(key, &id, &Shipment { source: &source, meta: &meta, encryption: &enc, options: &parts() })
        .await
        .unwrap();
    assert_eq!(copy.parts, 4);

    let info = remote.stat(key).await.unwrap().expect("the copy is there");
    assert_eq!(info.size, copy.stored_bytes);
    assert_eq!(info.meta.as_ref(), Some(&meta), "the metadata travels as x-amz-meta-lifeboat-*");
    let listed = remote.list().await.unwrap();
    assert_eq!(listed.iter().map(|o| o.key.as_str()).collect::<Vec<_>>(), [key], "keys are relative to the prefix");

    let ids = Identities::from_text(&secret).unwrap();
    let (fetched, bytes) = remote.fetch(key, Vec::new(), Some(ids)).await.unwrap();
    assert_eq!(fetched.stored_sha256, copy.stored_sha256);
    assert_eq!(fetched.archive_sha256, meta.archive_sha256);
    assert_eq!(bytes, std::fs::read(&source).unwrap());

    remote.delete(key).await.unwrap();
    remote.delete(key).await.unwrap();
    assert!(remote.stat(key).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_killed_during_an_upload_the_copy_still_completes() {
    let Some(mut cluster) = start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (source, meta) = archive(tmp.path(), 120 << 20, "none");
    let remote = Arc::new(Remote::open(&spec(&cluster, "")).unwrap());
    let key = "backup-42.tar.gz";
    let id = remote.begin_upload(key, &meta).await.unwrap();

    let upload = {
        let (remote, source, meta, id) = (remote.clone(), source.clone(), meta.clone(), id.clone());
        tokio::spawn(async move {
            remote
                .upload(
                    key,
                    &id,
                    &Shipment { source: &source, meta: &meta, encryption: &Encryption::None, options: &parts() },
                )
                .await
        })
    };
    // Node 2 is not the one lifeboat talks to: with replication 3, two of three is a quorum.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!upload.is_finished(), "the upload ended before the node was killed: make the archive larger");
    cluster.kill(2);
    let copy = upload.await.unwrap().expect("the upload completes on a quorum");
    assert_eq!(copy.stored_sha256, meta.archive_sha256);
    let (fetched, _) = remote.fetch(key, std::io::sink(), None).await.unwrap();
    assert_eq!(fetched.archive_sha256, meta.archive_sha256);
    cluster.restart(2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_cluster_down_is_unavailable_and_the_copy_ships_once_it_is_back() {
    let Some(mut cluster) = start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (source, meta) = archive(tmp.path(), 6 << 20, "none");
    let mut down_spec = spec(&cluster, "p");
    down_spec.retry_for = Duration::from_secs(2);
    let remote = Remote::open(&down_spec).unwrap();

    cluster.stop_all();
    let asked = Instant::now();
    let err = remote.check().await.unwrap_err();
    assert!(matches!(err, RemoteError::Unavailable { .. }), "{err}");
    assert!(!err.is_config(), "a remote that is down is not misconfigured");
    assert!(asked.elapsed() < Duration::from_secs(30), "gave up after {:?}", asked.elapsed());

    cluster.start_all();
    let id = remote.begin_upload("k", &meta).await.unwrap();
    remote
        .upload("k", &id, &Shipment { source: &source, meta: &meta, encryption: &Encryption::None, options: &parts() })
        .await
        .unwrap();
    assert_eq!(remote.stat("k").await.unwrap().unwrap().size, meta.archive_bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_and_a_missing_bucket_are_config_errors_that_hide_the_secret() {
    let Some(cluster) = start() else { return };
    let wrong_secret = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let mut wrong = spec(&cluster, "");
    wrong.credentials.as_mut().unwrap().secret_access_key = Secret::new(wrong_secret);
    let err = Remote::open(&wrong).unwrap().check().await.unwrap_err();
    assert!(err.is_config() && matches!(err, RemoteError::Denied { .. }), "{err}");
    assert!(!err.to_string().contains(wrong_secret) && !format!("{err:?}").contains(wrong_secret));

    let right_secret = cluster.access().secret.clone();
    let mut no_bucket = spec(&cluster, "");
    no_bucket.location = "s3://no-such-bucket".parse().unwrap();
    let err = Remote::open(&no_bucket).unwrap().check().await.unwrap_err();
    assert!(err.is_config(), "{err}");
    assert!(err.to_string().contains("no-such-bucket"), "{err}");
    assert!(!err.to_string().contains(&right_secret) && !format!("{err:?}").contains(&right_secret));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_altered_or_truncated_behind_lifeboats_back_are_caught() {
    let Some(cluster) = start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (source, meta) = archive(tmp.path(), 3 << 20, "age");
    let (secret, public) = generate_identity();
    let enc = Encryption::to_recipients(&[public]).unwrap();
    let ids = Identities::from_text(&secret).unwrap();
    let remote = Remote::open(&spec(&cluster, "")).unwrap();
    let id = remote.begin_upload("k.age", &meta).await.unwrap();
    remote
        .upload("k.age", &id, &Shipment { source: &source, meta: &meta, encryption: &enc, options: &parts() })
        .await
        .unwrap();
    // The stored bytes, as a plain GET gives them (fetch refuses an age file without identities).
    let stored = remote.get_small("k.age", 64 << 20).await.unwrap().unwrap();
    let mut altered = stored.clone();
    altered[stored.len() / 2] ^= 0x01;
    remote.put_small("k.age", altered).await.unwrap();
    assert_eq!(remote.stat("k.age").await.unwrap().unwrap().meta, None, "a rewritten object lost lifeboat's metadata");
    let err = remote.fetch("k.age", Vec::new(), Some(ids.clone())).await.unwrap_err();
    assert!(err.is_integrity(), "{err}");

    remote.put_small("k.age", stored[..stored.len() - 1000].to_vec()).await.unwrap();
    let err = remote.fetch("k.age", Vec::new(), Some(ids)).await.unwrap_err();
    assert!(err.is_integrity(), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_upload_aborted_leaves_no_object_and_no_open_upload() {
    let Some(cluster) = start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (source, meta) = archive(tmp.path(), 30 << 20, "none");
    let remote = Remote::open(&spec(&cluster, "")).unwrap();
    let id = remote.begin_upload("k", &meta).await.unwrap();
    let cancel = Arc::new(AtomicBool::new(false));
    let options = UploadOptions { cancel: Some(cancel.clone()), ..parts() };
    let flag = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        flag.store(true, Ordering::Relaxed);
    });
    let err = remote
        .upload("k", &id, &Shipment { source: &source, meta: &meta, encryption: &Encryption::None, options: &options })
        .await
        .unwrap_err();
    assert!(matches!(err, RemoteError::Cancelled { .. }), "{err}");
    assert!(cluster.list_multipart_uploads(&cluster.access().bucket) >= 1, "the upload is still open");
    remote.abort_upload("k", &id).await.unwrap();
    remote.abort_upload("k", &id).await.unwrap(); // recovery may abort twice
    assert_eq!(cluster.list_multipart_uploads(&cluster.access().bucket), 0);
    assert!(remote.stat("k").await.unwrap().is_none());
}

/// What recovery does for uploads the journal never learnt the ids of: `abort_uploads_of` finds
/// them by key (ListMultipartUploads, signed by object_store's signer) and aborts exactly those of
/// that key, under the remote's prefix; uploads of longer keys that the key is a prefix of stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_whose_ids_were_lost_are_aborted_by_key_and_only_those() {
    let Some(cluster) = start() else { return };
    let bucket = cluster.access().bucket.clone();
    let tmp = tempfile::tempdir().unwrap();
    let remote = Remote::open(&spec(&cluster, "host-1/demo")).unwrap();
    let (source, meta) = archive(tmp.path(), (5 << 20) + 7, "none");

    let first = remote.begin_upload("A", &meta).await.unwrap();
    let second = remote.begin_upload("A", &meta).await.unwrap();
    assert_ne!(first, second);
    // One part into the first: its catalog entry is made to disagree with the file, which the
    // upload finds at the end of reading, after the first 5 MiB part was sent.
    let wrong = CopyMeta { archive_sha256: "0".repeat(64), ..meta.clone() };
    let err = remote
        .upload(
            "A",
            &first,
            &Shipment { source: &source, meta: &wrong, encryption: &Encryption::None, options: &parts() },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, RemoteError::ArchiveChanged { .. }), "{err}");
    let longer = remote.begin_upload("A-longer", &meta).await.unwrap();
    let inner = remote.begin_upload("A/inner", &meta).await.unwrap();
    // The same key at the bucket's top, outside the remote's prefix.
    let top = Remote::open(&spec(&cluster, "")).unwrap();
    let outside = top.begin_upload("A", &meta).await.unwrap();
    assert_eq!(cluster.list_multipart_uploads(&bucket), 5);

    assert_eq!(remote.abort_uploads_of("A").await.unwrap(), 2);
    assert_eq!(cluster.list_multipart_uploads(&bucket), 3, "exactly the two uploads of A were aborted");
    assert_eq!(remote.abort_uploads_of("A").await.unwrap(), 0, "nothing is left to abort");
    assert!(remote.stat("A").await.unwrap().is_none());

    // The others were untouched: each is still open, and aborting it by key or id finds it.
    assert_eq!(remote.abort_uploads_of("A-longer").await.unwrap(), 1);
    assert_eq!(remote.abort_uploads_of("A/inner").await.unwrap(), 1);
    assert_eq!(top.abort_uploads_of("A").await.unwrap(), 1);
    assert_eq!(cluster.list_multipart_uploads(&bucket), 0);
    for (key, id) in [("A-longer", &longer), ("A/inner", &inner)] {
        remote.abort_upload(key, id).await.unwrap();
    }
    top.abort_upload("A", &outside).await.unwrap();

    // A completed copy of the key is not an open upload: it stays.
    let id = remote.begin_upload("A", &meta).await.unwrap();
    remote
        .upload("A", &id, &Shipment { source: &source, meta: &meta, encryption: &Encryption::None, options: &parts() })
        .await
        .unwrap();
    assert_eq!(remote.abort_uploads_of("A").await.unwrap(), 0);
    assert_eq!(remote.stat("A").await.unwrap().unwrap().size, meta.archive_bytes);
}

/// The listing's own request fails as the store's requests do: wrong credentials are `Denied`
/// without the secret in any message, a missing bucket is `NoBucket`, a cluster down is
/// `Unavailable` once `retry_for` is spent; and keys that are not plain segments are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborting_by_key_fails_like_the_other_requests() {
    let Some(mut cluster) = start() else { return };
    let wrong_secret = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let mut wrong = spec(&cluster, "p");
    wrong.credentials.as_mut().unwrap().secret_access_key = Secret::new(wrong_secret);
    let err = Remote::open(&wrong).unwrap().abort_uploads_of("k").await.unwrap_err();
    eprintln!("wrong secret: {err}");
    assert!(matches!(err, RemoteError::Denied { .. }), "{err}");
    assert!(!err.to_string().contains(wrong_secret) && !format!("{err:?}").contains(wrong_secret));

    let mut no_bucket = spec(&cluster, "");
    no_bucket.location = "s3://no-such-bucket".parse().unwrap();
    let err = Remote::open(&no_bucket).unwrap().abort_uploads_of("k").await.unwrap_err();
    eprintln!("no bucket: {err}");
    assert!(matches!(err, RemoteError::NoBucket { .. }) && err.to_string().contains("no-such-bucket"), "{err}");

    let remote = Remote::open(&spec(&cluster, "p")).unwrap();
    for bad in ["", "/k", "a/../k", "a//k"] {
        assert!(matches!(remote.abort_uploads_of(bad).await, Err(RemoteError::BadKey { .. })), "{bad:?}");
    }

    let mut down_spec = spec(&cluster, "p");
    down_spec.retry_for = Duration::from_secs(2);
    let remote = Remote::open(&down_spec).unwrap();
    cluster.stop_all();
    let asked = Instant::now();
    let err = remote.abort_uploads_of("k").await.unwrap_err();
    eprintln!("cluster down, after {:?}: {err}", asked.elapsed());
    assert!(matches!(err, RemoteError::Unavailable { .. }) && !err.is_config(), "{err}");
    assert!(asked.elapsed() < Duration::from_secs(30), "gave up after {:?}", asked.elapsed());
    cluster.start_all();
    assert_eq!(remote.abort_uploads_of("k").await.unwrap(), 0);
}
