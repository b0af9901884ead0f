//! Fifos and device nodes: stored as GNU tar stores them (entry type, and major/minor numbers for
//! devices), recreated on extraction; devices only by root.

use std::ffi::CString;
use std::fs::{FileType, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use tar::{EntryType, Header};

/// The tar entry type for a fifo or device node; `None` for anything else.
pub(crate) fn entry_type(ft: &FileType) -> Option<EntryType> {
    if ft.is_fifo() {
        Some(EntryType::Fifo)
    } else if ft.is_char_device() {
        Some(EntryType::Char)
    } else if ft.is_block_device() {
        Some(EntryType::Block)
    } else {
        None
    }
}

/// Fills the type and device numbers of a header already filled from `meta`.
pub(crate) fn fill_header(header: &mut Header, kind: EntryType, meta: &Metadata) -> io::Result<()> {
    header.set_entry_type(kind);
    header.set_size(0);
    if kind != EntryType::Fifo {
        let rdev = meta.rdev();
        header.set_device_major(libc::major(rdev))?;
        header.set_device_minor(libc::minor(rdev))?;
    }
    Ok(())
}

/// Creates a fifo or device node at `dest` with owner-only permissions (the caller then sets
/// owner, mode and mtime).
pub(crate) fn create(dest: &Path, kind: EntryType, major: u32, minor: u32) -> io::Result<()> {
    let c = CString::new(dest.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let (fmt, dev) = match kind {
        EntryType::Char => (libc::S_IFCHR, libc::makedev(major, minor)),
        EntryType::Block => (libc::S_IFBLK, libc::makedev(major, minor)),
        _ => (libc::S_IFIFO, 0),
    };
    // SAFETY: `c` is a valid NUL-terminated path.
    let rc = unsafe { libc::mknod(c.as_ptr(), fmt | 0o600, dev) };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}
