//! The service effects: `Inspect`'s listing, `StopServices`, `StopStack`, `StartServices`,
//! `ComposeUp` and `VerifyServices`. One listing of the project's containers, one wait-until-up,
//! in the dependency order of `crate::docker::{stop_order, start_order}`.

use crate::config::ServicesSection;
use crate::docker::{self, Container, StopOutcome};
use crate::services::Services;
use std::path::Path;
use std::time::Duration;

/// The service effects of one run, over any [`Services`] (the daemon, or the tests' fake).
pub struct ServiceOps<'a, S> {
    pub services: &'a S,
    /// Stop and start timeouts, from `[services]`.
    pub config: &'a ServicesSection,
}

impl<S: Services> ServiceOps<'_, S> {
    fn stop_timeout(&self) -> Duration {
        Duration::from_secs(self.config.stop_timeout_secs)
    }

    fn start_timeout(&self) -> Duration {
        Duration::from_secs(self.config.start_timeout_secs)
    }

    /// The services running now (a container on its way up or down counts), in stop order: the
    /// only ones a backup stops and restarts.
    pub async fn running(&self) -> anyhow::Result<Vec<String>> {
        let containers = self.services.containers().await?;
        let mut running = Vec::new();
        for container in docker::stop_order(&containers)? {
            if container.state.is_active() && !running.contains(&container.service) {
                running.push(container.service.clone());
            }
        }
        Ok(running)
    }

    /// `StopServices`: stops the containers of `services`, dependants first. A container Docker
    /// had to kill after the timeout fails the step: its data may not be consistent, so it must
    /// not be archived.
    pub async fn stop_services(&self, services: &[String]) -> anyhow::Result<()> {
        let containers = self.services.containers().await?;
        for container in docker::stop_order(&containers)? {
            if !services.contains(&container.service) {
                continue;
            }
            if self.services.stop(&container.name, self.stop_timeout()).await? == StopOutcome::Killed {
                anyhow::bail!(
                    "{} did not stop within {} s, so Docker killed it and its data may be inconsistent: \
                     raise services.stop_timeout_secs or fix how it shuts down",
                    container.name,
                    self.config.stop_timeout_secs
                );
            }
        }
        Ok(())
    }

    /// `StopStack`: stops every running container of the project, dependants first. A container
    /// Docker had to kill is only a warning here: the stack stops so that its data can be replaced.
    pub async fn stop_stack(&self) -> anyhow::Result<()> {
        let containers = self.services.containers().await?;
        for container in docker::stop_order(&containers)? {
            if self.services.stop(&container.name, self.stop_timeout()).await? == StopOutcome::Killed {
                tracing::warn!(
                    "{} did not stop within {} s, so Docker killed it",
                    container.name,
                    self.config.stop_timeout_secs
                );
            }
        }
        Ok(())
    }

    /// `StartServices`: starts the containers of `services`, dependencies first, each waited for
    /// until up before the next starts. Returns the services in the order they came up.
    pub async fn start_services(&self, services: &[String]) -> anyhow::Result<Vec<String>> {
        let containers = self.services.containers().await?;
        let mut order = Vec::new();
        for container in docker::start_order(&containers)? {
            if !services.contains(&container.service) {
                continue;
            }
            let _ = self.services.start(&container.name, self.stop_timeout()).await?;
            self.services.wait_up(&container.name, self.start_timeout()).await?;
            push_once(&mut order, container);
        }
        Ok(order)
    }

    /// `ComposeUp`: the compose command's `up -d`, then waits until the services' containers are
    /// up. `None` is every service the compose file starts by default. Returns the services in
    /// the order they were found up (dependencies first).
    pub async fn compose_up(&self, services: Option<&[String]>, compose_file: &Path) -> anyhow::Result<Vec<String>> {
        if services.is_some_and(<[String]>::is_empty) {
            // "No service", not compose's "every service" for an empty list: a rollback of a
            // stack where nothing was running must leave everything stopped.
            return Ok(Vec::new());
        }
        self.services.compose_up(services.unwrap_or_default()).await?;
        let wanted = match services {
            Some(services) => services.to_vec(),
            None => crate::compose::default_services(compose_file)?,
        };
        self.wait_up(Some(&wanted), " after the compose command's 'up': check the compose file").await
    }

    /// `VerifyServices`: each container of `services` (of every service when `None`) is up within
    /// `services.start_timeout_secs`. Read-only.
    pub async fn verify_up(&self, services: Option<&[String]>) -> anyhow::Result<()> {
        self.wait_up(services, ": run the compose command's 'up' for it").await.map(drop)
    }

    /// Waits until every container of `wanted` (every container when `None`) is up, dependencies
    /// first; a service in `wanted` without a container fails at once (`missing` says what to do).
    async fn wait_up(&self, wanted: Option<&[String]>, missing: &str) -> anyhow::Result<Vec<String>> {
        let containers = self.services.containers().await?;
        for service in wanted.unwrap_or_default() {
            if !containers.iter().any(|c| &c.service == service) {
                anyhow::bail!("service {service} has no container{missing}");
            }
        }
        let mut order = Vec::new();
        for container in docker::start_order(&containers)? {
            if wanted.is_some_and(|w| !w.contains(&container.service)) {
                continue;
            }
            self.services.wait_up(&container.name, self.start_timeout()).await?;
            push_once(&mut order, container);
        }
        Ok(order)
    }
}

fn push_once(order: &mut Vec<String>, container: &Container) {
    if !order.contains(&container.service) {
        order.push(container.service.clone());
    }
}
