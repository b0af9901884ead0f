//! Command-line arguments (clap). Only parsing lives here; commands validate what they receive.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

const AFTER_HELP: &str = "\
Exit codes:
  0  success
  1  the operation failed and was rolled back (services as before)
  2  usage or configuration error
  3  another lifeboat run holds the project lock
  4  an interrupted run needs 'lifeboat recover' first
  5  integrity error (checksum mismatch, corrupt journal or archive)

Every run is journaled in DIR/.lifeboat/journal.redb before and after each step.
After a crash, 'lifeboat recover' finishes or rolls back what was interrupted.";

/// Crash-safe backups and upgrades of a Docker Compose deployment.
#[derive(Debug, Parser)]
#[command(name = "lifeboat", version, after_help = AFTER_HELP, propagate_version = true)]
pub struct Cli {
    /// Project directory: holds lifeboat.toml and the .lifeboat/ state directory.
    #[arg(short = 'C', long = "dir", global = true, default_value = ".", value_name = "DIR")]
    pub dir: PathBuf,

    /// Print one JSON document on stdout (logs stay on stderr).
    #[arg(long, global = true)]
    pub json: bool,

    /// More log output on stderr (-v: info, -vv: debug). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Only errors on stderr.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write lifeboat.toml with defaults in the project directory.
    ///
    /// Also creates the state directory .lifeboat/ and the backup directory, mode 0700 whatever
    /// the umask. Every key of lifeboat.toml is commented in the file it writes.
    Init(InitArgs),
    /// Show the project's services, last backup and any interrupted run.
    Status,
    /// Back up now: stop the running services, archive their data, restart them.
    ///
    /// Only the services that were running are stopped and started again. The archive is written
    /// to a .partial file, fsynced and renamed, and recorded only once complete.
    ///
    /// Archives are private: mode 0600, or 0640 for the group backup.group names in lifeboat.toml.
    /// backup.max_bytes and backup.max_files (no limit by default) bound what one archive may
    /// hold. A backup dir other users can write without the sticky bit is refused (exit 2).
    Backup(BackupArgs),
    /// Scheduled backups.
    #[command(subcommand)]
    AutoBackup(AutoBackupCommand),
    /// List the backups in the catalog, or with --remote what a remote holds.
    List(ListArgs),
    /// Re-hash and test-read archives, or with --remote download and check their copies.
    Verify(VerifyArgs),
    /// Ship every pending copy to the remotes ([[remote]] in lifeboat.toml).
    ///
    /// A backup ships by itself once it is recorded and its services are back; a remote that was
    /// down or refused leaves its copy pending ('lifeboat status' counts them), and push ships
    /// them, oldest first. Each copy is a journaled run: streamed in parts, checked on the remote
    /// (size, sha256 metadata), then catalogued. Exit 2 when a remote refuses its settings or
    /// credentials, 1 when a copy stays pending.
    Push(PushArgs),
    /// Put a backup's data back: verify the archive, stop, swap the data, restart, verify.
    ///
    /// The current data is moved aside, not deleted, until the restored services are verified
    /// up; on any failure it is put back. The roots restored are those the archive's manifest
    /// lists, whatever lifeboat.toml says now (a difference is named first). With --from ARCHIVE,
    /// restores onto a host that lacks the project. Asks on a terminal unless --yes.
    Restore(RestoreArgs),
    /// Deploy a service package: back up, swap the files in, compose up, verify; roll back on failure.
    ///
    /// The package is checked whole before anything is touched. A pre-upgrade backup (data and
    /// the deployment files the package replaces) is made first; if the new version does not come
    /// up healthy, the old files, data and services are put back. Asks on a terminal unless --yes.
    Upgrade(UpgradeArgs),
    /// Go back to the pre-upgrade backup of the last completed upgrade (or BACKUP_ID): its data and
    /// deployment files, as a journaled run. Asks on a terminal unless --yes.
    Rollback(RollbackArgs),
    /// Build service packages.
    #[command(subcommand)]
    Package(PackageCommand),
    /// Apply retention: delete backups older than retention_days beyond the newest keep_last.
    ///
    /// Never deletes the newest verified backup, never goes below keep_last, never deletes the
    /// pre-upgrade backup of the last completed upgrade. Unknown files are reported, not deleted.
    Prune(PruneArgs),
    /// Print a shell completion script: lifeboat completions bash > /etc/bash_completion.d/lifeboat
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) on stdout: lifeboat man | man -l -
    Man,
    /// Finish or roll back every interrupted run, as its journal dictates.
    ///
    /// A backup interrupted before its archive was recorded deletes the partial archive and
    /// restarts the services it stopped; one interrupted after recording finishes restarting.
    /// Running recover again changes nothing.
    Recover,
    /// Read the journal.
    #[command(subcommand)]
    Journal(JournalCommand),
    /// Catalog archives found on disk (a new host, a lost journal), from their manifests.
    ///
    /// Each archive is read through and checked against its NAME.sha256 file (when there is one)
    /// and its manifest before it is catalogued under the id it was made with; an archive already
    /// in the catalog changes nothing. Then list, verify, prune, restore ID and rollback work on it.
    Import(ImportArgs),
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Compose project name (default: the directory's name).
    #[arg(long)]
    pub project: Option<String>,
    /// Compose file, relative to the project directory.
    #[arg(long, default_value = "docker-compose.yml")]
    pub compose_file: String,
    /// Overwrite an existing lifeboat.toml.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup to restore (see 'lifeboat list').
    #[arg(required_unless_present = "from", conflicts_with = "from")]
    pub backup_id: Option<u64>,
    /// Restore onto a host that lacks the project, from this archive alone: into DIR (-C), empty
    /// or missing. Writes the deployment files, creates the named volumes, puts the data in
    /// place, brings up the services that were running and verifies them; a failure removes
    /// what it created. Checks the archive against its NAME.sha256 file when there is one.
    ///
    /// ARCHIVE may also be a copy on a remote: s3://BUCKET/PREFIX/KEY (with --endpoint, --region
    /// and --path-style for a store other than AWS, credentials from AWS_ACCESS_KEY_ID and
    /// AWS_SECRET_ACCESS_KEY or --credentials-file) or file:///DIR/KEY. It is downloaded into
    /// DIR/.lifeboat/fetched/, decrypted with --identity when it is an .age copy, and checked
    /// against the sha256 stored with it before anything else happens.
    #[arg(long, value_name = "ARCHIVE")]
    pub from: Option<PathBuf>,
    /// With --from s3://...: the S3 endpoint (http://HOST:PORT); omitted for AWS.
    #[arg(long, value_name = "URL", requires = "from")]
    pub endpoint: Option<String>,
    /// With --from s3://...: the S3 region.
    #[arg(long, requires = "from")]
    pub region: Option<String>,
    /// With --from s3://...: path-style requests, what self-hosted stores want.
    #[arg(long, requires = "from")]
    pub path_style: bool,
    /// The age identity file (owner-only) that opens an encrypted copy: with --from a remote
    /// copy, or when backup ID's archive is gone from this host and a remote holds its copy (the
    /// restore fetches it first; default: the remote's identity_file).
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// With --from s3://...: a file with AWS_ACCESS_KEY_ID=... and AWS_SECRET_ACCESS_KEY=...
    /// (owner-only), instead of the environment.
    #[arg(long, value_name = "FILE", requires = "from")]
    pub credentials_file: Option<PathBuf>,
    /// With --from: restore into this existing volume, replacing its data (kept aside until the
    /// restore is verified). Without it, an existing volume of the same name is refused.
    #[arg(long, value_name = "VOLUME", requires = "from")]
    pub replace: Vec<String>,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Archives to catalog (lifeboat .tar.gz or .tar.zst files with a manifest).
    #[arg(required_unless_present = "remote", conflicts_with = "remote", value_name = "ARCHIVE")]
    pub paths: Vec<PathBuf>,
    /// Catalog every copy on this remote instead, from the manifest beside each (no copy is
    /// downloaded: 'lifeboat restore ID' fetches the one it restores). For a new host: write a
    /// lifeboat.toml with the project's name and its [[remote]], then import.
    #[arg(long, value_name = "NAME")]
    pub remote: Option<String>,
    /// With --remote: the age identity file that opens an encrypted remote's manifests.
    #[arg(long, value_name = "FILE", requires = "remote")]
    pub identity: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct UpgradeArgs {
    /// The service package (.tar.gz with lifeboat-package.toml, deploy/, images/).
    pub package: PathBuf,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The pre-upgrade backup to go back to (default: that of the last completed upgrade).
    pub backup_id: Option<u64>,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,
}

#[derive(Debug, Subcommand)]
pub enum PackageCommand {
    /// Write DIR's manifest (every file of deploy/ and images/ with its sha256) and archive it.
    #[command(disable_version_flag = true)]
    Build {
        /// The directory holding deploy/ and, optionally, images/*.tar.
        dir: PathBuf,
        /// The package file to write.
        #[arg(short = 'o', long = "output", value_name = "PKG.tar.gz")]
        output: PathBuf,
        /// The version the package deploys (default: that of DIR/lifeboat-package.toml).
        #[arg(long = "version", id = "package_version", value_name = "VERSION")]
        version: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Show what would be deleted, delete nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// A note stored with the backup in the catalog.
    #[arg(long)]
    pub note: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum AutoBackupCommand {
    /// One scheduled backup now (recorded as kind "auto").
    Run,
    /// Show whether scheduled backups are enabled, the schedule and the last backup.
    Status,
    /// Enable scheduled backups.
    Enable,
    /// Disable scheduled backups.
    Disable,
    /// Run scheduled backups in the foreground (for systemd or a container) until SIGTERM.
    Daemon,
    /// Set the schedule: a 5-field cron expression, e.g. "0 2 * * *" for 02:00 every day.
    Schedule {
        /// minute hour day-of-month month day-of-week
        cron: String,
    },
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The backup to verify (see 'lifeboat list').
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub backup_id: Option<u64>,
    /// Verify every backup in the catalog (with --remote: every copy on that remote).
    #[arg(long)]
    pub all: bool,
    /// Check the copies on this remote instead: download, decrypt, compare with the catalog's
    /// sha256, read the archive through. Exit 5 naming any copy that does not match.
    #[arg(long, value_name = "NAME")]
    pub remote: Option<String>,
    /// The age identity file that opens an encrypted remote's copies (default: the remote's
    /// identity_file). It must be readable by its owner only.
    #[arg(long, value_name = "FILE", requires = "remote")]
    pub identity: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// List what this remote holds beside the catalog's copies: ok, missing, size-differs, or
    /// unknown (not in this catalog).
    #[arg(long, value_name = "NAME")]
    pub remote: Option<String>,
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// Ship only to this remote.
    #[arg(long, value_name = "NAME")]
    pub remote: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum JournalCommand {
    /// One line per run: kind, start, end, state, outcome.
    List,
    /// The timeline of one run: every event with its state, time and detail.
    Show {
        /// The run to show (see 'lifeboat journal list').
        run_id: u64,
    },
    /// Replay a run's events through the state machine and print the state it reaches.
    Replay {
        /// The run to replay.
        run_id: u64,
    },
    /// Check every run: sequence gaps, undecodable records, events the machine rejects.
    Verify,
    /// Start a new journal when the current one cannot be opened, and catalog the archives of
    /// backup.dir into it.
    ///
    /// The broken journal is moved aside to .lifeboat/journal.redb.broken-TIMESTAMP, never
    /// deleted (its runs are not carried over). Refused while the journal opens: use 'lifeboat
    /// import' to add archives to a working one.
    Rebuild,
}
