//! Property test: write, verify, extract and compare generated trees, byte for byte and metadata.

mod common;

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use common::{chmod, compare_trees, set_mtime};
use lifeboat_archive::{
    Expected, ExtractOptions, Root, WriteOptions, extract_to_staging, verify_archive, write_archive,
};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Kind {
    File {
        data: Vec<u8>,
        mode: u32,
    },
    Dir {
        mode: u32,
    },
    /// A relative link: `up` levels of `..` (capped to stay inside) then `name`, usually dangling.
    Symlink {
        up: usize,
        name: String,
    },
}

#[derive(Debug, Clone)]
struct Spec {
    path: Vec<String>,
    kind: Kind,
    mtime: i64,
}

fn name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_ .é漢🙂-]{1,16}".prop_filter("not . or ..", |s| s != "." && s != "..")
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        4 => (prop::collection::vec(any::<u8>(), 0..3000), prop::sample::select(vec![0o644, 0o600, 0o755, 0o400, 0o777, 0o4755]))
            .prop_map(|(data, mode)| Kind::File { data, mode }),
        2 => prop::sample::select(vec![0o755, 0o700, 0o750, 0o555, 0o1777]).prop_map(|mode| Kind::Dir { mode }),
        1 => (0usize..3, name()).prop_map(|(up, name)| Kind::Symlink { up, name }),
    ]
}

fn spec() -> impl Strategy<Value = Spec> {
    (prop::collection::vec(name(), 1..4), kind(), 0i64..2_000_000_000).prop_map(|(path, kind, mtime)| Spec {
        path,
        kind,
        mtime,
    })
}

/// Materialises the specs under `root`; specs that clash with earlier ones are skipped.
fn build(root: &Path, specs: &[Spec]) {
    fs::create_dir_all(root).unwrap();
    let mut dirs: Vec<(PathBuf, u32, i64)> = vec![(root.to_path_buf(), 0o755, 1_500_000_000)];
    for spec in specs {
        let mut p = root.to_path_buf();
        let mut ok = true;
        for c in &spec.path[..spec.path.len() - 1] {
            p.push(c);
            match fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    ok = false;
                    break;
                }
                Err(_) => {
                    fs::create_dir(&p).unwrap();
                    dirs.push((p.clone(), 0o755, spec.mtime / 2));
                }
            }
        }
        p.push(spec.path.last().unwrap());
        if !ok || fs::symlink_metadata(&p).is_ok() {
            continue;
        }
        match &spec.kind {
            Kind::File { data, mode } => {
                fs::write(&p, data).unwrap();
                chmod(&p, *mode);
                set_mtime(&p, spec.mtime);
            }
            Kind::Dir { mode } => {
                fs::create_dir(&p).unwrap();
                dirs.push((p.clone(), *mode, spec.mtime));
            }
            Kind::Symlink { up, name } => {
                let up = (*up).min(spec.path.len() - 1);
                std::os::unix::fs::symlink(format!("{}{name}", "../".repeat(up)), &p).unwrap();
                set_mtime(&p, spec.mtime);
            }
        }
    }
    // Fixed entries: a path over 200 bytes, and a sparse file.
    let long = root.join("d".repeat(80)).join("é".repeat(40)).join("f".repeat(60));
    if fs::create_dir_all(long.parent().unwrap()).is_ok() {
        fs::write(&long, b"long").unwrap();
        set_mtime(&long, 1_234_567_890);
        dirs.push((root.join("d".repeat(80)), 0o755, 1));
        dirs.push((long.parent().unwrap().to_path_buf(), 0o700, 2));
    }
    let sparse = root.join("sparse.img");
    if fs::symlink_metadata(&sparse).is_err() {
        let mut f = fs::File::create(&sparse).unwrap();
        f.set_len(1 << 20).unwrap();
        f.seek(SeekFrom::Start(300_000)).unwrap();
        f.write_all(b"island").unwrap();
        drop(f);
        set_mtime(&sparse, 1_111_111_111);
    }
    // Directories last, deepest first, so their modes and mtimes stick.
    dirs.sort_by_key(|(p, _, _)| std::cmp::Reverse(p.components().count()));
    for (p, mode, mtime) in dirs {
        chmod(&p, mode);
        set_mtime(&p, mtime);
    }
}

fn cases() -> u32 {
    std::env::var("LIFEBOAT_PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(40)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn write_verify_extract_round_trips(specs in prop::collection::vec(spec(), 0..24), threads in 1usize..4) {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("src/data");
        let vol = tmp.path().join("src/vol");
        build(&data, &specs);
        build(&vol, &specs[..specs.len() / 2]);
        let dest = tmp.path().join("backup.tar.gz");
        let roots = [
            Root { archive_name: "paths/data".into(), source: data.clone() },
            Root { archive_name: "volumes/vol".into(), source: vol.clone() },
        ];
        let mut last_progress = 0;
        let summary = write_archive(&roots, &dest, &WriteOptions { level: 6, threads, ..WriteOptions::default() }, &mut |n| last_progress = n).unwrap();
        prop_assert_eq!(last_progress, summary.content_bytes);
        prop_assert!(!lifeboat_archive::partial_path(&dest).exists());

        let expected = Expected {
            sha256: summary.sha256.clone(),
            size_bytes: summary.size_bytes,
            entry_count: Some(summary.entry_count),
            content_bytes: Some(summary.content_bytes),
            roots: Vec::new(),
        };
        let report = verify_archive(&dest, &expected, &mut |_| {}).unwrap();
        prop_assert_eq!(report.file_count, summary.file_count);

        for (subtree, src, target) in [("paths/data", &data, tmp.path().join("restore/data")), ("volumes/vol", &vol, tmp.path().join("restore/vol"))] {
            fs::create_dir_all(target.parent().unwrap()).unwrap();
            let opts = ExtractOptions { subtree: Some(subtree.into()), ..ExtractOptions::default() };
            let staged = extract_to_staging(&dest, &target, &opts).unwrap();
            staged.swap_in().unwrap().commit().unwrap();
            if let Err(diff) = compare_trees(src, &target) {
                prop_assert!(false, "{subtree}: {diff}");
            }
        }
        // Zero runs come back as holes.
        let blocks = std::os::unix::fs::MetadataExt::blocks(&fs::metadata(tmp.path().join("restore/data/sparse.img")).unwrap());
        prop_assert!(blocks * 512 < 1 << 20, "the sparse file was restored dense ({blocks} blocks)");
    }
}

#[test]
fn tar_stream_does_not_depend_on_thread_count() {
    use std::io::Read;
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    common::build_mixed_tree(&src, 2);
    let mut streams = Vec::new();
    for threads in [1, 3] {
        let dest = tmp.path().join(format!("{threads}.tar.gz"));
        let s = common::write_one(&src, "paths/data", &dest, threads);
        assert_eq!(s.sha256, lifeboat_archive::sha256_file(&dest).unwrap());
        assert_eq!(s.size_bytes, fs::metadata(&dest).unwrap().len());
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(fs::File::open(&dest).unwrap()).read_to_end(&mut tar).unwrap();
        streams.push(tar);
    }
    assert!(streams[0] == streams[1], "the tar stream changed with the thread count");
}
