//! Ships one file to an S3 remote as lifeboat does, for `scripts/bench-remote.sh`: prints the
//! wall time, throughput and peak RSS (VmHWM) on one line.
//!
//! Usage: ship FILE s3://BUCKET/PREFIX KEY [age1RECIPIENT]
//! with AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, and LIFEBOAT_S3_ENDPOINT / LIFEBOAT_S3_REGION
//! for a store other than AWS; LIFEBOAT_PART_MB and LIFEBOAT_CONCURRENCY tune the parts.

use std::time::Instant;

use lifeboat_remote::*;
use sha2::{Digest, Sha256};

fn vmhwm_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [file, url, key, rest @ ..] = args.as_slice() else {
        return Err("usage: ship FILE s3://BUCKET/PREFIX KEY [age1RECIPIENT]".into());
    };
    // The archive's catalog entry has its sha256; here it is computed first, outside the timing.
    let data_sha = {
        use std::io::Read;
        let (mut hasher, mut input, mut buf) = (Sha256::new(), std::fs::File::open(file)?, vec![0u8; 1 << 20]);
        loop {
            match input.read(&mut buf)? {
                0 => break,
                n => hasher.update(&buf[..n]),
            }
        }
        hasher.finalize().iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    let len = std::fs::metadata(file)?.len();
    let encryption = match rest.first() {
        Some(recipient) => Encryption::to_recipients(std::slice::from_ref(recipient))?,
        None => Encryption::None,
    };
    let mut spec = RemoteSpec::new("bench", url.parse()?);
    spec.endpoint = std::env::var("LIFEBOAT_S3_ENDPOINT").ok();
    spec.region = std::env::var("LIFEBOAT_S3_REGION").ok();
    spec.path_style = spec.endpoint.is_some();
    spec.credentials = Credentials::from_env();
    let env_num = |name: &str, default: usize| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let options = UploadOptions {
        part_size: env_num("LIFEBOAT_PART_MB", DEFAULT_PART_SIZE >> 20) << 20,
        concurrency: env_num("LIFEBOAT_CONCURRENCY", UploadOptions::default().concurrency),
        cancel: None,
    };
    let meta =
        CopyMeta { backup_id: 1, archive_sha256: data_sha, archive_bytes: len, encryption: encryption.name().into() };

    let remote = Remote::open(&spec)?;
    let started = Instant::now();
    let id = remote.begin_upload(key, &meta).await?;
    let copy = remote
        .upload(
            key,
            &id,
            &Shipment { source: std::path::Path::new(file), meta: &meta, encryption: &encryption, options: &options },
        )
        .await?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "wall_s={secs:.2} mb_per_s={:.1} stored_bytes={} parts={} vmhwm_kib={}",
        len as f64 / 1e6 / secs,
        copy.stored_bytes,
        copy.parts,
        vmhwm_kib().map_or("?".into(), |v| v.to_string())
    );
    Ok(())
}
