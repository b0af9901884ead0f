//! Creating, renaming and chmod-ing without following anything planted at a name.
//!
//! lifeboat runs as root beside directories other users and containers can write to, so every
//! name it creates is created new (`O_EXCL|O_NOFOLLOW`), private, and never through a symlink
//! (docs/security.md).

use std::ffi::{CStr, CString};
use std::fs::{self, DirBuilder, File, Metadata, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)
}

/// Removes what sits at `path` unless it is a directory: a stale file from a crash, or a symlink
/// someone planted (unlinking a link never touches its target).
fn clear_non_dir(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if !m.is_dir() => match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        },
        _ => Ok(()),
    }
}

/// Creates `path` as a new file, `0600` (or `0640` owned by `group`) whatever the umask. A stale
/// non-directory at the name is unlinked first; the create itself never follows a symlink and
/// never opens an existing file, so a link planted in between makes it fail, not write elsewhere.
pub(crate) fn private_file(path: &Path, group: Option<u32>) -> io::Result<File> {
    clear_non_dir(path)?;
    create_private_file(path, group)
}

/// Creates `path` as a new file, `0600` (or `0640` owned by `group`) whatever the umask. Never
/// follows a symlink and never opens an existing file: anything at the name is an error
/// (`AlreadyExists`, or `ELOOP` for a link). The CLI creates the journal with it.
pub fn create_private_file(path: &Path, group: Option<u32>) -> io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    // Explicit modes: the umask can only narrow the create mode, and a caller's umask of 0o277
    // would leave the owner unable to write.
    let mode = match group {
        Some(gid) => {
            std::os::unix::fs::fchown(&file, None, Some(gid))?;
            0o640
        }
        None => 0o600,
    };
    file.set_permissions(fs::Permissions::from_mode(mode))?;
    Ok(file)
}

/// Creates `path` as a new directory, `0700` whatever the umask. A non-directory at the name (a
/// planted symlink) is unlinked first; an existing directory is an error (`AlreadyExists`).
pub(crate) fn private_dir(path: &Path) -> io::Result<()> {
    clear_non_dir(path)?;
    DirBuilder::new().mode(0o700).create(path)?;
    let dir = open_dir_nofollow(path)?;
    fchmod(&dir, 0o700)
}

/// Opens a directory for reading without following a symlink at its last component.
pub(crate) fn open_dir_nofollow(path: &Path) -> io::Result<OwnedFd> {
    let c = cstring(path)?;
    // SAFETY: `c` is a valid NUL-terminated path.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn openat_dir_nofollow(dir: &OwnedFd, name: &CStr) -> io::Result<OwnedFd> {
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: `dir` is an open descriptor and `name` a valid NUL-terminated name.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub(crate) fn fchmod(fd: &OwnedFd, mode: u32) -> io::Result<()> {
    // SAFETY: `fd` is an open descriptor.
    let rc = unsafe { libc::fchmod(fd.as_raw_fd(), mode as libc::mode_t) };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// The names in an open directory whose type is directory or unknown, `.` and `..` left out.
fn subdir_names(dir: &OwnedFd) -> io::Result<Vec<CString>> {
    // SAFETY: dup of an open descriptor; fdopendir takes ownership of the copy and closedir
    // closes it; readdir's entries are copied out before the next call.
    unsafe {
        let copy = libc::dup(dir.as_raw_fd());
        if copy < 0 {
            return Err(io::Error::last_os_error());
        }
        let stream = libc::fdopendir(copy);
        if stream.is_null() {
            let e = io::Error::last_os_error();
            libc::close(copy);
            return Err(e);
        }
        let mut out = Vec::new();
        loop {
            let ent = libc::readdir(stream);
            if ent.is_null() {
                break;
            }
            let name = CStr::from_ptr((*ent).d_name.as_ptr());
            let t = (*ent).d_type;
            if name.to_bytes() == b"." || name.to_bytes() == b".." {
                continue;
            }
            if t == libc::DT_DIR || t == libc::DT_UNKNOWN {
                out.push(name.to_owned());
            }
        }
        libc::closedir(stream);
        Ok(out)
    }
}

/// Best effort: makes every directory of the tree at `path` owner-writable, so that a tree
/// lifeboat made read-only can be removed. Works through descriptors opened with `O_NOFOLLOW`,
/// so a symlink swapped in for a directory is never followed (the chmod cannot leave the tree).
pub(crate) fn make_tree_writable(path: &Path) {
    if let Ok(fd) = open_dir_nofollow(path) {
        writable_below(fd, 0);
    }
}

fn writable_below(dir: OwnedFd, depth: usize) {
    let _ = fchmod(&dir, 0o700);
    // Deeper trees are rare; stop before running out of descriptors.
    if depth > 256 {
        return;
    }
    for name in subdir_names(&dir).unwrap_or_default() {
        if let Ok(child) = openat_dir_nofollow(&dir, &name) {
            writable_below(child, depth + 1);
        }
    }
}

/// Renames `from` to `to`, failing with `AlreadyExists` instead of replacing something at `to`
/// (`renameat2(RENAME_NOREPLACE)`; where the filesystem lacks it, a check then a rename).
pub(crate) fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    let (f, t) = (cstring(from)?, cstring(to)?);
    // SAFETY: both are valid NUL-terminated paths.
    let rc = unsafe { libc::renameat2(libc::AT_FDCWD, f.as_ptr(), libc::AT_FDCWD, t.as_ptr(), libc::RENAME_NOREPLACE) };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::ENOTSUP) => {
            if fs::symlink_metadata(to).is_ok() {
                return Err(io::Error::from(io::ErrorKind::AlreadyExists));
            }
            fs::rename(from, to)
        }
        _ => Err(e),
    }
}

/// Sets the mode of `path` without following a symlink at its last component
/// (`fchmodat(AT_SYMLINK_NOFOLLOW)`: a symlink put in its place makes it fail, not chmod the
/// link's target).
pub(crate) fn chmod_nofollow(path: &Path, mode: u32) -> io::Result<()> {
    let c = cstring(path)?;
    // SAFETY: `c` is a valid NUL-terminated path.
    let rc = unsafe { libc::fchmodat(libc::AT_FDCWD, c.as_ptr(), mode as libc::mode_t, libc::AT_SYMLINK_NOFOLLOW) };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::EOPNOTSUPP) {
        return Err(e);
    }
    // glibc before 2.32 has no `AT_SYMLINK_NOFOLLOW` here (and any glibc refuses it for a
    // symlink). Callers use this inside a private (`0700`) staging directory, where nobody else
    // can swap the name between this check and the chmod.
    if fs::symlink_metadata(path)?.file_type().is_symlink() {
        return Err(e);
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

/// Opens a source file that was seen as `meta` (by `lstat`, or `stat` for a root), refusing
/// what was swapped in since: `Ok(None)` if the name now leads to another file (a symlink to
/// `/etc/shadow`, a fifo). `O_NONBLOCK` so that a fifo swapped in cannot hang the open.
pub(crate) fn open_source(path: &Path, meta: &Metadata) -> io::Result<Option<File>> {
    let file = OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC).open(path)?;
    let now = file.metadata()?;
    if !now.is_file() || now.dev() != meta.dev() || now.ino() != meta.ino() {
        return Ok(None);
    }
    Ok(Some(file))
}

/// Opens the directory `path` that was listed as `meta`, for [`open_source_at`]: `None` if it is
/// a symlink now, or another directory than the one listed.
pub(crate) fn open_listed_dir(path: &Path, meta: &Metadata) -> Option<OwnedFd> {
    let dir = File::from(open_dir_nofollow(path).ok()?);
    let now = dir.metadata().ok()?;
    (now.dev() == meta.dev() && now.ino() == meta.ino()).then(|| OwnedFd::from(dir))
}

/// Opens the entry `name` of the open directory `dir` for reading, never through a symlink at
/// it (`ELOOP` then), with `O_NONBLOCK` so that a fifo swapped in cannot hang the open. One
/// lookup of one name, where a full path walks every component again: the caller takes the
/// file's `fstat` as its listing, so nothing can be swapped in between the two. Only for names
/// the directory lists as regular files: opening a device node can have effects of its own.
pub(crate) fn open_source_at(dir: &OwnedFd, name: &std::ffi::OsStr) -> io::Result<File> {
    let c = CString::new(name.as_bytes()).map_err(io::Error::other)?;
    let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: `dir` is an open descriptor and `c` a valid NUL-terminated name.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// True if `path` is a real directory (not a symlink to one).
pub(crate) fn is_real_dir(path: &Path) -> io::Result<bool> {
    Ok(fs::symlink_metadata(path)?.is_dir())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_swapped_for_a_symlink_is_not_opened() {
        let tmp = tempfile::tempdir().unwrap();
        let (file, secret) = (tmp.path().join("file"), tmp.path().join("secret"));
        fs::write(&file, b"data").unwrap();
        fs::write(&secret, b"secret").unwrap();
        let seen = fs::symlink_metadata(&file).unwrap();
        assert!(open_source(&file, &seen).unwrap().is_some());
        fs::remove_file(&file).unwrap();
        std::os::unix::fs::symlink(&secret, &file).unwrap();
        assert!(open_source(&file, &seen).unwrap().is_none());
        // A fifo swapped in neither hangs nor is read.
        fs::remove_file(&file).unwrap();
        let c = CString::new(file.as_os_str().as_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(open_source(&file, &seen).unwrap().is_none());
    }

    #[test]
    fn a_child_opened_through_its_directory_is_never_a_symlink_target() {
        let tmp = tempfile::tempdir().unwrap();
        let (dir, other) = (tmp.path().join("dir"), tmp.path().join("other"));
        fs::create_dir(&dir).unwrap();
        fs::create_dir(&other).unwrap();
        fs::write(dir.join("file"), b"data").unwrap();
        fs::write(tmp.path().join("secret"), b"secret").unwrap();
        std::os::unix::fs::symlink(tmp.path().join("secret"), dir.join("link")).unwrap();
        let listed = fs::symlink_metadata(&dir).unwrap();
        let fd = open_listed_dir(&dir, &listed).expect("the directory listed");
        let mut data = String::new();
        io::Read::read_to_string(&mut open_source_at(&fd, "file".as_ref()).unwrap(), &mut data).unwrap();
        assert_eq!(data, "data");
        let refused = open_source_at(&fd, "link".as_ref()).unwrap_err();
        assert_eq!(refused.raw_os_error(), Some(libc::ELOOP));
        // Another directory at the listed name, or a symlink to one, is not the one listed.
        fs::rename(&dir, tmp.path().join("moved")).unwrap();
        fs::rename(&other, &dir).unwrap();
        assert!(open_listed_dir(&dir, &listed).is_none());
        fs::remove_dir(&dir).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("moved"), &dir).unwrap();
        assert!(open_listed_dir(&dir, &listed).is_none());
    }

    #[test]
    fn making_a_tree_writable_stays_inside_it() {
        let tmp = tempfile::tempdir().unwrap();
        let tree = tmp.path().join("tree");
        let outside = tmp.path().join("outside");
        fs::create_dir_all(tree.join("a/b")).unwrap();
        fs::create_dir(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, tree.join("a/link")).unwrap();
        for d in [&tree.join("a/b"), &tree.join("a"), &outside] {
            fs::set_permissions(d, fs::Permissions::from_mode(0o500)).unwrap();
        }
        make_tree_writable(&tree);
        let mode = |p: &Path| fs::symlink_metadata(p).unwrap().mode() & 0o7777;
        assert_eq!((mode(&tree.join("a")), mode(&tree.join("a/b"))), (0o700, 0o700));
        assert_eq!(mode(&outside), 0o500);
        // A symlink as the tree itself is not followed either.
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&outside, &link).unwrap();
        make_tree_writable(&link);
        assert_eq!(mode(&outside), 0o500);
    }

    #[test]
    fn chmod_nofollow_changes_a_fifo_and_never_a_link_target() {
        let tmp = tempfile::tempdir().unwrap();
        let (fifo, target, link) = (tmp.path().join("fifo"), tmp.path().join("target"), tmp.path().join("link"));
        let c = cstring(&fifo).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        chmod_nofollow(&fifo, 0o640).unwrap();
        let mode = |p: &Path| fs::symlink_metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(&fifo), 0o640);
        fs::write(&target, b"t").unwrap();
        fs::set_permissions(&target, fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(chmod_nofollow(&link, 0o666).is_err());
        assert_eq!(mode(&target), 0o600);
    }

    #[test]
    fn rename_noreplace_keeps_what_is_there() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        fs::write(&a, b"a").unwrap();
        fs::write(&b, b"b").unwrap();
        assert_eq!(rename_noreplace(&a, &b).unwrap_err().kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&b).unwrap(), b"b");
        fs::remove_file(&b).unwrap();
        rename_noreplace(&a, &b).unwrap();
        assert_eq!(fs::read(&b).unwrap(), b"a");
    }
}
