//! Disaster recovery end to end on the real daemon (docs/design.md, "Archive manifest" and
//! "Restore onto a new host"): an archive alone brings the project back in a new directory after
//! the old one and its volumes are gone; a crash anywhere in that restore is recovered to the
//! whole stack or to nothing it created; `import` and `journal rebuild` give back a catalog;
//! a restore in place follows the archive's roots, not today's configuration; an encrypted copy
//! on a remote alone brings the project back too.
//!
//! The binary must be built with the `failpoints` feature (the README's test command does so).

mod e2e;
mod support;

use e2e::*;
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use support::Project;

/// Files the test's services append to whenever they run: compared as an untorn prefix of what
/// was archived, since the restored services run. Everything else must be identical, but for
/// the file they rewrite every second, whose content is not compared.
const APPENDED_BY_SERVICES: [&str; 2] = ["records.txt", "started"];
const REWRITTEN_BY_SERVICES: &str = "heartbeat";

/// A directory on the "new host", and the compose project restored into it, both removed on drop
/// (also when the test panicked).
struct NewHost {
    dir: PathBuf,
    name: String,
    compose: String,
}

impl NewHost {
    fn new(project: &Project) -> NewHost {
        let dir = PathBuf::from(format!("{}-new-host", project.dir().display()));
        NewHost { dir, name: project.name().to_owned(), compose: project.compose_command() }
    }

    fn lifeboat(&self, args: &[&str]) -> Command {
        let mut command = Command::new(LIFEBOAT);
        command.arg("-C").arg(&self.dir).args(args).env_remove("FAILPOINTS").env_remove("RUST_LOG");
        command
    }

    fn run(&self, args: &[&str], code: i32) -> String {
        let output = self.lifeboat(args).output().expect("run lifeboat");
        assert_eq!(output.status.code(), Some(code), "lifeboat {}: {}", args.join(" "), describe(&output));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.run(&all, 0)).expect("JSON")
    }

    /// Everything the project has on the daemon, and the directory, gone.
    fn clean(&self) {
        let mut words = self.compose.split_whitespace();
        let mut down = Command::new(words.next().unwrap());
        down.args(words).args(["-p", &self.name]);
        if self.dir.join("docker-compose.yml").exists() {
            down.args(["-f"]).arg(self.dir.join("docker-compose.yml"));
        }
        let _ = down.args(["down", "-v", "--remove-orphans", "-t", "1"]).output();
        // Whatever compose could not see (no compose file left), by label.
        let ids = Command::new("docker")
            .args(["ps", "-aq", "--filter", &format!("label=com.docker.compose.project={}", self.name)])
            .output()
            .expect("docker ps");
        for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
            let _ = Command::new("docker").args(["rm", "-f", "-v", id]).output();
        }
        for volume in project_volumes(&self.name) {
            let _ = Command::new("docker").args(["volume", "rm", "-f", &volume]).output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for NewHost {
    fn drop(&mut self) {
        self.clean();
    }
}

/// The volumes of compose project `name` (by label), and any named after it.
fn project_volumes(name: &str) -> Vec<String> {
    let output = Command::new("docker").args(["volume", "ls", "-q"]).output().expect("docker volume ls");
    String::from_utf8_lossy(&output.stdout).lines().filter(|v| v.starts_with(name)).map(str::to_owned).collect()
}

/// The project's containers, running or not, by service.
fn containers(name: &str) -> BTreeMap<String, bool> {
    let output = Command::new("docker")
        .args(["ps", "-a", "--filter", &format!("label=com.docker.compose.project={name}")])
        .args(["--format", "{{.Label \"com.docker.compose.service\"}} {{.State}}"])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(s, state)| (s.to_owned(), state == "running")))
        .collect()
}

fn mountpoint(volume: &str) -> PathBuf {
    let output = Command::new("docker")
        .args(["volume", "inspect", "-f", "{{.Mountpoint}}", volume])
        .output()
        .expect("docker volume inspect");
    assert!(output.status.success(), "volume {volume}: {}", describe(&output));
    PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
}

/// Writes files the services never touch into the data path and the volume: contents, modes,
/// a symlink, a hard link, an empty directory, so the tree comparison has something to compare.
fn write_extra_files(project: &Project) {
    let data = project.data_dir().join("tree");
    std::fs::create_dir_all(data.join("sub/empty")).unwrap();
    std::fs::write(data.join("blob"), random_bytes(300_000)).unwrap();
    std::fs::write(data.join("sub/small"), "small\n").unwrap();
    std::fs::set_permissions(data.join("sub/small"), std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::symlink("../blob", data.join("sub/link")).unwrap();
    std::fs::hard_link(data.join("blob"), data.join("blob-again")).unwrap();
    let volume = mountpoint(&format!("{}_dbdata", project.name()));
    std::fs::write(volume.join("table.db"), random_bytes(200_000)).unwrap();
}

/// Every entry below `root` by relative path: (kind, mode, content or link target).
fn tree(root: &Path) -> BTreeMap<String, (String, u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, (String, u32, Vec<u8>)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let rel = path.strip_prefix(root).unwrap().display().to_string();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let mode = meta.mode() & 0o7777;
        if meta.is_dir() {
            out.insert(rel, ("dir".into(), mode, Vec::new()));
            walk(root, &path, out);
        } else if meta.file_type().is_symlink() {
            out.insert(
                rel,
                ("link".into(), 0, std::fs::read_link(&path).unwrap().into_os_string().into_encoded_bytes()),
            );
        } else {
            out.insert(rel, ("file".into(), mode, std::fs::read(&path).unwrap()));
        }
    }
}

/// `restored` holds exactly what `archived` holds; the files the services append to start with
/// what was archived.
fn assert_same_tree(archived: &Path, restored: &Path) {
    let (want, got) = (tree(archived), tree(restored));
    assert_eq!(
        want.keys().collect::<Vec<_>>(),
        got.keys().collect::<Vec<_>>(),
        "{} vs {}",
        archived.display(),
        restored.display()
    );
    for (rel, (kind, mode, content)) in &want {
        let (got_kind, got_mode, got_content) = &got[rel];
        assert_eq!((kind, mode), (got_kind, got_mode), "{rel}");
        let name = Path::new(rel).file_name().unwrap().to_string_lossy();
        if name == REWRITTEN_BY_SERVICES {
            continue;
        }
        if APPENDED_BY_SERVICES.contains(&name.as_ref()) {
            assert!(got_content.starts_with(content), "{rel}: the restored file does not begin with the archived one");
        } else {
            assert_eq!(content, got_content, "{rel}: content");
        }
    }
}

/// Backs the project up, copies the archive and its sidecar out, then destroys the project: its
/// containers and volumes (`compose down -v`) and its directory, `.lifeboat` with it.
fn back_up_then_destroy(project: &Project, keep: &Path) -> (PathBuf, serde_json::Value) {
    let report = run_json(project, &["backup", "--note", "before the disaster"]);
    let archive = project.dir().join(report["path"].as_str().expect("archive path"));
    std::fs::create_dir_all(keep).unwrap();
    let copy = keep.join(archive.file_name().unwrap());
    std::fs::copy(&archive, &copy).unwrap();
    let sidecar = PathBuf::from(format!("{}.sha256", archive.display()));
    std::fs::copy(&sidecar, keep.join(sidecar.file_name().unwrap())).unwrap();
    // The sidecar is in sha256sum's format: coreutils alone checks the copy.
    let check =
        Command::new("sha256sum").arg("-c").arg(sidecar.file_name().unwrap()).current_dir(keep).output().unwrap();
    assert!(check.status.success(), "sha256sum -c: {}", describe(&check));
    project.compose(&["down", "-v", "-t", "1"]);
    for entry in std::fs::read_dir(project.dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() { std::fs::remove_dir_all(&path).unwrap() } else { std::fs::remove_file(&path).unwrap() }
    }
    assert!(project_volumes(project.name()).is_empty(), "the volumes are gone");
    (copy, report)
}

/// GNU tar's view of the archive, extracted: the reference the restored trees are compared with.
fn extract_with_gnu_tar(archive: &Path, into: &Path) {
    std::fs::create_dir_all(into).unwrap();
    let output = Command::new("tar").arg("-xzf").arg(archive).arg("-C").arg(into).output().unwrap();
    assert!(output.status.success(), "GNU tar: {}", describe(&output));
}

#[test]
fn an_archive_alone_brings_the_project_back_on_a_new_host() {
    let Some((project, before)) = started_project() else { return };
    write_extra_files(&project);
    let keep = tempfile::tempdir().unwrap();
    let (archive, backup) = back_up_then_destroy(&project, keep.path());
    let reference = keep.path().join("reference");
    extract_with_gnu_tar(&archive, &reference);
    // GNU tar sees the manifest first, and the deployment files.
    let listing = Command::new("tar").arg("-tzf").arg(&archive).output().unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    assert_eq!(listing.lines().next(), Some("lifeboat/manifest.json"), "{listing}");
    for file in ["deploy/docker-compose.yml", "deploy/lifeboat.toml"] {
        assert!(listing.lines().any(|l| l == file), "{file} in {listing}");
    }

    let host = NewHost::new(&project);
    let archive_arg = archive.display().to_string();
    let report = host.json(&["restore", "--from", &archive_arg, "--yes"]);
    assert_eq!(report["backup_id"], backup["run_id"], "{report}");
    assert_eq!(report["created_volumes"], serde_json::json!([format!("{}_dbdata", project.name())]));

    // The services that were running run (and are up: the db's healthcheck passed before the
    // restore verified it); the stopped one was not started.
    let now = containers(project.name());
    let mut running: Vec<String> = now.iter().filter(|(_, up)| **up).map(|(s, _)| s.clone()).collect();
    running.sort();
    assert_eq!(running, before, "{now:?}");
    assert!(!now.get("idle").copied().unwrap_or(false), "idle stays stopped: {now:?}");

    // The data is what was archived.
    assert_same_tree(&reference.join("paths/data"), &host.dir.join("data"));
    assert_same_tree(&reference.join("volumes/dbdata"), &mountpoint(&format!("{}_dbdata", project.name())));
    assert_eq!(
        std::fs::read(host.dir.join("docker-compose.yml")).unwrap(),
        std::fs::read(reference.join("deploy/docker-compose.yml")).unwrap()
    );

    // The new catalog has the backup, under its id, and it verifies.
    let list = host.json(&["list"]);
    let ids: Vec<u64> = list.as_array().unwrap().iter().map(|e| e["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, [backup["run_id"].as_u64().unwrap()]);
    host.run(&["verify", "--all"], 0);
    host.run(&["journal", "verify"], 0);
    // A backup on the new host takes a new id, above the imported one.
    let next = host.json(&["backup"]);
    assert!(next["run_id"].as_u64().unwrap() > ids[0], "{next}");
}

#[test]
fn a_damaged_archive_or_a_missing_image_is_refused_before_anything_is_written() {
    let Some((project, _before)) = started_project() else { return };
    let keep = tempfile::tempdir().unwrap();
    let (archive, _) = back_up_then_destroy(&project, keep.path());
    let host = NewHost::new(&project);
    // One byte changed: the sidecar no longer matches (exit 5), and nothing is created.
    let damaged = keep.path().join("damaged.tar.gz");
    let mut bytes = std::fs::read(&archive).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&damaged, &bytes).unwrap();
    host.run(&["restore", "--from", &damaged.display().to_string(), "--yes"], 5);
    assert!(!host.dir.exists(), "nothing written for a damaged archive");
    // A truncated copy with the original sidecar beside it.
    let truncated = keep.path().join("truncated.tar.gz");
    std::fs::write(&truncated, &bytes[..middle]).unwrap();
    let sidecar = std::fs::read_to_string(format!("{}.sha256", archive.display())).unwrap();
    std::fs::write(
        keep.path().join("truncated.tar.gz.sha256"),
        sidecar.replace(archive.file_name().unwrap().to_str().unwrap(), "truncated.tar.gz"),
    )
    .unwrap();
    host.run(&["restore", "--from", &truncated.display().to_string(), "--yes"], 5);
    assert!(!host.dir.exists(), "nothing written for a truncated archive");
    assert!(project_volumes(project.name()).is_empty());
}

/// The fail points of a restore onto a new host, in the order the run passes them.
const RESTORE_NEW_POINTS: &[&str] = &[
    "started",
    "intent:verify_archive",
    "outcome:verify_archive",
    "intent:provision",
    "effect:provision",
    "outcome:provision",
    "intent:restore_data",
    "effect:restore_data",
    "outcome:restore_data",
    "intent:compose_up",
    "effect:compose_up",
    "outcome:compose_up",
    "intent:verify_services",
    "effect:verify_services",
    "outcome:verify_services",
    "intent:commit_data",
    "effect:commit_data",
];

#[test]
fn a_restore_onto_a_new_host_crashed_at_every_fail_point_ends_whole_or_with_nothing_it_created() {
    let Some((project, before)) = started_project() else { return };
    let keep = tempfile::tempdir().unwrap();
    let (archive, _) = back_up_then_destroy(&project, keep.path());
    let archive_arg = archive.display().to_string();
    let host = NewHost::new(&project);
    let committed = RESTORE_NEW_POINTS.iter().position(|p| *p == "outcome:verify_services").unwrap();
    for (i, point) in RESTORE_NEW_POINTS.iter().enumerate() {
        host.clean();
        let output = host
            .lifeboat(&["restore", "--from", &archive_arg, "--yes"])
            .env("FAILPOINTS", format!("{point}=return"))
            .output()
            .unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(output.status.signal(), Some(libc::SIGKILL), "{point}: {}", describe(&output));
        // While the run is interrupted, another restore refuses with exit 4.
        host.run(&["restore", "--from", &archive_arg, "--yes"], 4);
        host.run(&["recover"], 0);
        let again = host.run(&["recover"], 0);
        assert!(again.contains("nothing to recover"), "{point}: {again}");
        let runs = host.json(&["journal", "list"]);
        let outcome = runs.as_array().unwrap().last().unwrap()["outcome"].clone();
        if i >= committed {
            assert_eq!(outcome, "completed", "{point}");
            let mut running: Vec<String> =
                containers(project.name()).into_iter().filter(|(_, up)| *up).map(|(s, _)| s).collect();
            running.sort();
            assert_eq!(running, before, "{point}");
            assert!(host.dir.join("data/records.txt").exists(), "{point}");
        } else {
            assert_eq!(outcome, "rolled_back", "{point}");
            assert_eq!(containers(project.name()), BTreeMap::new(), "{point}: no container is left");
            assert_eq!(project_volumes(project.name()), Vec::<String>::new(), "{point}: no volume is left");
            let mut left: Vec<String> = std::fs::read_dir(&host.dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            left.sort();
            // The configuration and the journal stay, to tell the story; nothing else.
            assert_eq!(left, [".lifeboat", "lifeboat.toml"], "{point}");
        }
        host.run(&["journal", "verify"], 0);
    }
}

/// After `recover`: the whole stack (the run completed) or nothing the restore created (it
/// rolled back, or never started a run); a second `recover` changes nothing.
fn assert_whole_or_nothing(host: &NewHost, name: &str, before: &[String], context: &str) {
    // Killed before lifeboat.toml was in place, there is no project to recover, nor a run.
    if host.dir.join("lifeboat.toml").exists() {
        host.run(&["recover"], 0);
        let again = host.run(&["recover"], 0);
        assert!(again.contains("nothing to recover"), "{context}: {again}");
    }
    let runs = if host.dir.join(".lifeboat/journal.redb").exists() {
        host.json(&["journal", "list"])
    } else {
        serde_json::json!([])
    };
    let outcome = runs.as_array().unwrap().last().map(|r| r["outcome"].clone());
    if outcome.as_ref().is_some_and(|o| o == "completed") {
        let mut running: Vec<String> = containers(name).into_iter().filter(|(_, up)| *up).map(|(s, _)| s).collect();
        running.sort();
        assert_eq!(running, before, "{context}");
        assert!(host.dir.join("data/records.txt").exists(), "{context}");
    } else {
        assert_eq!(containers(name), BTreeMap::new(), "{context}: no container is left");
        assert_eq!(project_volumes(name), Vec::<String>::new(), "{context}: no volume is left");
        if host.dir.exists() {
            let mut left: Vec<String> = std::fs::read_dir(&host.dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            left.sort();
            // The configuration and the journal may stay, to tell the story; nothing else (a kill
            // while lifeboat.toml itself was written, before any run, may leave its `.partial`).
            left.retain(|n| n != ".lifeboat" && n != "lifeboat.toml" && n != "lifeboat.toml.partial");
            assert_eq!(left, Vec::<String>::new(), "{context}");
        }
    }
    if host.dir.join(".lifeboat/journal.redb").exists() {
        host.run(&["journal", "verify"], 0);
    }
}

#[test]
fn a_restore_onto_a_new_host_killed_at_random_moments_ends_whole_or_with_nothing_it_created() {
    use std::os::unix::process::ExitStatusExt;
    let Some((project, before)) = started_project() else { return };
    let kills: usize = std::env::var("LIFEBOAT_SIGKILL_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(6);
    let mut seed: u64 = std::env::var("LIFEBOAT_SIGKILL_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x5eed);
    eprintln!("sigkill seed {seed}");
    std::fs::write(project.data_dir().join("noise.bin"), random_bytes(16 << 20)).unwrap();
    let keep = tempfile::tempdir().unwrap();
    let (archive, _) = back_up_then_destroy(&project, keep.path());
    let archive_arg = archive.display().to_string();
    let host = NewHost::new(&project);
    // One clean restore measures the window the kills are spread over.
    let start = std::time::Instant::now();
    host.run(&["restore", "--from", &archive_arg, "--yes"], 0);
    let length = start.elapsed().as_millis() as u64;
    let mut killed_mid_run = 0;
    for i in 0..kills {
        host.clean();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = seed % (length + 100);
        let mut child = host.lifeboat(&["restore", "--from", &archive_arg, "--yes"]).spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay));
        // SAFETY: kill(2) has no memory-safety preconditions.
        let killed = unsafe { libc::kill(child.id() as i32, libc::SIGKILL) } == 0;
        let status = child.wait().unwrap();
        killed_mid_run += usize::from(killed && status.signal() == Some(libc::SIGKILL));
        assert_whole_or_nothing(&host, project.name(), &before, &format!("kill {i} after {delay} of {length} ms"));
    }
    eprintln!("{killed_mid_run} of {kills} restores were killed mid-run");
    assert!(killed_mid_run >= kills / 2, "most kills should land inside a run ({killed_mid_run} of {kills})");
}

#[test]
fn a_volume_that_exists_is_refused_unless_named_and_survives_a_rollback() {
    let Some((project, _before)) = started_project() else { return };
    let keep = tempfile::tempdir().unwrap();
    let (archive, _) = back_up_then_destroy(&project, keep.path());
    let archive_arg = archive.display().to_string();
    let host = NewHost::new(&project);
    let volume = format!("{}_dbdata", project.name());
    let created = Command::new("docker").args(["volume", "create", &volume]).output().unwrap();
    assert!(created.status.success());
    std::fs::write(mountpoint(&volume).join("precious"), "was here first\n").unwrap();

    let output = host.lifeboat(&["restore", "--from", &archive_arg, "--yes"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains(&format!("--replace {volume}")), "{}", describe(&output));
    assert!(!host.dir.exists(), "nothing written");

    // Named, and the run killed after the data went in: the rollback puts the volume's data back
    // and leaves the volume, which it did not create.
    let output = host
        .lifeboat(&["restore", "--from", &archive_arg, "--replace", &volume, "--yes"])
        .env("FAILPOINTS", "outcome:restore_data=return")
        .output()
        .unwrap();
    assert!(!output.status.success(), "{}", describe(&output));
    host.run(&["recover"], 0);
    assert_eq!(std::fs::read_to_string(mountpoint(&volume).join("precious")).unwrap(), "was here first\n");
    assert!(!mountpoint(&volume).join("table.db").exists() && !mountpoint(&volume).join("started").exists());
    let _ = std::fs::remove_dir_all(&host.dir);
}

#[test]
fn import_rebuilds_the_catalog_and_journal_rebuild_recovers_from_a_broken_journal() {
    let Some((project, _before)) = started_project() else { return };
    let mut made = Vec::new();
    for note in ["one", "two", "three"] {
        made.push(run_json(&project, &["backup", "--note", note]));
    }
    let list_before = run_json(&project, &["list"]);
    let fields = |list: &serde_json::Value| -> Vec<(u64, String, u64, String)> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["id"].as_u64().unwrap(),
                    e["kind"].as_str().unwrap().to_owned(),
                    e["size_bytes"].as_u64().unwrap(),
                    e["sha256"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };

    // An empty project (a new journal) beside the archives: import gives the same ids, kinds,
    // sizes and hashes; importing again changes nothing.
    std::fs::remove_dir_all(project.dir().join(".lifeboat")).unwrap();
    let archives: Vec<String> =
        made.iter().map(|r| project.dir().join(r["path"].as_str().unwrap()).display().to_string()).collect();
    let mut args = vec!["import"];
    args.extend(archives.iter().map(String::as_str));
    let imported = run_json(&project, &args);
    assert!(imported["archives"].as_array().unwrap().iter().all(|a| a["outcome"] == "imported"), "{imported}");
    assert_eq!(fields(&run_json(&project, &["list"])), fields(&list_before));
    let again = run_json(&project, &args);
    assert!(again["archives"].as_array().unwrap().iter().all(|a| a["outcome"] == "already_catalogued"), "{again}");
    run_expect(&project, &["verify", "--all"], 0);
    run_expect(&project, &["journal", "verify"], 0);

    // Random bytes over the journal: it no longer opens (exit 5), `journal rebuild` moves it
    // aside (kept, byte for byte) and imports backup.dir again.
    let journal = project.dir().join(".lifeboat/journal.redb");
    let mut bytes = std::fs::read(&journal).unwrap();
    let noise = random_bytes(bytes.len() / 2);
    bytes[..noise.len()].copy_from_slice(&noise);
    std::fs::write(&journal, &bytes).unwrap();
    run_expect(&project, &["list"], 5);
    let rebuilt = run_json(&project, &["journal", "rebuild"]);
    let kept = PathBuf::from(rebuilt["broken_journal_kept_at"].as_str().unwrap());
    assert_eq!(std::fs::read(&kept).unwrap(), bytes, "the broken journal is kept as it was");
    assert_eq!(fields(&run_json(&project, &["list"])), fields(&list_before));
    // A working journal is not rebuilt.
    run_expect(&project, &["journal", "rebuild"], 2);
    // And a restore of an imported backup works.
    let id = list_before.as_array().unwrap()[1]["id"].as_u64().unwrap().to_string();
    run_expect(&project, &["restore", &id, "--yes"], 0);
}

#[test]
fn a_restore_in_place_follows_the_archive_and_names_what_the_configuration_changed() {
    let Some((project, before)) = started_project() else { return };
    std::fs::create_dir(project.dir().join("extra")).unwrap();
    std::fs::write(project.dir().join("extra/kept"), "in the backup\n").unwrap();
    let toml_path = project.dir().join("lifeboat.toml");
    let toml = std::fs::read_to_string(&toml_path).unwrap();
    std::fs::write(&toml_path, toml.replace("paths = [\"data\"]", "paths = [\"data\", \"extra\"]")).unwrap();
    let backup = run_json(&project, &["backup"]);
    // Since the backup: `extra` dropped from the config, `other` added; `extra` changed.
    std::fs::write(project.dir().join("extra/kept"), "changed after\n").unwrap();
    std::fs::create_dir(project.dir().join("other")).unwrap();
    std::fs::write(project.dir().join("other/file"), "untouched\n").unwrap();
    std::fs::write(&toml_path, toml.replace("paths = [\"data\"]", "paths = [\"data\", \"other\"]")).unwrap();

    let id = backup["run_id"].as_u64().unwrap().to_string();
    let report = run_json(&project, &["restore", &id, "--yes"]);
    let restored: Vec<&str> = report["restored"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(restored, ["paths/data", "paths/extra", "volumes/dbdata"], "{report}");
    let differences = report["differences"].to_string();
    assert!(differences.contains("paths/other is in lifeboat.toml but not in the backup"), "{report}");
    assert!(differences.contains("paths/extra is in the backup but not in lifeboat.toml"), "{report}");
    assert_eq!(std::fs::read_to_string(project.dir().join("extra/kept")).unwrap(), "in the backup\n");
    assert_eq!(std::fs::read_to_string(project.dir().join("other/file")).unwrap(), "untouched\n");
    assert_invariants(&project, &before);
}

/// The disaster drill with an off-host copy (README, "Off-host copies"): the host's backups, its
/// project directory and its volumes are gone; what is left is the encrypted copy on a directory
/// remote (a second disk) and the age identity kept elsewhere. `restore --from file:///...`
/// downloads and decrypts it, checks it against the sha256 stored with it, and brings the project
/// back with the data that was archived.
#[test]
fn a_remote_copy_alone_brings_the_project_back_on_a_new_host() {
    let Some((project, before)) = started_project() else { return };
    write_extra_files(&project);
    let offsite = tempfile::tempdir().unwrap();
    let (identity, recipient) = lifeboat_remote::generate_identity();
    let identity_file = offsite.path().join("identity.txt");
    std::fs::write(&identity_file, identity).unwrap();
    std::fs::set_permissions(&identity_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let copies = offsite.path().join("copies");
    std::fs::create_dir(&copies).unwrap();
    let config = project.dir().join("lifeboat.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let remote = format!(
        "[[remote]]\nname = \"disk2\"\nurl = \"file://{}\"\nencrypt_to = [\"{recipient}\"]\n",
        copies.display()
    );
    std::fs::write(&config, format!("{text}\n{remote}")).unwrap();

    // An older backup first, then one with a file the older one lacks.
    let older = run_json(&project, &["backup"]);
    assert_eq!(older["copies"][0]["status"], "shipped", "{older}");
    std::fs::write(project.data_dir().join("only-in-the-newer-backup"), b"newer").unwrap();
    let backup = run_json(&project, &["backup"]);
    assert_eq!(backup["copies"][0]["status"], "shipped", "{backup}");
    let key = backup["copies"][0]["key"].as_str().unwrap().to_owned();
    // The reference: GNU tar's view of the local archive, before the disaster takes it.
    let reference = offsite.path().join("reference");
    extract_with_gnu_tar(&project.dir().join(backup["path"].as_str().unwrap()), &reference);
    project.compose(&["down", "-v", "-t", "1"]);
    for entry in std::fs::read_dir(project.dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() { std::fs::remove_dir_all(&path).unwrap() } else { std::fs::remove_file(&path).unwrap() }
    }
    assert!(project_volumes(project.name()).is_empty(), "the volumes are gone");

    let host = NewHost::new(&project);
    let url = format!("file://{}/{key}", copies.display());
    // Without the identity an encrypted copy is refused before anything is written.
    let refused = host.lifeboat(&["restore", "--from", &url, "--yes"]).output().unwrap();
    assert_eq!(refused.status.code(), Some(2), "{}", describe(&refused));
    assert!(!host.dir.join("lifeboat.toml").exists());

    let identity_arg = identity_file.display().to_string();
    let report = host.json(&["restore", "--from", &url, "--identity", &identity_arg, "--yes"]);
    assert_eq!(report["backup_id"], backup["run_id"], "{report}");
    let now = containers(project.name());
    let mut running: Vec<String> = now.iter().filter(|(_, up)| **up).map(|(s, _)| s.clone()).collect();
    running.sort();
    assert_eq!(running, before, "{now:?}");
    assert_same_tree(&reference.join("paths/data"), &host.dir.join("data"));
    assert_same_tree(&reference.join("volumes/dbdata"), &mountpoint(&format!("{}_dbdata", project.name())));
    // The fetched archive is the new catalog's backup, and verifies.
    let list = host.json(&["list"]);
    assert_eq!(list[0]["sha256"], backup["sha256"], "{list}");
    host.run(&["verify", "--all"], 0);

    // The rest of the history comes from the remote's manifests: the older backup is catalogued
    // (its archive not downloaded), the restored one is known already; importing again changes
    // nothing.
    let imported = host.json(&["import", "--remote", "disk2", "--identity", &identity_arg]);
    let outcomes: BTreeMap<u64, String> = imported["copies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["backup_id"].as_u64().unwrap(), c["outcome"].as_str().unwrap().to_owned()))
        .collect();
    let (older_id, newer_id) = (older["backup_id"].as_u64().unwrap(), backup["backup_id"].as_u64().unwrap());
    assert_eq!(outcomes[&older_id], "imported", "{imported}");
    assert_eq!(outcomes[&newer_id], "already_catalogued", "{imported}");
    let again = host.json(&["import", "--remote", "disk2", "--identity", &identity_arg]);
    assert!(again["copies"].as_array().unwrap().iter().all(|c| c["outcome"] == "already_catalogued"), "{again}");
    let list = host.json(&["list"]);
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    let listed = host.json(&["list", "--remote", "disk2"]);
    assert!(listed["objects"].as_array().unwrap().iter().all(|o| o["status"] == "ok"), "{listed}");

    // Restoring the older backup fetches its copy from the remote first.
    let older_arg = older_id.to_string();
    host.json(&["restore", &older_arg, "--yes", "--identity", &identity_arg]);
    assert!(!host.dir.join("data/only-in-the-newer-backup").exists(), "the older backup's data is back");
    let fetched = PathBuf::from(host.json(&["list"])[0]["path"].as_str().unwrap().to_owned());
    assert_eq!(sha256sum(&host.dir.join(&fetched)), older["sha256"].as_str().unwrap());
    host.run(&["verify", "--all"], 0);
    host.run(&["journal", "verify"], 0);
}
