//! Crash test: a writer killed with SIGKILL midway leaves only `NAME.partial`, never `NAME`; the
//! next write over the stale partial succeeds. Also: an unreadable file fails the write cleanly.
//!
//! The child is this test binary itself, re-run with `LIFEBOAT_CHILD` set, so that the killed
//! process is a real writer with real threads and open files.

mod common;

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use lifeboat_archive::{ArchiveError, Expected, Root, WriteOptions, partial_path, verify_archive, write_archive};

fn child(test: &str, env: &[(&str, &Path)]) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", test, "--nocapture", "--test-threads=1"]).env("LIFEBOAT_CHILD", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// In the child: writes the archive, and parks in the progress callback once some data is out,
/// signalling the parent through a `ready` file. Without `LIFEBOAT_CHILD` it does nothing.
#[test]
fn child_writer() {
    if std::env::var_os("LIFEBOAT_CHILD").is_none() {
        return;
    }
    let src = PathBuf::from(std::env::var_os("SRC").unwrap());
    let dest = PathBuf::from(std::env::var_os("DEST").unwrap());
    let ready = PathBuf::from(std::env::var_os("READY").unwrap());
    let roots = [Root { archive_name: "paths/data".into(), source: src }];
    let opts = WriteOptions { level: 6, threads: 2, ..WriteOptions::default() };
    let result = write_archive(&roots, &dest, &opts, &mut |n| {
        if n >= 4 << 20 && !ready.exists() {
            fs::write(&ready, b"").unwrap();
            std::thread::sleep(Duration::from_secs(600));
        }
    });
    if let Err(e) = result {
        println!("child error: {e}");
        std::process::exit(3);
    }
}

#[test]
fn killed_writer_leaves_only_a_partial() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    common::build_mixed_tree(&src, 12);
    let dest = tmp.path().join("backup.tar.gz");
    let ready = tmp.path().join("ready");
    let mut proc = child("child_writer", &[("SRC", &src), ("DEST", &dest), ("READY", &ready)]).spawn().unwrap();
    let start = Instant::now();
    while !ready.exists() {
        assert!(start.elapsed() < Duration::from_secs(60), "child never got going");
        if let Some(status) = proc.try_wait().unwrap() {
            panic!("child exited early: {status}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    proc.kill().unwrap();
    proc.wait().unwrap();
    assert!(!dest.exists(), "the final name exists after a crash");
    let partial = partial_path(&dest);
    assert!(partial.exists(), "no partial file");
    assert!(fs::metadata(&partial).unwrap().len() > 0);
    // The partial is not a complete archive: `gzip -t` rejects it.
    let ok = Command::new("gzip").arg("-t").arg(&partial).stderr(std::process::Stdio::null()).status().unwrap();
    assert!(!ok.success());
    // A new write replaces the stale partial and produces a good archive.
    let s = common::write_one(&src, "paths/data", &dest, 2);
    assert!(!partial.exists());
    let expected = Expected {
        sha256: s.sha256,
        size_bytes: s.size_bytes,
        entry_count: Some(s.entry_count),
        content_bytes: Some(s.content_bytes),
        roots: Vec::new(),
    };
    verify_archive(&dest, &expected, &mut |_| {}).unwrap();
}

/// In the child (running as an unprivileged user): write, print the error.
#[test]
fn child_unreadable() {
    if std::env::var_os("LIFEBOAT_CHILD").is_none() {
        return;
    }
    let src = PathBuf::from(std::env::var_os("SRC").unwrap());
    let dest = PathBuf::from(std::env::var_os("DEST").unwrap());
    let roots = [Root { archive_name: "d".into(), source: src }];
    let err = write_archive(&roots, &dest, &WriteOptions::default(), &mut |_| {}).unwrap_err();
    assert!(matches!(err, ArchiveError::Read { .. }), "{err}");
    println!("CHILD-ERROR: {err}");
}

#[test]
fn unreadable_file_fails_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    common::chmod(tmp.path(), 0o777);
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("a.txt"), b"readable").unwrap();
    fs::write(src.join("secret.key"), b"no").unwrap();
    common::chmod(&src.join("secret.key"), 0o000);
    let dest = tmp.path().join("out.tar.gz");
    // Root reads everything, so run the writer as `nobody` when we are root.
    let mut cmd = child("child_unreadable", &[("SRC", &src), ("DEST", &dest)]);
    if unsafe { libc::geteuid() } == 0 {
        unsafe {
            cmd.pre_exec(|| {
                if libc::setgid(65534) != 0 || libc::setuid(65534) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    let line = stdout
        .lines()
        .find(|l| l.contains("CHILD-ERROR: "))
        .unwrap_or_else(|| panic!("child printed no error: {stdout}"));
    assert!(line.contains(&src.join("secret.key").display().to_string()), "{line}");
    assert!(line.contains("cannot read"), "{line}");
    assert!(!dest.exists());
    assert!(!partial_path(&dest).exists(), "partial left behind");
}
