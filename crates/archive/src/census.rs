//! Counting a tree before it is archived: what a manifest written as an archive's first entry
//! says each root holds, and what the writer checks its own counts against afterwards.
//!
//! The counts follow [`crate::ArchiveSummary`]: regular files stored with their content (a file
//! with several names under one root once), and their apparent sizes. Sockets are not counted
//! (the writer skips them); nothing below a root is followed.

use std::collections::HashSet;
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::error::ArchiveError;
use crate::write::Root;

/// What one root holds: its regular files and their apparent bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RootTally {
    /// Regular files stored with their content (hard links not counted again).
    pub file_count: u64,
    /// Apparent bytes of those files, holes of sparse files included.
    pub content_bytes: u64,
}

/// Counts what each of `roots` holds, in order, without reading any file's content.
///
/// The caller writes these counts in the manifest in front of the archive and passes them to the
/// writer ([`crate::WriteOptions::expect`]), which fails with [`ArchiveError::TreeChanged`] if
/// what it archived differs: a tree that changes between the two walks is being written to.
pub fn census(roots: &[Root]) -> Result<Vec<RootTally>, ArchiveError> {
    roots.iter().map(|root| census_root(&root.source)).collect()
}

fn census_root(source: &Path) -> Result<RootTally, ArchiveError> {
    let meta = fs::metadata(source).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => ArchiveError::MissingRoot { path: source.to_path_buf() },
        _ => ArchiveError::Read { path: source.to_path_buf(), source: e },
    })?;
    let mut tally = RootTally::default();
    let mut seen = HashSet::new();
    visit(source, &meta, &mut tally, &mut seen)?;
    Ok(tally)
}

fn visit(
    path: &Path,
    meta: &Metadata,
    tally: &mut RootTally,
    seen: &mut HashSet<(u64, u64)>,
) -> Result<(), ArchiveError> {
    let rerr = |e| ArchiveError::Read { path: path.to_path_buf(), source: e };
    let ft = meta.file_type();
    if ft.is_dir() {
        for child in fs::read_dir(path).map_err(rerr)? {
            let child = child.map_err(rerr)?;
            let child_path = child.path();
            let child_meta = fs::symlink_metadata(&child_path)
                .map_err(|e| ArchiveError::Read { path: child_path.clone(), source: e })?;
            visit(&child_path, &child_meta, tally, seen)?;
        }
    } else if ft.is_file() && (meta.nlink() < 2 || seen.insert((meta.dev(), meta.ino()))) {
        tally.file_count += 1;
        tally.content_bytes += meta.len();
    }
    Ok(())
}
