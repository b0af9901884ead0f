//! Hard links on the writer's side: a regular file with several names under one root is stored
//! once; its other names become tar hard-link entries naming the first one.

use std::collections::HashMap;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// (device, inode) of multi-link files seen so far under the current root -> archive name of the
/// first one, and how many of its other links may still come. Single-link files never enter it,
/// and a file leaves it once all its links were seen, so memory stays small.
#[derive(Default)]
pub(crate) struct LinkTable {
    seen: HashMap<(u64, u64), (PathBuf, u64)>,
}

impl LinkTable {
    /// For the regular file `name`: the archive name it must link to, or `None` if it is to be
    /// stored in full (then, if it has other links, it is remembered).
    pub fn target(&mut self, meta: &Metadata, name: &Path) -> Option<PathBuf> {
        if meta.nlink() < 2 {
            return None;
        }
        let key = (meta.dev(), meta.ino());
        match self.seen.get_mut(&key) {
            Some((first, left)) => {
                let first = first.clone();
                *left = left.saturating_sub(1);
                if *left == 0 {
                    self.seen.remove(&key);
                }
                Some(first)
            }
            None => {
                self.seen.insert(key, (name.to_path_buf(), meta.nlink() - 1));
                None
            }
        }
    }
}
