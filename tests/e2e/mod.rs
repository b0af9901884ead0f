//! Running the real `lifeboat` binary against a [`support::Project`], and the invariants of the
//! ARCHITECTURE.md as assertions the crash and fault tests share.
#![allow(dead_code)]

use crate::support::Project;
use lifeboat::docker::State;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The binary under test, built by cargo for this test target.
pub const LIFEBOAT: &str = env!("CARGO_BIN_EXE_lifeboat");

/// The usual start of a Docker test: the fixture project up (idle stopped) and configured for
/// lifeboat, with the services running before anything happens. `None`, after a loud notice,
/// when no daemon answers outside CI (in CI that is a failure, see `support::docker_available`).
pub fn started_project() -> Option<(Project, Vec<String>)> {
    if !crate::support::docker_available() {
        return None;
    }
    let project = Project::start();
    configure(&project);
    let before = running(&project);
    Some((project, before))
}

/// Writes a `lifeboat.toml` for the fixture project: its data dir and named volume, backups in
/// `backups/`, and short timeouts so faults show quickly.
pub fn configure(project: &Project) {
    configure_with(project, "backups", 10);
}

pub fn configure_with(project: &Project, backup_dir: &str, stop_timeout_secs: u64) {
    let toml = format!(
        "[project]\nname = \"{}\"\ncompose_file = \"{}\"\ncompose_command = \"{}\"\n\n\
         [backup]\npaths = [\"data\"]\nvolumes = true\ndir = \"{backup_dir}\"\ncompression_level = 6\n\n\
         [services]\nstop_timeout_secs = {stop_timeout_secs}\nstart_timeout_secs = 60\n",
        project.name(),
        project.compose_file_name(),
        project.compose_command(),
    );
    std::fs::write(project.dir().join("lifeboat.toml"), toml).expect("write lifeboat.toml");
}

/// A `lifeboat` command in the project directory, with no fail points unless the caller adds them.
pub fn command(project: &Project, args: &[&str]) -> Command {
    let mut command = Command::new(LIFEBOAT);
    command.arg("-C").arg(project.dir()).args(args).env_remove("FAILPOINTS").env_remove("RUST_LOG");
    command
}

/// Runs `lifeboat ARGS` to completion.
pub fn run(project: &Project, args: &[&str]) -> Output {
    command(project, args).output().expect("run lifeboat")
}

/// Runs `lifeboat ARGS`, asserting exit code `code`; returns stdout.
pub fn run_expect(project: &Project, args: &[&str], code: i32) -> String {
    let output = run(project, args);
    assert_eq!(output.status.code(), Some(code), "lifeboat {}: {}", args.join(" "), describe(&output));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs `lifeboat --json ARGS`, asserting success, and parses its JSON.
pub fn run_json(project: &Project, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let stdout = run_expect(project, &all, 0);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("lifeboat {}: bad JSON ({e}): {stdout}", args.join(" ")))
}

pub fn describe(output: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The services whose container is running, by name.
pub fn running(project: &Project) -> Vec<String> {
    let mut names = project.running_services();
    names.sort();
    names
}

/// Every `*.partial` file under `dir`.
pub fn partial_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "partial")).collect()
}

/// sha256 of a file, with the system's `sha256sum`, so the check does not trust lifeboat's code.
pub fn sha256sum(path: &Path) -> String {
    let output = Command::new("sha256sum").arg(path).output().expect("run sha256sum");
    assert!(output.status.success(), "sha256sum {}", path.display());
    String::from_utf8_lossy(&output.stdout).split_whitespace().next().unwrap_or_default().to_owned()
}

/// The invariants that hold after any run or recovery ended (ARCHITECTURE.md, 1-3):
/// the services that were running are running (and up), no partial archive is left, every listed
/// backup is complete and matches its sha256, and the journal verifies clean.
pub fn assert_invariants(project: &Project, running_before: &[String]) {
    let running_now = running(project);
    assert_eq!(running_now, running_before, "invariant 1: the services that were running are running");
    project.wait_all_up();
    let backups_dir = project.dir().join("backups");
    assert_eq!(partial_files(&backups_dir), Vec::<PathBuf>::new(), "invariant 3: no partial archive survives");
    let list = run_json(project, &["list"]);
    for entry in list.as_array().expect("list is an array") {
        let path = PathBuf::from(entry["path"].as_str().expect("path"));
        assert!(path.exists(), "invariant 2: listed backup {} exists", path.display());
        assert_eq!(sha256sum(&path), entry["sha256"].as_str().unwrap(), "invariant 2: sha256 of {}", path.display());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), entry["size_bytes"].as_u64().unwrap());
    }
    run_expect(project, &["journal", "verify"], 0);
}

/// Service states by name, for before/after comparisons.
pub fn states(project: &Project) -> BTreeMap<String, State> {
    project.service_states().into_iter().map(|(name, (state, _))| (name, state)).collect()
}

/// `n` incompressible bytes from the kernel's generator.
pub fn random_bytes(n: usize) -> Vec<u8> {
    use std::io::Read;
    let mut bytes = vec![0; n];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)).expect("read /dev/urandom");
    bytes
}

/// Runs `lifeboat ARGS` with the fail point `point` armed and asserts the process died there, by
/// the SIGKILL the fail point sends itself.
pub fn crash_at(project: &Project, args: &[&str], point: &str) {
    use std::os::unix::process::ExitStatusExt;
    let output = command(project, args).env("FAILPOINTS", format!("{point}=return")).output().expect("run lifeboat");
    assert_eq!(
        output.status.signal(),
        Some(libc::SIGKILL),
        "lifeboat {} should crash at {point}: {}",
        args.join(" "),
        describe(&output)
    );
}

/// Spawns `lifeboat ARGS` and sends it `signal` the moment Docker reports that the container
/// `container_id` was sent a stop signal (its `kill` event): synchronised on `docker events`, not
/// on a sleep, so the signal lands while that container is on its way down. Returns lifeboat's
/// output; panics if the event does not come within a minute.
pub fn signal_when_stopping(project: &Project, args: &[&str], container_id: &str, signal: i32) -> Output {
    use std::io::BufRead;
    use std::process::Stdio;
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    let mut events = Command::new("docker")
        .args(["events", "--since", &format!("{}.{:09}", since.as_secs(), since.subsec_nanos())])
        .args(["--filter", &format!("container={container_id}"), "--filter", "event=kill"])
        .args(["--format", "{{.Action}} {{.Actor.Attributes.signal}}"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("run docker events");
    let stdout = events.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut first = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut first);
        let _ = tx.send(first);
    });
    let child = command(project, args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("run lifeboat");
    let event = rx.recv_timeout(std::time::Duration::from_secs(60));
    let _ = events.kill();
    let _ = events.wait();
    let event =
        event.unwrap_or_else(|_| panic!("no kill event for {container_id} while 'lifeboat {}' ran", args.join(" ")));
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(child.id() as i32, signal) };
    let output = child.wait_with_output().expect("wait for lifeboat");
    eprintln!("signal {signal} sent on '{}' of {container_id}", event.trim());
    output
}

/// `lifeboat recover` at once, then, once a service stopping slowly (3 s) would have exited, the
/// invariants; and a second `recover` that finds nothing to do.
pub fn recover_at_once_and_check(project: &Project, running_before: &[String], context: &str) {
    let output = run(project, &["recover"]);
    assert_eq!(output.status.code(), Some(0), "{context}: recover: {}", describe(&output));
    // A recovery that left a container on its way down would show here: it exits within 3 s.
    std::thread::sleep(std::time::Duration::from_secs(4));
    assert_invariants(project, running_before);
    let again = run_expect(project, &["recover"], 0);
    assert!(again.contains("nothing to recover"), "{context}: a second recover changes nothing: {again}");
}
