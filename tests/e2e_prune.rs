//! Retention and scheduling on the real daemon: a prune interrupted between a catalog removal and
//! the file's deletion is finished by `recover`, and a scheduler stopped by SIGTERM mid-backup lets
//! the backup finish with every service running.

mod e2e;
mod support;

use e2e::*;
use std::time::{Duration, Instant};
use support::Project;

/// Sets retention so that every backup but the newest verified one is due for deletion.
fn retain_only_newest(project: &Project) {
    let toml = std::fs::read_to_string(project.dir().join("lifeboat.toml")).unwrap();
    let toml = toml.replace("compression_level = 6", "compression_level = 6\nretention_days = 0\nkeep_last = 1");
    std::fs::write(project.dir().join("lifeboat.toml"), toml).unwrap();
}

fn backup_files(project: &Project) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(project.dir().join("backups"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    // Each archive has its `NAME.sha256` beside it, and goes with it.
    let (sidecars, mut archives): (Vec<String>, Vec<String>) = names.into_iter().partition(|n| n.ends_with(".sha256"));
    let expected: Vec<String> =
        archives.iter().filter(|n| n.ends_with(".tar.gz")).map(|n| format!("{n}.sha256")).collect();
    assert_eq!(sidecars, expected, "one sidecar per archive, none without its archive");
    archives.sort();
    archives
}

#[test]
fn a_prune_crashed_between_catalog_and_file_is_finished_by_recover() {
    let Some((project, before)) = started_project() else { return };
    for _ in 0..3 {
        run_json(&project, &["backup"]);
    }
    retain_only_newest(&project);
    let listed = run_json(&project, &["list"]);
    let newest = listed.as_array().unwrap().last().unwrap().clone();

    // Crash right after the first catalog entry is removed, before its file is deleted.
    crash_at(&project, &["prune"], "delete_backup:catalog_removed");
    assert_eq!(backup_files(&project).len(), 3, "the crash came before any file was deleted");
    assert_eq!(run_json(&project, &["list"]).as_array().unwrap().len(), 2, "one catalog entry is gone");
    assert_eq!(run(&project, &["backup"]).status.code(), Some(4), "the interrupted prune must be recovered first");

    let recovered = run_json(&project, &["recover"]);
    assert_eq!(recovered[0]["kind"], "prune");
    assert_eq!(recovered[0]["decision"], "resume");
    assert_eq!(recovered[0]["state"], "completed");
    let listed = run_json(&project, &["list"]);
    assert_eq!(listed.as_array().unwrap(), std::slice::from_ref(&newest), "only the newest backup is left");
    let file =
        std::path::Path::new(newest["path"].as_str().unwrap()).file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(backup_files(&project), [file], "every pruned archive is deleted, the kept one is not");
    assert_invariants(&project, &before);
    let prune = run_json(&project, &["prune", "--dry-run"]);
    assert_eq!(prune["unknown_files"], serde_json::json!([]), "nothing is left behind: {prune}");
}

#[test]
fn sigterm_during_a_scheduled_backup_settles_it_with_services_running() {
    let Some((project, before)) = started_project() else { return };
    run_expect(&project, &["auto-backup", "schedule", "* * * * *"], 0);
    run_expect(&project, &["auto-backup", "enable"], 0);

    // The backup the daemon starts at the next minute holds in its archive step for 4 s.
    let mut daemon = command(&project, &["auto-backup", "daemon"])
        .env("FAILPOINTS", "intent:write_archive=sleep(4000)")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        // A backup in its archive step holds the lock with the services stopped.
        let status = run_json(&project, &["status"]);
        if !status["run_in_progress"].is_null() && running(&project).is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "the daemon started no backup within 90 s");
        assert!(daemon.try_wait().unwrap().is_none(), "the daemon exited early");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Services are stopped now; SIGTERM must not leave them so.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let output = daemon.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0), "the daemon stops cleanly: {}", describe(&output));
    assert_invariants(&project, &before);
    // The backup in progress was cancelled at its next safe point and rolled back.
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cancelled by SIGTERM"), "{stderr}");
    assert_eq!(run_json(&project, &["list"]), serde_json::json!([]));
    let runs = run_json(&project, &["journal", "list"]);
    assert_eq!(runs.as_array().unwrap().last().unwrap()["outcome"], "rolled_back", "{runs}");
    assert!(run_expect(&project, &["recover"], 0).contains("nothing to recover"));
}
