//! The Docker adapter and the compose runner against a real daemon, on the shared fixtures.
//! Tests that need Docker return early when none answers, and fail when `CI` is set.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use lifeboat::compose::{Compose, ComposeError};
use lifeboat::docker::{self, Container, Docker, DockerError, Health, StartOutcome, State, StopOutcome};
use support::{PAYLOAD, Project, TEST_IMAGE, check_records};

const STOP_TIMEOUT: Duration = Duration::from_secs(10);
const START_TIMEOUT: Duration = Duration::from_secs(60);

fn services(containers: &[&Container]) -> Vec<String> {
    containers.iter().map(|c| c.service.clone()).collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test]
async fn a_missing_socket_fails_fast_and_says_what_to_check() {
    let started = Instant::now();
    let err = Docker::connect_to("unix:///nonexistent.sock").await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    assert!(matches!(err, DockerError::Unreachable { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.starts_with("cannot reach the docker daemon at unix:///nonexistent.sock: "), "{message}");
    assert!(message.contains("is dockerd running? try 'docker info'"), "{message}");
}

#[tokio::test]
async fn a_closed_tcp_port_fails_fast_too() {
    let started = Instant::now();
    let err = Docker::connect_to("tcp://127.0.0.1:1").await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(6), "took {:?}", started.elapsed());
    let message = err.to_string();
    assert!(message.contains("tcp://127.0.0.1:1"), "{message}");
    assert!(message.contains("is dockerd running?"), "{message}");
}

/// Runs this test binary again with `DOCKER_HOST` set, for [`connect_child_reads_docker_host`] only:
/// setting the variable in this process would race with the tests running beside it.
#[test]
fn connect_honours_docker_host() {
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "connect_child_reads_docker_host", "--test-threads=1"])
        .env("DOCKER_HOST", "unix:///nonexistent.sock")
        .env("LIFEBOAT_TEST_CHILD", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "child run failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn connect_child_reads_docker_host() {
    if std::env::var_os("LIFEBOAT_TEST_CHILD").is_none() {
        return; // Only meaningful inside `connect_honours_docker_host`.
    }
    let started = Instant::now();
    let err = Docker::connect().await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(err.to_string().contains("unix:///nonexistent.sock"), "{err}");
}

#[test]
fn check_records_accepts_consecutive_complete_records_only() {
    let record = |n: usize| format!("record {n:06} {PAYLOAD} end\n");
    assert_eq!(check_records(""), Ok(0));
    assert_eq!(check_records(&format!("{}{}{}", record(1), record(2), record(3))), Ok(3));
    let torn = format!("{}record 000002 lifeboat-te", record(1));
    assert!(check_records(&torn).unwrap_err().contains("torn"));
    let gap = format!("{}{}", record(1), record(3));
    assert!(check_records(&gap).unwrap_err().starts_with("line 2 is"));
}

#[tokio::test]
async fn discovery_finds_services_states_health_dependencies_and_volumes() {
    if !support::docker_available() {
        return;
    }
    let project = Project::start();
    let docker = Docker::connect().await.unwrap();
    let containers = docker.project_containers(project.name(), Some(&project.compose_file())).await.unwrap();
    let by_service: BTreeMap<&str, &Container> = containers.iter().map(|c| (c.service.as_str(), c)).collect();
    // Services behind a profile were never created.
    assert_eq!(by_service.keys().copied().collect::<Vec<_>>(), ["cache", "db", "idle", "writer"]);

    let db = by_service["db"];
    assert_eq!((db.state, db.health, db.has_healthcheck), (State::Running, Health::Healthy, true));
    assert_eq!(db.name, format!("{}_db_1", project.name()));
    assert!(db.is_up());
    let cache = by_service["cache"];
    assert_eq!((cache.state, cache.health, cache.has_healthcheck), (State::Running, Health::None, false));
    assert!(cache.is_up(), "no healthcheck: up as soon as it runs");
    assert_eq!(cache.depends_on, set(&["db"]));
    assert_eq!(by_service["writer"].depends_on, set(&["cache"]));
    let idle = by_service["idle"];
    assert_eq!((idle.state, idle.health), (State::Exited, Health::None));
    assert!(!idle.is_up());
    assert!(containers.iter().all(|c| c.id.len() == 64), "{containers:#?}");

    // Compose v1 records no dependencies on the containers: without the file there are none.
    let bare = docker.project_containers(project.name(), None).await.unwrap();
    assert!(bare.iter().all(|c| c.depends_on.is_empty()), "{bare:#?}");

    let volumes = docker.project_volumes(project.name()).await.unwrap();
    assert_eq!(volumes.len(), 1, "{volumes:#?}");
    assert_eq!(volumes[0].name, format!("{}_dbdata", project.name()));
    assert_eq!(volumes[0].compose_name.as_deref(), Some("dbdata"));
    assert!(volumes[0].mountpoint.join("started").is_file(), "{:?}", volumes[0].mountpoint);

    // Stop in reverse dependency order, start in dependency order; ties by service name.
    assert_eq!(services(&docker::start_order(&containers).unwrap()), ["db", "cache", "idle", "writer"]);
    assert_eq!(services(&docker::stop_order(&containers).unwrap()), ["writer", "idle", "cache", "db"]);
    let running: Vec<Container> = containers.iter().filter(|c| c.state == State::Running).cloned().collect();
    assert_eq!(services(&docker::stop_order(&running).unwrap()), ["writer", "cache", "db"]);
}

#[tokio::test]
async fn stop_then_start_brings_back_exactly_the_running_services() {
    if !support::docker_available() {
        return;
    }
    let project = Project::start();
    project.wait_records(5, Duration::from_secs(20));
    let docker = Docker::connect().await.unwrap();
    let running: Vec<Container> = docker
        .project_containers(project.name(), Some(&project.compose_file()))
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.state == State::Running)
        .collect();
    assert_eq!(running.iter().map(|c| c.service.as_str()).collect::<Vec<_>>(), ["cache", "db", "writer"]);

    let stopping = Instant::now();
    for container in docker::stop_order(&running).unwrap() {
        let outcome = docker.stop(&container.id, STOP_TIMEOUT).await.unwrap();
        assert_eq!(outcome, StopOutcome::Stopped, "{}", container.name);
    }
    // Every service traps SIGTERM and exits at once: nobody waits for the stop timeout.
    assert!(stopping.elapsed() < Duration::from_secs(5), "stopping took {:?}", stopping.elapsed());
    for container in &running {
        let again = docker.stop(&container.id, STOP_TIMEOUT).await.unwrap();
        assert_eq!(again, StopOutcome::AlreadyStopped, "{}", container.name);
    }
    let states = project.service_states();
    assert!(states.values().all(|(state, _)| *state == State::Exited), "{states:?}");
    let records = project.assert_records_intact();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(project.assert_records_intact(), records, "the writer still writes after its stop");

    for container in docker::start_order(&running).unwrap() {
        assert_eq!(docker.start(&container.id, Duration::from_secs(10)).await.unwrap(), StartOutcome::Started);
        let up = docker.wait_up(&container.id, START_TIMEOUT).await.unwrap();
        assert!(up.is_up(), "{up:?}");
    }
    for container in &running {
        assert_eq!(docker.start(&container.id, Duration::from_secs(10)).await.unwrap(), StartOutcome::AlreadyRunning);
    }
    let states = project.service_states();
    assert_eq!(states["db"], (State::Running, Health::Healthy));
    assert_eq!(states["cache"], (State::Running, Health::None));
    assert_eq!(states["writer"], (State::Running, Health::None));
    assert_eq!(states["idle"].0, State::Exited, "idle was stopped before and must stay stopped");
    // The writer carries on numbering where it stopped, and no record was torn.
    project.wait_records(records + 5, Duration::from_secs(20));
}

#[tokio::test]
async fn containers_that_do_not_come_up_fail_wait_up_with_their_logs() {
    if !support::docker_available() {
        return;
    }
    let project = Project::new();
    project.up_services(&["broken", "slow", "crasher", "stubborn"]);
    let docker = Docker::connect().await.unwrap();
    let id = |service: &str| project.container(service).id;

    // A healthcheck that never passes: unhealthy after two failed checks, long before the timeout.
    let started = Instant::now();
    let err = docker.wait_up(&id("broken"), Duration::from_secs(60)).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
    assert!(matches!(err, DockerError::Unhealthy { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("_broken_1 is unhealthy"), "{message}");
    assert!(message.contains("\n    broken-marker"), "{message}");

    // A healthcheck that has not passed yet: still starting when the timeout ends.
    let started = Instant::now();
    let err = docker.wait_up(&id("slow"), Duration::from_secs(2)).await.unwrap_err();
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_secs(2) && elapsed < Duration::from_secs(6), "took {elapsed:?}");
    let DockerError::NotUp { health, .. } = &err else { panic!("{err:?}") };
    assert_eq!(*health, Health::Starting);
    assert!(err.to_string().contains("was not up within 2s"), "{err}");
    assert!(err.to_string().contains("\n    slow-marker"), "{err}");

    // A container that exits.
    let err = docker.wait_up(&id("crasher"), Duration::from_secs(30)).await.unwrap_err();
    let DockerError::Exited { exit_code, .. } = &err else { panic!("{err:?}") };
    assert_eq!(*exit_code, 3);
    assert!(err.to_string().contains("\n    crash-marker"), "{err}");

    assert_eq!(docker.logs_tail(&id("broken"), 1).await.unwrap(), ["broken-marker"]);

    // A container that ignores SIGTERM is killed after its timeout: stopped, but reported as killed.
    let stubborn = id("stubborn");
    let started = Instant::now();
    assert_eq!(docker.stop(&stubborn, Duration::from_secs(1)).await.unwrap(), StopOutcome::Killed);
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(docker.inspect(&stubborn).await.unwrap().state, State::Exited);
    assert_eq!(docker.stop(&stubborn, Duration::from_secs(1)).await.unwrap(), StopOutcome::AlreadyStopped);
}

#[tokio::test]
async fn a_missing_container_is_named_in_the_error() {
    if !support::docker_available() {
        return;
    }
    let docker = Docker::connect().await.unwrap();
    let name = "lifeboat-test-no-such-container";
    for err in [
        docker.stop(name, STOP_TIMEOUT).await.unwrap_err(),
        docker.start(name, Duration::from_secs(10)).await.unwrap_err(),
        docker.wait_up(name, START_TIMEOUT).await.unwrap_err(),
    ] {
        assert!(matches!(&err, DockerError::NoSuchContainer { container } if container == name), "{err:?}");
        assert!(err.to_string().starts_with("container lifeboat-test-no-such-container does not exist"));
    }
    docker.remove_container(name, true).await.expect("removing what is not there is a no-op");
}

#[tokio::test]
async fn load_image_reads_a_docker_save_archive() {
    if !support::docker_available() {
        return;
    }
    support::ensure_test_image();
    let docker = Docker::connect().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("image.tar");
    let chunks: Vec<_> = docker.api().export_image(TEST_IMAGE).try_collect().await.unwrap();
    std::fs::write(&archive, chunks.concat()).unwrap();
    assert_eq!(docker.load_image(&archive).await.unwrap(), [TEST_IMAGE]);

    let garbage = dir.path().join("garbage.tar");
    std::fs::write(&garbage, b"this is not a tar archive").unwrap();
    let err = docker.load_image(&garbage).await.unwrap_err();
    assert!(matches!(err, DockerError::ImageLoad { .. }), "{err:?}");
    assert!(err.to_string().contains("garbage.tar"), "{err}");

    let err = docker.load_image(&dir.path().join("missing.tar")).await.unwrap_err();
    assert!(matches!(err, DockerError::ImageFile { .. }), "{err:?}");
}

#[tokio::test]
async fn compose_runner_drives_the_project_and_shows_stderr_on_failure() {
    if !support::docker_available() {
        return;
    }
    let project = Project::new();
    let compose =
        Compose::new(&project.compose_command(), project.name(), project.compose_file_name(), project.dir()).unwrap();
    compose.up(&["idle".to_owned()]).await.unwrap();
    assert_eq!(project.service_states()["idle"].0, State::Running);
    assert!(compose.ps().await.unwrap().contains(&format!("{}_idle_1", project.name())));
    compose.stop(&["idle".to_owned()]).await.unwrap();
    assert_eq!(project.service_states()["idle"].0, State::Exited);
    assert_eq!(compose.dependencies().unwrap()["writer"], set(&["cache"]));

    let err = compose.up(&["no-such-service".to_owned()]).await.unwrap_err();
    assert!(matches!(err, ComposeError::Failed { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("up -d no-such-service' failed"), "{message}");
    assert!(message.contains("\n    ") && message.contains("no-such-service"), "{message}");

    compose.down().await.unwrap();
    assert!(project.containers().is_empty());
}
