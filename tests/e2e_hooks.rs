//! Hooks end to end on the real daemon (docs/design.md, "Hooks"): exec hooks declared by compose
//! labels on the fixture's `db` service, host hooks from `[hooks]`, timeouts, and crashes at the
//! hook step followed by `recover`.

mod e2e;
mod support;

use e2e::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use support::Project;

/// The fixture project with `labels` (label, value) on its
/// `db` service, up (idle stopped) and configured; `hooks` is appended to `lifeboat.toml`.
fn project_with(labels: &[(&str, &str)], hooks: &str) -> (Project, Vec<String>) {
    let project = Project::new();
    if !labels.is_empty() {
        let compose = std::fs::read_to_string(project.compose_file()).unwrap();
        let mut block = String::from("  db:\n    labels:\n");
        for (key, value) in labels {
            block.push_str(&format!("      {key}: {}\n", serde_json::to_string(value).unwrap()));
        }
        assert!(compose.contains("  db:\n"));
        std::fs::write(project.compose_file(), compose.replacen("  db:\n", &block, 1)).unwrap();
    }
    project.up();
    project.stop_service("idle");
    configure(&project);
    set_hooks(&project, hooks);
    let before = running(&project);
    (project, before)
}

/// Replaces the `[hooks]` section of `lifeboat.toml` with `hooks` (none when empty).
fn set_hooks(project: &Project, hooks: &str) {
    let path = project.dir().join("lifeboat.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let base = text.split("\n[hooks]\n").next().unwrap().to_owned();
    let text = if hooks.is_empty() { base } else { format!("{base}\n[hooks]\n{hooks}\n") };
    std::fs::write(path, text).unwrap();
}

/// The `journal show` events of run `id`.
fn events(project: &Project, id: u64) -> Vec<Value> {
    let shown = run_json(project, &["journal", "show", &id.to_string()]);
    shown["events"].as_array().unwrap().clone()
}

fn details(events: &[Value]) -> Vec<String> {
    events.iter().map(|e| format!("{} {}", e["event"].as_str().unwrap(), e["detail"].as_str().unwrap())).collect()
}

fn stopped_anything(events: &[Value]) -> bool {
    details(events).iter().any(|d| d.starts_with("intent stop "))
}

/// When each service's container last started: a service restarted by a run shows a new time.
fn started_at(project: &Project) -> Vec<(String, Option<String>)> {
    let mut list: Vec<_> = project.containers().into_iter().map(|c| (c.service, c.started_at)).collect();
    list.sort();
    list
}

fn lines_of(path: &Path) -> usize {
    std::fs::read_to_string(path).map(|t| t.lines().count()).unwrap_or(0)
}

#[test]
fn a_before_backup_exec_hook_writes_into_the_volume_and_the_archive_holds_it() {
    if !support::docker_available() {
        return;
    }
    let (project, before) = project_with(
        &[("lifeboat.before-backup", "echo dumped-by-hook > /var/lib/db/dump.sql && echo dump written")],
        "",
    );
    let report = run_json(&project, &["backup"]);
    assert_invariants(&project, &before);

    let out = tempfile::tempdir().unwrap();
    let archive = report["path"].as_str().unwrap();
    let status = Command::new("tar").arg("-xzf").arg(archive).arg("-C").arg(out.path()).status().unwrap();
    assert!(status.success());
    let dump = std::fs::read_to_string(out.path().join("volumes/dbdata/dump.sql")).expect("the dump is archived");
    assert_eq!(dump, "dumped-by-hook\n");

    let events = events(&project, report["run_id"].as_u64().unwrap());
    let lines = details(&events);
    let hook = lines.iter().position(|l| l.starts_with("intent hook before_backup (db)")).expect("journaled");
    let stop = lines.iter().position(|l| l.starts_with("intent stop ")).expect("stopped");
    assert!(hook < stop, "the hook ran before anything stopped: {lines:#?}");
    assert_eq!(lines[hook + 1], "outcome hook exited 0; output ends: dump written", "{lines:#?}");
}

#[test]
fn a_failing_before_hook_leaves_services_running_and_nothing_recorded() {
    if !support::docker_available() {
        return;
    }
    let (project, before) = project_with(&[("lifeboat.before-backup", "echo cannot dump >&2; exit 3")], "");
    let started = started_at(&project);
    let output = run(&project, &["backup"]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("before_backup (db) exited 3: cannot dump"), "{stderr}");

    assert_eq!(started_at(&project), started, "no service was stopped or restarted");
    assert_invariants(&project, &before);
    assert_eq!(run_json(&project, &["list"]), serde_json::json!([]));
    let archives = std::fs::read_dir(project.dir().join("backups")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(archives, 0, "no archive written");
    let events = events(&project, 1);
    assert!(!stopped_anything(&events), "{:#?}", details(&events));
    assert!(details(&events).iter().any(|d| d.contains("HOOK EXITED 3; output ends: cannot dump")));
    let runs = run_json(&project, &["journal", "list"]);
    assert_eq!(runs[0]["outcome"], "rolled_back");
}

#[test]
fn after_backup_host_hooks_see_the_archive_and_their_failure_keeps_the_backup() {
    if !support::docker_available() {
        return;
    }
    let (project, before) = project_with(
        &[],
        "after_backup = 'test -f \"$LIFEBOAT_ARCHIVE\" && echo \"$LIFEBOAT_ARCHIVE run $LIFEBOAT_RUN_ID\" > hook-saw.txt'",
    );
    let report = run_json(&project, &["backup"]);
    let saw = std::fs::read_to_string(project.dir().join("hook-saw.txt")).expect("the hook ran");
    assert_eq!(saw.trim(), format!("{} run {}", report["path"].as_str().unwrap(), report["run_id"]));
    assert_eq!(report["hook_failures"], serde_json::json!([]));

    set_hooks(&project, "after_backup = 'echo disk almost full; exit 4'");
    let output = run(&project, &["--json", "backup"]);
    assert_eq!(output.status.code(), Some(6), "an after hook's failure is exit 6: {}", describe(&output));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let failure = report["hook_failures"][0].as_str().unwrap();
    assert!(failure.contains("after_backup (host) exited 4: disk almost full"), "{report}");
    assert_invariants(&project, &before);
    let list = run_json(&project, &["list"]);
    assert_eq!(list.as_array().unwrap().len(), 2, "the backup stays recorded: {list}");
    assert_eq!(run_json(&project, &["journal", "list"])[1]["outcome"], "completed");
}

#[test]
fn a_hanging_hook_is_killed_at_its_timeout() {
    if !support::docker_available() {
        return;
    }
    let (project, before) = project_with(
        &[("lifeboat.before-backup", "sleep 318"), ("lifeboat.before-backup.timeout", "2")],
        "before_backup = 'sleep 317 & sleep 316'\ntimeout_secs = 2",
    );
    // The host hook: killed with its whole process group.
    let started = Instant::now();
    let output = run(&project, &["backup"]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(started.elapsed() < Duration::from_secs(30), "killed at its timeout, took {:?}", started.elapsed());
    let lines = details(&events(&project, 1));
    assert!(
        lines.iter().any(|l| l.contains("HOOK EXITED 124; output ends: [lifeboat: killed after 2 s]")),
        "{lines:#?}"
    );
    let left = Command::new("pgrep").args(["-f", "sleep 31[67]"]).output().unwrap();
    assert!(left.stdout.is_empty(), "the hook's processes are gone: {}", String::from_utf8_lossy(&left.stdout));

    // The exec hook in db: killed inside the container too.
    set_hooks(&project, "");
    let started = Instant::now();
    let output = run(&project, &["backup"]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(started.elapsed() < Duration::from_secs(30), "took {:?}", started.elapsed());
    let lines = details(&events(&project, 2));
    assert!(lines.iter().any(|l| l.starts_with("outcome HOOK EXITED 124")), "{lines:#?}");
    let top = Command::new("docker").args(["top", &project.container("db").id]).output().unwrap();
    let top = String::from_utf8_lossy(&top.stdout);
    assert!(!top.contains("sleep 318"), "the exec hook's process is gone: {top}");
    assert_invariants(&project, &before);
    assert_eq!(run_json(&project, &["list"]), serde_json::json!([]));
}

#[test]
fn a_crash_in_a_before_hook_rolls_back_without_running_it_again() {
    if !support::docker_available() {
        return;
    }
    let (project, before) = project_with(&[], "before_backup = 'echo ran >> before-count.txt'");
    let path = project.dir().join("lifeboat.toml");
    let toml =
        std::fs::read_to_string(&path).unwrap().replace("\n[hooks]\n", "\n[metrics]\nfile = \"l.prom\"\n\n[hooks]\n");
    std::fs::write(&path, toml).unwrap();
    let count = project.dir().join("before-count.txt");
    // Crashed after the hook ran, before its outcome was journaled.
    crash_at(&project, &["backup"], "effect:run_hook");
    assert_eq!(lines_of(&count), 1);
    assert_eq!(run_json(&project, &["status"])["metrics"]["interrupted_runs"], 1);
    recover_at_once_and_check(&project, &before, "crash after the before hook");
    let metrics = std::fs::read_to_string(project.dir().join("l.prom")).expect("recover writes the metrics");
    assert!(metrics.contains(&format!("lifeboat_interrupted_runs{{project=\"{}\"}} 0\n", project.name())), "{metrics}");
    assert!(metrics.contains("lifeboat_last_failure_timestamp_seconds{"), "{metrics}");
    assert_eq!(lines_of(&count), 1, "recovery does not run the hook again");
    assert_eq!(run_json(&project, &["journal", "list"])[0]["outcome"], "rolled_back");
    assert_eq!(run_json(&project, &["list"]), serde_json::json!([]));
    // Crashed with the hook's intent journaled, before it ran: it never runs.
    crash_at(&project, &["backup"], "intent:run_hook");
    recover_at_once_and_check(&project, &before, "crash before the before hook");
    assert_eq!(lines_of(&count), 1);
}

#[test]
fn a_crash_in_an_after_hook_resumes_and_reruns_it_only_when_idempotent() {
    if !support::docker_available() {
        return;
    }
    let (project, before) = project_with(&[], "after_backup = 'echo ran >> after-count.txt'");
    let count = project.dir().join("after-count.txt");
    crash_at(&project, &["backup"], "effect:run_hook");
    recover_at_once_and_check(&project, &before, "crash after the after hook");
    assert_eq!(lines_of(&count), 1, "not idempotent: not run again");
    assert_eq!(run_json(&project, &["journal", "list"])[0]["outcome"], "completed");
    assert_eq!(run_json(&project, &["list"]).as_array().unwrap().len(), 1, "the backup is kept");

    set_hooks(&project, "after_backup = 'echo ran >> after-count.txt'\nidempotent = ['after_backup']");
    crash_at(&project, &["backup"], "effect:run_hook");
    assert_eq!(lines_of(&count), 2);
    recover_at_once_and_check(&project, &before, "crash after an idempotent after hook");
    assert_eq!(lines_of(&count), 3, "idempotent: run again by recovery");
    assert_eq!(run_json(&project, &["list"]).as_array().unwrap().len(), 2);
}

#[test]
fn restore_hooks_run_before_anything_stops_and_in_the_restored_container() {
    if !support::docker_available() {
        return;
    }
    let (project, before) = project_with(
        &[
            ("lifeboat.before-backup", "echo dump-of-backup-1 > /var/lib/db/dump.sql"),
            ("lifeboat.after-restore", "cp /var/lib/db/dump.sql /var/lib/db/loaded.sql && echo loaded"),
        ],
        "",
    );
    let backup = run_json(&project, &["backup"]);
    let id = backup["backup_id"].to_string();
    // The live dump changes after the backup: the restore must bring back the archived one.
    let db = project.container("db").id;
    let status = Command::new("docker").args(["exec", &db, "sh", "-c", "echo changed > /var/lib/db/dump.sql"]).status();
    assert!(status.unwrap().success());

    // A failing before_restore host hook: nothing stopped, the data untouched.
    set_hooks(&project, "before_restore = 'echo \"restore of $LIFEBOAT_BACKUP_ID refused\"; exit 5'");
    let started = started_at(&project);
    let output = run(&project, &["restore", &id, "--yes"]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains(&format!("restore of {id} refused")),
        "{}",
        describe(&output)
    );
    assert_eq!(started_at(&project), started, "nothing was stopped");
    assert!(!stopped_anything(&events(&project, 2)));

    // Without it: the restore runs the db's after-restore hook once the data is back and up.
    set_hooks(&project, "");
    let report = run_json(&project, &["restore", &id, "--yes"]);
    assert_eq!(report["hook_failures"], serde_json::json!([]));
    let db = project.container("db").id;
    let loaded = Command::new("docker").args(["exec", &db, "cat", "/var/lib/db/loaded.sql"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&loaded.stdout), "dump-of-backup-1\n", "the hook ran on the restored volume");
    let lines = details(&events(&project, report["run_id"].as_u64().unwrap()));
    let hook = lines.iter().position(|l| l.starts_with("intent hook after_restore (db)")).expect("journaled");
    assert!(
        lines[..hook].iter().any(|l| l.starts_with("intent delete the data moved aside")),
        "after the commit: {lines:#?}"
    );
    assert_eq!(lines[hook + 1], "outcome hook exited 0; output ends: loaded");
    assert_invariants(&project, &before);
}

#[test]
fn on_failure_runs_once_after_a_rollback_even_across_a_crash_and_never_after_success() {
    if !support::docker_available() {
        return;
    }
    let on_failure = "on_failure = 'echo \"$LIFEBOAT_KIND $LIFEBOAT_OUTCOME run $LIFEBOAT_RUN_ID: $LIFEBOAT_ERROR\" >> failures.txt'";
    let (project, before) = project_with(&[], on_failure);
    let failures = project.dir().join("failures.txt");
    run_json(&project, &["backup"]);
    assert_eq!(lines_of(&failures), 0, "a backup that completes runs no on_failure hook");

    set_hooks(&project, &format!("before_backup = 'echo cannot dump >&2; exit 3'\n{on_failure}"));
    let output = run(&project, &["backup"]);
    assert_eq!(output.status.code(), Some(1), "the run's outcome is the exit code: {}", describe(&output));
    let text = std::fs::read_to_string(&failures).unwrap();
    assert_eq!(text, "backup rolled_back run 2: run_hook failed: hook before_backup (host) exited 3: cannot dump\n");
    let lines = details(&events(&project, 2));
    let hook_at = lines.iter().position(|l| l.starts_with("intent hook on_failure (host)"));
    assert_eq!(hook_at, Some(lines.len() - 2), "on_failure is the last step: {lines:#?}");
    assert!(lines[0].contains("if it fails: on_failure (host)"), "{lines:#?}");
    assert_invariants(&project, &before);

    // Killed after the on_failure hook ran (the second hook of the run), before its outcome.
    let output = command(&project, &["backup"])
        .env("FAILPOINTS", "effect:run_hook=1*off->return")
        .output()
        .expect("run lifeboat");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(output.status.signal(), Some(libc::SIGKILL), "{}", describe(&output));
    assert_eq!(lines_of(&failures), 2);
    recover_at_once_and_check(&project, &before, "crash after the on_failure hook");
    assert_eq!(lines_of(&failures), 2, "recovery does not run on_failure again");
    assert_eq!(run_json(&project, &["journal", "list"])[2]["outcome"], "rolled_back");
    assert_eq!(run_json(&project, &["list"]).as_array().unwrap().len(), 1);
}
