//! Who may read and write what lifeboat keeps (docs/security.md): the backup dir, `.lifeboat/`,
//! the journal and the archives.
//!
//! Directories and files lifeboat creates get their mode set explicitly, whatever the umask:
//! `0700`/`0600`, or `0750`/`0640` with the group `backup.group` names. What lifeboat did not
//! create it never chmods; it refuses a backup dir others could plant names in (exit 2, before any
//! run starts), and [`exposure_warnings`] names what others can read or write.

use crate::exit::Exit;
use crate::fsutil::{create_private_dir, dir_mode};
use crate::project::Project;
use anyhow::Context;
use std::fs::Metadata;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Before a run that writes an archive (`backup`, `auto-backup run`, `upgrade`): refuses an
/// existing backup dir other users could put names in (exit 2, nothing started). A missing one is
/// created private when the archive is written (`effects::backups::write_archive`).
pub fn refuse_unsafe_backup_dir(project: &Project) -> anyhow::Result<()> {
    let dir = project.backup_dir();
    match std::fs::metadata(&dir) {
        Ok(meta) => check_backup_dir(&dir, &meta).map_err(|err| Exit::Usage.wrap(err)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err).with_context(|| format!("cannot read the backup dir {}", dir.display())),
    }
}

/// Where an archive is about to be written: creates the backup dir private if missing, then
/// checks it as it is now, so a dir someone else made after [`refuse_unsafe_backup_dir`] looked
/// fails the write (and the run rolls back) instead of holding the archive.
pub fn ready_backup_dir(dir: &Path, group: Option<u32>) -> anyhow::Result<()> {
    create_private_dir(dir, group).with_context(|| format!("cannot create the backup dir {}", dir.display()))?;
    let meta = std::fs::metadata(dir).with_context(|| format!("cannot read the backup dir {}", dir.display()))?;
    check_backup_dir(dir, &meta)
}

/// The refusal of an existing backup dir (docs/security.md, "Other local users"): others who can
/// write it without the sticky bit could rename, delete or replace archives, and its owner (if
/// neither root nor us) can do all of that whatever the mode.
fn check_backup_dir(dir: &Path, meta: &Metadata) -> anyhow::Result<()> {
    if !meta.is_dir() {
        anyhow::bail!("backup.dir {} is not a directory: point backup.dir at a directory", dir.display());
    }
    let owner = meta.uid();
    if owner != 0 && owner != euid() {
        anyhow::bail!(
            "the backup dir {} is owned by uid {owner}, who could replace the archives in it: run 'chown root {}' \
             or point backup.dir elsewhere, then run it again; nothing was started",
            dir.display(),
            dir.display()
        );
    }
    let mode = meta.mode();
    if let Some(who) = writers(meta)
        && mode & libc::S_ISVTX == 0
    {
        anyhow::bail!(
            "the backup dir {} is writable by {who} (mode {:04o}) and has no sticky bit, so they could plant links \
             or replace archives there: run 'chmod {:o} {}' (or 'chmod +t' if others must write there), then run it \
             again; nothing was started",
            dir.display(),
            mode & 0o7777,
            dir_mode(None),
            dir.display()
        );
    }
    Ok(())
}

/// Who besides the owner may write: others, or a group other than root's.
fn writers(meta: &Metadata) -> Option<String> {
    let mode = meta.mode();
    if mode & 0o002 != 0 {
        Some("other users".into())
    } else if mode & 0o020 != 0 && meta.gid() != 0 {
        Some(format!("the group {}", group_name(meta.gid())))
    } else {
        None
    }
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// A group's name for messages, its number when it has none.
fn group_name(gid: u32) -> String {
    let mut buf = vec![0u8; 4096];
    // SAFETY: as in `config::group_id`: zeroed plain data, then getgrgid_r with valid out-pointers.
    let mut group: libc::group = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::group = std::ptr::null_mut();
    // SAFETY: as above.
    let rc = unsafe { libc::getgrgid_r(gid, &mut group, buf.as_mut_ptr().cast(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() {
        return gid.to_string();
    }
    // SAFETY: on success `gr_name` points to a NUL-terminated string inside `buf`.
    unsafe { std::ffi::CStr::from_ptr(group.gr_name) }.to_string_lossy().into_owned()
}

/// What others can do with `path` that they should not, as one warning naming it and the fix;
/// `None` when nothing. `reader` is the gid allowed to read (`backup.group`); root's group is
/// trusted like root.
fn exposure(path: &Path, meta: &Metadata, reader: Option<u32>) -> Option<String> {
    let mode = meta.mode() & 0o7777;
    let owner = meta.uid();
    let mut problems = Vec::new();
    if owner != 0 && owner != euid() {
        problems.push(format!("owned by uid {owner}"));
    }
    let rw = |bits: u32| match (bits & 0o4 != 0, bits & 0o2 != 0) {
        (true, true) => Some("readable and writable"),
        (true, false) => Some("readable"),
        (false, true) => Some("writable"),
        (false, false) => None,
    };
    let gid = meta.gid();
    let group_bits = (mode >> 3) & 0o7;
    let allowed_group_read = Some(gid) == reader || gid == 0;
    let group_exposed = if gid == 0 || (allowed_group_read && group_bits & 0o2 == 0) { 0 } else { group_bits };
    if let Some(what) = rw(group_exposed) {
        problems.push(format!("{what} by the group {}", group_name(gid)));
    }
    if let Some(what) = rw(mode & 0o7) {
        problems.push(format!("{what} by others"));
    }
    if problems.is_empty() {
        return None;
    }
    let shared = reader.is_some_and(|r| r == gid);
    let fix = match (meta.is_dir(), shared) {
        (true, false) => "chmod 700",
        (true, true) => "chmod 750",
        (false, false) => "chmod 600",
        (false, true) => "chmod 640",
    };
    let chown = if owner != 0 && owner != euid() { format!("chown root {}; ", path.display()) } else { String::new() };
    Some(format!(
        "{} is {} (mode {mode:04o}): run '{chown}{fix} {}' (docs/security.md)",
        path.display(),
        problems.join(", "),
        path.display()
    ))
}

/// A path others can read or write, and the warning that names it and the fix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exposure {
    pub path: PathBuf,
    pub message: String,
    /// About one archive (rather than a directory or the journal every backup shares).
    pub archive: bool,
}

/// What others can read or write among the backup dir, `.lifeboat/`, the journal and `archives`
/// (the existing ones; missing paths are not this function's business), including a backup dir
/// the next backup would refuse.
pub fn exposure_warnings<'a>(project: &Project, archives: impl IntoIterator<Item = &'a Path>) -> Vec<Exposure> {
    // An unknown group is reported by the commands that use it; here it only means no group may read.
    let reader = project.config.backup.group_id().ok().flatten();
    let mut paths: Vec<(PathBuf, Option<u32>, bool)> = vec![
        (project.backup_dir(), reader, false),
        (project.state_dir(), None, false),
        (project.journal_path(), None, false),
    ];
    paths.extend(archives.into_iter().map(|p| (p.to_path_buf(), reader, true)));
    let mut warnings: Vec<Exposure> = Vec::new();
    for (path, reader, archive) in paths {
        if let Ok(meta) = std::fs::metadata(&path)
            && let Some(message) = exposure(&path, &meta, reader)
            && !warnings.iter().any(|w| w.path == path)
        {
            warnings.push(Exposure { path, message, archive });
        }
    }
    let dir = project.backup_dir();
    if let Ok(meta) = std::fs::metadata(&dir)
        && meta.is_dir()
        && let Err(refusal) = check_backup_dir(&dir, &meta)
    {
        let message = format!("the next backup will be refused: {refusal}");
        warnings.push(Exposure { path: dir, message, archive: false });
    }
    warnings
}

/// The warnings that concern one backup: the project's, and those about its archive (not the
/// other archives').
pub fn concerning<'a>(warnings: &'a [Exposure], archive: &Path) -> Vec<&'a str> {
    warnings.iter().filter(|w| !w.archive || w.path == archive).map(|w| w.message.as_str()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::group_id;
    use crate::fsutil::create_private_file;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().mode() & 0o7777
    }

    #[test]
    fn created_dirs_are_private_whatever_the_umask_and_existing_ones_are_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let existing = tmp.path().join("existing");
        std::fs::create_dir(&existing).unwrap();
        std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o755)).unwrap();
        let leaf = existing.join("a/b");
        assert!(create_private_dir(&leaf, None).unwrap());
        assert_eq!((mode(&existing), mode(&existing.join("a")), mode(&leaf)), (0o755, 0o700, 0o700));
        assert!(!create_private_dir(&leaf, None).unwrap(), "an existing dir is not created again");
        std::fs::set_permissions(&leaf, std::fs::Permissions::from_mode(0o711)).unwrap();
        create_private_dir(&leaf, None).unwrap();
        assert_eq!(mode(&leaf), 0o711, "never chmods what it did not create");

        let gid = group_id("root").unwrap();
        let shared = tmp.path().join("shared");
        create_private_dir(&shared, Some(gid)).unwrap();
        assert_eq!(mode(&shared), 0o750);
        assert_eq!(std::fs::metadata(&shared).unwrap().gid(), gid);
    }

    #[test]
    fn private_files_are_new_and_0600() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("journal.redb");
        create_private_file(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
        assert!(create_private_file(&path).is_err(), "an existing file is not reused");
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(tmp.path().join("target"), &link).unwrap();
        assert!(create_private_file(&link).is_err(), "a planted link is not followed");
        assert!(!tmp.path().join("target").exists());
    }

    #[test]
    fn unknown_groups_are_named() {
        assert_eq!(group_id("root").unwrap(), 0);
        let err = group_id("no-such-group-lifeboat").unwrap_err().to_string();
        assert!(err.contains("\"no-such-group-lifeboat\"") && err.contains("backup.group"), "{err}");
    }

    #[test]
    fn a_dir_others_can_write_needs_the_sticky_bit() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("backups");
        std::fs::create_dir(&dir).unwrap();
        let check = |m: u32| {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(m)).unwrap();
            check_backup_dir(&dir, &std::fs::metadata(&dir).unwrap())
        };
        assert!(check(0o700).is_ok());
        assert!(check(0o755).is_ok());
        let err = check(0o777).unwrap_err().to_string();
        assert!(err.contains(&dir.display().to_string()) && err.contains("sticky"), "{err}");
        assert!(check(0o1777).is_ok());
        // The tests run as root, whose group is trusted.
        assert!(check(0o770).is_ok());
    }

    #[test]
    fn exposure_names_the_path_who_and_the_fix() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("a.tar.gz");
        std::fs::write(&file, b"x").unwrap();
        let warn = |m: u32, reader: Option<u32>| {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(m)).unwrap();
            exposure(&file, &std::fs::metadata(&file).unwrap(), reader)
        };
        assert_eq!(warn(0o600, None), None);
        assert_eq!(warn(0o640, None), None, "root's group is trusted");
        let w = warn(0o644, None).unwrap();
        assert!(w.contains(&file.display().to_string()) && w.contains("readable by others") && w.contains("0644"));
        assert!(w.contains("chmod 600"), "{w}");
        assert!(warn(0o606, None).unwrap().contains("readable and writable by others"));
    }
}
