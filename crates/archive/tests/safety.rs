//! Private by default, nothing followed: the modes of archives and staging directories under any
//! umask, and symlinks planted at the names lifeboat creates. The umask belongs to the whole
//! process, so every test of this binary holds one lock.

mod common;

use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use lifeboat_archive::{
    ArchiveError, Expected, ExtractOptions, Root, WriteOptions, extract_to_staging, partial_path, verify_archive,
    write_archive,
};

static LOCK: Mutex<()> = Mutex::new(());

/// Sets the umask until dropped, holding the lock.
struct Umask {
    old: libc::mode_t,
    _guard: MutexGuard<'static, ()>,
}

fn umask(mask: libc::mode_t) -> Umask {
    let guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let old = unsafe { libc::umask(mask) };
    Umask { old, _guard: guard }
}

impl Drop for Umask {
    fn drop(&mut self) {
        unsafe { libc::umask(self.old) };
    }
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

fn source(tmp: &Path) -> PathBuf {
    let src = tmp.join("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("sub/data.bin"), common::noise(3 << 20, 1)).unwrap();
    fs::write(src.join("small.txt"), b"small").unwrap();
    common::chmod(&src, 0o755);
    src
}

fn verify(s: &lifeboat_archive::ArchiveSummary) {
    let e = Expected {
        sha256: s.sha256.clone(),
        size_bytes: s.size_bytes,
        entry_count: Some(s.entry_count),
        content_bytes: Some(s.content_bytes),
        roots: Vec::new(),
    };
    verify_archive(&s.path, &e, &mut |_| {}).unwrap();
}

#[test]
fn archives_are_0600_or_0640_with_a_group_whatever_the_umask() {
    let root = unsafe { libc::geteuid() } == 0;
    // Root may give any group; others only their own.
    let gid = if root { 65534 } else { unsafe { libc::getegid() } };
    for mask in [0o000, 0o022, 0o077, 0o277] {
        let _u = umask(mask);
        let tmp = tempfile::tempdir().unwrap();
        let src = source(tmp.path());
        for group in [None, Some(gid)] {
            let dest = tmp.path().join(format!("b-{mask:o}-{}.tar.gz", group.is_some()));
            let roots = [Root { archive_name: "d".into(), source: src.clone() }];
            let opts = WriteOptions { group, threads: 2, ..WriteOptions::default() };
            let want = if group.is_some() { 0o640 } else { 0o600 };
            let partial = partial_path(&dest);
            let mut partial_mode = None;
            let s = write_archive(&roots, &dest, &opts, &mut |_| {
                if partial_mode.is_none() && partial.exists() {
                    partial_mode = Some(mode(&partial));
                }
            })
            .unwrap();
            assert_eq!(partial_mode, Some(want), "partial under umask {mask:o}");
            assert_eq!(mode(&dest), want, "archive under umask {mask:o}, group {group:?}");
            let m = fs::metadata(&dest).unwrap();
            assert_eq!(m.uid(), unsafe { libc::geteuid() });
            if let Some(g) = group {
                assert_eq!(m.gid(), g);
            }
            verify(&s);
        }
    }
}

fn mkfifo(path: &Path) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

fn wait_for(path: &Path) {
    let start = Instant::now();
    while fs::symlink_metadata(path).is_err() {
        assert!(start.elapsed() < Duration::from_secs(30), "{} never appeared", path.display());
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The archive is fed through a fifo, so the staging directory can be looked at mid-way.
#[test]
fn staging_directories_are_0700_until_the_end() {
    let _u = umask(0o000);
    let tmp = tempfile::tempdir().unwrap();
    // Entries without directory entries of their own, so the parents are made by the extractor,
    // and a big file so that the extraction waits for more input in the middle.
    let archive = tmp.path().join("a.tar.gz");
    common::gz_archive(
        &archive,
        &[
            common::raw_entry(b"a/b/big.bin", tar::EntryType::Regular, b"", &common::noise(4 << 20, 2)),
            common::raw_entry(b"a/c.txt", tar::EntryType::Regular, b"", b"c"),
        ],
    );
    let bytes = fs::read(&archive).unwrap();
    let fifo = tmp.path().join("fifo.tar.gz");
    mkfifo(&fifo);
    let target = tmp.path().join("target");
    let staging = tmp.path().join("target.staging");
    let opts = ExtractOptions { staging: Some(staging.clone()), ..ExtractOptions::default() };
    let (f, t) = (fifo.clone(), target.clone());
    let extractor = std::thread::spawn(move || extract_to_staging(&f, &t, &opts));
    // Created before the archive is opened: the fifo open waits for us.
    wait_for(&staging);
    assert_eq!(mode(&staging), 0o700);
    let mut w = fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    w.write_all(&bytes[..256 << 10]).unwrap();
    wait_for(&staging.join("a/b/big.bin"));
    assert_eq!(mode(&staging), 0o700);
    assert_eq!(mode(&staging.join("a")), 0o700);
    assert_eq!(mode(&staging.join("a/b")), 0o700);
    assert_eq!(mode(&staging.join("a/b/big.bin")), 0o600, "a file is private until it is complete");
    w.write_all(&bytes[256 << 10..]).unwrap();
    drop(w);
    let staged = extractor.join().unwrap().unwrap();
    // At the end: the archived modes (here the defaults for directories without entries).
    assert_eq!(mode(&staging), 0o755);
    assert_eq!(mode(&staging.join("a")), 0o755);
    assert_eq!(mode(&staging.join("a/b/big.bin")), 0o644);
    staged.discard().unwrap();

    // A staged root with an entry of its own gets exactly the archived mode, whatever the umask.
    drop(_u);
    let _u = umask(0o077);
    let src = source(tmp.path());
    common::chmod(&src, 0o751);
    let dest = tmp.path().join("b.tar.gz");
    common::write_one(&src, "d", &dest, 2);
    let opts = ExtractOptions { subtree: Some("d".into()), ..ExtractOptions::default() };
    let staged = extract_to_staging(&dest, &target, &opts).unwrap();
    assert_eq!(mode(&staged.staging), 0o751);
    common::compare_trees(&src, &staged.staging).unwrap();
    staged.discard().unwrap();
}

#[test]
fn a_symlink_or_link_planted_at_the_partial_name_is_not_followed() {
    let _u = umask(0o022);
    let tmp = tempfile::tempdir().unwrap();
    let src = source(tmp.path());
    let victim = tmp.path().join("victim");
    fs::write(&victim, b"precious").unwrap();
    common::chmod(&victim, 0o644);
    let roots = [Root { archive_name: "d".into(), source: src }];
    let dest = tmp.path().join("backups/b.tar.gz");
    fs::create_dir(dest.parent().unwrap()).unwrap();
    let partial = partial_path(&dest);
    let absent = tmp.path().join("absent");
    for (i, plant) in ["symlink", "dangling symlink", "hard link"].iter().enumerate() {
        let dest = dest.with_file_name(format!("b{i}.tar.gz"));
        let partial = partial_path(&dest);
        match *plant {
            "symlink" => std::os::unix::fs::symlink(&victim, &partial).unwrap(),
            "dangling symlink" => std::os::unix::fs::symlink(&absent, &partial).unwrap(),
            _ => fs::hard_link(&victim, &partial).unwrap(),
        }
        let s = write_archive(&roots, &dest, &WriteOptions::default(), &mut |_| {}).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious", "{plant}: the victim was written");
        let m = fs::metadata(&victim).unwrap();
        assert_eq!((m.mode() & 0o7777, m.nlink()), (0o644, 1), "{plant}");
        assert!(!absent.exists(), "{plant}: the link's target was created");
        assert!(!partial.exists());
        assert!(fs::symlink_metadata(&dest).unwrap().is_file());
        verify(&s);
    }
    // A symlink at the final name is refused, and the file it points to left alone.
    std::os::unix::fs::symlink(&victim, &dest).unwrap();
    let err = write_archive(&roots, &dest, &WriteOptions::default(), &mut |_| {}).unwrap_err();
    assert!(matches!(err, ArchiveError::DestinationExists { .. }), "{err}");
    assert_eq!(fs::read(&victim).unwrap(), b"precious");
    assert!(!partial.exists());
}

#[test]
fn a_symlink_planted_at_the_staging_name_is_not_followed() {
    let _u = umask(0o022);
    let tmp = tempfile::tempdir().unwrap();
    let src = source(tmp.path());
    let archive = tmp.path().join("b.tar.gz");
    common::write_one(&src, "d", &archive, 2);
    let victim_dir = tmp.path().join("victim-dir");
    fs::create_dir(&victim_dir).unwrap();
    fs::write(victim_dir.join("keep"), b"keep").unwrap();
    common::chmod(&victim_dir, 0o755);
    let victim_file = tmp.path().join("victim-file");
    fs::write(&victim_file, b"precious").unwrap();
    let target = tmp.path().join("target");
    for victim in [&victim_dir, &victim_file] {
        let staging = tmp.path().join("target.lifeboat-staging-1");
        std::os::unix::fs::symlink(victim, &staging).unwrap();
        let opts =
            ExtractOptions { subtree: Some("d".into()), staging: Some(staging.clone()), ..ExtractOptions::default() };
        let staged = extract_to_staging(&archive, &target, &opts).unwrap();
        assert!(fs::symlink_metadata(&staging).unwrap().is_dir(), "the staging name is still a link");
        staged.swap_in().unwrap().commit().unwrap();
        common::compare_trees(&src, &target).unwrap();
        fs::remove_dir_all(&target).unwrap();
    }
    assert_eq!(fs::read_dir(&victim_dir).unwrap().count(), 1);
    assert_eq!(mode(&victim_dir), 0o755);
    assert_eq!(fs::read(&victim_file).unwrap(), b"precious");
}

#[test]
fn swapping_never_follows_a_symlink() {
    let _u = umask(0o022);
    let tmp = tempfile::tempdir().unwrap();
    let src = source(tmp.path());
    let archive = tmp.path().join("b.tar.gz");
    common::write_one(&src, "d", &archive, 2);
    let victim = tmp.path().join("victim");
    fs::create_dir(&victim).unwrap();
    fs::write(victim.join("keep"), b"keep").unwrap();
    let opts = ExtractOptions { subtree: Some("d".into()), ..ExtractOptions::default() };

    // The staging directory replaced by a symlink before the swap: refused, nothing moves.
    let target = tmp.path().join("target");
    fs::create_dir(&target).unwrap();
    fs::write(target.join("old"), b"old").unwrap();
    let staged = extract_to_staging(&archive, &target, &opts).unwrap();
    let moved = tmp.path().join("moved");
    fs::rename(&staged.staging, &moved).unwrap();
    std::os::unix::fs::symlink(&victim, &staged.staging).unwrap();
    let err = staged.clone().swap_in().unwrap_err();
    assert!(matches!(err, ArchiveError::Swap { .. }) && err.to_string().contains("no longer"), "{err}");
    assert_eq!(fs::read(target.join("old")).unwrap(), b"old");
    assert_eq!(fs::read_dir(&victim).unwrap().count(), 1);
    fs::remove_file(&staged.staging).unwrap();
    fs::remove_dir_all(&moved).unwrap();

    // Old data holding links to the outside (as a container may plant) is moved aside and
    // deleted on commit, or put back on revert, without touching what the links point to.
    std::os::unix::fs::symlink(&victim, target.join("escape")).unwrap();
    fs::create_dir(target.join("ro")).unwrap();
    std::os::unix::fs::symlink(&victim, target.join("ro/escape")).unwrap();
    common::chmod(&target.join("ro"), 0o500);
    let swapped = extract_to_staging(&archive, &target, &opts).unwrap().swap_in().unwrap();
    swapped.clone().revert().unwrap();
    assert!(fs::symlink_metadata(target.join("escape")).unwrap().file_type().is_symlink());
    let swapped = extract_to_staging(&archive, &target, &opts).unwrap().swap_in().unwrap();
    swapped.commit().unwrap();
    common::compare_trees(&src, &target).unwrap();
    assert_eq!(fs::read(victim.join("keep")).unwrap(), b"keep");
    assert_eq!(fs::read_dir(&victim).unwrap().count(), 1);

    // A target that is itself a symlink is moved aside as a link; its directory is left alone.
    fs::remove_dir_all(&target).unwrap();
    std::os::unix::fs::symlink(&victim, &target).unwrap();
    let swapped = extract_to_staging(&archive, &target, &opts).unwrap().swap_in().unwrap();
    swapped.commit().unwrap();
    assert!(fs::symlink_metadata(&target).unwrap().is_dir());
    assert_eq!(fs::read(victim.join("keep")).unwrap(), b"keep");
}
