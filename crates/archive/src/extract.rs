//! Extraction into a staging directory, and the swap that puts it in place.

use std::ffi::{CString, OsStr, OsString};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use tar::EntryType;

use crate::create::{chmod_nofollow, is_real_dir, make_tree_writable, private_dir, rename_noreplace};
use crate::error::ArchiveError;
use crate::notes::{ExtractWarning, MAX_WARNINGS};
use crate::pax::{Found, Record, parse_mtime, parse_records};
use crate::read::{display_name, is_file_kind, open, open_entry};
use crate::sparse::{self, RestoreError, SparseMap};
use crate::util::{fsync_dir, parent_dir, unique_tag, with_suffix};
use crate::xattr::{self, Refused, Xattr};

/// How to extract.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtractOptions {
    /// Extract only the entries under this archive name (e.g. `paths/data`), with the prefix
    /// removed; the entry named exactly so gives the staging directory its metadata. `None`
    /// extracts the whole archive.
    pub subtree: Option<String>,
    /// The staging directory to create (it must not exist; put it beside the target, on the same
    /// filesystem). Default: `<target>.lifeboat-staging-<pid>-<time>`. Give one to journal the
    /// name before extracting.
    pub staging: Option<PathBuf>,
    /// Restore numeric owners. `None`: only when running as root.
    pub preserve_owner: Option<bool>,
    /// Accept symlinks whose target is absolute or leaves the extracted tree. Nothing is ever
    /// written through a symlink either way.
    pub allow_outside_symlinks: bool,
}

/// What an extraction wrote, and what it could not restore.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtractReport {
    /// Entries extracted (the subtree root included; a device node not created included).
    pub entry_count: u64,
    /// Regular files written with their content (hard links not included).
    pub file_count: u64,
    /// Hard links made to files extracted earlier.
    pub hardlink_count: u64,
    /// Fifos and device nodes created.
    pub special_count: u64,
    /// Bytes of file content extracted, holes included (equal to `apparent_bytes`).
    pub content_bytes: u64,
    /// Apparent bytes of the files extracted, holes included.
    pub apparent_bytes: u64,
    /// Bytes of file data the archive held for them (the holes of sparse files left out).
    pub stored_bytes: u64,
    /// What was not restored: device nodes when not root, attributes the filesystem refused.
    /// At most 100; the rest are counted in `warnings_omitted`.
    pub warnings: Vec<ExtractWarning>,
    /// Warnings beyond the first 100.
    pub warnings_omitted: u64,
}

/// A complete, durable extraction waiting beside its target. Swap it in, or discard it.
///
/// The fields are public so that recovery can rebuild the value from journaled paths.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a staged extraction must be swapped in or discarded"]
pub struct Staged {
    pub staging: PathBuf,
    pub target: PathBuf,
    pub report: ExtractReport,
}

/// The new tree is in place; the old one (if any) waits aside until [`Swapped::commit`] deletes it
/// or [`Swapped::revert`] puts it back. Both are idempotent, so recovery may repeat them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a swap must be committed or reverted"]
pub struct Swapped {
    pub target: PathBuf,
    /// Where the previous target was moved; `None` if there was no previous target.
    pub old_aside: Option<PathBuf>,
}

/// Extracts `archive` (or the `opts.subtree` of it) into a new staging directory beside `target`,
/// refusing anything unsafe; `target` itself is not touched.
///
/// Refused, with [`ArchiveError::UnsafeEntry`]: absolute names, `..` parts, entries under a symlink
/// (the "symlink, then a file through it" trick), hard links out of the extracted tree or to
/// anything but a regular file extracted earlier, symlinks that resolve out of the tree, also
/// through other links (unless allowed; a loop, which resolves nowhere, is accepted), unknown
/// kinds, PAX headers over 8 MiB, and duplicate names. A malformed PAX header or sparse map is
/// [`ArchiveError::BadTar`]. Fifos are recreated; device nodes only when running as
/// root (otherwise a warning in [`ExtractReport::warnings`]). Extended attributes and ACLs are
/// restored where the filesystem allows, each refusal a warning; mtimes to the nanosecond when
/// the archive has them. The whole gzip stream is read, so a CRC or length mismatch is caught before
/// anything is staged. On any error the staging directory is removed and nothing else changed.
/// On success everything staged has been synced to disk (`syncfs`).
///
/// The staging directory is created `0700` whatever the umask (a symlink or file planted at its
/// name is unlinked first, never followed), so nothing staged is reachable by other users until
/// the end, when it takes the mode of the archived root. Sparse files (GNU tar's PAX formats, and
/// the old GNU format) come back with their holes.
pub fn extract_to_staging(archive: &Path, target: &Path, opts: &ExtractOptions) -> Result<Staged, ArchiveError> {
    let staging = match &opts.staging {
        Some(s) => s.clone(),
        None => with_suffix(target, &format!(".lifeboat-staging-{}", unique_tag())),
    };
    let prefix = match &opts.subtree {
        Some(s) => split_subtree(s)?,
        None => Vec::new(),
    };
    private_dir(&staging).map_err(|e| ArchiveError::Write { path: staging.clone(), source: e })?;
    xattr::strip_inherited_acls(&staging);
    let preserve_owner = opts.preserve_owner.unwrap_or_else(|| unsafe { libc::geteuid() } == 0);
    let mut ex = Extractor {
        archive: archive.to_path_buf(),
        staging: staging.clone(),
        prefix,
        preserve_owner,
        allow_outside_symlinks: opts.allow_outside_symlinks,
        report: ExtractReport::default(),
        dirs: Vec::new(),
        implicit_dirs: Vec::new(),
        symlinks: Vec::new(),
        root_meta: None,
        matched: false,
        verified_parent: None,
        is_root: unsafe { libc::geteuid() } == 0,
        dir_xattrs: Vec::new(),
    };
    match ex.run(opts.subtree.as_deref()) {
        Ok(()) => Ok(Staged { staging, target: target.to_path_buf(), report: ex.report }),
        Err(e) => {
            let _ = remove_tree(&staging);
            Err(e)
        }
    }
}

fn split_subtree(s: &str) -> Result<Vec<OsString>, ArchiveError> {
    let trimmed = s.trim_matches('/');
    let parts: Vec<&str> = trimmed.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
    if parts.is_empty() || parts.contains(&"..") {
        return Err(ArchiveError::InvalidOptions(format!("subtree {s:?} must be a relative name without `..`")));
    }
    Ok(parts.into_iter().map(OsString::from).collect())
}

/// Splits a stored name into normal components; refuses absolute names and `..`.
fn safe_components(raw: &[u8]) -> Result<Vec<OsString>, String> {
    if raw.first() == Some(&b'/') {
        return Err("has an absolute path".into());
    }
    let mut out = Vec::new();
    for part in raw.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err("contains a `..` component".into()),
            p => out.push(OsStr::from_bytes(p).to_os_string()),
        }
    }
    Ok(out)
}

#[derive(Clone, Copy)]
struct Meta {
    mode: u32,
    mtime: u64,
    /// Nanoseconds of the mtime, from a PAX `mtime` record.
    nsec: u32,
    uid: u64,
    gid: u64,
}

struct Extractor {
    archive: PathBuf,
    staging: PathBuf,
    prefix: Vec<OsString>,
    preserve_owner: bool,
    allow_outside_symlinks: bool,
    report: ExtractReport,
    /// Directories to give their mode and mtime once their contents are written.
    dirs: Vec<(PathBuf, Meta)>,
    /// Parents without an entry of their own: created `0700`, made `0755` at the end.
    implicit_dirs: Vec<PathBuf>,
    /// Symlinks created, checked again once the tree is complete.
    symlinks: Vec<Vec<OsString>>,
    root_meta: Option<Meta>,
    matched: bool,
    /// The last parent directory known to be a real directory inside staging.
    verified_parent: Option<PathBuf>,
    is_root: bool,
    /// Directories with attributes to set once their contents are written (so that a default ACL
    /// is not inherited by what the archive extracts into them).
    dir_xattrs: Vec<(String, PathBuf, Vec<Xattr>)>,
}

impl Extractor {
    fn refuse(&self, entry: &str, reason: impl Into<String>) -> ArchiveError {
        ArchiveError::UnsafeEntry { path: self.archive.clone(), entry: entry.to_string(), reason: reason.into() }
    }

    fn werr(path: &Path) -> impl Fn(io::Error) -> ArchiveError + '_ {
        move |e| ArchiveError::Write { path: path.to_path_buf(), source: e }
    }

    fn run(&mut self, subtree: Option<&str>) -> Result<(), ArchiveError> {
        let mut opened = open(&self.archive)?;
        let cls = opened.classifier();
        let sniffer = std::rc::Rc::clone(&opened.sniffer);
        let mut buf = vec![0u8; 64 * 1024];
        for entry in opened.archive.entries().map_err(|e| cls.classify(e))? {
            let mut entry = entry.map_err(|e| cls.classify(e))?;
            let header = entry.header();
            let kind = header.entry_type();
            if kind == EntryType::XGlobalHeader {
                continue;
            }
            let mut meta = Meta {
                mode: header.mode().unwrap_or(0o644) & 0o7777,
                mtime: header.mtime().unwrap_or(0),
                nsec: 0,
                uid: header.uid().unwrap_or(0),
                gid: header.gid().unwrap_or(0),
            };
            let device = (header.device_major().ok().flatten(), header.device_minor().ok().flatten());
            // The PAX records, read raw (see `pax`), before anything else: they say whether this
            // is a sparse file and what its real name is.
            let found = sniffer.borrow_mut().take_for(entry.raw_header_position());
            let data = self.pax_data(&display_name(&entry.path_bytes()), found)?;
            let records = parse_records(&data).map_err(|detail| ArchiveError::BadTar {
                path: self.archive.clone(),
                detail: format!("entry {:?}: {detail}", display_name(&entry.path_bytes())),
            })?;
            let (raw, map) = open_entry(&mut entry, &records).map_err(|e| cls.classify(e))?;
            let name = display_name(&raw);
            let (xattrs, refused) = extended(&records, &mut meta);
            let comps = safe_components(&raw).map_err(|r| self.refuse(&name, r))?;
            match kind {
                EntryType::Directory | EntryType::Symlink | EntryType::Link => {}
                EntryType::Char | EntryType::Block | EntryType::Fifo => {}
                k if is_file_kind(k) => {}
                other => return Err(self.refuse(&name, format!("has unsupported type {:?}", other.as_byte() as char))),
            }
            if !comps.starts_with(&self.prefix) {
                continue;
            }
            let rel = comps[self.prefix.len()..].to_vec();
            self.matched = true;
            self.report.entry_count += 1;
            if rel.is_empty() {
                if kind != EntryType::Directory {
                    return Err(self.refuse(&name, "is the root of the extraction but not a directory"));
                }
                self.root_meta = Some(meta);
                self.later_xattrs(&name, &self.staging.clone(), xattrs, refused);
                continue;
            }
            let dest = self.ensure_parents(&name, &rel)?;
            match kind {
                EntryType::Directory => {
                    match fs::symlink_metadata(&dest) {
                        Ok(m) if m.is_dir() => {}
                        Ok(_) => return Err(self.refuse(&name, "duplicates an earlier entry")),
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {
                            DirBuilder::new().mode(0o700).create(&dest).map_err(Self::werr(&dest))?;
                        }
                        Err(e) => return Err(Self::werr(&dest)(e)),
                    }
                    self.later_xattrs(&name, &dest, xattrs, refused);
                    self.dirs.push((dest, meta));
                }
                EntryType::Symlink => {
                    let target = entry.link_name_bytes().map(|l| l.into_owned()).unwrap_or_default();
                    if target.is_empty() {
                        return Err(self.refuse(&name, "is a symlink with an empty target"));
                    }
                    if !self.allow_outside_symlinks {
                        if target.first() == Some(&b'/') {
                            return Err(self.refuse(&name, "is a symlink to an absolute path, outside the target"));
                        }
                        if escapes(&rel[..rel.len() - 1], &target) {
                            return Err(self.refuse(&name, "is a symlink that points outside the target"));
                        }
                    }
                    match std::os::unix::fs::symlink(OsStr::from_bytes(&target), &dest) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                            return Err(self.refuse(&name, "duplicates an earlier entry"));
                        }
                        Err(e) => return Err(Self::werr(&dest)(e)),
                    }
                    if self.preserve_owner {
                        std::os::unix::fs::lchown(&dest, Some(meta.uid as u32), Some(meta.gid as u32))
                            .map_err(Self::werr(&dest))?;
                    }
                    self.restore_xattrs(&name, &dest, &xattrs, refused);
                    set_mtime_nofollow(&dest, meta.mtime, meta.nsec).map_err(Self::werr(&dest))?;
                    self.symlinks.push(rel);
                }
                EntryType::Link => {
                    let target = entry.link_name_bytes().map(|l| l.into_owned()).unwrap_or_default();
                    let tcomps = safe_components(&target)
                        .map_err(|r| self.refuse(&name, format!("is a hard link whose target {r}")))?;
                    if !tcomps.starts_with(&self.prefix) || tcomps.len() == self.prefix.len() {
                        return Err(self.refuse(&name, "is a hard link that points outside the extracted tree"));
                    }
                    let trel = &tcomps[self.prefix.len()..];
                    let mut tpath = self.staging.clone();
                    for (i, c) in trel.iter().enumerate() {
                        tpath.push(c);
                        let m = fs::symlink_metadata(&tpath);
                        let ok = match &m {
                            Ok(m) if i + 1 < trel.len() => m.is_dir(),
                            Ok(m) => m.is_file(),
                            Err(_) => false,
                        };
                        if !ok {
                            return Err(self.refuse(
                                &name,
                                "is a hard link to something that is not an earlier regular file of the archive",
                            ));
                        }
                    }
                    match fs::hard_link(&tpath, &dest) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                            return Err(self.refuse(&name, "duplicates an earlier entry"));
                        }
                        Err(e) => return Err(Self::werr(&dest)(e)),
                    }
                    self.report.hardlink_count += 1;
                }
                EntryType::Char | EntryType::Block | EntryType::Fifo => {
                    self.special(&name, &dest, kind, device, meta, &xattrs, refused)?;
                }
                _ => {
                    let (apparent, stored) = self.write_file(&name, &dest, &mut entry, map, &mut buf, meta, &cls)?;
                    self.restore_xattrs(&name, &dest, &xattrs, refused);
                    self.report.file_count += 1;
                    self.report.content_bytes += apparent;
                    self.report.apparent_bytes += apparent;
                    self.report.stored_bytes += stored;
                }
            }
        }
        // Reaching here means the tar stream ended; the gzip trailer still has to be checked.
        opened.finish()?;
        if !self.matched {
            return Err(ArchiveError::MemberNotFound {
                path: self.archive.clone(),
                name: subtree.unwrap_or("").to_string(),
            });
        }
        self.check_symlinks()?;
        for dir in &self.implicit_dirs {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).map_err(Self::werr(dir))?;
        }
        // Attributes before modes: a directory may be about to become read-only.
        for (name, dir, xattrs) in std::mem::take(&mut self.dir_xattrs) {
            self.restore_xattrs(&name, &dir, &xattrs, Vec::new());
        }
        // Deepest first, so that a read-only parent is made so only after its children.
        for (dir, meta) in self.dirs.iter().rev() {
            self.apply_dir_meta(dir, *meta)?;
        }
        let root = self.root_meta.unwrap_or(Meta { mode: 0o755, mtime: 0, nsec: 0, uid: 0, gid: 0 });
        if self.root_meta.is_some() {
            self.apply_dir_meta(&self.staging, root)?;
        } else {
            fs::set_permissions(&self.staging, fs::Permissions::from_mode(0o755)).map_err(Self::werr(&self.staging))?;
        }
        sync_filesystem(&self.staging).map_err(Self::werr(&self.staging))?;
        let parent = parent_dir(&self.staging);
        fsync_dir(&parent).map_err(Self::werr(&parent))?;
        Ok(())
    }

    /// Makes sure every parent of `rel` is a real directory inside staging (creating missing ones)
    /// and returns the full destination path.
    fn ensure_parents(&mut self, name: &str, rel: &[OsString]) -> Result<PathBuf, ArchiveError> {
        let mut parent = self.staging.clone();
        for c in &rel[..rel.len() - 1] {
            parent.push(c);
        }
        if self.verified_parent.as_deref() != Some(parent.as_path()) {
            let mut p = self.staging.clone();
            for c in &rel[..rel.len() - 1] {
                p.push(c);
                match fs::symlink_metadata(&p) {
                    Ok(m) if m.is_dir() => {}
                    Ok(m) if m.file_type().is_symlink() => {
                        return Err(self.refuse(name, "would be written through a symlink"));
                    }
                    Ok(_) => return Err(self.refuse(name, "would be written under a file")),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        DirBuilder::new().mode(0o700).create(&p).map_err(Self::werr(&p))?;
                        self.implicit_dirs.push(p.clone());
                    }
                    Err(e) => return Err(Self::werr(&p)(e)),
                }
            }
            // A verified directory stays one: nothing here replaces an existing path.
            self.verified_parent = Some(parent.clone());
        }
        parent.push(&rel[rel.len() - 1]);
        Ok(parent)
    }

    /// Writes one file; returns its apparent and stored bytes.
    #[allow(clippy::too_many_arguments)]
    fn write_file(
        &self,
        name: &str,
        dest: &Path,
        entry: &mut tar::Entry<'_, crate::read::Tap>,
        map: Option<SparseMap>,
        buf: &mut [u8],
        meta: Meta,
        cls: &crate::read::Classifier,
    ) -> Result<(u64, u64), ArchiveError> {
        let werr = Self::werr(dest);
        let mut file = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(dest)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(self.refuse(name, "duplicates an earlier entry"));
            }
            Err(e) => return Err(werr(e)),
        };
        if let Some(map) = map {
            sparse::restore(&map, entry, &file, buf).map_err(|e| match e {
                RestoreError::Read(e) => cls.classify(e),
                RestoreError::Write(e) => werr(e),
            })?;
            self.finish_file(&file, meta, &werr)?;
            return Ok((map.realsize, map.data));
        }
        // Runs of zeros become holes, so files stored dense by other tools stay sparse.
        let mut total = 0u64;
        let mut hole = 0u64;
        loop {
            let n = entry.read(buf).map_err(|e| cls.classify(e))?;
            if n == 0 {
                break;
            }
            total += n as u64;
            // Any all-zero read, not only whole buffers: the tar crate hands out the holes of the
            // old GNU sparse format in reads that end where its map says.
            if buf[..n].iter().all(|b| *b == 0) {
                hole += n as u64;
                continue;
            }
            if hole > 0 {
                file.seek(SeekFrom::Current(hole as i64)).map_err(&werr)?;
                hole = 0;
            }
            file.write_all(&buf[..n]).map_err(&werr)?;
        }
        if hole > 0 {
            file.set_len(total).map_err(&werr)?;
        }
        self.finish_file(&file, meta, &werr)?;
        let stored = if entry.header().entry_type() == EntryType::GNUSparse {
            entry.header().entry_size().unwrap_or(total)
        } else {
            total
        };
        Ok((total, stored))
    }

    /// Gives a written file its owner, mode and mtime.
    fn finish_file(
        &self,
        file: &File,
        meta: Meta,
        werr: &dyn Fn(io::Error) -> ArchiveError,
    ) -> Result<(), ArchiveError> {
        if self.preserve_owner {
            std::os::unix::fs::fchown(file, Some(meta.uid as u32), Some(meta.gid as u32)).map_err(werr)?;
        }
        file.set_permissions(fs::Permissions::from_mode(meta.mode)).map_err(werr)?;
        file.set_modified(UNIX_EPOCH + Duration::new(meta.mtime, meta.nsec)).map_err(werr)
    }

    fn apply_dir_meta(&self, dir: &Path, meta: Meta) -> Result<(), ArchiveError> {
        let werr = Self::werr(dir);
        if self.preserve_owner {
            std::os::unix::fs::lchown(dir, Some(meta.uid as u32), Some(meta.gid as u32)).map_err(&werr)?;
        }
        fs::set_permissions(dir, fs::Permissions::from_mode(meta.mode)).map_err(&werr)?;
        set_mtime_nofollow(dir, meta.mtime, meta.nsec).map_err(&werr)
    }

    /// Resolves every symlink inside the finished tree, following chains of links, and refuses
    /// any that ends outside it (a lexically harmless link can escape through another link).
    fn check_symlinks(&self) -> Result<(), ArchiveError> {
        if self.allow_outside_symlinks {
            return Ok(());
        }
        for link in &self.symlinks {
            let mut here: Vec<OsString> = link[..link.len() - 1].to_vec();
            let first = fs::read_link(join(&self.staging, link)).map_err(Self::werr(&self.staging))?;
            let mut todo: Vec<OsString> = components_rev(first.as_os_str().as_bytes());
            let mut hops = 0;
            let name = link.iter().map(|c| c.to_string_lossy()).collect::<Vec<_>>().join("/");
            while let Some(c) = todo.pop() {
                if c == ".." {
                    if here.pop().is_none() {
                        return Err(self.refuse(&name, "is a symlink that resolves outside the target"));
                    }
                    continue;
                }
                here.push(c);
                let p = join(&self.staging, &here);
                match fs::symlink_metadata(&p) {
                    Ok(m) if m.file_type().is_symlink() => {
                        hops += 1;
                        if hops > MAX_CHECKED_HOPS {
                            // A loop (`x -> x`, `a -> b -> a`, `x -> x/y`) or a chain longer than
                            // the kernel follows: resolving it fails with ELOOP after 40 links,
                            // so it leads nowhere, least of all outside. Every shorter chain was
                            // followed to its end above (and each link in it is checked on its
                            // own), so accepting this one lets nothing out.
                            break;
                        }
                        here.pop();
                        let t = fs::read_link(&p).map_err(Self::werr(&p))?;
                        let bytes = t.as_os_str().as_bytes();
                        if bytes.first() == Some(&b'/') {
                            return Err(self.refuse(&name, "resolves through a symlink to an absolute path"));
                        }
                        todo.extend(components_rev(bytes));
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

/// What an entry's PAX `records` say beyond the tar header: the precise mtime goes into `meta`;
/// returns the attributes to restore and those refused up front (name, reason).
fn extended(records: &[Record<'_>], meta: &mut Meta) -> (Vec<Xattr>, Refused) {
    if let Some((secs, nsec)) = records.iter().rev().find(|(k, _)| *k == b"mtime").and_then(|(_, v)| parse_mtime(v)) {
        meta.mtime = secs;
        meta.nsec = nsec;
    }
    xattr::from_records(records)
}

/// How many links `check_symlinks` follows for one symlink before it calls it a loop: well past
/// Linux's limit of 40 (`MAXSYMLINKS`), so that any chain the kernel can resolve is followed to
/// its end.
const MAX_CHECKED_HOPS: u32 = 64;

fn swap(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ArchiveError {
    let path = path.to_path_buf();
    move |e| ArchiveError::Swap { action, path, source: e }
}

fn join(base: &Path, comps: &[OsString]) -> PathBuf {
    let mut p = base.to_path_buf();
    for c in comps {
        p.push(c);
    }
    p
}

/// The components of a relative link target, reversed (for use as a stack), `.` and empty removed.
fn components_rev(bytes: &[u8]) -> Vec<OsString> {
    bytes
        .split(|b| *b == b'/')
        .filter(|p| !p.is_empty() && *p != b".")
        .rev()
        .map(|p| OsStr::from_bytes(p).to_os_string())
        .collect()
}

/// True if the relative symlink `target`, placed in directory `dir` (components below the root),
/// leaves the root lexically.
fn escapes(dir: &[OsString], target: &[u8]) -> bool {
    let mut depth = dir.len();
    for part in target.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                if depth == 0 {
                    return true;
                }
                depth -= 1;
            }
            _ => depth += 1,
        }
    }
    false
}

fn set_mtime_nofollow(path: &Path, secs: u64, nsec: u32) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let t = libc::timespec { tv_sec: secs.min(i64::MAX as u64) as libc::time_t, tv_nsec: nsec.into() };
    let times = [t, t];
    // SAFETY: `c` is a valid NUL-terminated path and `times` points to two timespecs.
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Flushes the filesystem holding `dir` to disk: one call instead of an fsync per file.
fn sync_filesystem(dir: &Path) -> io::Result<()> {
    let f = File::open(dir)?;
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor is open for the duration of the call.
    let rc = unsafe { libc::syncfs(f.as_raw_fd()) };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Removes a tree that lifeboat created, even if it made parts of it read-only.
fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Ok(m) if !m.is_dir() => return fs::remove_file(path),
        _ => {}
    }
    // remove_dir_all never follows a symlink inside the tree (a container's planted links).
    if fs::remove_dir_all(path).is_ok() {
        return Ok(());
    }
    make_tree_writable(path);
    fs::remove_dir_all(path)
}

impl Staged {
    /// Moves the target (if any) aside to `<target>.lifeboat-old-<pid>-<time>` and the staging
    /// directory into its place; see [`Staged::swap_in_with_aside`].
    pub fn swap_in(self) -> Result<Swapped, ArchiveError> {
        let aside = with_suffix(&self.target, &format!(".lifeboat-old-{}", unique_tag()));
        self.swap_in_with_aside(aside)
    }

    /// Moves the target (if any) to `aside`, then the staging directory to the target, then fsyncs
    /// the parent directory: when this returns `Ok` the swap is durable. If the second rename
    /// fails, the first is undone. Both renames stay on one filesystem, so neither copies data.
    ///
    /// Renames move names and never follow them: a target that is a symlink is moved aside as a
    /// link. The staging directory must still be the real directory extraction made (not a
    /// symlink put in its place), and neither rename replaces anything already at its destination.
    pub fn swap_in_with_aside(self, aside: PathBuf) -> Result<Swapped, ArchiveError> {
        match is_real_dir(&self.staging) {
            Ok(true) => {}
            Ok(false) => {
                let e = io::Error::other(
                    "it is no longer the directory lifeboat extracted into (a symlink or file is in its place)",
                );
                return Err(ArchiveError::Swap { action: "move into place", path: self.staging, source: e });
            }
            Err(e) => return Err(ArchiveError::Swap { action: "inspect", path: self.staging, source: e }),
        }
        let had_old = match fs::symlink_metadata(&self.target) {
            Ok(_) => true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(ArchiveError::Swap { action: "inspect", path: self.target, source: e }),
        };
        if had_old {
            rename_noreplace(&self.target, &aside).map_err(|e| ArchiveError::Swap {
                action: "move aside",
                path: self.target.clone(),
                source: e,
            })?;
        }
        if let Err(e) = rename_noreplace(&self.staging, &self.target) {
            if had_old {
                let _ = fs::rename(&aside, &self.target);
            }
            return Err(ArchiveError::Swap { action: "move into place", path: self.staging, source: e });
        }
        let parent = parent_dir(&self.target);
        fsync_dir(&parent).map_err(|e| ArchiveError::Swap { action: "sync", path: parent, source: e })?;
        Ok(Swapped { target: self.target, old_aside: had_old.then_some(aside) })
    }

    /// Removes the staging directory (idempotent).
    pub fn discard(self) -> Result<(), ArchiveError> {
        remove_tree(&self.staging).map_err(|e| ArchiveError::Swap { action: "remove", path: self.staging, source: e })
    }
}

impl Swapped {
    /// Deletes the old copy: the swap becomes final. Idempotent.
    pub fn commit(self) -> Result<(), ArchiveError> {
        if let Some(old) = &self.old_aside {
            remove_tree(old).map_err(|e| ArchiveError::Swap {
                action: "remove the old copy",
                path: old.clone(),
                source: e,
            })?;
            let parent = parent_dir(&self.target);
            fsync_dir(&parent).map_err(|e| ArchiveError::Swap { action: "sync", path: parent, source: e })?;
        }
        Ok(())
    }

    /// Puts the old copy back (or removes the new target if there was none before), durably.
    /// Idempotent: a crash in the middle followed by another `revert` ends the same way. After a
    /// `commit` the old copy is gone and `revert` does nothing.
    pub fn revert(self) -> Result<(), ArchiveError> {
        let discard = match &self.old_aside {
            Some(old) => with_suffix(old, ".reverted"),
            None => with_suffix(&self.target, ".lifeboat-reverted"),
        };
        let exists = |p: &Path| fs::symlink_metadata(p).is_ok();
        match &self.old_aside {
            Some(old) if exists(old) => {
                if exists(&self.target) {
                    if exists(&discard) {
                        remove_tree(&discard).map_err(swap("remove", &discard))?;
                    }
                    fs::rename(&self.target, &discard).map_err(swap("move away", &self.target))?;
                }
                fs::rename(old, &self.target).map_err(swap("put back", old))?;
            }
            Some(_) => {}
            None => {
                if exists(&self.target) {
                    fs::rename(&self.target, &discard).map_err(swap("move away", &self.target))?;
                }
            }
        }
        let parent = parent_dir(&self.target);
        fsync_dir(&parent).map_err(swap("sync", &parent))?;
        remove_tree(&discard).map_err(swap("remove", &discard))
    }
}

/// Fidelity: PAX records, attributes, fifos and devices (see `pax`, `xattr`, `special`).
impl Extractor {
    /// The raw PAX data in front of entry `name` (empty when there is none).
    fn pax_data(&self, name: &str, found: Result<Found, String>) -> Result<Vec<u8>, ArchiveError> {
        match found {
            Ok(Found::None) => Ok(Vec::new()),
            Ok(Found::Pax(data)) => Ok(data),
            Ok(Found::TooLarge) => {
                Err(self.refuse(name, format!("has extended headers over {} bytes", crate::pax::MAX_PAX)))
            }
            Err(detail) => {
                Err(ArchiveError::BadTar { path: self.archive.clone(), detail: format!("entry {name:?}: {detail}") })
            }
        }
    }

    fn warn(&mut self, w: ExtractWarning) {
        if self.report.warnings.len() < MAX_WARNINGS {
            self.report.warnings.push(w);
        } else {
            self.report.warnings_omitted += 1;
        }
    }

    /// Sets `xattrs` on `dest`; every refusal (and every `refused` one) becomes a warning.
    fn restore_xattrs(&mut self, name: &str, dest: &Path, xattrs: &[Xattr], refused: Refused) {
        for (attr, reason) in refused {
            self.warn(ExtractWarning::AttributeNotRestored { entry: name.to_string(), name: attr, reason });
        }
        for (attr, value) in xattrs {
            if let Err(e) = xattr::set(dest, attr, value) {
                self.warn(ExtractWarning::AttributeNotRestored {
                    entry: name.to_string(),
                    name: String::from_utf8_lossy(attr).into_owned(),
                    reason: e.to_string(),
                });
            }
        }
    }

    /// Keeps a directory's attributes until its contents are written.
    fn later_xattrs(&mut self, name: &str, dir: &Path, xattrs: Vec<Xattr>, refused: Refused) {
        if !refused.is_empty() {
            self.restore_xattrs(name, dir, &[], refused);
        }
        if !xattrs.is_empty() {
            self.dir_xattrs.push((name.to_string(), dir.to_path_buf(), xattrs));
        }
    }

    /// Creates a fifo or (as root) a device node, with its owner, mode, attributes and mtime.
    #[allow(clippy::too_many_arguments)]
    fn special(
        &mut self,
        name: &str,
        dest: &Path,
        kind: EntryType,
        device: (Option<u32>, Option<u32>),
        meta: Meta,
        xattrs: &[Xattr],
        refused: Refused,
    ) -> Result<(), ArchiveError> {
        let is_device = kind != EntryType::Fifo;
        if is_device && !self.is_root {
            self.warn(ExtractWarning::DeviceNotCreated {
                entry: name.to_string(),
                reason: "only root can create device nodes; restore as root to get it back".into(),
            });
            return Ok(());
        }
        let (major, minor) = (device.0.unwrap_or(0), device.1.unwrap_or(0));
        match crate::special::create(dest, kind, major, minor) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(self.refuse(name, "duplicates an earlier entry"));
            }
            Err(e) if is_device && e.raw_os_error() == Some(libc::EPERM) => {
                self.warn(ExtractWarning::DeviceNotCreated { entry: name.to_string(), reason: e.to_string() });
                return Ok(());
            }
            Err(e) => return Err(Self::werr(dest)(e)),
        }
        let werr = Self::werr(dest);
        if self.preserve_owner {
            std::os::unix::fs::lchown(dest, Some(meta.uid as u32), Some(meta.gid as u32)).map_err(&werr)?;
        }
        chmod_nofollow(dest, meta.mode).map_err(&werr)?;
        self.restore_xattrs(name, dest, xattrs, refused);
        set_mtime_nofollow(dest, meta.mtime, meta.nsec).map_err(&werr)?;
        self.report.special_count += 1;
        Ok(())
    }
}
