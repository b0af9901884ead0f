//! What an archive run or an extraction left out, for the caller to show as warnings.

use std::fmt;
use std::path::PathBuf;

/// A path [`crate::write_archive`] left out of the archive, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The path on disk.
    pub path: PathBuf,
    pub kind: SkippedKind,
}

/// Why a path was left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SkippedKind {
    /// A unix socket: it only means something to a running process, and tar cannot hold one.
    Socket,
}

impl fmt::Display for SkippedKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkippedKind::Socket => f.write_str("socket"),
        }
    }
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "skipped {} {}: lifeboat does not archive sockets", self.kind, self.path.display())
    }
}

/// Something an extraction could not restore although the rest succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExtractWarning {
    /// A device node was not created (extraction does not run as root, or the kernel refused).
    DeviceNotCreated { entry: String, reason: String },
    /// An extended attribute or ACL was not restored (the filesystem or the kernel refused it).
    AttributeNotRestored { entry: String, name: String, reason: String },
}

impl fmt::Display for ExtractWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExtractWarning::DeviceNotCreated { entry, reason } => {
                write!(f, "device node {entry:?} was not restored: {reason}")
            }
            ExtractWarning::AttributeNotRestored { entry, name, reason } => {
                write!(f, "attribute {name} of {entry:?} was not restored: {reason}")
            }
        }
    }
}

/// At most this many warnings are kept in a report; the rest are only counted, so that a
/// filesystem refusing every attribute of a million files does not fill memory.
pub(crate) const MAX_WARNINGS: usize = 100;
