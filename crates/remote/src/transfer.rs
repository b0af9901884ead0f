//! The two streams every backend shares: a local archive cut into parts (encrypted on the way, the
//! stored bytes hashed) and sent a few at a time; and a download hashed, decrypted and hashed
//! again. Reading, encrypting and hashing happen on a blocking thread, the requests on the async
//! side; a bounded channel between them is what bounds memory.

use std::future::Future;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use futures_util::stream::{FuturesOrdered, Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::{CopyMeta, Encryption, Fetched, Identities, RemoteError, Result, Shipment};

/// The first bytes of every age file.
const AGE_MAGIC: &[u8] = b"age-encryption.org/";

/// S3 allows 10,000 parts; keep a margin.
const MAX_PARTS: u64 = 9_000;

/// S3's smallest part but the last.
const MIN_PART_SIZE: usize = 5 << 20;

/// The part size for a file of `len` bytes: the configured one, or larger (in whole MiB) when the
/// file would need more than [`MAX_PARTS`] parts. Age adds 16 bytes per 64 KiB chunk, 0.025%.
pub(crate) fn part_size_for(len: u64, configured: usize) -> usize {
    let stored = len + len / 4000 + 4096;
    let needed = stored.div_ceil(MAX_PARTS).div_ceil(1 << 20) << 20;
    configured.max(MIN_PART_SIZE).max(usize::try_from(needed).unwrap_or(usize::MAX))
}

/// Where [`send_parts`] puts each part: a multipart upload, or a file at the part's offset.
pub(crate) trait PartSink: Sync {
    type Part: Send;
    fn put_part(&self, index: usize, data: Bytes) -> impl Future<Output = Result<Self::Part>> + Send;
}

/// What [`send_parts`] sent.
pub(crate) struct Sent<P> {
    pub parts: Vec<P>,
    pub stored_bytes: u64,
    pub stored_sha256: String,
}

/// Reads the shipment's file, checks it is the archive its `meta` describes (size and sha256, so
/// a file damaged on the host is never shipped as a good copy), encrypts it as asked, and sends
/// it in parts of `part_size` with at most `options.concurrency` in flight. Returns the parts in
/// order.
pub(crate) async fn send_parts<S: PartSink>(
    remote: &str,
    key: &str,
    shipment: &Shipment<'_>,
    part_size: usize,
    sink: &S,
) -> Result<Sent<S::Part>> {
    let (tx, mut rx) = mpsc::channel::<(usize, Bytes)>(1);
    let producer = {
        let job = Produce {
            remote: remote.to_string(),
            key: key.to_string(),
            source: shipment.source.to_path_buf(),
            encryption: shipment.encryption.clone(),
            meta: shipment.meta.clone(),
            part_size,
            cancel: shipment.options.cancel.clone(),
        };
        tokio::task::spawn_blocking(move || job.run(tx))
    };

    let concurrency = shipment.options.concurrency.max(1);
    let mut in_flight = FuturesOrdered::new();
    let mut parts = Vec::new();
    let mut receiving = true;
    let consumed: Result<()> = async {
        loop {
            tokio::select! {
                biased;
                Some(done) = in_flight.next(), if !in_flight.is_empty() => parts.push(done?),
                next = rx.recv(), if receiving && in_flight.len() < concurrency => match next {
                    Some((index, data)) => in_flight.push_back(sink.put_part(index, data)),
                    None => receiving = false,
                },
                else => return Ok(()),
            }
        }
    }
    .await;
    // Dropping the receiver stops a producer still sending (after a failed part).
    drop(rx);
    let produced = producer.await.map_err(|e| RemoteError::Store { remote: remote.into(), detail: e.to_string() })?;
    consumed?;
    let (stored_bytes, stored_sha256) = produced?;
    Ok(Sent { parts, stored_bytes, stored_sha256 })
}

/// The blocking half of [`send_parts`], with what it owns.
struct Produce {
    remote: String,
    key: String,
    source: PathBuf,
    encryption: Encryption,
    meta: CopyMeta,
    part_size: usize,
    cancel: Option<Arc<AtomicBool>>,
}

impl Produce {
    /// Returns the stored bytes' count and sha256.
    fn run(self, tx: mpsc::Sender<(usize, Bytes)>) -> Result<(u64, String)> {
        let Produce { remote, key, source, encryption, meta, part_size, cancel } = self;
        let (remote, key, source) = (remote.as_str(), key.as_str(), source.as_path());
        let local = |e: io::Error| RemoteError::Local { path: source.into(), source: e };
        let mut file = std::fs::File::open(source).map_err(local)?;
        let cutter =
            PartCutter { buf: Vec::with_capacity(part_size), part_size, index: 0, tx, hasher: Sha256::new(), total: 0 };
        let mut out = encryption.wrap(cutter).map_err(local)?;
        let mut plain = Sha256::new();
        let mut plain_bytes = 0u64;
        let mut chunk = vec![0u8; 256 * 1024];
        let stopped = |e: io::Error| {
            if e.kind() == io::ErrorKind::BrokenPipe {
                // The async side stopped taking parts: its error is the one to report.
                RemoteError::Store { remote: remote.into(), detail: "the upload stopped".into() }
            } else {
                local(e)
            }
        };
        loop {
            if cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed)) {
                return Err(RemoteError::Cancelled { remote: remote.into(), key: key.into() });
            }
            let n = match file.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(local(e)),
            };
            plain.update(&chunk[..n]);
            plain_bytes += n as u64;
            out.write_all(&chunk[..n]).map_err(stopped)?;
        }
        let sha = hex(&plain.finalize());
        if plain_bytes != meta.archive_bytes || sha != meta.archive_sha256 {
            return Err(RemoteError::ArchiveChanged {
                path: source.into(),
                detail: format!(
                    "{plain_bytes} bytes with sha256 {sha}, not the {} bytes with sha256 {} it was recorded with: \
                     it changed on disk, so it is not shipped to remote {remote}",
                    meta.archive_bytes, meta.archive_sha256
                ),
            });
        }
        let mut cutter = out.finish_into().map_err(stopped)?;
        cutter.send_part().map_err(stopped)?;
        Ok((cutter.total, hex(&cutter.hasher.finalize())))
    }
}

/// Cuts what is written into parts of `part_size` and hands them over; the last part may be
/// shorter, and a file of nothing is one empty part (a multipart upload needs one).
struct PartCutter {
    buf: Vec<u8>,
    part_size: usize,
    index: usize,
    tx: mpsc::Sender<(usize, Bytes)>,
    hasher: Sha256,
    total: u64,
}

impl PartCutter {
    fn send_part(&mut self) -> io::Result<()> {
        if self.buf.is_empty() && self.index > 0 {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(self.part_size));
        self.hasher.update(&data);
        self.total += data.len() as u64;
        self.tx.blocking_send((self.index, Bytes::from(data))).map_err(|_| io::ErrorKind::BrokenPipe)?;
        self.index += 1;
        Ok(())
    }
}

impl Write for PartCutter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = self.part_size - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == self.part_size {
            self.send_part()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A download's body, as a backend gives it.
pub(crate) type Body = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>;

/// Hashes `body` as it arrives, decrypts it (when `identities` are given: it must then be an age
/// file, and must not be otherwise) on a blocking thread, hashes the archive and writes it to
/// `out`.
pub(crate) async fn fetch<W: Write + Send + 'static>(
    remote: &str,
    key: &str,
    mut body: Body,
    out: W,
    identities: Option<Identities>,
) -> Result<(Fetched, W)> {
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let consumer = {
        let (remote, key) = (remote.to_string(), key.to_string());
        tokio::task::spawn_blocking(move || {
            consume(&remote, &key, ChannelReader { rx, current: Bytes::new() }, out, identities)
        })
    };
    let mut stored = Sha256::new();
    let mut stored_bytes = 0u64;
    let mut received: Result<()> = Ok(());
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(chunk) => {
                stored.update(&chunk);
                stored_bytes += chunk.len() as u64;
                if tx.send(chunk).await.is_err() {
                    break; // the consumer failed: its error says why
                }
            }
            Err(e) => {
                received = Err(e);
                break;
            }
        }
    }
    drop(tx);
    let consumed = consumer.await.map_err(|e| RemoteError::Store { remote: remote.into(), detail: e.to_string() })?;
    received?;
    let (archive_bytes, archive_sha256, out) = consumed?;
    Ok((Fetched { stored_bytes, stored_sha256: hex(&stored.finalize()), archive_bytes, archive_sha256 }, out))
}

fn consume<W: Write>(
    remote: &str,
    key: &str,
    mut input: ChannelReader,
    mut out: W,
    identities: Option<Identities>,
) -> Result<(u64, String, W)> {
    let decrypt_err = |detail: String| RemoteError::Decrypt { remote: remote.into(), key: key.into(), detail };
    // The first chunk of a download is far longer than the magic.
    let is_age = input.peek().starts_with(AGE_MAGIC);
    let mut reader: Box<dyn Read> = match (&identities, is_age) {
        (Some(ids), true) => {
            let decryptor =
                age::Decryptor::new(input).map_err(|e| decrypt_err(format!("not a valid age file: {e}")))?;
            Box::new(decryptor.decrypt(ids.iter()).map_err(|e| decrypt_err(e.to_string()))?)
        }
        (None, false) => Box::new(input),
        (Some(_), false) => {
            return Err(decrypt_err("it is not an age file, yet the remote encrypts its copies".into()));
        }
        (None, true) => {
            return Err(decrypt_err("it is encrypted (age): give an identity file that holds its key".into()));
        }
    };
    let mut hasher = Sha256::new();
    let mut total = 0u64;
    let mut chunk = vec![0u8; 256 * 1024];
    loop {
        let n = match reader.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // age reports a damaged or truncated chunk as an I/O error of kind InvalidData.
            Err(e) if identities.is_some() => return Err(decrypt_err(format!("the copy is damaged: {e}"))),
            Err(e) => return Err(RemoteError::Store { remote: remote.into(), detail: e.to_string() }),
        };
        hasher.update(&chunk[..n]);
        total += n as u64;
        out.write_all(&chunk[..n]).map_err(|e| RemoteError::Local { path: "the fetched copy".into(), source: e })?;
    }
    out.flush().map_err(|e| RemoteError::Local { path: "the fetched copy".into(), source: e })?;
    Ok((total, hex(&hasher.finalize()), out))
}

/// The blocking side of a download's channel, as a `Read`.
struct ChannelReader {
    rx: mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl ChannelReader {
    /// The first bytes available (waits for the first chunk), without taking them.
    fn peek(&mut self) -> &[u8] {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => self.current = chunk,
                None => break,
            }
        }
        &self.current
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.peek().is_empty() {
            return Ok(0);
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// Lowercase hex, as sha256 sums are written everywhere in lifeboat.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_grow_only_for_archives_past_ten_thousand_parts() {
        assert_eq!(part_size_for(1 << 30, 8 << 20), 8 << 20);
        assert_eq!(part_size_for(0, 1), MIN_PART_SIZE);
        let big = 200u64 << 30;
        let size = part_size_for(big, 8 << 20) as u64;
        assert!(big.div_ceil(size) <= MAX_PARTS, "{size}");
        assert_eq!(size % (1 << 20), 0);
    }
}
