//! Off-host copies to a real S3-compatible store: a three-node Garage cluster on loopback with
//! replication 3 (tests/support/garage.rs), on the real Docker daemon (docs/design.md, "Off-host
//! copies"). A backup ships an age-encrypted copy that `verify --remote` and the `age` CLI open
//! and that GNU tar cannot; a node killed while the multipart upload is in flight does not stop
//! it (a write quorum is 2 of 3); a cluster that is down leaves the copy pending without touching
//! the backup, and `push` ships it later; wrong credentials and a missing bucket are exit 2 with
//! a message that names the remote and never the secret; an altered or truncated copy is exit 5
//! naming its key; a kill -9 at every fail point of shipping, and at random moments of a
//! multipart upload, is settled by `recover` with no copy catalogued unless its run completed
//! and no multipart upload left open on the store; the disaster drill (`restore --from s3://`,
//! `import --remote`, `restore ID` from the cluster) brings the project back with its data; and
//! the secret key is in nothing lifeboat printed or wrote.
//!
//! Every lifeboat command runs with no `AWS_*` variable of the caller's environment: only the
//! key id and secret a test gives it. The tests of this file take turns (one cluster at a time):
//! each starts Garage nodes and moves hundreds of megabytes on a two-core machine.
//!
//! Longer hunts: `LIFEBOAT_LONG_TESTS=1` (more random kills), `LIFEBOAT_SHIP_KILL_SEED=N` (replay
//! the random kills of a printed seed). The binary must be built with the `failpoints` feature.

mod e2e;
mod support;

#[path = "support/garage.rs"]
mod garage;

use e2e::{command, describe, partial_files, random_bytes, running, sha256sum};
use garage::{BUCKET, GarageCluster, S3Access, rclone};
use serde_json::Value;
use std::cell::RefCell;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use support::Project;

/// One test of this file at a time: each runs a Garage cluster and a compose project, and the
/// tests that kill at a moment of an upload need the cores they measured with.
static SERIAL: Mutex<()> = Mutex::new(());

/// The fail points a shipping run passes, in order (crates/cli/src/executor.rs), and recovery's.
const SHIP_POINTS: &[&str] = &[
    "started",
    "intent:begin_upload",
    "effect:begin_upload",
    "outcome:begin_upload",
    "intent:upload_copy",
    "effect:upload_copy",
    "outcome:upload_copy",
    "intent:record_copy",
    "effect:record_copy",
    "outcome:record_copy",
    "recovering",
];

/// A project, its Garage cluster, and everything the lifeboat commands of the test printed.
struct Env {
    // Dropped in this order: the project (compose down) first, the cluster after, the turn last.
    project: Project,
    before: Vec<String>,
    cluster: GarageCluster,
    access: S3Access,
    /// The `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` the commands get (none: `None`).
    creds: RefCell<Option<(String, String)>>,
    /// Replacements in the `lifeboat.toml` that `e2e::configure` writes, and sections appended.
    edits: RefCell<Vec<(String, String)>>,
    extra: RefCell<String>,
    /// What every command printed, labelled, for the search for secrets.
    outputs: RefCell<Vec<(String, Vec<u8>)>>,
    _turn: MutexGuard<'static, ()>,
}

/// The project up (idle stopped) and configured, and a three-node cluster with replication 3.
/// `None` (after a loud notice) when Docker or Garage is missing outside CI; in CI, a failure.
fn setup() -> Option<Env> {
    let turn = SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    garage::garage_binary()?;
    let (project, before) = e2e::started_project()?;
    let started = Instant::now();
    let cluster = GarageCluster::start(3, 3);
    eprintln!("garage: 3 nodes, replication 3, healthy in {:.2?}", started.elapsed());
    let access = cluster.access().clone();
    Some(Env {
        project,
        before,
        cluster,
        access,
        creds: RefCell::new(None),
        edits: RefCell::new(Vec::new()),
        extra: RefCell::new(String::new()),
        outputs: RefCell::new(Vec::new()),
        _turn: turn,
    })
}

impl Env {
    fn dir(&self) -> &Path {
        self.project.dir()
    }

    /// The commands get the cluster's key in their environment.
    fn env_creds(&self) {
        *self.creds.borrow_mut() = Some((self.access.key_id.clone(), self.access.secret.clone()));
    }

    fn set_creds(&self, creds: Option<(&str, &str)>) {
        *self.creds.borrow_mut() = creds.map(|(id, secret)| (id.to_owned(), secret.to_owned()));
    }

    /// `lifeboat.toml` as `e2e::configure` writes it, with this test's edits and sections, and
    /// `remotes` (rendered `[[remote]]` sections) at the end.
    fn configure(&self, remotes: &[String]) {
        e2e::configure(&self.project);
        let path = self.dir().join("lifeboat.toml");
        let mut text = std::fs::read_to_string(&path).unwrap();
        for (from, to) in self.edits.borrow().iter() {
            assert!(text.contains(from.as_str()), "lifeboat.toml has no {from:?}:\n{text}");
            text = text.replace(from.as_str(), to);
        }
        text.push_str(&self.extra.borrow());
        for remote in remotes {
            text.push('\n');
            text.push_str(remote);
        }
        std::fs::write(&path, text).unwrap();
    }

    /// A `[[remote]]` on this cluster: `url` is `s3://bucket/prefix`; `recipient` encrypts
    /// (`None`: `encrypt = false`).
    fn remote(&self, name: &str, url: &str, recipient: Option<&str>) -> String {
        let storage = match recipient {
            Some(recipient) => format!("encrypt_to = [\"{recipient}\"]"),
            None => "encrypt = false".to_owned(),
        };
        format!(
            "[[remote]]\nname = \"{name}\"\nurl = \"{url}\"\nendpoint = \"{}\"\nregion = \"{}\"\npath_style = true\n{storage}\n",
            self.access.endpoint, self.access.region
        )
    }

    /// A lifeboat command with no `AWS_*` variable but the credentials this test gives.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = command(&self.project, args);
        for (var, _) in std::env::vars_os() {
            if var.to_string_lossy().starts_with("AWS_") {
                cmd.env_remove(&var);
            }
        }
        if let Some((id, secret)) = &*self.creds.borrow() {
            cmd.env("AWS_ACCESS_KEY_ID", id).env("AWS_SECRET_ACCESS_KEY", secret);
        }
        cmd
    }

    fn keep(&self, label: String, output: &Output) {
        let mut outputs = self.outputs.borrow_mut();
        outputs.push((format!("{label} (stdout)"), output.stdout.clone()));
        outputs.push((format!("{label} (stderr)"), output.stderr.clone()));
    }

    fn run_cmd(&self, label: String, mut cmd: Command) -> Output {
        let started = Instant::now();
        let output = cmd.output().expect("run lifeboat");
        if started.elapsed() > Duration::from_secs(2) {
            eprintln!("{label}: {:.1?}", started.elapsed());
        }
        self.keep(label, &output);
        output
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_cmd(format!("lifeboat {}", args.join(" ")), self.cmd(args))
    }

    /// Runs `lifeboat ARGS`, asserting exit `code`; returns the output.
    fn expect(&self, args: &[&str], code: i32) -> Output {
        let output = self.run(args);
        assert_eq!(output.status.code(), Some(code), "lifeboat {}: {}", args.join(" "), describe(&output));
        output
    }

    /// Runs `lifeboat --json ARGS`, asserting exit `code`; parses stdout.
    fn json(&self, args: &[&str], code: i32) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let output = self.expect(&all, code);
        parse(&output, args)
    }

    /// Runs `lifeboat ARGS` with the fail point `point` armed; asserts it died there by SIGKILL.
    fn crash(&self, args: &[&str], point: &str) {
        let mut cmd = self.cmd(args);
        cmd.env("FAILPOINTS", format!("{point}=return"));
        let output = self.run_cmd(format!("lifeboat {} (FAILPOINTS={point})", args.join(" ")), cmd);
        assert_eq!(
            output.status.signal(),
            Some(libc::SIGKILL),
            "lifeboat {} should die at {point}: {}",
            args.join(" "),
            describe(&output)
        );
    }

    fn spawn(&self, args: &[&str]) -> Child {
        self.cmd(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn lifeboat")
    }

    fn finish(&self, label: &str, child: Child) -> Output {
        let output = child.wait_with_output().expect("wait for lifeboat");
        self.keep(label.to_owned(), &output);
        output
    }

    /// `status --json`'s entry for the remote `name`.
    fn remote_status(&self, name: &str) -> Value {
        let status = self.json(&["status"], 0);
        status["remotes"]
            .as_array()
            .and_then(|remotes| remotes.iter().find(|r| r["name"] == name).cloned())
            .unwrap_or_else(|| panic!("status --json has no remote {name}: {status}"))
    }

    /// `list --remote NAME --json`'s objects.
    fn objects(&self, name: &str) -> Vec<Value> {
        let listing = self.json(&["list", "--remote", name], 0);
        assert_eq!(listing["remote"], name, "{listing}");
        listing["objects"].as_array().cloned().unwrap_or_else(|| panic!("no objects array: {listing}"))
    }

    /// The catalog's backups (`list --json`).
    fn backups(&self) -> Vec<Value> {
        self.json(&["list"], 0).as_array().cloned().expect("list is an array")
    }

    /// `journal list --json`'s shipping runs.
    fn ship_runs(&self) -> Vec<Value> {
        let runs = self.json(&["journal", "list"], 0);
        runs.as_array().expect("journal list is an array").iter().filter(|r| r["kind"] == "ship").cloned().collect()
    }

    /// A backup with no `[[remote]]` configured, so its copy is pending once `remotes` are back.
    fn pending_backup(&self, remotes: &[String]) -> Value {
        self.configure(&[]);
        let report = self.json(&["backup"], 0);
        assert_eq!(report["copies"], serde_json::json!([]), "no remote, no copy: {report}");
        self.configure(remotes);
        report
    }

    /// The invariants (ARCHITECTURE.md, 1-3) with this file's clean environment: the services that
    /// were running run, no partial archive and no download of `verify --remote` is left in the
    /// backup dir, every listed backup is there with its sha256, the journal verifies.
    fn assert_invariants(&self) {
        assert_eq!(running(&self.project), self.before, "invariant 1: the services that were running are running");
        self.project.wait_all_up();
        let backups_dir = self.dir().join("backups");
        assert_eq!(partial_files(&backups_dir), Vec::<PathBuf>::new(), "invariant 3: no partial archive survives");
        let downloads: Vec<String> = std::fs::read_dir(&backups_dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|name| name.starts_with(".verify-"))
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(downloads, Vec::<String>::new(), "verify --remote removes its downloads");
        for entry in self.backups() {
            let path = PathBuf::from(entry["path"].as_str().expect("path"));
            assert!(path.exists(), "invariant 2: listed backup {} exists", path.display());
            assert_eq!(
                sha256sum(&path),
                entry["sha256"].as_str().unwrap(),
                "invariant 2: sha256 of {}",
                path.display()
            );
            assert_eq!(std::fs::metadata(&path).unwrap().len(), entry["size_bytes"].as_u64().unwrap());
        }
        self.expect(&["journal", "verify"], 0);
    }

    /// Searches for each of `secrets` (and its first 16 characters) in everything the test's
    /// commands printed, `journal show` of every run (text and JSON, run now), every file under
    /// `.lifeboat/` (the journal's bytes), the metrics file, the `.sha256` files and, up to
    /// 16 MiB each, what the archives hold.
    fn assert_no_secret(&self, secrets: &[&str]) {
        let runs = self.json(&["journal", "list"], 0);
        for run in runs.as_array().unwrap() {
            let id = run["run_id"].to_string();
            self.expect(&["journal", "show", &id], 0);
            self.expect(&["--json", "journal", "show", &id], 0);
        }
        self.expect(&["status"], 0);
        let mut haystacks: Vec<(String, Vec<u8>)> = self.outputs.borrow().clone();
        let mut files = Vec::new();
        walk(&self.dir().join(".lifeboat"), &mut files);
        walk(&self.dir().join("backups"), &mut files);
        let metrics = self.dir().join("metrics.prom");
        if metrics.exists() {
            files.push(metrics);
        }
        assert!(
            files.iter().any(|f| f.ends_with(".lifeboat/journal.redb")),
            "the journal is among the files searched: {files:?}"
        );
        for file in files {
            let bytes = std::fs::read(&file).unwrap_or_default();
            let name = file.to_string_lossy().into_owned();
            let is_archive = name.ends_with(".tar.gz") || name.ends_with(".tar.zst");
            if is_archive && bytes.len() < 16 << 20 {
                let out = Command::new("tar").arg("-xOf").arg(&file).output().expect("run tar");
                assert!(out.status.success(), "tar -xOf {name}: {}", String::from_utf8_lossy(&out.stderr));
                haystacks.push((format!("{name} (its content)"), out.stdout));
            } else if !is_archive {
                haystacks.push((name, bytes));
            }
        }
        let mut searched = 0usize;
        for (label, bytes) in &haystacks {
            searched += bytes.len();
            for secret in secrets {
                for needle in [secret.as_bytes(), &secret.as_bytes()[..16]] {
                    assert!(!contains(bytes, needle), "a secret (or its first 16 characters) is in {label}");
                }
            }
        }
        eprintln!("no secret in {} outputs and files ({searched} bytes)", haystacks.len());
    }
}

fn parse(output: &Output, args: &[&str]) -> Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("lifeboat --json {}: bad JSON ({e}): {}", args.join(" "), describe(output)))
}

/// stdout and stderr together, for messages.
fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    let first = needle[0];
    haystack.iter().enumerate().any(|(i, &b)| b == first && haystack[i..].starts_with(needle))
}

/// Every regular file under `dir`.
fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.filter_map(|e| e.ok()) {
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => walk(&path, files),
            Ok(t) if t.is_file() => files.push(path),
            _ => {}
        }
    }
}

fn random_hex(bytes: usize) -> String {
    random_bytes(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// A private file (mode 0600) with `content`.
fn write_private(path: &Path, content: &str) {
    std::fs::write(path, content).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A new age identity made by `age-keygen` in `dir` (mode 0600): its file and its recipient.
fn age_identity(dir: &Path) -> (PathBuf, String) {
    let path = dir.join("age-identity.txt");
    let out = Command::new("age-keygen")
        .arg("-o")
        .arg(&path)
        .output()
        .expect("run age-keygen (scripts/setup-test-env installs age)");
    assert!(out.status.success(), "age-keygen: {}", String::from_utf8_lossy(&out.stderr));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let recipient = text
        .lines()
        .find_map(|line| line.strip_prefix("# public key: "))
        .unwrap_or_else(|| panic!("age-keygen wrote no public key line"))
        .trim()
        .to_owned();
    assert!(recipient.starts_with("age1"), "{recipient}");
    (path, recipient)
}

/// The bytes of `bucket/object` on the cluster.
fn get_object(access: &S3Access, object: &str) -> Vec<u8> {
    rclone(access, &access.endpoint, &["cat", &format!("garage:{object}")], None).unwrap_or_else(|e| panic!("{e}"))
}

/// Replaces `bucket/object` with `data` (a plain PUT: lifeboat's metadata is gone with it).
fn put_object(access: &S3Access, object: &str, data: &[u8]) {
    rclone(access, &access.endpoint, &["rcat", &format!("garage:{object}")], Some(data))
        .unwrap_or_else(|e| panic!("{e}"));
}

/// The multipart uploads open in `bucket` as S3's ListMultipartUploads lists them (signed by
/// curl), as `(key, upload id)`: the store's own listing, beside Garage's per-bucket counter.
fn s3_open_uploads(access: &S3Access, bucket: &str) -> Vec<(String, String)> {
    const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    let out = Command::new("curl")
        .args(["--silent", "--show-error", "--fail-with-body", "--max-time", "10"])
        .args(["--header", &format!("x-amz-content-sha256: {EMPTY_SHA256}")])
        .args(["--aws-sigv4", &format!("aws:amz:{}:s3", access.region)])
        .args(["--user", &format!("{}:{}", access.key_id, access.secret)])
        .arg(format!("{}/{bucket}/?uploads=", access.endpoint))
        .output()
        .expect("run curl");
    let body = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "ListMultipartUploads {bucket}: {body} {}", String::from_utf8_lossy(&out.stderr));
    let field = |upload: &str, tag: &str| {
        upload
            .split(&format!("<{tag}>"))
            .nth(1)
            .and_then(|rest| rest.split(&format!("</{tag}>")).next())
            .unwrap_or_default()
            .to_owned()
    };
    body.split("<Upload>").skip(1).map(|upload| (field(upload, "Key"), field(upload, "UploadId"))).collect()
}

/// Polls Garage until `bucket` has an open multipart upload; `Err` with lifeboat's output when
/// `child` exits first or none opens within `timeout`. Returns how many are open.
fn wait_for_open_upload(
    cluster: &GarageCluster,
    bucket: &str,
    child: &mut Child,
    timeout: Duration,
) -> Result<usize, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let open = cluster.list_multipart_uploads(bucket);
        if open > 0 {
            return Ok(open);
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("lifeboat exited ({status}) before an upload opened in {bucket}"));
        }
        if Instant::now() > deadline {
            return Err(format!("no upload opened in {bucket} within {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A tiny deterministic generator, so a failing case can be replayed from its printed seed.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// The file name of a backup's archive, from its report or catalog entry.
fn archive_name(entry: &Value) -> String {
    Path::new(entry["path"].as_str().expect("path")).file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn ship_verify_and_quorum() {
    let Some(mut env) = setup() else { return };
    let (identity, recipient) = age_identity(env.dir());
    let identity_arg = identity.to_str().unwrap().to_owned();
    env.env_creds();
    // gzip at level 1: the large archive of random data below is written fast.
    env.edits.borrow_mut().push(("compression_level = 6".into(), "compression_level = 1".into()));
    let offsite = env.remote("offsite", &format!("s3://{BUCKET}/quorum"), Some(&recipient));
    env.configure(std::slice::from_ref(&offsite));

    let report = env.json(&["backup"], 0);
    let copies = report["copies"].as_array().unwrap_or_else(|| panic!("no copies in the report: {report}"));
    assert_eq!(copies.len(), 1, "{report}");
    let copy = &copies[0];
    let key = format!("{}.age", archive_name(&report));
    assert_eq!(copy["status"], "shipped", "{report}");
    assert_eq!(copy["remote"], "offsite", "{report}");
    assert_eq!(copy["encrypted"], true, "{report}");
    assert_eq!(copy["backup_id"], report["backup_id"], "{report}");
    assert_eq!(copy["key"], key.as_str(), "{report}");
    assert!(copy["error"].is_null(), "{report}");
    assert!(copy["run_id"].as_u64().is_some_and(|id| id > report["run_id"].as_u64().unwrap()), "{report}");
    let stored_bytes = copy["stored_bytes"].as_u64().unwrap_or_else(|| panic!("no stored_bytes: {report}"));
    let size_bytes = report["size_bytes"].as_u64().unwrap();
    // age's header and a 16-byte tag per 64 KiB chunk.
    assert!(stored_bytes > size_bytes && stored_bytes < size_bytes + 1024 + size_bytes / 4096, "{report}");

    let objects = env.objects("offsite");
    assert_eq!(objects.len(), 1, "{objects:?}");
    assert_eq!(objects[0]["key"], key.as_str());
    assert_eq!(objects[0]["status"], "ok", "{objects:?}");
    assert_eq!(objects[0]["size_bytes"], stored_bytes);
    assert_eq!(objects[0]["backup_id"], report["backup_id"]);
    assert_eq!(objects[0]["encrypted"], true);
    let status = env.remote_status("offsite");
    assert_eq!(
        (status["copies"].as_u64(), status["pending"].as_u64(), &status["encrypted"]),
        (Some(1), Some(0), &Value::Bool(true)),
        "{status}"
    );

    let verified = env.json(&["verify", "--remote", "offsite", "--all", "--identity", &identity_arg], 0);
    let verified = verified.as_array().unwrap_or_else(|| panic!("verify --remote --json is an array: {verified}"));
    assert_eq!(verified.len(), 1, "{verified:?}");
    assert_eq!(verified[0]["ok"], true, "{verified:?}");
    assert_eq!(verified[0]["key"], key.as_str());
    assert!(verified[0]["file_count"].as_u64().is_some_and(|n| n > 0), "{verified:?}");
    // Without an identity, an encrypted copy cannot be checked: a usage error, not a bad copy.
    let refused = env.expect(&["verify", "--remote", "offsite", "--all"], 2);
    assert!(text(&refused).contains("--identity"), "{}", describe(&refused));

    // The stored object with other tools: age's format, which GNU tar cannot read, and which the
    // age CLI opens to the very bytes of the local archive.
    let stored = get_object(&env.access, &format!("{BUCKET}/quorum/{key}"));
    assert_eq!(stored.len() as u64, stored_bytes);
    assert!(stored.starts_with(b"age-encryption.org/v1\n"), "the copy is an age file");
    let scratch = tempfile::tempdir().unwrap();
    let stored_file = scratch.path().join(&key);
    std::fs::write(&stored_file, &stored).unwrap();
    let tar = Command::new("tar").arg("-tzf").arg(&stored_file).output().unwrap();
    assert!(!tar.status.success(), "GNU tar must not read an encrypted copy: {}", String::from_utf8_lossy(&tar.stdout));
    let tar = Command::new("tar").arg("-tf").arg(&stored_file).output().unwrap();
    assert!(!tar.status.success(), "GNU tar must not read an encrypted copy (auto-detected)");
    let opened = scratch.path().join("opened.tar.gz");
    let age = Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(&identity)
        .arg("-o")
        .arg(&opened)
        .arg(&stored_file)
        .output()
        .unwrap();
    assert!(age.status.success(), "age -d: {}", String::from_utf8_lossy(&age.stderr));
    let local = PathBuf::from(report["path"].as_str().unwrap());
    assert_eq!(sha256sum(&opened), report["sha256"].as_str().unwrap(), "age opens the copy to the archive");
    assert_eq!(sha256sum(&opened), sha256sum(&local));
    let listing = Command::new("tar").arg("-tzf").arg(&opened).output().unwrap();
    assert!(
        String::from_utf8_lossy(&listing.stdout).contains("lifeboat/manifest.json"),
        "the opened copy is the archive"
    );

    // A larger archive, in many 8 MiB parts; node 2 is killed while its upload is open. Two of
    // three nodes are a write quorum: the copy still ships, and verifies.
    std::fs::write(env.project.data_dir().join("big.bin"), random_bytes(120 << 20)).unwrap();
    let mut child = env.spawn(&["--json", "backup"]);
    let open = wait_for_open_upload(&env.cluster, BUCKET, &mut child, Duration::from_secs(180))
        .unwrap_or_else(|e| panic!("{e}"));
    env.cluster.kill(2);
    let still_running = child.try_wait().unwrap().is_none();
    let open_after_kill = s3_open_uploads(&env.access, BUCKET).len();
    let output = env.finish("lifeboat --json backup (node 2 killed)", child);
    eprintln!("node 2 killed with {open} upload(s) open; {open_after_kill} still open after the kill");
    assert!(still_running, "the backup was still running when node 2 died");
    assert!(open_after_kill > 0, "the upload was still open once node 2 was dead");
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let big = parse(&output, &["backup"]);
    let copy = &big["copies"][0];
    assert_eq!(copy["status"], "shipped", "{big}");
    assert_eq!(copy["backup_id"], big["backup_id"], "{big}");
    let big_stored = copy["stored_bytes"].as_u64().unwrap();
    assert!(big_stored > 120 << 20, "{big}");
    let health = env.cluster.json_api("GetClusterHealth", None);
    assert_eq!(health["storageNodesUp"], 2, "node 2 stayed down: {health}");
    let id = big["backup_id"].to_string();
    // Read back with node 2 still down: two copies of every block are a read quorum too.
    let verified = env.json(&["verify", "--remote", "offsite", &id, "--identity", &identity_arg], 0);
    assert_eq!(verified[0]["ok"], true, "{verified}");
    assert_eq!(verified[0]["stored_bytes"], big_stored);
    let objects = env.objects("offsite");
    assert_eq!(objects.len(), 2, "{objects:?}");
    assert!(objects.iter().all(|o| o["status"] == "ok"), "{objects:?}");
    // S3's own listing, not Garage's per-bucket counter: a node down while an upload completes
    // keeps its part of the counter at 1 (seen with Garage 2.5.0, still 1 after the node is back),
    // though ListMultipartUploads, asked of the cluster, lists nothing.
    assert_eq!(s3_open_uploads(&env.access, BUCKET), Vec::new(), "no upload is left open");
    eprintln!("garage's unfinishedMultipartUploads counter reads {}", env.cluster.list_multipart_uploads(BUCKET));
    // With node 2 back, the first copy still reads (the big one was read above).
    env.cluster.restart(2);
    let first = report["backup_id"].to_string();
    env.expect(&["verify", "--remote", "offsite", &first, "--identity", &identity_arg], 0);
    env.assert_invariants();
    std::fs::remove_file(env.project.data_dir().join("big.bin")).unwrap();
    let secret = env.access.secret.clone();
    env.assert_no_secret(&[&secret]);
}

#[test]
fn cluster_down_then_push() {
    let Some(mut env) = setup() else { return };
    let (identity, recipient) = age_identity(env.dir());
    let identity_arg = identity.to_str().unwrap().to_owned();
    env.env_creds();
    let offsite = env.remote("offsite", &format!("s3://{BUCKET}/down"), Some(&recipient));
    env.configure(std::slice::from_ref(&offsite));

    env.cluster.stop_all();
    let started = Instant::now();
    let output = env.expect(&["--json", "backup"], 0);
    eprintln!("backup with the cluster down took {:.2?}", started.elapsed());
    let report = parse(&output, &["backup"]);
    let copies = report["copies"].as_array().unwrap_or_else(|| panic!("no copies: {report}"));
    assert_eq!(copies.len(), 1, "{report}");
    let copy = &copies[0];
    assert_eq!(copy["status"], "pending", "{report}");
    assert_eq!(copy["remote"], "offsite", "{report}");
    assert_eq!(copy["backup_id"], report["backup_id"], "{report}");
    assert_eq!(copy["encrypted"], true, "{report}");
    assert_eq!(copy["key"], format!("{}.age", archive_name(&report)).as_str(), "{report}");
    assert!(copy["stored_bytes"].is_null(), "{report}");
    let error = copy["error"].as_str().unwrap_or_else(|| panic!("a pending copy says why: {report}"));
    assert!(error.contains("offsite"), "the error names the remote: {error}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("pending") && stderr.contains("offsite") && stderr.contains("lifeboat push"),
        "stderr warns that the copy is pending: {stderr}"
    );
    // The backup is recorded and the services are back, whatever the remote.
    let backups = env.backups();
    assert_eq!(backups.len(), 1, "{backups:?}");
    assert_eq!(backups[0]["id"], report["backup_id"]);
    env.assert_invariants();
    assert_eq!(env.ship_runs(), Vec::<Value>::new(), "a remote found down before any run journals none");

    let status = env.json(&["status"], 0);
    let remote = &status["remotes"][0];
    assert_eq!(remote["name"], "offsite", "{status}");
    assert_eq!(remote["url"], format!("s3://{BUCKET}/down").as_str(), "{status}");
    assert_eq!(remote["encrypted"], true, "{status}");
    assert_eq!(remote["copies"], 0, "{status}");
    assert!(remote["pending"].as_u64().is_some_and(|n| n >= 1), "{status}");
    assert_eq!(status["metrics"]["copies_pending"]["offsite"], 1, "{status}");

    // push while the cluster is still down: the copy stays pending, exit 1.
    let output = env.expect(&["--json", "push"], 1);
    let push = parse(&output, &["push"]);
    assert_eq!(push["copies"][0]["status"], "pending", "{push}");
    assert_eq!(env.remote_status("offsite")["pending"], 1);

    env.cluster.start_all();
    let push = env.json(&["push"], 0);
    let copies = push["copies"].as_array().unwrap_or_else(|| panic!("{push}"));
    assert_eq!(copies.len(), 1, "{push}");
    assert_eq!(copies[0]["status"], "shipped", "{push}");
    assert_eq!(copies[0]["backup_id"], report["backup_id"], "{push}");
    let remote = env.remote_status("offsite");
    assert_eq!((remote["copies"].as_u64(), remote["pending"].as_u64()), (Some(1), Some(0)), "{remote}");
    assert_eq!(env.json(&["status"], 0)["metrics"]["copies_pending"]["offsite"], 0);
    let again = env.expect(&["push"], 0);
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing to ship"), "{}", describe(&again));
    assert_eq!(env.json(&["push"], 0)["copies"], serde_json::json!([]));
    let runs = env.ship_runs();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["outcome"], "completed", "{runs:?}");
    env.expect(&["verify", "--remote", "offsite", "--all", "--identity", &identity_arg], 0);
    assert_eq!(uploads_left(&env, BUCKET, "at the end"), None);
    env.assert_invariants();
    let secret = env.access.secret.clone();
    env.assert_no_secret(&[&secret]);
}

#[test]
fn wrong_credentials_and_missing_bucket() {
    let Some(env) = setup() else { return };
    let offsite = env.remote("offsite", &format!("s3://{BUCKET}/creds"), None);
    env.configure(std::slice::from_ref(&offsite));
    let (key_id, secret) = (env.access.key_id.clone(), env.access.secret.clone());
    let wrong = random_hex(32);

    // A wrong secret: exit 2 naming the remote, the backup recorded, the services running.
    env.set_creds(Some((&key_id, &wrong)));
    let output = env.expect(&["backup"], 2);
    let said = text(&output);
    assert!(said.contains("offsite"), "the message names the remote: {said}");
    assert!(said.contains("credentials"), "the message says what is wrong: {said}");
    assert!(!said.contains(&wrong) && !said.contains(&secret), "the message shows no secret: {said}");
    assert_eq!(env.backups().len(), 1);
    env.assert_invariants();
    let output = env.expect(&["--json", "backup"], 2);
    let report = parse(&output, &["backup"]);
    assert_eq!(report["copies"].as_array().map(Vec::len), Some(2), "both backups are pending: {report}");
    assert!(report["copies"].as_array().unwrap().iter().all(|c| c["status"] == "pending"), "{report}");
    assert!(report["copies"][0]["error"].as_str().is_some_and(|e| e.contains("offsite")), "{report}");
    assert_eq!(env.backups().len(), 2);
    assert_eq!(env.remote_status("offsite")["pending"], 2);

    // An unknown key id, and no credentials at all: exit 2 too.
    env.set_creds(Some(("GK0123456789abcdef01234567", &secret)));
    let output = env.expect(&["push"], 2);
    assert!(text(&output).contains("offsite"), "{}", describe(&output));
    env.set_creds(None);
    let output = env.expect(&["push"], 2);
    assert!(text(&output).contains("AWS_ACCESS_KEY_ID"), "{}", describe(&output));

    // A credentials file others may read is refused, naming the file; a private one ships.
    let creds = env.dir().join("offsite.credentials");
    std::fs::write(&creds, format!("AWS_ACCESS_KEY_ID={key_id}\nAWS_SECRET_ACCESS_KEY={secret}\n")).unwrap();
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o644)).unwrap();
    let filed = format!("{offsite}credentials_file = \"offsite.credentials\"\n");
    env.configure(std::slice::from_ref(&filed));
    let output = env.expect(&["push"], 2);
    assert!(text(&output).contains("offsite.credentials"), "{}", describe(&output));
    assert!(!text(&output).contains(&secret), "{}", describe(&output));
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o600)).unwrap();
    let push = env.json(&["push"], 0);
    assert_eq!(push["copies"].as_array().map(Vec::len), Some(2), "{push}");
    assert!(push["copies"].as_array().unwrap().iter().all(|c| c["status"] == "shipped"), "{push}");
    assert_eq!(env.objects("offsite").len(), 2);

    // A bucket that does not exist: exit 2, "create it first"; the other remote still ships.
    env.env_creds();
    let nowhere = env.remote("nowhere", "s3://no-such-bucket-lifeboat/x", None);
    env.configure(&[offsite.clone(), nowhere]);
    let output = env.expect(&["--json", "backup"], 2);
    let said = text(&output);
    assert!(said.contains("create it first"), "{said}");
    assert!(said.contains("no-such-bucket-lifeboat") && said.contains("nowhere"), "{said}");
    assert!(!said.contains(&secret), "{said}");
    let report = parse(&output, &["backup"]);
    let copies = report["copies"].as_array().unwrap();
    let ours: Vec<&Value> = copies.iter().filter(|c| c["backup_id"] == report["backup_id"]).collect();
    assert_eq!(ours.len(), 2, "{report}");
    assert!(ours.iter().any(|c| c["remote"] == "offsite" && c["status"] == "shipped"), "{report}");
    assert!(ours.iter().any(|c| c["remote"] == "nowhere" && c["status"] == "pending"), "{report}");
    assert_eq!(env.backups().len(), 3);
    assert_eq!(env.remote_status("nowhere")["pending"], 3);
    assert_eq!(env.remote_status("offsite")["pending"], 0);
    assert_eq!(uploads_left(&env, BUCKET, "at the end"), None);
    env.assert_invariants();
    env.assert_no_secret(&[&secret, &wrong]);
}

#[test]
fn altered_and_truncated() {
    let Some(env) = setup() else { return };
    let (identity, recipient) = age_identity(env.dir());
    let identity_arg = identity.to_str().unwrap().to_owned();
    env.env_creds();
    let plain = env.remote("plain", &format!("s3://{BUCKET}/plain"), None);
    let sealed = env.remote("sealed", &format!("s3://{BUCKET}/sealed"), Some(&recipient));
    env.configure(&[plain, sealed]);
    std::fs::write(env.project.data_dir().join("some.bin"), random_bytes(3 << 20)).unwrap();
    let first = env.json(&["backup"], 0);
    let second = env.json(&["backup"], 0);
    for report in [&first, &second] {
        let copies = report["copies"].as_array().unwrap();
        assert_eq!(copies.len(), 2, "{report}");
        assert!(copies.iter().all(|c| c["status"] == "shipped"), "{report}");
        let plain = copies.iter().find(|c| c["remote"] == "plain").unwrap();
        assert_eq!((&plain["encrypted"], &plain["key"]), (&Value::Bool(false), &Value::from(archive_name(report))));
        let sealed = copies.iter().find(|c| c["remote"] == "sealed").unwrap();
        assert_eq!(sealed["encrypted"], true, "{report}");
    }
    env.expect(&["verify", "--remote", "plain", "--all"], 0);
    env.expect(&["verify", "--remote", "sealed", "--all", "--identity", &identity_arg], 0);
    let (id1, id2) = (first["backup_id"].to_string(), second["backup_id"].to_string());
    let (plain1, plain2) = (archive_name(&first), archive_name(&second));
    let (sealed1, sealed2) = (format!("{plain1}.age"), format!("{plain2}.age"));

    // Unencrypted, the copy is the archive byte for byte.
    let object = format!("{BUCKET}/plain/{plain1}");
    let bytes = get_object(&env.access, &object);
    assert_eq!(bytes, std::fs::read(first["path"].as_str().unwrap()).unwrap(), "the plain copy is the archive");

    // Altered, same length: the listing cannot tell (sizes only), verify can.
    let mut altered = bytes.clone();
    let middle = altered.len() / 2;
    for b in &mut altered[middle..middle + 64] {
        *b ^= 0x5a;
    }
    put_object(&env.access, &object, &altered);
    assert_eq!(get_object(&env.access, &object).len(), bytes.len());
    let objects = env.objects("plain");
    let listed = objects.iter().find(|o| o["key"] == plain1.as_str()).unwrap();
    assert_eq!(listed["status"], "ok", "same size: {objects:?}");
    let output = env.expect(&["verify", "--remote", "plain", &id1], 5);
    assert!(text(&output).contains(&plain1), "exit 5 names the key: {}", describe(&output));
    env.expect(&["verify", "--remote", "plain", &id2], 0);

    // Truncated: listed as size-differs; verify --all names it beside the altered one.
    let object = format!("{BUCKET}/plain/{plain2}");
    let bytes = get_object(&env.access, &object);
    put_object(&env.access, &object, &bytes[..bytes.len() / 2]);
    let objects = env.objects("plain");
    let listed = objects.iter().find(|o| o["key"] == plain2.as_str()).unwrap();
    assert_eq!(listed["status"], "size-differs", "{objects:?}");
    let output = env.expect(&["verify", "--remote", "plain", "--all"], 5);
    assert!(text(&output).contains(&plain1) && text(&output).contains(&plain2), "{}", describe(&output));
    let report = parse(&env.expect(&["--json", "verify", "--remote", "plain", "--all"], 5), &["verify"]);
    let bad = report.as_array().unwrap();
    assert_eq!(bad.len(), 2, "{report}");
    assert!(bad.iter().all(|c| c["ok"] == false && c["error"].is_string()), "{report}");

    // Encrypted: a changed chunk fails age's authentication, a truncated file its end.
    let object = format!("{BUCKET}/sealed/{sealed1}");
    let mut bytes = get_object(&env.access, &object);
    let len = bytes.len();
    let middle = len / 2;
    for b in &mut bytes[middle..middle + 16] {
        *b ^= 0xff;
    }
    put_object(&env.access, &object, &bytes);
    assert_eq!(get_object(&env.access, &object).len(), len);
    let output = env.expect(&["verify", "--remote", "sealed", &id1, "--identity", &identity_arg], 5);
    assert!(text(&output).contains(&sealed1), "exit 5 names the key: {}", describe(&output));
    env.expect(&["verify", "--remote", "sealed", &id2, "--identity", &identity_arg], 0);
    let object = format!("{BUCKET}/sealed/{sealed2}");
    let bytes = get_object(&env.access, &object);
    put_object(&env.access, &object, &bytes[..bytes.len() - 1000]);
    let output = env.expect(&["verify", "--remote", "sealed", &id2, "--identity", &identity_arg], 5);
    assert!(text(&output).contains(&sealed2), "exit 5 names the key: {}", describe(&output));

    // A copy gone from the store: listed missing, verify exit 5 naming it.
    rclone(&env.access, &env.access.endpoint, &["deletefile", &format!("garage:{BUCKET}/sealed/{sealed2}")], None)
        .unwrap();
    let objects = env.objects("sealed");
    let listed = objects.iter().find(|o| o["key"] == sealed2.as_str()).unwrap();
    assert_eq!((&listed["status"], &listed["size_bytes"]), (&Value::from("missing"), &Value::Null), "{objects:?}");
    let output = env.expect(&["verify", "--remote", "sealed", &id2, "--identity", &identity_arg], 5);
    assert!(text(&output).contains(&sealed2), "{}", describe(&output));

    // The local archives were never touched.
    env.expect(&["verify", "--all"], 0);
    env.assert_invariants();
    let secret = env.access.secret.clone();
    env.assert_no_secret(&[&secret]);
}

/// After a kill and `recover`: nothing interrupted, the shipping run of `backup_id` ended
/// (`completed` is whether it completed), its copy catalogued if and only if it completed and no
/// object of it left otherwise, no upload open in `bucket`, a second `recover` with nothing to do.
/// Returns the problems with open uploads, which the caller collects (a known gap, see
/// crash_at_every_shipping_fail_point).
fn assert_settled(
    env: &Env,
    context: &str,
    bucket: &str,
    key: &str,
    backup_id: &Value,
    completed: bool,
) -> Option<String> {
    let runs = env.ship_runs();
    let last = runs.last().unwrap_or_else(|| panic!("{context}: no shipping run in the journal"));
    let outcome = if completed { "completed" } else { "rolled_back" };
    assert_eq!(last["outcome"], outcome, "{context}: {last}");
    let ours: Vec<Value> = env.objects("offsite").into_iter().filter(|o| o["key"] == key).collect();
    if completed {
        assert_eq!(ours.len(), 1, "{context}: {ours:?}");
        assert_eq!((&ours[0]["status"], &ours[0]["backup_id"]), (&Value::from("ok"), backup_id), "{context}: {ours:?}");
        assert_eq!(env.remote_status("offsite")["pending"], 0, "{context}");
    } else {
        assert_eq!(ours, Vec::<Value>::new(), "{context}: no copy catalogued, nothing of it left on the store");
        assert_eq!(env.remote_status("offsite")["pending"], 1, "{context}");
    }
    assert_eq!(env.json(&["recover"], 0), serde_json::json!([]), "{context}: a second recover changes nothing");
    uploads_left(env, bucket, context)
}

/// A message when `bucket` holds an open multipart upload, by Garage's counter or by S3's
/// ListMultipartUploads; `None` when both say none.
fn uploads_left(env: &Env, bucket: &str, context: &str) -> Option<String> {
    let counted = env.cluster.list_multipart_uploads(bucket);
    let listed = s3_open_uploads(&env.access, bucket);
    (counted != 0 || !listed.is_empty()).then(|| {
        format!("{context}: Garage counts {counted} open upload(s) in {bucket}; ListMultipartUploads lists {listed:?}")
    })
}

#[test]
fn crash_at_every_shipping_fail_point() {
    let Some(env) = setup() else { return };
    let (identity, recipient) = age_identity(env.dir());
    let identity_arg = identity.to_str().unwrap().to_owned();
    env.env_creds();
    std::fs::write(env.project.data_dir().join("some.bin"), random_bytes(12 << 20)).unwrap();
    let mut open_uploads = Vec::new();
    let mut copies = 0;
    for (i, point) in SHIP_POINTS.iter().enumerate() {
        // A bucket of its own per point, so that Garage's count of open uploads is this point's.
        let bucket = format!("crash-{i}");
        env.cluster.create_bucket(&bucket);
        let offsite = env.remote("offsite", &format!("s3://{bucket}/lb"), Some(&recipient));
        let backup = env.pending_backup(std::slice::from_ref(&offsite));
        let key = format!("{}.age", archive_name(&backup));
        assert_eq!(env.remote_status("offsite")["pending"], 1, "{point}");

        if *point == "recovering" {
            env.crash(&["push"], "effect:upload_copy");
            env.crash(&["recover"], "recovering");
        } else {
            env.crash(&["push"], point);
        }
        // What the kill left on the store: the upload open from the store's answer to its
        // begin (even when that answer never reached the journal) until the upload completed.
        let left_open = matches!(*point, "effect:begin_upload" | "outcome:begin_upload" | "intent:upload_copy");
        let open = s3_open_uploads(&env.access, &bucket);
        let expected = if left_open { vec![format!("lb/{key}")] } else { Vec::new() };
        assert_eq!(open.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(), expected, "{point}: open after the kill");
        // Past the record's outcome the run has ended; before, it waits for recover (exit 4).
        let completed = *point == "outcome:record_copy";
        let output = env.run(&["push"]);
        assert_eq!(output.status.code(), Some(if completed { 0 } else { 4 }), "{point}: {}", describe(&output));
        let recovered = env.json(&["recover"], 0);
        let recovered = recovered.as_array().unwrap();
        if completed {
            assert!(recovered.is_empty(), "{point}: {recovered:?}");
        } else {
            assert_eq!(recovered.len(), 1, "{point}: {recovered:?}");
            assert_eq!(
                (&recovered[0]["kind"], &recovered[0]["state"]),
                (&Value::from("ship"), &Value::from("rolled_back")),
                "{point}: {recovered:?}"
            );
        }
        open_uploads.extend(assert_settled(&env, point, &bucket, &key, &backup["backup_id"], completed));
        copies += usize::from(completed);
        assert_eq!(env.remote_status("offsite")["copies"], copies as u64, "{point}");

        // The next push ships what is pending, and the copy verifies.
        let push = env.json(&["push"], 0);
        let shipped = push["copies"].as_array().unwrap();
        if completed {
            assert!(shipped.is_empty(), "{point}: nothing left to ship: {push}");
        } else {
            assert_eq!(shipped.len(), 1, "{point}: {push}");
            assert_eq!(
                (&shipped[0]["status"], &shipped[0]["key"]),
                (&Value::from("shipped"), &Value::from(key.as_str())),
                "{point}: {push}"
            );
            copies += 1;
        }
        let id = backup["backup_id"].to_string();
        let verified = env.json(&["verify", "--remote", "offsite", &id, "--identity", &identity_arg], 0);
        assert_eq!(verified[0]["ok"], true, "{point}: {verified}");
        open_uploads.extend(uploads_left(&env, &bucket, &format!("{point}, after the push")));
        env.assert_invariants();
        eprintln!("{point}: settled");
    }
    let secret = env.access.secret.clone();
    env.assert_no_secret(&[&secret]);
    // Asserted last, so that every point above was exercised. `effect:begin_upload` kills after
    // the store opened the upload and before its id reached the journal: recovery can only abort
    // it if the remote can find uploads by key (crates/remote, abort_uploads_of).
    assert!(open_uploads.is_empty(), "multipart uploads left open:\n{}", open_uploads.join("\n"));
}

#[test]
fn kill_at_random_moments_in_a_multipart_upload() {
    let Some(env) = setup() else { return };
    let long = std::env::var("LIFEBOAT_LONG_TESTS").is_ok_and(|v| v == "1");
    let iterations = if long { 20 } else { 5 };
    let mut seed: u64 =
        std::env::var("LIFEBOAT_SHIP_KILL_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
        });
    eprintln!("ship kill seed {seed} (LIFEBOAT_SHIP_KILL_SEED={seed} replays it)");
    let (identity, recipient) = age_identity(env.dir());
    let identity_arg = identity.to_str().unwrap().to_owned();
    env.env_creds();
    // zstd at level 1: the archive of random data is written fast, and stays ~200 MB.
    env.edits
        .borrow_mut()
        .push(("compression_level = 6".into(), "compression = \"zstd\"\ncompression_level = 1".into()));
    std::fs::write(env.project.data_dir().join("big.bin"), random_bytes(200 << 20)).unwrap();
    let offsite = env.remote("offsite", &format!("s3://{BUCKET}/kills"), Some(&recipient));
    let remotes = std::slice::from_ref(&offsite);

    // One clean push, to measure how long an upload stays open, and spread the kills over it.
    let mut backup = env.pending_backup(remotes);
    let mut child = env.spawn(&["push"]);
    wait_for_open_upload(&env.cluster, BUCKET, &mut child, Duration::from_secs(120)).unwrap_or_else(|e| panic!("{e}"));
    let opened = Instant::now();
    let output = env.finish("lifeboat push (measured)", child);
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let window = opened.elapsed().as_millis() as u64;
    eprintln!("an upload of {} bytes stays open about {window} ms", backup["size_bytes"]);

    let mut open_uploads = Vec::new();
    let mut killed_mid_run = 0;
    for i in 0..iterations {
        if env.remote_status("offsite")["pending"] == 0 {
            backup = env.pending_backup(remotes);
        }
        let key = format!("{}.age", archive_name(&backup));
        let delay = next(&mut seed) % (window + 300);
        let context = format!("kill {i}, {delay} ms after the upload opened");
        let mut child = env.spawn(&["push"]);
        wait_for_open_upload(&env.cluster, BUCKET, &mut child, Duration::from_secs(120))
            .unwrap_or_else(|e| panic!("{context}: {e}"));
        std::thread::sleep(Duration::from_millis(delay));
        // SAFETY: kill(2) has no memory-safety preconditions; the child is not reaped yet.
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        let output = env.finish(&format!("lifeboat push ({context})"), child);
        let killed = output.status.signal() == Some(libc::SIGKILL);
        if !killed {
            assert_eq!(output.status.code(), Some(0), "{context}: {}", describe(&output));
        }
        let recovered = env.json(&["recover"], 0);
        let recovered = recovered.as_array().unwrap().clone();
        let completed = match recovered.as_slice() {
            [] => true,
            [run] => {
                assert_eq!(
                    (&run["kind"], &run["state"]),
                    (&Value::from("ship"), &Value::from("rolled_back")),
                    "{context}: {run}"
                );
                false
            }
            more => panic!("{context}: one run was interrupted, recover settled {more:?}"),
        };
        killed_mid_run += usize::from(!completed);
        eprintln!("{context}: {}", if completed { "the copy had been catalogued" } else { "rolled back" });
        open_uploads.extend(assert_settled(&env, &context, BUCKET, &key, &backup["backup_id"], completed));
        let objects = env.objects("offsite");
        assert!(
            objects.iter().all(|o| o["status"] == "ok"),
            "{context}: only catalogued copies, all there: {objects:?}"
        );
        env.assert_invariants();
    }
    // A following push ships what is pending, and the copy that the kills interrupted verifies.
    let push = env.json(&["push"], 0);
    assert!(push["copies"].as_array().unwrap().iter().all(|c| c["status"] == "shipped"), "{push}");
    assert_eq!(env.remote_status("offsite")["pending"], 0);
    let id = backup["backup_id"].to_string();
    let verified = env.json(&["verify", "--remote", "offsite", &id, "--identity", &identity_arg], 0);
    assert!(verified.as_array().unwrap().iter().all(|c| c["ok"] == true), "{verified}");
    assert_eq!(uploads_left(&env, BUCKET, "at the end"), None);
    env.assert_invariants();
    std::fs::remove_file(env.project.data_dir().join("big.bin")).unwrap();
    eprintln!("{killed_mid_run} of {iterations} pushes were killed before their copy was catalogued");
    assert!(
        killed_mid_run * 2 >= iterations,
        "most kills should land inside the upload ({killed_mid_run} of {iterations})"
    );
    assert!(open_uploads.is_empty(), "multipart uploads left open:\n{}", open_uploads.join("\n"));
}

#[test]
fn no_secret_anywhere() {
    let Some(env) = setup() else { return };
    let (identity, recipient) = age_identity(env.dir());
    let identity_arg = identity.to_str().unwrap().to_owned();
    let (key_id, secret) = (env.access.key_id.clone(), env.access.secret.clone());
    // Two remotes: one with the key in the environment, one with it in a credentials file
    // (outside what backups archive); a metrics file; verbose logs of the client library.
    let creds = env.dir().join("filed.credentials");
    write_private(&creds, &format!("[default]\naws_access_key_id = {key_id}\naws_secret_access_key = {secret}\n"));
    env.extra.borrow_mut().push_str("\n[metrics]\nfile = \"metrics.prom\"\n");
    let by_env = env.remote("by-env", &format!("s3://{BUCKET}/env"), Some(&recipient));
    let filed = format!(
        "{}credentials_file = \"filed.credentials\"\n",
        env.remote("filed", &format!("s3://{BUCKET}/file"), None)
    );
    let remotes = [by_env, filed];
    env.env_creds();
    env.configure(&remotes);

    let report = env.json(&["backup"], 0);
    assert!(report["copies"].as_array().unwrap().iter().all(|c| c["status"] == "shipped"), "{report}");
    env.expect(&["-vv", "backup"], 0);
    env.expect(&["push"], 0);
    for remote in ["by-env", "filed"] {
        env.expect(&["list", "--remote", remote], 0);
        env.json(&["list", "--remote", remote], 0);
    }
    env.expect(&["-vv", "verify", "--remote", "by-env", "--all", "--identity", &identity_arg], 0);
    env.expect(&["verify", "--remote", "filed", "--all"], 0);
    env.json(&["status"], 0);
    let metrics = std::fs::read_to_string(env.dir().join("metrics.prom")).expect("the metrics file is written");
    assert!(metrics.contains("lifeboat_copies_pending"), "{metrics}");

    // A crash in the middle of an upload, and its recovery, verbose.
    env.pending_backup(&remotes);
    env.crash(&["-vv", "push"], "effect:upload_copy");
    env.expect(&["-vv", "recover"], 0);
    env.expect(&["-vv", "push"], 0);
    // A wrong secret in the environment: one remote refuses, the filed one still ships.
    let wrong = random_hex(32);
    env.set_creds(Some((&key_id, &wrong)));
    let output = env.expect(&["-vv", "--json", "backup"], 2);
    let report = parse(&output, &["backup"]);
    let copies = report["copies"].as_array().unwrap();
    assert!(copies.iter().any(|c| c["remote"] == "filed" && c["status"] == "shipped"), "{report}");
    assert!(copies.iter().any(|c| c["remote"] == "by-env" && c["status"] == "pending"), "{report}");
    env.set_creds(Some((&key_id, &secret)));
    env.expect(&["push"], 0);
    assert_eq!(env.remote_status("by-env")["pending"], 0);
    env.assert_invariants();
    env.assert_no_secret(&[&secret, &wrong]);
}

/// The disaster drill on the cluster (README, "Off-host copies"): the host's backups, project
/// directory and volumes are gone; left are the encrypted copies on the cluster and the age
/// identity kept elsewhere. `restore --from s3://...` brings the newest back into the emptied
/// directory, `import --remote` catalogues the rest of the history from the manifests, and
/// `restore ID` fetches an older copy and puts its data back; the services are up and healthy
/// throughout, no upload is left open, no secret is written anywhere.
#[test]
fn disaster_drill_restore_from_the_cluster_then_import_the_history() {
    let Some(env) = setup() else { return };
    env.env_creds();
    let keys = tempfile::tempdir().unwrap();
    let (identity, recipient) = age_identity(keys.path());
    let identity_arg = identity.display().to_string();
    let url = format!("s3://{BUCKET}/drill");
    env.configure(&[env.remote("offsite", &url, Some(&recipient))]);
    let marker = env.project.data_dir().join("drill-marker");
    std::fs::write(&marker, "older").unwrap();
    let older = env.json(&["backup"], 0);
    std::fs::write(&marker, "newer").unwrap();
    let newer = env.json(&["backup"], 0);
    for report in [&older, &newer] {
        assert_eq!(report["copies"][0]["status"], "shipped", "{report}");
    }
    let key = newer["copies"][0]["key"].as_str().unwrap().to_owned();

    // The disaster: containers, volumes, the directory's contents (backups and journal with it).
    env.project.compose(&["down", "-v", "-t", "1"]);
    for entry in std::fs::read_dir(env.dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() { std::fs::remove_dir_all(&path).unwrap() } else { std::fs::remove_file(&path).unwrap() }
    }

    let from = format!("{url}/{key}");
    let restored = env.json(
        &[
            "restore",
            "--from",
            &from,
            "--endpoint",
            &env.access.endpoint,
            "--region",
            &env.access.region,
            "--path-style",
            "--identity",
            &identity_arg,
            "--yes",
        ],
        0,
    );
    assert_eq!(restored["backup_id"], newer["backup_id"], "{restored}");
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "newer");
    env.project.wait_all_up();
    assert_eq!(running(&env.project), env.before, "the services that were running run again");

    // The restored lifeboat.toml has the [[remote]]: the rest of the history follows.
    let imported = env.json(&["import", "--remote", "offsite", "--identity", &identity_arg], 0);
    let outcome = |id: &Value| {
        imported["copies"].as_array().unwrap().iter().find(|c| c["backup_id"] == *id).map(|c| c["outcome"].clone())
    };
    assert_eq!(outcome(&older["backup_id"]), Some(Value::from("imported")), "{imported}");
    assert_eq!(outcome(&newer["backup_id"]), Some(Value::from("already_catalogued")), "{imported}");
    assert_eq!(env.backups().len(), 2);
    assert!(env.objects("offsite").iter().all(|o| o["status"] == "ok"), "every copy is catalogued and there");

    let older_id = older["backup_id"].to_string();
    env.json(&["restore", &older_id, "--identity", &identity_arg, "--yes"], 0);
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "older", "the older backup's data is back");
    assert_eq!(running(&env.project), env.before);
    env.expect(&["verify", "--all"], 0);
    env.expect(&["verify", "--remote", "offsite", "--all", "--identity", &identity_arg], 0);
    assert_eq!(s3_open_uploads(&env.access, BUCKET), Vec::<(String, String)>::new(), "no upload is left open");
    env.assert_invariants();
    env.assert_no_secret(&[&env.access.secret]);
}
