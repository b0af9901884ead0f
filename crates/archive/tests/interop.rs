//! Interop with the real tools: GNU tar, gzip and pigz read lifeboat's archives, and lifeboat
//! extracts theirs. Trees of several MB, so the parallel compressor runs many blocks.

mod common;

use std::fs;
use std::path::Path;

use common::{build_mixed_tree, compare_trees, sh, write_one, write_one_with};
use lifeboat_archive::{
    Compression, EntryKind, Expected, ExtractOptions, extract_to_staging, list_entries, read_member, verify_archive,
};

fn q(p: &Path) -> String {
    format!("'{}'", p.display())
}

#[test]
fn gnu_tar_and_gzip_read_lifeboat_archives() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    build_mixed_tree(&src, 6);
    let dest = tmp.path().join("b.tar.gz");
    write_one(&src, "paths/data", &dest, 2);
    sh(&format!("gzip -t {}", q(&dest)));
    let listing = sh(&format!("tar -tzf {}", q(&dest)));
    assert!(listing.contains(&"n".repeat(60)), "long name missing from GNU tar's listing");
    assert!(listing.contains("ünïcødé"), "unicode name missing");
    let out = tmp.path().join("out");
    fs::create_dir(&out).unwrap();
    sh(&format!("tar -xzf {} -C {}", q(&dest), q(&out)));
    compare_trees(&src, &out.join("paths/data")).unwrap();
    sh(&format!("diff -r --no-dereference {} {}", q(&src), q(&out.join("paths/data"))));
    // zcat agrees on the uncompressed length too (ISIZE and CRC checked by gzip).
    let n: u64 = sh(&format!("gzip -dc {} | wc -c", q(&dest))).trim().parse().unwrap();
    assert_eq!(n % 512, 0);
}

#[test]
fn compressible_and_incompressible_block_streams_are_valid_gzip() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("zeros"), vec![0u8; 5 << 20]).unwrap();
    fs::write(src.join("random"), common::noise(3 << 20, 9)).unwrap();
    fs::write(src.join("text"), common::text(3 << 20, 5)).unwrap();
    for threads in [1, 2, 4] {
        let dest = tmp.path().join(format!("t{threads}.tar.gz"));
        write_one(&src, "d", &dest, threads);
        sh(&format!("gzip -t {}", q(&dest)));
        let out = tmp.path().join(format!("o{threads}"));
        fs::create_dir(&out).unwrap();
        sh(&format!("tar -xzf {} -C {}", q(&dest), q(&out)));
        compare_trees(&src, &out.join("d")).unwrap();
    }
}

fn extract_and_compare(archive: &Path, src: &Path, target: &Path, subtree: Option<&str>) {
    let opts = ExtractOptions { subtree: subtree.map(String::from), ..ExtractOptions::default() };
    let staged = extract_to_staging(archive, target, &opts).unwrap();
    staged.swap_in().unwrap().commit().unwrap();
    compare_trees(src, target).unwrap();
}

#[test]
fn lifeboat_extracts_gnu_tar_archives() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    build_mixed_tree(&src, 4);
    // GNU format with sparse entries, and POSIX (pax) format.
    let gnu = tmp.path().join("gnu.tar.gz");
    sh(&format!("tar --sparse -czf {} -C {} .", q(&gnu), q(&src)));
    extract_and_compare(&gnu, &src, &tmp.path().join("t1"), None);
    let pax = tmp.path().join("pax.tar.gz");
    sh(&format!("tar --format=pax -czf {} -C {} .", q(&pax), q(&tmp.path().join("t1"))));
    extract_and_compare(&pax, &src, &tmp.path().join("t2"), None);
    // A named top directory, extracted as a subtree.
    let named = tmp.path().join("named.tar.gz");
    sh(&format!("tar -czf {} -C {} src", q(&named), q(tmp.path())));
    extract_and_compare(&named, &src, &tmp.path().join("t3"), Some("src"));
}

#[test]
fn lifeboat_extracts_pigz_archives() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    build_mixed_tree(&src, 6);
    let archive = tmp.path().join("p.tar.gz");
    sh(&format!("tar -cf - -C {} . | pigz -p 2 -6 > {}", q(&src), q(&archive)));
    extract_and_compare(&archive, &src, &tmp.path().join("t"), None);
}

#[test]
fn list_entries_and_read_member_agree_with_sha256sum() {
    let tmp = tempfile::tempdir().unwrap();
    let pkg = tmp.path().join("pkg");
    fs::create_dir_all(pkg.join("deploy")).unwrap();
    fs::write(pkg.join("lifeboat-package.toml"), "version = \"2.0\"\n").unwrap();
    fs::write(pkg.join("deploy/docker-compose.yml"), "services: {}\n").unwrap();
    let archive = tmp.path().join("pkg.tar.gz");
    sh(&format!("tar -czf {} -C {} .", q(&archive), q(&pkg)));
    let manifest = read_member(&archive, "lifeboat-package.toml", 4096).unwrap();
    assert_eq!(manifest, b"version = \"2.0\"\n");
    let too_small = read_member(&archive, "lifeboat-package.toml", 4).unwrap_err();
    assert!(too_small.to_string().contains("more than the 4 allowed"), "{too_small}");
    let missing = read_member(&archive, "nope.toml", 4096).unwrap_err();
    assert!(missing.to_string().contains("has no entry \"nope.toml\""), "{missing}");
    let entries = list_entries(&archive).unwrap();
    let compose = entries.iter().find(|e| e.path == "deploy/docker-compose.yml").unwrap();
    assert_eq!(compose.kind, EntryKind::File);
    let expected = sh(&format!("sha256sum {}", q(&pkg.join("deploy/docker-compose.yml"))));
    assert_eq!(compose.sha256.as_deref(), expected.split_whitespace().next());
    assert!(entries.iter().any(|e| e.path == "deploy" && e.kind == EntryKind::Dir));
}

#[test]
fn gnu_tar_and_zstd_read_lifeboat_zstd_archives() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    build_mixed_tree(&src, 6);
    // 0 is what backups use: one worker per core (`Compression::default_threads`).
    for threads in [0, 1, 3] {
        let dest = tmp.path().join(format!("b{threads}.tar.zst"));
        let summary = write_one_with(&src, "paths/data", &dest, threads, Compression::Zstd);
        assert_eq!(&fs::read(&dest).unwrap()[..4], &[0x28, 0xb5, 0x2f, 0xfd], "not a zstd frame");
        // zstd checks the frame and its content checksum.
        sh(&format!("zstd -tq {}", q(&dest)));
        let listing = sh(&format!("tar --zstd -tf {}", q(&dest)));
        assert!(listing.contains(&"n".repeat(60)), "long name missing from GNU tar's listing");
        assert!(listing.contains("ünïcødé"), "unicode name missing");
        let out = tmp.path().join(format!("out{threads}"));
        fs::create_dir(&out).unwrap();
        sh(&format!("tar --zstd -xf {} -C {}", q(&dest), q(&out)));
        compare_trees(&src, &out.join("paths/data")).unwrap();
        sh(&format!("diff -r --no-dereference {} {}", q(&src), q(&out.join("paths/data"))));
        // lifeboat's own reader: verify, list and extract.
        let expected = Expected {
            sha256: summary.sha256.clone(),
            size_bytes: summary.size_bytes,
            entry_count: Some(summary.entry_count),
            content_bytes: Some(summary.content_bytes),
            roots: vec!["paths/data".into()],
        };
        let report = verify_archive(&dest, &expected, &mut |_| {}).unwrap();
        assert_eq!(report.file_count, summary.file_count);
        assert_eq!(report.roots, summary.roots);
        assert_eq!(list_entries(&dest).unwrap().len() as u64, summary.entry_count);
        extract_and_compare(&dest, &src, &tmp.path().join(format!("t{threads}")), Some("paths/data"));
    }
}

#[test]
fn lifeboat_extracts_gnu_tar_and_zstd_archives() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    build_mixed_tree(&src, 4);
    let gnu = tmp.path().join("gnu.tar.zst");
    sh(&format!("tar --sparse --zstd -cf {} -C {} .", q(&gnu), q(&src)));
    extract_and_compare(&gnu, &src, &tmp.path().join("t1"), None);
    // Multi-threaded zstd, and several frames back to back (as `cat a.zst b.zst` makes).
    let mt = tmp.path().join("mt.tar.zst");
    sh(&format!("tar -cf - -C {} . | zstd -q -T2 -3 > {}", q(&src), q(&mt)));
    extract_and_compare(&mt, &src, &tmp.path().join("t2"), None);
    let split = tmp.path().join("split.tar.zst");
    let tar = tmp.path().join("plain.tar");
    sh(&format!("tar -cf {} -C {} .", q(&tar), q(&src)));
    sh(&format!(
        "head -c 100000 {t} | zstd -q > {s} && tail -c +100001 {t} | zstd -q >> {s}",
        t = q(&tar),
        s = q(&split)
    ));
    extract_and_compare(&split, &src, &tmp.path().join("t3"), None);
    // A package manifest read from a zstd archive, by its magic and not its name.
    let renamed = tmp.path().join("named-like-gzip.tar.gz");
    fs::copy(&mt, &renamed).unwrap();
    assert!(!list_entries(&renamed).unwrap().is_empty());
}
