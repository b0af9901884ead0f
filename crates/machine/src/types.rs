//! The vocabulary of runs: what is started, what is asked, what is reported, what is journaled.
//!
//! # These types are the journal's wire format
//!
//! Events are stored with bincode, which writes an enum variant as its index in the declaration
//! and the fields of a variant or struct by position, without names. So the order of the variants
//! of every enum here that is stored ([`Event`], [`RunSpec`], [`Effect`], [`Outcome`],
//! [`Decision`], [`BackupKind`]; and [`State`] and [`RunKind`], which no record holds yet but which
//! follow the same rule), and the fields of every variant and struct inside them, are the on-disk
//! format of every journal ever written. Variants are only appended at the end; none is ever
//! reordered, removed or given new fields. A new fact travels in a new variant (as
//! [`Outcome::Archived`] beside [`Outcome::ArchiveWritten`]) or in a new journal table. See
//! docs/journal-format.md; `crates/journal/tests/golden_events.rs` pins the bytes of every variant.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Identifies a run within one project's journal. Ids increase monotonically; a backup made by a
/// run is catalogued under the same id.
pub type RunId = u64;

/// Milliseconds since the Unix epoch, UTC. Passed in by the caller: the machine never reads a clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Timestamp(pub i64);

/// The kinds of run: backup, upgrade, restore, rollback, prune (retention, of local backups or
/// of copies on remotes, journaled like the others), the two first-time kinds, and ship (a
/// backup's copy sent to a remote).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum RunKind {
    Backup,
    Upgrade,
    Restore,
    Rollback,
    Prune,
    /// A restore onto a host that lacks the project (`restore --from`).
    RestoreNew,
    /// An upgrade where nothing is deployed yet: no pre-upgrade backup.
    FirstDeploy,
    /// A copy of a recorded backup sent to a remote (`[[remote]]`): it never touches services.
    Ship,
}

impl RunKind {
    /// The lowercase name used in JSON output and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::Backup => "backup",
            RunKind::Upgrade => "upgrade",
            RunKind::Restore => "restore",
            RunKind::Rollback => "rollback",
            RunKind::Prune => "prune",
            RunKind::RestoreNew => "restore-new",
            RunKind::FirstDeploy => "first-deploy",
            RunKind::Ship => "ship",
        }
    }
}

impl fmt::Display for RunKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a backup was made, as recorded in the catalog.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum BackupKind {
    Manual,
    Auto,
    PreUpgrade,
}

impl BackupKind {
    /// The name used in JSON output: `manual`, `auto` or `pre-upgrade`.
    pub fn as_str(self) -> &'static str {
        match self {
            BackupKind::Manual => "manual",
            BackupKind::Auto => "auto",
            BackupKind::PreUpgrade => "pre-upgrade",
        }
    }
}

/// A backup already in the catalog, as a restore or rollback refers to it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct BackupRef {
    pub backup_id: u64,
    pub path: String,
    pub sha256: String,
    pub size_bytes: u64,
}

/// A validated service package, as an upgrade refers to it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct PackageRef {
    pub path: String,
    pub version: String,
    pub sha256: String,
}

/// What a run was asked to do. Fixed when the run starts and journaled in its `Started` event, so
/// recovery needs nothing but the journal.
///
/// The variant order is the journal's wire format (bincode writes the variant's index): append new
/// variants at the end, never reorder, remove or add fields. See docs/journal-format.md.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum RunSpec {
    /// Archive the project's data to `archive_path` (a name unique to this run).
    Backup { archive_path: String, backup_kind: BackupKind, note: Option<String> },
    /// Back up to `archive_path`, then deploy `package`; roll back if it does not come up healthy.
    Upgrade { archive_path: String, package: PackageRef },
    /// Put a backup's data back.
    Restore { backup: BackupRef },
    /// Put a backup's data and deployment files back (the pre-upgrade backup of an upgrade).
    Rollback { backup: BackupRef },
    /// Delete these backups, as the retention policy decided (planned, and their archives
    /// verified, before the run starts).
    Prune { deletions: Vec<BackupRef> },
    /// Bring a backup up on a host that lacks the project: create what `provision` lists, put the
    /// data in place, start the services it names. Rolling back removes exactly what it lists,
    /// nothing that existed before the run.
    RestoreNew { backup: BackupRef, provision: Provision },
    /// Deploy `package` where nothing is deployed yet (no container, no data): as an upgrade,
    /// without the pre-upgrade backup there is nothing to make.
    FirstDeploy { package: PackageRef },
    /// A backup in snapshot mode (docs/design.md, "Snapshot backups"): sync the mirror at
    /// `mirror` from the live data while the services run, stop them, sync again (the downtime),
    /// start them, then archive the mirror to `archive_path` and record it.
    SnapshotBackup { archive_path: String, backup_kind: BackupKind, note: Option<String>, mirror: String },
    /// Send a copy of a recorded backup to a remote, check it there and catalogue it
    /// (docs/design.md, "Off-host copies"). Services are never touched.
    Ship { backup: BackupRef, target: CopyTarget },
    /// Delete these copies from their remotes, as each remote's retention decided (planned
    /// before the run starts). A prune: past its point of no return from the start.
    PruneCopies { deletions: Vec<CopyDeletion> },
}

/// One copy a remote's retention deletes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct CopyDeletion {
    pub backup_id: u64,
    pub target: CopyTarget,
}

/// Where a shipping run puts its copy: the remote's name in `lifeboat.toml`, its URL as the run
/// began (so recovery aborts on the store the upload went to), and the copy's key there, which
/// ends in `.age` when the copy is encrypted.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct CopyTarget {
    pub remote: String,
    pub url: String,
    pub key: String,
}

/// What an upload reports of the copy it stored, checked against the store and catalogued.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct CopyFacts {
    /// Lowercase hex SHA-256 of the bytes stored (the age file when encrypted).
    pub stored_sha256: String,
    pub stored_bytes: u64,
    /// `age` or `none`.
    pub encryption: String,
}

/// What a restore onto a new host creates, decided (and checked absent) before the run starts,
/// so that a rollback removes exactly this and never something that was there before.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Provision {
    /// Named volumes to create, none of which existed when the run started.
    pub volumes: Vec<NewVolume>,
    /// Deployment files to write from the archive, relative to the project directory; none
    /// existed when the run started.
    pub files: Vec<String>,
    /// Directories it creates below the project directory (the data paths), relative; none existed.
    pub dirs: Vec<String>,
    /// The services to bring up: those that were running when the backup was made.
    pub services: Vec<String>,
}

/// A named volume as a restore creates it again.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct NewVolume {
    /// Its Docker name.
    pub name: String,
    pub driver: String,
    pub driver_options: Vec<(String, String)>,
    pub labels: Vec<(String, String)>,
}

impl RunSpec {
    pub fn kind(&self) -> RunKind {
        match self {
            RunSpec::Backup { .. } => RunKind::Backup,
            RunSpec::Upgrade { .. } => RunKind::Upgrade,
            RunSpec::Restore { .. } => RunKind::Restore,
            RunSpec::Rollback { .. } => RunKind::Rollback,
            RunSpec::Prune { .. } => RunKind::Prune,
            RunSpec::RestoreNew { .. } => RunKind::RestoreNew,
            RunSpec::FirstDeploy { .. } => RunKind::FirstDeploy,
            RunSpec::SnapshotBackup { .. } => RunKind::Backup,
            RunSpec::Ship { .. } => RunKind::Ship,
            RunSpec::PruneCopies { .. } => RunKind::Prune,
        }
    }
}

/// The states of a run (ARCHITECTURE.md). Which of them a run passes through depends on its kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum State {
    Checking,
    Stopping,
    Archiving,
    Recording,
    Deploying,
    Restoring,
    Restarting,
    Verifying,
    Pruning,
    RollingBack,
    Completed,
    RolledBack,
    Failed,
    /// A snapshot backup syncs its mirror with the services running.
    Presyncing,
    /// A snapshot backup syncs its mirror with the services stopped: the mirror becomes the
    /// consistent snapshot.
    Snapshotting,
    /// A shipping run sends its copy to the remote.
    Shipping,
}

impl State {
    pub fn is_terminal(self) -> bool {
        matches!(self, State::Completed | State::RolledBack | State::Failed)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Checking => "checking",
            State::Stopping => "stopping",
            State::Archiving => "archiving",
            State::Recording => "recording",
            State::Deploying => "deploying",
            State::Restoring => "restoring",
            State::Restarting => "restarting",
            State::Verifying => "verifying",
            State::Pruning => "pruning",
            State::RollingBack => "rolling_back",
            State::Completed => "completed",
            State::RolledBack => "rolled_back",
            State::Failed => "failed",
            State::Presyncing => "presyncing",
            State::Snapshotting => "snapshotting",
            State::Shipping => "shipping",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The facts a completed archive write reports, recorded in the catalog and checked again before
/// the catalog entry is written.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct ArchiveFacts {
    pub path: String,
    pub sha256: String,
    pub size_bytes: u64,
    pub file_count: u64,
    pub entry_count: u64,
    pub content_bytes: u64,
}

/// What a completed archive write reports beyond [`ArchiveFacts`]: how much the files hold and
/// how much of it was stored, and what was left out. It came after the first journal format, so
/// it travels in its own outcome ([`Outcome::Archived`]) and journals written before it lack it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct ArchiveDetails {
    /// The regular files' sizes added up, holes of sparse files included.
    pub apparent_bytes: u64,
    /// The file data actually stored: holes left out.
    pub stored_bytes: u64,
    /// Paths under the roots that were not archived (sockets), with why.
    pub skipped: Vec<SkippedPath>,
}

/// A path a backup left out, and why (`socket`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct SkippedPath {
    pub path: String,
    pub kind: String,
}

/// A side effect the machine asks the executor to carry out. Every effect is idempotent or
/// checkable, so carrying it out again after a crash is safe; the doc line of each variant says how.
///
/// Journaled in every `Intent` event, so the variant order is the journal's wire format (bincode
/// writes the variant's index): append new variants at the end, never reorder, remove or add
/// fields. See docs/journal-format.md.
#[must_use = "an effect does nothing until the executor carries it out"]
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Effect {
    /// Re-hash and test-read a catalogued archive before anything is touched. Read-only.
    VerifyArchive { backup: BackupRef },
    /// Check preconditions and report which services are running now. Read-only.
    Inspect,
    /// Stop these services in reverse dependency order. Stopping a stopped service is a no-op;
    /// stopping one whose stop is already in progress waits until it has exited.
    StopServices { services: Vec<String> },
    /// Write the archive to `path.partial`, fsync, rename to `path`, fsync the directory. A rerun
    /// overwrites the partial file.
    WriteArchive { path: String },
    /// Check the archive still matches `archive`, then insert the catalog entry keyed by the run
    /// id. Inserting the same entry again is a no-op.
    RecordBackup { archive: ArchiveFacts, backup_kind: BackupKind, note: Option<String> },
    /// Remove this run's catalog entry if there is one, then its archive and `.partial` file, in
    /// that order, so a crash never leaves a catalog entry without its file.
    DiscardArchive { path: String },
    /// Stage the package's deployment files and images, then swap the files in by rename, keeping
    /// the old ones aside. A rerun finds the swap done, or redoes it from the staged copy.
    Deploy { package: PackageRef },
    /// Start these services in dependency order with `docker start` and wait until each is
    /// running and, where it has a healthcheck, healthy. Starting a running service is a no-op,
    /// but a container still on its way down from a stop is not running: it is waited out and
    /// started again.
    StartServices { services: Vec<String> },
    /// Run the compose command's `up -d` for these services (all when `None`) and wait until they
    /// are up. Compose converges, so a rerun is safe.
    ComposeUp { services: Option<Vec<String>> },
    /// Stop every container of the project. Idempotent.
    StopStack,
    /// Check these services (all when `None`) are running and healthy within the start timeout.
    /// Read-only.
    VerifyServices { services: Option<Vec<String>> },
    /// Record the deployed version and delete the deployment files kept aside. Idempotent.
    CommitDeploy { version: String },
    /// Put the deployment files kept aside by `Deploy` back in place. Idempotent: once they are
    /// back, there is nothing aside.
    RestoreDeployment,
    /// Extract a backup into staging, move the current data (and, with `deployment`, the
    /// deployment files) aside and swap the staged copy in. A rerun finds the swap done or redoes it.
    RestoreData { backup: BackupRef, deployment: bool },
    /// Put the data moved aside by `RestoreData` back. Idempotent.
    RevertData,
    /// Delete the data moved aside by `RestoreData`, now that its replacement is verified.
    CommitData,
    /// Remove a backup's catalog entry, then its archive, in that order, so a crash never leaves
    /// an entry without its file. Either already gone is fine.
    DeleteBackup { backup: BackupRef },
    /// Create the volumes and write the deployment files `provision` lists (from the archive).
    /// A volume already there with the same labels, or a file already written with the archive's
    /// content, is left as it is, so a rerun is safe.
    Provision { backup: BackupRef, provision: Provision },
    /// Remove the project's containers and networks, then the volumes, files and directories
    /// `provision` lists. What is already gone is skipped, so a rerun is safe.
    Unprovision { provision: Provision },
    /// Run a hook: a host command, or a command inside a service's running container (Engine API
    /// exec), bounded by its timeout. Not idempotent in general: recovery never carries out an
    /// interrupted hook again unless it is marked idempotent (docs/design.md, "Hooks").
    RunHook { hook: Hook },
    /// Make the mirror at `mirror` an exact copy of the backup's roots: with `stopped`, the
    /// services are stopped and the mirror becomes the consistent snapshot the archive is written
    /// from. Idempotent: a rerun copies what differs, whatever a crash left half done.
    SyncMirror { mirror: String, stopped: bool },
    /// Open a multipart upload for the copy's key (for a directory remote, its `.partial` file).
    /// Never carried out again: a ship run interrupted before its record rolls back. An upload
    /// the store opened but whose id never reached the journal (a crash, a lost answer) is found
    /// by its key and aborted by the rollback's `AbortUpload` (docs/design.md, "Off-host
    /// copies"). A ship run is for a backup with no copy catalogued on that remote yet: the key
    /// is that copy's, and this run's upload would replace its object.
    BeginUpload { target: CopyTarget },
    /// Stream the archive into the upload `upload_id` in parts, checking on the way that it is
    /// still the catalogued archive (size, sha256), complete it, then read the stored object's
    /// size and metadata back. Never carried out again: interrupted, the run rolls back.
    UploadCopy { backup: BackupRef, target: CopyTarget, upload_id: String },
    /// Check the stored copy once more (size, metadata), then insert it into the journal's copies
    /// table under (backup, remote) (`Journal::record_copy`; the same entry again is a no-op).
    /// Its success is the run's point of no return, and its last step.
    RecordCopy { backup_id: u64, target: CopyTarget, copy: CopyFacts },
    /// Abort the upload `upload_id` (`None`: its begin was interrupted or failed and the id is
    /// unknown), then every other open upload of the key, which the store lists by key. An
    /// upload already completed or aborted is fine. Settles before `DeleteCopy`: a
    /// completion the store was asked for may land after the client gave up on it, and once
    /// aborted it either never lands or has landed already, for the delete to remove.
    AbortUpload { target: CopyTarget, upload_id: Option<String> },
    /// Remove this run's entry for the copy from the copies table if there is one, then the
    /// object, in that order, so a crash never leaves a catalogued copy without its object; the
    /// object stays if the table holds another run's copy under (backup, remote). Either already
    /// gone is fine.
    DeleteCopy { backup_id: u64, target: CopyTarget },
    /// Remove the copy's row from the copies table and note it pruned, in one transaction
    /// (`Journal::prune_copy`: the backup is never pending on that remote again), then delete
    /// the object. In that order, so a crash never leaves a catalogued copy without its object:
    /// between the two, the object is one nothing catalogues, which the step carried out again
    /// deletes. Either already gone is fine (a second prune of the pair changes nothing).
    PruneCopy { backup_id: u64, target: CopyTarget },
}

impl Effect {
    /// A short lowercase name for timelines and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Effect::VerifyArchive { .. } => "verify_archive",
            Effect::Inspect => "inspect",
            Effect::StopServices { .. } => "stop_services",
            Effect::WriteArchive { .. } => "write_archive",
            Effect::RecordBackup { .. } => "record_backup",
            Effect::DiscardArchive { .. } => "discard_archive",
            Effect::Deploy { .. } => "deploy",
            Effect::StartServices { .. } => "start_services",
            Effect::ComposeUp { .. } => "compose_up",
            Effect::StopStack => "stop_stack",
            Effect::VerifyServices { .. } => "verify_services",
            Effect::CommitDeploy { .. } => "commit_deploy",
            Effect::RestoreDeployment => "restore_deployment",
            Effect::RestoreData { .. } => "restore_data",
            Effect::RevertData => "revert_data",
            Effect::CommitData => "commit_data",
            Effect::DeleteBackup { .. } => "delete_backup",
            Effect::Provision { .. } => "provision",
            Effect::Unprovision { .. } => "unprovision",
            Effect::RunHook { .. } => "run_hook",
            Effect::SyncMirror { .. } => "sync_mirror",
            Effect::BeginUpload { .. } => "begin_upload",
            Effect::UploadCopy { .. } => "upload_copy",
            Effect::RecordCopy { .. } => "record_copy",
            Effect::AbortUpload { .. } => "abort_upload",
            Effect::DeleteCopy { .. } => "delete_copy",
            Effect::PruneCopy { .. } => "prune_copy",
        }
    }
}

/// What the executor reports after carrying out an effect.
///
/// Journaled in every `Outcome` event, so the variant order is the journal's wire format (bincode
/// writes the variant's index): append new variants at the end, never reorder, remove or add
/// fields; a new report is a new variant, as `Archived` beside `ArchiveWritten`. See
/// docs/journal-format.md.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Outcome {
    /// The effect succeeded and has nothing to report.
    Done,
    /// `Inspect` succeeded: these services were running, in stop order.
    Inspected { running: Vec<String> },
    /// `WriteArchive` succeeded: the archive is complete, fsynced and renamed into place. What
    /// journals written before [`Outcome::Archived`] existed hold; still accepted.
    ArchiveWritten(ArchiveFacts),
    /// The effect failed; `error` says what happened, for the operator.
    Failed { error: String },
    /// `StartServices` or `ComposeUp` succeeded: these services are up, listed in the order they
    /// were brought up (dependencies first). Journals written before this outcome existed say
    /// `Done` for those effects, which is still accepted.
    Started { services: Vec<String> },
    /// `WriteArchive` succeeded, with what the archive holds beyond its facts.
    Archived { facts: ArchiveFacts, details: ArchiveDetails },
    /// `Inspect` succeeded: these services were running, in stop order, and these hooks are the
    /// run's (from `lifeboat.toml` and the running services' compose labels), in the order they
    /// run. Reported only when there are hooks; journals without hooks say `Inspected`.
    InspectedWithHooks { running: Vec<String>, hooks: Vec<Hook> },
    /// `RunHook` ran the hook to its end: `exit_code` (124 when it was killed at its timeout, 127
    /// when it could not be started) and the last lines of its output. A `before_*` hook that
    /// exits non-zero fails its step; an `after_*` one is reported and the run goes on.
    HookRan { exit_code: i32, output_tail: String },
    /// `SyncMirror` made the mirror equal to the roots: the entries it walked, the files it
    /// copied (and their bytes), the entries it removed.
    MirrorSynced { entries: u64, files_copied: u64, bytes_copied: u64, removed: u64 },
    /// `BeginUpload` opened the upload with this id.
    UploadBegun { upload_id: String },
    /// `UploadCopy` completed the upload and the store holds this copy.
    CopyUploaded(CopyFacts),
}

impl Outcome {
    pub fn is_failure(&self) -> bool {
        matches!(self, Outcome::Failed { .. })
    }
}

/// When a hook runs. Journaled inside [`Hook`]: append new variants at the end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum HookPoint {
    BeforeBackup,
    AfterBackup,
    BeforeUpgrade,
    AfterUpgrade,
    BeforeRestore,
    AfterRestore,
    /// Run when a run fails: as the last settling step of a run that rolls back or fails. Known
    /// from the run's start (`Event::StartedWith`), so a run that fails at its first step runs it.
    OnFailure,
}

impl HookPoint {
    /// Every point, in the order `lifeboat.toml` documents them.
    pub const ALL: [HookPoint; 7] = [
        HookPoint::BeforeBackup,
        HookPoint::AfterBackup,
        HookPoint::BeforeUpgrade,
        HookPoint::AfterUpgrade,
        HookPoint::BeforeRestore,
        HookPoint::AfterRestore,
        HookPoint::OnFailure,
    ];

    /// The `lifeboat.toml` key: `before_backup`, ... (the compose label is `lifeboat.before-backup`).
    pub fn as_str(self) -> &'static str {
        match self {
            HookPoint::BeforeBackup => "before_backup",
            HookPoint::AfterBackup => "after_backup",
            HookPoint::BeforeUpgrade => "before_upgrade",
            HookPoint::AfterUpgrade => "after_upgrade",
            HookPoint::BeforeRestore => "before_restore",
            HookPoint::AfterRestore => "after_restore",
            HookPoint::OnFailure => "on_failure",
        }
    }

    /// A `before_*` hook runs before anything is stopped; its failure ends the run.
    pub fn is_before(self) -> bool {
        matches!(self, HookPoint::BeforeBackup | HookPoint::BeforeUpgrade | HookPoint::BeforeRestore)
    }
}

/// A hook as a run carries it out, fixed when `Inspect` reports it (so recovery needs only the
/// journal). Journaled: fields are never added or reordered.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Hook {
    pub point: HookPoint,
    /// `None`: a host command (`[hooks]` in `lifeboat.toml`, run by `sh -c`); `Some`: run inside
    /// this service's container (its compose label), through the Engine API's exec.
    pub service: Option<String>,
    pub command: String,
    /// Killed after this many seconds.
    pub timeout_secs: u64,
    /// Safe to run twice: recovery carries an interrupted idempotent hook out again, any other
    /// one never.
    pub idempotent: bool,
}

impl Hook {
    /// `before_backup (host)` or `before_backup (db)`.
    pub fn label(&self) -> String {
        format!("{} ({})", self.point.as_str(), self.service.as_deref().unwrap_or("host"))
    }
}

/// What recovery decided for an interrupted run. Journaled before recovery acts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Decision {
    /// The run had passed its point of no return: finish its remaining steps.
    Resume,
    /// The run had not: undo what it did and end `RolledBack`.
    RollBack,
    /// The run was already rolling back: carry on with the remaining compensation steps.
    ContinueRollBack,
    /// The run had failed past its point of no return and was finishing (say, retrying the start
    /// of its services after a recorded backup): carry on finishing.
    ContinueFinishing,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Resume => "resume",
            Decision::RollBack => "roll_back",
            Decision::ContinueRollBack => "continue_roll_back",
            Decision::ContinueFinishing => "continue_finishing",
        }
    }
}

/// One journal record of a run. Events are appended, never modified or deleted.
///
/// The variant order is the journal's wire format (bincode writes the variant's index, then the
/// fields by position): append new variants at the end, never reorder, remove or add fields. See
/// docs/journal-format.md.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Event {
    /// The run began with this spec. Always the first event of a run.
    Started { at: Timestamp, spec: RunSpec },
    /// The executor is about to carry out `effect`. Written (durably) before the effect.
    Intent { at: Timestamp, effect: Effect },
    /// The effect of the last `Intent` ended with `outcome`. Written after the effect.
    Outcome { at: Timestamp, outcome: Outcome },
    /// `lifeboat recover` took over the interrupted run with this decision.
    Recovering { at: Timestamp, decision: Decision },
    /// The operator asked the run to stop (`reason` names how, say `SIGINT`) between two effects,
    /// before its point of no return: the run settles as if its next step had failed.
    Cancelled { at: Timestamp, reason: String },
    /// As `Started`, for a run with `on_failure` hooks: the host commands it runs, as its last
    /// settling steps, should it roll back or fail. Runs without them are journaled `Started`.
    StartedWith { at: Timestamp, spec: RunSpec, on_failure: Vec<Hook> },
}

impl Event {
    pub fn at(&self) -> Timestamp {
        match self {
            Event::Started { at, .. }
            | Event::Intent { at, .. }
            | Event::Outcome { at, .. }
            | Event::Recovering { at, .. }
            | Event::Cancelled { at, .. }
            | Event::StartedWith { at, .. } => *at,
        }
    }

    /// The spec of a run's first event, `None` for the others.
    pub fn started_spec(&self) -> Option<&RunSpec> {
        match self {
            Event::Started { spec, .. } | Event::StartedWith { spec, .. } => Some(spec),
            _ => None,
        }
    }

    /// A short lowercase name for timelines: `started`, `intent`, `outcome`, `recovering`,
    /// `cancelled`.
    pub fn name(&self) -> &'static str {
        match self {
            Event::Started { .. } | Event::StartedWith { .. } => "started",
            Event::Intent { .. } => "intent",
            Event::Outcome { .. } => "outcome",
            Event::Recovering { .. } => "recovering",
            Event::Cancelled { .. } => "cancelled",
        }
    }
}
