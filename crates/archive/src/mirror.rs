//! Mirrors: an exact copy of a backup root kept on the backup directory's filesystem, so that a
//! backup stops the services only for a short second sync and archives the copy afterwards
//! (ARCHITECTURE.md, `crates/archive`).
//!
//! A mirror directory (`MIRROR`, say `.lifeboat/mirror/<root>`) holds:
//!
//! - `MIRROR/tree`: the copy ([`mirror_tree`]), a directory or a single file like the source;
//! - `MIRROR/index`: what the source looked like at the end of the last successful sync, per
//!   path: device, inode, type, size, mtime, ctime, and the inode of the mirror's copy;
//! - `MIRROR/index.partial`: the next index while it is written.
//!
//! The index sits beside the tree, not in it, so it is never mirrored, compared or archived.
//! `MIRROR` is `0700`: the tree keeps the source's modes (setuid files, world-writable
//! directories), which must not be reachable by other users through the mirror.
//!
//! # Why a crash mid-sync cannot leave a stale copy trusted
//!
//! A sync skips a regular file only when all of these hold: the index has an entry for its path;
//! the source's device, inode, size, mtime and ctime equal the entry's; the mirror's file at that
//! path is the inode the entry names, with the source's size and mtime; and no other source inode
//! claims that mirror inode in this sync. Everything else is copied again. The index is written
//! only at the end of a sync that succeeded, after the mirror was made durable; a crash or a
//! cancelled sync leaves the previous index. What the interrupted sync changed in the mirror was
//! changed because the source had changed since that index: a copy is renamed over the name (so
//! the mirror's inode there is no longer the one indexed), and metadata is only ever set to the
//! source's current values. The source's ctime cannot go back to the indexed value (the kernel
//! sets it to the current time on every change of content, metadata, link count or name), so
//! such a file stays "changed" for every later sync until one succeeds. A missing, torn or
//! foreign index (bad magic, bad checksum) is an empty one: every file is copied.
//!
//! The one gap ctime leaves is its granularity: a file changed twice within one clock tick, the
//! sync's `lstat` between the two, keeps one ctime. So an entry whose ctime is within
//! [`RACY_NS`] of the clock read before its `lstat` is not written to the index (git's "racily
//! clean" entries): the next sync copies it again.
//!
//! # Durability
//!
//! When [`sync_mirror`] returns `Ok` the mirror is durable: one `syncfs(2)` on the mirror's
//! filesystem, then the index is written to `index.partial`, fsynced, renamed and the directory
//! fsynced. One `syncfs` costs one journal commit however many files were written, where an
//! fsync per file costs one each (the first sync writes every file); it also writes back other
//! dirty data on that filesystem, which is little while the services are stopped. The index is
//! made durable after the tree, so a durable index never describes copies that are not.

use std::collections::{HashMap, HashSet};
use std::ffi::{CString, OsString};
use std::fs::{self, DirBuilder, File, Metadata, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::create::{chmod_nofollow, fchmod, open_dir_nofollow, private_file};
use crate::error::ArchiveError;
use crate::notes::{Skipped, SkippedKind};
use crate::sparse;
use crate::util::{fsync_dir, unique_tag};
use crate::xattr::{self, Xattr};

/// What may stop a sync.
#[derive(Debug, Clone, Default)]
pub struct SyncOptions {
    /// When set and it turns true, the sync stops at the next entry or within about a megabyte
    /// of a copy and returns [`ArchiveError::Cancelled`]. The mirror is then part old, part new,
    /// and the previous index stays: the next sync completes it.
    pub cancel: Option<Arc<AtomicBool>>,
}

/// What [`sync_mirror`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Entries of the source mirrored, of every type, the root included (sockets not).
    pub entries: u64,
    /// Regular files whose content was copied (reflinks included).
    pub files_copied: u64,
    /// Bytes of data copied (holes and reflinks not counted).
    pub bytes_copied: u64,
    /// Files copied by a reflink (`FICLONE`), which shares the blocks and copies nothing.
    pub reflinked: u64,
    /// Names made a hard link to another name's copy, as in the source.
    pub linked: u64,
    /// Names removed from the mirror because the source no longer has them, or has something of
    /// another type there (a directory counts once, with what it held).
    pub removed: u64,
    /// Entries whose metadata (owner, mode, attributes, mtime) was set in place; a directory
    /// whose children changed counts, its mtime put back.
    pub metadata_updated: u64,
    /// Entries that vanished or changed while they were being copied. Their copy is not exact
    /// and not indexed, so the next sync copies them again. After a sync of a stopped source it
    /// is 0 unless something else wrote there.
    pub changed_during_sync: u64,
    /// False when there was no usable index (the first sync, or after a torn or foreign one):
    /// every file was copied.
    pub index_found: bool,
    /// Paths left out (sockets), as [`crate::ArchiveSummary::skipped`] lists them.
    pub skipped: Vec<Skipped>,
}

/// The copy inside the mirror directory `mirror_dir`, the path to archive.
pub fn mirror_tree(mirror_dir: &Path) -> PathBuf {
    mirror_dir.join(TREE)
}

const TREE: &str = "tree";
const INDEX: &str = "index";
const INDEX_PARTIAL: &str = "index.partial";
const INDEX_MAGIC: &[u8] = b"lifeboat mirror index 1\n";
/// Ten ticks of the coarsest kernel clock (HZ=100): an entry changed this close to its `lstat`
/// may change again with the same ctime.
const RACY_NS: i128 = 100_000_000;
/// Copies go in pieces of this size, so that cancelling takes effect within one.
const CHUNK: usize = 1 << 20;

/// What the last sync saw of one source path, and which mirror inode it copied it to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    /// `st_mode & S_IFMT`.
    kind: u32,
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    mirror_ino: u64,
}

impl Seen {
    fn of(meta: &Metadata, mirror_ino: u64) -> Seen {
        Seen {
            kind: meta.mode() & libc::S_IFMT,
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.len(),
            mtime: mtime(meta),
            ctime: (meta.ctime(), meta.ctime_nsec()),
            mirror_ino,
        }
    }

    /// True when the source path still looks as this entry says (the mirror not considered).
    fn same_source(&self, meta: &Metadata) -> bool {
        let now = Seen::of(meta, self.mirror_ino);
        let sized = self.kind == libc::S_IFREG;
        now.kind == self.kind
            && now.dev == self.dev
            && now.ino == self.ino
            && now.ctime == self.ctime
            && (!sized || (now.size == self.size && now.mtime == self.mtime))
    }
}

fn mtime(meta: &Metadata) -> (i64, i64) {
    (meta.mtime(), meta.mtime_nsec())
}

fn kind(meta: &Metadata) -> u32 {
    meta.mode() & libc::S_IFMT
}

fn now_ns() -> i128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i128).unwrap_or(0)
}

/// True when `meta` changed so close to `before` (the clock read before its `lstat`) that it may
/// change again without its ctime moving.
fn racy(meta: &Metadata, before: i128) -> bool {
    let ctime = i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec());
    ctime > before - RACY_NS
}

/// Makes [`mirror_tree`]`(mirror_dir)` an exact copy of `source`, in every respect an archive
/// keeps (see the crate doc): content, types, modes, numeric owners, nanosecond mtimes (of
/// directories and symlinks too), hard-link structure, symlink targets, extended attributes and
/// ACLs, fifos and device nodes, sparse holes. Sockets are skipped and listed. Whatever the
/// mirror holds that the source does not is removed.
///
/// `source` is a directory or a single file; if it is a symlink it is followed, nothing below it
/// ever is (as [`crate::Root::source`]). `mirror_dir` is created `0700` if missing (its parent
/// must exist) and made `0700` if not; a symlink or file there is refused
/// ([`ArchiveError::MirrorNotDirectory`]). Run as root, so owners and device nodes can be set.
///
/// Only files whose source changed since the last successful sync are copied (see the module
/// doc for what "changed" means and why a crash cannot hide a change): a copy goes to a new
/// temporary name beside its target, by reflink when the filesystem can, else by
/// `copy_file_range` of its data regions (holes stay holes), and is renamed over the target.
/// Directories get their metadata after their children. Nothing in the mirror is ever followed
/// or written through: names there are `lstat`ed, something of the wrong type (a symlink where a
/// directory belongs) is removed, and every copy is a new file.
///
/// A source that changes meanwhile (services running) does not fail the sync: what vanishes is
/// left out, what changes is copied as it is read and counted in
/// [`SyncStats::changed_during_sync`]; the next sync copies those again. On `Ok` the mirror is
/// durable; on an error or [`SyncOptions::cancel`] it may be part old, part new, and the next
/// sync completes it.
pub fn sync_mirror(source: &Path, mirror_dir: &Path, opts: &SyncOptions) -> Result<SyncStats, ArchiveError> {
    let root = resolve_source(source)?;
    prepare_mirror_dir(mirror_dir)?;
    let old = load_index(&mirror_dir.join(INDEX));
    let mut sync = Syncer {
        index_found: old.is_some(),
        old: old.unwrap_or_default(),
        new: Vec::new(),
        groups: HashMap::new(),
        claimed: HashMap::new(),
        stats: SyncStats::default(),
        cancel: opts.cancel.clone(),
        tag: unique_tag(),
        temps: 0,
        reflink: true,
        copy_range: true,
        buf: Vec::new(),
    };
    let tree = mirror_tree(mirror_dir);
    let present = lstat_mirror(&tree)?;
    sync.child(Vec::new(), &root, &tree, present)?;
    let werr = |e| ArchiveError::Write { path: mirror_dir.to_path_buf(), source: e };
    let dir = open_dir_nofollow(mirror_dir).map_err(werr)?;
    // SAFETY: `dir` is an open descriptor.
    if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
        return Err(werr(io::Error::last_os_error()));
    }
    write_index(mirror_dir, &sync.new)?;
    let mut stats = sync.stats;
    stats.index_found = sync.index_found;
    Ok(stats)
}

/// The source root to walk: `source`, or where it leads if it is a symlink.
fn resolve_source(source: &Path) -> Result<PathBuf, ArchiveError> {
    let missing = |e: io::Error| {
        if e.kind() == io::ErrorKind::NotFound {
            ArchiveError::MissingRoot { path: source.to_path_buf() }
        } else {
            ArchiveError::Read { path: source.to_path_buf(), source: e }
        }
    };
    let meta = fs::symlink_metadata(source).map_err(missing)?;
    if meta.file_type().is_symlink() { fs::canonicalize(source).map_err(missing) } else { Ok(source.to_path_buf()) }
}

fn prepare_mirror_dir(dir: &Path) -> Result<(), ArchiveError> {
    let werr = |e| ArchiveError::Write { path: dir.to_path_buf(), source: e };
    match fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(ArchiveError::MirrorNotDirectory { path: dir.to_path_buf() }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            DirBuilder::new().mode(0o700).create(dir).map_err(werr)?;
        }
        Err(e) => return Err(werr(e)),
    }
    // Through a descriptor opened without following: a symlink swapped in meanwhile fails here.
    let fd = match open_dir_nofollow(dir) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) || e.raw_os_error() == Some(libc::ENOTDIR) => {
            return Err(ArchiveError::MirrorNotDirectory { path: dir.to_path_buf() });
        }
        Err(e) => return Err(werr(e)),
    };
    fchmod(&fd, 0o700).map_err(werr)
}

fn lstat_mirror(path: &Path) -> Result<Option<Metadata>, ArchiveError> {
    match fs::symlink_metadata(path) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ArchiveError::Write { path: path.to_path_buf(), source: e }),
    }
}

/// True for the errors that mean a source path is no longer there (it, or a directory above it,
/// was removed or replaced).
fn vanished(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR) | Some(libc::ELOOP))
}

/// The first name of a hard-link group met in this sync, and its copy.
struct Group {
    mirror: PathBuf,
    mirror_ino: u64,
    /// The source as listed when the first name was copied, and whether that copy was clean
    /// (indexable): the other names are indexed only when they match it.
    seen: Seen,
    clean: bool,
}

struct Syncer {
    old: HashMap<Vec<u8>, Seen>,
    index_found: bool,
    /// The next index, in walk order.
    new: Vec<(Vec<u8>, Seen)>,
    /// Source (dev, ino) of files with several names -> their copy in this sync.
    groups: HashMap<(u64, u64), Group>,
    /// Mirror inodes with several names kept as they were -> the source (dev, ino) that kept
    /// them, so that one mirror inode never ends up shared by two source files.
    claimed: HashMap<u64, (u64, u64)>,
    stats: SyncStats,
    cancel: Option<Arc<AtomicBool>>,
    tag: String,
    temps: u64,
    /// Cleared at the first reflink the filesystem refuses, and the first `copy_file_range`.
    reflink: bool,
    copy_range: bool,
    buf: Vec<u8>,
}

/// Why a copy stopped.
enum CopyFailure {
    Read(io::Error),
    Write(io::Error),
    Cancelled,
}

impl Syncer {
    fn cancelled(&self) -> bool {
        self.cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed))
    }

    fn temp_beside(&mut self, dst: &Path) -> PathBuf {
        self.temps += 1;
        let name = format!(".lifeboat-mirror.{}.{}", self.tag, self.temps);
        dst.parent().map_or_else(|| PathBuf::from(&name), |p| p.join(&name))
    }

    /// Removes what the mirror has at `dst` (`meta`), a directory with all it holds.
    fn remove(&mut self, dst: &Path, meta: &Metadata) -> Result<(), ArchiveError> {
        // `remove_dir_all` never follows a symlink, at the top or below.
        let done = if meta.is_dir() { fs::remove_dir_all(dst) } else { fs::remove_file(dst) };
        match done {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(ArchiveError::Write { path: dst.to_path_buf(), source: e })
            }
            _ => {
                self.stats.removed += 1;
                Ok(())
            }
        }
    }

    /// Mirrors the source path `src` (relative name `rel`) to `dst`, which the mirror has as
    /// `present`. Returns true if the name `dst` was created, replaced or removed (its
    /// directory's mtime must then be put back).
    fn child(&mut self, rel: Vec<u8>, src: &Path, dst: &Path, present: Option<Metadata>) -> Result<bool, ArchiveError> {
        if self.cancelled() {
            return Err(ArchiveError::Cancelled);
        }
        let before = now_ns();
        let meta = match fs::symlink_metadata(src) {
            Ok(m) => m,
            Err(e) if vanished(&e) => return self.gone(dst, present.as_ref(), false),
            Err(e) => return Err(ArchiveError::Read { path: src.to_path_buf(), source: e }),
        };
        if meta.file_type().is_socket() {
            self.stats.skipped.push(Skipped { path: src.to_path_buf(), kind: SkippedKind::Socket });
            return self.gone(dst, present.as_ref(), false);
        }
        let mut present = present;
        let mut changed = false;
        // A directory cannot be renamed over, nor replaced by one: clear the name first.
        if let Some(p) = &present
            && (p.is_dir() || meta.is_dir())
            && kind(p) != kind(&meta)
        {
            self.remove(dst, p)?;
            present = None;
            changed = true;
        }
        let old = self.old.get(&rel).copied();
        // The entry as indexed, if the source still looks so and the mirror still has the copy.
        let trusted = old.filter(|o| {
            o.same_source(&meta) && present.as_ref().is_some_and(|p| p.ino() == o.mirror_ino && kind(p) == o.kind)
        });
        self.stats.entries += 1;
        let racy = racy(&meta, before);
        let outcome = match kind(&meta) {
            libc::S_IFDIR => self.dir(&rel, src, dst, &meta, present, trusted.is_some())?,
            libc::S_IFREG => self.file(src, dst, &meta, present, trusted.is_some(), racy)?,
            libc::S_IFLNK => self.symlink(src, dst, &meta, present, trusted.is_some())?,
            libc::S_IFIFO | libc::S_IFCHR | libc::S_IFBLK => {
                self.special(src, dst, &meta, present, trusted.is_some())?
            }
            _ => return Err(ArchiveError::UnsupportedFileType { path: src.to_path_buf(), kind: "special file" }),
        };
        match outcome {
            Outcome::Done { mirror_ino, created, clean } => {
                if clean && !racy {
                    self.new.push((rel, Seen::of(&meta, mirror_ino)));
                }
                Ok(changed || created)
            }
            Outcome::Vanished => {
                self.stats.entries -= 1;
                let now = lstat_mirror(dst)?;
                Ok(self.gone(dst, now.as_ref(), true)? || changed)
            }
        }
    }

    /// The source has nothing (it vanished, or holds a socket) where the mirror has `present`.
    fn gone(&mut self, dst: &Path, present: Option<&Metadata>, during: bool) -> Result<bool, ArchiveError> {
        if during {
            self.stats.changed_during_sync += 1;
        }
        match present {
            Some(p) => self.remove(dst, p).map(|()| true),
            None => Ok(false),
        }
    }

    fn dir(
        &mut self,
        rel: &[u8],
        src: &Path,
        dst: &Path,
        meta: &Metadata,
        present: Option<Metadata>,
        trusted: bool,
    ) -> Result<Outcome, ArchiveError> {
        let werr = |e| ArchiveError::Write { path: dst.to_path_buf(), source: e };
        let mut names = Vec::new();
        match fs::read_dir(src) {
            Ok(entries) => {
                for entry in entries {
                    match entry {
                        Ok(e) => names.push(e.file_name()),
                        Err(e) if vanished(&e) => return Ok(Outcome::Vanished),
                        Err(e) => return Err(ArchiveError::Read { path: src.to_path_buf(), source: e }),
                    }
                }
            }
            Err(e) if vanished(&e) => return Ok(Outcome::Vanished),
            Err(e) => return Err(ArchiveError::Read { path: src.to_path_buf(), source: e }),
        }
        // Sorted, as the writer walks, so that the first name of a hard-link group is the same.
        names.sort();
        let created = present.is_none();
        if created {
            DirBuilder::new().mode(0o700).create(dst).map_err(werr)?;
        }
        let mut dirty = false;
        let mut listed: HashSet<OsString> = HashSet::new();
        for entry in fs::read_dir(dst).map_err(werr)? {
            listed.insert(entry.map_err(werr)?.file_name());
        }
        let wanted: HashSet<&OsString> = names.iter().collect();
        for extra in listed.iter().filter(|n| !wanted.contains(n)) {
            let path = dst.join(extra);
            if let Some(m) = lstat_mirror(&path)? {
                self.remove(&path, &m)?;
                dirty = true;
            }
        }
        for name in &names {
            let mut child_rel = rel.to_vec();
            if !child_rel.is_empty() {
                child_rel.push(b'/');
            }
            child_rel.extend_from_slice(name.as_bytes());
            let child_dst = dst.join(name);
            let present = if listed.contains(name) { lstat_mirror(&child_dst)? } else { None };
            dirty |= self.child(child_rel, &src.join(name), &child_dst, present)?;
        }
        let now = if created { None } else { present.as_ref() };
        let set = self.set_meta(src, dst, None, None, meta, now, !trusted, dirty)?;
        if set && !created {
            self.stats.metadata_updated += 1;
        }
        let mirror_ino = lstat_mirror(dst)?.map_or(0, |m| m.ino());
        Ok(Outcome::Done { mirror_ino, created, clean: true })
    }

    fn file(
        &mut self,
        src: &Path,
        dst: &Path,
        meta: &Metadata,
        present: Option<Metadata>,
        trusted: bool,
        racy: bool,
    ) -> Result<Outcome, ArchiveError> {
        let key = (meta.dev(), meta.ino());
        if meta.nlink() > 1
            && let Some(group) = self.groups.get(&key)
        {
            let (first, mirror_ino, clean) = (group.mirror.clone(), group.mirror_ino, group.clean);
            let same = clean && group.seen.same_source(meta);
            if present.as_ref().is_some_and(|p| p.is_file() && p.ino() == mirror_ino) {
                return Ok(Outcome::Done { mirror_ino, created: false, clean: same });
            }
            let temp = self.temp_beside(dst);
            let werr = |e| ArchiveError::Write { path: dst.to_path_buf(), source: e };
            fs::hard_link(&first, &temp).map_err(werr)?;
            if let Err(e) = fs::rename(&temp, dst) {
                let _ = fs::remove_file(&temp);
                return Err(werr(e));
            }
            self.stats.linked += 1;
            return Ok(Outcome::Done { mirror_ino, created: true, clean: same });
        }
        if trusted && let Some(p) = present.as_ref() {
            let claimed_by_other = p.nlink() > 1 && self.claimed.get(&p.ino()).is_some_and(|k| *k != key);
            if p.len() == meta.len() && mtime(p) == mtime(meta) && !claimed_by_other {
                if p.uid() != meta.uid() || p.gid() != meta.gid() || p.mode() != meta.mode() {
                    self.set_meta(src, dst, None, None, meta, Some(p), false, false)?;
                    self.stats.metadata_updated += 1;
                }
                if p.nlink() > 1 {
                    self.claimed.insert(p.ino(), key);
                }
                self.group(key, meta, dst, p.ino(), !racy);
                return Ok(Outcome::Done { mirror_ino: p.ino(), created: false, clean: true });
            }
        }
        self.copy(src, dst, meta, key, racy)
    }

    fn group(&mut self, key: (u64, u64), meta: &Metadata, dst: &Path, mirror_ino: u64, clean: bool) {
        if meta.nlink() > 1 {
            let seen = Seen::of(meta, mirror_ino);
            self.groups.insert(key, Group { mirror: dst.to_path_buf(), mirror_ino, seen, clean });
        }
    }

    /// Copies the regular file `src` (listed as `meta`) to a new file renamed over `dst`.
    fn copy(
        &mut self,
        src: &Path,
        dst: &Path,
        meta: &Metadata,
        key: (u64, u64),
        racy: bool,
    ) -> Result<Outcome, ArchiveError> {
        let rerr = |e| ArchiveError::Read { path: src.to_path_buf(), source: e };
        let Some(from) = open_listed(src, meta).map_err(rerr)? else {
            return Ok(Outcome::Vanished);
        };
        let temp = self.temp_beside(dst);
        let werr = |e| ArchiveError::Write { path: dst.to_path_buf(), source: e };
        let to = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&temp)
            .map_err(werr)?;
        let done = self.fill(src, dst, meta, &from, &to).and_then(|clean| {
            let ino = to.metadata().map_err(werr)?.ino();
            fs::rename(&temp, dst).map_err(werr)?;
            Ok((clean, ino))
        });
        let (clean, mirror_ino) = match done {
            Ok(d) => d,
            Err(e) => {
                let _ = fs::remove_file(&temp);
                return Err(e);
            }
        };
        self.stats.files_copied += 1;
        if !clean {
            self.stats.changed_during_sync += 1;
        }
        // The other names are indexed only if this one is: they share its copy.
        self.group(key, meta, dst, mirror_ino, clean && !racy);
        Ok(Outcome::Done { mirror_ino, created: true, clean })
    }

    /// Gives the new file `to` the content and metadata of `from`; true if `from` did not change
    /// while it was read.
    fn fill(&mut self, src: &Path, dst: &Path, meta: &Metadata, from: &File, to: &File) -> Result<bool, ArchiveError> {
        match self.copy_data(from, to, meta.len(), meta.blocks()) {
            Ok(()) => {}
            Err(CopyFailure::Cancelled) => return Err(ArchiveError::Cancelled),
            Err(CopyFailure::Read(e)) => return Err(ArchiveError::Read { path: src.to_path_buf(), source: e }),
            Err(CopyFailure::Write(e)) => return Err(ArchiveError::Write { path: dst.to_path_buf(), source: e }),
        }
        let after = from.metadata().map_err(|e| ArchiveError::Read { path: src.to_path_buf(), source: e })?;
        let clean = after.len() == meta.len()
            && mtime(&after) == mtime(meta)
            && (after.ctime(), after.ctime_nsec()) == (meta.ctime(), meta.ctime_nsec());
        let fresh = to.metadata().map_err(|e| ArchiveError::Write { path: dst.to_path_buf(), source: e })?;
        self.set_meta(src, dst, Some(from), Some(to), meta, Some(&fresh), true, true)?;
        Ok(clean)
    }

    /// Copies `size` bytes (`blocks` allocated, as listed) from `from` to the new file `to`: a
    /// reflink if the filesystem can, else the data regions only, so holes stay holes.
    fn copy_data(&mut self, from: &File, to: &File, size: u64, blocks: u64) -> Result<(), CopyFailure> {
        if self.reflink {
            // SAFETY: both descriptors are open; FICLONE reads an int argument by value.
            let rc = unsafe { libc::ioctl(to.as_raw_fd(), libc::FICLONE, from.as_raw_fd()) };
            if rc == 0 {
                self.stats.reflinked += 1;
                return Ok(());
            }
            // Not this filesystem (ext4), or not between these two: no use asking again.
            self.reflink = false;
        }
        let whole = vec![sparse::Region { offset: 0, len: size }];
        // As the writer tells a sparse file: fewer blocks than bytes (see `sparse::scan`).
        let regions = if blocks.saturating_mul(512) < size {
            sparse::scan_regions(from, size).map_err(CopyFailure::Read)?.unwrap_or(whole)
        } else {
            whole
        };
        let mut end = 0;
        for r in regions {
            let copied = self.copy_range(from, to, r.offset, r.len)?;
            end = r.offset + copied;
            if copied < r.len {
                // It shrank while being read: the rest is left as a hole (and the copy unclean).
                break;
            }
        }
        if end != size {
            to.set_len(size).map_err(CopyFailure::Write)?;
        }
        Ok(())
    }

    /// Copies `len` bytes at `offset`; fewer if the source ends first.
    fn copy_range(&mut self, from: &File, to: &File, offset: u64, len: u64) -> Result<u64, CopyFailure> {
        let mut done = 0;
        while done < len {
            if self.cancelled() {
                return Err(CopyFailure::Cancelled);
            }
            let step = usize::try_from(len - done).unwrap_or(CHUNK).min(CHUNK);
            let at = offset + done;
            let n = if self.copy_range {
                let (mut off_in, mut off_out) = (at as libc::loff_t, at as libc::loff_t);
                // SAFETY: both descriptors are open and the offsets live locals.
                let rc = unsafe {
                    libc::copy_file_range(from.as_raw_fd(), &mut off_in, to.as_raw_fd(), &mut off_out, step, 0)
                };
                if rc < 0 {
                    let e = io::Error::last_os_error();
                    match e.raw_os_error() {
                        Some(libc::EINTR) => continue,
                        // Across filesystems, or one that cannot: plain reads and writes.
                        Some(libc::EXDEV) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP) | Some(libc::EINVAL) => {
                            self.copy_range = false;
                            continue;
                        }
                        _ => return Err(CopyFailure::Write(e)),
                    }
                }
                rc as u64
            } else {
                self.buf.resize(CHUNK, 0);
                let n = match from.read_at(&mut self.buf[..step], at) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(CopyFailure::Read(e)),
                };
                to.write_all_at(&self.buf[..n], at).map_err(CopyFailure::Write)?;
                n as u64
            };
            if n == 0 {
                break;
            }
            done += n;
            self.stats.bytes_copied += n;
        }
        Ok(done)
    }

    fn symlink(
        &mut self,
        src: &Path,
        dst: &Path,
        meta: &Metadata,
        present: Option<Metadata>,
        trusted: bool,
    ) -> Result<Outcome, ArchiveError> {
        if let (true, Some(p)) = (trusted, present.as_ref()) {
            // A symlink's target cannot change: the same inode has the same one.
            let set = self.set_meta(src, dst, None, None, meta, Some(p), false, false)?;
            self.stats.metadata_updated += u64::from(set);
            return Ok(Outcome::Done { mirror_ino: p.ino(), created: false, clean: true });
        }
        let target = match fs::read_link(src) {
            Ok(t) => t,
            Err(e) if vanished(&e) || e.raw_os_error() == Some(libc::EINVAL) => return Ok(Outcome::Vanished),
            Err(e) => return Err(ArchiveError::Read { path: src.to_path_buf(), source: e }),
        };
        if let Some(p) = present.as_ref().filter(|p| p.file_type().is_symlink())
            && fs::read_link(dst).is_ok_and(|t| t == target)
        {
            let set = self.set_meta(src, dst, None, None, meta, Some(p), true, false)?;
            self.stats.metadata_updated += u64::from(set);
            return Ok(Outcome::Done { mirror_ino: p.ino(), created: false, clean: true });
        }
        let temp = self.temp_beside(dst);
        let werr = |e| ArchiveError::Write { path: dst.to_path_buf(), source: e };
        std::os::unix::fs::symlink(&target, &temp).map_err(werr)?;
        self.place(src, &temp, dst, meta)
    }

    fn special(
        &mut self,
        src: &Path,
        dst: &Path,
        meta: &Metadata,
        present: Option<Metadata>,
        trusted: bool,
    ) -> Result<Outcome, ArchiveError> {
        if let Some(p) = present.as_ref().filter(|p| kind(p) == kind(meta) && p.rdev() == meta.rdev()) {
            let set = self.set_meta(src, dst, None, None, meta, Some(p), !trusted, false)?;
            self.stats.metadata_updated += u64::from(set);
            return Ok(Outcome::Done { mirror_ino: p.ino(), created: false, clean: true });
        }
        let temp = self.temp_beside(dst);
        let c = CString::new(temp.as_os_str().as_bytes())
            .map_err(|e| ArchiveError::Write { path: dst.to_path_buf(), source: io::Error::other(e) })?;
        // SAFETY: `c` is a valid NUL-terminated path; mknod never follows a name.
        let rc = unsafe { libc::mknod(c.as_ptr(), kind(meta) | 0o600, meta.rdev() as libc::dev_t) };
        if rc != 0 {
            return Err(ArchiveError::Write { path: dst.to_path_buf(), source: io::Error::last_os_error() });
        }
        self.place(src, &temp, dst, meta)
    }

    /// Gives the new node `temp` the metadata of `src` and renames it over `dst`.
    fn place(&mut self, src: &Path, temp: &Path, dst: &Path, meta: &Metadata) -> Result<Outcome, ArchiveError> {
        let werr = |e| ArchiveError::Write { path: dst.to_path_buf(), source: e };
        let done = lstat_mirror(temp)
            .and_then(|fresh| {
                let fresh = fresh.ok_or_else(|| werr(io::Error::from(io::ErrorKind::NotFound)))?;
                self.set_meta(src, temp, None, None, meta, Some(&fresh), true, true)?;
                Ok(fresh.ino())
            })
            .and_then(|ino| fs::rename(temp, dst).map(|()| ino).map_err(werr));
        match done {
            Ok(mirror_ino) => Ok(Outcome::Done { mirror_ino, created: true, clean: true }),
            Err(e) => {
                let _ = fs::remove_file(temp);
                Err(e)
            }
        }
    }

    /// Gives `dst` (`now` as it is, `to` when open) the owner, attributes, mode and mtime of
    /// `src` (`meta`; `from` when open), in that order: a chown clears setuid bits and file
    /// capabilities, setting an ACL changes the group bits of the mode, and all but the mtime
    /// leave the mtime alone. Attributes are compared when `xattrs` (always after a chown), the
    /// mtime set when it differs or `touch`. True if anything was set.
    #[allow(clippy::too_many_arguments)]
    fn set_meta(
        &mut self,
        src: &Path,
        dst: &Path,
        from: Option<&File>,
        to: Option<&File>,
        meta: &Metadata,
        now: Option<&Metadata>,
        xattrs: bool,
        touch: bool,
    ) -> Result<bool, ArchiveError> {
        let werr = |e| ArchiveError::Write { path: dst.to_path_buf(), source: e };
        let symlink = meta.file_type().is_symlink();
        let mut set = false;
        let chown = now.is_none_or(|n| n.uid() != meta.uid() || n.gid() != meta.gid());
        if chown {
            match to {
                Some(f) => std::os::unix::fs::fchown(f, Some(meta.uid()), Some(meta.gid())),
                None => std::os::unix::fs::lchown(dst, Some(meta.uid()), Some(meta.gid())),
            }
            .map_err(werr)?;
            set = true;
        }
        let mut acl_set = false;
        if xattrs || chown {
            let want = match from {
                Some(f) => xattr::read_file(f),
                None => xattr::read(src),
            }
            .map_err(|e| ArchiveError::Read { path: src.to_path_buf(), source: e })?;
            let have = match to {
                Some(f) => xattr::read_file(f),
                None => xattr::read(dst),
            }
            .map_err(werr)?;
            let changed = sync_xattrs(dst, to, &want, &have).map_err(werr)?;
            acl_set = changed;
            set |= changed;
        }
        if !symlink && (chown || acl_set || now.is_none_or(|n| n.mode() & 0o7777 != meta.mode() & 0o7777)) {
            let mode = meta.mode() & 0o7777;
            match to {
                Some(f) => f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode)),
                None => chmod_nofollow(dst, mode),
            }
            .map_err(werr)?;
            set = true;
        }
        if touch || now.is_none_or(|n| mtime(n) != mtime(meta)) {
            set_mtime(dst, to, meta).map_err(werr)?;
            set = true;
        }
        Ok(set)
    }
}

/// What mirroring one entry came to.
enum Outcome {
    /// The mirror has it: as the inode `mirror_ino`, `created` if the name was (re)made, `clean`
    /// if the copy is exact as listed (else it is left out of the index).
    Done { mirror_ino: u64, created: bool, clean: bool },
    /// The source vanished or changed type while it was read; nothing was made for it.
    Vanished,
}

/// Makes the attributes of `dst` (`have`) those of the source (`want`); true if any changed.
fn sync_xattrs(dst: &Path, to: Option<&File>, want: &[Xattr], have: &[Xattr]) -> io::Result<bool> {
    let mut changed = false;
    for (name, _) in have {
        if !want.iter().any(|(n, _)| n == name) {
            xattr::remove(dst, to, name)?;
            changed = true;
        }
    }
    for (name, value) in want {
        if !have.iter().any(|(n, v)| n == name && v == value) {
            match to {
                Some(f) => xattr::set_file(f, name, value)?,
                None => xattr::set(dst, name, value)?,
            }
            changed = true;
        }
    }
    Ok(changed)
}

/// Sets the mtime of `dst` (through `to` when open) to that of `meta`, never following a symlink;
/// the atime is left alone (an archive does not keep it).
fn set_mtime(dst: &Path, to: Option<&File>, meta: &Metadata) -> io::Result<()> {
    let omit = libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_OMIT };
    let m = libc::timespec { tv_sec: meta.mtime() as libc::time_t, tv_nsec: meta.mtime_nsec() as _ };
    let times = [omit, m];
    let rc = match to {
        // SAFETY: the descriptor is open and `times` holds two timespecs.
        Some(f) => unsafe { libc::futimens(f.as_raw_fd(), times.as_ptr()) },
        None => {
            let c = CString::new(dst.as_os_str().as_bytes()).map_err(io::Error::other)?;
            // SAFETY: `c` is NUL-terminated and `times` holds two timespecs.
            unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) }
        }
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Opens the source file listed as `meta` for reading, without following a symlink, without
/// touching its atime where allowed, and without hanging on a fifo swapped in; `None` if it
/// vanished or the name now leads to another inode.
fn open_listed(path: &Path, meta: &Metadata) -> io::Result<Option<File>> {
    let open = |noatime| {
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC | noatime)
            .open(path)
    };
    let file = match open(libc::O_NOATIME) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => open(0),
        other => other,
    };
    let file = match file {
        Ok(f) => f,
        Err(e) if vanished(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    let now = file.metadata()?;
    if !now.is_file() || now.dev() != meta.dev() || now.ino() != meta.ino() {
        return Ok(None);
    }
    Ok(Some(file))
}

// The index: the magic, the entry count (u64), then per entry the path's length (u32) and bytes
// and the `Seen` fields, all little endian; then the sha256 of everything before it.
const ENTRY_FIXED: usize = 4 + 8 * 3 + 12 * 2 + 8;

fn encode_index(entries: &[(Vec<u8>, Seen)]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(INDEX_MAGIC.len() + 8 + entries.len() * (ENTRY_FIXED + 28) + 32);
    buf.extend_from_slice(INDEX_MAGIC);
    buf.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    for (path, s) in entries {
        buf.extend_from_slice(&(path.len() as u32).to_le_bytes());
        buf.extend_from_slice(path);
        buf.extend_from_slice(&s.kind.to_le_bytes());
        for v in [s.dev, s.ino, s.size] {
            buf.extend_from_slice(&v.to_le_bytes());
        }
        for (secs, nsec) in [s.mtime, s.ctime] {
            buf.extend_from_slice(&secs.to_le_bytes());
            buf.extend_from_slice(&(nsec as u32).to_le_bytes());
        }
        buf.extend_from_slice(&s.mirror_ino.to_le_bytes());
    }
    let digest = Sha256::digest(&buf);
    buf.extend_from_slice(&digest);
    buf
}

/// The entries of an index file's bytes; `None` unless the whole of it is well formed.
fn decode_index(bytes: &[u8]) -> Option<HashMap<Vec<u8>, Seen>> {
    let body = bytes.get(..bytes.len().checked_sub(32)?)?;
    if Sha256::digest(body).as_slice() != &bytes[body.len()..] {
        return None;
    }
    let mut r = body.strip_prefix(INDEX_MAGIC)?;
    let mut take = |n: usize| -> Option<&[u8]> {
        let (head, rest) = r.split_at_checked(n)?;
        r = rest;
        Some(head)
    };
    let u64_at = |b: &[u8], i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or_default());
    let u32_at = |b: &[u8], i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap_or_default());
    let count = u64_at(take(8)?, 0);
    let mut out = HashMap::with_capacity(usize::try_from(count.min(1 << 20)).ok()?);
    for _ in 0..count {
        let len = u32_at(take(4)?, 0) as usize;
        let path = take(len)?.to_vec();
        let f = take(ENTRY_FIXED)?;
        let seen = Seen {
            kind: u32_at(f, 0),
            dev: u64_at(f, 4),
            ino: u64_at(f, 12),
            size: u64_at(f, 20),
            mtime: (u64_at(f, 28) as i64, i64::from(u32_at(f, 36))),
            ctime: (u64_at(f, 40) as i64, i64::from(u32_at(f, 48))),
            mirror_ino: u64_at(f, 52),
        };
        out.insert(path, seen);
    }
    take(1).is_none().then_some(out)
}

/// The index at `path`; `None` when it is missing or unreadable, which makes every file changed.
fn load_index(path: &Path) -> Option<HashMap<Vec<u8>, Seen>> {
    let mut file = OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC).open(path).ok()?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).ok()?;
    decode_index(&bytes)
}

/// Writes the index durably: `index.partial` created new, written, fsynced, renamed over
/// `index`, the directory fsynced.
fn write_index(dir: &Path, entries: &[(Vec<u8>, Seen)]) -> Result<(), ArchiveError> {
    let partial = dir.join(INDEX_PARTIAL);
    let werr = |e| ArchiveError::Write { path: partial.clone(), source: e };
    let mut file = private_file(&partial, None).map_err(werr)?;
    file.write_all(&encode_index(entries)).and_then(|()| file.sync_all()).map_err(werr)?;
    fs::rename(&partial, dir.join(INDEX)).map_err(werr)?;
    fsync_dir(dir).map_err(|e| ArchiveError::Write { path: dir.to_path_buf(), source: e })
}

/// Bytes the mirror directory `mirror_dir` takes on disk (allocated blocks, a file with several
/// names once, the index included), for a status display. Follows no symlink.
pub fn mirror_disk_usage(mirror_dir: &Path) -> io::Result<u64> {
    let mut seen = HashSet::new();
    let mut total = 0u64;
    let mut stack = vec![mirror_dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if meta.nlink() > 1 && !meta.is_dir() && !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        total = total.saturating_add(meta.blocks().saturating_mul(512));
        if meta.is_dir() {
            for entry in fs::read_dir(&path)? {
                stack.push(entry?.path());
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<(Vec<u8>, Seen)> {
        let s = Seen {
            kind: libc::S_IFREG,
            dev: 7,
            ino: u64::MAX - 3,
            size: 1 << 40,
            mtime: (-5, 999_999_999),
            ctime: (1_700_000_000, 1),
            mirror_ino: 42,
        };
        vec![(Vec::new(), Seen { kind: libc::S_IFDIR, ..s }), (b"a/b\xff".to_vec(), s)]
    }

    #[test]
    fn an_index_reads_back_as_written() {
        let entries = sample();
        let read = decode_index(&encode_index(&entries)).unwrap();
        assert_eq!(read.len(), 2);
        for (path, seen) in &entries {
            assert_eq!(read.get(path), Some(seen));
        }
    }

    #[test]
    fn a_torn_or_altered_index_is_no_index() {
        let bytes = encode_index(&sample());
        for cut in [0, 1, 31, 32, bytes.len() / 2, bytes.len() - 1] {
            assert!(decode_index(&bytes[..cut]).is_none(), "cut at {cut}");
        }
        for at in [0, INDEX_MAGIC.len() + 3, bytes.len() - 40, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[at] ^= 1;
            assert!(decode_index(&bad).is_none(), "flip at {at}");
        }
        // A well-formed checksum over a body that lies about its count is refused too.
        let mut body = bytes[..bytes.len() - 32].to_vec();
        body[INDEX_MAGIC.len()] = 200;
        let digest = Sha256::digest(&body);
        body.extend_from_slice(&digest);
        assert!(decode_index(&body).is_none());
    }

    #[test]
    fn an_entry_changed_just_before_its_lstat_is_racy() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f");
        fs::write(&path, b"x").unwrap();
        let meta = fs::symlink_metadata(&path).unwrap();
        assert!(racy(&meta, now_ns()));
        assert!(!racy(&meta, now_ns() + 2 * RACY_NS));
    }
}
