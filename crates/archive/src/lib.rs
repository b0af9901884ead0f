//! Archives for lifeboat: streaming, checksummed, durable `.tar.gz` and `.tar.zst` writing;
//! verification; safe extraction into a staging directory that is then swapped into place.
//!
//! This crate owns the archive file format and every byte that goes into or comes out of one. It
//! knows nothing of Docker, the journal or the state machine: the executor in `cli` calls it.
//!
//! # Writing and durability
//!
//! [`write_archive`] walks the roots, writes tar, compresses it on several threads at once with
//! [`WriteOptions::compression`]: gzip (pigz-style blocks forming one standard gzip member, see
//! `pgzip`) or zstd (one frame with its content checksum, libzstd's worker threads), and hashes
//! the compressed bytes with sha256 as they go to disk. Memory stays flat (a few blocks or zstd
//! jobs in flight) whatever the data size. Readers tell the two apart by the file's first bytes
//! ([`Compression`]), never by its name.
//!
//! An archive holds what a data volume holds: directories, regular files (sparse ones with their
//! holes), symlinks, hard links (each file once per root, then tar hard-link entries), fifos and
//! device nodes, modes, numeric owners, nanosecond mtimes, extended attributes, file capabilities
//! and POSIX ACLs, in the form GNU tar `--xattrs --acls --sparse --format=posix` writes and reads
//! (PAX records in front of the entries that need them; a sparse file has one PAX header holding
//! its sparse keys and its other records). Sockets are skipped and named in
//! [`ArchiveSummary::skipped`]. See [`write_archive`].
//! The bytes go to `NAME.partial` ([`partial_path`]), never to `NAME`. Then, in order: the partial
//! file is fsynced, renamed to `NAME`, and the directory is fsynced.
//!
//! - The archive is durable exactly when `write_archive` returns `Ok`: its content was fsynced
//!   before the rename, and the rename was fsynced after.
//! - A crash at any earlier point leaves at most `NAME.partial` (maybe empty, maybe long), never
//!   `NAME`: the final name only ever appears by the rename of a synced, complete file. So a
//!   file under the final name is never a partial archive, and anything ending in `.partial` is
//!   garbage that recovery deletes.
//! - A crash between the rename and the directory fsync may lose the rename; the archive is then
//!   again only a `.partial`, which is the "not written" case. The caller records the archive in
//!   its catalog only after `Ok`, with the returned sha256, size and counts.
//!
//! # Safe by default
//!
//! lifeboat runs as root beside directories that containers and other users write to
//! (docs/security.md). So:
//!
//! - The archive is private: `0600`, or `0640` with [`WriteOptions::group`], whatever the umask.
//! - Nothing is written through a name someone else could have prepared: `NAME.partial` is
//!   unlinked if present (a stale partial, a planted link) and created new with
//!   `O_EXCL|O_NOFOLLOW`; the rename to `NAME` never replaces anything. Staging directories are
//!   created the same way, `0700`; the swap renames names and never follows them.
//! - Sparse files are stored sparse (holes found with `SEEK_DATA`/`SEEK_HOLE`, GNU tar's PAX
//!   sparse format 1.0), so time and size follow the data: a `truncate -s 1P` in a volume costs
//!   nothing. Counts give both [`ArchiveSummary::apparent_bytes`] and `stored_bytes`;
//!   `content_bytes`, the one the catalog records and verification checks, is the apparent size.
//! - [`WriteOptions::max_bytes`] and [`WriteOptions::max_files`] bound what a hostile volume can
//!   make a backup cost ([`ArchiveError::LimitExceeded`]).
//!
//! # Verifying
//!
//! [`verify_archive`] re-hashes the file and reads it through (gzip CRC32 and length, or the zstd
//! content checksum; tar
//! structure, every entry and its PAX records, every sparse map), then compares with what was
//! recorded ([`Expected`]); [`VerifyReport`] counts files, hard links, fifos and devices as
//! [`ArchiveSummary`] does. The holes of sparse files are not expanded, so they cost nothing to
//! verify.
//!
//! # Extracting
//!
//! [`extract_to_staging`] extracts into a fresh staging directory beside the target, refusing
//! unsafe entries (absolute names, `..`, writes through symlinks, symlinks that resolve out of
//! the tree (a loop, which resolves nowhere, is accepted), hard links to anything but a regular file extracted earlier, unknown entry types),
//! reading the whole stream so a corrupt archive is refused before anything moves. Fifos are
//! recreated, and device nodes when running as root; what the system refuses to restore (device
//! nodes when not root, attributes the filesystem does not take) is a warning in
//! [`ExtractReport`]. Sparse files (GNU tar's PAX formats 0.0, 0.1 and 1.0, and the old GNU
//! format) come back with their holes; a sparse map that does not fit its entry is refused. A
//! refused archive leaves nothing behind. [`Staged::swap_in`] then renames the target aside and the
//! staging directory into place; [`Swapped::commit`] deletes the old copy, [`Swapped::revert`]
//! puts it back. Nothing is deleted before its replacement is in place and synced.
//! [`ExtractOptions::subtree`] extracts one root of a multi-root backup into its own target.
//!
//! # Mirrors
//!
//! For backups with little downtime, [`sync_mirror`] keeps an exact copy of a root (everything an
//! archive keeps, holes and hard links included) in a private mirror directory on the backup
//! directory's filesystem: a sync while the services run copies almost everything, a second one
//! once they are stopped copies only what changed meanwhile (a walk of `lstat`s against the
//! index of the last sync: size, mtime, ctime, inode), and the archive is then written from
//! [`mirror_tree`] at leisure. A copy is a reflink when the filesystem can, else a copy of the
//! data regions; it is renamed over its name, nothing in the mirror is followed, and the mirror
//! is durable when the sync returns `Ok` (one `syncfs`, then the index). An interrupted sync
//! leaves the previous index, which can never make a later one skip a stale copy (see
//! `mirror.rs`). [`mirror_disk_usage`] tells what the mirror costs on disk.
//!
//! For packages: [`list_entries`] lists entries with the sha256 of each file, and
//! [`read_member`] reads one small member (a manifest) by name.
//!
//! **Architecture Invariant:** nothing here panics on hostile input; every failure is an
//! [`ArchiveError`] naming the file or entry and what to do.

mod census;
mod compress;
mod create;
mod error;
mod extract;
mod links;
mod mirror;
mod notes;
mod pax;
mod pgzip;
mod read;
mod sparse;
mod special;
mod util;
mod write;
mod xattr;

pub use census::{RootTally, census};
pub use compress::Compression;
pub use create::create_private_file;
pub use error::ArchiveError;
pub use extract::{ExtractOptions, ExtractReport, Staged, Swapped, extract_to_staging};
pub use mirror::{SyncOptions, SyncStats, mirror_disk_usage, mirror_tree, sync_mirror};
pub use notes::{ExtractWarning, Skipped, SkippedKind};
pub use pgzip::ParallelGzEncoder;
pub use read::{
    EntryInfo, EntryKind, Expected, VerifyReport, list_entries, read_first_member, read_member, sha256_file,
    verify_archive,
};
pub use write::{ArchiveSummary, LeadingFile, Root, WriteOptions, partial_path, write_archive};
