//! Helpers shared by the integration tests: tree building, tree comparison, crafted archives.
#![allow(dead_code)]

use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use lifeboat_archive::{ArchiveSummary, Compression, Root, WriteOptions, write_archive};

/// Sets the mtime (seconds) of `path` without following a symlink.
pub fn set_mtime(path: &Path, secs: i64) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    let t = libc::timespec { tv_sec: secs as libc::time_t, tv_nsec: 0 };
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), [t, t].as_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
    assert_eq!(rc, 0, "utimensat {}", path.display());
}

pub fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Compares two trees: kinds, modes, mtimes (seconds), owners, contents and link targets.
pub fn compare_trees(a: &Path, b: &Path) -> Result<(), String> {
    compare_entry(a, b, Path::new("."))
}

fn compare_entry(a: &Path, b: &Path, rel: &Path) -> Result<(), String> {
    let ma = fs::symlink_metadata(a).map_err(|e| format!("{}: {e}", a.display()))?;
    let mb = fs::symlink_metadata(b).map_err(|e| format!("{} missing in copy: {e}", rel.display()))?;
    let (ta, tb) = (ma.file_type(), mb.file_type());
    if ta.is_dir() != tb.is_dir() || ta.is_file() != tb.is_file() || ta.is_symlink() != tb.is_symlink() {
        return Err(format!("{}: kind differs", rel.display()));
    }
    if ma.mtime() != mb.mtime() {
        return Err(format!("{}: mtime {} != {}", rel.display(), ma.mtime(), mb.mtime()));
    }
    if ma.uid() != mb.uid() || ma.gid() != mb.gid() {
        return Err(format!("{}: owner differs", rel.display()));
    }
    if ta.is_symlink() {
        let (la, lb) = (fs::read_link(a).unwrap(), fs::read_link(b).unwrap());
        if la != lb {
            return Err(format!("{}: link {} != {}", rel.display(), la.display(), lb.display()));
        }
        return Ok(());
    }
    if ma.mode() & 0o7777 != mb.mode() & 0o7777 {
        return Err(format!("{}: mode {:o} != {:o}", rel.display(), ma.mode() & 0o7777, mb.mode() & 0o7777));
    }
    if ta.is_file() {
        if ma.len() != mb.len() || fs::read(a).unwrap() != fs::read(b).unwrap() {
            return Err(format!("{}: content differs", rel.display()));
        }
        return Ok(());
    }
    let names = |p: &Path| {
        let mut v: Vec<_> = fs::read_dir(p).unwrap().map(|e| e.unwrap().file_name()).collect();
        v.sort();
        v
    };
    let (na, nb) = (names(a), names(b));
    if na != nb {
        return Err(format!("{}: children differ: {na:?} vs {nb:?}", rel.display()));
    }
    for n in na {
        compare_entry(&a.join(&n), &b.join(&n), &rel.join(&n))?;
    }
    Ok(())
}

/// Writes deterministic pseudo-random bytes.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Text that compresses well but not trivially.
pub fn text(len: usize, seed: u64) -> Vec<u8> {
    let words = ["alpha", "lifeboat", "backup", "restore", "volume", "compose", "service", "journal", "42", "\n"];
    let r = noise(len / 4 + 16, seed);
    let mut v = Vec::with_capacity(len + 16);
    let mut i = 0;
    while v.len() < len {
        v.extend_from_slice(words[(r[i % r.len()] % 10) as usize].as_bytes());
        v.push(b' ');
        i += 1;
    }
    v.truncate(len);
    v
}

/// A mixed tree of `mb` MiB (half incompressible, half text) plus small files, links, an empty
/// dir, a long and a unicode name, and a sparse file.
pub fn build_mixed_tree(root: &Path, mb: usize) {
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::create_dir_all(root.join("text/sub")).unwrap();
    fs::create_dir_all(root.join("empty")).unwrap();
    fs::write(root.join("bin/random.bin"), noise(mb * 512 * 1024, 1)).unwrap();
    fs::write(root.join("text/big.txt"), text(mb * 512 * 1024, 2)).unwrap();
    for i in 0..200 {
        fs::write(root.join(format!("text/sub/small-{i}.txt")), text(100 + i * 37, i as u64)).unwrap();
    }
    let long = root.join("l".repeat(90)).join("m".repeat(90));
    fs::create_dir_all(&long).unwrap();
    fs::write(long.join("n".repeat(60)), b"long name").unwrap();
    fs::write(root.join("ünïcødé 漢字 🙂.txt"), "unicode").unwrap();
    std::os::unix::fs::symlink("text/big.txt", root.join("link-to-big")).unwrap();
    std::os::unix::fs::symlink("does/not/exist", root.join("dangling")).unwrap();
    let f = fs::File::create(root.join("sparse.img")).unwrap();
    f.set_len(4 << 20).unwrap();
    drop(f);
    let mut f = fs::OpenOptions::new().write(true).open(root.join("sparse.img")).unwrap();
    use std::io::{Seek, SeekFrom};
    f.seek(SeekFrom::Start(1 << 20)).unwrap();
    f.write_all(b"data in the middle of a hole").unwrap();
    drop(f);
    chmod(&root.join("bin/random.bin"), 0o600);
    chmod(&root.join("text/big.txt"), 0o640);
    chmod(&root.join("empty"), 0o750);
    // Fixed mtimes everywhere, directories last.
    set_mtimes(root, 1_600_000_000);
}

/// Gives every entry under `root` (and `root`) a fixed mtime, children before parents.
pub fn set_mtimes(root: &Path, secs: i64) {
    let m = fs::symlink_metadata(root).unwrap();
    if m.is_dir() {
        for e in fs::read_dir(root).unwrap() {
            set_mtimes(&e.unwrap().path(), secs + 1);
        }
    }
    set_mtime(root, secs);
}

pub fn write_one(src: &Path, name: &str, dest: &Path, threads: usize) -> ArchiveSummary {
    write_one_with(src, name, dest, threads, Compression::Gzip)
}

/// [`write_one`] with the given compression, at its default level.
pub fn write_one_with(src: &Path, name: &str, dest: &Path, threads: usize, compression: Compression) -> ArchiveSummary {
    let roots = [Root { archive_name: name.into(), source: src.to_path_buf() }];
    let opts = WriteOptions { compression, level: compression.default_level(), threads, ..WriteOptions::default() };
    write_archive(&roots, dest, &opts, &mut |_| {}).unwrap()
}

/// Entries in `dir` whose name contains `needle`.
pub fn leftovers(dir: &Path, needle: &str) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().contains(needle))
        .collect()
}

/// Runs a shell command, panicking with its output if it fails.
pub fn sh(cmd: &str) -> String {
    let out = std::process::Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(
        out.status.success(),
        "`{cmd}` failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One raw tar entry with exactly the given name and link bytes (no sanitising, unlike the tar
/// crate's setters), for crafting hostile archives.
pub fn raw_entry(name: &[u8], kind: tar::EntryType, link: &[u8], data: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    {
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name);
        old.linkname[..link.len()].copy_from_slice(link);
    }
    h.set_entry_type(kind);
    h.set_size(data.len() as u64);
    h.set_mode(if kind == tar::EntryType::Directory { 0o755 } else { 0o644 });
    h.set_mtime(1_600_000_000);
    h.set_uid(0);
    h.set_gid(0);
    h.set_cksum();
    let mut v = h.as_bytes().to_vec();
    v.extend_from_slice(data);
    v.resize(v.len().div_ceil(512) * 512, 0);
    v
}

/// Gzips tar entries (plus the end-of-archive blocks) into `path`.
pub fn gz_archive(path: &Path, entries: &[Vec<u8>]) {
    let f = fs::File::create(path).unwrap();
    let mut enc = flate2::write::GzEncoder::new(f, flate2::Compression::default());
    for e in entries {
        enc.write_all(e).unwrap();
    }
    enc.write_all(&[0u8; 1024]).unwrap();
    enc.finish().unwrap();
}
