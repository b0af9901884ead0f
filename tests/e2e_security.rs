//! Safe by default (docs/security.md), end to end on the real daemon: what lifeboat creates is
//! private whatever the umask, a backup dir other users can plant names in is refused, a planted
//! link is never followed, and `backup.max_bytes`/`max_files` stop a volume that grows without end.

mod e2e;
mod support;

use e2e::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The group the tests let read backups: Debian's `backup` (gid 34), present on every Debian host.
const GROUP: &str = "backup";

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).mode() & 0o7777
}

fn gid(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().gid()
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn group_gid(name: &str) -> u32 {
    let output = Command::new("getent").args(["group", name]).output().expect("run getent");
    assert!(output.status.success(), "the group {name} exists on the test host");
    String::from_utf8_lossy(&output.stdout).split(':').nth(2).unwrap().trim().parse().unwrap()
}

/// `lifeboat -C DIR ARGS` under `umask MASK`, set by a shell that then execs lifeboat.
fn run_with_umask(dir: &Path, umask: &str, args: &[&str]) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg(format!("umask {umask}; exec \"$0\" \"$@\""))
        .arg(LIFEBOAT)
        .arg("-C")
        .arg(dir)
        .args(args)
        .env_remove("FAILPOINTS")
        .env_remove("RUST_LOG")
        .output()
        .expect("run lifeboat under a umask")
}

/// Adds `lines` to the `[backup]` section of the project's `lifeboat.toml`.
fn add_backup_keys(dir: &Path, lines: &str) {
    let path = dir.join("lifeboat.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.replacen("[backup]\n", &format!("[backup]\n{lines}\n"), 1);
    std::fs::write(path, text).unwrap();
}

fn set_backup_dir(dir: &Path, backup_dir: &str) {
    let path = dir.join("lifeboat.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.replacen("dir = \"backups\"", &format!("dir = \"{backup_dir}\""), 1);
    std::fs::write(path, text).unwrap();
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Every path lifeboat creates for a backup has the documented mode under `umask`: first with
/// root-only backups, then with `backup.group` (in a new, nested backup dir).
fn modes_under_umask(umask: &str) {
    let Some((project, before)) = started_project() else { return };
    let dir = project.dir();
    assert!(!dir.join(".lifeboat").exists() && !dir.join("backups").exists());

    let output = run_with_umask(dir, umask, &["--json", "backup"]);
    assert_eq!(output.status.code(), Some(0), "umask {umask}: {}", describe(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let archive = PathBuf::from(report["path"].as_str().unwrap());
    assert_eq!(archive.parent().unwrap(), dir.join("backups"));
    assert_eq!(mode(&dir.join("backups")), 0o700, "umask {umask}: the backup dir");
    assert_eq!(mode(&dir.join(".lifeboat")), 0o700, "umask {umask}: .lifeboat/");
    assert_eq!(mode(&dir.join(".lifeboat/journal.redb")), 0o600, "umask {umask}: the journal");
    assert_eq!(mode(&dir.join(".lifeboat/lock")), 0o600, "umask {umask}: the lock file");
    assert_eq!(mode(&archive), 0o600, "umask {umask}: the archive");
    assert_invariants(&project, &before);

    // With backup.group: a new backup dir (and the parent lifeboat makes for it) 0750 with that
    // group, the archive 0640 with it.
    let group = group_gid(GROUP);
    add_backup_keys(dir, &format!("group = \"{GROUP}\""));
    set_backup_dir(dir, "shared/inner");
    let output = run_with_umask(dir, umask, &["--json", "backup"]);
    assert_eq!(output.status.code(), Some(0), "umask {umask}: {}", describe(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let archive = PathBuf::from(report["path"].as_str().unwrap());
    assert_eq!(archive.parent().unwrap(), dir.join("shared/inner"));
    for made in [dir.join("shared"), dir.join("shared/inner")] {
        assert_eq!((mode(&made), gid(&made)), (0o750, group), "umask {umask}: {}", made.display());
    }
    assert_eq!((mode(&archive), gid(&archive)), (0o640, group), "umask {umask}: the shared archive");
    assert_eq!(mode(&dir.join(".lifeboat/journal.redb")), 0o600, "the journal stays private");

    // Nothing lifeboat made is reported as exposed.
    let status = run_json(&project, &["status"]);
    assert_eq!(status["warnings"], serde_json::json!([]), "umask {umask}: {status}");
    run_expect(&project, &["verify", "--all"], 0);
    assert_eq!(running(&project), before);
}

#[test]
fn what_lifeboat_creates_is_private_under_umask_000() {
    modes_under_umask("000");
}

#[test]
fn what_lifeboat_creates_is_private_under_umask_022() {
    modes_under_umask("022");
}

#[test]
fn init_creates_the_state_and_backup_dirs_private() {
    let tmp = tempfile::tempdir().unwrap();
    let output = run_with_umask(tmp.path(), "000", &["init", "--project", "demo"]);
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    for made in [".lifeboat", "backups"] {
        let path = tmp.path().join(made);
        assert_eq!(mode(&path), 0o700, "{made}");
        assert!(stdout.contains(&format!("created {}", path.display())), "init says it created {made}: {stdout}");
    }
    assert_eq!(mode(&tmp.path().join("lifeboat.toml")) & 0o022, 0, "init writes no file others can change");
    // The written file documents the keys of issue 16, commented out (off by default).
    let toml = std::fs::read_to_string(tmp.path().join("lifeboat.toml")).unwrap();
    for key in ["# group = ", "# max_bytes = ", "# max_files = "] {
        assert!(toml.contains(key), "lifeboat.toml documents {key}: {toml}");
    }
}

#[test]
fn an_unknown_group_is_a_configuration_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let init = Command::new(LIFEBOAT).arg("-C").arg(tmp.path()).args(["init", "--project", "demo"]).output().unwrap();
    assert!(init.status.success(), "{}", describe(&init));
    add_backup_keys(tmp.path(), "group = \"no-such-group-lifeboat\"");
    for args in [&["backup"][..], &["auto-backup", "run"], &["status"]] {
        let output = Command::new(LIFEBOAT).arg("-C").arg(tmp.path()).args(args).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}: {}", describe(&output));
        let err = stderr(&output);
        assert!(err.contains("\"no-such-group-lifeboat\"") && err.contains("backup.group"), "{args:?}: {err}");
    }
    assert!(!tmp.path().join(".lifeboat/journal.redb").exists(), "nothing was started");
}

#[test]
fn status_and_verify_warn_about_what_others_can_read() {
    let Some((project, before)) = started_project() else { return };
    let report = run_json(&project, &["backup"]);
    let archive = PathBuf::from(report["path"].as_str().unwrap());
    let backups = project.dir().join("backups");
    let journal = project.dir().join(".lifeboat/journal.redb");
    assert_eq!(run_json(&project, &["status"])["warnings"], serde_json::json!([]));

    // Widened after the fact (an operator's chmod, an older lifeboat): readable, not writable,
    // so backups still run, but every wide path is named.
    chmod(&backups, 0o755);
    chmod(&archive, 0o644);
    chmod(&journal, 0o644);
    let status = run_json(&project, &["status"]);
    let warnings: Vec<String> = serde_json::from_value(status["warnings"].clone()).unwrap();
    for path in [&backups, &archive, &journal] {
        let shown = format!("{} is readable by others", path.display());
        assert!(warnings.iter().any(|w| w.starts_with(&shown)), "status --json names {shown}: {warnings:?}");
    }
    let human = run_expect(&project, &["status"], 0);
    assert!(human.contains(&format!("WARNING   {} is readable by others (mode 0755)", backups.display())), "{human}");
    assert!(human.contains("chmod 700"), "the warning says what to do: {human}");

    let output = run(&project, &["verify", "--all"]);
    assert_eq!(output.status.code(), Some(0), "a warning does not fail verification: {}", describe(&output));
    let err = stderr(&output);
    for path in [&backups, &archive] {
        assert!(err.contains(&format!("warning: {} is readable by others", path.display())), "verify: {err}");
    }
    let verified = run_json(&project, &["verify", "--all"]);
    let entry_warnings: Vec<String> = serde_json::from_value(verified[0]["warnings"].clone()).unwrap();
    for path in [&backups, &archive, &journal] {
        let shown = format!("{} is readable by others", path.display());
        assert!(entry_warnings.iter().any(|w| w.starts_with(&shown)), "verify --json names {shown}: {verified}");
    }

    // Put back as lifeboat made them: no warning left.
    chmod(&backups, 0o700);
    chmod(&archive, 0o600);
    chmod(&journal, 0o600);
    assert_eq!(run_json(&project, &["status"])["warnings"], serde_json::json!([]));
    assert_eq!(run_json(&project, &["verify", "--all"])[0]["warnings"], serde_json::json!([]));
    assert_invariants(&project, &before);
}

/// Runs `sh -c SCRIPT sh ARGS` as the unprivileged user `nobody`.
fn as_nobody(script: &str, args: &[String]) -> Output {
    Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "sh", "-c", script, "sh"])
        .args(args)
        .output()
        .expect("run setpriv")
}

/// The run id the next run will get: one past the journal's last.
fn next_run_id(project: &support::Project) -> u64 {
    let runs = run_json(project, &["journal", "list"]);
    runs.as_array().unwrap().iter().map(|r| r["run_id"].as_u64().unwrap()).max().unwrap_or(0) + 1
}

#[test]
fn a_backup_dir_others_can_write_is_refused_unless_sticky_and_planted_links_are_not_followed() {
    let Some((project, before)) = started_project() else { return };
    let dir = project.dir();
    // Let other users reach the backup dir, as an operator's shared directory would.
    chmod(dir, 0o755);
    let backups = dir.join("backups");
    std::fs::create_dir(&backups).unwrap();
    chmod(&backups, 0o777);
    let probe = as_nobody("touch \"$1/probe\" && rm \"$1/probe\"", &[backups.display().to_string()]);
    assert!(probe.status.success(), "nobody can write the backup dir: {}", describe(&probe));

    // Without the sticky bit: refused by every command that writes archives, before any run.
    let states_before = states(&project);
    for args in [&["backup"][..], &["auto-backup", "run"], &["upgrade", "/nonexistent/package.tar.gz", "--yes"]] {
        let output = run(&project, args);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {}", describe(&output));
        let err = stderr(&output);
        assert!(
            err.contains(&backups.display().to_string()) && err.contains("sticky") && err.contains("0777"),
            "{args:?} names the dir and the fix: {err}"
        );
        assert!(err.contains("nothing was started"), "{err}");
    }
    assert_eq!(states(&project), states_before, "no service was touched");
    assert_eq!(run_json(&project, &["journal", "list"]), serde_json::json!([]), "no run was started");
    let status = run_json(&project, &["status"]);
    assert!(status["warnings"].to_string().contains("the next backup will be refused"), "{status}");

    // With the sticky bit: accepted. `nobody` plants a link at every `.partial` name the next
    // backup could use in the coming seconds, pointing at a file lifeboat must not write.
    chmod(&backups, 0o1777);
    let victim = dir.join("victim.txt");
    std::fs::write(&victim, "not an archive\n").unwrap();
    let run_id = next_run_id(&project);
    let now = chrono::Utc::now();
    let names: Vec<String> = (-2..40)
        .map(|s| {
            let stamp = (now + chrono::Duration::seconds(s)).format("%Y%m%dT%H%M%SZ");
            backups.join(format!("{}-{stamp}-run{run_id:06}.tar.gz.partial", project.name())).display().to_string()
        })
        .collect();
    let mut args = vec![victim.display().to_string()];
    args.extend(names.iter().cloned());
    let planted = as_nobody("v=$1; shift; for n in \"$@\"; do ln -s \"$v\" \"$n\" || exit 1; done", &args);
    assert!(planted.status.success(), "nobody plants the links: {}", describe(&planted));
    assert_eq!(std::fs::symlink_metadata(&names[0]).unwrap().uid(), 65534, "the links are nobody's");

    let report = run_json(&project, &["backup"]);
    let archive = PathBuf::from(report["path"].as_str().unwrap());
    let used = format!("{}.partial", archive.display());
    assert!(names.contains(&used), "the backup used a name that was planted: {used}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "not an archive\n", "the link was not followed");
    let meta = std::fs::symlink_metadata(&archive).unwrap();
    assert!(meta.is_file() && meta.uid() == 0, "the archive is root's own file");
    assert_eq!(mode(&archive), 0o600);
    assert!(std::fs::symlink_metadata(&used).is_err(), "the planted link at the used name is gone");

    // The links planted for other seconds are garbage; remove them to check the invariants.
    for name in &names {
        let _ = std::fs::remove_file(name);
    }
    run_expect(&project, &["verify", "--all"], 0);
    assert_invariants(&project, &before);
}

#[test]
fn a_backup_past_its_limits_fails_rolls_back_and_names_the_file() {
    let Some((project, before)) = started_project() else { return };
    let big = project.data_dir().join("big.bin");
    std::fs::write(&big, random_bytes(3 << 20)).unwrap();
    add_backup_keys(project.dir(), "max_bytes = 1048576");

    let output = run(&project, &["backup"]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let err = stderr(&output);
    assert!(err.contains(&big.display().to_string()), "the error names the file that grew: {err}");
    assert!(err.contains("1048576") && err.contains("backup.max_bytes"), "and the limit: {err}");
    assert!(err.contains("rolled back"), "{err}");
    assert_invariants(&project, &before);
    assert_eq!(run_json(&project, &["list"]), serde_json::json!([]), "nothing half-done is recorded");

    // The entry limit the same way: the data dir alone holds more than three entries.
    let path = project.dir().join("lifeboat.toml");
    let text = std::fs::read_to_string(&path).unwrap().replace("max_bytes = 1048576", "max_files = 3");
    std::fs::write(&path, text).unwrap();
    let output = run(&project, &["backup"]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let err = stderr(&output);
    assert!(err.contains("backup.max_files") && err.contains("limit of 3 entries"), "{err}");
    assert_invariants(&project, &before);
    assert_eq!(run_json(&project, &["list"]), serde_json::json!([]));
}
