//! The project's services as the executor sees them: one trait in front of the Docker daemon and
//! the compose command, so that the executor's loop and effects run against a fake in the unit
//! tests (`crate::executor`'s tests) exactly as they run against the daemon in `tests/`.
//!
//! Every operation is idempotent, as the effects that call it must be (ARCHITECTURE.md,
//! "Recovery rules"): stopping a stopped container or starting a running one succeeds and says so.

use crate::compose::Compose;
use crate::docker::{Container, Docker, StartOutcome, StopOutcome, Volume};
use crate::exit::Exit;
use crate::project::Project;
use lifeboat_machine::NewVolume;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The containers, volumes and images of one compose project.
// Only used through generics, on the task that drives a run: no `Send` bound is needed.
#[allow(async_fn_in_trait)]
pub trait Services {
    /// Every container of the project, stopped ones included, with the services each depends on.
    async fn containers(&self) -> anyhow::Result<Vec<Container>>;
    /// The project's named volumes.
    async fn volumes(&self) -> anyhow::Result<Vec<Volume>>;
    /// Stops one container, giving it `timeout` before it is killed.
    async fn stop(&self, container: &str, timeout: Duration) -> anyhow::Result<StopOutcome>;
    /// Starts one container; one on its way down from a stop is stopped for good first (given
    /// `stop_timeout`), since left alone it would exit. Does not wait for it to be up.
    async fn start(&self, container: &str, stop_timeout: Duration) -> anyhow::Result<StartOutcome>;
    /// Waits until the container is running and, where it has a healthcheck, healthy; fails as
    /// soon as it exits or turns unhealthy, or after `timeout`, saying why.
    async fn wait_up(&self, container: &str, timeout: Duration) -> anyhow::Result<()>;
    /// The compose command's `up -d` for `services`: creates and starts their containers.
    async fn compose_up(&self, services: &[String]) -> anyhow::Result<()>;
    /// Loads the images of a `docker save` archive; returns the names it held.
    async fn load_image(&self, archive: &Path) -> anyhow::Result<Vec<String>>;
    /// One volume by its Docker name, project or not; `None` when there is none.
    async fn volume(&self, name: &str) -> anyhow::Result<Option<Volume>>;
    /// Creates a named volume as a restore onto a new host recorded it.
    async fn create_volume(&self, volume: &NewVolume) -> anyhow::Result<()>;
    /// Removes a named volume; one already gone is fine.
    async fn remove_volume(&self, name: &str) -> anyhow::Result<()>;
    /// Removes every container of the project (stopping it first) and its networks.
    async fn remove_project(&self) -> anyhow::Result<()>;
    /// Runs `sh -c command` inside a running container, killed after `timeout` (exit code 124);
    /// returns its exit code and output. For hooks declared by compose label.
    async fn exec(&self, container: &str, command: &str, timeout: Duration) -> anyhow::Result<(i32, Vec<u8>)> {
        let _ = (container, command, timeout);
        anyhow::bail!("running a command in a container needs the Docker daemon")
    }
}

/// The real services: the Docker daemon (through bollard) and the configured compose command.
#[derive(Clone, Debug)]
pub struct DockerServices {
    docker: Docker,
    project: String,
    compose_file: PathBuf,
    compose: Compose,
}

impl DockerServices {
    /// Connects to the daemon before a run starts: none answering means nothing was touched
    /// (exit 1).
    pub async fn connect(project: &Project) -> anyhow::Result<DockerServices> {
        let docker = Docker::connect().await.map_err(|err| Exit::Failed.wrap(err))?;
        let config = &project.config.project;
        let compose = Compose::new(&config.compose_command, &config.name, &config.compose_file, &project.dir)?;
        Ok(DockerServices { docker, project: config.name.clone(), compose_file: project.compose_file(), compose })
    }
}

impl Services for DockerServices {
    async fn containers(&self) -> anyhow::Result<Vec<Container>> {
        // Without the compose file, dependencies come from the compose v2 label alone.
        let file = self.compose_file.exists().then_some(self.compose_file.as_path());
        Ok(self.docker.project_containers(&self.project, file).await?)
    }

    async fn volumes(&self) -> anyhow::Result<Vec<Volume>> {
        Ok(self.docker.project_volumes(&self.project).await?)
    }

    async fn stop(&self, container: &str, timeout: Duration) -> anyhow::Result<StopOutcome> {
        Ok(self.docker.stop(container, timeout).await?)
    }

    async fn start(&self, container: &str, stop_timeout: Duration) -> anyhow::Result<StartOutcome> {
        Ok(self.docker.start(container, stop_timeout).await?)
    }

    async fn wait_up(&self, container: &str, timeout: Duration) -> anyhow::Result<()> {
        self.docker.wait_up(container, timeout).await?;
        Ok(())
    }

    async fn compose_up(&self, services: &[String]) -> anyhow::Result<()> {
        Ok(self.compose.up(services).await?)
    }

    async fn load_image(&self, archive: &Path) -> anyhow::Result<Vec<String>> {
        Ok(self.docker.load_image(archive).await?)
    }

    async fn volume(&self, name: &str) -> anyhow::Result<Option<Volume>> {
        Ok(self.docker.volume(name).await?)
    }

    async fn create_volume(&self, volume: &NewVolume) -> anyhow::Result<()> {
        Ok(self.docker.create_volume(&volume.name, &volume.driver, &volume.driver_options, &volume.labels).await?)
    }

    async fn remove_volume(&self, name: &str) -> anyhow::Result<()> {
        Ok(self.docker.remove_volume(name).await?)
    }

    async fn remove_project(&self) -> anyhow::Result<()> {
        for container in self.docker.project_containers(&self.project, None).await? {
            self.docker.remove_container(&container.id, true).await?;
        }
        Ok(self.docker.remove_project_networks(&self.project).await?)
    }

    async fn exec(&self, container: &str, command: &str, timeout: Duration) -> anyhow::Result<(i32, Vec<u8>)> {
        Ok(self.docker.exec(container, command, timeout).await?)
    }
}

/// For runs that touch no service (a prune): every operation fails, saying so.
#[derive(Clone, Copy, Debug)]
pub struct NoServices;

impl NoServices {
    fn refuse<T>(&self) -> anyhow::Result<T> {
        anyhow::bail!("this step needs the Docker daemon, which this run does not use")
    }
}

impl Services for NoServices {
    async fn containers(&self) -> anyhow::Result<Vec<Container>> {
        self.refuse()
    }
    async fn volumes(&self) -> anyhow::Result<Vec<Volume>> {
        self.refuse()
    }
    async fn stop(&self, _: &str, _: Duration) -> anyhow::Result<StopOutcome> {
        self.refuse()
    }
    async fn start(&self, _: &str, _: Duration) -> anyhow::Result<StartOutcome> {
        self.refuse()
    }
    async fn wait_up(&self, _: &str, _: Duration) -> anyhow::Result<()> {
        self.refuse()
    }
    async fn compose_up(&self, _: &[String]) -> anyhow::Result<()> {
        self.refuse()
    }
    async fn load_image(&self, _: &Path) -> anyhow::Result<Vec<String>> {
        self.refuse()
    }
    async fn volume(&self, _: &str) -> anyhow::Result<Option<Volume>> {
        self.refuse()
    }
    async fn create_volume(&self, _: &NewVolume) -> anyhow::Result<()> {
        self.refuse()
    }
    async fn remove_volume(&self, _: &str) -> anyhow::Result<()> {
        self.refuse()
    }
    async fn remove_project(&self) -> anyhow::Result<()> {
        self.refuse()
    }
}
