//! Hostile and damaged archives: each is refused with a clear error, nothing is written outside
//! the staging directory, the staging directory is removed and the target is unchanged.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{compare_trees, gz_archive, leftovers, raw_entry};
use lifeboat_archive::{ArchiveError, Compression, Expected, ExtractOptions, extract_to_staging, verify_archive};
use tar::EntryType;

struct World {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    target: PathBuf,
    outside: PathBuf,
    reference: PathBuf,
}

fn world() -> World {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let target = root.join("work/target");
    let outside = root.join("outside");
    let reference = root.join("reference");
    for d in [&target, &outside, &reference] {
        fs::create_dir_all(d).unwrap();
    }
    for d in [&target, &reference] {
        fs::write(d.join("keep.txt"), b"the data that must survive").unwrap();
        common::set_mtimes(d, 1_500_000_000);
    }
    World { _tmp: tmp, root, target, outside, reference }
}

/// Extracts `archive` into the world's target and checks that it was refused cleanly.
fn assert_refused(w: &World, archive: &Path, opts: &ExtractOptions, needle: &str) -> ArchiveError {
    let err = extract_to_staging(archive, &w.target, opts).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(needle), "error {msg:?} does not mention {needle:?}");
    assert!(leftovers(&w.root.join("work"), "lifeboat-staging").is_empty(), "staging left behind");
    assert_eq!(fs::read_dir(&w.outside).unwrap().count(), 0, "something was written outside");
    compare_trees(&w.reference, &w.target).unwrap();
    assert!(!Path::new("/tmp/lifeboat-pwned").exists());
    err
}

fn file(name: &[u8], data: &[u8]) -> Vec<u8> {
    raw_entry(name, EntryType::Regular, b"", data)
}

#[test]
fn absolute_paths_are_refused() {
    let w = world();
    let a = w.root.join("a.tar.gz");
    let abs = w.outside.join("evil");
    gz_archive(&a, &[file(b"ok.txt", b"fine"), file(abs.as_os_str().as_encoded_bytes(), b"evil")]);
    let err = assert_refused(&w, &a, &ExtractOptions::default(), "has an absolute path");
    assert!(err.is_integrity());
}

#[test]
fn dot_dot_escapes_are_refused() {
    let w = world();
    for name in [&b"../../outside/evil"[..], b"sub/../../outside/evil", b"./.."] {
        let a = w.root.join("a.tar.gz");
        gz_archive(&a, &[file(b"ok.txt", b"fine"), file(name, b"evil")]);
        assert_refused(&w, &a, &ExtractOptions::default(), "contains a `..` component");
    }
}

#[test]
fn symlink_then_file_through_it_is_refused() {
    let w = world();
    let a = w.root.join("a.tar.gz");
    let out = w.outside.as_os_str().as_encoded_bytes().to_vec();
    gz_archive(&a, &[raw_entry(b"link", EntryType::Symlink, &out, b""), file(b"link/pwned", b"evil")]);
    // By default the outward symlink itself is refused ...
    assert_refused(&w, &a, &ExtractOptions::default(), "symlink to an absolute path");
    // ... and when outward symlinks are allowed, writing through one still is not.
    let allow = ExtractOptions { allow_outside_symlinks: true, ..ExtractOptions::default() };
    assert_refused(&w, &a, &allow, "would be written through a symlink");
    // The same with a relative link that climbs out.
    gz_archive(&a, &[raw_entry(b"d/link", EntryType::Symlink, b"../../../outside", b"")]);
    assert_refused(&w, &a, &ExtractOptions::default(), "symlink that points outside the target");
}

#[test]
fn symlink_chains_that_escape_are_refused() {
    let w = world();
    let a = w.root.join("a.tar.gz");
    // `d/up` -> `..` is the root (fine); `d/esc` -> `up/..` looks inside but resolves outside.
    gz_archive(
        &a,
        &[
            raw_entry(b"d", EntryType::Directory, b"", b""),
            raw_entry(b"d/up", EntryType::Symlink, b"..", b""),
            raw_entry(b"d/esc", EntryType::Symlink, b"up/..", b""),
        ],
    );
    assert_refused(&w, &a, &ExtractOptions::default(), "resolves outside the target");
}

/// A symlink loop resolves nowhere (the kernel gives up with ELOOP), so it cannot lead outside:
/// it is accepted, as any tar accepts it. A long chain that does escape is still refused.
#[test]
fn symlink_loops_are_accepted_and_long_escaping_chains_refused() {
    let w = world();
    let a = w.root.join("loops.tar.gz");
    gz_archive(
        &a,
        &[
            raw_entry(b"x", EntryType::Symlink, b"x", b""),
            raw_entry(b"p", EntryType::Symlink, b"q", b""),
            raw_entry(b"q", EntryType::Symlink, b"p", b""),
            raw_entry(b"grow", EntryType::Symlink, b"grow/y", b""),
            raw_entry(b"d", EntryType::Directory, b"", b""),
            raw_entry(b"d/up", EntryType::Symlink, b"../d/up", b""),
        ],
    );
    let staged = extract_to_staging(&a, &w.target, &ExtractOptions::default()).unwrap();
    assert_eq!(fs::read_link(staged.staging.join("x")).unwrap(), Path::new("x"));
    staged.discard().unwrap();

    // 50 links, each to the next (more than the kernel follows from the first), the last one
    // lexically inside but out through `d/up`: the links the kernel can follow to the end are
    // refused.
    let mut entries =
        vec![raw_entry(b"d", EntryType::Directory, b"", b""), raw_entry(b"d/up", EntryType::Symlink, b"..", b"")];
    for i in 0..50 {
        let next = format!("l{}", i + 1);
        entries.push(raw_entry(format!("l{i}").as_bytes(), EntryType::Symlink, next.as_bytes(), b""));
    }
    entries.push(raw_entry(b"l50", EntryType::Symlink, b"d/up/..", b""));
    let b = w.root.join("chain.tar.gz");
    gz_archive(&b, &entries);
    assert_refused(&w, &b, &ExtractOptions::default(), "resolves outside the target");
}

#[test]
fn hard_links_out_of_the_tree_are_refused() {
    let w = world();
    let a = w.root.join("a.tar.gz");
    gz_archive(&a, &[raw_entry(b"passwd", EntryType::Link, b"/etc/passwd", b"")]);
    assert_refused(&w, &a, &ExtractOptions::default(), "hard link whose target has an absolute path");
    gz_archive(&a, &[raw_entry(b"x", EntryType::Link, b"../outside/f", b"")]);
    assert_refused(&w, &a, &ExtractOptions::default(), "contains a `..` component");
    // A hard link through a symlink to a file outside.
    fs::write(w.outside.join("secret"), b"s").unwrap();
    let out = w.outside.as_os_str().as_encoded_bytes().to_vec();
    gz_archive(
        &a,
        &[raw_entry(b"l", EntryType::Symlink, &out, b""), raw_entry(b"x", EntryType::Link, b"l/secret", b"")],
    );
    let allow = ExtractOptions { allow_outside_symlinks: true, ..ExtractOptions::default() };
    fs::remove_file(w.outside.join("secret")).unwrap();
    assert_refused(&w, &a, &allow, "not an earlier regular file");
    // Outside a requested subtree.
    gz_archive(&a, &[file(b"a/f", b"x"), raw_entry(b"b/x", EntryType::Link, b"a/f", b"")]);
    let sub = ExtractOptions { subtree: Some("b".into()), ..ExtractOptions::default() };
    assert_refused(&w, &a, &sub, "points outside the extracted tree");
}

#[test]
fn hard_links_to_later_entries_directories_and_symlinks_are_refused() {
    let w = world();
    let a = w.root.join("a.tar.gz");
    let link = |name: &[u8], target: &[u8]| raw_entry(name, EntryType::Link, target, b"");
    // At an entry that only comes later.
    gz_archive(&a, &[file(b"ok", b"ok"), link(b"x", b"f"), file(b"f", b"data")]);
    assert_refused(&w, &a, &ExtractOptions::default(), "not an earlier regular file");
    // At a directory.
    gz_archive(&a, &[raw_entry(b"d", EntryType::Directory, b"", b""), link(b"x", b"d")]);
    assert_refused(&w, &a, &ExtractOptions::default(), "not an earlier regular file");
    // At a symlink (to a file inside, or to one outside).
    gz_archive(&a, &[file(b"f", b"data"), raw_entry(b"s", EntryType::Symlink, b"f", b""), link(b"x", b"s")]);
    assert_refused(&w, &a, &ExtractOptions::default(), "not an earlier regular file");
    fs::write(w.outside.join("secret"), b"s").unwrap();
    let out = w.outside.join("secret").as_os_str().as_encoded_bytes().to_vec();
    gz_archive(&a, &[raw_entry(b"s", EntryType::Symlink, &out, b""), link(b"x", b"s")]);
    let allow = ExtractOptions { allow_outside_symlinks: true, ..ExtractOptions::default() };
    let err = extract_to_staging(&a, &w.target, &allow).unwrap_err();
    assert!(err.is_integrity() && err.to_string().contains("not an earlier regular file"), "{err}");
    assert_eq!(fs::metadata(w.outside.join("secret")).unwrap().len(), 1);
    fs::remove_file(w.outside.join("secret")).unwrap();
    // At itself, and at a name through a file.
    gz_archive(&a, &[link(b"x", b"x")]);
    assert_refused(&w, &a, &ExtractOptions::default(), "not an earlier regular file");
    gz_archive(&a, &[file(b"f", b"data"), link(b"x", b"f/g")]);
    let err = assert_refused(&w, &a, &ExtractOptions::default(), "not an earlier regular file");
    assert!(err.is_integrity());
}

#[test]
fn fifos_and_devices_are_recreated_only_inside_staging() {
    assert_eq!(unsafe { libc::geteuid() }, 0, "this test creates device nodes: run it as root");
    let w = world();
    let a = w.root.join("a.tar.gz");
    let mut dev = tar::Header::new_gnu();
    dev.set_path("null").unwrap();
    dev.set_entry_type(EntryType::Char);
    dev.set_device_major(1).unwrap();
    dev.set_device_minor(3).unwrap();
    dev.set_mode(0o666);
    dev.set_size(0);
    dev.set_cksum();
    gz_archive(
        &a,
        &[
            file(b"ok", b"ok"),
            dev.as_bytes().to_vec(),
            raw_entry(b"fifo", EntryType::Fifo, b"", b""),
            raw_entry(b"blk", EntryType::Block, b"", b""),
        ],
    );
    let staged = extract_to_staging(&a, &w.target, &ExtractOptions::default()).unwrap();
    assert_eq!(staged.report.special_count, 3);
    assert!(staged.report.warnings.is_empty(), "{:?}", staged.report.warnings);
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let null = fs::symlink_metadata(staged.staging.join("null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!((libc::major(null.rdev()), libc::minor(null.rdev()), null.mode() & 0o7777), (1, 3, 0o666));
    assert!(fs::symlink_metadata(staged.staging.join("fifo")).unwrap().file_type().is_fifo());
    assert!(fs::symlink_metadata(staged.staging.join("blk")).unwrap().file_type().is_block_device());
    staged.discard().unwrap();
    compare_trees(&w.reference, &w.target).unwrap();
    // Never through a symlink, never twice.
    let out = w.outside.as_os_str().as_encoded_bytes().to_vec();
    gz_archive(&a, &[raw_entry(b"l", EntryType::Symlink, &out, b""), raw_entry(b"l/fifo", EntryType::Fifo, b"", b"")]);
    let allow = ExtractOptions { allow_outside_symlinks: true, ..ExtractOptions::default() };
    assert_refused(&w, &a, &allow, "would be written through a symlink");
    gz_archive(&a, &[file(b"f", b"x"), raw_entry(b"f", EntryType::Fifo, b"", b"")]);
    assert_refused(&w, &a, &ExtractOptions::default(), "duplicates an earlier entry");
}

#[test]
fn oversized_extended_headers_are_refused() {
    let w = world();
    let a = w.root.join("a.tar.gz");
    let mut data = b"9437202 comment=".to_vec();
    data.resize(9_437_201, b'x');
    data.push(b'\n');
    gz_archive(&a, &[raw_entry(b"././@PaxHeader", EntryType::XHeader, b"", &data), file(b"f", b"x")]);
    let err = assert_refused(&w, &a, &ExtractOptions::default(), "has extended headers over");
    assert!(err.is_integrity());
}

#[test]
fn duplicates_are_refused() {
    let w = world();
    let a = w.root.join("a.tar.gz");
    gz_archive(&a, &[file(b"f", b"one"), file(b"f", b"two")]);
    assert_refused(&w, &a, &ExtractOptions::default(), "duplicates an earlier entry");
    gz_archive(&a, &[file(b"f", b"one"), raw_entry(b"f/g", EntryType::Regular, b"", b"x")]);
    assert_refused(&w, &a, &ExtractOptions::default(), "would be written under a file");
}

fn good_archive(w: &World, compression: Compression) -> (PathBuf, Expected) {
    let src = w.root.join("src");
    if !src.exists() {
        common::build_mixed_tree(&src, 3);
    }
    let dest = w.root.join(format!("good{}", compression.extension()));
    let s = common::write_one_with(&src, "paths/data", &dest, 2, compression);
    let e = Expected {
        sha256: s.sha256,
        size_bytes: s.size_bytes,
        entry_count: Some(s.entry_count),
        content_bytes: Some(s.content_bytes),
        roots: Vec::new(),
    };
    (dest, e)
}

const BOTH: [Compression; 2] = [Compression::Gzip, Compression::Zstd];

#[test]
fn truncated_archives_are_refused() {
    for compression in BOTH {
        truncated_archive_is_refused(compression);
    }
}

fn truncated_archive_is_refused(compression: Compression) {
    let w = world();
    let (good, expected) = good_archive(&w, compression);
    let bytes = fs::read(&good).unwrap();
    let cut = w.root.join(format!("cut{}", compression.extension()));
    fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = verify_archive(&cut, &expected, &mut |_| {}).unwrap_err();
    assert!(matches!(err, ArchiveError::Truncated { .. }), "{err}");
    assert!(err.to_string().contains("is truncated"), "{err}");
    let opts = ExtractOptions { subtree: Some("paths/data".into()), ..ExtractOptions::default() };
    let err = assert_refused(&w, &cut, &opts, "truncated");
    assert!(err.is_integrity());
    // Cut just before the trailer: all the data is there, only the gzip CRC and length (or the
    // zstd content checksum) are missing.
    fs::write(&cut, &bytes[..bytes.len() - 4]).unwrap();
    let err = assert_refused(&w, &cut, &opts, "truncated");
    assert!(matches!(err, ArchiveError::Truncated { .. }), "{compression}: {err}");
    let err = verify_archive(&cut, &expected, &mut |_| {}).unwrap_err();
    assert!(matches!(err, ArchiveError::Truncated { .. }), "{compression}: {err}");
}

#[test]
fn flipped_bytes_are_refused() {
    for compression in BOTH {
        flipped_bytes_in_one_are_refused(compression);
    }
}

fn flipped_bytes_in_one_are_refused(compression: Compression) {
    let w = world();
    let (good, expected) = good_archive(&w, compression);
    let bytes = fs::read(&good).unwrap();
    let opts = ExtractOptions { subtree: Some("paths/data".into()), ..ExtractOptions::default() };
    for (i, at) in [bytes.len() / 2, bytes.len() - 6, 3].into_iter().enumerate() {
        let mut bad = bytes.clone();
        bad[at] ^= 0x10;
        let path = w.root.join(format!("flip{i}{}", compression.extension()));
        fs::write(&path, &bad).unwrap();
        let err = verify_archive(&path, &expected, &mut |_| {}).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ArchiveError::ChecksumMismatch { .. }), "{msg}");
        assert!(msg.contains(&format!("expected sha256 {}", expected.sha256)), "{msg}");
        let err = extract_to_staging(&path, &w.target, &opts).unwrap_err();
        assert!(err.is_integrity(), "{compression}: flip at {at}: {err}");
        assert!(leftovers(&w.root, "lifeboat-staging").is_empty());
        compare_trees(&w.reference, &w.target).unwrap();
    }
    // The untouched archive still verifies and extracts.
    verify_archive(&good, &expected, &mut |_| {}).unwrap();
    extract_to_staging(&good, &w.target, &opts).unwrap().discard().unwrap();
    compare_trees(&w.reference, &w.target).unwrap();
}

#[test]
fn garbage_is_not_gzip() {
    let w = world();
    let a = w.root.join("garbage.tar.gz");
    fs::write(&a, b"this is not a gzip file at all, just text").unwrap();
    let err = assert_refused(&w, &a, &ExtractOptions::default(), "is not valid gzip");
    assert!(matches!(err, ArchiveError::BadGzip { .. }));
    // Valid gzip, not tar.
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut enc, &[7u8; 2000]).unwrap();
    fs::write(&a, enc.finish().unwrap()).unwrap();
    let err = assert_refused(&w, &a, &ExtractOptions::default(), "not a valid tar stream");
    assert!(matches!(err, ArchiveError::BadTar { .. }));
}

#[test]
fn a_zstd_magic_in_front_of_garbage_is_not_zstd() {
    let w = world();
    let a = w.root.join("garbage.tar.zst");
    let mut bytes = vec![0x28, 0xb5, 0x2f, 0xfd];
    bytes.extend_from_slice(&[0xa5; 300]);
    fs::write(&a, &bytes).unwrap();
    let err = assert_refused(&w, &a, &ExtractOptions::default(), "is not valid zstd");
    assert!(matches!(err, ArchiveError::BadZstd { .. }), "{err}");
    assert!(err.is_integrity());
    // Valid zstd, not tar.
    fs::write(&a, zstd::encode_all(&[7u8; 2000][..], 3).unwrap()).unwrap();
    let err = assert_refused(&w, &a, &ExtractOptions::default(), "not a valid tar stream");
    assert!(matches!(err, ArchiveError::BadTar { .. }), "{err}");
    // A good zstd archive followed by garbage: refused, not silently cut short.
    let (good, _) = good_archive(&w, Compression::Zstd);
    let mut bytes = fs::read(&good).unwrap();
    bytes.extend_from_slice(b"trailing garbage after the frame");
    fs::write(&a, &bytes).unwrap();
    let err = extract_to_staging(
        &a,
        &w.target,
        &ExtractOptions { subtree: Some("paths/data".into()), ..ExtractOptions::default() },
    )
    .unwrap_err();
    assert!(err.is_integrity(), "{err}");
}
