//! A manifest in front of the roots: leading files come first, the census agrees with what the
//! writer archives, a tree that changes between the two is refused, and verification tallies each
//! root as the writer did.

mod common;

use common::sh;
use lifeboat_archive::{
    ArchiveError, Expected, LeadingFile, Root, RootTally, WriteOptions, census, read_first_member, verify_archive,
    write_archive,
};
use std::fs;
use std::os::unix::net::UnixListener;

fn tree(dir: &std::path::Path) -> Vec<Root> {
    let a = dir.join("a");
    fs::create_dir_all(a.join("sub")).unwrap();
    fs::write(a.join("one"), b"12345").unwrap();
    fs::write(a.join("sub/two"), vec![7u8; 3000]).unwrap();
    fs::hard_link(a.join("one"), a.join("one-again")).unwrap();
    std::os::unix::fs::symlink("one", a.join("link")).unwrap();
    let _socket = UnixListener::bind(a.join("sock")).unwrap();
    let sparse = fs::File::create(a.join("sparse")).unwrap();
    sparse.set_len(1 << 20).unwrap();
    let b = dir.join("b.conf");
    fs::write(&b, b"conf").unwrap();
    vec![Root { archive_name: "paths/a".into(), source: a }, Root { archive_name: "deploy/b.conf".into(), source: b }]
}

const MANIFEST: &[u8] = br#"{"format":1}"#;

/// Writes `roots` to `dest` with `MANIFEST` as the leading file and the census as the expected
/// tallies, checks the writer's own tallies agree, and returns the summary.
fn write_with_manifest(
    roots: &[Root],
    tallies: &[RootTally],
    dest: &std::path::Path,
    compression: lifeboat_archive::Compression,
    level: u32,
) -> lifeboat_archive::ArchiveSummary {
    let opts = WriteOptions {
        compression,
        level,
        threads: 2,
        leading: vec![LeadingFile { name: "lifeboat/manifest.json".into(), data: MANIFEST.to_vec(), mtime: 1 }],
        expect: Some(tallies.to_vec()),
        ..WriteOptions::default()
    };
    let summary = write_archive(roots, dest, &opts, &mut |_| {}).unwrap();
    assert_eq!(summary.roots, tallies);
    summary
}

#[test]
fn the_census_matches_what_is_archived_and_the_manifest_comes_first() {
    let dir = tempfile::tempdir().unwrap();
    let roots = tree(dir.path());
    let tallies = census(&roots).unwrap();
    assert_eq!(
        tallies,
        [
            RootTally { file_count: 3, content_bytes: 5 + 3000 + (1 << 20) },
            RootTally { file_count: 1, content_bytes: 4 }
        ]
    );
    let dest = dir.path().join("out.tar.gz");
    let summary = write_with_manifest(&roots, &tallies, &dest, lifeboat_archive::Compression::Gzip, 6);
    // The leading file counts as a file of the archive, in no root.
    assert_eq!(summary.file_count, 3 + 1 + 1);

    let listing = sh(&format!("tar -tzf {}", dest.display()));
    assert_eq!(listing.lines().next(), Some("lifeboat/manifest.json"), "{listing}");
    assert_eq!(read_first_member(&dest, "lifeboat/manifest.json", 1024).unwrap(), MANIFEST);
    assert!(matches!(read_first_member(&dest, "paths/a/one", 1024), Err(ArchiveError::MemberNotFound { .. })));

    let expected = Expected {
        sha256: summary.sha256.clone(),
        size_bytes: summary.size_bytes,
        entry_count: Some(summary.entry_count),
        content_bytes: Some(summary.content_bytes),
        roots: vec!["paths/a".into(), "deploy/b.conf".into(), "paths/nothing".into()],
    };
    let report = verify_archive(&dest, &expected, &mut |_| {}).unwrap();
    assert_eq!(report.roots, [tallies[0], tallies[1], RootTally::default()]);
}

#[test]
fn a_tree_that_changed_since_its_census_is_refused_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let roots = tree(dir.path());
    let tallies = census(&roots).unwrap();
    fs::write(roots[0].source.join("late"), b"written after the census").unwrap();
    let dest = dir.path().join("out.tar.gz");
    let opts = WriteOptions { threads: 1, expect: Some(tallies), ..WriteOptions::default() };
    let err = write_archive(&roots, &dest, &opts, &mut |_| {}).unwrap_err();
    assert!(matches!(err, ArchiveError::TreeChanged { .. }), "{err}");
    assert!(err.to_string().contains("3 files of"), "{err}");
    assert!(!dest.exists());
    assert!(!lifeboat_archive::partial_path(&dest).exists());
}

#[test]
fn a_leading_file_with_a_bad_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let roots = tree(dir.path());
    let dest = dir.path().join("out.tar.gz");
    let opts = WriteOptions {
        leading: vec![LeadingFile { name: "../escape".into(), data: Vec::new(), mtime: 0 }],
        ..WriteOptions::default()
    };
    let err = write_archive(&roots, &dest, &opts, &mut |_| {}).unwrap_err();
    assert!(matches!(err, ArchiveError::InvalidRootName { .. }), "{err}");
    assert!(!dest.exists());
}

#[test]
fn a_zstd_archive_has_its_manifest_first_and_reads_it_by_the_magic() {
    let dir = tempfile::tempdir().unwrap();
    let roots = tree(dir.path());
    let tallies = census(&roots).unwrap();
    let dest = dir.path().join("out.tar.zst");
    write_with_manifest(&roots, &tallies, &dest, lifeboat_archive::Compression::Zstd, 3);
    let listing = sh(&format!("tar --zstd -tf {}", dest.display()));
    assert_eq!(listing.lines().next(), Some("lifeboat/manifest.json"), "{listing}");
    assert_eq!(read_first_member(&dest, "lifeboat/manifest.json", 1024).unwrap(), MANIFEST);
    assert_eq!(lifeboat_archive::read_member(&dest, "paths/a/sub/two", 4096).unwrap(), vec![7u8; 3000]);
    assert!(matches!(read_first_member(&dest, "paths/a/one", 1024), Err(ArchiveError::MemberNotFound { .. })));
}
