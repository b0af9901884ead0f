//! Snapshots of what an operator reads: `--help`, and `journal show`, `journal list`, `list` and
//! `status` for a fixed journal (fixed times, no daemon), so a change to the output is a reviewed
//! change. Update with `INSTA_UPDATE=always cargo test -p lifeboat --features failpoints --test snapshots`.

use lifeboat_journal::{BackupEntry, Journal};
use lifeboat_machine::{ArchiveFacts, BackupKind, Effect, Event, Outcome, RunSpec, Timestamp};
use std::path::Path;
use std::process::Command;

const LIFEBOAT: &str = env!("CARGO_BIN_EXE_lifeboat");
/// 2026-11-26 02:00:00 UTC.
const T0: i64 = 1_795_658_400_000;

/// Runs lifeboat in `dir` with fixed time zone and no daemon, so outputs are reproducible.
fn run_fixed(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(LIFEBOAT)
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("TZ", "UTC")
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .env_remove("FAILPOINTS")
        .output()
        .expect("run lifeboat")
}

fn lifeboat(dir: &Path, args: &[&str]) -> String {
    let output = run_fixed(dir, args);
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    text.replace(&dir.display().to_string(), "[DIR]")
}

/// A project whose journal holds one completed backup and one backup interrupted while archiving.
fn fixed_project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new(LIFEBOAT).arg("-C").arg(dir.path()).args(["init", "--project", "demo"]).output().unwrap();
    assert!(status.status.success());
    std::fs::create_dir_all(dir.path().join(".lifeboat")).unwrap();
    let journal_path = dir.path().join(".lifeboat/journal.redb");
    let journal = Journal::open(&journal_path).unwrap();
    // As lifeboat creates it: private (else `status` warns about it).
    std::fs::set_permissions(&journal_path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let at = |ms: i64| Timestamp(T0 + ms);
    let path = "/srv/demo/backups/demo-20261126T020000Z-run000001.tar.gz".to_owned();
    let facts = ArchiveFacts {
        path: path.clone(),
        sha256: "9f2c4d1e8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d".into(),
        size_bytes: 191_234_567,
        file_count: 5_234,
        entry_count: 5_301,
        content_bytes: 402_653_184,
    };
    let running = vec!["app".to_owned(), "cache".to_owned(), "db".to_owned()];
    let spec = RunSpec::Backup { archive_path: path.clone(), backup_kind: BackupKind::Auto, note: None };
    let run = journal.begin_run(&Event::Started { at: at(0), spec }).unwrap();
    let steps = [
        (Effect::Inspect, Outcome::Inspected { running: running.clone() }, 12),
        (Effect::StopServices { services: running.clone() }, Outcome::Done, 1_850),
        (Effect::WriteArchive { path: path.clone() }, Outcome::ArchiveWritten(facts.clone()), 4_100),
        (Effect::RecordBackup { archive: facts.clone(), backup_kind: BackupKind::Auto, note: None }, Outcome::Done, 3),
        (Effect::StartServices { services: running.clone() }, Outcome::Done, 2_400),
    ];
    let mut t = 0;
    for (effect, outcome, took) in steps {
        t += 1;
        journal.append(run, &Event::Intent { at: at(t), effect }).unwrap();
        t += took;
        journal.append(run, &Event::Outcome { at: at(t), outcome }).unwrap();
    }
    journal
        .record_backup(&BackupEntry {
            id: run,
            run_id: run,
            kind: BackupKind::Auto,
            created_at: at(0),
            path: facts.path.clone(),
            size_bytes: facts.size_bytes,
            file_count: facts.file_count,
            entry_count: facts.entry_count,
            content_bytes: facts.content_bytes,
            sha256: facts.sha256.clone(),
            note: None,
            protects_version: None,
        })
        .unwrap();
    // A second backup, killed while archiving.
    let path2 = "/srv/demo/backups/demo-20261127T020000Z-run000002.tar.gz".to_owned();
    let day = 86_400_000;
    let spec = RunSpec::Backup {
        archive_path: path2.clone(),
        backup_kind: BackupKind::Manual,
        note: Some("before the migration".into()),
    };
    let run2 = journal.begin_run(&Event::Started { at: at(day), spec }).unwrap();
    journal.append(run2, &Event::Intent { at: at(day + 1), effect: Effect::Inspect }).unwrap();
    journal
        .append(run2, &Event::Outcome { at: at(day + 9), outcome: Outcome::Inspected { running: running.clone() } })
        .unwrap();
    journal
        .append(run2, &Event::Intent { at: at(day + 10), effect: Effect::StopServices { services: running.clone() } })
        .unwrap();
    journal.append(run2, &Event::Outcome { at: at(day + 1_700), outcome: Outcome::Done }).unwrap();
    journal.append(run2, &Event::Intent { at: at(day + 1_701), effect: Effect::WriteArchive { path: path2 } }).unwrap();
    dir
}

#[test]
fn help_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    insta::assert_snapshot!("help", lifeboat(dir.path(), &["--help"]));
    insta::assert_snapshot!("backup_help", lifeboat(dir.path(), &["backup", "--help"]));
    insta::assert_snapshot!("recover_help", lifeboat(dir.path(), &["recover", "--help"]));
}

#[test]
fn journal_and_catalog_snapshots() {
    let dir = fixed_project();
    insta::assert_snapshot!("journal_show_completed", lifeboat(dir.path(), &["journal", "show", "1"]));
    insta::assert_snapshot!("journal_show_interrupted", lifeboat(dir.path(), &["journal", "show", "2"]));
    insta::assert_snapshot!("journal_list", lifeboat(dir.path(), &["journal", "list"]));
    insta::assert_snapshot!("journal_replay_interrupted", lifeboat(dir.path(), &["journal", "replay", "2"]));
    insta::assert_snapshot!("list", lifeboat(dir.path(), &["list"]));
    insta::assert_snapshot!("status", lifeboat(dir.path(), &["status"]));
    insta::assert_snapshot!("journal_show_json", lifeboat(dir.path(), &["--json", "journal", "show", "1"]));
}

/// Runs lifeboat with `--json` and returns its stdout parsed as the one JSON document it must
/// be, with the exit code. A failing command prints `{"error", "exit_code"}` instead of its report.
fn lifeboat_json(dir: &Path, args: &[&str]) -> (serde_json::Value, i32) {
    let output = run_fixed(dir, &[&["--json"], args].concat());
    let stdout = String::from_utf8(output.stdout).expect("UTF-8 on stdout");
    let value: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|err| panic!("lifeboat --json {args:?} printed no single JSON document ({err}):\n{stdout}"));
    (value, output.status.code().expect("an exit code"))
}

/// The JSON as a snapshot: pretty, with the temporary directory and times that move replaced.
fn json_snapshot(dir: &Path, value: &serde_json::Value) -> String {
    let mut value = value.clone();
    for moving in ["next_runs"] {
        if let Some(field) = value.get_mut(moving) {
            *field = serde_json::json!("[moves with the clock]");
        }
    }
    serde_json::to_string_pretty(&value).unwrap().replace(&dir.display().to_string(), "[DIR]")
}

/// Every command's `--json` output is one JSON document, whether it succeeds or fails, and each
/// shape is pinned (docs/json.md documents them).
#[test]
fn every_command_prints_one_json_document() {
    let dir = fixed_project();
    let dir = dir.path();
    let cases: &[(&str, &[&str], i32)] = &[
        ("json_list", &["list"], 0),
        ("json_journal_list", &["journal", "list"], 0),
        ("json_journal_replay", &["journal", "replay", "2"], 0),
        ("json_journal_verify", &["journal", "verify"], 0),
        ("json_status", &["status"], 0),
        ("json_auto_backup_status", &["auto-backup", "status"], 0),
        ("json_auto_backup_schedule", &["auto-backup", "schedule", "30 3 * * *"], 0),
        ("json_auto_backup_enable", &["auto-backup", "enable"], 0),
        ("json_auto_backup_disable", &["auto-backup", "disable"], 0),
        // The archives of the fixed journal do not exist: verification fails (exit 5).
        ("json_verify_all", &["verify", "--all"], 5),
        // Run 2 is interrupted: a new run is refused (exit 4), and recovery needs the daemon,
        // which does not answer here (exit 1).
        ("json_backup_refused", &["backup"], 4),
        ("json_prune_refused", &["prune", "--dry-run"], 4),
        ("json_recover_no_daemon", &["recover"], 1),
        ("json_journal_show_unknown", &["journal", "show", "99"], 2),
    ];
    for (name, args, code) in cases {
        let (value, exit) = lifeboat_json(dir, args);
        assert_eq!(exit, *code, "lifeboat --json {args:?}: {value}");
        insta::assert_snapshot!(*name, json_snapshot(dir, &value));
    }
    let fresh = tempfile::tempdir().unwrap();
    let (init, exit) = lifeboat_json(fresh.path(), &["init", "--project", "demo"]);
    assert_eq!(exit, 0);
    insta::assert_snapshot!("json_init", json_snapshot(fresh.path(), &init));
    for (args, format) in [(&["completions", "bash"][..], "bash"), (&["man"][..], "roff")] {
        let (value, exit) = lifeboat_json(dir, args);
        assert_eq!(exit, 0);
        assert_eq!(value["format"], format);
        assert!(value["text"].as_str().is_some_and(|t| t.contains("lifeboat")), "{args:?}");
    }
}
