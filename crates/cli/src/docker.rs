//! The Docker adapter: the only code in lifeboat that talks to the Docker Engine API (through bollard).
//!
//! It owns the connection (version negotiated with the daemon, fast failure when none answers),
//! discovery of a compose project's containers and named volumes by their compose labels, the
//! dependency order in which services are stopped and started, and the container operations the
//! executor needs. Every operation checks the container's state first, so running it again after a
//! crash is safe: stopping a stopped container or starting a running one succeeds and says so.
//!
//! The adapter keeps no state of its own beyond the connection; every answer is read from the daemon
//! when it is asked for.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bollard::errors::Error as ApiError;
use bollard::models::{ContainerInspectResponse, ContainerStateStatusEnum, HealthStatusEnum};
use bollard::query_parameters::{
    EventsOptionsBuilder, ImportImageOptionsBuilder, ListContainersOptionsBuilder, ListVolumesOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use futures_util::{StreamExt, TryStreamExt};

use crate::compose::{self, ComposeError};

/// Label that compose puts on every container, volume and network of a project.
pub const PROJECT_LABEL: &str = "com.docker.compose.project";
/// Label that compose puts on a container: the service it belongs to.
pub const SERVICE_LABEL: &str = "com.docker.compose.service";
/// Label that compose v2 puts on a container: `service:condition:restart` entries, comma-separated.
/// Compose v1 does not set it, so the compose file's `depends_on` is read as well.
pub const DEPENDS_ON_LABEL: &str = "com.docker.compose.depends_on";
/// Label that compose puts on a named volume: its name inside the compose file.
pub const VOLUME_LABEL: &str = "com.docker.compose.volume";

/// The daemon's socket when `DOCKER_HOST` is not set.
pub const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";
/// How long `connect` waits for the daemon to answer before saying that none is there.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Request timeout for ordinary calls (inspect, list, start, logs).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Extra time the stop request gets on top of the container's stop timeout: the daemon only answers
/// after the container has gone, which after a kill can take a moment.
const STOP_SLACK: Duration = Duration::from_secs(30);
/// Loading an image archive moves hundreds of megabytes through the daemon.
const LOAD_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// How often `wait_up` looks at a container.
const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// How many log lines an error about a container that did not come up carries.
const ERROR_LOG_LINES: usize = 10;
/// Exit code of a process killed by SIGKILL (128 + 9).
const SIGKILL_EXIT: i64 = 137;

/// An error of the Docker adapter.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// No Docker daemon answered at the configured host.
    #[error(
        "cannot reach the docker daemon at {host}: {reason}; is dockerd running? try 'docker info' \
         (set DOCKER_HOST if the daemon listens elsewhere)"
    )]
    Unreachable { host: String, reason: String },
    /// `DOCKER_HOST` is not an address this adapter can connect to.
    #[error(
        "'{host}' is not a docker daemon address; set DOCKER_HOST to unix:///path/to/docker.sock or tcp://host:port"
    )]
    BadHost { host: String },
    /// The daemon refused or failed a request.
    #[error("docker could not {action} {object}: {source}")]
    Api {
        action: &'static str,
        object: String,
        #[source]
        source: ApiError,
    },
    /// The named container does not exist.
    #[error("container {container} does not exist; 'docker ps -a' lists the containers there are")]
    NoSuchContainer { container: String },
    /// The container was asked to stop but still runs.
    #[error(
        "container {container} is still {state} after the stop request returned; \
         stop it by hand ('docker kill {container}') and check the daemon's log"
    )]
    StillRunning { container: String, state: State },
    /// The container exited while it was expected to come up.
    #[error(
        "container {container} exited with code {exit_code} instead of coming up; \
         its last log lines:\n{}", indent_lines(.logs)
    )]
    Exited { container: String, exit_code: i64, logs: Vec<String> },
    /// The container's HEALTHCHECK reports it unhealthy.
    #[error(
        "container {container} is unhealthy: its healthcheck failed{}; its last log lines:\n{}",
        check_output_suffix(.check_output), indent_lines(.logs)
    )]
    Unhealthy { container: String, check_output: String, logs: Vec<String> },
    /// The container was not up (running, and healthy where it has a healthcheck) within the timeout.
    #[error(
        "container {container} was not up within {}s (state {state}, health {health}); raise \
         services.start_timeout_secs if it is just slow; its last log lines:\n{}",
        .timeout.as_secs(), indent_lines(.logs)
    )]
    NotUp { container: String, state: State, health: Health, timeout: Duration, logs: Vec<String> },
    /// The services' `depends_on` form a cycle, so no start order exists.
    #[error("services depend on each other in a cycle: {}; fix depends_on in the compose file", .cycle.join(" -> "))]
    DependencyCycle { cycle: Vec<String> },
    /// The compose file could not be read for `depends_on`.
    #[error(transparent)]
    Compose(#[from] ComposeError),
    /// An image archive could not be read from disk.
    #[error("cannot read image archive {}: {source}", .path.display())]
    ImageFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The daemon refused to load an image archive.
    #[error(
        "docker could not load image archive {}: {reason}; check that it was made by 'docker save'",
        .path.display()
    )]
    ImageLoad { path: PathBuf, reason: String },
}

fn indent_lines(lines: &[String]) -> String {
    if lines.is_empty() {
        return "    (no log output)".to_owned();
    }
    lines.iter().map(|line| format!("    {line}")).collect::<Vec<_>>().join("\n")
}

fn check_output_suffix(output: &str) -> String {
    let output = output.trim();
    if output.is_empty() { String::new() } else { format!(" ({output})") }
}

/// A container's lifecycle state, as the daemon reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Created,
    Running,
    Paused,
    Restarting,
    Removing,
    Exited,
    Dead,
    /// A state this adapter does not know (newer daemons add some).
    Unknown,
}

impl State {
    /// Whether a process of the container is alive (running, paused or restarting): the states a
    /// stop has to act on.
    pub fn is_active(self) -> bool {
        matches!(self, State::Running | State::Paused | State::Restarting)
    }

    fn from_api(status: Option<ContainerStateStatusEnum>) -> State {
        match status {
            Some(ContainerStateStatusEnum::CREATED) => State::Created,
            Some(ContainerStateStatusEnum::RUNNING) => State::Running,
            Some(ContainerStateStatusEnum::PAUSED) => State::Paused,
            Some(ContainerStateStatusEnum::RESTARTING) => State::Restarting,
            Some(ContainerStateStatusEnum::REMOVING) => State::Removing,
            Some(ContainerStateStatusEnum::EXITED) => State::Exited,
            Some(ContainerStateStatusEnum::DEAD) => State::Dead,
            _ => State::Unknown,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Created => "created",
            State::Running => "running",
            State::Paused => "paused",
            State::Restarting => "restarting",
            State::Removing => "removing",
            State::Exited => "exited",
            State::Dead => "dead",
            State::Unknown => "unknown",
        })
    }
}

/// A container's health as its HEALTHCHECK reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// The container has no healthcheck, or it is not running so none is reported.
    None,
    Starting,
    Healthy,
    Unhealthy,
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Health::None => "none",
            Health::Starting => "starting",
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
        })
    }
}

/// One container of a compose project, as read from the daemon.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Container {
    pub id: String,
    /// The container's name, without Docker's leading `/`.
    pub name: String,
    /// The compose service it belongs to (label `com.docker.compose.service`).
    pub service: String,
    pub state: State,
    pub health: Health,
    /// Whether the container (or its image) has a HEALTHCHECK that is not disabled.
    pub has_healthcheck: bool,
    /// Exit code of the last run; meaningful when the state is `exited`.
    pub exit_code: Option<i64>,
    /// Services this one depends on: the compose file's `depends_on` and the compose v2 label.
    pub depends_on: BTreeSet<String>,
    /// When the container last started, as Docker reports it (RFC 3339).
    pub started_at: Option<String>,
    /// The signal `docker stop` sends it (`SIGQUIT`, `15`...); `None` means SIGTERM.
    pub stop_signal: Option<String>,
    /// Its `lifeboat.*` labels: the hooks declared on its service (docs/design.md, "Hooks").
    pub hook_labels: BTreeMap<String, String>,
}

impl Container {
    /// Whether the container counts as up: running and, where it has a healthcheck, healthy.
    pub fn is_up(&self) -> bool {
        self.state == State::Running && (!self.has_healthcheck || self.health == Health::Healthy)
    }

    fn from_inspect(inspect: ContainerInspectResponse) -> Container {
        let config = inspect.config.unwrap_or_default();
        let labels = config.labels.unwrap_or_default();
        let state = inspect.state.unwrap_or_default();
        let health = match state.health.as_ref().and_then(|h| h.status) {
            Some(HealthStatusEnum::STARTING) => Health::Starting,
            Some(HealthStatusEnum::HEALTHY) => Health::Healthy,
            Some(HealthStatusEnum::UNHEALTHY) => Health::Unhealthy,
            _ => Health::None,
        };
        // The daemon copies the image's HEALTHCHECK into the container's config when the container
        // is created, so the container config alone answers for both. `["NONE"]` disables it.
        let has_healthcheck =
            config.healthcheck.and_then(|h| h.test).is_some_and(|test| test.first().is_some_and(|kind| kind != "NONE"));
        let name = inspect.name.unwrap_or_default();
        let stop_signal = config.stop_signal.clone();
        Container {
            id: inspect.id.unwrap_or_default(),
            name: name.strip_prefix('/').unwrap_or(&name).to_owned(),
            service: labels.get(SERVICE_LABEL).cloned().unwrap_or_default(),
            state: State::from_api(state.status),
            health,
            has_healthcheck,
            exit_code: state.exit_code,
            depends_on: labels.get(DEPENDS_ON_LABEL).map(|label| parse_depends_on_label(label)).unwrap_or_default(),
            started_at: state.started_at,
            stop_signal,
            hook_labels: labels
                .iter()
                .filter(|(k, _)| k.starts_with("lifeboat."))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }

    /// Whether `signal` (a number, as Docker's `kill` events give it) ends this container when a
    /// stop sends it: its stop signal, SIGTERM (Docker's default) or SIGKILL (a stop's last resort).
    fn is_stop_signal(&self, signal: i32) -> bool {
        signal == libc::SIGTERM
            || signal == libc::SIGKILL
            || self.stop_signal.as_deref().and_then(signal_number) == Some(signal)
    }
}

/// The number of a signal named as Docker accepts it: `SIGQUIT`, `QUIT` or `3`.
fn signal_number(name: &str) -> Option<i32> {
    let name = name.trim();
    if let Ok(number) = name.parse() {
        return Some(number);
    }
    let name = name.strip_prefix("SIG").unwrap_or(name);
    Some(match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "TERM" => libc::SIGTERM,
        "PWR" => libc::SIGPWR,
        "WINCH" => libc::SIGWINCH,
        _ => return None,
    })
}

/// Parses compose v2's `com.docker.compose.depends_on` label: `db:service_healthy:false,cache:...`.
fn parse_depends_on_label(label: &str) -> BTreeSet<String> {
    label
        .split(',')
        .filter_map(|entry| entry.split(':').next())
        .map(str::trim)
        .filter(|service| !service.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A named volume of a compose project.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Volume {
    /// The volume's Docker name (`<project>_<name>` under compose).
    pub name: String,
    /// Its name in the compose file (label `com.docker.compose.volume`), when compose set it.
    pub compose_name: Option<String>,
    /// Where its data lives on the host.
    pub mountpoint: PathBuf,
    /// Its driver (`local`), driver options and labels: what a restore onto a new host creates
    /// it with again (the archive's manifest records them).
    pub driver: String,
    pub options: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
}

impl Volume {
    fn from_api(v: bollard::models::Volume) -> Volume {
        Volume {
            compose_name: v.labels.get(VOLUME_LABEL).cloned(),
            name: v.name,
            mountpoint: PathBuf::from(v.mountpoint),
            driver: v.driver,
            options: v.options.into_iter().collect(),
            labels: v.labels.into_iter().collect(),
        }
    }
}

/// How a `stop` ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum StopOutcome {
    /// The container was not running; nothing was done.
    AlreadyStopped,
    /// The container stopped within its timeout.
    Stopped,
    /// The container did not stop within its timeout, so Docker killed it (SIGKILL). It is stopped,
    /// but did not shut down cleanly: the caller should warn.
    Killed,
}

/// How a `start` ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum StartOutcome {
    /// The container was already running; nothing was done.
    AlreadyRunning,
    /// The container was started.
    Started,
}

/// A connection to the Docker daemon.
#[derive(Clone, Debug)]
pub struct Docker {
    api: bollard::Docker,
    host: String,
}

impl Docker {
    /// Connects to the daemon named by `DOCKER_HOST`, or the default socket, negotiates the API
    /// version and pings it. Fails within a few seconds when no daemon answers.
    pub async fn connect() -> Result<Docker, DockerError> {
        let host = std::env::var("DOCKER_HOST")
            .ok()
            .filter(|host| !host.is_empty())
            .unwrap_or_else(|| DEFAULT_HOST.to_owned());
        Docker::connect_to(&host).await
    }

    /// Connects to the daemon at `host` (`unix:///path`, `tcp://host:port`, ...).
    pub async fn connect_to(host: &str) -> Result<Docker, DockerError> {
        let unreachable = |reason: String| DockerError::Unreachable { host: host.to_owned(), reason };
        let api = match bollard::Docker::connect_with_host(host) {
            Ok(api) => api.with_timeout(CONNECT_TIMEOUT),
            Err(ApiError::UnsupportedURISchemeError { .. }) => {
                return Err(DockerError::BadHost { host: host.to_owned() });
            }
            Err(e) => return Err(unreachable(error_chain(&e))),
        };
        // bollard asks for a newer API version than Docker 20.10 serves; negotiation lowers it to
        // the daemon's, which also proves that something answers.
        let handshake = async {
            let api = api.negotiate_version().await?;
            api.ping().await?;
            Ok::<_, ApiError>(api)
        };
        let api = tokio::time::timeout(CONNECT_TIMEOUT, handshake)
            .await
            .map_err(|_| unreachable(format!("no answer within {}s", CONNECT_TIMEOUT.as_secs())))?
            .map_err(|e| unreachable(error_chain(&e)))?;
        Ok(Docker { api: api.with_timeout(REQUEST_TIMEOUT), host: host.to_owned() })
    }

    /// The host this connection talks to.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The underlying bollard client, for tests and one-off calls this adapter does not wrap.
    pub fn api(&self) -> &bollard::Docker {
        &self.api
    }

    /// All containers of compose project `project`, stopped ones included, sorted by service then
    /// name. Dependencies come from the compose v2 label and, when `compose_file` is given, from its
    /// `depends_on` (compose v1 sets no label).
    pub async fn project_containers(
        &self,
        project: &str,
        compose_file: Option<&Path>,
    ) -> Result<Vec<Container>, DockerError> {
        let file_deps = match compose_file {
            Some(path) => compose::read_dependencies(path)?,
            None => BTreeMap::new(),
        };
        let filters = HashMap::from([("label", vec![format!("{PROJECT_LABEL}={project}")])]);
        let options = ListContainersOptionsBuilder::default().all(true).filters(&filters).build();
        let summaries = self
            .api
            .list_containers(Some(options))
            .await
            .map_err(|source| api_error("list the containers of project", project, source))?;
        let mut containers = Vec::with_capacity(summaries.len());
        for summary in summaries {
            let Some(id) = summary.id else { continue };
            // A container removed between the list and the inspect is simply gone.
            match self.inspect(&id).await {
                Ok(mut container) => {
                    if let Some(deps) = file_deps.get(&container.service) {
                        container.depends_on.extend(deps.iter().cloned());
                    }
                    containers.push(container);
                }
                Err(DockerError::NoSuchContainer { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        containers.sort_by(|a, b| (&a.service, &a.name).cmp(&(&b.service, &b.name)));
        Ok(containers)
    }

    /// The named volumes of compose project `project`, sorted by name.
    pub async fn project_volumes(&self, project: &str) -> Result<Vec<Volume>, DockerError> {
        let filters = HashMap::from([("label", vec![format!("{PROJECT_LABEL}={project}")])]);
        let options = ListVolumesOptionsBuilder::default().filters(&filters).build();
        let response = self
            .api
            .list_volumes(Some(options))
            .await
            .map_err(|source| api_error("list the volumes of project", project, source))?;
        let mut volumes: Vec<Volume> = response.volumes.unwrap_or_default().into_iter().map(Volume::from_api).collect();
        volumes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(volumes)
    }

    /// Reads one container's current state. `container` is an id or a name.
    pub async fn inspect(&self, container: &str) -> Result<Container, DockerError> {
        self.api
            .inspect_container(container, None)
            .await
            .map(Container::from_inspect)
            .map_err(|source| container_error("inspect container", container, source))
    }

    /// Stops a container, giving it `timeout` to exit on SIGTERM before Docker kills it.
    /// Idempotent: a container that is not running is left alone (`AlreadyStopped`).
    pub async fn stop(&self, container: &str, timeout: Duration) -> Result<StopOutcome, DockerError> {
        if !self.inspect(container).await?.state.is_active() {
            return Ok(StopOutcome::AlreadyStopped);
        }
        let secs = i32::try_from(timeout.as_secs()).unwrap_or(i32::MAX);
        let options = StopContainerOptionsBuilder::default().t(secs).build();
        let started = Instant::now();
        // The daemon answers only once the container is gone, so this request may take the whole
        // stop timeout; give it its own client timeout (clones share the connection).
        let result = self.api.clone().with_timeout(timeout + STOP_SLACK).stop_container(container, Some(options)).await;
        match result {
            Ok(()) => {}
            // 304: it stopped on its own between our inspect and the request.
            Err(ApiError::DockerResponseServerError { status_code: 304, .. }) => {
                return Ok(StopOutcome::AlreadyStopped);
            }
            Err(source) => return Err(container_error("stop container", container, source)),
        }
        let after = self.inspect(container).await?;
        if after.state.is_active() {
            return Err(DockerError::StillRunning { container: after.name, state: after.state });
        }
        if after.exit_code == Some(SIGKILL_EXIT) && started.elapsed() >= timeout {
            Ok(StopOutcome::Killed)
        } else {
            Ok(StopOutcome::Stopped)
        }
    }

    /// Starts a container. Idempotent: a running container is left alone (`AlreadyRunning`), but
    /// one whose stop is in progress ([`Docker::stop_in_progress`]) is first stopped for good
    /// (giving it `stop_timeout`, as a stop would) and then started: left alone, it would exit.
    /// This does not wait for it to be up: see [`Docker::wait_up`].
    pub async fn start(&self, container: &str, stop_timeout: Duration) -> Result<StartOutcome, DockerError> {
        let mut current = self.inspect(container).await?;
        if current.state == State::Running && self.stop_in_progress(&current).await? {
            tracing::info!("{} is on its way down from a stop: waiting for it to exit first", current.name);
            let _ = self.stop(container, stop_timeout).await?;
            current = self.inspect(container).await?;
        }
        if current.state == State::Running || current.state == State::Restarting {
            return Ok(StartOutcome::AlreadyRunning);
        }
        if current.state == State::Paused {
            self.api
                .unpause_container(container)
                .await
                .map_err(|source| container_error("unpause container", container, source))?;
            return Ok(StartOutcome::Started);
        }
        match self.api.start_container(container, None).await {
            Ok(()) => Ok(StartOutcome::Started),
            // 304: it was started by someone else between our inspect and the request.
            Err(ApiError::DockerResponseServerError { status_code: 304, .. }) => Ok(StartOutcome::AlreadyRunning),
            Err(source) => Err(container_error("start container", container, source)),
        }
    }

    /// Waits until the container is up: running and, where it has a HEALTHCHECK, healthy. A container
    /// without a healthcheck is up as soon as it runs. Fails as soon as the container exits or turns
    /// unhealthy, or when `timeout` passes, with the container's last log lines in the error.
    pub async fn wait_up(&self, container: &str, timeout: Duration) -> Result<Container, DockerError> {
        let deadline = Instant::now() + timeout;
        loop {
            let current = self.inspect(container).await?;
            // A container on its way down from a stop looks up until it exits: keep watching it.
            if current.is_up() && !self.stop_in_progress(&current).await? {
                return Ok(current);
            }
            match (current.state, current.health) {
                (State::Exited | State::Dead, _) => {
                    return Err(DockerError::Exited {
                        logs: self.logs_tail_lossy(container).await,
                        exit_code: current.exit_code.unwrap_or(-1),
                        container: current.name,
                    });
                }
                (State::Running, Health::Unhealthy) => {
                    return Err(DockerError::Unhealthy {
                        check_output: self.last_check_output(container).await,
                        logs: self.logs_tail_lossy(container).await,
                        container: current.name,
                    });
                }
                _ => {}
            }
            if Instant::now() >= deadline {
                return Err(DockerError::NotUp {
                    logs: self.logs_tail_lossy(container).await,
                    container: current.name,
                    state: current.state,
                    health: current.health,
                    timeout,
                });
            }
            tokio::time::sleep(POLL_INTERVAL.min(deadline.saturating_duration_since(Instant::now()))).await;
        }
    }

    /// Whether a stop of this running container is under way: since it last started, it was sent
    /// its stop signal (or SIGTERM, or SIGKILL). Docker reports such a container "running", and
    /// healthy, until its process exits (for a database under load that takes seconds, up to the
    /// stop timeout), so only its `kill` events tell. Other signals (a SIGHUP to reload) do not
    /// count.
    ///
    /// The daemon keeps only its recent events, so this is a safeguard, not the mechanism that
    /// recovery relies on: a stop that lifeboat began and did not finish is finished before
    /// anything starts (see "Recovery rules" in ARCHITECTURE.md).
    pub async fn stop_in_progress(&self, container: &Container) -> Result<bool, DockerError> {
        if container.state != State::Running {
            return Ok(false);
        }
        let Some(since) = container.started_at.as_deref().and_then(unix_timestamp) else {
            return Ok(false);
        };
        let until = unix_timestamp(&chrono::Utc::now().to_rfc3339()).unwrap_or_else(|| since.clone());
        let filters = HashMap::from([
            ("type", vec!["container".to_owned()]),
            ("container", vec![container.id.clone()]),
            ("event", vec!["kill".to_owned()]),
        ]);
        let options = EventsOptionsBuilder::default().since(&since).until(&until).filters(&filters).build();
        let events: Vec<_> = self
            .api
            .events(Some(options))
            .try_collect()
            .await
            .map_err(|source| container_error("read the events of container", &container.name, source))?;
        Ok(events.iter().any(|event| {
            let signal = event.actor.as_ref().and_then(|a| a.attributes.as_ref()).and_then(|a| a.get("signal"));
            signal.and_then(|s| s.parse().ok()).is_some_and(|s| container.is_stop_signal(s))
        }))
    }

    /// The last `n` lines the container wrote to stdout and stderr, oldest first.
    pub async fn logs_tail(&self, container: &str, n: usize) -> Result<Vec<String>, DockerError> {
        let options = LogsOptionsBuilder::default().stdout(true).stderr(true).tail(&n.to_string()).build();
        let chunks: Vec<_> = self
            .api
            .logs(container, Some(options))
            .try_collect()
            .await
            .map_err(|source| container_error("read the logs of container", container, source))?;
        let mut text = Vec::new();
        for chunk in chunks {
            text.extend_from_slice(chunk.as_ref());
        }
        Ok(String::from_utf8_lossy(&text).lines().map(str::to_owned).collect())
    }

    /// Runs `sh -c command` inside the running container through the Engine API's exec, its
    /// stdout and stderr captured; after `timeout` the exec's processes are killed (SIGKILL, found
    /// by the host pid the daemon reports: the daemon is local) and the exit code is 124. Returns
    /// the exit code and the output.
    pub async fn exec(&self, container: &str, command: &str, timeout: Duration) -> Result<(i32, Vec<u8>), DockerError> {
        use bollard::exec::{CreateExecOptions, StartExecResults};
        let options = CreateExecOptions {
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            cmd: Some(vec!["sh", "-c", command]),
            ..Default::default()
        };
        let created = self
            .api
            .create_exec(container, options)
            .await
            .map_err(|source| container_error("create an exec in container", container, source))?;
        let started = self
            .api
            .start_exec(&created.id, None)
            .await
            .map_err(|source| container_error("start an exec in container", container, source))?;
        let mut output = Vec::new();
        let StartExecResults::Attached { output: mut stream, .. } = started else {
            return Ok((0, output));
        };
        let read = async {
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(chunk) => output.extend_from_slice(chunk.as_ref()),
                    Err(_) => break,
                }
            }
        };
        let timed_out = tokio::time::timeout(timeout, read).await.is_err();
        if timed_out {
            if let Ok(inspect) = self.api.inspect_exec(&created.id).await
                && let Some(pid) = inspect.pid.filter(|pid| *pid > 0)
            {
                kill_tree(pid as i32);
            }
            output.extend_from_slice(format!("\n[lifeboat: killed after {} s]\n", timeout.as_secs()).as_bytes());
            return Ok((124, output));
        }
        // The stream ends when the process exits; the daemon sets the exit code just after.
        for _ in 0..50 {
            let inspect = self
                .api
                .inspect_exec(&created.id)
                .await
                .map_err(|source| container_error("inspect an exec in container", container, source))?;
            if inspect.running != Some(true) {
                return Ok((inspect.exit_code.unwrap_or(-1) as i32, output));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok((-1, output))
    }

    /// Log lines for an error message: a failure to read them must not hide the error itself.
    async fn logs_tail_lossy(&self, container: &str) -> Vec<String> {
        self.logs_tail(container, ERROR_LOG_LINES).await.unwrap_or_else(|e| vec![format!("(logs unavailable: {e})")])
    }

    /// The output of the container's most recent healthcheck, or empty.
    async fn last_check_output(&self, container: &str) -> String {
        let Ok(inspect) = self.api.inspect_container(container, None).await else {
            return String::new();
        };
        inspect
            .state
            .and_then(|s| s.health)
            .and_then(|h| h.log)
            .and_then(|log| log.into_iter().last())
            .and_then(|result| result.output)
            .unwrap_or_default()
    }

    /// Removes a container (and its anonymous volumes), stopping it first when `force`.
    /// Idempotent: a container that does not exist counts as removed.
    pub async fn remove_container(&self, container: &str, force: bool) -> Result<(), DockerError> {
        let options = RemoveContainerOptionsBuilder::default().force(force).v(true).build();
        match self.api.remove_container(container, Some(options)).await {
            Ok(()) => Ok(()),
            Err(ApiError::DockerResponseServerError { status_code: 404, .. }) => Ok(()),
            Err(source) => Err(container_error("remove container", container, source)),
        }
    }

    /// One volume by its Docker name; `None` when there is none.
    pub async fn volume(&self, name: &str) -> Result<Option<Volume>, DockerError> {
        match self.api.inspect_volume(name).await {
            Ok(v) => Ok(Some(Volume::from_api(v))),
            Err(ApiError::DockerResponseServerError { status_code: 404, .. }) => Ok(None),
            Err(source) => Err(api_error("inspect volume", name, source)),
        }
    }

    /// Creates a named volume with this driver, options and labels.
    pub async fn create_volume(
        &self,
        name: &str,
        driver: &str,
        options: &[(String, String)],
        labels: &[(String, String)],
    ) -> Result<(), DockerError> {
        let request = bollard::models::VolumeCreateRequest {
            name: Some(name.to_owned()),
            driver: Some(driver.to_owned()),
            driver_opts: Some(options.iter().cloned().collect()),
            labels: Some(labels.iter().cloned().collect()),
            ..Default::default()
        };
        self.api.create_volume(request).await.map_err(|source| api_error("create volume", name, source))?;
        Ok(())
    }

    /// Removes a named volume. Idempotent: one that does not exist counts as removed.
    pub async fn remove_volume(&self, name: &str) -> Result<(), DockerError> {
        match self.api.remove_volume(name, None::<bollard::query_parameters::RemoveVolumeOptions>).await {
            Ok(()) | Err(ApiError::DockerResponseServerError { status_code: 404, .. }) => Ok(()),
            Err(source) => Err(api_error("remove volume", name, source)),
        }
    }

    /// Removes the networks of compose project `project` (those compose created for it).
    pub async fn remove_project_networks(&self, project: &str) -> Result<(), DockerError> {
        let filters = HashMap::from([("label".to_owned(), vec![format!("{PROJECT_LABEL}={project}")])]);
        let options = bollard::query_parameters::ListNetworksOptions { filters: Some(filters) };
        let networks = self
            .api
            .list_networks(Some(options))
            .await
            .map_err(|source| api_error("list the networks of", project, source))?;
        for network in networks {
            let Some(id) = network.id else { continue };
            match self.api.remove_network(&id).await {
                Ok(()) | Err(ApiError::DockerResponseServerError { status_code: 404, .. }) => {}
                Err(source) => return Err(api_error("remove network", &id, source)),
            }
        }
        Ok(())
    }

    /// Whether the daemon has image `name` (`repo:tag` or an id).
    pub async fn has_image(&self, name: &str) -> Result<bool, DockerError> {
        match self.api.inspect_image(name).await {
            Ok(_) => Ok(true),
            Err(ApiError::DockerResponseServerError { status_code: 404, .. }) => Ok(false),
            Err(source) => Err(api_error("inspect image", name, source)),
        }
    }

    /// Loads the images of a `docker save` archive into the daemon and returns what it reported
    /// loading (`Loaded image: name:tag` lines, as `name:tag` or the image id). The file is streamed,
    /// not read into memory.
    pub async fn load_image(&self, archive: &Path) -> Result<Vec<String>, DockerError> {
        let file = tokio::fs::File::open(archive)
            .await
            .map_err(|source| DockerError::ImageFile { path: archive.to_owned(), source })?;
        let body = futures_util::stream::try_unfold(file, |mut file| async move {
            use tokio::io::AsyncReadExt;
            let mut buf = vec![0u8; 256 * 1024];
            let n = file.read(&mut buf).await?;
            if n == 0 {
                return Ok(None);
            }
            buf.truncate(n);
            Ok(Some((bytes::Bytes::from(buf), file)))
        });
        let options = ImportImageOptionsBuilder::default().quiet(true).build();
        let api = self.api.clone().with_timeout(LOAD_TIMEOUT);
        let mut stream = api.import_image(options, bollard::body_try_stream(body), None).boxed();
        let mut loaded = Vec::new();
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| DockerError::ImageLoad { path: archive.to_owned(), reason: e.to_string() })?;
            if let Some(detail) = info.error_detail {
                return Err(DockerError::ImageLoad {
                    path: archive.to_owned(),
                    reason: detail.message.unwrap_or_else(|| "unknown error".to_owned()),
                });
            }
            for line in info.stream.as_deref().unwrap_or_default().lines() {
                let line = line.trim();
                if let Some(image) =
                    line.strip_prefix("Loaded image: ").or_else(|| line.strip_prefix("Loaded image ID: "))
                {
                    loaded.push(image.to_owned());
                }
            }
        }
        Ok(loaded)
    }
}

/// An RFC 3339 time as the `seconds.nanoseconds` the events API takes.
fn unix_timestamp(rfc3339: &str) -> Option<String> {
    let time = chrono::DateTime::parse_from_rfc3339(rfc3339).ok()?;
    Some(format!("{}.{:09}", time.timestamp(), time.timestamp_subsec_nanos()))
}

/// An error and its causes, `: `-separated: hyper's "client error (Connect)" alone hides the
/// "connection refused" underneath.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn api_error(action: &'static str, object: &str, source: ApiError) -> DockerError {
    DockerError::Api { action, object: object.to_owned(), source }
}

fn container_error(action: &'static str, container: &str, source: ApiError) -> DockerError {
    match source {
        ApiError::DockerResponseServerError { status_code: 404, .. } => {
            DockerError::NoSuchContainer { container: container.to_owned() }
        }
        source => api_error(action, container, source),
    }
}

/// The order in which to start services: every service after the services it depends on; among
/// services whose dependencies are met, by name. Dependencies on services missing from `deps` are
/// ignored (they are not being started). A cycle is an error that names its services.
pub fn service_start_order(deps: &BTreeMap<String, BTreeSet<String>>) -> Result<Vec<String>, DockerError> {
    // Kahn's algorithm with a sorted ready set, which makes the order deterministic.
    let mut pending: BTreeMap<&str, BTreeSet<&str>> = deps
        .iter()
        .map(|(service, needs)| {
            let needs = needs.iter().map(String::as_str).filter(|need| deps.contains_key(*need)).collect();
            (service.as_str(), needs)
        })
        .collect();
    let mut order = Vec::with_capacity(deps.len());
    loop {
        let ready: Vec<&str> =
            pending.iter().filter(|(_, needs)| needs.is_empty()).map(|(service, _)| *service).collect();
        let Some(&next) = ready.first() else { break };
        pending.remove(next);
        for needs in pending.values_mut() {
            needs.remove(next);
        }
        order.push(next.to_owned());
    }
    if pending.is_empty() { Ok(order) } else { Err(DockerError::DependencyCycle { cycle: find_cycle(&pending) }) }
}

/// Walks dependencies among services that could not be ordered until one repeats; every such
/// service waits on another such service, so the walk always closes a cycle.
fn find_cycle(pending: &BTreeMap<&str, BTreeSet<&str>>) -> Vec<String> {
    let Some((&first, _)) = pending.iter().next() else {
        return Vec::new();
    };
    let mut path = vec![first];
    let mut current = first;
    loop {
        let Some(&next) = pending.get(current).and_then(|needs| needs.iter().next()) else {
            return path.iter().map(|s| (*s).to_owned()).collect();
        };
        if let Some(at) = path.iter().position(|s| *s == next) {
            let mut cycle: Vec<String> = path[at..].iter().map(|s| (*s).to_owned()).collect();
            cycle.push(next.to_owned());
            return cycle;
        }
        path.push(next);
        current = next;
    }
}

/// The containers in start order: by [`service_start_order`] of their services, then by name.
pub fn start_order(containers: &[Container]) -> Result<Vec<&Container>, DockerError> {
    let mut deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for container in containers {
        deps.entry(container.service.clone()).or_default().extend(container.depends_on.iter().cloned());
    }
    let rank: HashMap<String, usize> =
        service_start_order(&deps)?.into_iter().enumerate().map(|(i, service)| (service, i)).collect();
    let mut ordered: Vec<&Container> = containers.iter().collect();
    ordered.sort_by(|a, b| (rank[&a.service], &a.name).cmp(&(rank[&b.service], &b.name)));
    Ok(ordered)
}

/// The containers in stop order: exactly the reverse of [`start_order`], so a service stops before
/// the services it depends on.
pub fn stop_order(containers: &[Container]) -> Result<Vec<&Container>, DockerError> {
    let mut ordered = start_order(containers)?;
    ordered.reverse();
    Ok(ordered)
}

/// SIGKILLs `pid` and every process below it (host pids, from `/proc`): a hook killed at its
/// timeout leaves nothing running. Children are found first, so none is re-parented away.
pub fn kill_tree(pid: i32) {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(child) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
            // `pid (comm) state ppid ...`: comm may hold spaces, so read after the last ')'.
            let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse().ok());
            if let Some(ppid) = ppid {
                children.entry(ppid).or_default().push(child);
            }
        }
    }
    let mut order = vec![pid];
    let mut index = 0;
    while index < order.len() {
        order.extend(children.get(&order[index]).into_iter().flatten().copied());
        index += 1;
    }
    for pid in order {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deps(edges: &[(&str, &[&str])]) -> BTreeMap<String, BTreeSet<String>> {
        edges
            .iter()
            .map(|(service, needs)| ((*service).to_owned(), needs.iter().map(|n| (*n).to_owned()).collect()))
            .collect()
    }

    #[test]
    fn start_order_puts_dependencies_first_and_breaks_ties_by_name() {
        let graph =
            deps(&[("writer", &["cache"]), ("cache", &["db"]), ("db", &[]), ("idle", &[]), ("app", &["db", "cache"])]);
        assert_eq!(service_start_order(&graph).unwrap(), ["db", "cache", "app", "idle", "writer"]);
    }

    #[test]
    fn dependencies_outside_the_set_are_ignored() {
        let graph = deps(&[("app", &["proxy", "db"]), ("db", &[])]);
        assert_eq!(service_start_order(&graph).unwrap(), ["db", "app"]);
    }

    #[test]
    fn a_cycle_is_an_error_naming_its_services() {
        let graph = deps(&[("a", &["b"]), ("b", &["c"]), ("c", &["a"]), ("d", &[])]);
        let err = service_start_order(&graph).unwrap_err();
        let DockerError::DependencyCycle { cycle } = &err else {
            panic!("expected a cycle error, got {err}");
        };
        assert_eq!(cycle, &["a", "b", "c", "a"]);
        assert_eq!(
            err.to_string(),
            "services depend on each other in a cycle: a -> b -> c -> a; fix depends_on in the compose file"
        );
    }

    #[test]
    fn a_service_depending_on_itself_is_a_cycle() {
        let err = service_start_order(&deps(&[("a", &["a"])])).unwrap_err();
        assert!(matches!(err, DockerError::DependencyCycle { cycle } if cycle == ["a", "a"]));
    }

    #[test]
    fn stop_signals_are_read_as_docker_names_them() {
        assert_eq!(signal_number("SIGQUIT"), Some(libc::SIGQUIT));
        assert_eq!(signal_number("INT"), Some(libc::SIGINT));
        assert_eq!(signal_number("3"), Some(3));
        assert_eq!(signal_number("SIGBOGUS"), None);
        let mut db = container("db", "p_db_1", &[]);
        assert!(db.is_stop_signal(libc::SIGTERM) && db.is_stop_signal(libc::SIGKILL));
        assert!(!db.is_stop_signal(libc::SIGHUP), "a reload is no stop");
        db.stop_signal = Some("SIGINT".into());
        assert!(db.is_stop_signal(libc::SIGINT));
        assert_eq!(unix_timestamp("2026-12-01T23:01:55.5Z").as_deref(), Some("1796166115.500000000"));
    }

    #[test]
    fn depends_on_label_of_compose_v2_is_parsed() {
        assert_eq!(
            parse_depends_on_label("db:service_healthy:false,cache:service_started:true"),
            BTreeSet::from(["cache".to_owned(), "db".to_owned()])
        );
        assert!(parse_depends_on_label("").is_empty());
    }

    #[tokio::test]
    async fn a_host_that_is_no_docker_address_says_how_to_write_one() {
        let err = Docker::connect_to("foo://bar").await.unwrap_err();
        assert!(matches!(err, DockerError::BadHost { .. }), "{err:?}");
        assert!(err.to_string().contains("set DOCKER_HOST to unix://"), "{err}");
    }

    fn container(service: &str, name: &str, needs: &[&str]) -> Container {
        Container {
            id: name.to_owned(),
            name: name.to_owned(),
            service: service.to_owned(),
            state: State::Running,
            health: Health::None,
            has_healthcheck: false,
            exit_code: None,
            depends_on: needs.iter().map(|n| (*n).to_owned()).collect(),
            started_at: None,
            stop_signal: None,
            hook_labels: BTreeMap::new(),
        }
    }

    #[test]
    fn stop_order_is_start_order_reversed_with_replicas_by_name() {
        let containers = [
            container("web", "p_web_2", &["db"]),
            container("db", "p_db_1", &[]),
            container("web", "p_web_1", &["db"]),
        ];
        let names = |list: Vec<&Container>| list.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(start_order(&containers).unwrap()), ["p_db_1", "p_web_1", "p_web_2"]);
        assert_eq!(names(stop_order(&containers).unwrap()), ["p_web_2", "p_web_1", "p_db_1"]);
    }
}
