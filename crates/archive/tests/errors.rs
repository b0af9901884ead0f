//! Writer and verifier errors, and the swap protocol.

mod common;

use std::fs;

use lifeboat_archive::{
    ArchiveError, Compression, Expected, ExtractOptions, Root, Staged, Swapped, WriteOptions, extract_to_staging,
    partial_path, verify_archive, write_archive,
};

fn opts() -> WriteOptions {
    WriteOptions::default()
}

#[test]
fn missing_root_names_the_path() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-such-dir");
    let dest = tmp.path().join("x.tar.gz");
    let roots = [Root { archive_name: "paths/data".into(), source: missing.clone() }];
    let err = write_archive(&roots, &dest, &opts(), &mut |_| {}).unwrap_err();
    assert!(matches!(err, ArchiveError::MissingRoot { .. }));
    assert!(err.to_string().contains(&missing.display().to_string()), "{err}");
    assert!(!dest.exists() && !partial_path(&dest).exists());
}

#[test]
fn sockets_are_skipped_and_named() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("a"), vec![1u8; 300_000]).unwrap();
    let sock = src.join("z.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let dest = tmp.path().join("x.tar.gz");
    let roots = [Root { archive_name: "d".into(), source: src }];
    let summary = write_archive(&roots, &dest, &opts(), &mut |_| {}).unwrap();
    assert_eq!(
        summary.skipped,
        vec![lifeboat_archive::Skipped { path: sock.clone(), kind: lifeboat_archive::SkippedKind::Socket }]
    );
    let msg = summary.skipped[0].to_string();
    assert!(msg.contains(&sock.display().to_string()) && msg.contains("socket"), "{msg}");
    assert_eq!((summary.entry_count, summary.file_count), (2, 1));
    let names: Vec<String> = lifeboat_archive::list_entries(&dest).unwrap().into_iter().map(|e| e.path).collect();
    assert_eq!(names, ["d", "d/a"]);
}

#[test]
fn existing_destination_and_bad_names_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    let dest = tmp.path().join("x.tar.gz");
    fs::write(&dest, b"an older archive").unwrap();
    let roots = [Root { archive_name: "d".into(), source: src.clone() }];
    let err = write_archive(&roots, &dest, &opts(), &mut |_| {}).unwrap_err();
    assert!(matches!(err, ArchiveError::DestinationExists { .. }), "{err}");
    assert_eq!(fs::read(&dest).unwrap(), b"an older archive");
    let dest2 = tmp.path().join("y.tar.gz");
    for (names, needle) in [
        (vec!["../x"], "must not contain"),
        (vec!["/abs"], "must be relative"),
        (vec![""], "empty"),
        (vec!["paths/data", "paths/data/sub"], "overlaps"),
    ] {
        let roots: Vec<Root> =
            names.iter().map(|n| Root { archive_name: n.to_string(), source: src.clone() }).collect();
        let err = write_archive(&roots, &dest2, &opts(), &mut |_| {}).unwrap_err();
        assert!(err.to_string().contains(needle), "{err}");
    }
    let err =
        write_archive(&roots, &dest2, &WriteOptions { level: 10, threads: 1, ..WriteOptions::default() }, &mut |_| {})
            .unwrap_err();
    assert!(matches!(err, ArchiveError::InvalidOptions(_)));
    for level in [0, 20] {
        let zstd = WriteOptions { compression: Compression::Zstd, level, threads: 1, ..WriteOptions::default() };
        let err = write_archive(&roots, &dest2, &zstd, &mut |_| {}).unwrap_err();
        assert!(err.to_string().contains(&format!("zstd compression level {level} is not between 1 and 19")), "{err}");
    }
    assert!(!dest2.exists() && !partial_path(&dest2).exists());
}

#[test]
fn verify_reports_size_and_count_mismatches() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    common::build_mixed_tree(&src, 1);
    let dest = tmp.path().join("x.tar.gz");
    let s = common::write_one(&src, "d", &dest, 2);
    let good = Expected {
        sha256: s.sha256.to_uppercase(),
        size_bytes: s.size_bytes,
        entry_count: Some(s.entry_count),
        content_bytes: Some(s.content_bytes),
        roots: Vec::new(),
    };
    let report = verify_archive(&dest, &good, &mut |_| {}).unwrap();
    assert_eq!((report.entry_count, report.file_count), (s.entry_count, s.file_count));
    let err = verify_archive(&dest, &Expected { entry_count: Some(s.entry_count + 1), ..good.clone() }, &mut |_| {})
        .unwrap_err();
    assert!(matches!(err, ArchiveError::CountMismatch { what: "entries", .. }), "{err}");
    let err = verify_archive(&dest, &Expected { content_bytes: Some(1), ..good.clone() }, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("content bytes"), "{err}");
    let mut longer = fs::read(&dest).unwrap();
    longer.extend_from_slice(b"junk");
    fs::write(&dest, &longer).unwrap();
    let err = verify_archive(&dest, &good, &mut |_| {}).unwrap_err();
    assert!(matches!(err, ArchiveError::SizeMismatch { .. }), "{err}");
    let err = verify_archive(&dest, &Expected { size_bytes: s.size_bytes + 4, ..good }, &mut |_| {}).unwrap_err();
    assert!(matches!(err, ArchiveError::ChecksumMismatch { .. }), "{err}");
}

#[test]
fn swap_commit_and_revert() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("new.txt"), b"new").unwrap();
    let archive = tmp.path().join("a.tar.gz");
    common::write_one(&src, "paths/data", &archive, 1);
    let target = tmp.path().join("data");
    fs::create_dir(&target).unwrap();
    fs::write(target.join("old.txt"), b"old").unwrap();
    let opts = ExtractOptions {
        subtree: Some("paths/data".into()),
        staging: Some(tmp.path().join("data.staging")),
        ..ExtractOptions::default()
    };

    // Revert puts the old tree back, and is idempotent.
    let staged = extract_to_staging(&archive, &target, &opts).unwrap();
    assert_eq!(staged.staging, tmp.path().join("data.staging"));
    assert!(target.join("old.txt").exists(), "the target changed before the swap");
    let swapped = staged.swap_in().unwrap();
    assert!(target.join("new.txt").exists() && !target.join("old.txt").exists());
    let aside = swapped.old_aside.clone().unwrap();
    assert!(aside.join("old.txt").exists());
    swapped.clone().revert().unwrap();
    swapped.revert().unwrap();
    assert!(target.join("old.txt").exists() && !target.join("new.txt").exists());
    assert!(!aside.exists());
    assert_eq!(common::leftovers(tmp.path(), "lifeboat").len(), 0);

    // Commit deletes the old tree, and is idempotent.
    let swapped = extract_to_staging(&archive, &target, &opts).unwrap().swap_in().unwrap();
    swapped.clone().commit().unwrap();
    swapped.commit().unwrap();
    assert!(target.join("new.txt").exists());
    assert_eq!(common::leftovers(tmp.path(), "lifeboat").len(), 0);

    // A crash between the two renames of a swap: revert from the journaled names.
    let staged = extract_to_staging(&archive, &target, &opts).unwrap();
    let aside = tmp.path().join("data.aside");
    fs::rename(&target, &aside).unwrap();
    Swapped { target: target.clone(), old_aside: Some(aside.clone()) }.revert().unwrap();
    assert!(target.join("new.txt").exists() && !aside.exists());
    Staged { ..staged }.discard().unwrap();
    assert!(!tmp.path().join("data.staging").exists());

    // No previous target: revert removes the new one.
    let fresh = tmp.path().join("fresh");
    let opts2 = ExtractOptions { subtree: Some("paths/data".into()), ..ExtractOptions::default() };
    let swapped = extract_to_staging(&archive, &fresh, &opts2).unwrap().swap_in().unwrap();
    assert!(swapped.old_aside.is_none() && fresh.join("new.txt").exists());
    swapped.revert().unwrap();
    assert!(!fresh.exists());

    // A subtree that is not there.
    let opts3 = ExtractOptions { subtree: Some("volumes/db".into()), ..ExtractOptions::default() };
    let err = extract_to_staging(&archive, &fresh, &opts3).unwrap_err();
    assert!(matches!(err, ArchiveError::MemberNotFound { .. }), "{err}");
    assert_eq!(common::leftovers(tmp.path(), "staging").len(), 0);
}

#[test]
fn a_cancelled_write_stops_within_a_megabyte_and_leaves_nothing() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    for i in 0..8 {
        fs::write(src.join(format!("f{i}")), vec![i as u8; 1 << 20]).unwrap();
    }
    let dest = tmp.path().join("x.tar.gz");
    let roots = [Root { archive_name: "d".into(), source: src }];
    let cancel = Arc::new(AtomicBool::new(false));
    let opts = WriteOptions { cancel: Some(Arc::clone(&cancel)), ..WriteOptions::default() };
    let mut seen = 0;
    let err = write_archive(&roots, &dest, &opts, &mut |n| {
        seen = n;
        cancel.store(true, Ordering::Relaxed);
    })
    .unwrap_err();
    assert!(matches!(err, ArchiveError::Cancelled), "{err}");
    assert!(seen < 3 << 20, "the writer went on for {seen} bytes after the cancel");
    assert!(!dest.exists() && !partial_path(&dest).exists());
}
