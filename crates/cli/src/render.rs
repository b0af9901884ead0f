//! Human units and one-line descriptions, shared by every command's output.

use chrono::{DateTime, Local, TimeZone, Utc};
use lifeboat_machine::{Effect, Event, Outcome, RunSpec, Timestamp};

/// Now, as the machine's timestamp. The only clock read in lifeboat's runs.
pub fn now() -> Timestamp {
    Timestamp(Utc::now().timestamp_millis())
}

pub fn to_datetime(t: Timestamp) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(t.0).single().unwrap_or_default()
}

/// RFC 3339 in UTC with milliseconds, for JSON.
pub fn rfc3339(t: Timestamp) -> String {
    to_datetime(t).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Local time to the second, for people.
pub fn local_time(t: Timestamp) -> String {
    to_datetime(t).with_timezone(&Local).format("%Y-%m-%d %H:%M:%S").to_string()
}

/// `1.5 KiB`, `182.3 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

/// `850 ms`, `4.2 s`, `3 min 12 s`, `2 h 05 min`.
pub fn duration_ms(ms: i64) -> String {
    let ms = ms.max(0);
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{} min {:02} s", ms / 60_000, (ms / 1000) % 60),
        _ => format!("{} h {:02} min", ms / 3_600_000, (ms / 60_000) % 60),
    }
}

/// The services of a list, comma-separated, or `none`.
pub fn list(items: &[String]) -> String {
    if items.is_empty() { "none".into() } else { items.join(", ") }
}

/// What a run was asked to do, from its spec.
fn spec_detail(spec: &RunSpec) -> String {
    match spec {
        RunSpec::Backup { archive_path, backup_kind, note } => {
            let note = note.as_deref().map(|n| format!(", note {n:?}")).unwrap_or_default();
            format!("{} backup to {archive_path}{note}", backup_kind.as_str())
        }
        RunSpec::SnapshotBackup { archive_path, backup_kind, note, mirror } => {
            let note = note.as_deref().map(|n| format!(", note {n:?}")).unwrap_or_default();
            format!("{} snapshot backup to {archive_path} through the mirror {mirror}{note}", backup_kind.as_str())
        }
        RunSpec::Upgrade { archive_path, package } => {
            format!("upgrade to {} from {}, pre-upgrade backup to {archive_path}", package.version, package.path)
        }
        RunSpec::Restore { backup } => format!("restore of backup {} ({})", backup.backup_id, backup.path),
        RunSpec::Rollback { backup } => format!("rollback to backup {} ({})", backup.backup_id, backup.path),
        RunSpec::Prune { deletions } => {
            let ids: Vec<String> = deletions.iter().map(|b| b.backup_id.to_string()).collect();
            format!("prune of backup(s) {}", ids.join(", "))
        }
        RunSpec::FirstDeploy { package } => {
            format!("first deployment of version {} from {} (nothing to back up)", package.version, package.path)
        }
        RunSpec::RestoreNew { backup, provision } => format!(
            "restore onto a new host from {} (backup {}): creates {}",
            backup.path,
            backup.backup_id,
            provision_summary(provision)
        ),
        RunSpec::PruneCopies { deletions } => {
            let copies: Vec<String> =
                deletions.iter().map(|d| format!("backup {} on {}", d.backup_id, d.target.remote)).collect();
            format!("prune of the copies of {}", copies.join(", "))
        }
        RunSpec::Ship { backup, target } => {
            format!(
                "copy of backup {} to remote {} as {} ({})",
                backup.backup_id, target.remote, target.key, target.url
            )
        }
    }
}

/// One line saying what an event was about, for `journal show`.
pub fn event_detail(event: &Event) -> String {
    match event {
        Event::Started { spec, .. } => spec_detail(spec),
        Event::StartedWith { spec, on_failure, .. } => {
            let hooks: Vec<String> = on_failure.iter().map(|h| h.label()).collect();
            format!("{}; if it fails: {}", spec_detail(spec), hooks.join(", "))
        }
        Event::Intent { effect, .. } => effect_detail(effect),
        Event::Outcome { outcome, .. } => match outcome {
            Outcome::Done => "done".into(),
            Outcome::Inspected { running } => format!("running: {}", list(running)),
            Outcome::ArchiveWritten(facts) => format!(
                "archive written: {}, {} files, sha256 {}",
                bytes(facts.size_bytes),
                facts.file_count,
                short_sha(&facts.sha256)
            ),
            Outcome::Failed { error } => format!("FAILED: {error}"),
            Outcome::Started { services } => format!("up, in this order: {}", list(services)),
            Outcome::Archived { facts, details } => {
                let sparse = if details.stored_bytes < details.apparent_bytes {
                    format!(" ({} apparent, {} stored)", bytes(details.apparent_bytes), bytes(details.stored_bytes))
                } else {
                    String::new()
                };
                let skipped: Vec<String> = details.skipped.iter().map(|s| format!("{} ({})", s.path, s.kind)).collect();
                let skipped =
                    if skipped.is_empty() { String::new() } else { format!(", skipped {}", skipped.join(", ")) };
                format!(
                    "archive written: {}, {} files{sparse}{skipped}, sha256 {}",
                    bytes(facts.size_bytes),
                    facts.file_count,
                    short_sha(&facts.sha256)
                )
            }
            Outcome::InspectedWithHooks { running, hooks } => {
                let hooks: Vec<String> = hooks.iter().map(|h| h.label()).collect();
                format!("running: {}; hooks: {}", list(running), hooks.join(", "))
            }
            Outcome::HookRan { exit_code, output_tail } => {
                let last = output_tail.lines().last().unwrap_or_default();
                let verdict =
                    if *exit_code == 0 { "hook exited 0".to_owned() } else { format!("HOOK EXITED {exit_code}") };
                if last.is_empty() { verdict } else { format!("{verdict}; output ends: {last}") }
            }
            Outcome::MirrorSynced { entries, files_copied, bytes_copied, removed } => format!(
                "mirror synced: {entries} entries, {files_copied} files copied ({}), {removed} removed",
                bytes(*bytes_copied)
            ),
            Outcome::UploadBegun { upload_id } => format!("upload opened, id {}", short_sha(upload_id)),
            Outcome::CopyUploaded(copy) => format!(
                "copy stored and read back: {} ({}), sha256 {}",
                bytes(copy.stored_bytes),
                if copy.encryption == "age" { "encrypted" } else { "not encrypted" },
                short_sha(&copy.stored_sha256)
            ),
        },
        Event::Recovering { decision, .. } => format!("recover: {}", decision.as_str().replace('_', " ")),
        Event::Cancelled { reason, .. } => format!("cancelled by {reason}: settling the run"),
    }
}

/// What an effect is about to do, in words.
pub fn effect_detail(effect: &Effect) -> String {
    let services = |s: &Option<Vec<String>>| s.as_ref().map_or("all services".to_owned(), |s| list(s));
    match effect {
        Effect::VerifyArchive { backup } => format!("verify archive {}", backup.path),
        Effect::Inspect => "inspect services and data paths".into(),
        Effect::StopServices { services } => format!("stop {}", list(services)),
        Effect::WriteArchive { path } => format!("write {path}"),
        Effect::RecordBackup { archive, backup_kind, .. } => {
            format!("record {} backup {}", backup_kind.as_str(), archive.path)
        }
        Effect::DiscardArchive { path } => format!("discard unrecorded archive {path}"),
        Effect::Deploy { package } => format!("deploy version {} from {}", package.version, package.path),
        Effect::StartServices { services } => format!("start {}", list(services)),
        Effect::ComposeUp { services: s } => format!("compose up {}", services(s)),
        Effect::StopStack => "stop every container of the project".into(),
        Effect::VerifyServices { services: s } => format!("verify {} are up", services(s)),
        Effect::CommitDeploy { version } => format!("commit version {version}, delete old files kept aside"),
        Effect::RestoreDeployment => "put the old deployment files back".into(),
        Effect::RestoreData { backup, deployment } => {
            let what = if *deployment { "data and deployment files" } else { "data" };
            format!("restore {what} from backup {}", backup.backup_id)
        }
        Effect::RevertData => "put the data moved aside back".into(),
        Effect::CommitData => "delete the data moved aside".into(),
        Effect::DeleteBackup { backup } => format!("delete backup {} ({})", backup.backup_id, backup.path),
        Effect::Provision { provision, .. } => format!("create {}", provision_summary(provision)),
        Effect::Unprovision { provision } => {
            format!("remove the containers and networks, and {}", provision_summary(provision))
        }
        Effect::SyncMirror { mirror, stopped: false } => format!("sync the mirror {mirror}, services running"),
        Effect::SyncMirror { mirror, stopped: true } => {
            format!("sync the mirror {mirror}, services stopped: the snapshot")
        }
        Effect::BeginUpload { target } => format!("open an upload of {} on remote {}", target.key, target.remote),
        Effect::UploadCopy { backup, target, .. } => {
            format!("send backup {} to remote {} as {}", backup.backup_id, target.remote, target.key)
        }
        Effect::RecordCopy { backup_id, target, .. } => {
            format!("check and catalogue the copy of backup {backup_id} on remote {}", target.remote)
        }
        Effect::AbortUpload { target, upload_id: Some(_) } => {
            format!("abort the upload of {} on remote {}", target.key, target.remote)
        }
        Effect::AbortUpload { target, upload_id: None } => {
            format!("abort the upload of {} on remote {} (its id was never journaled)", target.key, target.remote)
        }
        Effect::DeleteCopy { backup_id, target } => {
            format!("delete the uncatalogued copy of backup {backup_id} from remote {} ({})", target.remote, target.key)
        }
        Effect::PruneCopy { backup_id, target } => {
            format!("delete the copy of backup {backup_id} from remote {} ({})", target.remote, target.key)
        }
        Effect::RunHook { hook } => {
            let once = if hook.idempotent { "" } else { ", runs at most once" };
            format!("hook {}: {} (timeout {} s{once})", hook.label(), hook.command, hook.timeout_secs)
        }
    }
}

/// What a restore onto a new host creates, in words.
pub fn provision_summary(provision: &lifeboat_machine::Provision) -> String {
    let volumes: Vec<String> = provision.volumes.iter().map(|v| v.name.clone()).collect();
    format!("volumes {}, files {}, directories {}", list(&volumes), list(&provision.files), list(&provision.dirs))
}

pub fn short_sha(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_units() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(200 * 1024 * 1024), "200.0 MiB");
        assert_eq!(duration_ms(850), "850 ms");
        assert_eq!(duration_ms(4_200), "4.2 s");
        assert_eq!(duration_ms(192_000), "3 min 12 s");
        assert_eq!(duration_ms(7_500_000), "2 h 05 min");
    }
}
