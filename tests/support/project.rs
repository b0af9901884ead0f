//! A throw-away compose project on the real daemon.
//!
//! Each [`Project`] has its own temporary directory and its own compose project name, so tests run in
//! parallel without seeing each other. Dropping it runs `docker-compose down -v --remove-orphans` and
//! removes the directory, also when the test panicked.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lifeboat::docker::{Container, Health, State, Volume};

use super::{TEST_IMAGE, block_on, ensure_test_image};

/// The fixed middle of every record the writer appends: `record 000123 <PAYLOAD> end`.
pub const PAYLOAD: &str = "lifeboat-test-payload-0123456789abcdefghijklmnopqrstuvwxyz";

/// The records file, relative to the project directory (the writer's bind mount is `./data`).
const RECORDS: &str = "data/records.txt";

/// How long `up` waits for every service to be up.
const UP_TIMEOUT: Duration = Duration::from_secs(90);

/// The compose file. Services:
/// - `writer`: appends a numbered record every ~50 ms to `./data/records.txt`, fsyncing each, and
///   continues the numbering after a restart; exits at once on SIGTERM. Depends on `cache` (list form).
/// - `db`: writes to the named volume `dbdata`; HEALTHCHECK passes about a second after start.
/// - `cache`: depends on `db` being healthy (map form).
/// - `idle`: started by `up` like the others; [`Project::start`] stops it so it must stay stopped.
///
/// Services behind profiles are not started by `up`; tests start them by name:
/// - `broken`: its healthcheck always fails (unhealthy after ~2 s); logs `broken-marker`.
/// - `slow`: its healthcheck first runs after 60 s, so it stays `starting`; logs `slow-marker`.
/// - `crasher`: logs `crash-marker` and exits with code 3.
/// - `stubborn`: ignores SIGTERM, so a stop has to kill it; stop grace period 1 s.
/// - `slowstop`: healthy about a second after start; on SIGTERM it takes 3 s to exit (as a
///   database flushing its buffers would), reporting running and healthy until then.
const COMPOSE_FILE: &str = r#"version: "2.4"
services:
  writer:
    image: @IMAGE@
    command:
      - sh
      - -c
      - |
        trap 'exit 0' TERM INT
        n=0
        if [ -f /data/records.txt ]; then n=$$(wc -l < /data/records.txt); fi
        echo "writer starting after record $$n"
        while true; do
          n=$$((n + 1))
          printf 'record %06d %s end\n' "$$n" "@PAYLOAD@" >> /data/records.txt
          sync /data/records.txt
          sleep 0.05 & wait $$!
        done
    volumes:
      - ./data:/data
    depends_on:
      - cache
  db:
    image: @IMAGE@
    command:
      - sh
      - -c
      - |
        trap 'exit 0' TERM INT
        echo "db starting"
        sleep 1
        date >> /var/lib/db/started
        touch /tmp/ready
        while true; do
          date > /var/lib/db/heartbeat
          sleep 1 & wait $$!
        done
    volumes:
      - dbdata:/var/lib/db
    healthcheck:
      test: ["CMD", "test", "-f", "/tmp/ready"]
      interval: 1s
      timeout: 2s
      retries: 30
  cache:
    image: @IMAGE@
    command: ["sh", "-c", "trap 'exit 0' TERM INT; echo cache starting; while true; do sleep 1 & wait $$!; done"]
    depends_on:
      db:
        condition: service_healthy
  idle:
    image: @IMAGE@
    command: ["sh", "-c", "trap 'exit 0' TERM INT; echo idle starting; while true; do sleep 1 & wait $$!; done"]
  broken:
    image: @IMAGE@
    profiles: ["faulty"]
    command: ["sh", "-c", "trap 'exit 0' TERM INT; echo broken-marker; while true; do sleep 1 & wait $$!; done"]
    healthcheck:
      test: ["CMD", "false"]
      interval: 1s
      timeout: 1s
      retries: 2
  slow:
    image: @IMAGE@
    profiles: ["faulty"]
    command: ["sh", "-c", "trap 'exit 0' TERM INT; echo slow-marker; while true; do sleep 1 & wait $$!; done"]
    healthcheck:
      test: ["CMD", "true"]
      interval: 60s
  crasher:
    image: @IMAGE@
    profiles: ["faulty"]
    command: ["sh", "-c", "echo crash-marker; exit 3"]
  stubborn:
    image: @IMAGE@
    profiles: ["faulty"]
    command: ["sh", "-c", "trap '' TERM; echo stubborn-marker; while true; do sleep 1; done"]
    stop_grace_period: 1s
  slowstop:
    image: @IMAGE@
    profiles: ["faulty"]
    command: ["sh", "-c", "trap 'echo slowstop-stopping; sleep 3; exit 0' TERM INT; echo slowstop-marker; touch /tmp/ready; while true; do sleep 1 & wait $$!; done"]
    healthcheck:
      test: ["CMD", "test", "-f", "/tmp/ready"]
      interval: 1s
      timeout: 2s
      retries: 30
volumes:
  dbdata: {}
"#;

static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

/// A compose project in a temporary directory. See [`COMPOSE_FILE`] for its services.
pub struct Project {
    dir: tempfile::TempDir,
    name: String,
}

impl Project {
    /// Writes the project (compose file and an empty `data/`) without starting anything.
    /// Builds the test image first when the daemon lacks it.
    pub fn new() -> Project {
        ensure_test_image();
        let dir =
            tempfile::Builder::new().prefix("lifeboat-test-").tempdir().expect("create a temporary project directory");
        std::fs::create_dir(dir.path().join("data")).expect("create data/");
        let compose = COMPOSE_FILE.replace("@IMAGE@", TEST_IMAGE).replace("@PAYLOAD@", PAYLOAD);
        std::fs::write(dir.path().join("docker-compose.yml"), compose).expect("write docker-compose.yml");
        // Compose v1 keeps only [a-z0-9_-] of a project name. The pid and a counter make it unique
        // among running tests; the clock keeps it apart from leftovers of a killed earlier run.
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let name = format!("lbtest_{}_{}_{:x}", std::process::id(), NEXT_ID.fetch_add(1, Ordering::Relaxed), nanos);
        Project { dir, name }
    }

    /// A project that is up: `new`, then [`Project::up`], then `idle` stopped. The usual start of a
    /// test: `writer`, `db` and `cache` run (db healthy) and `idle` is stopped.
    pub fn start() -> Project {
        let project = Project::new();
        project.up();
        project.stop_service("idle");
        project
    }

    /// The project directory (holds `docker-compose.yml` and `data/`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The compose project name (label `com.docker.compose.project`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The compose file's file name, relative to [`Project::dir`].
    pub fn compose_file_name(&self) -> &'static str {
        "docker-compose.yml"
    }

    /// The compose file's absolute path.
    pub fn compose_file(&self) -> PathBuf {
        self.dir().join(self.compose_file_name())
    }

    /// The compose command the fixture runs: `LIFEBOAT_TEST_COMPOSE` or `docker-compose`.
    pub fn compose_command(&self) -> String {
        std::env::var("LIFEBOAT_TEST_COMPOSE").unwrap_or_else(|_| "docker-compose".to_owned())
    }

    /// The bind-mounted data directory the writer appends to.
    pub fn data_dir(&self) -> PathBuf {
        self.dir().join("data")
    }

    /// The writer's records file.
    pub fn records_path(&self) -> PathBuf {
        self.dir().join(RECORDS)
    }

    /// Runs `<compose> -p NAME -f docker-compose.yml ARGS` in the project directory and returns its
    /// stdout; panics with its stderr when it fails.
    pub fn compose(&self, args: &[&str]) -> String {
        let output = self
            .compose_process(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.compose_command()));
        if !output.status.success() {
            panic!(
                "'{} {}' failed ({}):\n{}",
                self.compose_command(),
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn compose_process(&self, args: &[&str]) -> Command {
        let command = self.compose_command();
        let mut words = command.split_whitespace();
        let mut process = Command::new(words.next().expect("a compose command"));
        process.args(words).args(["-p", &self.name, "-f", self.compose_file_name()]).args(args).current_dir(self.dir());
        process
    }

    /// `up -d` of the default services, then waits until every running container is up (running,
    /// and healthy where it has a healthcheck).
    pub fn up(&self) {
        self.compose(&["up", "-d"]);
        self.wait_all_up();
    }

    /// Waits until every running container of the project is up; panics with the adapter's error
    /// (which carries the container's logs) otherwise.
    pub fn wait_all_up(&self) {
        block_on(async {
            let docker = super::docker();
            let containers = docker.project_containers(&self.name, None).await.unwrap_or_else(|e| panic!("{e}"));
            for container in containers.iter().filter(|c| c.state == State::Running) {
                docker.wait_up(&container.id, UP_TIMEOUT).await.unwrap_or_else(|e| panic!("{e}"));
            }
        });
    }

    /// Starts services by name (`up -d SERVICE...`), also those behind a profile; does not wait.
    pub fn up_services(&self, services: &[&str]) {
        let mut args = vec!["up", "-d", "--no-deps"];
        args.extend_from_slice(services);
        self.compose(&args);
    }

    /// Stops one service through compose.
    pub fn stop_service(&self, service: &str) {
        self.compose(&["stop", service]);
    }

    /// The project's containers as the adapter sees them (dependencies from the compose file).
    pub fn containers(&self) -> Vec<Container> {
        let file = self.compose_file();
        block_on(async {
            super::docker().project_containers(&self.name, Some(&file)).await.unwrap_or_else(|e| panic!("{e}"))
        })
    }

    /// The container of `service` (its first replica); panics when there is none.
    pub fn container(&self, service: &str) -> Container {
        self.containers()
            .into_iter()
            .find(|c| c.service == service)
            .unwrap_or_else(|| panic!("project {} has no container for service {service}", self.name))
    }

    /// State and health of every service's container, by service name.
    pub fn service_states(&self) -> BTreeMap<String, (State, Health)> {
        self.containers().into_iter().map(|c| (c.service, (c.state, c.health))).collect()
    }

    /// The names of the services whose container is running, sorted.
    pub fn running_services(&self) -> Vec<String> {
        self.containers().into_iter().filter(|c| c.state == State::Running).map(|c| c.service).collect()
    }

    /// The project's named volumes.
    pub fn volumes(&self) -> Vec<Volume> {
        block_on(async { super::docker().project_volumes(&self.name).await.unwrap_or_else(|e| panic!("{e}")) })
    }

    /// The records file's content (empty when the writer has not written yet).
    pub fn read_records(&self) -> String {
        match std::fs::read(self.records_path()) {
            Ok(bytes) => String::from_utf8(bytes).expect("the records file is ASCII"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => panic!("cannot read {}: {e}", self.records_path().display()),
        }
    }

    /// Checks the records file (see [`check_records`]) and returns how many records it holds;
    /// panics with the first problem.
    pub fn assert_records_intact(&self) -> usize {
        check_records(&self.read_records()).unwrap_or_else(|e| panic!("{}: {e}", self.records_path().display()))
    }

    /// Waits until the records file holds at least `count` records; panics after `timeout`.
    pub fn wait_records(&self, count: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let have = self.assert_records_intact();
            if have >= count {
                return have;
            }
            if Instant::now() >= deadline {
                panic!("the writer wrote {have} records within {timeout:?}, expected {count}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        // No panics here: a panic while the test is already unwinding would abort the process.
        let result = self.compose_process(&["down", "-v", "--remove-orphans", "-t", "1"]).output();
        match result {
            Ok(output) if output.status.success() => {}
            Ok(output) => eprintln!(
                "cleanup of compose project {} failed ({}):\n{}",
                self.name,
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ),
            Err(e) => eprintln!("cleanup of compose project {} failed: {e}", self.name),
        }
        // The containers ran as root, so the files in data/ are root's; the test process runs as
        // root too, and TempDir's own drop removes the directory.
    }
}

/// Checks a records file: every line is a complete record `record NNNNNN PAYLOAD end`, numbered
/// 1, 2, 3, ... without gaps, and the file ends with a newline (no torn last record). Returns the
/// number of records.
pub fn check_records(text: &str) -> Result<usize, String> {
    if text.is_empty() {
        return Ok(0);
    }
    if !text.ends_with('\n') {
        let last = text.lines().last().unwrap_or_default();
        return Err(format!("the last record is torn (no newline): {last:?}"));
    }
    let mut count = 0;
    for (index, line) in text.lines().enumerate() {
        let expected = format!("record {:06} {PAYLOAD} end", index + 1);
        if line != expected {
            return Err(format!("line {} is {line:?}, expected {expected:?}", index + 1));
        }
        count += 1;
    }
    Ok(count)
}
