//! Snapshot-mode backups on the real daemon (docs/design.md, "Snapshot backups"): the fixture's
//! writer appends fsynced records while the mirror is synced; the archive holds a contiguous,
//! untorn prefix of them, taken while the services were stopped; crashes at every fail point of
//! the mode, then `recover`, keep the invariants of the other kinds, and a run killed once its
//! services are back never touches them again.

mod e2e;
mod support;

use e2e::*;
use serde_json::Value;
use std::process::Command;
use support::Project;

/// The fixture project in snapshot mode, its services running.
fn snapshot_project() -> Option<(Project, Vec<String>)> {
    let (project, before) = started_project()?;
    let path = project.dir().join("lifeboat.toml");
    let toml = std::fs::read_to_string(&path).unwrap().replace("[backup]\n", "[backup]\nmode = \"snapshot\"\n");
    std::fs::write(path, toml).unwrap();
    Some((project, before))
}

/// The records file as the archive at `path` holds it, read back with GNU tar.
fn records_in(path: &str) -> String {
    let out = Command::new("tar").args(["-xzOf", path, "paths/data/records.txt"]).output().unwrap();
    assert!(out.status.success(), "tar: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// When each container last started: a run that restarts a service shows a new time.
fn started_at(project: &Project) -> Vec<(String, Option<String>)> {
    let mut list: Vec<_> = project.containers().into_iter().map(|c| (c.service, c.started_at)).collect();
    list.sort();
    list
}

fn last_run(project: &Project) -> Value {
    run_json(project, &["journal", "list"]).as_array().unwrap().last().unwrap().clone()
}

#[test]
fn a_snapshot_backup_archives_an_untorn_prefix_taken_while_stopped_and_reports_its_downtime() {
    let Some((project, before)) = snapshot_project() else { return };
    project.wait_records(20, std::time::Duration::from_secs(60));
    let first = run_json(&project, &["backup"]);
    assert_eq!(first["mode"], "snapshot", "{first}");
    let parts = &first["downtime_parts"];
    let sum = ["stop_ms", "sync_ms", "start_ms"].iter().map(|k| parts[k].as_i64().unwrap()).sum::<i64>();
    let downtime = first["downtime_ms"].as_i64().unwrap();
    assert!(sum <= downtime && downtime - sum < 1000, "the parts make the downtime: {first}");
    assert!(first["archive_ms"].as_i64().unwrap() > 0 && first["presync_ms"].as_i64().unwrap() > 0, "{first}");
    assert_invariants(&project, &before);

    // The archive: a contiguous, untorn run of records, a prefix of what the writer goes on with.
    let archived = records_in(first["path"].as_str().unwrap());
    let n = support::check_records(&archived).unwrap_or_else(|e| panic!("the archived records are torn: {e}"));
    assert!(n >= 20, "{n} records");
    let live = project.read_records();
    assert!(live.starts_with(&archived), "the archive is a prefix of the live records");
    assert!(live.len() > archived.len(), "the writer wrote on during the archive, after the restart");

    // The mirror is a consistent snapshot, and the next backup copies little of it again.
    let status = run_json(&project, &["status"]);
    let mode = &status["backup_mode"];
    assert_eq!(mode["mode"], "snapshot");
    assert!(mode["mirror_bytes"].as_u64().unwrap() > 0, "{status}");
    assert!(mode["mirror_consistent_at"].is_string(), "{status}");
    let second = run_json(&project, &["backup"]);
    let shown = run_json(&project, &["journal", "show", &second["run_id"].to_string()]);
    let synced: Vec<&str> = shown["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["detail"].as_str())
        .filter(|d| d.starts_with("mirror synced"))
        .collect();
    assert_eq!(synced.len(), 2, "a presync and a stopped sync: {synced:?}");
    let copied = |d: &str| d.split(", ").nth(1).and_then(|p| p.split(' ').next()).unwrap().parse::<u64>().unwrap();
    assert!(copied(synced[1]) <= 5, "the stopped sync copies only what changed since the presync: {synced:?}");
    let again = records_in(second["path"].as_str().unwrap());
    assert!(support::check_records(&again).is_ok() && again.starts_with(&archived));
    run_expect(&project, &["verify", "--all"], 0);
}

/// The fail points of a snapshot backup, with how many times to pass the point before dying
/// (the two syncs share their names), and whether the services were back when it died.
const SNAPSHOT_POINTS: &[(&str, usize, bool)] = &[
    ("intent:sync_mirror", 0, false),
    ("effect:sync_mirror", 0, false),
    ("outcome:sync_mirror", 0, false),
    ("intent:stop_services", 0, false),
    ("effect:stop_services", 0, false),
    ("intent:sync_mirror", 1, false),
    ("effect:sync_mirror", 1, false),
    ("outcome:sync_mirror", 1, false),
    ("effect:start_services", 0, false),
    ("outcome:start_services", 0, true),
    ("intent:write_archive", 0, true),
    ("effect:write_archive", 0, true),
    ("outcome:write_archive", 0, true),
    ("effect:record_backup", 0, true),
    ("outcome:record_backup", 0, true),
];

#[test]
fn crash_at_every_fail_point_of_a_snapshot_backup_then_recover() {
    let Some((project, before)) = snapshot_project() else { return };
    for &(point, pass, services_back) in SNAPSHOT_POINTS {
        let context = format!("{point} (after {pass} passes)");
        let armed = if pass == 0 { format!("{point}=return") } else { format!("{point}={pass}*off->return") };
        let output = command(&project, &["backup"]).env("FAILPOINTS", &armed).output().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(output.status.signal(), Some(libc::SIGKILL), "{context}: {}", describe(&output));
        let started = started_at(&project);
        let output = run(&project, &["recover"]);
        assert_eq!(output.status.code(), Some(0), "{context}: recover: {}", describe(&output));
        if services_back {
            // Killed with its services back: recovery leaves them alone.
            assert_eq!(started_at(&project), started, "{context}: recover restarted a service");
        }
        assert_invariants(&project, &before);
        let again = run_expect(&project, &["recover"], 0);
        assert!(again.contains("nothing to recover"), "{context}: {again}");
        let outcome = if point == "outcome:record_backup" { "completed" } else { "rolled_back" };
        assert_eq!(last_run(&project)["outcome"], outcome, "{context}");
        project.assert_records_intact();
    }
    // After all that, a snapshot backup still works, from a mirror the crashes left in any state.
    let report = run_json(&project, &["backup"]);
    assert!(support::check_records(&records_in(report["path"].as_str().unwrap())).is_ok());
    assert_invariants(&project, &before);
    run_expect(&project, &["verify", "--all"], 0);
}

#[test]
fn a_mirror_that_overlaps_the_data_is_refused_before_anything_stops() {
    let Some((project, before)) = snapshot_project() else { return };
    let path = project.dir().join("lifeboat.toml");
    let toml = std::fs::read_to_string(&path).unwrap().replace("[backup]\n", "[backup]\nmirror_dir = \"data/m\"\n");
    std::fs::write(path, toml).unwrap();
    let started = started_at(&project);
    let output = run(&project, &["backup"]);
    assert_eq!(output.status.code(), Some(2), "a configuration error: {}", describe(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("overlaps the data path data"), "{}", describe(&output));
    assert_eq!(started_at(&project), started);
    assert_invariants(&project, &before);
}

#[test]
fn sigkill_at_random_moments_of_snapshot_backups_then_recover() {
    use std::os::unix::process::ExitStatusExt;
    use std::time::{Duration, Instant};
    let Some((project, before)) = snapshot_project() else { return };
    let kills: usize = std::env::var("LIFEBOAT_SIGKILL_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    let mut seed: u64 = std::env::var("LIFEBOAT_SIGKILL_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x5a9);
    eprintln!("sigkill seed {seed}");
    // Some data, so the syncs and the archive take a noticeable part of the run.
    std::fs::write(project.data_dir().join("noise.bin"), random_bytes(24 << 20)).unwrap();
    // The first backup fills the mirror; the second is what a nightly one costs: kills spread over it.
    run_json(&project, &["backup"]);
    let start = Instant::now();
    run_json(&project, &["backup"]);
    let length = start.elapsed().as_millis() as u64;
    let mut killed_mid_run = 0;
    for i in 0..kills {
        // A new chunk each time, so each presync has something to copy.
        std::fs::write(project.data_dir().join(format!("chunk-{}.bin", i % 3)), random_bytes(4 << 20)).unwrap();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = seed % (length + 200);
        let mut child = command(&project, &["backup"]).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        // SAFETY: kill(2) of our own child has no memory-safety preconditions.
        let killed = unsafe { libc::kill(child.id() as i32, libc::SIGKILL) } == 0;
        let status = child.wait().unwrap();
        killed_mid_run += usize::from(killed && status.signal() == Some(libc::SIGKILL));
        let context = format!("kill {i} after {delay} ms");
        let output = run(&project, &["recover"]);
        assert_eq!(output.status.code(), Some(0), "{context}: recover: {}", describe(&output));
        assert_invariants(&project, &before);
        project.assert_records_intact();
    }
    eprintln!("{killed_mid_run} of {kills} snapshot backups were killed mid-run");
    assert!(killed_mid_run >= kills / 2, "most kills should land inside a run ({killed_mid_run} of {kills})");
    // Every archive that survived holds an untorn prefix of the records.
    for entry in run_json(&project, &["list"]).as_array().unwrap() {
        support::check_records(&records_in(entry["path"].as_str().unwrap())).unwrap();
    }
    run_expect(&project, &["verify", "--all"], 0);
}
