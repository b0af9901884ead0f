//! Benchmark driver for `scripts/bench-archive.sh`: archives one tree and prints the figures.
//!
//! Usage: `bench SRC DEST [LEVEL] [THREADS]` (threads 0 = one per core). Prints one line of
//! `key=value` pairs: seconds, content bytes, archive bytes, MB/s (content), peak RSS in KiB.

use std::path::PathBuf;
use std::time::Instant;

use lifeboat_archive::{Root, WriteOptions, write_archive};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        return Err("usage: bench SRC DEST [LEVEL] [THREADS]".into());
    }
    let src = PathBuf::from(&args[1]);
    let dest = PathBuf::from(&args[2]);
    let level = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(6);
    let threads = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(0);
    let _ = std::fs::remove_file(&dest);
    let roots = [Root { archive_name: "tree".into(), source: src }];
    let start = Instant::now();
    let summary =
        write_archive(&roots, &dest, &WriteOptions { level, threads, ..WriteOptions::default() }, &mut |_| {})?;
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
