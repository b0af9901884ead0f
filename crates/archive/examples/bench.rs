//! Benchmark driver for `scripts/bench-archive.sh`: archives one tree and prints the figures, or
//! generates the many-small-files tree.
//!
//! Usage: `bench SRC DEST [LEVEL] [THREADS] [gzip|zstd]` (threads 0 = one per core). Prints one
//! line of `key=value` pairs: seconds, content bytes, archive bytes, MB/s (content), peak RSS in
//! KiB.
//!
//! `bench --small-tree DIR [FILES]`: writes FILES (default 100000) files of 512 to 4096 bytes of
//! log-like text into DIR, 1000 per directory, the same bytes on every run.

use std::path::{Path, PathBuf};
use std::time::Instant;

use lifeboat_archive::{Compression, Root, WriteOptions, write_archive};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--small-tree") {
        let dir = args.get(2).ok_or("usage: bench --small-tree DIR [FILES]")?;
        let files = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(100_000);
        return small_tree(Path::new(dir), files);
    }
    if args.len() < 3 {
        return Err("usage: bench SRC DEST [LEVEL] [THREADS] [gzip|zstd]".into());
    }
    let src = PathBuf::from(&args[1]);
    let dest = PathBuf::from(&args[2]);
    let level = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(6);
    let threads = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(0);
    let compression = match args.get(5).map(String::as_str) {
        None | Some("gzip") => Compression::Gzip,
        Some("zstd") => Compression::Zstd,
        Some(other) => return Err(format!("unknown compression {other:?}: use gzip or zstd").into()),
    };
    let _ = std::fs::remove_file(&dest);
    let roots = [Root { archive_name: "tree".into(), source: src }];
    let start = Instant::now();
    let opts = WriteOptions { compression, level, threads, ..WriteOptions::default() };
    let summary = write_archive(&roots, &dest, &opts, &mut |_| {})?;
    let secs = start.elapsed().as_secs_f64();
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let hwm = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap_or("VmHWM: 0 kB");
    let hwm_kib: u64 = hwm.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0);
    println!(
        "seconds={secs:.3} content_bytes={} archive_bytes={} entries={} mb_per_s={:.1} vmhwm_kib={hwm_kib}",
        summary.content_bytes,
        summary.size_bytes,
        summary.entry_count,
        summary.content_bytes as f64 / 1e6 / secs,
    );
    Ok(())
}

/// Log-like lines (timestamps, levels, services, ids, a few words), cut to sizes from 512 to 4096
/// bytes: about as compressible as application logs and small state files.
fn small_tree(dir: &Path, files: usize) -> Result<(), Box<dyn std::error::Error>> {
    const WORDS: [&str; 16] = [
        "request", "served", "cache", "miss", "hit", "user", "session", "opened", "closed", "query", "rows", "timeout",
        "retry", "upstream", "ok", "error",
    ];
    const LEVELS: [&str; 4] = ["debug", "info", "warn", "error"];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..files {
        let sub = dir.join(format!("d{:03}", i / 1000));
        if i % 1000 == 0 {
            std::fs::create_dir_all(&sub)?;
        }
        let size = 512 + (next() % 3585) as usize;
        let mut text = String::with_capacity(size + 128);
        while text.len() < size {
            let r = next();
            text.push_str(&format!(
                "ts={} level={} svc=app{} id={:x} msg=\"{} {} {}\" ms={}\n",
                1_700_000_000 + i as u64 * 7 + (r % 1000),
                LEVELS[(r >> 10) as usize % 4],
                (r >> 12) % 20,
                r >> 20,
                WORDS[(r >> 16) as usize % 16],
                WORDS[(r >> 24) as usize % 16],
                WORDS[(r >> 32) as usize % 16],
                (r >> 40) % 5000,
            ));
        }
        text.truncate(size);
        std::fs::write(sub.join(format!("f{i:06}.log")), text)?;
    }
    Ok(())
}
