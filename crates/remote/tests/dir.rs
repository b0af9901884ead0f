//! A directory remote (`file://`), end to end on real files: copies round-trip, plain and
//! encrypted; what was altered, truncated or replaced is caught; an upload of an archive that
//! changed on disk is refused; aborting leaves nothing, by id or by key (for an upload whose id
//! was lost); secret files readable by others are refused.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use lifeboat_remote::*;
use sha2::{Digest, Sha256};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An "archive" of `len` pseudo-random bytes, and the metadata its catalog entry would give.
fn archive(dir: &Path, len: usize) -> (PathBuf, CopyMeta) {
    let mut state = 0x9e3779b97f4a7c15u64;
    let data: Vec<u8> = (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let path = dir.join("backup-7.tar.gz");
    std::fs::write(&path, &data).unwrap();
    let meta = CopyMeta {
        backup_id: 7,
        archive_sha256: hex(&Sha256::digest(&data)),
        archive_bytes: len as u64,
        encryption: "none".into(),
    };
    (path, meta)
}

fn remote(root: &Path) -> Remote {
    let location: Location = format!("file://{}", root.display()).parse().unwrap();
    Remote::open(&RemoteSpec::new("second-disk", location)).unwrap()
}

fn small_parts() -> UploadOptions {
    // The smallest parts S3 allows, so a test archive of a few parts runs the part logic.
    UploadOptions { part_size: 5 << 20, concurrency: 3, cancel: None }
}

async fn ship(remote: &Remote, key: &str, source: &Path, enc: &Encryption, meta: &CopyMeta) -> Result<StoredCopy> {
    let id = remote.begin_upload(key, meta).await?;
    remote.upload(key, &id, &Shipment { source, meta, encryption: enc, options: &small_parts() }).await
}

#[tokio::test]
async fn a_plain_copy_round_trips_with_its_metadata() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("remote");
    std::fs::create_dir(&root).unwrap();
    let (source, meta) = archive(tmp.path(), (12 << 20) + 123);
    let remote = remote(&root);
    remote.check().await.unwrap();

    let copy = ship(&remote, "demo/backup-7.tar.gz", &source, &Encryption::None, &meta).await.unwrap();
    assert_eq!(copy.stored_bytes, meta.archive_bytes);
    assert_eq!(copy.stored_sha256, meta.archive_sha256, "unencrypted, the stored bytes are the archive");
    assert_eq!(copy.parts, 3);

    let info = remote.stat("demo/backup-7.tar.gz").await.unwrap().unwrap();
    assert_eq!(info.size, meta.archive_bytes);
    assert_eq!(info.meta.as_ref(), Some(&meta));
    let listed: Vec<String> = remote.list().await.unwrap().into_iter().map(|o| o.key).collect();
    assert_eq!(listed, ["demo/backup-7.tar.gz"], "no .partial or .meta in the listing");

    let (fetched, bytes) = remote.fetch("demo/backup-7.tar.gz", Vec::new(), None).await.unwrap();
    assert_eq!(bytes, std::fs::read(&source).unwrap());
    assert_eq!(fetched.archive_sha256, meta.archive_sha256);
    assert_eq!(fetched.stored_sha256, copy.stored_sha256);
}

#[tokio::test]
async fn an_encrypted_copy_needs_its_identity_and_decrypts_to_the_archive() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("remote");
    std::fs::create_dir(&root).unwrap();
    let (source, mut meta) = archive(tmp.path(), (6 << 20) + 1);
    meta.encryption = "age".into();
    let (secret, public) = generate_identity();
    let (other_secret, _) = generate_identity();
    let enc = Encryption::to_recipients(&[public]).unwrap();
    let remote = remote(&root);

    let copy = ship(&remote, "backup-7.tar.gz.age", &source, &enc, &meta).await.unwrap();
    assert!(copy.stored_bytes > meta.archive_bytes, "age adds a header and a tag per 64 KiB");
    let stored = std::fs::read(root.join("backup-7.tar.gz.age")).unwrap();
    assert!(stored.starts_with(b"age-encryption.org/v1\n"));
    assert_eq!(hex(&Sha256::digest(&stored)), copy.stored_sha256);
    let plain = std::fs::read(&source).unwrap();
    assert!(!stored.windows(64).any(|w| plain[..64] == *w), "plaintext on the remote");

    let ids = Identities::from_text(&secret).unwrap();
    let (fetched, bytes) = remote.fetch("backup-7.tar.gz.age", Vec::new(), Some(ids)).await.unwrap();
    assert_eq!(fetched.archive_sha256, meta.archive_sha256);
    assert_eq!(bytes.len() as u64, meta.archive_bytes);

    let err = remote.fetch("backup-7.tar.gz.age", Vec::new(), None).await.unwrap_err();
    assert!(err.is_integrity() && err.to_string().contains("identity"), "{err}");
    let wrong = Identities::from_text(&other_secret).unwrap();
    let err = remote.fetch("backup-7.tar.gz.age", Vec::new(), Some(wrong)).await.unwrap_err();
    assert!(matches!(err, RemoteError::Decrypt { .. }), "{err}");
}

#[tokio::test]
async fn altered_and_truncated_copies_are_caught() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("remote");
    std::fs::create_dir(&root).unwrap();
    let (source, mut meta) = archive(tmp.path(), 3 << 20);
    meta.encryption = "age".into();
    let (secret, public) = generate_identity();
    let enc = Encryption::to_recipients(&[public]).unwrap();
    let ids = Identities::from_text(&secret).unwrap();
    let remote = remote(&root);
    let copy = ship(&remote, "k.age", &source, &enc, &meta).await.unwrap();
    let path = root.join("k.age");

    // One flipped bit in the middle: age's chunk tag fails.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[1 << 20] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let err = remote.fetch("k.age", Vec::new(), Some(ids.clone())).await.unwrap_err();
    assert!(err.is_integrity(), "{err}");

    // Truncated: age notices the missing last chunk.
    let copy_bytes = ship(&remote, "k.age", &source, &enc, &meta).await.unwrap();
    assert_ne!(copy_bytes.stored_sha256, copy.stored_sha256, "a new file key each time");
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(copy_bytes.stored_bytes - 100).unwrap();
    let err = remote.fetch("k.age", Vec::new(), Some(ids.clone())).await.unwrap_err();
    assert!(err.is_integrity(), "{err}");

    // Unencrypted copies carry no tag: the hashes tell (the caller compares them).
    meta.encryption = "none".into();
    ship(&remote, "plain", &source, &Encryption::None, &meta).await.unwrap();
    let mut bytes = std::fs::read(root.join("plain")).unwrap();
    bytes[100] ^= 1;
    std::fs::write(root.join("plain"), &bytes).unwrap();
    let (fetched, _) = remote.fetch("plain", Vec::new(), None).await.unwrap();
    assert_ne!(fetched.archive_sha256, meta.archive_sha256);

    // A plain file where an encrypted copy is expected is refused.
    let err = remote.fetch("plain", Vec::new(), Some(ids)).await.unwrap_err();
    assert!(err.to_string().contains("not an age file"), "{err}");

    let err = remote.fetch("missing", Vec::new(), None).await.unwrap_err();
    assert!(err.is_integrity() && err.to_string().contains("not there"), "{err}");
}

#[tokio::test]
async fn an_archive_that_changed_on_disk_is_not_shipped() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("remote");
    std::fs::create_dir(&root).unwrap();
    let (source, meta) = archive(tmp.path(), 1 << 20);
    std::fs::OpenOptions::new().append(true).open(&source).unwrap().write_all(b"x").unwrap();
    let remote = remote(&root);
    let id = remote.begin_upload("k", &meta).await.unwrap();
    let err = remote
        .upload(
            "k",
            &id,
            &Shipment { source: &source, meta: &meta, encryption: &Encryption::None, options: &small_parts() },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, RemoteError::ArchiveChanged { .. }) && err.to_string().contains("changed on disk"), "{err}");
    assert!(!err.is_integrity(), "the remote is not at fault");
    assert!(remote.stat("k").await.unwrap().is_none(), "no copy under its final name");
    remote.abort_upload("k", &id).await.unwrap();
    remote.abort_upload("k", &id).await.unwrap(); // twice is fine: recovery may redo it
    assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0, "the partial file is gone");
}

/// Every file under `root`, relative to it, sorted.
fn files(root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push(path.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    found.sort();
    found
}

#[tokio::test]
async fn uploads_whose_ids_were_lost_are_aborted_by_key_and_only_those() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("remote");
    std::fs::create_dir(&root).unwrap();
    let (source, meta) = archive(tmp.path(), 1000);
    let remote = remote(&root);

    remote.begin_upload("demo/A", &meta).await.unwrap();
    remote.begin_upload("demo/A-longer", &meta).await.unwrap();
    ship(&remote, "demo/B", &source, &Encryption::None, &meta).await.unwrap();
    assert_eq!(remote.abort_uploads_of("demo/A").await.unwrap(), 1);
    assert_eq!(remote.abort_uploads_of("demo/A").await.unwrap(), 0, "nothing is left to abort");
    assert_eq!(files(&root), ["demo/A-longer.partial", "demo/B", "demo/B.meta"], "only A's upload went");

    // A completed copy is not an open upload: it and its metadata stay.
    assert_eq!(remote.abort_uploads_of("demo/B").await.unwrap(), 0);
    assert_eq!(remote.stat("demo/B").await.unwrap().unwrap().meta.as_ref(), Some(&meta));

    // An upload stopped after its metadata was written but before the copy was renamed into place
    // leaves KEY.meta (and maybe KEY.meta.partial) beside KEY.partial: all of it goes.
    remote.begin_upload("demo/C", &meta).await.unwrap();
    std::fs::write(root.join("demo/C.meta"), "backup_id=7\n").unwrap();
    std::fs::write(root.join("demo/C.meta.partial"), "backup_id=7\n").unwrap();
    assert_eq!(remote.abort_uploads_of("demo/C").await.unwrap(), 1);
    assert_eq!(files(&root), ["demo/A-longer.partial", "demo/B", "demo/B.meta"]);

    // A key never uploaded, under a directory that does not exist: nothing to do.
    assert_eq!(remote.abort_uploads_of("nowhere/k").await.unwrap(), 0);
    assert_eq!(remote.abort_uploads_of("demo/A-longer").await.unwrap(), 1);
    assert_eq!(remote.list().await.unwrap().into_iter().map(|o| o.key).collect::<Vec<_>>(), ["demo/B"]);
    for bad in ["../escape", "/abs", "a//b", ""] {
        assert!(matches!(remote.abort_uploads_of(bad).await, Err(RemoteError::BadKey { .. })), "{bad:?}");
    }
}

#[tokio::test]
async fn delete_is_idempotent_and_missing_directories_say_so() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("remote");
    std::fs::create_dir(&root).unwrap();
    let (source, meta) = archive(tmp.path(), 1000);
    let remote_ok = remote(&root);
    ship(&remote_ok, "a/b", &source, &Encryption::None, &meta).await.unwrap();
    remote_ok.delete("a/b").await.unwrap();
    remote_ok.delete("a/b").await.unwrap();
    assert!(remote_ok.list().await.unwrap().is_empty());

    let gone = remote(&tmp.path().join("not-mounted"));
    let err = gone.check().await.unwrap_err();
    assert!(err.is_config() && err.to_string().contains("does not exist"), "{err}");
    for bad in ["../escape", "/abs", "a//b"] {
        assert!(matches!(remote_ok.stat(bad).await, Err(RemoteError::BadKey { .. })), "{bad}");
    }
}

#[test]
fn secret_files_that_others_may_read_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let creds = tmp.path().join("creds");
    std::fs::write(&creds, "AWS_ACCESS_KEY_ID=GK123\nAWS_SECRET_ACCESS_KEY=very-secret-value\n").unwrap();
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = Credentials::from_file(&creds).unwrap_err().to_string();
    assert!(err.contains("readable by others") && err.contains("chmod 600"), "{err}");
    assert!(!err.contains("very-secret-value"));

    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o600)).unwrap();
    let parsed = Credentials::from_file(&creds).unwrap();
    assert_eq!(parsed.access_key_id, "GK123");
    assert_eq!(parsed.secret_access_key.expose(), "very-secret-value");
    assert!(!format!("{parsed:?}").contains("very-secret-value"), "Debug shows the secret");

    // The AWS shared-credentials format.
    std::fs::write(&creds, "[default]\naws_access_key_id = GK9\naws_secret_access_key = s3cr3t-s3cr3t\n").unwrap();
    assert_eq!(Credentials::from_file(&creds).unwrap().access_key_id, "GK9");
    std::fs::write(&creds, "AWS_ACCESS_KEY_ID=GK9\n").unwrap();
    assert!(Credentials::from_file(&creds).unwrap_err().to_string().contains("needs both"));

    let (secret, _) = generate_identity();
    let id_file = tmp.path().join("identity");
    std::fs::write(&id_file, format!("# a key\n{secret}\n")).unwrap();
    std::fs::set_permissions(&id_file, std::fs::Permissions::from_mode(0o640)).unwrap();
    assert!(Identities::from_file(&id_file).unwrap_err().to_string().contains("readable by others"));
    std::fs::set_permissions(&id_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    Identities::from_file(&id_file).unwrap();

    assert!(Encryption::to_recipients(&[]).is_err());
    assert!(Encryption::to_recipients(&["age1nope".into()]).unwrap_err().to_string().contains("not an age recipient"));
}

/// The `age` command (Debian's age 1.1): what lifeboat encrypts it decrypts, and what it encrypts
/// lifeboat fetches, so a copy can be opened without lifeboat at all.
#[tokio::test]
async fn copies_interoperate_with_the_age_command() {
    if std::process::Command::new("age").arg("--version").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set and the age command is missing (scripts/setup-test-env installs it)"
        );
        eprintln!("SKIPPING: no age command (install Debian's age package)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("remote");
    std::fs::create_dir(&root).unwrap();
    let (source, mut meta) = archive(tmp.path(), (1 << 20) + 77);
    meta.encryption = "age".into();
    let (secret, public) = generate_identity();
    let identity = tmp.path().join("identity");
    std::fs::write(&identity, format!("{secret}\n")).unwrap();
    std::fs::set_permissions(&identity, std::fs::Permissions::from_mode(0o600)).unwrap();
    let remote = remote(&root);

    let enc = Encryption::to_recipients(std::slice::from_ref(&public)).unwrap();
    ship(&remote, "k.age", &source, &enc, &meta).await.unwrap();
    let out =
        std::process::Command::new("age").args(["-d", "-i"]).arg(&identity).arg(root.join("k.age")).output().unwrap();
    assert!(out.status.success(), "age -d: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, std::fs::read(&source).unwrap());

    let by_age = root.join("by-age.age");
    let status =
        std::process::Command::new("age").args(["-r", &public, "-o"]).arg(&by_age).arg(&source).status().unwrap();
    assert!(status.success());
    let ids = Identities::from_file(&identity).unwrap();
    let (fetched, _) = remote.fetch("by-age.age", std::io::sink(), Some(ids)).await.unwrap();
    assert_eq!(fetched.archive_sha256, meta.archive_sha256);
}
