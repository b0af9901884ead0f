//! `WriteOptions::max_bytes` and `max_files`: a write that would pass them fails naming the path
//! that made it grow and the limit, before reading that file, and leaves no partial file.

mod common;

use std::fs;
use std::path::Path;

use lifeboat_archive::{ArchiveError, Root, WriteOptions, partial_path, write_archive};

const MIB: u64 = 1 << 20;

fn write(src: &Path, dest: &Path, opts: &WriteOptions, seen: &mut u64) -> Result<(), ArchiveError> {
    let roots = [Root { archive_name: "d".into(), source: src.to_path_buf() }];
    write_archive(&roots, dest, opts, &mut |n| *seen = (*seen).max(n)).map(|_| ())
}

#[test]
fn max_bytes_stops_before_reading_the_file_that_passes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("a-small"), vec![1u8; MIB as usize]).unwrap();
    fs::write(src.join("b-grown"), vec![2u8; 8 * MIB as usize]).unwrap();
    let dest = tmp.path().join("x.tar.gz");
    let mut seen = 0;
    let opts = WriteOptions { max_bytes: Some(4 * MIB), ..WriteOptions::default() };
    let err = write(&src, &dest, &opts, &mut seen).unwrap_err();
    assert!(matches!(err, ArchiveError::LimitExceeded { limit, .. } if limit == 4 * MIB), "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&src.join("b-grown").display().to_string()) && msg.contains("4194304 bytes"), "{msg}");
    assert!(!err.is_integrity());
    assert!(seen <= MIB, "{seen} bytes were read: the offending file was read");
    assert!(!dest.exists() && !partial_path(&dest).exists());

    // Exactly at the limit is fine; holes do not count.
    let f = fs::File::create(src.join("c-sparse")).unwrap();
    f.set_len(64 << 30).unwrap();
    drop(f);
    let opts = WriteOptions { max_bytes: Some(9 * MIB), ..WriteOptions::default() };
    write(&src, &dest, &opts, &mut seen).unwrap();
}

#[test]
fn max_files_stops_at_the_directory_that_passes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(src.join("calm")).unwrap();
    fs::create_dir_all(src.join("swarm")).unwrap();
    fs::write(src.join("calm/one"), b"1").unwrap();
    for i in 0..50 {
        fs::write(src.join(format!("swarm/f{i}")), b"x").unwrap();
    }
    let dest = tmp.path().join("x.tar.gz");
    let mut seen = 0;
    let opts = WriteOptions { max_files: Some(20), ..WriteOptions::default() };
    let err = write(&src, &dest, &opts, &mut seen).unwrap_err();
    assert!(matches!(err, ArchiveError::LimitExceeded { limit: 20, .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&src.join("swarm").display().to_string()) && msg.contains("20 entries"), "{msg}");
    assert!(!dest.exists() && !partial_path(&dest).exists());

    // The root, two directories, 51 files: 54 entries.
    let opts = WriteOptions { max_files: Some(54), ..WriteOptions::default() };
    write(&src, &dest, &opts, &mut seen).unwrap();
    fs::remove_file(&dest).unwrap();
    let opts = WriteOptions { max_files: Some(53), ..WriteOptions::default() };
    let err = write(&src, &dest, &opts, &mut seen).unwrap_err();
    assert!(err.to_string().contains("swarm"), "{err}");
    assert!(!dest.exists() && !partial_path(&dest).exists());
}

#[test]
fn hard_links_add_entries_not_bytes_and_sockets_neither() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("a"), vec![3u8; 2 * MIB as usize]).unwrap();
    fs::hard_link(src.join("a"), src.join("b")).unwrap();
    common::sh(&format!("mkfifo '{}'", src.join("f").display()));
    let _listener = std::os::unix::net::UnixListener::bind(src.join("s.sock")).unwrap();
    let dest = tmp.path().join("x.tar.gz");
    let mut seen = 0;
    // The root, `a`, the link `b` and the fifo: four entries and 2 MiB; the socket is skipped.
    let opts = WriteOptions { max_bytes: Some(2 * MIB), max_files: Some(4), ..WriteOptions::default() };
    write(&src, &dest, &opts, &mut seen).unwrap();
    fs::remove_file(&dest).unwrap();
    let opts = WriteOptions { max_files: Some(3), ..WriteOptions::default() };
    let err = write(&src, &dest, &opts, &mut seen).unwrap_err();
    assert!(matches!(err, ArchiveError::LimitExceeded { limit: 3, .. }), "{err}");
    assert!(!dest.exists() && !partial_path(&dest).exists());
    let opts = WriteOptions { max_bytes: Some(2 * MIB - 1), ..WriteOptions::default() };
    let err = write(&src, &dest, &opts, &mut seen).unwrap_err();
    assert!(err.to_string().contains(&src.join("a").display().to_string()), "{err}");
}

#[test]
fn max_bytes_names_the_small_file_that_passes_it_in_a_directory_read_ahead() {
    // 40 files of 1000 bytes: enough for the directory to be read ahead on another thread.
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    for i in 0..40 {
        fs::write(src.join(format!("f{i:02}")), vec![b'a' + (i % 26) as u8; 1000]).unwrap();
    }
    let dest = tmp.path().join("x.tar.gz");
    let mut seen = 0;
    let opts = WriteOptions { max_bytes: Some(25_500), ..WriteOptions::default() };
    let err = write(&src, &dest, &opts, &mut seen).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&src.join("f25").display().to_string()), "{msg}");
    assert!(seen <= 25_000, "{seen} bytes counted: a file past the limit was stored");
    assert!(!dest.exists() && !partial_path(&dest).exists());
    let opts = WriteOptions { max_bytes: Some(40_000), ..WriteOptions::default() };
    write(&src, &dest, &opts, &mut seen).unwrap();
    let entries = lifeboat_archive::list_entries(&dest).unwrap();
    let names: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    let expected: Vec<String> = std::iter::once("d".to_string()).chain((0..40).map(|i| format!("d/f{i:02}"))).collect();
    assert_eq!(names, expected, "entries out of order");
}
