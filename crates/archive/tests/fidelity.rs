//! Archive fidelity against GNU tar: hard links (inode sharing and link counts), fifos, device
//! nodes, skipped sockets, extended attributes, file capabilities, ACLs and nanosecond mtimes
//! survive lifeboat -> GNU tar, GNU tar -> lifeboat and lifeboat -> lifeboat. Runs as root (device
//! nodes, `trusted.*`, capabilities); a missing tool or privilege fails the test.

mod common;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::{gz_archive, sh};
use lifeboat_archive::{
    ArchiveSummary, Expected, ExtractOptions, ExtractReport, ExtractWarning, SkippedKind, extract_to_staging,
    verify_archive,
};

fn q(p: &Path) -> String {
    format!("'{}'", p.display())
}

fn set_mtime_ns(path: &Path, secs: i64, nsec: i64) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    let t = libc::timespec { tv_sec: secs as libc::time_t, tv_nsec: nsec as _ };
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), [t, t].as_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
    assert_eq!(rc, 0, "utimensat {}", path.display());
}

/// Distinct nanosecond mtimes everywhere (one in whole seconds), children before parents.
fn set_mtimes_ns(path: &Path, n: &mut i64) {
    let m = fs::symlink_metadata(path).unwrap();
    if m.is_dir() {
        let mut kids: Vec<_> = fs::read_dir(path).unwrap().map(|e| e.unwrap().path()).collect();
        kids.sort();
        for k in kids {
            set_mtimes_ns(&k, n);
        }
    }
    *n += 1;
    let nsec = if *n == 3 { 0 } else { (*n * 123_456_789) % 1_000_000_000 };
    set_mtime_ns(path, 1_600_000_000 + *n * 1000, nsec);
}

/// The tree of the issue: hard links across directories and a group of three, a socket, a fifo,
/// device nodes, a `user.*` and a `trusted.*` attribute, a file capability, access and default
/// ACLs, an empty file, a 200-byte name, a sparse file, a symlink, odd modes and owners.
/// Returns the socket's path (it stays bound while the listener lives).
fn build_tree(root: &Path) -> (PathBuf, std::os::unix::net::UnixListener) {
    for d in ["a", "b", "c/deep", "acl-dir", "plain"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::write(root.join("a/one"), common::text(50_000, 1)).unwrap();
    fs::hard_link(root.join("a/one"), root.join("b/one-again")).unwrap();
    fs::write(root.join("a/g1"), common::noise(70_000, 2)).unwrap();
    fs::hard_link(root.join("a/g1"), root.join("b/g2")).unwrap();
    fs::hard_link(root.join("a/g1"), root.join("c/deep/g3")).unwrap();
    fs::write(root.join("empty"), b"").unwrap();
    let long = "L".repeat(200);
    fs::write(root.join("c").join(&long), b"a 200-byte name").unwrap();
    // A link whose target name needs a GNU long-link (or PAX linkpath) record.
    fs::hard_link(root.join("c").join(&long), root.join("c/deep/long-link")).unwrap();
    fs::write(root.join("c/cap-bin"), b"#!/bin/sh\n").unwrap();
    fs::write(root.join("plain/acl-file"), b"acl").unwrap();
    fs::write(root.join("plain/secret"), b"s").unwrap();
    // Enough children that `plain` and `c` are read ahead on another thread (the files with
    // attributes, capabilities, ACLs and owners among them), while `a` and `b` are not.
    for i in 0..10 {
        fs::write(root.join(format!("plain/filler-{i}")), common::text(100 + i * 700, i as u64)).unwrap();
        fs::write(root.join(format!("c/filler-{i}")), common::text(3000, 50 + i as u64)).unwrap();
    }
    let f = fs::File::create(root.join("sparse.img")).unwrap();
    f.set_len(3 << 20).unwrap();
    drop(f);
    std::os::unix::fs::symlink("a/one", root.join("link-to-one")).unwrap();
    let sock = root.join("app.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    sh(&format!("mkfifo -m 0640 {}", q(&root.join("fifo"))));
    sh(&format!("mknod -m 0666 {} c 1 3", q(&root.join("null"))));
    sh(&format!("mknod -m 0600 {} b 7 42", q(&root.join("loop42"))));
    sh(&format!("setfattr -n user.note -v 'hello=world' {}", q(&root.join("a/one"))));
    sh(&format!("setfattr -n 'user.odd%name=x' -v '' {}", q(&root.join("a/one"))));
    sh(&format!("setfattr -n trusted.origin -v 0x00ff0a00 {}", q(&root.join("plain/secret"))));
    sh(&format!("setfattr -n user.dir -v d {}", q(&root.join("b"))));
    sh(&format!("setcap cap_net_bind_service+ep {}", q(&root.join("c/cap-bin"))));
    // uid 10 puts a newline byte into the binary ACL value.
    sh(&format!("setfacl -m u:10:rw,g:100:r {}", q(&root.join("plain/acl-file"))));
    sh(&format!("setfacl -d -m u:1000:rx,g:100:rwx {}", q(&root.join("acl-dir"))));
    sh(&format!("setfacl -m u:1000:rwx {}", q(&root.join("acl-dir"))));
    std::os::unix::fs::chown(root.join("plain/secret"), Some(1234), Some(5678)).unwrap();
    std::os::unix::fs::lchown(root.join("link-to-one"), Some(42), Some(43)).unwrap();
    fs::set_permissions(root.join("c/cap-bin"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::set_permissions(root.join("plain/secret"), fs::Permissions::from_mode(0o400)).unwrap();
    fs::set_permissions(root.join("c"), fs::Permissions::from_mode(0o1770)).unwrap();
    // After chown and chmod: both clear capabilities.
    sh(&format!("setcap cap_net_bind_service+ep {}", q(&root.join("c/cap-bin"))));
    set_mtimes_ns(root, &mut 0);
    (sock, listener)
}

/// Everything the comparison looks at for one path.
#[derive(Debug, PartialEq, Eq)]
struct Facts {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, i64),
    nlink: u64,
    /// The first path (in sorted order) of the same inode: equal groups mean equal sharing.
    inode_group: PathBuf,
    rdev: u64,
    content: Option<Vec<u8>>,
    link: Option<PathBuf>,
}

fn facts(root: &Path) -> BTreeMap<PathBuf, Facts> {
    let mut paths = Vec::new();
    fn walk(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) {
        out.push(rel.to_path_buf());
        let p = root.join(rel);
        if fs::symlink_metadata(&p).unwrap().is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                walk(root, &rel.join(e.unwrap().file_name()), out);
            }
        }
    }
    walk(root, Path::new(""), &mut paths);
    paths.sort();
    let mut first_of: BTreeMap<u64, PathBuf> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for rel in paths {
        let p = root.join(&rel);
        let m = fs::symlink_metadata(&p).unwrap();
        let ft = m.file_type();
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_file() {
            "file"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_fifo() {
            "fifo"
        } else if ft.is_char_device() {
            "char"
        } else if ft.is_block_device() {
            "block"
        } else {
            "socket"
        };
        let group = first_of.entry(m.ino()).or_insert_with(|| rel.clone()).clone();
        out.insert(
            rel.clone(),
            Facts {
                kind,
                mode: if ft.is_symlink() { 0 } else { m.mode() & 0o7777 },
                uid: m.uid(),
                gid: m.gid(),
                mtime: (m.mtime(), m.mtime_nsec()),
                nlink: if ft.is_dir() { 0 } else { m.nlink() },
                inode_group: group,
                rdev: m.rdev(),
                content: ft.is_file().then(|| fs::read(&p).unwrap()),
                link: ft.is_symlink().then(|| fs::read_link(&p).unwrap()),
            },
        );
    }
    out
}

/// `getfattr` and `getfacl` output for the whole tree, sections sorted so that directory order
/// does not matter.
fn attr_dump(root: &Path) -> (String, String) {
    let sorted = |out: String| {
        let mut sections: Vec<String> = out.split("\n\n").map(|s| s.trim().to_string()).collect();
        sections.retain(|s| !s.is_empty());
        sections.sort();
        sections.join("\n\n")
    };
    let xattrs = sh(&format!("cd {} && getfattr -R -h -d -m - -e hex . 2>&1", q(root)));
    let acls = sh(&format!("cd {} && getfacl -R -P -n . 2>&1", q(root)));
    (sorted(xattrs), sorted(acls))
}

/// Compares two trees entry by entry, leaving out the given (skipped) paths of `src`.
fn compare(src: &Path, copy: &Path, without: &[&str]) {
    let mut a = facts(src);
    for w in without {
        assert!(a.remove(Path::new(w)).is_some(), "{w} is not in the source tree");
    }
    let b = facts(copy);
    let names_a: Vec<_> = a.keys().collect();
    let names_b: Vec<_> = b.keys().collect();
    assert_eq!(names_a, names_b, "the trees hold different paths");
    for (rel, fa) in &a {
        assert_eq!(fa, &b[rel], "{} differs", rel.display());
    }
    let (xa, la) = attr_dump(src);
    let (xb, lb) = attr_dump(copy);
    let strip = |s: &str| {
        let skipped = |sec: &str| {
            without.iter().any(|w| sec.contains(&format!("# file: ./{w}\n")) || sec.contains(&format!("# file: {w}\n")))
        };
        s.split("\n\n").filter(|sec| !skipped(sec)).collect::<Vec<_>>().join("\n\n")
    };
    assert_eq!(strip(&xa), xb, "extended attributes differ");
    assert_eq!(strip(&la), lb, "ACLs differ");
    // The dumps are not trivially empty: the tree has what the test claims.
    for needle in ["user.note", "user.odd%name", "trusted.origin", "security.capability", "system.posix_acl_default"] {
        assert!(xb.contains(needle), "{needle} missing from the restored tree:\n{xb}");
    }
    assert!(lb.contains("default:group:100:rwx") && lb.contains("user:10:rw-"), "{lb}");
    let cap = sh(&format!("getcap {}", q(&copy.join("c/cap-bin"))));
    assert!(cap.contains("cap_net_bind_service=ep"), "capability lost: {cap:?}");
}

fn write_tree(src: &Path, dest: &Path) -> ArchiveSummary {
    common::write_one(src, "paths/data", dest, 2)
}

fn check_summary(s: &ArchiveSummary, sock: &Path) {
    assert_eq!(s.skipped.len(), 1, "{:?}", s.skipped);
    assert_eq!(s.skipped[0].path, sock);
    assert_eq!(s.skipped[0].kind, SkippedKind::Socket);
    assert!(s.skipped[0].to_string().contains("app.sock"));
    // a/one + b/one-again, a/g1 + b/g2 + c/deep/g3, c/LLL... + c/deep/long-link.
    assert_eq!(s.hardlink_count, 4);
    // fifo, null, loop42.
    assert_eq!(s.special_count, 3);
    // Regular files: one, g1, empty, long, cap-bin, acl-file, secret, sparse.img, 20 fillers.
    assert_eq!(s.file_count, 8 + 20);
    // Directories: root, a, b, c, c/deep, acl-dir, plain; plus files, links, specials, symlink.
    assert_eq!(s.entry_count, 7 + 8 + 20 + 4 + 3 + 1);
    let fillers = (0..10).map(|i| 100 + i * 700).sum::<u64>() + 10 * 3000;
    assert_eq!(s.content_bytes, 50_000 + 70_000 + 15 + 10 + 3 + 1 + (3 << 20) + fillers);
}

fn lifeboat_extract(archive: &Path, target: &Path) -> ExtractReport {
    let opts = ExtractOptions { subtree: Some("paths/data".into()), ..ExtractOptions::default() };
    let staged = extract_to_staging(archive, target, &opts).unwrap();
    let report = staged.report.clone();
    staged.swap_in().unwrap().commit().unwrap();
    report
}

#[test]
fn gnu_tar_restores_lifeboat_archives_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let (sock, _listener) = build_tree(&src);
    let dest = tmp.path().join("b.tar.gz");
    let s = write_tree(&src, &dest);
    check_summary(&s, &sock);
    let expected = Expected {
        sha256: s.sha256.clone(),
        size_bytes: s.size_bytes,
        entry_count: Some(s.entry_count),
        content_bytes: Some(s.content_bytes),
        roots: Vec::new(),
    };
    let v = verify_archive(&dest, &expected, &mut |_| {}).unwrap();
    assert_eq!(
        (v.entry_count, v.file_count, v.hardlink_count, v.special_count),
        (s.entry_count, s.file_count, s.hardlink_count, s.special_count)
    );
    let out = tmp.path().join("out");
    fs::create_dir(&out).unwrap();
    sh(&format!("tar --xattrs --xattrs-include='*' --acls -xpf {} -C {}", q(&dest), q(&out)));
    compare(&src, &out.join("paths/data"), &["app.sock"]);
}

#[test]
fn gnu_tar_without_xattr_patterns_restores_acls_and_user_attributes() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let (_sock, _listener) = build_tree(&src);
    let dest = tmp.path().join("b.tar.gz");
    write_tree(&src, &dest);
    let out = tmp.path().join("out");
    fs::create_dir(&out).unwrap();
    // Plain `--xattrs --acls`: GNU tar restores user.* attributes, and ACLs from the text records.
    sh(&format!("tar --xattrs --acls -xpf {} -C {}", q(&dest), q(&out)));
    let (_, acls_src) = attr_dump(&src);
    let (_, acls_out) = attr_dump(&out.join("paths/data"));
    let strip = |s: &str| s.split("\n\n").filter(|x| !x.contains("app.sock")).collect::<Vec<_>>().join("\n\n");
    assert_eq!(strip(&acls_src), acls_out);
    let note = sh(&format!("getfattr -n user.note --only-values {}", q(&out.join("paths/data/a/one"))));
    assert_eq!(note, "hello=world");
}

#[test]
fn lifeboat_restores_gnu_tar_archives_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    // GNU tar names the top directory; lifeboat extracts it as a subtree.
    let src = tmp.path().join("paths/data");
    let (_sock, _listener) = build_tree(&src);
    let gnu = tmp.path().join("gnu.tar.gz");
    // GNU tar warns "socket ignored" and exits 0.
    sh(&format!("tar --xattrs --xattrs-include='*' --acls -czf {} -C {} paths/data 2>&1", q(&gnu), q(tmp.path())));
    let target = tmp.path().join("restored");
    let report = lifeboat_extract(&gnu, &target);
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    assert_eq!((report.hardlink_count, report.special_count, report.file_count), (4, 3, 8 + 20));
    compare(&src, &target, &["app.sock"]);
}

#[test]
fn lifeboat_restores_acls_from_gnu_tar_text_records_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let (_sock, _listener) = build_tree(&src);
    let gnu = tmp.path().join("acl-only.tar.gz");
    // `--acls` alone: only the SCHILY.acl.* text records (user names where they exist).
    sh(&format!("tar --acls -czf {} -C {} . 2>&1", q(&gnu), q(&src)));
    let target = tmp.path().join("restored");
    let staged = extract_to_staging(&gnu, &target, &ExtractOptions::default()).unwrap();
    staged.swap_in().unwrap().commit().unwrap();
    let (_, acls_src) = attr_dump(&src);
    let (_, acls_out) = attr_dump(&target);
    let strip = |s: &str| s.split("\n\n").filter(|x| !x.contains("app.sock")).collect::<Vec<_>>().join("\n\n");
    assert_eq!(strip(&acls_src), acls_out);
}

#[test]
fn lifeboat_round_trip_keeps_everything() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let (sock, _listener) = build_tree(&src);
    let dest = tmp.path().join("b.tar.gz");
    let s = write_tree(&src, &dest);
    check_summary(&s, &sock);
    // A default ACL on the target's parent must not leak into the restored tree.
    let parent = tmp.path().join("parent");
    fs::create_dir(&parent).unwrap();
    sh(&format!("setfacl -d -m u:4242:rwx {}", q(&parent)));
    let target = parent.join("restored");
    let report = lifeboat_extract(&dest, &target);
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    assert_eq!((report.hardlink_count, report.special_count, report.file_count), (4, 3, 8 + 20));
    assert_eq!(report.content_bytes, s.content_bytes);
    compare(&src, &target, &["app.sock"]);
    // The same tree gives the same tar stream (the gzip bytes may differ with several threads,
    // see `pgzip`).
    let again = tmp.path().join("again.tar.gz");
    write_tree(&src, &again);
    let tar_of = |p: &Path| {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(fs::File::open(p).unwrap()), &mut v).unwrap();
        v
    };
    assert!(tar_of(&dest) == tar_of(&again), "the tar stream changed between two runs");
}

/// A PAX `x` header in front of one entry.
fn pax_entry(records: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut data = Vec::new();
    for (k, v) in records {
        let rest = k.len() + v.len() + 3;
        let mut len = rest + 1;
        while len.to_string().len() + rest != len {
            len = rest + len.to_string().len();
        }
        data.extend_from_slice(format!("{len} ").as_bytes());
        data.extend_from_slice(k);
        data.push(b'=');
        data.extend_from_slice(v);
        data.push(b'\n');
    }
    common::raw_entry(b"././@PaxHeader", tar::EntryType::XHeader, b"", &data)
}

#[test]
fn refused_attributes_are_warnings_and_the_rest_is_restored() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a.tar.gz");
    gz_archive(
        &a,
        &[
            pax_entry(&[
                (b"mtime", b"1600000000.5"),
                (b"SCHILY.xattr.system.posix_acl_access", b"\x02\0\0\0garbage!"),
                (b"SCHILY.xattr.security.selinux", b"system_u:object_r:etc_t:s0\0"),
                (b"SCHILY.xattr.user.fine", b"ok\nwith a newline"),
            ]),
            common::raw_entry(b"f", tar::EntryType::Regular, b"", b"data"),
        ],
    );
    let target = tmp.path().join("t");
    let staged = extract_to_staging(&a, &target, &ExtractOptions::default()).unwrap();
    let warnings = staged.report.warnings.clone();
    staged.swap_in().unwrap().commit().unwrap();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(
        warnings
            .iter()
            .any(|w| matches!(w, ExtractWarning::AttributeNotRestored { name, .. } if name == "security.selinux"))
    );
    assert!(warnings.iter().any(|w| w.to_string().contains("system.posix_acl_access of \"f\"")), "{warnings:?}");
    let m = fs::metadata(target.join("f")).unwrap();
    assert_eq!((m.mtime(), m.mtime_nsec()), (1_600_000_000, 500_000_000));
    let v = sh(&format!("getfattr -n user.fine --only-values {}", q(&target.join("f"))));
    assert_eq!(v, "ok\nwith a newline");
}

/// Run by `devices_are_warnings_when_not_root` in a child process that drops root first.
#[test]
#[ignore = "helper: run as a child process by devices_are_warnings_when_not_root"]
fn extract_as_nobody_helper() {
    let archive = PathBuf::from(std::env::var("LIFEBOAT_TEST_ARCHIVE").expect("run by the parent test"));
    let target = PathBuf::from(std::env::var("LIFEBOAT_TEST_TARGET").unwrap());
    assert_eq!(unsafe { libc::setgroups(0, std::ptr::null()) }, 0);
    assert_eq!(unsafe { libc::setgid(65534) }, 0);
    assert_eq!(unsafe { libc::setuid(65534) }, 0);
    let staged = extract_to_staging(&archive, &target, &ExtractOptions::default()).unwrap();
    let r = &staged.report;
    assert_eq!(r.special_count, 1, "{r:?}");
    assert_eq!(r.warnings.len(), 1, "{r:?}");
    assert!(
        matches!(&r.warnings[0], ExtractWarning::DeviceNotCreated { entry, .. } if entry == "./null"),
        "{:?}",
        r.warnings
    );
    assert!(staged.staging.join("fifo").exists() && staged.staging.join("f").exists());
    assert!(!staged.staging.join("null").exists());
    println!("HELPER-OK");
}

#[test]
fn devices_are_warnings_when_not_root() {
    assert_eq!(unsafe { libc::geteuid() }, 0, "this test needs root, to drop it");
    let tmp = tempfile::tempdir().unwrap();
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"x").unwrap();
    sh(&format!("mkfifo {} && mknod {} c 1 3", q(&src.join("fifo")), q(&src.join("null"))));
    let archive = tmp.path().join("a.tar.gz");
    sh(&format!("tar -czf {} -C {} . && chmod 644 {}", q(&archive), q(&src), q(&archive)));
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "extract_as_nobody_helper", "--nocapture", "--test-threads=1"])
        .env("LIFEBOAT_TEST_ARCHIVE", &archive)
        .env("LIFEBOAT_TEST_TARGET", tmp.path().join("target"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stdout.contains("HELPER-OK"), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn gnu_sparse_entries_with_extension_blocks_stay_in_step() {
    // More than four data islands: GNU tar writes sparse extension blocks after the header, which
    // the PAX sniffer must walk over like the tar reader does.
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    let f = fs::File::create(src.join("islands.img")).unwrap();
    f.set_len(40 << 20).unwrap();
    for i in 0..30u64 {
        use std::os::unix::fs::FileExt;
        f.write_all_at(format!("island {i}").as_bytes(), i * (1 << 20) + 4096 * (i % 3)).unwrap();
    }
    drop(f);
    fs::write(src.join("after"), b"the entry after the sparse one").unwrap();
    sh(&format!("setfattr -n user.after -v yes {}", q(&src.join("after"))));
    let a = tmp.path().join("gnu.tar.gz");
    sh(&format!("tar --format=gnu --sparse -czf {} -C {} .", q(&a), q(&src)));
    let list = sh(&format!("tar -tvzf {}", q(&a)));
    assert!(list.contains("islands.img"), "{list}");
    let target = tmp.path().join("t");
    extract_to_staging(&a, &target, &ExtractOptions::default()).unwrap().swap_in().unwrap().commit().unwrap();
    assert_eq!(fs::read(target.join("islands.img")).unwrap(), fs::read(src.join("islands.img")).unwrap());
    // And in POSIX format with attributes, where an `x` header follows the sparse entry.
    let b = tmp.path().join("posix.tar.gz");
    sh(&format!("tar --format=posix --xattrs -czf {} -C {} ./islands.img ./after", q(&b), q(&src)));
    let target = tmp.path().join("t2");
    extract_to_staging(&b, &target, &ExtractOptions::default()).unwrap().swap_in().unwrap().commit().unwrap();
    let v = sh(&format!("getfattr -n user.after --only-values {}", q(&target.join("after"))));
    assert_eq!(v, "yes");
}

fn lset(path: &Path, name: &str, value: &[u8]) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    let rc = unsafe { libc::lsetxattr(c.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    assert_eq!(rc, 0, "setxattr {name} on {}: {}", path.display(), std::io::Error::last_os_error());
}

#[test]
fn a_root_given_as_a_symlink_keeps_the_attributes_of_where_it_leads() {
    let tmp = tempfile::tempdir().unwrap();
    let real = tmp.path().join("real");
    fs::create_dir(&real).unwrap();
    fs::write(real.join("f"), b"f").unwrap();
    lset(&real, "user.root", b"yes");
    std::os::unix::fs::symlink(&real, tmp.path().join("via")).unwrap();
    let dest = tmp.path().join("a.tar.gz");
    write_tree(&tmp.path().join("via"), &dest);
    let target = tmp.path().join("t");
    lifeboat_extract(&dest, &target);
    let v = sh(&format!("getfattr -n user.root --only-values {}", q(&target)));
    assert_eq!(v, "yes");
}

mod generated {
    use super::*;
    use proptest::prelude::*;

    fn attrs() -> impl Strategy<Value = BTreeMap<String, Vec<u8>>> {
        prop::collection::btree_map("user\\.[a-z0-9%= .\\-]{1,16}", prop::collection::vec(any::<u8>(), 0..300), 0..5)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 12, failure_persistence: None, ..ProptestConfig::default() })]

        /// Arbitrary attribute names (with `%`, `=`, spaces) and binary values (with newlines),
        /// and nanosecond mtimes, through lifeboat and back, and through GNU tar.
        #[test]
        fn attributes_and_mtimes_round_trip(files in prop::collection::vec((attrs(), 0i64..1_000_000_000), 1..5)) {
            let tmp = tempfile::tempdir().unwrap();
            let src = tmp.path().join("src");
            fs::create_dir(&src).unwrap();
            for (i, (attrs, nsec)) in files.iter().enumerate() {
                let f = src.join(format!("f{i}"));
                fs::write(&f, format!("file {i}")).unwrap();
                for (name, value) in attrs {
                    lset(&f, name, value);
                }
                set_mtime_ns(&f, 1_700_000_000 + i as i64, *nsec);
            }
            set_mtime_ns(&src, 1_700_000_000, 5);
            let dest = tmp.path().join("a.tar.gz");
            write_tree(&src, &dest);
            let mine = tmp.path().join("mine");
            let report = lifeboat_extract(&dest, &mine);
            prop_assert!(report.warnings.is_empty(), "{:?}", report.warnings);
            let gnu = tmp.path().join("gnu");
            fs::create_dir(&gnu).unwrap();
            sh(&format!("tar --xattrs --xattrs-include='*' -xpf {} -C {}", q(&dest), q(&gnu)));
            let expected = attr_dump(&src).0;
            prop_assert_eq!(&attr_dump(&mine).0, &expected);
            prop_assert_eq!(&attr_dump(&gnu.join("paths/data")).0, &expected);
            prop_assert_eq!(facts(&mine), facts(&src));
            prop_assert_eq!(facts(&gnu.join("paths/data")), facts(&src));
        }
    }
}
