//! `lifeboat restore` end to end on the real daemon: it brings back exactly the data of the
//! backup (bind-mounted path and named volume), restarts only what was running, refuses a corrupt
//! archive before touching anything, and survives a crash at its fail points.
//!
//! The binary must be built with the `failpoints` feature (the README's test command does so).

mod e2e;
mod support;

use e2e::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use support::Project;

/// A file written into the data path and the volume after the backup: a restore removes it.
const AFTER: &str = "after-backup.txt";

/// The named volume's data directory on the host.
fn volume_dir(project: &Project) -> PathBuf {
    let volumes = project.volumes();
    let volume = volumes.iter().find(|v| v.compose_name.as_deref() == Some("dbdata")).expect("the dbdata volume");
    volume.mountpoint.clone()
}

/// Writes the "after the backup" markers into the data path and the volume.
fn write_after_markers(project: &Project) {
    std::fs::write(project.data_dir().join(AFTER), "written after the backup\n").unwrap();
    std::fs::write(volume_dir(project).join(AFTER), "written after the backup\n").unwrap();
}

/// Whether both markers are there (`true`) or both gone (`false`); panics when only one is.
fn after_markers_present(project: &Project) -> bool {
    let in_data = project.data_dir().join(AFTER).exists();
    let in_volume = volume_dir(project).join(AFTER).exists();
    assert_eq!(in_data, in_volume, "the data path and the volume are restored together");
    in_data
}

/// Every name under the project dir and beside the volume's data that a restore leaves while
/// in progress (`*.lifeboat-staging-*`, `*.lifeboat-old-*`, `*.reverted`).
fn leftovers(project: &Project) -> Vec<PathBuf> {
    let volume = volume_dir(project);
    let mut found = Vec::new();
    for dir in [project.dir(), volume.parent().unwrap()] {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.contains(".lifeboat-") || name.ends_with(".reverted") {
                found.push(path);
            }
        }
    }
    found
}

/// A backup with the writer's records and the db's volume in it; returns its id and the
/// archived records file and `started` file of the volume.
fn backup_with_content(project: &Project) -> (u64, String, String) {
    project.wait_records(10, Duration::from_secs(30));
    let report = run_json(project, &["backup"]);
    let archive = Path::new(report["path"].as_str().unwrap());
    let out = tempfile::tempdir().unwrap();
    let status = Command::new("tar").arg("-xzf").arg(archive).arg("-C").arg(out.path()).status().unwrap();
    assert!(status.success());
    let records = std::fs::read_to_string(out.path().join("paths/data/records.txt")).unwrap();
    let started = std::fs::read_to_string(out.path().join("volumes/dbdata/started")).unwrap();
    (report["backup_id"].as_u64().unwrap(), records, started)
}

#[test]
fn restore_brings_back_the_data_of_the_backup_and_restarts_what_ran() {
    let Some((project, before)) = started_project() else { return };
    assert_eq!(before, ["cache", "db", "writer"], "the fixture starts with idle stopped");
    let (id, records, started) = backup_with_content(&project);
    let archived_count = support::check_records(&records).unwrap();
    // The data moves on after the backup.
    project.wait_records(archived_count + 20, Duration::from_secs(30));
    write_after_markers(&project);

    let report = run_json(&project, &["restore", &id.to_string(), "--yes"]);

    assert_eq!(report["backup_id"], id);
    assert_eq!(report["restored"], serde_json::json!(["paths/data", "volumes/dbdata"]), "{report}");
    assert_eq!(report["stopped"], serde_json::json!(["writer", "cache", "db"]), "stop order: dependants first");
    assert!(report["downtime_ms"].as_i64().unwrap() > 0, "{report}");
    assert_invariants(&project, &before);
    assert!(!project.container("idle").state.is_active(), "idle stays stopped");
    assert!(!after_markers_present(&project), "what was written after the backup is gone");
    // The records are those of the backup, then what the writer appended after its restart, which
    // counted the restored file: it restarted after exactly the archived records.
    let now = project.read_records();
    assert!(now.starts_with(&records), "the restored records are the archived ones");
    project.assert_records_intact();
    let logs = support::block_on(async { support::docker().logs_tail(&project.container("writer").name, 200).await })
        .unwrap()
        .join("\n");
    assert!(
        logs.contains(&format!("writer starting after record {archived_count}")),
        "the writer restarted on the restored file ({archived_count} records): {logs}"
    );
    // The volume: the db appended one start to the restored `started` file.
    let started_now = std::fs::read_to_string(volume_dir(&project).join("started")).unwrap();
    assert!(started_now.starts_with(&started), "the volume holds the backup's data: {started_now:?} vs {started:?}");
    assert_eq!(started_now.lines().count(), started.lines().count() + 1, "{started_now:?}");
    assert_eq!(leftovers(&project), Vec::<PathBuf>::new(), "no staging or aside left");

    let runs = run_json(&project, &["journal", "list"]);
    let last = runs.as_array().unwrap().last().unwrap();
    assert_eq!((last["kind"].as_str(), last["outcome"].as_str()), (Some("restore"), Some("completed")), "{last}");
    let shown = run_json(&project, &["journal", "show", &report["run_id"].to_string()]);
    let states: Vec<&str> = shown["events"].as_array().unwrap().iter().map(|e| e["state"].as_str().unwrap()).collect();
    for state in ["checking", "stopping", "restoring", "restarting", "verifying"] {
        assert!(states.contains(&state), "journal show passes through {state}: {states:?}");
    }
}

#[test]
fn a_corrupt_archive_exits_5_and_changes_nothing() {
    let Some((project, before)) = started_project() else { return };
    let (id, _, _) = backup_with_content(&project);
    write_after_markers(&project);
    let list = run_json(&project, &["list"]);
    let archive = PathBuf::from(list[0]["path"].as_str().unwrap());
    let mut bytes = std::fs::read(&archive).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x5a;
    std::fs::write(&archive, bytes).unwrap();
    let writer = project.container("writer");

    let output = run(&project, &["restore", &id.to_string(), "--yes"]);

    assert_eq!(output.status.code(), Some(5), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("verif") && stderr.contains("nothing was changed"), "{stderr}");
    assert!(after_markers_present(&project), "the current data is untouched");
    assert_eq!(running(&project), before);
    let after = project.container("writer");
    assert_eq!(after.id, writer.id);
    assert_eq!(leftovers(&project), Vec::<PathBuf>::new());
    // The services were never stopped: the writer kept its records going without a restart.
    let logs = support::block_on(async { support::docker().logs_tail(&after.name, 200).await }).unwrap();
    assert_eq!(logs.iter().filter(|l| l.contains("writer starting")).count(), 2, "one start, one backup restart");
    run_expect(&project, &["journal", "verify"], 0);
    let runs = run_json(&project, &["journal", "list"]);
    assert_eq!(runs.as_array().unwrap().last().unwrap()["outcome"], "rolled_back");
}

#[test]
fn an_unknown_backup_or_a_missing_yes_is_a_usage_error() {
    if !support::docker_available() {
        return;
    }
    let project = Project::new();
    configure(&project);
    let output = run(&project, &["restore", "42", "--yes"]);
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("lifeboat list"), "{}", describe(&output));

    // A real backup, but no --yes and stdin is not a terminal (`output()` gives it /dev/null).
    project.up();
    let (id, _, _) = backup_with_content(&project);
    let output = run(&project, &["restore", &id.to_string()]);
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--yes"), "{}", describe(&output));
    let runs = run_json(&project, &["journal", "list"]);
    assert_eq!(runs.as_array().unwrap().len(), 1, "no restore run was started: {runs}");
}

/// Fail points of a restore, with whether recovery finishes it (`true`: the restored data stays)
/// or rolls it back (`false`: the data of before the restore is back). The run passes its point
/// of no return when the outcome of `verify_services` is journaled.
const RESTORE_POINTS: &[(&str, bool)] = &[
    ("intent:verify_archive", false),
    ("outcome:stop_services", false),
    ("intent:restore_data", false),
    ("effect:restore_data", false),
    ("outcome:restore_data", false),
    ("effect:start_services", false),
    ("outcome:start_services", false),
    ("effect:verify_services", false),
    ("outcome:verify_services", true),
    ("intent:commit_data", true),
    ("effect:commit_data", true),
];

#[test]
fn crash_at_fail_points_of_a_restore_then_recover() {
    let Some((project, before)) = started_project() else { return };
    let (id, _, _) = backup_with_content(&project);
    let id = id.to_string();
    for &(point, finishes) in RESTORE_POINTS {
        write_after_markers(&project);
        crash_at(&project, &["restore", &id, "--yes"], point);
        let refused = run(&project, &["backup"]);
        assert_eq!(refused.status.code(), Some(4), "{point}: {}", describe(&refused));

        let output = run(&project, &["recover"]);
        assert_eq!(output.status.code(), Some(0), "{point}: recover: {}", describe(&output));
        assert_invariants(&project, &before);
        let again = run_expect(&project, &["recover"], 0);
        assert!(again.contains("nothing to recover"), "{point}: a second recover changes nothing: {again}");
        project.assert_records_intact();
        assert_eq!(leftovers(&project), Vec::<PathBuf>::new(), "{point}: no staging or aside left");
        assert_eq!(
            after_markers_present(&project),
            !finishes,
            "{point}: {}",
            if finishes { "the restored data stays" } else { "the data of before the restore is back" }
        );
        let runs = run_json(&project, &["journal", "list"]);
        let last = runs.as_array().unwrap().last().unwrap();
        let expected = if finishes { "completed" } else { "rolled_back" };
        assert_eq!(last["outcome"], expected, "{point}: {last}");
    }
}

#[test]
fn crash_during_the_rollback_of_a_restore_then_recover_again() {
    let Some((project, before)) = started_project() else { return };
    let (id, _, _) = backup_with_content(&project);
    let id = id.to_string();
    for point in ["intent:stop_stack", "effect:revert_data", "intent:start_services", "effect:verify_services"] {
        write_after_markers(&project);
        // Interrupted after the restored data ran, so recovery stops the stack before reverting.
        crash_at(&project, &["restore", &id, "--yes"], "outcome:start_services");
        crash_at(&project, &["recover"], point);
        let output = run(&project, &["recover"]);
        assert_eq!(output.status.code(), Some(0), "{point}: recover: {}", describe(&output));
        assert_invariants(&project, &before);
        assert!(run_expect(&project, &["recover"], 0).contains("nothing to recover"));
        assert!(after_markers_present(&project), "{point}: the data of before the restore is back");
        assert_eq!(leftovers(&project), Vec::<PathBuf>::new(), "{point}");
        project.assert_records_intact();
        let runs = run_json(&project, &["journal", "list"]);
        assert_eq!(runs.as_array().unwrap().last().unwrap()["outcome"], "rolled_back", "{point}");
    }
}
