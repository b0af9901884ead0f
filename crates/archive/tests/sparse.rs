//! Sparse files: stored sparse (time and size follow the data), extracted with the same holes by
//! GNU tar and by lifeboat, GNU tar's PAX sparse archives read by lifeboat, and a file that
//! changes while it is read fails cleanly.

mod common;

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{gz_archive, noise, sh};
use lifeboat_archive::{
    ArchiveError, EntryKind, Expected, ExtractOptions, Root, WriteOptions, extract_to_staging, list_entries,
    partial_path, read_member, verify_archive, write_archive,
};
use proptest::prelude::*;

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

fn q(p: &Path) -> String {
    format!("'{}'", p.display())
}

/// Creates a file of `size` bytes holding `extents` (offset, bytes) and holes elsewhere.
fn make_sparse(path: &Path, size: u64, extents: &[(u64, Vec<u8>)]) {
    let f = File::create(path).unwrap();
    f.set_len(size).unwrap();
    for (at, data) in extents {
        f.write_all_at(data, *at).unwrap();
    }
    f.sync_all().unwrap();
}

/// The data regions of a file, as `SEEK_DATA`/`SEEK_HOLE` report them.
fn data_map(path: &Path) -> Vec<(u64, u64)> {
    let f = File::open(path).unwrap();
    let size = f.metadata().unwrap().len() as i64;
    let mut out = Vec::new();
    let mut pos = 0i64;
    while pos < size {
        let start = unsafe { libc::lseek(f.as_raw_fd(), pos, libc::SEEK_DATA) };
        if start < 0 {
            break;
        }
        let end = unsafe { libc::lseek(f.as_raw_fd(), start, libc::SEEK_HOLE) };
        assert!(end > start, "lseek on {}", path.display());
        out.push((start as u64, (end - start) as u64));
        pos = end;
    }
    out
}

/// Same size, same holes, same bytes in the data regions (a `cmp` that skips the holes, which
/// read as zeros on both sides since the maps are equal).
fn assert_same_sparse(a: &Path, b: &Path) {
    let (ma, mb) = (fs::metadata(a).unwrap(), fs::metadata(b).unwrap());
    assert_eq!(ma.len(), mb.len(), "size of {}", b.display());
    let map = data_map(a);
    assert_eq!(map, data_map(b), "holes of {} differ from {}", b.display(), a.display());
    assert_eq!(ma.blocks(), mb.blocks(), "du of {} differs", b.display());
    let (fa, fb) = (File::open(a).unwrap(), File::open(b).unwrap());
    let mut ba = vec![0u8; MIB as usize];
    let mut bb = vec![0u8; MIB as usize];
    for (start, len) in map {
        let mut at = start;
        while at < start + len {
            let n = (start + len - at).min(MIB) as usize;
            fa.read_exact_at(&mut ba[..n], at).unwrap();
            fb.read_exact_at(&mut bb[..n], at).unwrap();
            assert!(ba[..n] == bb[..n], "{} differs in the data at {at}", b.display());
            at += n as u64;
        }
    }
}

fn expected(s: &lifeboat_archive::ArchiveSummary) -> Expected {
    Expected {
        sha256: s.sha256.clone(),
        size_bytes: s.size_bytes,
        entry_count: Some(s.entry_count),
        content_bytes: Some(s.content_bytes),
        roots: Vec::new(),
    }
}

fn extract(archive: &Path, target: &Path, subtree: Option<&str>) -> lifeboat_archive::ExtractReport {
    let opts = ExtractOptions { subtree: subtree.map(String::from), ..ExtractOptions::default() };
    let staged = extract_to_staging(archive, target, &opts).unwrap();
    let report = staged.report.clone();
    staged.swap_in().unwrap().commit().unwrap();
    report
}

/// The case: 20 GiB apparent, about 10 MiB of data at three offsets.
#[test]
fn a_20_gib_sparse_file_costs_its_data_not_its_size() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    let big = src.join("disk.img");
    let chunk = 3_500_000;
    let extents =
        vec![(0, noise(chunk, 1)), (7 * GIB + 12_345, noise(chunk, 2)), (20 * GIB - chunk as u64, noise(chunk, 3))];
    make_sparse(&big, 20 * GIB, &extents);
    let dest = tmp.path().join("b.tar.gz");
    let roots = [Root { archive_name: "d".into(), source: src.clone() }];
    let start = Instant::now();
    let s = write_archive(&roots, &dest, &WriteOptions::default(), &mut |_| {}).unwrap();
    let took = start.elapsed();
    let gnu = tmp.path().join("gnu.tar.gz");
    let gnu_start = Instant::now();
    sh(&format!("tar --sparse -czf {} -C {} .", q(&gnu), q(&src)));
    let gnu_took = gnu_start.elapsed();
    eprintln!(
        "20 GiB sparse, 10 MiB data: lifeboat {:.2} s, {} bytes; tar --sparse -czf {:.2} s, {} bytes",
        took.as_secs_f64(),
        s.size_bytes,
        gnu_took.as_secs_f64(),
        fs::metadata(&gnu).unwrap().len()
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(s.size_bytes < 15 * MIB, "archive of {} bytes", s.size_bytes);
    assert_eq!(s.apparent_bytes, 20 * GIB);
    assert_eq!(s.content_bytes, s.apparent_bytes);
    let data: u64 = data_map(&big).iter().map(|r| r.1).sum();
    assert_eq!(s.stored_bytes, data);
    assert!(data < 11 * MIB, "{data}");

    let start = Instant::now();
    let v = verify_archive(&dest, &expected(&s), &mut |_| {}).unwrap();
    assert!(start.elapsed() < Duration::from_secs(10));
    assert_eq!(
        (v.apparent_bytes, v.stored_bytes, v.content_bytes),
        (s.apparent_bytes, s.stored_bytes, s.content_bytes)
    );

    // GNU tar extracts it with the same holes.
    let out = tmp.path().join("gnu-out");
    fs::create_dir(&out).unwrap();
    sh(&format!("tar -xzf {} -C {}", q(&dest), q(&out)));
    assert_same_sparse(&big, &out.join("d/disk.img"));
    let du = |p: &Path| sh(&format!("du -k {}", q(p))).split_whitespace().next().unwrap().to_string();
    assert_eq!(du(&big), du(&out.join("d/disk.img")));

    // And so does lifeboat, quickly.
    let start = Instant::now();
    let r = extract(&dest, &tmp.path().join("restored"), Some("d"));
    assert!(start.elapsed() < Duration::from_secs(10));
    assert_eq!((r.apparent_bytes, r.stored_bytes), (20 * GIB, data));
    assert_same_sparse(&big, &tmp.path().join("restored/disk.img"));
}

/// Byte-for-byte with `cmp`, both ways, on a file small enough to read whole.
#[test]
fn gnu_tar_and_lifeboat_agree_on_sparse_files() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    make_sparse(
        &src.join("tail-hole"),
        64 * MIB,
        &[(5000, noise(70_000, 4)), (10 * MIB, noise(MIB as usize, 5)), (33 * MIB + 1, b"x".to_vec())],
    );
    make_sparse(&src.join("tail-data"), 8 * MIB, &[(8 * MIB - 10, b"last bytes".to_vec())]);
    make_sparse(&src.join("all-hole"), 3 * MIB, &[]);
    fs::write(src.join("dense"), noise(100_000, 6)).unwrap();
    // Too long for the stand-in name in a ustar header: it is shortened, the real name kept.
    let long = src.join("l".repeat(90)).join("m".repeat(90));
    fs::create_dir_all(&long).unwrap();
    make_sparse(&long.join("n".repeat(120)), 2 * MIB, &[(MIB, b"deep".to_vec())]);
    common::set_mtimes(&src, 1_600_000_000);

    // lifeboat writes, GNU tar extracts.
    let ours = tmp.path().join("ours.tar.gz");
    let s = common::write_one(&src, "d", &ours, 2);
    assert_eq!(s.apparent_bytes, 64 * MIB + 8 * MIB + 3 * MIB + 100_000 + 2 * MIB);
    let out = tmp.path().join("gnu-out");
    fs::create_dir(&out).unwrap();
    sh(&format!("tar -xzf {} -C {}", q(&ours), q(&out)));
    let deep = format!("{}/{}/{}", "l".repeat(90), "m".repeat(90), "n".repeat(120));
    for f in ["tail-hole", "tail-data", "all-hole", "dense", &deep] {
        sh(&format!("cmp {} {}", q(&src.join(f)), q(&out.join("d").join(f))));
        assert_same_sparse(&src.join(f), &out.join("d").join(f));
    }
    common::compare_trees(&src, &out.join("d")).unwrap();
    // Listing and reading members see the whole content.
    let entries = list_entries(&ours).unwrap();
    let e = entries.iter().find(|e| e.path == "d/tail-hole").unwrap();
    assert_eq!((e.kind, e.size), (EntryKind::File, 64 * MIB));
    let want = sh(&format!("sha256sum {}", q(&src.join("tail-hole"))));
    assert_eq!(e.sha256.as_deref(), want.split_whitespace().next());
    assert!(!entries.iter().any(|e| e.path.contains("GNUSparseFile")), "{entries:?}");
    let member = read_member(&ours, "d/tail-data", 8 * MIB).unwrap();
    assert_eq!(member, fs::read(src.join("tail-data")).unwrap());
    let err = read_member(&ours, "d/tail-data", MIB).unwrap_err();
    assert!(matches!(err, ArchiveError::MemberTooLarge { size, .. } if size == 8 * MIB), "{err}");

    // GNU tar writes (every sparse format it has), lifeboat verifies and extracts.
    for (i, flags) in [
        "--sparse --format=posix",
        "--sparse --format=posix --sparse-version=0.1",
        "--sparse --format=posix --sparse-version=0.0",
        "--sparse --format=gnu",
    ]
    .iter()
    .enumerate()
    {
        let theirs = tmp.path().join(format!("theirs{i}.tar.gz"));
        sh(&format!("tar {flags} -czf {} -C {} d", q(&theirs), q(&out)));
        let target = tmp.path().join(format!("t{i}"));
        let r = extract(&theirs, &target, Some("d"));
        assert_eq!(r.apparent_bytes, s.apparent_bytes, "{flags}");
        for f in ["tail-hole", "tail-data", "all-hole", "dense", &deep] {
            sh(&format!("cmp {} {}", q(&src.join(f)), q(&target.join(f))));
            assert_same_sparse(&src.join(f), &target.join(f));
        }
        common::compare_trees(&src, &target).unwrap();
        let size = fs::metadata(&theirs).unwrap().len();
        let sha256 = lifeboat_archive::sha256_file(&theirs).unwrap();
        let v = verify_archive(
            &theirs,
            &Expected {
                sha256,
                size_bytes: size,
                entry_count: None,
                content_bytes: Some(s.content_bytes),
                roots: Vec::new(),
            },
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(v.apparent_bytes, s.apparent_bytes, "{flags}");
        assert!(v.stored_bytes < 2 * MIB + 300_000, "{flags}: {}", v.stored_bytes);
    }
}

#[test]
fn a_sparse_file_that_shrinks_or_grows_while_read_fails_cleanly() {
    for grow in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fs::create_dir(&src).unwrap();
        let f = src.join("vol.img");
        make_sparse(&f, 64 * MIB, &[(MIB, noise(6 * MIB as usize, 7)), (40 * MIB, noise(MIB as usize, 8))]);
        let dest = tmp.path().join("x.tar.gz");
        let roots = [Root { archive_name: "d".into(), source: src.clone() }];
        let mut done = false;
        let err = write_archive(&roots, &dest, &WriteOptions::default(), &mut |_| {
            if !done {
                done = true;
                let file = OpenOptions::new().write(true).open(&f).unwrap();
                file.set_len(if grow { 100 * MIB } else { 2 * MIB }).unwrap();
            }
        })
        .unwrap_err();
        assert!(matches!(err, ArchiveError::FileChanged { expected, .. } if expected == 64 * MIB), "{err}");
        assert!(err.to_string().contains(&f.display().to_string()), "{err}");
        assert!(!dest.exists() && !partial_path(&dest).exists());
    }
}

/// A crafted PAX sparse entry, as GNU tar would write it, with the given keys and data.
fn pax_sparse(records: &[(&str, &[u8])], stand_in: &[u8], data: &[u8]) -> Vec<u8> {
    let mut pax = Vec::new();
    for (k, v) in records {
        let rest = k.len() + v.len() + 3;
        let mut len = rest + 1;
        while len != rest + len.to_string().len() {
            len = rest + len.to_string().len();
        }
        pax.extend_from_slice(format!("{len} {k}=").as_bytes());
        pax.extend_from_slice(v);
        pax.push(b'\n');
    }
    let mut out = common::raw_entry(b"PaxHeaders/x", tar::EntryType::XHeader, b"", &pax);
    out.extend(common::raw_entry(stand_in, tar::EntryType::Regular, b"", data));
    out
}

fn padded_map(text: &str, data: &[u8]) -> Vec<u8> {
    let mut v = text.as_bytes().to_vec();
    v.resize(v.len().div_ceil(512) * 512, 0);
    v.extend_from_slice(data);
    v
}

#[test]
fn hostile_sparse_entries_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("work/target");
    fs::create_dir_all(&target).unwrap();
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let a = tmp.path().join("a.tar.gz");
    let v1 = [("GNU.sparse.major", &b"1"[..]), ("GNU.sparse.minor", b"0")];
    let cases: Vec<(Vec<u8>, &str)> = vec![
        // The real name climbs out, whatever the harmless stand-in name says.
        (
            pax_sparse(
                &[v1[0], v1[1], ("GNU.sparse.name", b"../../outside/evil"), ("GNU.sparse.realsize", b"10")],
                b"GNUSparseFile.0/evil",
                &padded_map("1\n0\n4\n", b"evil"),
            ),
            "contains a `..` component",
        ),
        // A map that claims more data than the entry holds would desynchronise the stream.
        (
            pax_sparse(
                &[v1[0], v1[1], ("GNU.sparse.name", b"f"), ("GNU.sparse.realsize", b"100")],
                b"f",
                &padded_map("1\n0\n50\n", b"short"),
            ),
            "describing 50 bytes of data, but the entry holds 5",
        ),
        (
            pax_sparse(
                &[v1[0], v1[1], ("GNU.sparse.name", b"f"), ("GNU.sparse.realsize", b"10")],
                b"f",
                &padded_map("1\n8\n5\n", b"abcde"),
            ),
            "past its real size",
        ),
        (
            pax_sparse(
                &[v1[0], v1[1], ("GNU.sparse.name", b"f"), ("GNU.sparse.realsize", b"100")],
                b"f",
                &padded_map("2\n50\n1\n10\n1\n", b"ab"),
            ),
            "out of order",
        ),
        (pax_sparse(&[v1[0], v1[1], ("GNU.sparse.name", b"f")], b"f", &padded_map("0\n", b"")), "without a real size"),
        (
            pax_sparse(
                &[("GNU.sparse.major", b"2"), ("GNU.sparse.minor", b"0"), ("GNU.sparse.realsize", b"1")],
                b"f",
                b"",
            ),
            "format 2.0",
        ),
        (pax_sparse(&[("GNU.sparse.size", b"10"), ("GNU.sparse.map", b"0,1,2")], b"f", b"a"), "odd number"),
    ];
    for (entry, needle) in cases {
        gz_archive(&a, &[entry]);
        let err = extract_to_staging(&a, &target, &ExtractOptions::default()).unwrap_err();
        assert!(err.to_string().contains(needle), "{err} lacks {needle:?}");
        assert!(err.is_integrity(), "{err}");
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
        assert!(common::leftovers(&tmp.path().join("work"), "staging").is_empty());
        if !needle.contains("..") {
            let err = list_entries(&a).unwrap_err();
            assert!(err.is_integrity(), "{err}");
        }
    }
    // A petabyte of holes costs nothing to verify.
    gz_archive(
        &a,
        &[pax_sparse(
            &[v1[0], v1[1], ("GNU.sparse.name", b"huge"), ("GNU.sparse.realsize", b"1125899906842624")],
            b"GNUSparseFile.0/huge",
            &padded_map("1\n1125899906842620\n4\n", b"tail"),
        )],
    );
    let sha256 = lifeboat_archive::sha256_file(&a).unwrap();
    let size = fs::metadata(&a).unwrap().len();
    let v = verify_archive(
        &a,
        &Expected { sha256, size_bytes: size, entry_count: None, content_bytes: None, roots: Vec::new() },
        &mut |_| {},
    )
    .unwrap();
    assert_eq!((v.apparent_bytes, v.stored_bytes), (1 << 50, 4));
}

#[derive(Debug, Clone)]
struct Layout {
    size: u64,
    extents: Vec<(u64, Vec<u8>)>,
}

fn layout() -> impl Strategy<Value = Layout> {
    (0u64..6 * MIB, prop::collection::vec((any::<u64>(), 1usize..200_000, any::<u64>()), 0..6)).prop_map(
        |(size, raw)| {
            let extents = raw
                .into_iter()
                .filter(|_| size > 0)
                .map(|(at, len, seed)| {
                    let at = at % size;
                    let len = len.min((size - at) as usize);
                    (at, noise(len, seed))
                })
                .collect();
            Layout { size, extents }
        },
    )
}

fn cases() -> u32 {
    std::env::var("LIFEBOAT_PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(24)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    /// Random extent layouts come back with the same content and the same holes.
    #[test]
    fn sparse_layouts_round_trip(files in prop::collection::vec(layout(), 1..4)) {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fs::create_dir(&src).unwrap();
        for (i, l) in files.iter().enumerate() {
            make_sparse(&src.join(format!("f{i}")), l.size, &l.extents);
        }
        let dest = tmp.path().join("b.tar.gz");
        let s = common::write_one(&src, "d", &dest, 2);
        let apparent: u64 = files.iter().map(|l| l.size).sum();
        let data: u64 = (0..files.len()).map(|i| data_map(&src.join(format!("f{i}"))).iter().map(|r| r.1).sum::<u64>()).sum();
        prop_assert_eq!(s.apparent_bytes, apparent);
        prop_assert_eq!(s.stored_bytes, data);
        let v = verify_archive(&dest, &expected(&s), &mut |_| {}).unwrap();
        prop_assert_eq!(v.stored_bytes, data);
        let target = tmp.path().join("restored");
        let r = extract(&dest, &target, Some("d"));
        prop_assert_eq!((r.apparent_bytes, r.stored_bytes), (apparent, data));
        for i in 0..files.len() {
            let (a, b) = (src.join(format!("f{i}")), target.join(format!("f{i}")));
            prop_assert!(fs::read(&a).unwrap() == fs::read(&b).unwrap(), "f{} content differs", i);
            prop_assert_eq!(data_map(&a), data_map(&b), "f{} holes differ", i);
        }
    }
}

fn set_mtime_ns(path: &Path, secs: i64, nsec: i64) {
    let c = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str())).unwrap();
    let t = libc::timespec { tv_sec: secs as libc::time_t, tv_nsec: nsec as _ };
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), [t, t].as_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
    assert_eq!(rc, 0, "utimensat {}", path.display());
}

/// The PAX headers (type `x`) of an uncompressed tar stream: the raw data of each, and the name
/// of the header that follows it.
fn pax_headers(tar: &[u8]) -> Vec<(Vec<u8>, String)> {
    let mut out = Vec::new();
    let mut at = 0;
    let mut pending: Option<Vec<u8>> = None;
    while at + 512 <= tar.len() && tar[at..at + 512].iter().any(|b| *b != 0) {
        let h = &tar[at..at + 512];
        let size_text = String::from_utf8_lossy(&h[124..136]).trim_matches(|c: char| c == '\0' || c == ' ').to_string();
        let size = u64::from_str_radix(&size_text, 8).unwrap() as usize;
        let name = String::from_utf8_lossy(&h[..100]).trim_end_matches('\0').to_string();
        if h[156] == b'x' {
            assert!(pending.is_none(), "two PAX headers in a row before {name}");
            pending = Some(tar[at + 512..at + 512 + size].to_vec());
        } else if let Some(data) = pending.take() {
            out.push((data, name));
        }
        at += 512 + size.div_ceil(512) * 512;
    }
    out
}

/// What the test checks on a restored copy of `disk.img`: the same holes and data, the `user.*`
/// attribute, the ACL, the nanosecond mtime, and the second name sharing the inode.
fn check_attributed_sparse(src: &Path, copy: &Path) {
    let (a, b) = (src.join("disk.img"), copy.join("disk.img"));
    sh(&format!("cmp {} {}", q(&a), q(&b)));
    assert_same_sparse(&a, &b);
    let note = sh(&format!("getfattr -n user.note --only-values {}", q(&b)));
    assert_eq!(note, "sparse\nand noted", "{}", b.display());
    let acl = |p: &Path| sh(&format!("getfacl -n -c {}", q(p)));
    assert_eq!(acl(&a), acl(&b), "ACL of {}", b.display());
    assert!(acl(&b).contains("user:10:rw-"), "{}", acl(&b));
    let (ma, mb) = (fs::metadata(&a).unwrap(), fs::metadata(&b).unwrap());
    assert_eq!((mb.mtime(), mb.mtime_nsec()), (ma.mtime(), ma.mtime_nsec()), "mtime of {}", b.display());
    assert_eq!(mb.mtime_nsec(), 123_456_789);
    let again = fs::metadata(copy.join("disk.img.link")).unwrap();
    assert_eq!((again.ino(), mb.nlink()), (mb.ino(), 2), "the second name of {}", b.display());
}

/// A sparse file with a `user.*` attribute (its value holding a newline), an ACL, a sub-second
/// mtime and a second name: lifeboat writes ONE PAX header for it, holding the sparse keys and
/// those records (tar allows one per member), and GNU tar and lifeboat both restore the holes and
/// everything else. The other way, lifeboat restores GNU tar's own archives of the same file in
/// each PAX sparse format (where GNU tar also puts everything in one header).
#[test]
fn a_sparse_file_keeps_its_attributes_acl_and_nanosecond_mtime() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    let disk = src.join("disk.img");
    make_sparse(&disk, 16 * MIB, &[(MIB, noise(100_000, 7)), (9 * MIB + 3, b"tail".to_vec())]);
    sh(&format!("setfattr -n user.note -v \"$(printf 'sparse\\nand noted')\" {}", q(&disk)));
    // uid 10 puts a newline byte into the binary ACL value; the text ACL has newlines too.
    sh(&format!("setfacl -m u:10:rw,g:100:r {}", q(&disk)));
    fs::hard_link(&disk, src.join("disk.img.link")).unwrap();
    set_mtime_ns(&disk, 1_700_000_000, 123_456_789);
    set_mtime_ns(&src, 1_600_000_000, 5);
    let data: u64 = data_map(&disk).iter().map(|r| r.1).sum();

    let dest = tmp.path().join("ours.tar.gz");
    let s = common::write_one(&src, "d", &dest, 2);
    assert_eq!((s.entry_count, s.file_count, s.hardlink_count), (3, 1, 1));
    assert_eq!((s.apparent_bytes, s.content_bytes, s.stored_bytes), (16 * MIB, 16 * MIB, data));
    // One PAX header in front of the stand-in entry, holding everything.
    let mut tar = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(File::open(&dest).unwrap()), &mut tar).unwrap();
    let headers = pax_headers(&tar);
    let sparse: Vec<_> = headers.iter().filter(|(_, name)| name.contains("GNUSparseFile.0")).collect();
    assert_eq!(sparse.len(), 1, "{headers:?}");
    let records = String::from_utf8_lossy(&sparse[0].0);
    for needle in [
        "GNU.sparse.major=1\n",
        "GNU.sparse.name=d/disk.img\n",
        "mtime=1700000000.123456789\n",
        "SCHILY.xattr.user.note=sparse\nand noted\n",
        "SCHILY.xattr.system.posix_acl_access=",
        "SCHILY.acl.access=",
    ] {
        assert!(records.contains(needle), "{needle:?} missing from {records:?}");
    }
    let v = verify_archive(&dest, &expected(&s), &mut |_| {}).unwrap();
    assert_eq!(
        (v.entry_count, v.file_count, v.hardlink_count, v.apparent_bytes, v.stored_bytes),
        (s.entry_count, s.file_count, s.hardlink_count, s.apparent_bytes, s.stored_bytes)
    );
    let listed = list_entries(&dest).unwrap();
    let e = listed.iter().find(|e| e.path == "d/disk.img").unwrap();
    assert_eq!((e.kind, e.size), (EntryKind::File, 16 * MIB));

    // GNU tar extracts it: holes, attribute, ACL, mtime, link.
    let out = tmp.path().join("gnu-out");
    fs::create_dir(&out).unwrap();
    sh(&format!("tar --xattrs --xattrs-include='*' --acls -xpf {} -C {}", q(&dest), q(&out)));
    check_attributed_sparse(&src, &out.join("d"));

    // lifeboat extracts it.
    let r = extract(&dest, &tmp.path().join("restored"), Some("d"));
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    assert_eq!(
        (r.entry_count, r.file_count, r.hardlink_count, r.apparent_bytes, r.stored_bytes),
        (3, 1, 1, 16 * MIB, data)
    );
    check_attributed_sparse(&src, &tmp.path().join("restored"));

    // GNU tar writes, in each PAX sparse format; lifeboat verifies and extracts.
    for version in ["0.0", "0.1", "1.0"] {
        let gnu = tmp.path().join(format!("gnu-{version}.tar.gz"));
        sh(&format!(
            "tar --sparse --sparse-version={version} --format=posix --xattrs --xattrs-include='*' --acls -czf {} -C {} .",
            q(&gnu),
            q(&src)
        ));
        let size = fs::metadata(&gnu).unwrap().len();
        let sha = lifeboat_archive::sha256_file(&gnu).unwrap();
        let e = Expected {
            sha256: sha,
            size_bytes: size,
            entry_count: Some(3),
            content_bytes: Some(16 * MIB),
            roots: Vec::new(),
        };
        let v = verify_archive(&gnu, &e, &mut |_| {}).unwrap();
        assert_eq!((v.file_count, v.hardlink_count, v.apparent_bytes), (1, 1, 16 * MIB), "format {version}");
        let target = tmp.path().join(format!("from-gnu-{version}"));
        let r = extract(&gnu, &target, None);
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
        assert_eq!((r.file_count, r.hardlink_count, r.apparent_bytes), (1, 1, 16 * MIB), "format {version}");
        check_attributed_sparse(&src, &target);
    }
}
