//! `lifeboat backup` end to end on the real daemon: what it stops, archives and restarts, what it
//! prints, and how it refuses bad situations.

mod e2e;
mod support;

use e2e::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use support::Project;

#[test]
fn backup_archives_every_record_and_restarts_only_what_was_running() {
    if !support::docker_available() {
        return;
    }
    let project = Project::start();
    configure(&project);
    project.wait_records(20, Duration::from_secs(30));
    let before = running(&project);
    assert_eq!(before, ["cache", "db", "writer"], "the fixture starts with idle stopped");

    let report = run_json(&project, &["backup", "--note", "first"]);

    // Services: the stopped one stays stopped, the others are up again.
    assert_invariants(&project, &before);
    assert_eq!(report["stopped"], serde_json::json!(["writer", "cache", "db"]), "stop order: dependants first");
    let mut restarted: Vec<String> = serde_json::from_value(report["restarted"].clone()).unwrap();
    restarted.sort();
    assert_eq!(restarted, before);
    assert!(report["downtime_ms"].as_i64().unwrap() > 0, "downtime is measured: {report}");

    // The archive: GNU tar reads it, and it holds every record the writer had, none torn.
    let archive = Path::new(report["path"].as_str().unwrap());
    let listing = Command::new("tar").arg("-tzf").arg(archive).output().unwrap();
    assert!(listing.status.success(), "tar -tzf: {}", String::from_utf8_lossy(&listing.stderr));
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(listing.lines().any(|l| l.trim_end_matches('/') == "paths/data/records.txt"), "{listing}");
    assert!(listing.lines().any(|l| l.starts_with("volumes/dbdata")), "named volume archived: {listing}");
    let out = tempfile::tempdir().unwrap();
    let status = Command::new("tar").arg("-xzf").arg(archive).arg("-C").arg(out.path()).status().unwrap();
    assert!(status.success());
    let archived = std::fs::read_to_string(out.path().join("paths/data/records.txt")).unwrap();
    let archived_count = support::check_records(&archived).expect("no torn record in the archive");
    assert!(archived_count >= 20, "archive holds {archived_count} records");
    // The writer continues from where it was: the archive is a prefix of the live file.
    assert!(project.read_records().starts_with(&archived), "the archive is a prefix of the records");
    let status = Command::new("gzip").arg("-t").arg(archive).status().unwrap();
    assert!(status.success(), "gzip -t");

    // The catalog matches the file.
    let list = run_json(&project, &["list"]);
    let entry = &list.as_array().unwrap()[0];
    assert_eq!(entry["sha256"], report["sha256"]);
    assert_eq!(entry["sha256"].as_str().unwrap(), sha256sum(archive));
    assert_eq!(entry["size_bytes"].as_u64().unwrap(), std::fs::metadata(archive).unwrap().len());
    assert_eq!(entry["kind"], "manual");
    assert_eq!(entry["note"], "first");
    run_expect(&project, &["verify", "--all"], 0);

    // The journal tells the story.
    let shown = run_json(&project, &["journal", "show", &report["run_id"].to_string()]);
    assert_eq!(shown["outcome"], "completed");
    let states: Vec<&str> = shown["events"].as_array().unwrap().iter().map(|e| e["state"].as_str().unwrap()).collect();
    for state in ["checking", "stopping", "archiving", "recording", "restarting"] {
        assert!(states.contains(&state), "journal show passes through {state}: {states:?}");
    }
    let runs = run_json(&project, &["journal", "list"]);
    assert_eq!(runs[0]["outcome"], "completed");
    assert_eq!(runs[0]["kind"], "backup");
}

#[test]
fn a_container_that_will_not_stop_fails_the_backup_and_changes_nothing() {
    if !support::docker_available() {
        return;
    }
    let project = Project::start();
    project.up_services(&["stubborn"]);
    configure_with(&project, "backups", 1);
    let before = running(&project);
    assert!(before.contains(&"stubborn".to_owned()));

    let output = run(&project, &["backup"]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("stubborn") && stderr.contains("stop_timeout_secs"), "{stderr}");
    assert!(stderr.contains("rolled back"), "{stderr}");
    assert_invariants(&project, &before);
    assert_eq!(run_json(&project, &["list"]), serde_json::json!([]), "nothing half-done is recorded");
}

#[test]
fn a_full_disk_fails_the_backup_and_leaves_no_partial_archive() {
    if !support::docker_available() {
        return;
    }
    let project = Project::start();
    // Enough data that the archive cannot fit in a 1 MiB filesystem.
    std::fs::write(project.data_dir().join("noise.bin"), random_bytes(4 << 20)).unwrap();
    let small = project.dir().join("small");
    std::fs::create_dir(&small).unwrap();
    let mounted = Command::new("mount").args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"]).arg(&small).status().unwrap();
    assert!(mounted.success(), "mount a 1 MiB tmpfs (the tests run as root)");
    let _unmount = Unmount(small.clone());
    configure_with(&project, "small", 10);
    let before = running(&project);

    let output = run(&project, &["backup"]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.to_lowercase().contains("no space"), "the error names the cause: {stderr}");
    assert_eq!(running(&project), before);
    assert_eq!(partial_files(&small), Vec::<std::path::PathBuf>::new());
    assert_eq!(std::fs::read_dir(&small).unwrap().count(), 0, "nothing left in the backup dir");
    assert_eq!(run_json(&project, &["list"]), serde_json::json!([]));
    run_expect(&project, &["journal", "verify"], 0);
}

struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_missing_data_path_fails_before_anything_stops() {
    if !support::docker_available() {
        return;
    }
    let project = Project::start();
    configure(&project);
    let toml = std::fs::read_to_string(project.dir().join("lifeboat.toml")).unwrap();
    std::fs::write(
        project.dir().join("lifeboat.toml"),
        toml.replace("paths = [\"data\"]", "paths = [\"data\", \"nope\"]"),
    )
    .unwrap();
    let before = running(&project);
    let output = run(&project, &["backup"]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("nope"), "{}", describe(&output));
    assert_invariants(&project, &before);
    assert_eq!(run_json(&project, &["list"]), serde_json::json!([]));
}

#[test]
fn an_unreachable_daemon_is_a_clear_error_and_starts_no_run() {
    // Needs no daemon: it points lifeboat at a socket that does not exist.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    let status = Command::new(LIFEBOAT).arg("-C").arg(dir.path()).args(["init", "--project", "x"]).status().unwrap();
    assert!(status.success());
    let output = Command::new(LIFEBOAT)
        .arg("-C")
        .arg(dir.path())
        .arg("backup")
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/nonexistent/docker.sock"), "names the socket: {stderr}");
    let list = Command::new(LIFEBOAT).arg("-C").arg(dir.path()).args(["--json", "journal", "list"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&list.stdout).trim(), "[]", "no run was started");
}

#[test]
fn a_second_run_while_one_holds_the_lock_exits_3_naming_the_pid() {
    if !support::docker_available() {
        return;
    }
    let project = Project::start();
    configure(&project);
    // Hold the first backup inside its archive step for a few seconds.
    let mut first =
        command(&project, &["backup"]).env("FAILPOINTS", "intent:write_archive=sleep(4000)").spawn().unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    let output = run(&project, &["backup"]);
    assert_eq!(output.status.code(), Some(3), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("pid {}", first.id())), "names the holder: {stderr}");
    assert!(first.wait().unwrap().success());
}

#[test]
fn an_unreadable_data_file_fails_the_backup_and_changes_nothing() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if !support::docker_available() {
        return;
    }
    let project = Project::start();
    configure(&project);
    // lifeboat runs as nobody here (root reads every file); nobody gets the socket's group, and
    // the named volumes (under /var/lib/docker, root's only) are left out.
    let toml = std::fs::read_to_string(project.dir().join("lifeboat.toml")).unwrap();
    std::fs::write(project.dir().join("lifeboat.toml"), toml.replace("volumes = true", "volumes = false")).unwrap();
    std::fs::set_permissions(project.dir(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let secret = project.data_dir().join("secret.key");
    std::fs::write(&secret, b"only root reads this").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o000)).unwrap();
    let socket_gid = std::fs::metadata("/var/run/docker.sock").unwrap().gid();
    let before = running(&project);

    let output = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", &format!("--groups={socket_gid}"), LIFEBOAT, "-C"])
        .arg(project.dir())
        .arg("backup")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("secret.key"), "the error names the file: {stderr}");
    assert!(stderr.contains("rolled back"), "{stderr}");
    assert_invariants(&project, &before);
    assert_eq!(run_json(&project, &["list"]), serde_json::json!([]), "nothing half-done is recorded");
}

#[test]
fn a_leftover_socket_is_skipped_and_reported_and_a_fifo_comes_back_on_restore() {
    use std::os::unix::fs::FileTypeExt;
    let Some((project, before)) = started_project() else { return };
    let data = project.data_dir();
    // A socket left behind by a process that is gone, as a database or a cache leaves one in its
    // data dir, and a named pipe.
    let socket = data.join("app.sock");
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let fifo = data.join("queue.fifo");
    let c_fifo = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c_fifo.as_ptr(), 0o640) }, 0);

    let output = run(&project, &["--json", "backup"]);
    assert_eq!(output.status.code(), Some(0), "a socket never fails a backup: {}", describe(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let skipped = report["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 1, "{report}");
    assert!(skipped[0]["path"].as_str().unwrap().ends_with("app.sock"), "{report}");
    assert_eq!(skipped[0]["kind"], "socket");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("app.sock"), "the skipped socket is named in a warning: {stderr}");
    assert_invariants(&project, &before);
    let id = report["backup_id"].to_string();
    let list = run_json(&project, &["list"]);
    assert_eq!(list[0]["skipped"], report["skipped"], "the catalog keeps what was skipped");
    let shown = run(&project, &["journal", "show", &id]);
    assert!(String::from_utf8_lossy(&shown.stdout).contains("skipped"), "{}", describe(&shown));
    // GNU tar sees the fifo, not the socket.
    let listing = Command::new("tar").arg("-tvzf").arg(report["path"].as_str().unwrap()).output().unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(listing.lines().any(|l| l.starts_with('p') && l.ends_with("paths/data/queue.fifo")), "{listing}");
    assert!(!listing.contains("app.sock"), "{listing}");

    // Restore: the fifo comes back as a fifo.
    std::fs::remove_file(&fifo).unwrap();
    run_expect(&project, &["restore", &id, "--yes"], 0);
    let kind = std::fs::symlink_metadata(&fifo).expect("the fifo is back").file_type();
    assert!(kind.is_fifo(), "{kind:?}");
    assert_invariants(&project, &before);
}

#[test]
fn a_zstd_backup_is_a_tar_zst_that_gnu_tar_reads_and_lifeboat_verifies_and_restores() {
    let Some((project, before)) = started_project() else { return };
    let config = project.dir().join("lifeboat.toml");
    let toml = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, toml.replace("compression_level = 6", "compression = \"zstd\"")).unwrap();

    let report = run_json(&project, &["backup"]);
    assert_invariants(&project, &before);
    let archive = Path::new(report["path"].as_str().unwrap());
    assert!(archive.to_string_lossy().ends_with(".tar.zst"), "{report}");
    let listing = Command::new("tar").arg("--zstd").arg("-tf").arg(archive).output().unwrap();
    assert!(listing.status.success(), "tar --zstd -tf: {}", String::from_utf8_lossy(&listing.stderr));
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(listing.lines().any(|l| l.trim_end_matches('/') == "paths/data/records.txt"), "{listing}");
    run_expect(&project, &["verify", "--all"], 0);

    // Back to gzip: the zstd backup still restores (the reader goes by the file, not the setting).
    std::fs::write(&config, toml).unwrap();
    std::fs::write(project.data_dir().join("records.txt"), b"overwritten\n").unwrap();
    let id = report["backup_id"].to_string();
    run_expect(&project, &["restore", &id, "--yes"], 0);
    let restored = std::fs::read_to_string(project.data_dir().join("records.txt")).unwrap();
    assert!(support::check_records(&restored).is_ok_and(|n| n > 0), "the records came back: {restored:?}");
    assert_invariants(&project, &before);
}
