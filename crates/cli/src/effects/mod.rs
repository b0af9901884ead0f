//! What the executor does for each effect, one file per concern. Each effect checks the state it
//! finds and does only what is left, so carrying it out again after a crash is safe
//! (ARCHITECTURE.md, "Recovery rules").
//!
//! - `services`: containers listed, stopped, started, waited for (`Inspect`, `StopServices`,
//!   `StopStack`, `StartServices`, `ComposeUp`, `VerifyServices`);
//! - `backups`: archives written, recorded, discarded, deleted, verified (`WriteArchive`,
//!   `RecordBackup`, `DiscardArchive`, `DeleteBackup`, `VerifyArchive`);
//! - `data_swap`: a backup's data swapped in, kept aside until commit (`RestoreData`,
//!   `RevertData`, `CommitData`);
//! - `deploy_swap`: deployment files swapped in, kept aside until commit (`Deploy`,
//!   `RestoreDeployment`, `CommitDeploy`, and a rollback's deployment half);
//! - `provision`: what a restore onto a new host creates, and removes on rollback
//!   (`Provision`, `Unprovision`).
//! - `hooks`: which hooks a backup has (reported by `Inspect`) and `RunHook`;
//! - `copies`: a backup's copy on a remote (`BeginUpload`, `UploadCopy`, `RecordCopy`,
//!   `AbortUpload`, `DeleteCopy`, and a remote's retention: `PruneCopy`);
//! - `mirror`: snapshot mode's copy of the data (`SyncMirror`, and what its `WriteArchive` reads).

pub mod backups;
pub mod copies;
pub mod data_swap;
pub mod deploy_swap;
pub mod hooks;
pub mod mirror;
pub mod provision;
pub mod services;
