//! `lifeboat upgrade`, `lifeboat rollback` and `lifeboat package build` end to end on the real
//! daemon: a good upgrade, upgrades that fail and roll back, crashes at the fail points of an upgrade
//! (and of its recovery), and hostile or broken packages.
//!
//! The stack: `app` runs image `lbtest-app:vN` (built here `FROM` the busybox test image, with a
//! version-specific `/app.sh`), appends numbered records to `./data/records.txt` and marks the
//! named volume `appvol`; `db` runs the plain test image on volume `dbdata`. v2 changes the image
//! (shipped in the package as `images/app.tar`), `APP_MODE` in `.env` and the compose file. v3
//! writes poison into the data and exits at start; v3b writes poison and never turns healthy.
//!
//! The binary must be built with the `failpoints` feature.

mod e2e;
mod support;

use e2e::*;
use futures_util::StreamExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use support::Project;

const APP_OK: &str = r#"trap 'exit 0' TERM INT
n=0
if [ -f /data/records.txt ]; then n=$(wc -l < /data/records.txt); fi
echo "app @V@ starting mode=$APP_MODE after record $n"
echo "@V@" > /vol/version
touch /tmp/ready
while true; do
  n=$((n + 1))
  echo "record $n" >> /data/records.txt
  sleep 0.1 & wait $!
done
"#;

const APP_EXITS: &str = r#"echo "poison from @V@" >> /data/records.txt
echo poison > /vol/poison
echo "@V@-crash-marker"
exit 3
"#;

const APP_UNHEALTHY: &str = r#"trap 'exit 0' TERM INT
echo "poison from @V@" >> /data/records.txt
echo poison > /vol/poison
echo "@V@-unhealthy-marker"
while true; do sleep 1 & wait $!; done
"#;

const COMPOSE: &str = r#"version: "2.4"
services:
  app:
    image: @IMAGE@
    command: ["sh", "/app.sh"]
    environment:
      APP_MODE: ${APP_MODE}
      APP_FLAVOUR: @FLAVOUR@
    volumes:
      - ./data:/data
      - appvol:/vol
    healthcheck:
      test: ["CMD", "test", "-f", "/tmp/ready"]
      interval: 1s
      timeout: 2s
      retries: 4
    depends_on:
      - db
  db:
    image: @BASE@
    command: ["sh", "-c", "trap 'sleep ${DB_STOP_SECS:-0}; exit 0' TERM INT; while true; do date > /var/lib/db/heartbeat; sleep 1 & wait $$!; done"]
    volumes:
      - dbdata:/var/lib/db
    healthcheck:
      test: ["CMD", "test", "-f", "/var/lib/db/heartbeat"]
      interval: 1s
      timeout: 2s
      retries: 30
volumes:
  appvol: {}
  dbdata: {}
"#;

static BUILD_LOCK: Mutex<()> = Mutex::new(());

/// Builds `lbtest-app:<version>` with `script` as `/app.sh`, unless the daemon has it.
fn ensure_app_image(version: &str, script: &str) -> String {
    let tag = format!("lbtest-app:{version}");
    let _guard = BUILD_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    support::ensure_test_image();
    support::block_on(async {
        let docker = support::docker();
        if docker.api().inspect_image(&tag).await.is_ok() {
            return;
        }
        let dockerfile = format!(
            "FROM {}\nCOPY app.sh /app.sh\nLABEL lbtest.version={version}\nCMD [\"sh\", \"/app.sh\"]\n",
            support::TEST_IMAGE
        );
        let mut tar = tar::Builder::new(Vec::new());
        for (name, data) in [("Dockerfile", dockerfile.as_str()), ("app.sh", &script.replace("@V@", version))] {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o755);
            tar.append_data(&mut header, name, data.as_bytes()).unwrap();
        }
        let context = tar.into_inner().unwrap();
        let options = bollard::query_parameters::BuildImageOptionsBuilder::default()
            .dockerfile("Dockerfile")
            .t(&tag)
            .rm(true)
            .forcerm(true)
            .build();
        let mut stream = docker.api().build_image(options, None, Some(bollard::body_full(context.into()))).boxed();
        while let Some(item) = stream.next().await {
            let info = item.unwrap_or_else(|e| panic!("building {tag}: {e}"));
            assert!(info.error_detail.is_none(), "building {tag}: {:?}", info.error_detail);
        }
    });
    tag
}

/// A project running v1 of the stack, configured for lifeboat.
fn start_v1() -> Project {
    start_v1_with(&[])
}

/// [`start_v1`] with extra `.env` lines (`DB_STOP_SECS=3`: `db` takes 3 s to exit on a stop).
fn start_v1_with(env: &[&str]) -> Project {
    let image = ensure_app_image("v1", APP_OK);
    let project = Project::new();
    write_deployment(project.dir(), &image, "one", "alpha", env);
    project.up();
    configure(&project);
    project
}

fn write_deployment(dir: &Path, image: &str, mode: &str, flavour: &str, env: &[&str]) {
    let compose =
        COMPOSE.replace("@IMAGE@", image).replace("@BASE@", support::TEST_IMAGE).replace("@FLAVOUR@", flavour);
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("docker-compose.yml"), compose).unwrap();
    let extra: String = env.iter().map(|line| format!("{line}\n")).collect();
    std::fs::write(dir.join(".env"), format!("APP_MODE={mode}\n{extra}")).unwrap();
}

/// Builds a package deploying `image` (saved into the package under a tag unique to the project,
/// then untagged, so only the package's `images/app.tar` can bring it back) or, with
/// `ship_image` false, naming an image the daemon already has.
fn build_package(project: &Project, version: &str, image: &str, mode: &str, ship_image: bool) -> PathBuf {
    build_package_with(project, version, image, mode, ship_image, &[])
}

/// [`build_package`] with extra `.env` lines in the package's deployment files.
fn build_package_with(
    project: &Project,
    version: &str,
    image: &str,
    mode: &str,
    ship_image: bool,
    env: &[&str],
) -> PathBuf {
    let dir = project.dir().join(format!("pkg-src-{version}"));
    let deployed_image = if ship_image {
        let unique = format!("lbtest-app:{version}-{}", project.name());
        let tar_path = dir.join("images/app.tar");
        std::fs::create_dir_all(tar_path.parent().unwrap()).unwrap();
        support::block_on(async {
            let docker = support::docker();
            let (repo, tag) = unique.split_once(':').unwrap();
            let options = bollard::query_parameters::TagImageOptionsBuilder::default().repo(repo).tag(tag).build();
            docker.api().tag_image(image, Some(options)).await.unwrap();
            let mut out = Vec::new();
            let mut stream = docker.api().export_image(&unique).boxed();
            while let Some(chunk) = stream.next().await {
                out.extend_from_slice(&chunk.unwrap());
            }
            std::fs::write(&tar_path, out).unwrap();
            docker
                .api()
                .remove_image(&unique, None::<bollard::query_parameters::RemoveImageOptions>, None)
                .await
                .unwrap();
        });
        unique
    } else {
        image.to_owned()
    };
    write_deployment(&dir.join("deploy"), &deployed_image, mode, version, env);
    let pkg = project.dir().join(format!("app-{version}.tar.gz"));
    let pkg_arg = pkg.to_string_lossy().into_owned();
    run_expect(project, &["package", "build", &dir.to_string_lossy(), "-o", &pkg_arg, "--version", version], 0);
    pkg
}

/// The app container's image name and environment.
fn app_image_and_env(project: &Project) -> (String, Vec<String>) {
    let id = project.container("app").id;
    support::block_on(async {
        let inspect = support::docker().api().inspect_container(&id, None).await.unwrap();
        let config = inspect.config.unwrap();
        (config.image.unwrap_or_default(), config.env.unwrap_or_default())
    })
}

fn volume_dir(project: &Project, name: &str) -> PathBuf {
    project
        .volumes()
        .into_iter()
        .find(|v| v.compose_name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no volume {name}"))
        .mountpoint
}

/// Records `record 1` .. `record N`, each once, no poison. Returns N.
fn check_app_records(project: &Project) -> usize {
    let text = project.read_records();
    for (i, line) in text.lines().enumerate() {
        assert_eq!(line, format!("record {}", i + 1), "line {} of the records", i + 1);
    }
    text.lines().count()
}

fn wait_app_records(project: &Project, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while check_app_records(project) < n {
        assert!(Instant::now() < deadline, "the app wrote fewer than {n} records");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The deployment files, byte for byte.
fn deployment(project: &Project) -> (Vec<u8>, Vec<u8>) {
    (std::fs::read(project.compose_file()).unwrap(), std::fs::read(project.dir().join(".env")).unwrap())
}

fn upgrade_dirs(project: &Project) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(project.dir().join(".lifeboat")) else { return Vec::new() };
    entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("upgrade-run") || n.starts_with("rollback-run"))
        .collect()
}

/// v1 is back: files byte-identical, v1 image running healthy, data consistent and free of poison.
fn assert_v1_back(project: &Project, files_before: &(Vec<u8>, Vec<u8>), context: &str) {
    assert_eq!(&deployment(project), files_before, "{context}: deployment files are the old ones");
    assert_eq!(running(project), ["app", "db"], "{context}");
    project.wait_all_up();
    let (image, env) = app_image_and_env(project);
    assert_eq!(image, "lbtest-app:v1", "{context}");
    assert!(env.contains(&"APP_MODE=one".to_owned()), "{context}: {env:?}");
    let n = check_app_records(project);
    wait_app_records(project, n + 3);
    assert!(!volume_dir(project, "appvol").join("poison").exists(), "{context}: the volume was restored");
    assert_eq!(std::fs::read_to_string(volume_dir(project, "appvol").join("version")).unwrap(), "v1\n");
    assert_eq!(upgrade_dirs(project), Vec::<String>::new(), "{context}: no swap directory left");
}

fn assert_v2_up(project: &Project, context: &str) {
    assert_eq!(running(project), ["app", "db"], "{context}");
    project.wait_all_up();
    let (image, env) = app_image_and_env(project);
    assert!(image.starts_with("lbtest-app:2-"), "{context}: {image}");
    assert!(env.contains(&"APP_MODE=two".to_owned()), "{context}: {env:?}");
    assert!(env.contains(&"APP_FLAVOUR=2".to_owned()), "{context}: {env:?}");
    let status = run_json(project, &["status"]);
    assert_eq!(status["deployed_version"], "2", "{context}: {status}");
    assert_eq!(upgrade_dirs(project), Vec::<String>::new(), "{context}: no swap directory left");
}

/// The records file as the pre-upgrade backup of `run_id` holds it.
fn records_in_backup(project: &Project, backup_id: u64) -> String {
    let list = run_json(project, &["list"]);
    let entry = list.as_array().unwrap().iter().find(|e| e["id"] == backup_id).expect("the backup is listed");
    assert_eq!(entry["kind"], "pre-upgrade");
    let path = entry["path"].as_str().unwrap();
    let out = std::process::Command::new("tar").args(["-xzOf", path, "paths/data/records.txt"]).output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

fn timeline(project: &Project, run_id: u64) -> Vec<String> {
    let shown = run_json(project, &["journal", "show", &run_id.to_string()]);
    shown["events"].as_array().unwrap().iter().map(|e| e["state"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn upgrade_v1_to_v2_then_rollback() {
    if !support::docker_available() {
        return;
    }
    let project = start_v1();
    let v2 = ensure_app_image("v2", APP_OK);
    let pkg = build_package(&project, "2", &v2, "two", true);
    wait_app_records(&project, 10);
    let v1_files = deployment(&project);

    let started = Instant::now();
    let report = run_json(&project, &["upgrade", pkg.to_str().unwrap(), "--yes"]);
    eprintln!("upgrade took {:?}: {report}", started.elapsed());
    assert_eq!(report["state"], "completed");
    assert_eq!(report["to_version"], "2");
    assert!(report["downtime_ms"].as_i64().unwrap() > 0);
    assert_v2_up(&project, "after the upgrade");
    // Data written under v1 is still there and the writer goes on from it.
    let backup_id = report["backup_id"].as_u64().unwrap();
    let at_backup = records_in_backup(&project, backup_id);
    assert!(at_backup.lines().count() >= 10);
    assert!(project.read_records().starts_with(&at_backup), "v1's records survive the upgrade");
    let n = check_app_records(&project);
    wait_app_records(&project, n + 3);
    assert_eq!(std::fs::read_to_string(volume_dir(&project, "appvol").join("version")).unwrap(), "v2\n");
    // The pre-upgrade backup holds the deployment files it replaced.
    let listing = std::process::Command::new("tar")
        .args(["-tzf", run_json(&project, &["list"])[0]["path"].as_str().unwrap()])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(listing.lines().any(|l| l == "deploy/docker-compose.yml"), "{listing}");
    assert!(listing.lines().any(|l| l == "deploy/.env"), "{listing}");
    let states = timeline(&project, report["run_id"].as_u64().unwrap());
    for state in ["checking", "stopping", "archiving", "recording", "deploying", "restarting", "verifying"] {
        assert!(states.iter().any(|s| s == state), "journal show passes through {state}: {states:?}");
    }
    run_expect(&project, &["journal", "verify"], 0);

    // Rollback goes back to the pre-upgrade backup: v1's files, data and image.
    let started = Instant::now();
    let rolled = run_json(&project, &["rollback", "--yes"]);
    eprintln!("rollback took {:?}: {rolled}", started.elapsed());
    assert_eq!(rolled["backup_id"].as_u64(), Some(backup_id));
    assert_eq!(deployment(&project), v1_files);
    let (image, _) = app_image_and_env(&project);
    assert_eq!(image, "lbtest-app:v1");
    project.wait_all_up();
    assert!(project.read_records().starts_with(&at_backup));
    check_app_records(&project);
    assert_eq!(upgrade_dirs(&project), Vec::<String>::new());
    assert_eq!(run_json(&project, &["status"])["deployed_version"], serde_json::Value::Null);
    run_expect(&project, &["journal", "verify"], 0);
}

#[test]
fn upgrades_that_do_not_come_up_roll_back() {
    if !support::docker_available() {
        return;
    }
    let project = start_v1();
    let v3 = ensure_app_image("v3", APP_EXITS);
    let v3b = ensure_app_image("v3b", APP_UNHEALTHY);
    let cases = [("3", v3, "v3-crash-marker"), ("3b", v3b, "v3b-unhealthy-marker")];
    for (version, image, marker) in cases {
        let pkg = build_package(&project, version, &image, "three", false);
        wait_app_records(&project, 5);
        let files_before = deployment(&project);
        let started = Instant::now();
        let output = run(&project, &["upgrade", pkg.to_str().unwrap(), "--yes"]);
        eprintln!("failed upgrade to {version} took {:?}", started.elapsed());
        assert_eq!(output.status.code(), Some(1), "{version}: {}", describe(&output));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("rolled back"), "{version}: {stderr}");
        assert!(stderr.contains(marker), "{version}: the failing container's logs are shown: {stderr}");
        assert!(stderr.contains("compose_up"), "{version}: the failed step is named: {stderr}");
        assert_v1_back(&project, &files_before, version);
        // The data is the pre-upgrade backup's, continued by v1.
        let runs = run_json(&project, &["journal", "list"]);
        let last = runs.as_array().unwrap().last().unwrap();
        assert_eq!(last["outcome"], "rolled_back");
        let at_backup = records_in_backup(&project, last["run_id"].as_u64().unwrap());
        assert!(project.read_records().starts_with(&at_backup), "{version}: data restored");
        assert_eq!(run_json(&project, &["status"])["deployed_version"], serde_json::Value::Null);
    }
    run_expect(&project, &["journal", "verify"], 0);
}

/// The fail points of an upgrade that the crash test covers, and whether recovery completes the
/// upgrade (true) or rolls it back (false).
const UPGRADE_POINTS: &[(&str, bool)] = &[
    ("intent:deploy", false),
    ("effect:deploy", false),
    ("outcome:deploy", false),
    ("effect:compose_up", false),
    ("outcome:compose_up", false),
    ("intent:verify_services", false),
    ("intent:commit_deploy", true),
    ("effect:commit_deploy", true),
];

fn upgrade_crashing_at(project: &Project, pkg: &Path, point: &str) {
    crash_at(project, &["upgrade", pkg.to_str().unwrap(), "--yes"], point);
}

fn recover_twice(project: &Project, context: &str) {
    let output = run(project, &["recover"]);
    assert_eq!(output.status.code(), Some(0), "{context}: recover: {}", describe(&output));
    let again = run_expect(project, &["recover"], 0);
    assert!(again.contains("nothing to recover"), "{context}: {again}");
    run_expect(project, &["journal", "verify"], 0);
}

#[test]
fn crash_at_fail_points_of_an_upgrade_then_recover() {
    if !support::docker_available() {
        return;
    }
    let project = start_v1();
    let v2 = ensure_app_image("v2", APP_OK);
    let pkg = build_package(&project, "2", &v2, "two", true);
    let v1_files = deployment(&project);
    for (point, completes) in UPGRADE_POINTS {
        wait_app_records(&project, 5);
        upgrade_crashing_at(&project, &pkg, point);
        assert_eq!(run(&project, &["backup"]).status.code(), Some(4), "{point}: interrupted run refuses others");
        recover_twice(&project, point);
        let runs = run_json(&project, &["journal", "list"]);
        let last = runs.as_array().unwrap().iter().rev().find(|r| r["kind"] == "upgrade").unwrap().clone();
        if *completes {
            assert_eq!(last["outcome"], "completed", "{point}");
            assert_v2_up(&project, point);
            check_app_records(&project);
            // Back to v1 for the next point.
            run_json(&project, &["rollback", "--yes"]);
            assert_v1_back(&project, &v1_files, &format!("{point}, then rollback"));
        } else {
            assert_eq!(last["outcome"], "rolled_back", "{point}");
            assert_v1_back(&project, &v1_files, point);
        }
    }

    // A crash during recovery, then recover again: the same end state as one clean recovery.
    upgrade_crashing_at(&project, &pkg, "effect:compose_up");
    crash_at(&project, &["recover"], "intent:restore_deployment");
    recover_twice(&project, "crash during recovery");
    assert_v1_back(&project, &v1_files, "crash during recovery");

    // A rollback run crashed too. Before its restored stack was verified, recovery reverts it
    // (v2 stays); after, recovery finishes it (v1 is back).
    run_json(&project, &["upgrade", pkg.to_str().unwrap(), "--yes"]);
    for (point, finishes) in [("effect:restore_data", false), ("outcome:verify_services", true)] {
        crash_at(&project, &["rollback", "--yes"], point);
        recover_twice(&project, point);
        let runs = run_json(&project, &["journal", "list"]);
        let last = runs.as_array().unwrap().iter().rev().find(|r| r["kind"] == "rollback").unwrap().clone();
        if finishes {
            assert_eq!(last["outcome"], "completed", "rollback crashed at {point}");
            assert_v1_back(&project, &v1_files, &format!("rollback crashed at {point}"));
        } else {
            assert_eq!(last["outcome"], "rolled_back", "rollback crashed at {point}");
            assert_v2_up(&project, &format!("rollback crashed at {point}"));
        }
    }
}

/// One raw entry of a hand-made package: name, kind, and content or link target.
type RawEntry<'a> = (&'a str, tar::EntryType, &'a [u8]);

/// Writes a `.tar.gz` of raw entries: (name, kind, data or link target). Names are written into
/// the header as they are, so hostile names survive.
fn raw_package(path: &Path, entries: &[RawEntry]) {
    let mut tar = tar::Builder::new(Vec::new());
    for (name, kind, data) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(*kind);
        header.set_mode(0o644);
        let raw = &mut header.as_old_mut().name;
        raw[..name.len()].copy_from_slice(name.as_bytes());
        if *kind == tar::EntryType::Symlink || *kind == tar::EntryType::Link {
            let link = &mut header.as_old_mut().linkname;
            link[..data.len()].copy_from_slice(data);
            header.set_size(0);
            header.set_cksum();
            tar.append(&header, std::io::empty()).unwrap();
        } else {
            header.set_size(data.len() as u64);
            header.set_cksum();
            tar.append(&header, *data).unwrap();
        }
    }
    let raw = tar.into_inner().unwrap();
    let tar_path = path.with_extension("raw");
    std::fs::write(&tar_path, raw).unwrap();
    let gz = std::process::Command::new("gzip").arg("-c").arg(&tar_path).output().unwrap();
    assert!(gz.status.success());
    std::fs::write(path, gz.stdout).unwrap();
}

fn sha(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn hostile_and_broken_packages_are_refused_and_change_nothing() {
    // No Docker needed: packages are refused before the daemon is asked anything.
    let dir = tempfile::tempdir().unwrap();
    let project_dir = dir.path().join("proj");
    write_deployment(&project_dir, "lbtest-app:v1", "one", "alpha", &[]);
    std::fs::create_dir_all(project_dir.join("data")).unwrap();
    std::fs::write(
        project_dir.join("lifeboat.toml"),
        "[project]\nname = \"hostile\"\ncompose_file = \"docker-compose.yml\"\n\n[backup]\npaths = [\"data\"]\n",
    )
    .unwrap();
    let compose = b"services: {}\n".as_slice();
    let manifest_for = |files: &[(&str, &str)]| {
        let mut text = "version = \"9\"\n[files]\n".to_owned();
        for (name, sha) in files {
            text.push_str(&format!("{name:?} = {sha:?}\n"));
        }
        text
    };
    let file = tar::EntryType::Regular;
    let good_manifest = manifest_for(&[("deploy/docker-compose.yml", &sha(compose))]);
    let traversal = manifest_for(&[("deploy/../../evil", &sha(b"x"))]);
    let absolute = manifest_for(&[("/tmp/evil", &sha(b"x"))]);
    let wrong_sum = manifest_for(&[("deploy/docker-compose.yml", &sha(b"something else"))]);
    let unlisted = manifest_for(&[]);
    let cases: Vec<(&str, Vec<RawEntry>, i32)> = vec![
        (
            "traversal",
            vec![
                ("lifeboat-package.toml", file, traversal.as_bytes()),
                ("deploy/docker-compose.yml", file, compose),
                ("deploy/../../evil", file, b"x"),
            ],
            2,
        ),
        ("absolute", vec![("lifeboat-package.toml", file, absolute.as_bytes()), ("/tmp/evil", file, b"x")], 2),
        (
            "symlink",
            vec![
                ("lifeboat-package.toml", file, good_manifest.as_bytes()),
                ("deploy/docker-compose.yml", file, compose),
                ("deploy/passwd", tar::EntryType::Symlink, b"/etc/passwd"),
            ],
            2,
        ),
        (
            "hard link",
            vec![
                ("lifeboat-package.toml", file, good_manifest.as_bytes()),
                ("deploy/docker-compose.yml", file, compose),
                ("deploy/hard", tar::EntryType::Link, b"/etc/passwd"),
            ],
            2,
        ),
        (
            "device",
            vec![
                ("lifeboat-package.toml", file, good_manifest.as_bytes()),
                ("deploy/docker-compose.yml", file, compose),
                ("deploy/null", tar::EntryType::Char, b""),
            ],
            2,
        ),
        (
            "wrong checksum",
            vec![("lifeboat-package.toml", file, wrong_sum.as_bytes()), ("deploy/docker-compose.yml", file, compose)],
            5,
        ),
        (
            "unlisted file",
            vec![("lifeboat-package.toml", file, unlisted.as_bytes()), ("deploy/docker-compose.yml", file, compose)],
            2,
        ),
        ("missing manifest", vec![("deploy/docker-compose.yml", file, compose)], 2),
        (
            "bad manifest",
            vec![("lifeboat-package.toml", file, b"version = [\n"), ("deploy/docker-compose.yml", file, compose)],
            2,
        ),
        (
            "outside deploy",
            vec![
                ("lifeboat-package.toml", file, good_manifest.as_bytes()),
                ("deploy/docker-compose.yml", file, compose),
                ("etc/x", file, b"x"),
            ],
            2,
        ),
    ];
    let snapshot = |p: &Path| {
        let mut out = Vec::new();
        for entry in walk(p) {
            let bytes = std::fs::read(&entry).unwrap_or_default();
            out.push((entry, bytes));
        }
        out
    };
    let before = snapshot(&project_dir);
    for (name, entries, code) in cases {
        let pkg = dir.path().join(format!("{}.tar.gz", name.replace(' ', "-")));
        raw_package(&pkg, &entries);
        check_refused(&project_dir, &pkg, code, name);
    }
    // A good package, truncated.
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("deploy")).unwrap();
    std::fs::write(src.join("deploy/docker-compose.yml"), e2e::random_bytes(256 << 10)).unwrap();
    let good = dir.path().join("good.tar.gz");
    let out = std::process::Command::new(LIFEBOAT)
        .args(["package", "build"])
        .arg(&src)
        .arg("-o")
        .arg(&good)
        .args(["--version", "9"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let bytes = std::fs::read(&good).unwrap();
    let truncated = dir.path().join("truncated.tar.gz");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    check_refused(&project_dir, &truncated, 5, "truncated");
    assert_eq!(
        snapshot(&project_dir)
            .into_iter()
            .filter(|(p, _)| !p.starts_with(project_dir.join(".lifeboat")))
            .collect::<Vec<_>>(),
        before,
        "nothing in the project changed"
    );
    assert!(!project_dir.join("backups").exists(), "no backup was made");
    assert!(!dir.path().join("evil").exists() && !Path::new("/tmp/evil").exists());
}

fn check_refused(project_dir: &Path, pkg: &Path, code: i32, name: &str) {
    let out = std::process::Command::new(LIFEBOAT)
        .arg("-C")
        .arg(project_dir)
        .arg("upgrade")
        .arg(pkg)
        .arg("--yes")
        .env_remove("FAILPOINTS")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(code), "{name}: {}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("package") || stderr.contains("checksum"), "{name}: a clear message: {stderr}");
    let journal = std::process::Command::new(LIFEBOAT)
        .arg("-C")
        .arg(project_dir)
        .args(["--json", "journal", "list"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&journal.stdout).trim(), "[]", "{name}: no run was started");
    eprintln!("{name}: {}", stderr.trim());
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for entry in entries.filter_map(|e| e.ok()) {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// The last run of `kind` in the journal list.
fn last_run_of(project: &Project, kind: &str) -> serde_json::Value {
    let runs = run_json(project, &["journal", "list"]);
    runs.as_array().unwrap().iter().rev().find(|r| r["kind"] == kind).unwrap().clone()
}

#[test]
fn kills_while_db_stops_during_an_upgrade_and_a_rollback_then_recover_at_once() {
    if !support::docker_available() {
        return;
    }
    // db takes 3 s to exit on a stop, in v1 and in v2, and reports running and healthy until then.
    let slow = ["DB_STOP_SECS=3"];
    let project = start_v1_with(&slow);
    let v2 = ensure_app_image("v2", APP_OK);
    let pkg = build_package_with(&project, "2", &v2, "two", true, &slow);
    let pkg = pkg.to_str().unwrap();
    let v1_files = deployment(&project);
    wait_app_records(&project, 5);

    // The upgrade, killed while db stops for the pre-upgrade backup: v1 comes back.
    let db = project.container("db").id;
    let output = signal_when_stopping(&project, &["upgrade", pkg, "--yes"], &db, libc::SIGKILL);
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&output.status), Some(libc::SIGKILL));
    recover_at_once_and_check(&project, &["app".to_owned(), "db".to_owned()], "upgrade killed while db stops");
    assert_eq!(last_run_of(&project, "upgrade")["outcome"], "rolled_back");
    assert_v1_back(&project, &v1_files, "upgrade killed while db stops");

    // The rollback of a good upgrade, killed while db stops: v2 stays.
    run_json(&project, &["upgrade", pkg, "--yes"]);
    assert_v2_up(&project, "after the upgrade");
    let db = project.container("db").id;
    let output = signal_when_stopping(&project, &["rollback", "--yes"], &db, libc::SIGKILL);
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&output.status), Some(libc::SIGKILL));
    recover_at_once_and_check(&project, &["app".to_owned(), "db".to_owned()], "rollback killed while db stops");
    assert_eq!(last_run_of(&project, "rollback")["outcome"], "rolled_back");
    assert_v2_up(&project, "rollback killed while db stops");
    check_app_records(&project);
}

#[test]
fn signals_before_and_after_the_point_of_no_return_of_an_upgrade() {
    if !support::docker_available() {
        return;
    }
    let project = start_v1();
    let v2 = ensure_app_image("v2", APP_OK);
    let pkg = build_package(&project, "2", &v2, "two", true);
    let pkg = pkg.to_str().unwrap();
    let v1_files = deployment(&project);
    wait_app_records(&project, 5);

    // Deployed, not yet up: SIGINT rolls the upgrade back, no recover needed.
    let output = command(&project, &["upgrade", pkg, "--yes"])
        .env("FAILPOINTS", "intent:compose_up=return(SIGINT)")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(130), "{}", describe(&output));
    assert_eq!(last_run_of(&project, "upgrade")["outcome"], "rolled_back");
    assert!(run_expect(&project, &["recover"], 0).contains("nothing to recover"));
    assert_v1_back(&project, &v1_files, "SIGINT before the point of no return");

    // Verified healthy: SIGTERM lets the upgrade finish.
    let output = command(&project, &["upgrade", pkg, "--yes"])
        .env("FAILPOINTS", "intent:commit_deploy=return(SIGTERM)")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    assert_eq!(last_run_of(&project, "upgrade")["outcome"], "completed");
    assert!(run_expect(&project, &["recover"], 0).contains("nothing to recover"));
    assert_v2_up(&project, "SIGTERM after the point of no return");
    check_app_records(&project);
}

#[test]
fn a_first_deployment_into_an_empty_directory_creates_the_data_paths_and_makes_no_backup() {
    if !support::docker_available() {
        return;
    }
    let v1 = ensure_app_image("v1", APP_OK);
    let project = Project::new();
    // Nothing deployed: no compose file, no data path, only lifeboat.toml (as `init` leaves it).
    std::fs::remove_file(project.dir().join("docker-compose.yml")).unwrap();
    std::fs::remove_dir(project.data_dir()).unwrap();
    configure(&project);
    let pkg = build_package(&project, "1", &v1, "one", false);
    let report = run_json(&project, &["upgrade", pkg.to_str().unwrap(), "--yes"]);
    assert_eq!(report["first_deployment"], true, "{report}");
    assert_eq!(report["backup_id"], serde_json::Value::Null, "{report}");
    assert!(project.data_dir().is_dir(), "the data path was created");
    wait_app_records(&project, 3);
    assert_eq!(run_json(&project, &["list"]), serde_json::json!([]), "nothing to back up, nothing backed up");
    let runs = run_json(&project, &["journal", "list"]);
    assert_eq!(runs[0]["kind"], "first-deploy", "{runs}");
    assert_eq!(runs[0]["outcome"], "completed", "{runs}");
    // The next upgrade is an ordinary one, with its pre-upgrade backup.
    let v2 = ensure_app_image("v2", APP_OK);
    let pkg2 = build_package(&project, "2", &v2, "two", true);
    let report = run_json(&project, &["upgrade", pkg2.to_str().unwrap(), "--yes"]);
    assert_eq!(report["first_deployment"], false, "{report}");
    assert!(report["backup_id"].is_u64(), "{report}");
}

#[test]
fn upgrade_hooks_run_around_an_upgrade_and_on_failure_after_its_rollback() {
    if !support::docker_available() {
        return;
    }
    let project = start_v1();
    let toml = project.dir().join("lifeboat.toml");
    let base = std::fs::read_to_string(&toml).unwrap();
    let set_hooks = |before: &str| {
        let hooks = format!(
            "\n[hooks]\nbefore_upgrade = '{before}'\n\
             after_upgrade = 'echo \"$LIFEBOAT_VERSION $LIFEBOAT_ARCHIVE\" > after-upgrade.txt'\n\
             on_failure = 'echo \"$LIFEBOAT_KIND $LIFEBOAT_OUTCOME\" >> failures.txt'\n"
        );
        std::fs::write(&toml, format!("{base}{hooks}")).unwrap();
    };
    set_hooks("echo \"$LIFEBOAT_VERSION\" >> before-upgrade.txt");
    let read = |name: &str| std::fs::read_to_string(project.dir().join(name)).unwrap_or_default();

    // An upgrade that does not come up: rolled back, then on_failure; no after hook.
    let v3 = ensure_app_image("v3", APP_EXITS);
    let pkg = build_package(&project, "3", &v3, "three", false);
    let files_before = deployment(&project);
    let output = run(&project, &["upgrade", pkg.to_str().unwrap(), "--yes"]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert_v1_back(&project, &files_before, "after the failed upgrade");
    assert_eq!((read("before-upgrade.txt"), read("failures.txt")), ("3\n".into(), "upgrade rolled_back\n".into()));
    assert_eq!(read("after-upgrade.txt"), "", "no after hook for an upgrade that rolled back");

    // A healthy upgrade: the after hook sees the version and the pre-upgrade backup.
    let v2 = ensure_app_image("v2", APP_OK);
    let pkg = build_package(&project, "2", &v2, "two", true);
    let report = run_json(&project, &["upgrade", pkg.to_str().unwrap(), "--yes"]);
    assert_eq!(report["hook_failures"], serde_json::json!([]));
    assert_v2_up(&project, "after the upgrade");
    let list = run_json(&project, &["list"]);
    let backup = list.as_array().unwrap().iter().find(|e| e["id"] == report["backup_id"]).unwrap();
    assert_eq!(read("after-upgrade.txt"), format!("2 {}\n", backup["path"].as_str().unwrap()));
    assert_eq!(read("before-upgrade.txt"), "3\n2\n");
    assert_eq!(read("failures.txt").lines().count(), 1, "a completed upgrade runs no on_failure");

    // A failing before_upgrade hook: nothing stopped, no pre-upgrade backup, v2 stays.
    set_hooks("echo not now >&2; exit 7");
    let started: Vec<_> = project.containers().into_iter().map(|c| c.started_at).collect();
    let backups = list.as_array().unwrap().len();
    let pkg = build_package(&project, "4", &v2, "two", true);
    let output = run(&project, &["upgrade", pkg.to_str().unwrap(), "--yes"]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("before_upgrade (host) exited 7: not now"));
    assert_eq!(project.containers().into_iter().map(|c| c.started_at).collect::<Vec<_>>(), started);
    assert_eq!(run_json(&project, &["list"]).as_array().unwrap().len(), backups, "no pre-upgrade backup");
    assert_eq!(run_json(&project, &["status"])["deployed_version"], "2");
    assert_eq!(read("failures.txt"), "upgrade rolled_back\nupgrade rolled_back\n");
    run_expect(&project, &["journal", "verify"], 0);
}
