//! Reading: the shared decode pipeline, verification, listing and single-member reads.

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use sha2::{Digest, Sha256};
use tar::EntryType;

use crate::compress::{Compression, Decoder, MAGIC_LEN};
use crate::error::ArchiveError;
use crate::pax::{Found, MAX_PAX, Record, Sniffer, parse_records};
use crate::sparse::{self, Expand, MapError, SparseMap};
use crate::util::hex;

/// The raw file, hashed and counted as it is read.
pub(crate) struct Source {
    file: File,
    hasher: Rc<RefCell<Sha256>>,
    pos: Rc<Cell<u64>>,
    /// The first bytes, read (and hashed) to tell the compression, not yet handed on. Read, not
    /// peeked with `pread`: the archive may be a pipe.
    head: Vec<u8>,
}

impl Source {
    /// Reads up to `n` bytes into `head` (fewer only at the end of the file).
    fn fill_head(&mut self, n: usize) -> io::Result<&[u8]> {
        let mut buf = vec![0u8; n];
        let mut got = 0;
        while got < n {
            match self.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(k) => got += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        buf.truncate(got);
        self.head = buf;
        Ok(&self.head)
    }
}

impl Read for Source {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.head.is_empty() {
            let n = buf.len().min(self.head.len());
            buf[..n].copy_from_slice(&self.head[..n]);
            self.head.drain(..n);
            return Ok(n);
        }
        let n = self.file.read(buf)?;
        self.hasher.borrow_mut().update(&buf[..n]);
        self.pos.set(self.pos.get() + n as u64);
        Ok(n)
    }
}

type GzFailure = Rc<RefCell<Option<(io::ErrorKind, String)>>>;

/// The decompressor (gzip or zstd, see `compress`), remembering its own failures so that they can
/// be told apart from tar ones.
pub(crate) struct Tap {
    inner: Decoder<Source>,
    failed: GzFailure,
    /// Sees every decompressed byte the tar reader gets, to find PAX headers (see `pax`).
    sniffer: Rc<RefCell<Sniffer>>,
}

impl Read for Tap {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf).inspect_err(|e| {
            *self.failed.borrow_mut() = Some((e.kind(), e.to_string()));
        })?;
        self.sniffer.borrow_mut().observe(&buf[..n]);
        Ok(n)
    }
}

/// An open archive: the tar reader over the tapped gzip decoder over the hashed file.
pub(crate) struct Opened {
    pub path: PathBuf,
    pub archive: tar::Archive<Tap>,
    hasher: Rc<RefCell<Sha256>>,
    pub pos: Rc<Cell<u64>>,
    gz_failed: GzFailure,
    pub sniffer: Rc<RefCell<Sniffer>>,
    compression: Compression,
}

pub(crate) fn open(path: &Path) -> Result<Opened, ArchiveError> {
    let file = File::open(path).map_err(|e| ArchiveError::Open { path: path.to_path_buf(), source: e })?;
    let hasher = Rc::new(RefCell::new(Sha256::new()));
    let pos = Rc::new(Cell::new(0));
    let gz_failed: GzFailure = Rc::new(RefCell::new(None));
    let mut source = Source { file, hasher: Rc::clone(&hasher), pos: Rc::clone(&pos), head: Vec::new() };
    let head = source.fill_head(MAGIC_LEN).map_err(|e| ArchiveError::Open { path: path.to_path_buf(), source: e })?;
    let compression = Compression::detect(head);
    let sniffer = Rc::new(RefCell::new(Sniffer::default()));
    let inner =
        Decoder::new(compression, source).map_err(|e| ArchiveError::Open { path: path.to_path_buf(), source: e })?;
    let tap = Tap { inner, failed: Rc::clone(&gz_failed), sniffer: Rc::clone(&sniffer) };
    let mut archive = tar::Archive::new(tap);
    archive.set_ignore_zeros(false);
    Ok(Opened { path: path.to_path_buf(), archive, hasher, pos, gz_failed, sniffer, compression })
}

/// Tells gzip failures from tar failures for one open archive.
#[derive(Clone)]
pub(crate) struct Classifier {
    path: PathBuf,
    gz_failed: GzFailure,
    compression: Compression,
}

impl Classifier {
    /// Turns an error met while reading entries into the most precise [`ArchiveError`].
    pub fn classify(&self, err: io::Error) -> ArchiveError {
        let path = self.path.clone();
        if let Some((kind, msg)) = self.gz_failed.borrow().clone() {
            if kind == io::ErrorKind::UnexpectedEof {
                return ArchiveError::Truncated { path, detail: format!("the compressed stream ends early ({msg})") };
            }
            return bad_compression(self.compression, path, msg);
        }
        if err.kind() == io::ErrorKind::UnexpectedEof {
            return ArchiveError::Truncated { path, detail: "the tar stream ends inside an entry".into() };
        }
        ArchiveError::BadTar { path, detail: err.to_string() }
    }
}

impl Opened {
    pub fn classifier(&self) -> Classifier {
        Classifier { path: self.path.clone(), gz_failed: Rc::clone(&self.gz_failed), compression: self.compression }
    }

    pub fn classify(&self, err: io::Error) -> ArchiveError {
        self.classifier().classify(err)
    }

    /// Reads the compressed stream to its end (checking gzip's CRC and length, or zstd's content
    /// checksum), then the file to its end;
    /// returns the file's sha256 and size. Call after the last tar entry.
    pub fn finish(self) -> Result<(String, u64), ArchiveError> {
        let Opened { path, archive, hasher, pos, gz_failed, compression, .. } = self;
        let mut tap = archive.into_inner();
        if let Err(e) = io::copy(&mut tap, &mut io::sink()) {
            let (kind, msg) = gz_failed.borrow().clone().unwrap_or((e.kind(), e.to_string()));
            return Err(if kind == io::ErrorKind::UnexpectedEof {
                ArchiveError::Truncated { path, detail: format!("the compressed stream ends early ({msg})") }
            } else {
                bad_compression(compression, path, msg)
            });
        }
        let mut source = tap.inner.into_source();
        io::copy(&mut source, &mut io::sink()).map_err(|e| ArchiveError::Open { path, source: e })?;
        drop(source);
        let digest = Rc::try_unwrap(hasher).map(|h| h.into_inner().finalize()).ok();
        let digest = digest.map(|d| hex(&d)).unwrap_or_default();
        Ok((digest, pos.get()))
    }

    /// Hashes what is left of the file after a decoding failure, so the caller can tell a damaged
    /// file (checksum mismatch) from a writer bug.
    pub fn rest_sha256(self) -> Option<String> {
        let Opened { archive, hasher, .. } = self;
        let tap = archive.into_inner();
        let mut source = tap.inner.into_source();
        io::copy(&mut source, &mut io::sink()).ok()?;
        drop(source);
        let h = Rc::try_unwrap(hasher).ok()?.into_inner();
        Some(hex(&h.finalize()))
    }
}

/// The error for a corrupt compressed stream, naming the compression the file's magic says it has.
fn bad_compression(compression: Compression, path: PathBuf, detail: String) -> ArchiveError {
    match compression {
        Compression::Gzip => ArchiveError::BadGzip { path, detail },
        Compression::Zstd => ArchiveError::BadZstd { path, detail },
    }
}

/// Turns raw tar path bytes into a path, dropping a leading `./` (and any `.` parts).
pub(crate) fn display_name(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).into_owned()
}

/// The raw PAX data in front of `entry`, as [`Sniffer`] found it in the tar stream (empty when
/// there is none). Errors name the entry; [`Classifier::classify`] makes them `BadTar`.
pub(crate) fn pax_data<R: Read>(sniffer: &RefCell<Sniffer>, entry: &tar::Entry<'_, R>) -> io::Result<Vec<u8>> {
    let bad = |reason: String| io::Error::other(format!("entry {:?} {reason}", display_name(&entry.path_bytes())));
    match sniffer.borrow_mut().take_for(entry.raw_header_position()) {
        Ok(Found::None) => Ok(Vec::new()),
        Ok(Found::Pax(data)) => Ok(data),
        Ok(Found::TooLarge) => Err(bad(format!("has extended headers over {MAX_PAX} bytes"))),
        Err(detail) => Err(bad(format!("is unreadable: {detail}"))),
    }
}

/// [`open_entry`] with the PAX records taken from `sniffer`, for reading (not extracting).
pub(crate) fn open_entry_sniffed<R: Read>(
    sniffer: &RefCell<Sniffer>,
    entry: &mut tar::Entry<'_, R>,
) -> io::Result<(Vec<u8>, Option<SparseMap>)> {
    let data = pax_data(sniffer, entry)?;
    let records = parse_records(&data)
        .map_err(|e| io::Error::other(format!("entry {:?} {e}", display_name(&entry.path_bytes()))))?;
    open_entry(entry, &records)
}

/// An entry's real name and, for a PAX sparse file, its checked map (the entry then stands at its
/// first data region). `records` are the entry's PAX records, read raw (see `pax`): the tar
/// crate's own parser loses every record after a value holding a newline, such as an ACL written
/// after the sparse keys. The errors name the entry; [`Classifier::classify`] makes them `BadTar`.
pub(crate) fn open_entry<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    records: &[Record<'_>],
) -> io::Result<(Vec<u8>, Option<SparseMap>)> {
    let stored = entry.path_bytes().into_owned();
    let bad = |reason: String| io::Error::other(format!("entry {:?} {reason}", display_name(&stored)));
    let Some(hdr) = sparse::detect(entry.header().entry_type(), records).map_err(bad)? else {
        return Ok((stored, None));
    };
    let name = hdr.name.clone().unwrap_or_else(|| stored.clone());
    let size = entry.size();
    match sparse::read_map(hdr, entry, size) {
        Ok(map) => Ok((name, Some(map))),
        Err(MapError::Read(e)) => Err(e),
        Err(MapError::Invalid(reason)) => Err(bad(reason)),
    }
}

/// What the archive is expected to be, from the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// sha256 of the file, hex (any case).
    pub sha256: String,
    /// Size of the file in bytes.
    pub size_bytes: u64,
    /// Tar entries, if recorded.
    pub entry_count: Option<u64>,
    /// Uncompressed bytes of regular files (apparent sizes, holes included:
    /// [`crate::ArchiveSummary::content_bytes`]), if recorded.
    pub content_bytes: Option<u64>,
    /// Roots to count on their own (archive names: an entry belongs to a root when its name is
    /// the root's or lies below it); [`VerifyReport::roots`] has their tallies in this order.
    pub roots: Vec<String>,
}

/// What [`verify_archive`] found: everything matched. The counts are defined as in
/// [`crate::ArchiveSummary`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub path: PathBuf,
    pub sha256: String,
    pub size_bytes: u64,
    pub entry_count: u64,
    /// Regular files with content (hard links not included).
    pub file_count: u64,
    /// Hard-link entries.
    pub hardlink_count: u64,
    /// Fifos and device nodes.
    pub special_count: u64,
    /// Apparent bytes of the regular files, holes included (equal to `apparent_bytes`).
    pub content_bytes: u64,
    /// Apparent bytes of the regular files, holes included.
    pub apparent_bytes: u64,
    /// Bytes of file data stored in the archive (the holes of sparse files left out).
    pub stored_bytes: u64,
    /// What each of [`Expected::roots`] holds, in that order.
    pub roots: Vec<crate::RootTally>,
}

/// What [`verify_archive`] counts while it reads.
#[derive(Default)]
struct Counts {
    entries: u64,
    files: u64,
    hardlinks: u64,
    specials: u64,
    apparent: u64,
    stored: u64,
    roots: Vec<crate::RootTally>,
}

/// Re-hashes `path` and reads it through: gzip (CRC32 and ISIZE of every member) or zstd (the
/// content checksum of every frame), tar structure,
/// every entry's data; then compares sha256, size and the recorded counts with `expected`. The
/// data regions of sparse files are read, their holes are not expanded, so a file of a petabyte
/// of holes costs no more than its data; its sparse map is checked against the entry.
///
/// `progress` is called with the number of archive bytes read so far, about once per MiB. The file
/// is only read. A flipped byte is reported as [`ArchiveError::ChecksumMismatch`] (the clearest
/// diagnosis), a short file as [`ArchiveError::Truncated`].
pub fn verify_archive(
    path: &Path,
    expected: &Expected,
    progress: &mut dyn FnMut(u64),
) -> Result<VerifyReport, ArchiveError> {
    let actual_size =
        std::fs::metadata(path).map_err(|e| ArchiveError::Open { path: path.to_path_buf(), source: e })?.len();
    if actual_size < expected.size_bytes {
        return Err(ArchiveError::Truncated {
            path: path.to_path_buf(),
            detail: format!("{actual_size} bytes on disk, {} recorded", expected.size_bytes),
        });
    }
    if actual_size > expected.size_bytes {
        return Err(ArchiveError::SizeMismatch {
            path: path.to_path_buf(),
            expected: expected.size_bytes,
            actual: actual_size,
        });
    }
    let expected_sha = expected.sha256.to_ascii_lowercase();
    let mismatch = |actual: String| ArchiveError::ChecksumMismatch {
        path: path.to_path_buf(),
        expected: expected_sha.clone(),
        actual,
    };

    let mut opened = open(path)?;
    let mut counts = Counts { roots: vec![crate::RootTally::default(); expected.roots.len()], ..Counts::default() };
    let walked = walk_counts(&mut opened, &mut counts, &expected.roots, progress);
    if let Err(e) = walked {
        let err = opened.classify(e);
        return Err(match opened.rest_sha256() {
            Some(actual) if actual != expected_sha => mismatch(actual),
            _ => err,
        });
    }
    let (sha256, size_bytes) = opened.finish().map_err(|err| {
        // The stream failed after the last entry; a rehash tells damage from a writer bug.
        match sha256_file(path) {
            Ok(actual) if actual != expected_sha => mismatch(actual),
            _ => err,
        }
    })?;
    progress(size_bytes);
    if sha256 != expected_sha {
        return Err(mismatch(sha256));
    }
    let Counts {
        entries: entry_count,
        files: file_count,
        hardlinks,
        specials,
        apparent: content_bytes,
        stored: stored_bytes,
        roots,
    } = counts;
    let count_err =
        |what, expected, actual| ArchiveError::CountMismatch { path: path.to_path_buf(), what, expected, actual };
    if let Some(n) = expected.entry_count
        && n != entry_count
    {
        return Err(count_err("entries", n, entry_count));
    }
    if let Some(n) = expected.content_bytes
        && n != content_bytes
    {
        return Err(count_err("content bytes", n, content_bytes));
    }
    Ok(VerifyReport {
        path: path.to_path_buf(),
        sha256,
        size_bytes,
        entry_count,
        file_count,
        hardlink_count: hardlinks,
        special_count: specials,
        content_bytes,
        apparent_bytes: content_bytes,
        stored_bytes,
        roots,
    })
}

fn walk_counts(
    opened: &mut Opened,
    counts: &mut Counts,
    roots: &[String],
    progress: &mut dyn FnMut(u64),
) -> io::Result<()> {
    let pos = Rc::clone(&opened.pos);
    let sniffer = Rc::clone(&opened.sniffer);
    let mut reported = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    for entry in opened.archive.entries()? {
        let mut entry = entry?;
        let kind = entry.header().entry_type();
        if kind == EntryType::XGlobalHeader {
            continue;
        }
        counts.entries += 1;
        match kind {
            EntryType::Link => counts.hardlinks += 1,
            EntryType::Fifo | EntryType::Char | EntryType::Block => counts.specials += 1,
            _ => {}
        }
        // Every entry's PAX records are read, so that what extraction would refuse as malformed
        // fails verification too.
        let (name, map) = open_entry_sniffed(&sniffer, &mut entry)?;
        if is_file_kind(kind) {
            counts.files += 1;
            let name = display_name(&name);
            let root = roots.iter().position(|root| {
                name.strip_prefix(root.as_str()).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            });
            let mut read = 0u64;
            loop {
                let n = entry.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                read += n as u64;
                if pos.get() - reported >= 1 << 20 {
                    reported = pos.get();
                    progress(reported);
                }
            }
            let apparent = map.as_ref().map_or(read, |map| map.realsize);
            if let Some(i) = root {
                counts.roots[i].file_count += 1;
                counts.roots[i].content_bytes += apparent;
            }
            match map {
                Some(map) => {
                    counts.apparent += map.realsize;
                    counts.stored += map.data;
                }
                None => {
                    counts.apparent += read;
                    // An old GNU sparse entry (type `S`) comes expanded; its header has the size stored.
                    counts.stored += if kind == EntryType::GNUSparse { entry.header().entry_size()? } else { read };
                }
            }
        }
    }
    Ok(())
}

pub(crate) fn is_file_kind(kind: EntryType) -> bool {
    matches!(kind, EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse)
}

/// sha256 of a whole file, lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String, ArchiveError> {
    let mut file = File::open(path).map_err(|e| ArchiveError::Open { path: path.to_path_buf(), source: e })?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ArchiveError::Open { path: path.to_path_buf(), source: e }),
        };
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// The kind of an archive entry, as [`list_entries`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    HardLink,
    /// Fifos, device nodes and anything else.
    Other,
}

/// One entry of an archive, as [`list_entries`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryInfo {
    /// The name as stored, with a leading `./` removed (lossy UTF-8). Not checked for safety:
    /// [`crate::extract_to_staging`] does that.
    pub path: String,
    pub kind: EntryKind,
    /// Content size (0 for non-files).
    pub size: u64,
    pub mode: u32,
    pub mtime: u64,
    /// Link target, for symlinks and hard links.
    pub link_target: Option<String>,
    /// sha256 of the content, lowercase hex, for regular files.
    pub sha256: Option<String>,
}

/// Lists every entry of a `.tar.gz` or `.tar.zst`, with the sha256 of each regular file's
/// content, reading the whole stream (so the gzip CRC or zstd checksum is checked too).
pub fn list_entries(path: &Path) -> Result<Vec<EntryInfo>, ArchiveError> {
    let mut opened = open(path)?;
    let mut out = Vec::new();
    if let Err(e) = list_into(&mut opened, &mut out) {
        return Err(opened.classify(e));
    }
    opened.finish()?;
    Ok(out)
}

fn list_into(opened: &mut Opened, out: &mut Vec<EntryInfo>) -> io::Result<()> {
    let sniffer = Rc::clone(&opened.sniffer);
    let mut buf = vec![0u8; 64 * 1024];
    for entry in opened.archive.entries()? {
        let mut entry = entry?;
        let header = entry.header();
        let kind = header.entry_type();
        if kind == EntryType::XGlobalHeader {
            continue;
        }
        let mode = header.mode().unwrap_or(0);
        let mtime = header.mtime().unwrap_or(0);
        let (raw, map) = open_entry_sniffed(&sniffer, &mut entry)?;
        let name = normalize_name(&raw);
        let link_target = entry.link_name_bytes().map(|l| display_name(&l));
        let (kind, size, sha256) = if is_file_kind(kind) {
            let mut hasher = Sha256::new();
            let mut size = 0u64;
            let mut content: Box<dyn Read + '_> = match map {
                Some(map) => Box::new(Expand::new(map, &mut entry)),
                None => Box::new(&mut entry),
            };
            loop {
                let n = content.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                size += n as u64;
            }
            (EntryKind::File, size, Some(hex(&hasher.finalize())))
        } else {
            let k = match kind {
                EntryType::Directory => EntryKind::Dir,
                EntryType::Symlink => EntryKind::Symlink,
                EntryType::Link => EntryKind::HardLink,
                _ => EntryKind::Other,
            };
            (k, 0, None)
        };
        out.push(EntryInfo { path: name, kind, size, mode, mtime, link_target, sha256 });
    }
    Ok(())
}

/// A stored name with `./` prefixes and trailing slashes removed, for comparisons.
pub(crate) fn normalize_name(raw: &[u8]) -> String {
    let s = display_name(raw);
    let mut t = s.as_str();
    while let Some(rest) = t.strip_prefix("./") {
        t = rest;
    }
    t.trim_end_matches('/').to_string()
}

/// Reads one member (a small file such as a package manifest) by name, refusing more than
/// `limit` bytes. Stops at the member: the rest of the archive is not checked.
pub fn read_member(path: &Path, name: &str, limit: u64) -> Result<Vec<u8>, ArchiveError> {
    find_member(path, name, limit, false)
}

/// Reads the archive's first entry if it is the regular file `name` (a manifest written in front
/// of everything else, see [`crate::WriteOptions::leading`]); [`ArchiveError::MemberNotFound`]
/// otherwise. Reads no further than that entry.
pub fn read_first_member(path: &Path, name: &str, limit: u64) -> Result<Vec<u8>, ArchiveError> {
    find_member(path, name, limit, true)
}

fn find_member(path: &Path, name: &str, limit: u64, first_only: bool) -> Result<Vec<u8>, ArchiveError> {
    let wanted = normalize_name(name.as_bytes());
    let mut opened = open(path)?;
    let sniffer = Rc::clone(&opened.sniffer);
    let found = (|| -> io::Result<Option<Result<Vec<u8>, u64>>> {
        for entry in opened.archive.entries()? {
            let mut entry = entry?;
            let kind = entry.header().entry_type();
            if kind == EntryType::XGlobalHeader {
                continue;
            }
            if !is_file_kind(kind) {
                if first_only {
                    break;
                }
                continue;
            }
            let (raw, map) = open_entry_sniffed(&sniffer, &mut entry)?;
            if normalize_name(&raw) != wanted {
                if first_only {
                    break;
                }
                continue;
            }
            let size = map.as_ref().map_or(entry.size(), |m| m.realsize);
            if size > limit {
                return Ok(Some(Err(size)));
            }
            let mut data = Vec::with_capacity(size as usize);
            let mut content: Box<dyn Read + '_> = match map {
                Some(map) => Box::new(Expand::new(map, &mut entry)),
                None => Box::new(&mut entry),
            };
            (&mut content).take(limit + 1).read_to_end(&mut data)?;
            if data.len() as u64 > limit {
                return Ok(Some(Err(data.len() as u64)));
            }
            return Ok(Some(Ok(data)));
        }
        Ok(None)
    })();
    match found {
        Ok(Some(Ok(data))) => Ok(data),
        Ok(Some(Err(size))) => {
            Err(ArchiveError::MemberTooLarge { path: path.to_path_buf(), name: name.to_string(), size, limit })
        }
        Ok(None) => Err(ArchiveError::MemberNotFound { path: path.to_path_buf(), name: name.to_string() }),
        Err(e) => Err(opened.classify(e)),
    }
}
