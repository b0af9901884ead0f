//! Writing: walk the roots, tar, gzip in parallel, hash, `NAME.partial`, fsync, rename.

use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sha2::{Digest, Sha256};
use tar::{EntryType, Header, HeaderMode};

use crate::error::ArchiveError;
use crate::links::LinkTable;
use crate::notes::{Skipped, SkippedKind};
use crate::pax::{PaxBuf, mtime_value};
use crate::pgzip::{DEFAULT_BLOCK_SIZE, ParallelGzEncoder};
use crate::util::{HashWriter, fsync_dir, hex, parent_dir, with_suffix};
use crate::{special, xattr};

/// One directory tree to archive, and the name it has inside the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root {
    /// Relative name in the archive, `/`-separated, e.g. `paths/data` or `volumes/db`.
    pub archive_name: String,
    /// The directory (or single file) on disk. If it is a symlink it is followed; nothing below it
    /// ever is.
    pub source: PathBuf,
}

/// How to compress.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    /// gzip level, 0 to 9 (default 6).
    pub level: u32,
    /// Compression threads; 0 (the default) means one per available core, plus one.
    pub threads: usize,
    /// When set and it turns true, the writer stops at the next entry or read (within about a
    /// megabyte), removes the partial file and returns [`ArchiveError::Cancelled`].
    pub cancel: Option<Arc<AtomicBool>>,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions { level: 6, threads: 0, cancel: None }
    }
}

/// What [`write_archive`] produced. The counts are what [`crate::verify_archive`] checks later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveSummary {
    /// The final (renamed, durable) archive path.
    pub path: PathBuf,
    /// sha256 of the archive file, lowercase hex.
    pub sha256: String,
    /// Size of the archive file in bytes.
    pub size_bytes: u64,
    /// Regular files stored with their content (a file with several names under a root once).
    pub file_count: u64,
    /// Hard-link entries: the second and later names of a file, stored without content.
    pub hardlink_count: u64,
    /// Fifos and device nodes.
    pub special_count: u64,
    /// Tar entries archived: directories, files, hard links, symlinks, fifos and devices, roots
    /// included (not the PAX or long-name headers in front of some of them).
    pub entry_count: u64,
    /// Sum of the sizes of the stored regular files (uncompressed content; each file once).
    pub content_bytes: u64,
    /// Paths left out (sockets), in walk order, for the caller to warn about.
    pub skipped: Vec<Skipped>,
}

/// Where [`write_archive`] writes before the final rename: `dest` with `.partial` appended.
pub fn partial_path(dest: &Path) -> PathBuf {
    with_suffix(dest, ".partial")
}

/// How often (in content bytes) the progress callback is called at most.
const PROGRESS_STEP: u64 = 1 << 20;

struct Stats<'p> {
    file_count: u64,
    hardlink_count: u64,
    special_count: u64,
    skipped: Vec<Skipped>,
    entry_count: u64,
    content_bytes: u64,
    reported: u64,
    progress: &'p mut dyn FnMut(u64),
    cancel: Option<Arc<AtomicBool>>,
}

impl Stats<'_> {
    fn add_content(&mut self, n: u64) {
        self.content_bytes += n;
        if self.content_bytes - self.reported >= PROGRESS_STEP {
            self.reported = self.content_bytes;
            (self.progress)(self.content_bytes);
        }
    }

    fn cancelled(&self) -> bool {
        self.cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed))
    }
}

/// Archives `roots` into the gzip-compressed tar file `dest`, durably.
///
/// The archive is streamed to [`partial_path`]`(dest)`, fsynced, renamed to `dest`, and the
/// directory is fsynced: when this returns `Ok`, `dest` is complete and durable. On any error the
/// partial file is removed and `dest` does not exist. A stale partial file from an earlier crash is
/// overwritten. `dest` itself must not exist. `progress` is called with the number of content
/// bytes read so far, about once per MiB.
///
/// Kept: directories (also empty), regular files, symlinks (as links, never followed), hard links
/// within one root (the file once, then hard-link entries), fifos and device nodes (type and
/// device numbers), modes, numeric uid/gid, mtimes to the nanosecond (a PAX `mtime` record when
/// there is a fraction), long names (GNU long name entries), and extended attributes and POSIX
/// ACLs as GNU tar `--xattrs --acls` writes them (PAX `SCHILY.xattr.*` and `SCHILY.acl.*` records;
/// `user.*`, `trusted.*`, `security.*` but not `security.selinux`). Sparse files are stored dense
/// (holes as zeros). Sockets are skipped and listed in [`ArchiveSummary::skipped`].
pub fn write_archive(
    roots: &[Root],
    dest: &Path,
    opts: &WriteOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<ArchiveSummary, ArchiveError> {
    if opts.level > 9 {
        return Err(ArchiveError::InvalidOptions(format!("compression level {} is above 9", opts.level)));
    }
    let names = validate_roots(roots)?;
    let mut root_meta = Vec::with_capacity(roots.len());
    for root in roots {
        match fs::metadata(&root.source) {
            Ok(m) => root_meta.push(m),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ArchiveError::MissingRoot { path: root.source.clone() });
            }
            Err(e) => return Err(ArchiveError::Read { path: root.source.clone(), source: e }),
        }
    }
    match fs::symlink_metadata(dest) {
        Ok(_) => return Err(ArchiveError::DestinationExists { path: dest.to_path_buf() }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(ArchiveError::Write { path: dest.to_path_buf(), source: e }),
    }
    let threads = if opts.threads == 0 {
        // One worker more than cores: this thread also works (walk, tar, sha256, write), and an
        // extra worker keeps every core compressing while it does (measured: 2 cores, 2 workers
        // 6.5 s, 3 workers 6.1 s on the 644 MB bench tree).
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) + 1
    } else {
        opts.threads
    };

    let partial = partial_path(dest);
    let mut stats = Stats {
        file_count: 0,
        hardlink_count: 0,
        special_count: 0,
        skipped: Vec::new(),
        entry_count: 0,
        content_bytes: 0,
        reported: 0,
        progress,
        cancel: opts.cancel.clone(),
    };
    let result = write_partial(roots, &names, &root_meta, &partial, opts.level, threads, &mut stats);
    let (sha256, size_bytes) = match result {
        Ok(done) => done,
        Err(e) => {
            let _ = fs::remove_file(&partial);
            return Err(e);
        }
    };
    if let Err(e) = fs::rename(&partial, dest) {
        let _ = fs::remove_file(&partial);
        return Err(ArchiveError::Write { path: dest.to_path_buf(), source: e });
    }
    // After this fsync the rename is durable: a crash can no longer bring back the partial name.
    let dir = parent_dir(dest);
    fsync_dir(&dir).map_err(|e| ArchiveError::Write { path: dir, source: e })?;
    (stats.progress)(stats.content_bytes);
    Ok(ArchiveSummary {
        path: dest.to_path_buf(),
        sha256,
        size_bytes,
        file_count: stats.file_count,
        hardlink_count: stats.hardlink_count,
        special_count: stats.special_count,
        entry_count: stats.entry_count,
        content_bytes: stats.content_bytes,
        skipped: stats.skipped,
    })
}

fn write_partial(
    roots: &[Root],
    names: &[PathBuf],
    root_meta: &[Metadata],
    partial: &Path,
    level: u32,
    threads: usize,
    stats: &mut Stats<'_>,
) -> Result<(String, u64), ArchiveError> {
    let werr = |e: io::Error| ArchiveError::Write { path: partial.to_path_buf(), source: e };
    let file = File::create(partial).map_err(werr)?;
    let hashing = HashWriter { inner: file, hasher: Sha256::new(), count: 0 };
    let encoder = ParallelGzEncoder::new(hashing, level, threads, DEFAULT_BLOCK_SIZE).map_err(werr)?;
    let mut builder = tar::Builder::new(encoder);
    for ((root, name), meta) in roots.iter().zip(names).zip(root_meta) {
        // A root given as a symlink is followed (see `Root::source`), and so are its attributes.
        let is_link = fs::symlink_metadata(&root.source).is_ok_and(|m| m.file_type().is_symlink());
        let root_real = if is_link { fs::canonicalize(&root.source).ok() } else { None };
        // Hard links are matched within one root only, so that each root extracts on its own.
        let mut w = Walker {
            builder: &mut builder,
            partial,
            stats,
            links: LinkTable::default(),
            root: &root.source,
            root_real,
        };
        w.entry(&root.source, name, meta)?;
    }
    let encoder = builder.into_inner().map_err(werr)?;
    let hashing = encoder.finish().map_err(werr)?;
    hashing.inner.sync_all().map_err(werr)?;
    Ok((hex(&hashing.hasher.finalize()), hashing.count))
}

/// Checks the archive names and turns them into relative paths.
fn validate_roots(roots: &[Root]) -> Result<Vec<PathBuf>, ArchiveError> {
    if roots.is_empty() {
        return Err(ArchiveError::InvalidOptions("no backup roots given: nothing to archive".into()));
    }
    let mut names: Vec<PathBuf> = Vec::with_capacity(roots.len());
    for root in roots {
        let bad = |reason: &str| ArchiveError::InvalidRootName {
            name: root.archive_name.clone(),
            reason: reason.to_string(),
        };
        let trimmed = root.archive_name.trim_end_matches('/');
        if trimmed.is_empty() {
            return Err(bad("it is empty"));
        }
        if trimmed.starts_with('/') {
            return Err(bad("it must be relative"));
        }
        if trimmed.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
            return Err(bad("it must not contain empty, `.` or `..` parts"));
        }
        let path = PathBuf::from(trimmed);
        for other in &names {
            if path.starts_with(other) || other.starts_with(&path) {
                return Err(bad(&format!("it overlaps the root {:?}", other.display().to_string())));
            }
        }
        names.push(path);
    }
    Ok(names)
}

struct Walker<'a, 'p, W: Write> {
    builder: &'a mut tar::Builder<W>,
    partial: &'a Path,
    stats: &'a mut Stats<'p>,
    links: LinkTable,
    root: &'a Path,
    /// Where the root leads, when it is a symlink.
    root_real: Option<PathBuf>,
}

impl<W: Write> Walker<'_, '_, W> {
    fn werr(&self, e: io::Error) -> ArchiveError {
        ArchiveError::Write { path: self.partial.to_path_buf(), source: e }
    }

    fn entry(&mut self, src: &Path, name: &Path, meta: &Metadata) -> Result<(), ArchiveError> {
        if self.stats.cancelled() {
            return Err(ArchiveError::Cancelled);
        }
        let ft = meta.file_type();
        if ft.is_socket() {
            self.stats.skipped.push(Skipped { path: src.to_path_buf(), kind: SkippedKind::Socket });
            return Ok(());
        }
        let mut header = Header::new_gnu();
        header.set_metadata_in_mode(meta, HeaderMode::Complete);
        header.set_mtime(meta.mtime().max(0) as u64);
        header.set_size(0);
        if ft.is_dir() {
            header.set_entry_type(EntryType::Directory);
            self.extended(src, meta)?;
            self.builder.append_data(&mut header, name, io::empty()).map_err(|e| self.werr(e))?;
            self.stats.entry_count += 1;
            let rerr = |e| ArchiveError::Read { path: src.to_path_buf(), source: e };
            let mut children = Vec::new();
            for child in fs::read_dir(src).map_err(rerr)? {
                children.push(child.map_err(rerr)?.file_name());
            }
            // Sorted, so that the same tree always gives the same archive.
            children.sort();
            for child in children {
                let path = src.join(&child);
                let meta =
                    fs::symlink_metadata(&path).map_err(|e| ArchiveError::Read { path: path.clone(), source: e })?;
                self.entry(&path, &name.join(&child), &meta)?;
            }
            Ok(())
        } else if ft.is_file() {
            if let Some(first) = self.links.target(meta, name) {
                // The inode's data, attributes and mtime are in the first entry already.
                header.set_entry_type(EntryType::Link);
                self.builder.append_link(&mut header, name, &first).map_err(|e| self.werr(e))?;
                self.stats.entry_count += 1;
                self.stats.hardlink_count += 1;
                return Ok(());
            }
            self.extended(src, meta)?;
            self.file(src, name, meta, header)
        } else if ft.is_symlink() {
            let target = fs::read_link(src).map_err(|e| ArchiveError::Read { path: src.to_path_buf(), source: e })?;
            header.set_entry_type(EntryType::Symlink);
            self.extended(src, meta)?;
            self.builder.append_link(&mut header, name, &target).map_err(|e| self.werr(e))?;
            self.stats.entry_count += 1;
            Ok(())
        } else if let Some(kind) = special::entry_type(&ft) {
            special::fill_header(&mut header, kind, meta).map_err(|e| self.werr(e))?;
            self.extended(src, meta)?;
            self.builder.append_data(&mut header, name, io::empty()).map_err(|e| self.werr(e))?;
            self.stats.entry_count += 1;
            self.stats.special_count += 1;
            Ok(())
        } else {
            Err(ArchiveError::UnsupportedFileType { path: src.to_path_buf(), kind: "special file" })
        }
    }

    /// Writes the PAX header that goes in front of an entry, when there is something the plain
    /// header cannot hold: a sub-second mtime, extended attributes, ACLs.
    fn extended(&mut self, src: &Path, meta: &Metadata) -> Result<(), ArchiveError> {
        let mut pax = PaxBuf::default();
        let secs = meta.mtime().max(0) as u64;
        let nsec = meta.mtime_nsec().clamp(0, 999_999_999) as u32;
        if nsec != 0 && meta.mtime() >= 0 {
            pax.record(b"mtime", mtime_value(secs, nsec).as_bytes());
        }
        let at = match &self.root_real {
            Some(real) if src == self.root => real.as_path(),
            _ => src,
        };
        let xattrs = xattr::read(at).map_err(|e| ArchiveError::Read { path: src.to_path_buf(), source: e })?;
        xattr::add_records(&xattrs, &mut pax);
        pax.append(self.builder, secs).map_err(|e| self.werr(e))
    }

    fn file(&mut self, src: &Path, name: &Path, meta: &Metadata, mut header: Header) -> Result<(), ArchiveError> {
        let rerr = |e| ArchiveError::Read { path: src.to_path_buf(), source: e };
        let file = File::open(src).map_err(rerr)?;
        let size = meta.len();
        header.set_entry_type(EntryType::Regular);
        header.set_size(size);
        let mut reader = ExactReader { file, remaining: size, failure: None, stats: self.stats };
        let appended = self.builder.append_data(&mut header, name, &mut reader);
        if let Some(failure) = reader.failure.take() {
            return Err(match failure {
                Failure::Read(e) => rerr(e),
                Failure::Shrunk => ArchiveError::FileChanged { path: src.to_path_buf(), expected: size },
                Failure::Cancelled => ArchiveError::Cancelled,
            });
        }
        let partial = self.partial;
        appended.map_err(|e| ArchiveError::Write { path: partial.to_path_buf(), source: e })?;
        let now = reader.file.metadata().map_err(rerr)?;
        if now.len() != size {
            return Err(ArchiveError::FileChanged { path: src.to_path_buf(), expected: size });
        }
        self.stats.entry_count += 1;
        self.stats.file_count += 1;
        Ok(())
    }
}

enum Failure {
    Read(io::Error),
    Shrunk,
    Cancelled,
}

/// Yields exactly the size recorded in the tar header, or fails (and says why in `failure`), so a
/// file that changes while it is read can never desynchronise the tar stream.
struct ExactReader<'s, 'p> {
    file: File,
    remaining: u64,
    failure: Option<Failure>,
    stats: &'s mut Stats<'p>,
}

impl Read for ExactReader<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        if self.stats.cancelled() {
            self.failure = Some(Failure::Cancelled);
            return Err(io::Error::other("cancelled"));
        }
        let max = buf.len().min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        match self.file.read(&mut buf[..max]) {
            Ok(0) => {
                self.failure = Some(Failure::Shrunk);
                Err(io::Error::other("file shrank while being read"))
            }
            Ok(n) => {
                self.remaining -= n as u64;
                self.stats.add_content(n as u64);
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                let copy = io::Error::new(e.kind(), e.to_string());
                self.failure = Some(Failure::Read(e));
                Err(copy)
            }
        }
    }
}
