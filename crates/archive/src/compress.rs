//! The compression layer: gzip (`pgzip`) or zstd, chosen by the writer, told apart by the reader
//! from the file's first bytes (never from its name).

use std::io::{self, BufReader, BufWriter, Read, Write};
use std::ops::RangeInclusive;

use flate2::read::MultiGzDecoder;

use crate::pgzip::{DEFAULT_BLOCK_SIZE, ParallelGzEncoder};

/// The first bytes of a zstd frame (docs/design.md, archive format).
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// How many first bytes [`Compression::detect`] looks at.
pub(crate) const MAGIC_LEN: usize = ZSTD_MAGIC.len();

/// How an archive is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// One gzip member written by several threads (`.tar.gz`), what `tar -xzf` reads.
    #[default]
    Gzip,
    /// zstd frames written by several threads (`.tar.zst`), what `tar --zstd -xf` reads.
    Zstd,
}

impl Compression {
    /// The file name ending that goes with it: `.tar.gz` or `.tar.zst`.
    pub fn extension(self) -> &'static str {
        match self {
            Compression::Gzip => ".tar.gz",
            Compression::Zstd => ".tar.zst",
        }
    }

    /// Its name, as `lifeboat.toml` spells it: `gzip` or `zstd`.
    pub fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }

    /// The levels [`crate::WriteOptions::level`] may take: gzip 0 to 9, zstd 1 to 19 (zstd's
    /// "ultra" levels above 19 need windows of 32 MiB and more per thread). Memory does not grow
    /// with the data but does with the zstd level: with 4 MiB jobs and two workers, peak RSS was
    /// 43 to 59 MiB at level 3, 45 MiB at 6, 60 MiB at 9 and 224 MiB at 19 (gzip: 8 to 10 MiB).
    pub fn levels(self) -> RangeInclusive<u32> {
        match self {
            Compression::Gzip => 0..=9,
            Compression::Zstd => 1..=19,
        }
    }

    /// The worker threads on `cores` cores when none are configured. gzip: one more than
    /// cores, since the writing thread also works (walk, tar, sha256, write) and an extra worker
    /// keeps every core compressing while it does (2 cores: 2 workers 6.5 s, 3 workers 6.1 s on
    /// the 644 MB bench tree). zstd: one per core, since libzstd's writing thread sleeps while it
    /// waits for a worker, and a third worker on two cores only took turns with the other two
    /// (2 workers 10% faster and 7% less CPU than 3 on the same tree).
    pub fn default_threads(self, cores: usize) -> usize {
        let cores = cores.max(1);
        match self {
            Compression::Gzip => cores + 1,
            Compression::Zstd => cores,
        }
    }

    /// The level used when none is configured: gzip 6 (what `gzip` uses), zstd 3 (what `zstd`
    /// uses).
    pub fn default_level(self) -> u32 {
        match self {
            Compression::Gzip => 6,
            Compression::Zstd => 3,
        }
    }

    /// The compression of an archive whose first bytes (up to [`MAGIC_LEN`]) are `head`: zstd
    /// when they are the zstd frame magic (`28 b5 2f fd`), gzip otherwise (`1f 8b`; anything else
    /// then fails as a bad gzip header, as before zstd existed).
    pub(crate) fn detect(head: &[u8]) -> Compression {
        if head.starts_with(&ZSTD_MAGIC) { Compression::Zstd } else { Compression::Gzip }
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Input handed to the zstd encoder per call: the tar builder writes 512-byte headers, and each
/// call into the library has a cost of its own.
const ZSTD_INPUT_BUFFER: usize = 128 * 1024;

/// The uncompressed bytes of one zstd job, what each worker compresses at a time. Each job
/// costs a fixed amount (its tables reset, its window primed, hand-overs between threads): on two
/// workers, 4 MiB jobs were 6% faster than 3 MiB and 10% than 2 MiB, with output 0.3% and 1.4%
/// smaller, for a peak RSS of 59 MiB (2 MiB: 33 MiB) on the mixed bench tree.
const ZSTD_JOB_SIZE: u32 = 4 << 20;

/// The compressing writer of [`crate::write_archive`].
pub(crate) enum Encoder<W: Write> {
    Gzip(ParallelGzEncoder<W>),
    Zstd(BufWriter<zstd::stream::write::Encoder<'static, W>>),
}

impl<W: Write> Encoder<W> {
    /// Compresses into `out` at `level` on `threads` worker threads (at least one).
    ///
    /// zstd writes one frame per stream with its content checksum (XXH64) at the end, so a
    /// reader checks the decompressed bytes as gzip's CRC32 does; its worker threads each take a
    /// job of several MiB, so memory stays bounded by the level's window size times the threads.
    pub fn new(compression: Compression, out: W, level: u32, threads: usize) -> io::Result<Self> {
        let threads = threads.max(1);
        match compression {
            Compression::Gzip => Ok(Encoder::Gzip(ParallelGzEncoder::new(out, level, threads, DEFAULT_BLOCK_SIZE)?)),
            Compression::Zstd => {
                let level = i32::try_from(level).unwrap_or(i32::MAX).min(19);
                let mut enc = zstd::stream::write::Encoder::new(out, level)?;
                enc.include_checksum(true)?;
                enc.multithread(u32::try_from(threads).unwrap_or(u32::MAX))?;
                // Each worker holds a job's input and output, and the input buffer holds three
                // jobs more than there are workers: left to itself libzstd makes jobs of four
                // windows (8 MiB at level 3, more above), which on incompressible data took the
                // writer past 120 MiB.
                enc.set_parameter(zstd::stream::raw::CParameter::JobSize(ZSTD_JOB_SIZE))?;
                Ok(Encoder::Zstd(BufWriter::with_capacity(ZSTD_INPUT_BUFFER, enc)))
            }
        }
    }

    /// Compresses what is left, ends the stream and returns the inner writer (flushed, not synced).
    pub fn finish(self) -> io::Result<W> {
        match self {
            Encoder::Gzip(enc) => enc.finish(),
            Encoder::Zstd(buffered) => {
                let enc = buffered.into_inner().map_err(io::IntoInnerError::into_error)?;
                let mut out = enc.finish()?;
                out.flush()?;
                Ok(out)
            }
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Gzip(enc) => enc.write(data),
            Encoder::Zstd(enc) => enc.write(data),
        }
    }

    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Encoder::Gzip(enc) => enc.write_all(data),
            Encoder::Zstd(enc) => enc.write_all(data),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Gzip(enc) => enc.flush(),
            // A flush would end a zstd block early and cost ratio; the data reaches the file at
            // `finish`, as with gzip.
            Encoder::Zstd(_) => Ok(()),
        }
    }
}

/// The decompressing reader under the tar reader, over `R` (the hashed file).
pub(crate) enum Decoder<R: Read> {
    Gzip(Box<MultiGzDecoder<R>>),
    Zstd(zstd::stream::read::Decoder<'static, BufReader<R>>),
}

impl<R: Read> Decoder<R> {
    pub fn new(compression: Compression, source: R) -> io::Result<Self> {
        Ok(match compression {
            Compression::Gzip => Decoder::Gzip(Box::new(MultiGzDecoder::new(source))),
            Compression::Zstd => Decoder::Zstd(zstd::stream::read::Decoder::new(source)?),
        })
    }

    /// The file under the decoder, to read (and hash) what the decoder has not taken.
    pub fn into_source(self) -> R {
        match self {
            Decoder::Gzip(dec) => dec.into_inner(),
            Decoder::Zstd(dec) => dec.finish().into_inner(),
        }
    }
}

impl<R: Read> Read for Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoder::Gzip(dec) => dec.read(buf),
            Decoder::Zstd(dec) => dec.read(buf),
        }
    }
}
