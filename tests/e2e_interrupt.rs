//! Interruptions in the short windows: a kill while a service is still stopping, then `recover` at
//! once; SIGINT and SIGTERM at each step of a backup; and an output pipe closed early.
//!
//! The fixture's `slowstop` service takes 3 s to exit on SIGTERM and has a healthcheck: while it
//! stops, Docker reports it running and healthy. Kills and signals are synchronised on its `kill`
//! event (`docker events`), so they land in that window every time. The binary must be built with
//! the `failpoints` feature (the README's test command does so).

mod e2e;
mod support;

use e2e::*;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::Project;

/// The fixture project with `slowstop` running too.
fn project_with_slow_stop() -> Option<(Project, Vec<String>)> {
    let (project, _) = started_project()?;
    project.up_services(&["slowstop"]);
    project.wait_all_up();
    let before = running(&project);
    assert!(before.contains(&"slowstop".to_owned()), "{before:?}");
    Some((project, before))
}

/// The outcome of the last run in the journal.
fn last_outcome(project: &Project) -> String {
    let runs = run_json(project, &["journal", "list"]);
    runs.as_array().unwrap().last().unwrap()["outcome"].as_str().unwrap().to_owned()
}

#[test]
fn a_kill_while_a_service_stops_then_recover_at_once_leaves_it_running() {
    let Some((project, before)) = project_with_slow_stop() else { return };
    let slow = project.container("slowstop").id;
    // Backup: killed while slowstop stops.
    let output = signal_when_stopping(&project, &["backup"], &slow, libc::SIGKILL);
    assert_eq!(output.status.signal(), Some(libc::SIGKILL), "{}", describe(&output));
    recover_at_once_and_check(&project, &before, "backup killed while slowstop stops");
    assert_eq!(last_outcome(&project), "rolled_back");
    let shown = run_json(&project, &["journal", "show", "1"]);
    let steps: Vec<&str> = shown["events"].as_array().unwrap().iter().map(|e| e["detail"].as_str().unwrap()).collect();
    assert!(
        steps.iter().filter(|d| d.starts_with("stop ")).count() == 2,
        "recovery finished the interrupted stop before starting: {steps:?}"
    );

    // Restore: killed while slowstop stops for the restore.
    let backup = run_json(&project, &["backup"]);
    let id = backup["backup_id"].as_u64().unwrap().to_string();
    let output = signal_when_stopping(&project, &["restore", &id, "--yes"], &slow, libc::SIGKILL);
    assert_eq!(output.status.signal(), Some(libc::SIGKILL), "{}", describe(&output));
    recover_at_once_and_check(&project, &before, "restore killed while slowstop stops");
    assert_eq!(last_outcome(&project), "rolled_back");
    project.assert_records_intact();
}

#[test]
fn signals_at_each_step_of_a_backup_settle_the_run_without_recover() {
    let Some((project, before)) = project_with_slow_stop() else { return };
    let slow = project.container("slowstop").id;
    let check = |output: &std::process::Output, code: i32, outcome: &str, context: &str| {
        assert_eq!(output.status.code(), Some(code), "{context}: {}", describe(output));
        assert_eq!(last_outcome(&project), outcome, "{context}");
        assert_invariants(&project, &before);
        let again = run_expect(&project, &["recover"], 0);
        assert!(again.contains("nothing to recover"), "{context}: no recover needed: {again}");
    };

    // Checking: nothing stopped yet.
    let output = command(&project, &["backup"]).env("FAILPOINTS", "intent:inspect=return(SIGINT)").output().unwrap();
    check(&output, 130, "rolled_back", "SIGINT while checking");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cancelled by SIGINT") && stderr.contains("rolled back"), "{stderr}");

    // Stopping: the stop finishes, then everything starts again.
    let output = signal_when_stopping(&project, &["backup"], &slow, libc::SIGTERM);
    check(&output, 143, "rolled_back", "SIGTERM while stopping");

    // Archiving: the writer stops midway and its partial file goes; a second signal is ignored.
    std::fs::write(project.data_dir().join("noise.bin"), random_bytes(96 << 20)).unwrap();
    let backups = project.dir().join("backups");
    let mut child = command(&project, &["backup"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while partial_files(&backups).is_empty() {
        assert!(Instant::now() < deadline, "no partial archive appeared");
        assert!(child.try_wait().unwrap().is_none(), "the backup ended before archiving");
        std::thread::sleep(Duration::from_millis(20));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    std::thread::sleep(Duration::from_millis(100));
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let output = child.wait_with_output().unwrap();
    check(&output, 130, "rolled_back", "SIGINT while archiving");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("SIGINT received again"), "the second signal is reported: {stderr}");
    std::fs::remove_file(project.data_dir().join("noise.bin")).unwrap();

    // Restarting: past the point of no return, the backup finishes.
    let output =
        command(&project, &["backup"]).env("FAILPOINTS", "intent:start_services=return(SIGTERM)").output().unwrap();
    check(&output, 0, "completed", "SIGTERM while restarting");
    assert_eq!(run_json(&project, &["list"]).as_array().unwrap().len(), 1, "the completed backup is listed");

    // The report lists the restart order as it happened: dependencies first.
    let report = run_json(&project, &["backup"]);
    let restarted: Vec<&str> = report["restarted"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    let at = |s: &str| restarted.iter().position(|r| *r == s).unwrap();
    assert!(at("db") < at("cache") && at("cache") < at("writer"), "{restarted:?}");
    project.assert_records_intact();
}

/// A project (no daemon needed) whose journal holds `runs` completed backups in its catalog.
fn long_catalog(runs: u64) -> tempfile::TempDir {
    use lifeboat_journal::{BackupEntry, Journal};
    use lifeboat_machine::{ArchiveFacts, BackupKind, Effect, Event, Outcome, RunSpec, Timestamp};
    let dir = tempfile::tempdir().unwrap();
    let init = Command::new(LIFEBOAT).arg("-C").arg(dir.path()).args(["init", "--project", "demo"]).output().unwrap();
    assert!(init.status.success(), "{}", describe(&init));
    std::fs::create_dir_all(dir.path().join(".lifeboat")).unwrap();
    let journal = Journal::open(dir.path().join(".lifeboat/journal.redb")).unwrap();
    let running: Vec<String> = (0..40).map(|i| format!("service-{i:02}")).collect();
    for n in 1..=runs {
        // Long names, so that the listings outgrow a pipe's buffer.
        let path = format!("backups/{}/demo-run{n:06}.tar.gz", "nested".repeat(30));
        let facts = ArchiveFacts {
            path: path.clone(),
            sha256: format!("{n:064x}"),
            size_bytes: 1000 + n,
            file_count: 10,
            entry_count: 12,
            content_bytes: 5000,
        };
        let spec = RunSpec::Backup { archive_path: path.clone(), backup_kind: BackupKind::Auto, note: None };
        let at = Timestamp(1_795_658_400_000 + n as i64 * 60_000);
        let id = journal.begin_run(&Event::Started { at, spec }).unwrap();
        let steps = [
            (Effect::Inspect, Outcome::Inspected { running: running.clone() }),
            (Effect::StopServices { services: running.clone() }, Outcome::Done),
            (Effect::WriteArchive { path: path.clone() }, Outcome::ArchiveWritten(facts.clone())),
            (Effect::RecordBackup { archive: facts.clone(), backup_kind: BackupKind::Auto, note: None }, Outcome::Done),
            (Effect::StartServices { services: running.clone() }, Outcome::Started { services: running.clone() }),
        ];
        for (effect, outcome) in steps {
            journal.append(id, &Event::Intent { at, effect }).unwrap();
            journal.append(id, &Event::Outcome { at, outcome }).unwrap();
        }
        journal
            .record_backup(&BackupEntry {
                id,
                run_id: id,
                kind: BackupKind::Auto,
                created_at: at,
                path,
                size_bytes: facts.size_bytes,
                file_count: facts.file_count,
                entry_count: facts.entry_count,
                content_bytes: facts.content_bytes,
                sha256: facts.sha256.clone(),
                note: None,
                protects_version: None,
            })
            .unwrap();
    }
    dir
}

/// Runs lifeboat with its stdout read for `read` bytes (0: not at all) and then closed.
fn with_early_closed_stdout(dir: &Path, args: &[&str], read: usize) -> std::process::Output {
    use std::io::Read;
    let mut child = Command::new(LIFEBOAT)
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .env_remove("FAILPOINTS")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut head = vec![0; read];
    stdout.read_exact(&mut head).unwrap();
    drop(stdout);
    child.wait_with_output().unwrap()
}

#[test]
fn a_closed_output_pipe_ends_every_listing_quietly() {
    let dir = long_catalog(300);
    for args in [
        &["list"][..],
        &["--json", "list"],
        &["journal", "list"],
        &["--json", "journal", "list"],
        &["journal", "show", "300"],
        &["--json", "journal", "show", "300"],
        &["completions", "bash"],
        &["man"],
    ] {
        for read in [0, 40] {
            let output = with_early_closed_stdout(dir.path(), args, read);
            let context = format!("lifeboat {} closed after {read} bytes: {}", args.join(" "), describe(&output));
            assert_eq!(output.status.code(), Some(0), "{context}");
            assert!(output.stderr.is_empty(), "{context}");
        }
    }
}
