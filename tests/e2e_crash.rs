//! Crashes of the real binary on the real daemon: at every fail point of a backup (and again during
//! recovery), and by SIGKILL at random moments. After `lifeboat recover` the invariants of the
//! ARCHITECTURE.md hold, and a second `recover` changes nothing.
//!
//! The binary must be built with the `failpoints` feature (the README's test command does so).

mod e2e;
mod support;

use e2e::*;
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};
use support::Project;

/// Every point a backup passes, in order: after the run is started, then after the intent, after
/// the effect (before its outcome is journaled) and after the outcome of each step.
const BACKUP_POINTS: &[&str] = &[
    "started",
    "intent:inspect",
    "effect:inspect",
    "outcome:inspect",
    "intent:stop_services",
    "effect:stop_services",
    "outcome:stop_services",
    "intent:write_archive",
    "effect:write_archive",
    "outcome:write_archive",
    "intent:record_backup",
    "effect:record_backup",
    "outcome:record_backup",
    "intent:start_services",
    "effect:start_services",
    "outcome:start_services",
];

/// Points recovery itself passes, for the crash-during-recovery cases.
const RECOVERY_POINTS: &[&str] = &[
    "recovering",
    "intent:discard_archive",
    "effect:discard_archive",
    "intent:start_services",
    "effect:start_services",
];

/// Runs `lifeboat backup` with one fail point armed and asserts it died by SIGKILL there.
fn backup_crashing_at(project: &Project, point: &str) {
    crash_at(project, &["backup"], point);
}

/// `lifeboat recover`, then the invariants, then a second `recover` that finds nothing to do.
fn recover_and_check(project: &Project, running_before: &[String], context: &str) {
    let output = run(project, &["recover"]);
    assert_eq!(output.status.code(), Some(0), "{context}: recover: {}", describe(&output));
    assert_invariants(project, running_before);
    let again = run_expect(project, &["recover"], 0);
    assert!(again.contains("nothing to recover"), "{context}: a second recover changes nothing: {again}");
    // A run that was interrupted after its archive was recorded finished: its backup is good.
    run_expect(project, &["verify", "--all"], 0);
    project.assert_records_intact();
}

#[test]
fn crash_at_every_fail_point_of_a_backup_then_recover() {
    let Some((project, before)) = started_project() else { return };
    let mut completed = 0;
    for point in BACKUP_POINTS {
        backup_crashing_at(&project, point);
        // While the run is interrupted, other commands refuse with exit 4. After the last outcome
        // is journaled the run has ended, and nothing is interrupted.
        let refused = run(&project, &["backup"]);
        let code = if *point == "outcome:start_services" { 0 } else { 4 };
        assert_eq!(refused.status.code(), Some(code), "{point}: {}", describe(&refused));
        completed += usize::from(code == 0);
        recover_and_check(&project, &before, point);
        let last = run_json(&project, &["journal", "list"]);
        let last = last.as_array().unwrap().last().unwrap().clone();
        // Past the point of no return (the catalog entry's outcome is journaled) recovery finishes;
        // before it, even with the entry written but its outcome not journaled, it rolls back.
        let expected = if *point == "outcome:record_backup" || point.ends_with("start_services") {
            "completed"
        } else {
            "rolled_back"
        };
        assert_eq!(last["outcome"], expected, "{point}: the recovered run ends {expected}: {last}");
        completed += usize::from(expected == "completed");
    }
    let list = run_json(&project, &["list"]);
    assert_eq!(list.as_array().unwrap().len(), completed, "exactly the recovered-to-completed backups are listed");
}

#[test]
fn crash_during_recovery_then_recover_again() {
    let Some((project, before)) = started_project() else { return };
    // Interrupt a backup after its archive is written but before it is recorded: recovery must
    // discard the archive and restart the services, and may itself be interrupted doing so.
    for point in RECOVERY_POINTS {
        backup_crashing_at(&project, "outcome:write_archive");
        crash_at(&project, &["recover"], point);
        recover_and_check(&project, &before, point);
        let runs = run_json(&project, &["journal", "list"]);
        assert_eq!(runs.as_array().unwrap().last().unwrap()["outcome"], "rolled_back", "{point}");
    }
    assert_eq!(run_json(&project, &["list"]), serde_json::json!([]));
}

/// A tiny deterministic generator, so a failing case can be replayed from its printed seed.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

#[test]
fn sigkill_at_random_moments_then_recover() {
    if !support::docker_available() {
        return;
    }
    let kills: usize = std::env::var("LIFEBOAT_SIGKILL_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let mut seed: u64 = std::env::var("LIFEBOAT_SIGKILL_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x5eed);
    eprintln!("sigkill seed {seed}");
    let project = Project::start();
    // Some data so the archive step takes a noticeable part of the run.
    std::fs::write(project.data_dir().join("noise.bin"), random_bytes(32 << 20)).unwrap();
    configure(&project);
    let before = running(&project);

    // Measure one clean backup to spread the kills over its whole length.
    let start = Instant::now();
    run_json(&project, &["backup"]);
    let length = start.elapsed().as_millis() as u64;
    let mut killed_mid_run = 0;
    for i in 0..kills {
        let delay = next(&mut seed) % (length + 200);
        let mut child = command(&project, &["backup"]).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        let killed = unsafe { libc::kill(child.id() as i32, libc::SIGKILL) } == 0;
        let status = child.wait().unwrap();
        killed_mid_run += usize::from(killed && status.signal() == Some(libc::SIGKILL));
        recover_and_check(&project, &before, &format!("kill {i} after {delay} ms"));
    }
    eprintln!("{killed_mid_run} of {kills} backups were killed mid-run");
    assert!(killed_mid_run >= kills / 2, "most kills should land inside a run ({killed_mid_run} of {kills})");
}
