//! Off-host copies to a directory remote (`file:///...`, a second disk) on the real daemon:
//! a backup ships an encrypted copy that the `age` CLI opens, `verify --remote` reads it back,
//! a remote that is missing leaves the copy pending without touching the backup, `push` ships it
//! later, an altered copy is exit 5, and a kill -9 at every fail point of shipping is settled by
//! `recover` with no catalogued incomplete copy and nothing partial left on the remote. The same
//! against a three-node Garage cluster is `e2e_remote_garage`.

mod e2e;
mod support;

use e2e::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The fixture configured with one directory remote at `dir`, encrypted to a fresh age identity
/// (written to `identity.txt` in the project, mode 0600). Returns the identity file.
fn configure_remote(project: &support::Project, dir: &Path, encrypted: bool) -> PathBuf {
    configure(project);
    let (identity, recipient) = lifeboat_remote::generate_identity();
    let identity_file = project.dir().join("identity.txt");
    std::fs::write(&identity_file, identity).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&identity_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let encryption = if encrypted {
        format!("encrypt_to = [\"{recipient}\"]\nidentity_file = \"identity.txt\"")
    } else {
        "encrypt = false".into()
    };
    let path = project.dir().join("lifeboat.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        format!("{text}\n[[remote]]\nname = \"second-disk\"\nurl = \"file://{}\"\n{encryption}\n", dir.display()),
    )
    .unwrap();
    identity_file
}

/// Every file under the remote directory, by name.
fn remote_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

fn copies(project: &support::Project) -> Vec<Value> {
    run_json(project, &["list", "--remote", "second-disk"])["objects"].as_array().cloned().unwrap_or_default()
}

#[test]
fn a_backup_ships_an_encrypted_copy_that_age_opens_and_verify_reads_back() {
    let Some((project, before)) = started_project() else { return };
    let remote = project.dir().join("offsite");
    std::fs::create_dir(&remote).unwrap();
    let identity = configure_remote(&project, &remote, true);

    let report = run_json(&project, &["backup"]);
    let copy = &report["copies"][0];
    assert_eq!(copy["status"], "shipped", "{report}");
    assert_eq!(copy["encrypted"], true, "{report}");
    let archive = PathBuf::from(report["path"].as_str().unwrap());
    let key = format!("{}.age", archive.file_name().unwrap().to_string_lossy());
    assert_eq!(copy["key"], key.as_str(), "{report}");
    assert_invariants(&project, &before);

    // On the remote: the copy and its metadata, nothing partial; GNU tar cannot read it, the age
    // CLI opens it into exactly the local archive.
    let archive_name = archive.file_name().unwrap().to_string_lossy().into_owned();
    let manifest = format!("{archive_name}.manifest.json.age");
    let mut expected = vec![key.clone(), format!("{key}.meta"), manifest.clone()];
    expected.sort();
    assert_eq!(remote_files(&remote), expected);
    // The manifest beside it is encrypted too: the project's name is not in it in the clear.
    let sealed = std::fs::read(remote.join(&manifest)).unwrap();
    assert!(sealed.starts_with(b"age-encryption.org/v1"), "an age file");
    assert!(!String::from_utf8_lossy(&sealed).contains(project.name()));
    let stored = remote.join(&key);
    let tar = Command::new("tar").arg("-tzf").arg(&stored).output().unwrap();
    assert!(!tar.status.success(), "an encrypted copy is not a readable tar");
    let plain = project.dir().join("decrypted.tar.gz");
    let age =
        Command::new("age").arg("-d").arg("-i").arg(&identity).arg("-o").arg(&plain).arg(&stored).output().unwrap();
    assert!(age.status.success(), "age -d: {}", String::from_utf8_lossy(&age.stderr));
    assert_eq!(sha256sum(&plain), report["sha256"].as_str().unwrap());

    let listed = copies(&project);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["status"], "ok");
    assert_eq!(listed[0]["backup_id"], report["backup_id"]);
    let verified = run_json(&project, &["verify", "--remote", "second-disk", "--all"]);
    assert_eq!(verified[0]["ok"], true, "{verified}");
    assert!(verified[0]["file_count"].as_u64().unwrap() > 0, "{verified}");

    let status = run_json(&project, &["status"]);
    assert_eq!(status["remotes"][0]["encrypted"], true, "{status}");
    assert_eq!(status["remotes"][0]["copies"], 1, "{status}");
    assert_eq!(status["remotes"][0]["pending"], 0, "{status}");
    assert_eq!(status["metrics"]["copies_pending"]["second-disk"], 0, "{status}");

    // Altered behind lifeboat's back (same length, one byte flipped): exit 5 naming the key.
    let mut bytes = std::fs::read(&stored).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&stored, &bytes).unwrap();
    let output = run(&project, &["verify", "--remote", "second-disk", "--all"]);
    assert_eq!(output.status.code(), Some(5), "{}", describe(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains(&key), "{}", describe(&output));
    // Truncated: exit 5 too.
    std::fs::write(&stored, &bytes[..middle]).unwrap();
    assert_eq!(run(&project, &["verify", "--remote", "second-disk", "--all"]).status.code(), Some(5));
}

#[test]
fn a_missing_remote_leaves_the_copy_pending_and_push_ships_it_later() {
    let Some((project, before)) = started_project() else { return };
    let remote = project.dir().join("not-mounted");
    configure_remote(&project, &remote, false);

    // The directory is not there (a disk not mounted): the settings are wrong, exit 2, but the
    // backup is recorded and the services are up.
    let output = run(&project, &["--json", "backup"]);
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    let report: Value = serde_json::from_slice(&output.stdout).expect("the backup's report is printed");
    assert_eq!(report["copies"][0]["status"], "pending", "{report}");
    assert!(report["copies"][0]["error"].as_str().unwrap().contains("second-disk"), "{report}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("pending"), "{}", describe(&output));
    assert_invariants(&project, &before);
    assert_eq!(run_json(&project, &["list"]).as_array().unwrap().len(), 1);
    let status = run_json(&project, &["status"]);
    assert_eq!(status["remotes"][0]["pending"], 1, "{status}");
    assert_eq!(status["remotes"][0]["encrypted"], false, "{status}");
    let text = run_expect(&project, &["status"], 0);
    assert!(text.contains("NOT ENCRYPTED") && text.contains("1 PENDING"), "{text}");
    // No run was journaled for a remote that failed its check.
    let runs = run_json(&project, &["journal", "list"]);
    assert_eq!(runs.as_array().unwrap().len(), 1, "{runs}");

    std::fs::create_dir(&remote).unwrap();
    let pushed = run_json(&project, &["push"]);
    assert_eq!(pushed["copies"][0]["status"], "shipped", "{pushed}");
    assert_eq!(run_json(&project, &["status"])["remotes"][0]["pending"], 0);
    let again = run_expect(&project, &["push"], 0);
    assert!(again.contains("nothing to ship"), "{again}");
    assert_eq!(run_json(&project, &["verify", "--remote", "second-disk", "--all"])[0]["ok"], true);
}

#[test]
fn a_remote_must_say_whether_it_encrypts() {
    let Some((project, _)) = started_project() else { return };
    let path = project.dir().join("lifeboat.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{text}\n[[remote]]\nname = \"x\"\nurl = \"file:///tmp\"\n")).unwrap();
    let output = run(&project, &["backup"]);
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("encrypt = false"), "{}", describe(&output));
    assert!(partial_files(&project.dir().join("backups")).is_empty());
    let archives = std::fs::read_dir(project.dir().join("backups")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(archives, 0, "nothing ran");
}

/// A kill -9 at every fail point of a shipping run, then `recover`: the copy is catalogued only
/// if the run completed, nothing partial is left on the remote, a second `recover` changes
/// nothing, and `push` then ships a copy that verifies.
#[test]
fn a_crash_at_every_fail_point_of_shipping_is_settled_by_recover() {
    let Some((project, before)) = started_project() else { return };
    let remote = project.dir().join("offsite");
    let away = project.dir().join("offsite.unmounted");
    std::fs::create_dir(&remote).unwrap();
    configure_remote(&project, &remote, true);
    let mut points = vec!["started".to_owned()];
    for effect in ["begin_upload", "upload_copy", "record_copy"] {
        for at in ["intent", "effect", "outcome"] {
            points.push(format!("{at}:{effect}"));
        }
    }
    for point in &points {
        // A backup while the remote's disk is away leaves its copy pending for `push`.
        std::fs::rename(&remote, &away).unwrap();
        run_expect(&project, &["backup"], 2);
        std::fs::rename(&away, &remote).unwrap();
        let pending_before = run_json(&project, &["status"])["remotes"][0]["pending"].as_u64().unwrap();
        assert!(pending_before >= 1, "{point}");

        crash_at(&project, &["push"], point);
        let output = run(&project, &["--json", "recover"]);
        assert_eq!(output.status.code(), Some(0), "{point}: recover: {}", describe(&output));
        let again = run_expect(&project, &["recover"], 0);
        assert!(again.contains("nothing to recover"), "{point}: a second recover changes nothing: {again}");

        let files = remote_files(&remote);
        assert!(files.iter().all(|f| !f.ends_with(".partial")), "{point}: nothing partial on the remote: {files:?}");
        // Every object on the remote is a catalogued copy of its catalogued size, and every
        // catalogued copy is there.
        let listed = copies(&project);
        assert!(listed.iter().all(|o| o["status"] == "ok"), "{point}: {listed:?}");
        // Past `outcome:record_copy` the copy is catalogued and recovery finished the run; at
        // every earlier point the copy was undone and is still pending.
        let pending_after = run_json(&project, &["status"])["remotes"][0]["pending"].as_u64().unwrap();
        let shipped = point == "outcome:record_copy";
        assert_eq!(pending_after, pending_before - u64::from(shipped), "{point}: {listed:?}");
        assert_invariants(&project, &before);
    }
    // Whatever is pending ships, and every copy verifies.
    run_expect(&project, &["push"], 0);
    let verified = run_json(&project, &["verify", "--remote", "second-disk", "--all"]);
    assert!(verified.as_array().unwrap().iter().all(|c| c["ok"] == true), "{verified}");
    let status = run_json(&project, &["status"]);
    assert_eq!(status["remotes"][0]["pending"], 0, "{status}");
}

/// A remote's retention (`keep_last` in its `[[remote]]`): prune deletes the older copies from
/// the remote, keeps the newest, and a pruned copy is never pending again; a catalogued copy
/// missing on the remote is kept in the catalog and reported, exit 5.
#[test]
fn prune_applies_each_remotes_retention_and_a_pruned_copy_is_not_shipped_again() {
    let Some((project, before)) = started_project() else { return };
    let remote = project.dir().join("offsite");
    std::fs::create_dir(&remote).unwrap();
    configure_remote(&project, &remote, false);
    let path = project.dir().join("lifeboat.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{text}keep_last = 2\n")).unwrap();
    let mut ids = Vec::new();
    for _ in 0..4 {
        let report = run_json(&project, &["backup"]);
        assert_eq!(report["copies"].as_array().unwrap().len(), 1, "{report}");
        ids.push(report["backup_id"].as_u64().unwrap());
    }
    assert_eq!(copies(&project).len(), 4);

    let dry = run_json(&project, &["prune", "--dry-run"]);
    assert_eq!(dry["remotes"][0]["deleted"], serde_json::json!([ids[0], ids[1]]), "{dry}");
    assert_eq!(copies(&project).len(), 4, "a dry run deletes nothing");

    let pruned = run_json(&project, &["prune"]);
    assert_eq!(pruned["remotes"][0]["deleted"], serde_json::json!([ids[0], ids[1]]), "{pruned}");
    assert_eq!(pruned["remotes"][0]["kept"][0]["reason"], "newest-verified", "{pruned}");
    assert!(pruned["deleted"].as_array().unwrap().is_empty(), "the local backups are within their retention");
    let listed = copies(&project);
    let kept: Vec<u64> = listed.iter().map(|o| o["backup_id"].as_u64().unwrap()).collect();
    assert_eq!(kept, [ids[2], ids[3]], "{listed:?}");
    assert!(listed.iter().all(|o| o["status"] == "ok"), "{listed:?}");
    assert_eq!(
        remote_files(&remote).len(),
        6,
        "two copies, their .meta files and manifests: {:?}",
        remote_files(&remote)
    );
    // The pruned copies are not pending: push ships nothing.
    assert_eq!(run_json(&project, &["status"])["remotes"][0]["pending"], 0);
    assert!(run_expect(&project, &["push"], 0).contains("nothing to ship"));

    // A catalogued copy gone from the remote: reported, kept in the catalog, exit 5.
    let key = listed[0]["key"].as_str().unwrap();
    std::fs::remove_file(remote.join(key)).unwrap();
    let output = run(&project, &["--json", "prune"]);
    assert_eq!(output.status.code(), Some(5), "{}", describe(&output));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["remotes"][0]["missing"], serde_json::json!([ids[2]]), "{report}");
    assert_eq!(copies(&project).iter().filter(|o| o["status"] == "missing").count(), 1);
    // The prune is a journaled run of kind prune, and the journal verifies.
    let runs = run_json(&project, &["journal", "list"]);
    assert!(runs.as_array().unwrap().iter().any(|r| r["kind"] == "prune"), "{runs}");
    assert_invariants(&project, &before);
}
