//! The filesystem helpers every effect shares: existence without following symlinks, durable
//! renames and removals (the directory fsynced after), free space and tree sizes.

use anyhow::Context;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Whether anything (a dangling symlink included) is at `path`.
pub fn exists(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

/// The directory holding `path` (`.` for a bare name).
pub fn parent(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// Makes the entries of `dir` durable: a rename or removal in it survives a crash once this returns.
pub fn fsync_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync the directory {}", dir.display()))
}

/// Removes a directory tree and syncs its parent. Idempotent: a missing tree is fine.
pub fn remove_tree(path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => fsync_dir(parent(path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
}

/// Removes a file; `true` if it was there. Idempotent, so recovery can redo it. The caller syncs
/// the directory (once for several files).
pub fn remove_file(path: &Path) -> anyhow::Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
}

/// The nearest ancestor of `path` that exists (itself if it does).
pub fn existing_ancestor(path: &Path) -> &Path {
    let mut path = path;
    while !path.exists() {
        match path.parent() {
            Some(parent) => path = parent,
            None => break,
        }
    }
    path
}

/// Bytes available to an unprivileged user on the filesystem of `path`, and the filesystem's id.
pub fn free_space(path: &Path) -> anyhow::Result<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c_path =
        std::ffi::CString::new(path.as_os_str().as_bytes()).with_context(|| format!("bad path {}", path.display()))?;
    // SAFETY: `statvfs` is plain old data, for which all-zero bytes are a valid value.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is a valid NUL-terminated string and `stat` a valid out-pointer.
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("cannot read free space of {}", path.display()));
    }
    #[allow(clippy::unnecessary_cast)]
    Ok(((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64), stat.f_fsid as u64))
}

/// The size of the regular files below `path` (0 when it is missing or unreadable).
pub fn tree_size(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else { return 0 };
    if meta.is_file() {
        return meta.len();
    }
    if !meta.is_dir() {
        return 0;
    }
    let Ok(entries) = std::fs::read_dir(path) else { return 0 };
    entries.filter_map(Result::ok).map(|e| tree_size(&e.path())).sum()
}

/// Runs blocking filesystem work (extracting, swapping, hashing) off the async threads. A panic
/// in it is an error naming `what`, as any other failure of the effect.
pub async fn blocking<T: Send + 'static>(
    what: &str,
    work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(work).await.with_context(|| format!("{what} panicked"))?
}

/// The mode of the directories lifeboat creates for backups: `0700`, or `0750` with a group.
pub fn dir_mode(group: Option<u32>) -> u32 {
    if group.is_some() { 0o750 } else { 0o700 }
}

/// Creates the directory `path` and its missing parents, each new one with [`dir_mode`] (and the
/// group) whatever the umask, so a parent lifeboat made cannot let others swap the directory out.
/// Existing directories are left as they are. Returns whether `path` itself was created.
pub fn create_private_dir(path: &Path, group: Option<u32>) -> io::Result<bool> {
    let mut missing: Vec<&Path> = Vec::new();
    let mut at = path;
    while std::fs::metadata(at).is_err() {
        missing.push(at);
        match at.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => at = parent,
            _ => break,
        }
    }
    let mut created_leaf = false;
    for dir in missing.iter().rev() {
        match std::fs::DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => {}
            // Another process made it in between: it is not ours to chmod.
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(err) => return Err(err),
        }
        // Through a descriptor opened without following links: what gets the mode is the
        // directory just made, never something swapped in at its name.
        let handle = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(dir)?;
        if let Some(gid) = group {
            std::os::unix::fs::fchown(&handle, None, Some(gid))?;
        }
        handle.set_permissions(std::fs::Permissions::from_mode(dir_mode(group)))?;
        created_leaf = *dir == path;
    }
    Ok(created_leaf)
}

/// Creates `path` as a new empty file, `0600` whatever the umask (the journal, before redb lays
/// it out, so it is never readable by others, not even for an instant).
pub fn create_private_file(path: &Path) -> io::Result<File> {
    lifeboat_archive::create_private_file(path, None)
}
