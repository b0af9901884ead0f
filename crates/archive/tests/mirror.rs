//! Mirrors: after any sequence of changes a sync leaves the mirror equal to its source in every
//! respect an archive keeps; unchanged files are not copied again, a change that only moves the
//! ctime is; an interrupted sync or a stale index never leaves a stale copy; nothing is written
//! through a symlink, in the mirror or out of it; an archive of the mirror is the archive of the
//! source.
//!
//! `LIFEBOAT_PROPTEST_CASES` sets the number of cases of the property test (default 32). The
//! timing test is ignored by default: `cargo test -p lifeboat-archive --test mirror --
//! --ignored --nocapture`.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{noise, sh};
use lifeboat_archive::{
    ArchiveError, Root, SyncOptions, SyncStats, WriteOptions, mirror_disk_usage, mirror_tree, sync_mirror,
    write_archive,
};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// Comparing a mirror with its source

/// The attributes an archive keeps (as `xattr.rs` chooses them), sorted.
fn xattrs(path: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut names = vec![0u8; 64 * 1024];
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    assert!(n >= 0, "llistxattr {}: {}", path.display(), std::io::Error::last_os_error());
    names.truncate(n as usize);
    let mut out = Vec::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let kept = name.starts_with(b"user.")
            || name.starts_with(b"trusted.")
            || (name.starts_with(b"security.") && name != b"security.selinux")
            || name == b"system.posix_acl_access"
            || name == b"system.posix_acl_default";
        if !kept {
            continue;
        }
        let cname = CString::new(name).unwrap();
        let mut value = vec![0u8; 64 * 1024];
        let n = unsafe { libc::lgetxattr(c.as_ptr(), cname.as_ptr(), value.as_mut_ptr().cast(), value.len()) };
        assert!(n >= 0, "lgetxattr {}", path.display());
        value.truncate(n as usize);
        out.push((name.to_vec(), value));
    }
    out.sort();
    out
}

/// `root/rel`, or `root` for an empty `rel` (not `root/`, which is no file's name).
fn at(root: &Path, rel: &Path) -> PathBuf {
    if rel.as_os_str().is_empty() { root.to_path_buf() } else { root.join(rel) }
}

/// Every entry under `root` (and `root` as ""), by relative path, sockets left out.
fn walk(root: &Path) -> BTreeMap<PathBuf, fs::Metadata> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let path = at(root, &rel);
        let meta = fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if meta.file_type().is_dir() {
            for e in fs::read_dir(&path).unwrap() {
                stack.push(rel.join(e.unwrap().file_name()));
            }
        }
        if !std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()) {
            out.insert(rel, meta);
        }
    }
    out
}

/// The mirror equals the source: same entries, and for each its type, mode (setuid and sticky
/// bits too), owner, nanosecond mtime, device numbers, content, symlink target, attributes and
/// ACLs; the same hard-link groups; sparse files no more allocated than in the source.
fn assert_trees_equal(src: &Path, mirror: &Path) -> Result<(), String> {
    let (a, b) = (walk(src), walk(mirror));
    let (ka, kb): (Vec<_>, Vec<_>) = (a.keys().collect(), b.keys().collect());
    if ka != kb {
        let only_a: Vec<_> = ka.iter().filter(|k| !b.contains_key(**k)).collect();
        let only_b: Vec<_> = kb.iter().filter(|k| !a.contains_key(**k)).collect();
        return Err(format!("entries differ: only in source {only_a:?}, only in mirror {only_b:?}"));
    }
    // Source inode -> mirror inode and back: each must be one to one.
    let mut forward: HashMap<u64, u64> = HashMap::new();
    let mut backward: HashMap<u64, u64> = HashMap::new();
    for (rel, ma) in &a {
        let mb = &b[rel];
        let (pa, pb) = (at(src, rel), at(mirror, rel));
        let what = |w: &str| format!("{}: {w} differs", rel.display());
        if ma.mode() & libc::S_IFMT != mb.mode() & libc::S_IFMT {
            return Err(what("type"));
        }
        if !ma.file_type().is_symlink() && ma.mode() != mb.mode() {
            return Err(format!("{}: mode {:o} != {:o}", rel.display(), ma.mode(), mb.mode()));
        }
        if (ma.uid(), ma.gid()) != (mb.uid(), mb.gid()) {
            return Err(format!("{}: owner {}:{} != {}:{}", rel.display(), ma.uid(), ma.gid(), mb.uid(), mb.gid()));
        }
        if (ma.mtime(), ma.mtime_nsec()) != (mb.mtime(), mb.mtime_nsec()) {
            return Err(format!(
                "{}: mtime {}.{:09} != {}.{:09}",
                rel.display(),
                ma.mtime(),
                ma.mtime_nsec(),
                mb.mtime(),
                mb.mtime_nsec()
            ));
        }
        if xattrs(&pa) != xattrs(&pb) {
            return Err(format!("{}: xattrs {:?} != {:?}", rel.display(), xattrs(&pa), xattrs(&pb)));
        }
        let ft = ma.file_type();
        if std::os::unix::fs::FileTypeExt::is_char_device(&ft) || std::os::unix::fs::FileTypeExt::is_block_device(&ft) {
            if ma.rdev() != mb.rdev() {
                return Err(what("device number"));
            }
        } else if ft.is_symlink() {
            if fs::read_link(&pa).unwrap() != fs::read_link(&pb).unwrap() {
                return Err(what("symlink target"));
            }
        } else if ft.is_file() {
            if ma.len() != mb.len() || fs::read(&pa).unwrap() != fs::read(&pb).unwrap() {
                return Err(what("content"));
            }
            // Holes stay holes: a few blocks of slack for the filesystem's own rounding.
            if mb.blocks() > ma.blocks() + 16 {
                return Err(format!(
                    "{}: {} blocks in the mirror, {} in the source",
                    rel.display(),
                    mb.blocks(),
                    ma.blocks()
                ));
            }
            if *forward.entry(ma.ino()).or_insert(mb.ino()) != mb.ino() {
                return Err(format!("{}: one source inode became several in the mirror", rel.display()));
            }
            if *backward.entry(mb.ino()).or_insert(ma.ino()) != ma.ino() {
                return Err(format!("{}: distinct source files share one mirror inode", rel.display()));
            }
        }
    }
    Ok(())
}

fn sync(src: &Path, dir: &Path) -> SyncStats {
    sync_mirror(src, dir, &SyncOptions::default()).unwrap_or_else(|e| panic!("sync failed: {e}"))
}

/// Nothing under `dir` is a temporary file of a sync.
fn assert_no_temps(dir: &Path) {
    for rel in walk(dir).keys() {
        assert!(!rel.to_string_lossy().contains(".lifeboat-mirror."), "left behind: {}", rel.display());
    }
}

/// Long enough for every entry to be older than the sync's racy margin (100 ms).
fn settle() {
    std::thread::sleep(Duration::from_millis(150));
}

// ---------------------------------------------------------------------------------------------
// Changing a tree

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn set_mtime_ns(path: &Path, secs: i64, nsec: i64) -> bool {
    let t = libc::timespec { tv_sec: secs as libc::time_t, tv_nsec: nsec as _ };
    let c = cpath(path);
    unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), [t, t].as_ptr(), libc::AT_SYMLINK_NOFOLLOW) == 0 }
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) -> bool {
    let (c, n) = (cpath(path), CString::new(name).unwrap());
    unsafe { libc::lsetxattr(c.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) == 0 }
}

/// A binary POSIX ACL: owner rwx, user 1000 r, group r-x, mask r-x, others nothing.
fn acl() -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in
        [(1u16, 7u16, u32::MAX), (2, 4, 1000), (4, 5, u32::MAX), (0x10, 5, u32::MAX), (0x20, 0, u32::MAX)]
    {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

/// A file capability (VFS_CAP_REVISION_2, effective): cap_net_bind_service.
fn capability() -> Vec<u8> {
    let mut v = Vec::new();
    for word in [0x0200_0001u32, 1 << 10, 0, 0, 0] {
        v.extend_from_slice(&word.to_le_bytes());
    }
    v
}

fn mknod(path: &Path, kind: libc::mode_t, major: u32, minor: u32) -> bool {
    let c = cpath(path);
    unsafe { libc::mknod(c.as_ptr(), kind | 0o644, libc::makedev(major, minor)) == 0 }
}

fn remove_any(path: &Path) {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).unwrap(),
        Ok(_) => fs::remove_file(path).unwrap(),
        Err(_) => {}
    }
}

fn sparse_file(path: &Path, size: u64, at: u64, seed: u64) -> bool {
    let Ok(f) = fs::OpenOptions::new().write(true).create_new(true).open(path) else { return false };
    f.set_len(size).unwrap();
    let data = noise(5000, seed);
    f.write_all_at(&data, at.min(size.saturating_sub(data.len() as u64))).unwrap();
    true
}

#[derive(Debug, Clone)]
enum Op {
    File {
        dir: usize,
        name: u8,
        len: usize,
        seed: u64,
    },
    Dir {
        dir: usize,
        name: u8,
    },
    Delete {
        at: usize,
    },
    Truncate {
        at: usize,
        len: u64,
    },
    Grow {
        at: usize,
        len: usize,
        seed: u64,
    },
    /// New bytes in place, same size, mtime put back: only the ctime moves.
    Rewrite {
        at: usize,
    },
    Rename {
        at: usize,
        dir: usize,
        name: u8,
    },
    Chmod {
        at: usize,
        mode: u32,
    },
    Chown {
        at: usize,
        uid: u32,
        gid: u32,
    },
    Link {
        at: usize,
        dir: usize,
        name: u8,
    },
    /// The file copied to a new inode and renamed over itself: a hard link broken.
    Unshare {
        at: usize,
    },
    ToSymlink {
        at: usize,
        target: u8,
    },
    DirToFile {
        at: usize,
        seed: u64,
    },
    FileToDir {
        at: usize,
    },
    Xattr {
        at: usize,
        name: u8,
        value: Vec<u8>,
    },
    NoXattr {
        at: usize,
    },
    Acl {
        at: usize,
    },
    Cap {
        at: usize,
    },
    Fifo {
        dir: usize,
        name: u8,
    },
    Device {
        dir: usize,
        name: u8,
        block: bool,
        minor: u32,
    },
    Socket {
        dir: usize,
        name: u8,
    },
    Sparse {
        dir: usize,
        name: u8,
        size: u64,
        at: u64,
        seed: u64,
    },
    Touch {
        at: usize,
        secs: i64,
        nsec: i64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let i = || any::<usize>();
    let n = || 0u8..6;
    prop_oneof![
        6 => (i(), n(), 0usize..20_000, any::<u64>()).prop_map(|(dir, name, len, seed)| Op::File { dir, name, len, seed }),
        3 => (i(), n()).prop_map(|(dir, name)| Op::Dir { dir, name }),
        2 => i().prop_map(|at| Op::Delete { at }),
        1 => (i(), 0u64..30_000).prop_map(|(at, len)| Op::Truncate { at, len }),
        1 => (i(), 1usize..5000, any::<u64>()).prop_map(|(at, len, seed)| Op::Grow { at, len, seed }),
        3 => i().prop_map(|at| Op::Rewrite { at }),
        1 => (i(), i(), n()).prop_map(|(at, dir, name)| Op::Rename { at, dir, name }),
        2 => (i(), prop::sample::select(vec![0o644, 0o600, 0o755, 0o4755, 0o2711, 0o1777, 0o000, 0o7777, 0o555]))
            .prop_map(|(at, mode)| Op::Chmod { at, mode }),
        1 => (i(), prop::sample::select(vec![0, 1, 1000, 65534, 4242]), prop::sample::select(vec![0, 5, 1000, 65534]))
            .prop_map(|(at, uid, gid)| Op::Chown { at, uid, gid }),
        3 => (i(), i(), n()).prop_map(|(at, dir, name)| Op::Link { at, dir, name }),
        1 => i().prop_map(|at| Op::Unshare { at }),
        1 => (i(), 0u8..5).prop_map(|(at, target)| Op::ToSymlink { at, target }),
        1 => (i(), any::<u64>()).prop_map(|(at, seed)| Op::DirToFile { at, seed }),
        1 => i().prop_map(|at| Op::FileToDir { at }),
        2 => (i(), 0u8..3, prop::collection::vec(any::<u8>(), 0..40)).prop_map(|(at, name, value)| Op::Xattr { at, name, value }),
        1 => i().prop_map(|at| Op::NoXattr { at }),
        1 => i().prop_map(|at| Op::Acl { at }),
        1 => i().prop_map(|at| Op::Cap { at }),
        1 => (i(), n()).prop_map(|(dir, name)| Op::Fifo { dir, name }),
        1 => (i(), n(), any::<bool>(), 0u32..8).prop_map(|(dir, name, block, minor)| Op::Device { dir, name, block, minor }),
        1 => (i(), n()).prop_map(|(dir, name)| Op::Socket { dir, name }),
        1 => (i(), n(), 1u64..3_000_000, any::<u64>(), any::<u64>())
            .prop_map(|(dir, name, size, at, seed)| Op::Sparse { dir, name, size, at: at % size, seed }),
        2 => (i(), 0i64..2_000_000_000, 0i64..1_000_000_000).prop_map(|(at, secs, nsec)| Op::Touch { at, secs, nsec }),
    ]
}

/// Entries under `root`, sorted, `root` itself first when `with_root`.
fn list(root: &Path, with_root: bool, keep: impl Fn(&fs::Metadata) -> bool) -> Vec<PathBuf> {
    walk(root)
        .into_iter()
        .filter(|(rel, m)| (with_root || !rel.as_os_str().is_empty()) && keep(m))
        .map(|(rel, _)| if rel.as_os_str().is_empty() { root.to_path_buf() } else { root.join(rel) })
        .collect()
}

fn pick(v: &[PathBuf], i: usize) -> Option<&PathBuf> {
    if v.is_empty() { None } else { Some(&v[i % v.len()]) }
}

/// Applies `op` to the tree at `root`; what cannot apply (no such entry, a name taken) is skipped.
fn apply(root: &Path, op: &Op) {
    let any = list(root, false, |_| true);
    let with_root = list(root, true, |_| true);
    let files = list(root, false, |m| m.is_file());
    let dirs = list(root, true, |m| m.is_dir());
    let name = |n: u8| format!("n{n}");
    match op {
        Op::File { dir, name: n, len, seed } => {
            let p = pick(&dirs, *dir).unwrap().join(name(*n));
            if fs::symlink_metadata(&p).is_err() {
                fs::write(&p, noise(*len, *seed)).unwrap();
            }
        }
        Op::Dir { dir, name: n } => {
            let _ = fs::create_dir(pick(&dirs, *dir).unwrap().join(name(*n)));
        }
        Op::Delete { at } => {
            if let Some(p) = pick(&any, *at) {
                remove_any(p);
            }
        }
        Op::Truncate { at, len } => {
            if let Some(p) = pick(&files, *at) {
                fs::OpenOptions::new().write(true).open(p).unwrap().set_len(*len).unwrap();
            }
        }
        Op::Grow { at, len, seed } => {
            if let Some(p) = pick(&files, *at) {
                fs::OpenOptions::new().append(true).open(p).unwrap().write_all(&noise(*len, *seed)).unwrap();
            }
        }
        Op::Rewrite { at } => {
            if let Some(p) = pick(&files, *at) {
                let m = fs::symlink_metadata(p).unwrap();
                let f = fs::OpenOptions::new().read(true).write(true).open(p).unwrap();
                let mut head = vec![0u8; (m.len() as usize).min(4096)];
                f.read_exact_at(&mut head, 0).unwrap();
                for b in &mut head {
                    *b ^= 0xa5;
                }
                f.write_all_at(&head, 0).unwrap();
                drop(f);
                assert!(set_mtime_ns(p, m.mtime(), m.mtime_nsec()));
            }
        }
        Op::Rename { at, dir, name: n } => {
            if let (Some(p), Some(d)) = (pick(&any, *at), pick(&dirs, *dir)) {
                let _ = fs::rename(p, d.join(name(*n)));
            }
        }
        Op::Chmod { at, mode } => {
            if let Some(p) = pick(&with_root, *at)
                && !fs::symlink_metadata(p).unwrap().file_type().is_symlink()
            {
                fs::set_permissions(p, fs::Permissions::from_mode(*mode)).unwrap();
            }
        }
        Op::Chown { at, uid, gid } => {
            if let Some(p) = pick(&with_root, *at) {
                std::os::unix::fs::lchown(p, Some(*uid), Some(*gid)).unwrap();
            }
        }
        Op::Link { at, dir, name: n } => {
            if let (Some(p), Some(d)) = (pick(&files, *at), pick(&dirs, *dir)) {
                let _ = fs::hard_link(p, d.join(name(*n)));
            }
        }
        Op::Unshare { at } => {
            if let Some(p) = pick(&files, *at) {
                let tmp = p.with_extension("unshare-tmp");
                fs::copy(p, &tmp).unwrap();
                fs::rename(&tmp, p).unwrap();
            }
        }
        Op::ToSymlink { at, target } => {
            if let Some(p) = pick(&any, *at) {
                let target = ["n1", "../n2", "/etc/passwd", "nowhere/deep", "."][*target as usize % 5];
                remove_any(p);
                std::os::unix::fs::symlink(target, p).unwrap();
            }
        }
        Op::DirToFile { at, seed } => {
            let subdirs: Vec<PathBuf> = dirs.iter().filter(|d| d.as_path() != root).cloned().collect();
            if let Some(p) = pick(&subdirs, *at) {
                fs::remove_dir_all(p).unwrap();
                fs::write(p, noise(300, *seed)).unwrap();
            }
        }
        Op::FileToDir { at } => {
            if let Some(p) = pick(&any, *at)
                && !fs::symlink_metadata(p).unwrap().is_dir()
            {
                fs::remove_file(p).unwrap();
                fs::create_dir(p).unwrap();
                fs::write(p.join("inside"), b"was a file").unwrap();
            }
        }
        Op::Xattr { at, name: n, value } => {
            if let Some(p) = pick(&with_root, *at) {
                // user.* is refused on symlinks and device nodes: then a trusted.* one.
                if !set_xattr(p, &format!("user.k{n}"), value) {
                    assert!(set_xattr(p, &format!("trusted.k{n}"), value), "trusted xattr on {}", p.display());
                }
            }
        }
        Op::NoXattr { at } => {
            if let Some(p) = pick(&with_root, *at) {
                let c = cpath(p);
                for (name, _) in xattrs(p) {
                    let n = CString::new(name).unwrap();
                    unsafe { libc::lremovexattr(c.as_ptr(), n.as_ptr()) };
                }
            }
        }
        Op::Acl { at } => {
            if let Some(p) = pick(&with_root, *at) {
                let m = fs::symlink_metadata(p).unwrap();
                if !m.file_type().is_symlink() {
                    assert!(set_xattr(p, "system.posix_acl_access", &acl()));
                    if m.is_dir() {
                        // New entries in it then inherit ACLs the source does not give them.
                        assert!(set_xattr(p, "system.posix_acl_default", &acl()));
                    }
                }
            }
        }
        Op::Cap { at } => {
            if let Some(p) = pick(&files, *at) {
                assert!(set_xattr(p, "security.capability", &capability()));
            }
        }
        Op::Fifo { dir, name: n } => {
            let p = pick(&dirs, *dir).unwrap().join(name(*n));
            mknod(&p, libc::S_IFIFO, 0, 0);
        }
        Op::Device { dir, name: n, block, minor } => {
            let p = pick(&dirs, *dir).unwrap().join(name(*n));
            let (kind, major) = if *block { (libc::S_IFBLK, 7) } else { (libc::S_IFCHR, 1) };
            mknod(&p, kind, major, *minor);
        }
        Op::Socket { dir, name: n } => {
            let p = pick(&dirs, *dir).unwrap().join(name(*n));
            if fs::symlink_metadata(&p).is_err() {
                drop(std::os::unix::net::UnixListener::bind(&p).unwrap());
            }
        }
        Op::Sparse { dir, name: n, size, at, seed } => {
            sparse_file(&pick(&dirs, *dir).unwrap().join(name(*n)), *size, *at, *seed);
        }
        Op::Touch { at, secs, nsec } => {
            if let Some(p) = pick(&with_root, *at) {
                assert!(set_mtime_ns(p, *secs, *nsec));
            }
        }
    }
}

fn cases() -> u32 {
    std::env::var("LIFEBOAT_PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(32)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    /// A random tree, synced; then rounds of random changes, each followed by a sync: after every
    /// sync the mirror equals the source.
    #[test]
    fn after_any_changes_a_sync_leaves_an_equal_mirror(
        first in prop::collection::vec(op(), 5..40),
        rounds in prop::collection::vec(prop::collection::vec(op(), 1..14), 1..5),
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let (src, dir) = (tmp.path().join("src"), tmp.path().join("mirror"));
        fs::create_dir(&src).unwrap();
        for o in &first {
            apply(&src, o);
        }
        // Each sync after a pause, so that what it saw is indexed (not "racy") and the next
        // sync must find every change by comparing with the index.
        settle();
        sync(&src, &dir);
        prop_assert_eq!(assert_trees_equal(&src, &mirror_tree(&dir)), Ok(()));
        for round in &rounds {
            for o in round {
                apply(&src, o);
            }
            settle();
            let stats = sync(&src, &dir);
            prop_assert!(stats.index_found);
            prop_assert_eq!(assert_trees_equal(&src, &mirror_tree(&dir)), Ok(()));
        }
        assert_no_temps(&dir);
    }
}

// ---------------------------------------------------------------------------------------------
// What a sync copies

/// A small tree with a bit of everything.
fn build_tree(root: &Path) {
    fs::create_dir_all(root.join("a/b")).unwrap();
    fs::create_dir_all(root.join("empty")).unwrap();
    for i in 0..40 {
        fs::write(root.join(format!("a/f{i}")), noise(100 + i * 997, i as u64)).unwrap();
    }
    fs::write(root.join("a/b/deep"), b"deep").unwrap();
    fs::hard_link(root.join("a/f1"), root.join("a/b/f1-again")).unwrap();
    std::os::unix::fs::symlink("a/f2", root.join("link")).unwrap();
    assert!(mknod(&root.join("fifo"), libc::S_IFIFO, 0, 0));
    assert!(sparse_file(&root.join("sparse"), 8 << 20, 3 << 20, 9));
    assert!(set_xattr(&root.join("a/f3"), "user.note", b"kept"));
    assert!(set_xattr(&root.join("a/f4"), "security.capability", &capability()));
    fs::set_permissions(root.join("a/f5"), fs::Permissions::from_mode(0o4755)).unwrap();
    std::os::unix::fs::lchown(root.join("a/f6"), Some(1000), Some(1000)).unwrap();
    common::set_mtimes(root, 1_600_000_000);
}

#[test]
fn a_second_sync_of_an_unchanged_tree_copies_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dir) = (tmp.path().join("src"), tmp.path().join("mirror"));
    build_tree(&src);
    settle();
    let first = sync(&src, &dir);
    assert!(!first.index_found);
    assert_eq!(first.files_copied, 42, "every file once, a hard link's two names once: {first:?}");
    assert_eq!(first.linked, 1);
    assert_trees_equal(&src, &mirror_tree(&dir)).unwrap();
    let second = sync(&src, &dir);
    assert!(second.index_found);
    let nothing = SyncStats { entries: first.entries, index_found: true, ..SyncStats::default() };
    assert_eq!(second, nothing);
    assert_trees_equal(&src, &mirror_tree(&dir)).unwrap();
    // The mirror takes what the source takes: the sparse file's holes are not allocated.
    let usage = mirror_disk_usage(&dir).unwrap();
    assert!(usage < 2 << 20, "mirror uses {usage} bytes");
}

#[test]
fn a_change_that_keeps_size_and_mtime_is_caught() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dir) = (tmp.path().join("src"), tmp.path().join("mirror"));
    build_tree(&src);
    settle();
    sync(&src, &dir);
    apply(&src, &Op::Rewrite { at: 7 });
    let rewritten = &list(&src, false, |m| m.is_file())[7];
    assert_ne!(
        fs::read(rewritten).unwrap(),
        fs::read(mirror_tree(&dir).join(rewritten.strip_prefix(&src).unwrap())).unwrap()
    );
    let stats = sync(&src, &dir);
    assert_eq!(stats.files_copied, 1, "{stats:?}");
    assert_trees_equal(&src, &mirror_tree(&dir)).unwrap();
    // An attribute alone moves the ctime too: the file is copied again with it.
    settle();
    sync(&src, &dir);
    assert!(set_xattr(&src.join("a/f9"), "user.late", b"x"));
    let stats = sync(&src, &dir);
    assert_eq!(stats.files_copied, 1, "{stats:?}");
    assert_trees_equal(&src, &mirror_tree(&dir)).unwrap();
}

#[test]
fn a_single_file_is_mirrored_as_a_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (file, dir) = (tmp.path().join("db.sqlite"), tmp.path().join("mirror"));
    fs::write(&file, noise(70_000, 3)).unwrap();
    sync(&file, &dir);
    assert_trees_equal(&file, &mirror_tree(&dir)).unwrap();
    assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o7777, 0o700);
    // Through a symlink to it, as a backup root may be.
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&file, &link).unwrap();
    fs::write(&file, b"shorter now").unwrap();
    sync(&link, &dir);
    assert_trees_equal(&file, &mirror_tree(&dir)).unwrap();
    // A directory where the file was, and back.
    fs::remove_file(&file).unwrap();
    build_tree(&file);
    sync(&file, &dir);
    assert_trees_equal(&file, &mirror_tree(&dir)).unwrap();
    fs::remove_dir_all(&file).unwrap();
    fs::write(&file, b"a file again").unwrap();
    sync(&file, &dir);
    assert_trees_equal(&file, &mirror_tree(&dir)).unwrap();
    assert!(matches!(
        sync_mirror(&tmp.path().join("nothing"), &dir, &SyncOptions::default()),
        Err(ArchiveError::MissingRoot { .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// Interrupted syncs and stale indexes

#[test]
fn an_interrupted_sync_then_a_full_one_ends_equal() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dir) = (tmp.path().join("src"), tmp.path().join("mirror"));
    build_tree(&src);
    fs::write(src.join("big"), noise(48 << 20, 5)).unwrap();
    settle();
    sync(&src, &dir);

    let cancel = Arc::new(AtomicBool::new(true));
    let opts = SyncOptions { cancel: Some(cancel.clone()) };
    assert!(matches!(sync_mirror(&src, &dir, &opts), Err(ArchiveError::Cancelled)));

    // Cancelled at different points, the tree changing between attempts.
    let mut cancelled = 0;
    for (round, delay_ms) in [0u64, 1, 2, 4, 8, 15, 30, 60].into_iter().enumerate() {
        for at in [round, round + 11, round + 23] {
            apply(&src, &Op::Rewrite { at });
        }
        apply(&src, &Op::File { dir: round, name: round as u8, len: 5000, seed: round as u64 });
        let _ = fs::remove_file(src.join(format!("a/f{}", 20 + round)));
        fs::OpenOptions::new()
            .write(true)
            .open(src.join("big"))
            .unwrap()
            .write_all_at(b"changed", round as u64)
            .unwrap();
        cancel.store(false, Ordering::Relaxed);
        let flag = cancel.clone();
        let setter = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(delay_ms));
            flag.store(true, Ordering::Relaxed);
        });
        match sync_mirror(&src, &dir, &opts) {
            Err(ArchiveError::Cancelled) => cancelled += 1,
            Ok(_) => {}
            Err(e) => panic!("{e}"),
        }
        setter.join().unwrap();
    }
    assert!(cancelled >= 2, "only {cancelled} syncs were cancelled");
    let stats = sync(&src, &dir);
    assert!(stats.index_found);
    assert_trees_equal(&src, &mirror_tree(&dir)).unwrap();
    assert_no_temps(&dir);
}

/// A crash after a sync changed the mirror but before its index was written: the mirror is
/// newer than the index that describes it. The next sync still ends equal.
#[test]
fn a_stale_index_never_hides_a_change() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dir) = (tmp.path().join("src"), tmp.path().join("mirror"));
    build_tree(&src);
    settle();
    sync(&src, &dir);
    let old_index = fs::read(dir.join("index")).unwrap();

    apply(&src, &Op::Rewrite { at: 3 });
    apply(&src, &Op::Chmod { at: 4, mode: 0o600 });
    apply(&src, &Op::Unshare { at: 5 });
    apply(&src, &Op::Xattr { at: 6, name: 1, value: b"v".to_vec() });
    settle();
    sync(&src, &dir);
    fs::write(dir.join("index"), &old_index).unwrap();

    // And more changes, some to the same files, some back to what the old index saw.
    apply(&src, &Op::Rewrite { at: 3 });
    apply(&src, &Op::Chmod { at: 4, mode: 0o644 });
    apply(&src, &Op::Rewrite { at: 8 });
    sync(&src, &dir);
    assert_trees_equal(&src, &mirror_tree(&dir)).unwrap();

    // A garbled index is no index: everything is copied, and the result is the same.
    fs::write(dir.join("index"), b"lifeboat mirror index 1\ngarbage").unwrap();
    let stats = sync(&src, &dir);
    assert!(!stats.index_found);
    assert_eq!(stats.files_copied, 42, "{stats:?}");
    assert_trees_equal(&src, &mirror_tree(&dir)).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Symlinks

/// Everything under `dir` with its content and metadata, to show it did not change.
fn snapshot(dir: &Path) -> Vec<(PathBuf, u32, u64, i64, i64, Vec<u8>)> {
    walk(dir)
        .into_iter()
        .map(|(rel, m)| {
            let data = if m.is_file() { fs::read(dir.join(&rel)).unwrap() } else { Vec::new() };
            (rel, m.mode(), m.ino(), m.mtime(), m.mtime_nsec(), data)
        })
        .collect()
}

#[test]
fn a_symlink_in_the_source_is_copied_never_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dir, outside) = (tmp.path().join("src"), tmp.path().join("mirror"), tmp.path().join("outside"));
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("secret"), b"secret").unwrap();
    std::os::unix::fs::symlink(&outside, src.join("abs")).unwrap();
    std::os::unix::fs::symlink("../../outside", src.join("sub/rel")).unwrap();
    std::os::unix::fs::symlink(outside.join("secret"), src.join("file-link")).unwrap();
    let before = snapshot(&outside);
    sync(&src, &dir);
    assert_trees_equal(&src, &mirror_tree(&dir)).unwrap();
    for link in ["abs", "sub/rel", "file-link"] {
        assert!(fs::symlink_metadata(mirror_tree(&dir).join(link)).unwrap().file_type().is_symlink());
    }
    assert_eq!(snapshot(&outside), before);
    // The root itself may be a symlink: followed (as the writer does), nothing below it is.
    let root_link = tmp.path().join("root-link");
    std::os::unix::fs::symlink(&src, &root_link).unwrap();
    let dir2 = tmp.path().join("mirror2");
    sync(&root_link, &dir2);
    assert_trees_equal(&src, &mirror_tree(&dir2)).unwrap();
}

#[test]
fn a_symlink_planted_in_the_mirror_is_replaced_not_written_through() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dir, outside) = (tmp.path().join("src"), tmp.path().join("mirror"), tmp.path().join("outside"));
    build_tree(&src);
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("victim"), b"must stay").unwrap();
    fs::create_dir(outside.join("b")).unwrap();
    settle();
    sync(&src, &dir);
    let tree = mirror_tree(&dir);
    // Where a directory, an unchanged file and a changed file belong.
    fs::remove_dir_all(tree.join("a")).unwrap();
    std::os::unix::fs::symlink(&outside, tree.join("a")).unwrap();
    fs::remove_file(tree.join("link")).unwrap();
    std::os::unix::fs::symlink(outside.join("victim"), tree.join("link")).unwrap();
    fs::remove_file(tree.join("sparse")).unwrap();
    std::os::unix::fs::symlink(outside.join("victim"), tree.join("sparse")).unwrap();
    fs::write(src.join("a/f0"), b"changed").unwrap();
    let before = snapshot(&outside);
    sync(&src, &dir);
    assert_eq!(snapshot(&outside), before);
    assert_trees_equal(&src, &tree).unwrap();

    // The tree itself replaced by a symlink.
    fs::remove_dir_all(&tree).unwrap();
    std::os::unix::fs::symlink(&outside, &tree).unwrap();
    sync(&src, &dir);
    assert_eq!(snapshot(&outside), before);
    assert_trees_equal(&src, &tree).unwrap();

    // The mirror directory given as a symlink is refused, and nothing is written through it.
    let planted = tmp.path().join("planted");
    std::os::unix::fs::symlink(&outside, &planted).unwrap();
    let refused = sync_mirror(&src, &planted, &SyncOptions::default());
    assert!(matches!(refused, Err(ArchiveError::MirrorNotDirectory { .. })), "{refused:?}");
    assert_eq!(snapshot(&outside), before);
}

// ---------------------------------------------------------------------------------------------
// Archiving the mirror

fn gunzip(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(fs::File::open(path).unwrap()).read_to_end(&mut out).unwrap();
    out
}

#[test]
fn an_archive_of_the_mirror_is_the_archive_of_the_source() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dir) = (tmp.path().join("src"), tmp.path().join("mirror"));
    build_tree(&src);
    assert!(set_xattr(&src.join("a"), "system.posix_acl_default", &acl()));
    assert!(mknod(&src.join("null"), libc::S_IFCHR, 1, 3));
    sync(&src, &dir);
    let archive = |from: &Path, to: &str| {
        let roots = [Root { archive_name: "data".into(), source: from.to_path_buf() }];
        let dest = tmp.path().join(to);
        write_archive(&roots, &dest, &WriteOptions::default(), &mut |_| {}).unwrap();
        dest
    };
    let (of_src, of_mirror) = (archive(&src, "src.tar.gz"), archive(&mirror_tree(&dir), "mirror.tar.gz"));
    let list = |p: &Path| sh(&format!("tar --numeric-owner --full-time --xattrs --acls -tvvf {}", p.display()));
    let listing = list(&of_src);
    assert!(listing.contains("data/a/f1 link to data/a/b/f1-again"), "{listing}");
    assert_eq!(listing, list(&of_mirror));
    // Byte for byte, once uncompressed: same entries, same headers, same sparse maps.
    assert!(gunzip(&of_src) == gunzip(&of_mirror), "the tar streams differ");
}

// ---------------------------------------------------------------------------------------------
// Timing

/// 10,000 files of 100 B to 16 KiB in 100 directories: a full sync, an unchanged one, and one
/// after 1% of the files changed.
#[test]
#[ignore = "timing: run with --ignored --nocapture"]
fn timing_of_syncs_of_10000_files() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dir) = (tmp.path().join("src"), tmp.path().join("mirror"));
    for d in 0..100 {
        fs::create_dir_all(src.join(format!("d{d}"))).unwrap();
        for f in 0..100 {
            let seed = (d * 100 + f) as u64;
            fs::write(src.join(format!("d{d}/f{f}")), noise(100 + (seed as usize * 7919) % 16_000, seed)).unwrap();
        }
    }
    settle();
    let timed = |label: &str| {
        let start = Instant::now();
        let stats = sync(&src, &dir);
        let took = start.elapsed();
        println!(
            "{label}: {:.1} ms ({} entries, {} files copied, {} bytes)",
            took.as_secs_f64() * 1000.0,
            stats.entries,
            stats.files_copied,
            stats.bytes_copied
        );
        stats
    };
    assert_eq!(timed("full sync of 10,000 files").files_copied, 10_000);
    assert_eq!(timed("unchanged").files_copied, 0);
    assert_eq!(timed("unchanged, again").files_copied, 0);
    for i in 0..100 {
        let p = src.join(format!("d{i}/f{}", (i * 37) % 100));
        fs::OpenOptions::new().append(true).open(&p).unwrap().write_all(b"more").unwrap();
    }
    assert_eq!(timed("1% changed").files_copied, 100);
    println!("mirror uses {} KiB", mirror_disk_usage(&dir).unwrap() / 1024);
    assert_trees_equal(&src, &mirror_tree(&dir)).unwrap();
}

/// The mirror damaged behind lifeboat's back (nobody should write there, but a mistaken `rm` or a
/// repair by fsck can): what changed its inode, size, mtime, mode or owner is found and repaired.
#[test]
fn a_damaged_mirror_is_repaired() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dir) = (tmp.path().join("src"), tmp.path().join("mirror"));
    build_tree(&src);
    settle();
    sync(&src, &dir);
    let tree = mirror_tree(&dir);
    fs::OpenOptions::new().write(true).open(tree.join("a/f10")).unwrap().set_len(3).unwrap();
    // Another file with the same size and mtime: only its inode tells it apart.
    // Written beside it and renamed over, so it cannot reuse the freed inode number (ext4 does).
    let m = fs::symlink_metadata(tree.join("a/f11")).unwrap();
    fs::write(tree.join("a/f11.new"), vec![b'x'; m.len() as usize]).unwrap();
    fs::rename(tree.join("a/f11.new"), tree.join("a/f11")).unwrap();
    assert_ne!(fs::symlink_metadata(tree.join("a/f11")).unwrap().ino(), m.ino());
    assert!(set_mtime_ns(&tree.join("a/f11"), m.mtime(), m.mtime_nsec()));
    fs::remove_file(tree.join("a/f12")).unwrap();
    fs::set_permissions(tree.join("a/f13"), fs::Permissions::from_mode(0o777)).unwrap();
    std::os::unix::fs::lchown(tree.join("a/f14"), Some(7), Some(7)).unwrap();
    assert!(set_mtime_ns(&tree.join("a/f15"), 5, 5));
    assert!(set_mtime_ns(&tree.join("a"), 5, 5));
    fs::write(tree.join("a/extra"), b"not in the source").unwrap();
    fs::write(tree.join(".lifeboat-mirror.1-2.3"), b"a temp file left by a crash").unwrap();
    // The second name of a hard link made a file of its own.
    fs::remove_file(tree.join("a/b/f1-again")).unwrap();
    fs::copy(tree.join("a/f1"), tree.join("a/b/f1-again")).unwrap();
    sync(&src, &dir);
    assert_trees_equal(&src, &tree).unwrap();
}
