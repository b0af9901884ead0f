//! An in-memory compose project behind [`Services`], for the executor's unit tests
//! (`executor_tests.rs`): the real executor, journal and archive writer run against it.
//!
//! It models what the recovery rules depend on (docs/design.md, "Recovery rules"):
//!
//! - a stop is two steps, *requested* then *finished*. In between the container is `stopping`: it
//!   reports `running` (and healthy) although it will exit whatever happens next, as Docker
//!   carries a stop on after lifeboat dies. A crash can be injected between the two steps;
//! - a later `stop` waits a stopping container out; `start` on one stops it for good first and
//!   then starts it, and `wait_up` watches it exit, as the Docker adapter does by reading the
//!   container's `kill` events. With [`FakeServices::forget_stop_events`] the fake behaves as a
//!   daemon that no longer has those events: a stopping container looks running to `start` and
//!   `wait_up` alike, so only the machine's rule 4 (finish the stop, then start) can save it;
//! - a service that ignores SIGTERM is killed at the stop timeout (`StopOutcome::Killed`);
//! - a service that never becomes healthy fails `wait_up`;
//! - injected failures of one operation on one container, once or always, before the operation
//!   does anything or (for a stop) after the stop was requested;
//! - a crash (a panic, standing in for a kill) at the N-th operation: before it, midway (a stop
//!   requested, not finished) or after it took effect.
//!
//! Single-threaded by design (`RefCell`): the tests drive runs on a current-thread runtime, and a
//! panic never leaves a borrow behind.

use crate::docker::{Container, Health, StartOutcome, State, StopOutcome, Volume};
use crate::services::Services;
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The operations the fake counts, logs, fails and crashes in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Stop,
    Start,
    WaitUp,
    ComposeUp,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Stop => "stop",
            Op::Start => "start",
            Op::WaitUp => "wait_up",
            Op::ComposeUp => "compose_up",
        }
    }
}

/// Where in an operation an injected crash falls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashWhen {
    /// Before the operation does anything.
    Before,
    /// For a stop: after the stop was requested, before the container exited (it is left
    /// `stopping`). For the other operations, the same as `After`.
    Midway,
    /// After the operation took full effect, before it returns.
    After,
}

/// Where a container is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Life {
    Running,
    /// A stop was requested and has not finished: reports running, will exit.
    Stopping,
    Stopped,
}

#[derive(Clone, Debug)]
pub struct FakeContainer {
    pub service: String,
    pub depends_on: BTreeSet<String>,
    pub life: Life,
    /// Has a HEALTHCHECK.
    pub has_healthcheck: bool,
    /// Whether it turns healthy when it starts (only meaningful with a healthcheck).
    pub becomes_healthy: bool,
    /// Ignores SIGTERM: every stop ends with Docker killing it at the timeout.
    pub ignores_sigterm: bool,
}

/// A failure injected into one operation on one container.
#[derive(Clone, Debug)]
pub struct Injected {
    pub op: Op,
    pub container: String,
    /// How many more times it fails (`u32::MAX`: always).
    pub times: u32,
    /// For a stop: the stop is requested (the container left `stopping`) before the error, as
    /// when the client times out while the daemon carries the stop on.
    pub midway: bool,
}

#[derive(Debug, Default)]
struct World {
    containers: Vec<FakeContainer>,
    failures: Vec<Injected>,
    /// How many injected failures fired.
    fired: u32,
    log: Vec<String>,
    /// Operations counted so far (crash injection counts from here).
    ops: u32,
    crash: Option<(u32, CrashWhen)>,
    forget_stop_events: bool,
    images_loaded: Vec<PathBuf>,
}

/// Something to do once an operation took effect (`after`).
type Hook = (String, Box<dyn FnOnce()>);

pub struct FakeServices {
    world: RefCell<World>,
    hooks: RefCell<Vec<Hook>>,
}

impl FakeServices {
    /// A project of `services` (each `(name, depends_on)`), all stopped, without healthchecks.
    pub fn new(services: &[(&str, &[&str])]) -> FakeServices {
        let containers = services
            .iter()
            .map(|(name, deps)| FakeContainer {
                service: (*name).to_owned(),
                depends_on: deps.iter().map(|d| (*d).to_owned()).collect(),
                life: Life::Stopped,
                has_healthcheck: false,
                becomes_healthy: true,
                ignores_sigterm: false,
            })
            .collect();
        FakeServices { world: RefCell::new(World { containers, ..World::default() }), hooks: RefCell::default() }
    }

    /// The stack of the tests: db <- cache <- app <- proxy (each depends on the one before), so
    /// the start order is db, cache, app, proxy and the stop order its reverse. `app` and `db`
    /// have healthchecks. Services in `running` run.
    pub fn stack(running: &[&str]) -> FakeServices {
        let fake =
            FakeServices::new(&[("proxy", &["app"]), ("app", &["cache", "db"]), ("cache", &["db"]), ("db", &[])]);
        for service in running {
            fake.set_life(service, Life::Running);
        }
        fake.edit("app", |c| c.has_healthcheck = true);
        fake.edit("db", |c| c.has_healthcheck = true);
        fake
    }

    /// Changes one container's settings.
    pub fn edit(&self, service: &str, change: impl FnOnce(&mut FakeContainer)) {
        let mut world = self.world.borrow_mut();
        change(world.containers.iter_mut().find(|c| c.service == service).expect("no such service"));
    }

    pub fn set_life(&self, service: &str, life: Life) {
        self.edit(service, |c| c.life = life);
    }

    pub fn life(&self, service: &str) -> Life {
        self.world.borrow().containers.iter().find(|c| c.service == service).expect("no such service").life
    }

    /// The services running and staying so (not on their way down), sorted.
    pub fn up(&self) -> BTreeSet<String> {
        self.world.borrow().containers.iter().filter(|c| c.life == Life::Running).map(|c| c.service.clone()).collect()
    }

    /// The services on their way down.
    pub fn stopping(&self) -> BTreeSet<String> {
        self.world.borrow().containers.iter().filter(|c| c.life == Life::Stopping).map(|c| c.service.clone()).collect()
    }

    /// Time passes: every stop in progress finishes.
    pub fn finish_stops(&self) {
        for container in self.world.borrow_mut().containers.iter_mut().filter(|c| c.life == Life::Stopping) {
            container.life = Life::Stopped;
        }
    }

    /// Makes `op` on `container` fail the next `times` times (`u32::MAX`: always).
    pub fn fail(&self, op: Op, container: &str, times: u32, midway: bool) {
        self.world.borrow_mut().failures.push(Injected { op, container: container.to_owned(), times, midway });
    }

    /// How many injected failures fired so far.
    pub fn failures_fired(&self) -> u32 {
        self.world.borrow().fired
    }

    /// Panics at the operation `nth` counted from now (0: the next one), at `when`.
    pub fn crash_at(&self, nth: u32, when: CrashWhen) {
        let mut world = self.world.borrow_mut();
        world.crash = Some((world.ops + nth, when));
    }

    pub fn no_crash(&self) {
        self.world.borrow_mut().crash = None;
    }

    /// A daemon that has forgotten the `kill` events of a stop in progress (see the module docs).
    pub fn forget_stop_events(&self) {
        self.world.borrow_mut().forget_stop_events = true;
    }

    /// The operations carried out, as `stop app`, `start db`, `wait_up db`...
    pub fn log(&self) -> Vec<String> {
        self.world.borrow().log.clone()
    }

    /// The operations of one kind in the log, by container, in order.
    pub fn logged(&self, op: Op) -> Vec<String> {
        let prefix = format!("{} ", op.name());
        self.log().iter().filter_map(|line| line.strip_prefix(&prefix).map(str::to_owned)).collect()
    }

    pub fn images_loaded(&self) -> Vec<PathBuf> {
        self.world.borrow().images_loaded.clone()
    }

    /// Calls `then` once the operation `line` (as logged: `stop db`) has taken effect, before it
    /// returns: the world changing under the executor at an exact point (a disk filling up).
    pub fn after(&self, line: &str, then: impl FnOnce() + 'static) {
        self.hooks.borrow_mut().push((line.to_owned(), Box::new(then)));
    }

    /// Counts and logs one operation, and says whether (and where) it crashes. The caller
    /// panics, after this borrow has ended.
    fn begin(&self, op: Op, container: &str) -> Option<CrashWhen> {
        let mut world = self.world.borrow_mut();
        let nth = world.ops;
        world.ops += 1;
        world.log.push(format!("{} {container}", op.name()));
        match world.crash {
            Some((at, when)) if at == nth => {
                world.crash = None;
                Some(when)
            }
            _ => None,
        }
    }

    /// The injected failure for this operation, if one fires now.
    fn injected(&self, op: Op, container: &str) -> Option<Injected> {
        let mut world = self.world.borrow_mut();
        let failure = world.failures.iter_mut().find(|f| f.op == op && f.container == container && f.times > 0)?;
        if failure.times != u32::MAX {
            failure.times -= 1;
        }
        let fired = failure.clone();
        world.fired += 1;
        Some(fired)
    }

    fn crash(op: Op, container: &str) -> ! {
        panic!("simulated crash in {} {container}", op.name());
    }

    /// The operation took effect: runs its hooks, then crashes if one is planned after it.
    fn took_effect(&self, op: Op, container: &str, crash: Option<CrashWhen>) {
        let line = format!("{} {container}", op.name());
        let hooks: Vec<Hook> = {
            let mut all = self.hooks.borrow_mut();
            let (now, later) = all.drain(..).partition(|(at, _)| *at == line);
            *all = later;
            now
        };
        for (_, hook) in hooks {
            hook();
        }
        if crash.is_some() {
            Self::crash(op, container);
        }
    }

    fn with<T>(&self, container: &str, f: impl FnOnce(&mut FakeContainer) -> T) -> anyhow::Result<T> {
        let mut world = self.world.borrow_mut();
        let Some(found) = world.containers.iter_mut().find(|c| c.service == container) else {
            anyhow::bail!("no such container: {container}");
        };
        Ok(f(found))
    }

    /// The second half of a stop: the container exits, killed if it ignores SIGTERM.
    fn finish_stop(c: &mut FakeContainer) -> StopOutcome {
        c.life = Life::Stopped;
        if c.ignores_sigterm { StopOutcome::Killed } else { StopOutcome::Stopped }
    }
}

impl Services for FakeServices {
    async fn containers(&self) -> anyhow::Result<Vec<Container>> {
        let world = self.world.borrow();
        Ok(world
            .containers
            .iter()
            .map(|c| {
                let active = c.life != Life::Stopped;
                Container {
                    id: c.service.clone(),
                    name: c.service.clone(),
                    service: c.service.clone(),
                    // A stopping container reports running, and healthy: Docker cannot tell.
                    state: if active { State::Running } else { State::Exited },
                    health: match (c.has_healthcheck, active, c.becomes_healthy) {
                        (false, _, _) | (true, false, _) => Health::None,
                        (true, true, true) => Health::Healthy,
                        (true, true, false) => Health::Unhealthy,
                    },
                    has_healthcheck: c.has_healthcheck,
                    exit_code: (!active).then_some(0),
                    depends_on: c.depends_on.clone(),
                    started_at: None,
                    stop_signal: None,
                    hook_labels: Default::default(),
                }
            })
            .collect())
    }

    async fn volumes(&self) -> anyhow::Result<Vec<Volume>> {
        // The data lives in `backup.paths` in the tests' temp dirs.
        Ok(Vec::new())
    }

    async fn stop(&self, container: &str, _timeout: Duration) -> anyhow::Result<StopOutcome> {
        let crash = self.begin(Op::Stop, container);
        if crash == Some(CrashWhen::Before) {
            Self::crash(Op::Stop, container);
        }
        if let Some(failure) = self.injected(Op::Stop, container) {
            if failure.midway {
                self.with(container, |c| {
                    if c.life == Life::Running {
                        c.life = Life::Stopping;
                    }
                })?;
            }
            anyhow::bail!("injected failure: stop {container}");
        }
        // The request: a running container starts on its way down.
        let life = self.with(container, |c| {
            if c.life == Life::Running {
                c.life = Life::Stopping;
                Life::Running
            } else {
                c.life
            }
        })?;
        if crash == Some(CrashWhen::Midway) && life != Life::Stopped {
            Self::crash(Op::Stop, container);
        }
        // The wait: the container exits (a stop already in progress is waited out too).
        let outcome = self.with(container, |c| match life {
            Life::Stopped => StopOutcome::AlreadyStopped,
            Life::Running | Life::Stopping => Self::finish_stop(c),
        })?;
        self.took_effect(Op::Stop, container, crash);
        Ok(outcome)
    }

    async fn start(&self, container: &str, _stop_timeout: Duration) -> anyhow::Result<StartOutcome> {
        let crash = self.begin(Op::Start, container);
        if crash == Some(CrashWhen::Before) {
            Self::crash(Op::Start, container);
        }
        if self.injected(Op::Start, container).is_some() {
            anyhow::bail!("injected failure: start {container}");
        }
        let blind = self.world.borrow().forget_stop_events;
        let outcome = self.with(container, |c| match c.life {
            Life::Running => StartOutcome::AlreadyRunning,
            // Without the kill events, a container on its way down looks running: left alone.
            Life::Stopping if blind => StartOutcome::AlreadyRunning,
            // As the adapter does: the stop in progress is waited out, then the container starts.
            Life::Stopping | Life::Stopped => {
                c.life = Life::Running;
                StartOutcome::Started
            }
        })?;
        self.took_effect(Op::Start, container, crash);
        Ok(outcome)
    }

    async fn wait_up(&self, container: &str, _timeout: Duration) -> anyhow::Result<()> {
        let crash = self.begin(Op::WaitUp, container);
        if crash == Some(CrashWhen::Before) {
            Self::crash(Op::WaitUp, container);
        }
        if self.injected(Op::WaitUp, container).is_some() {
            anyhow::bail!("injected failure: {container} did not come up");
        }
        let blind = self.world.borrow().forget_stop_events;
        let result = self.with(container, |c| match c.life {
            Life::Stopping if blind => Ok(()),
            // The adapter keeps watching a container on its way down, and sees it exit.
            Life::Stopping | Life::Stopped => {
                c.life = Life::Stopped;
                Err(anyhow::anyhow!("{container} exited"))
            }
            Life::Running if c.has_healthcheck && !c.becomes_healthy => {
                Err(anyhow::anyhow!("{container} is unhealthy"))
            }
            Life::Running => Ok(()),
        })?;
        self.took_effect(Op::WaitUp, container, crash);
        result
    }

    async fn compose_up(&self, services: &[String]) -> anyhow::Result<()> {
        let label = if services.is_empty() { "all".to_owned() } else { services.join(",") };
        let crash = self.begin(Op::ComposeUp, &label);
        if crash == Some(CrashWhen::Before) {
            Self::crash(Op::ComposeUp, &label);
        }
        if self.injected(Op::ComposeUp, &label).is_some() {
            anyhow::bail!("injected failure: compose up {label}");
        }
        {
            let mut world = self.world.borrow_mut();
            for c in world.containers.iter_mut() {
                if services.is_empty() || services.contains(&c.service) {
                    // Compose recreates what does not run; a stop in progress is finished first.
                    c.life = Life::Running;
                }
            }
        }
        self.took_effect(Op::ComposeUp, &label, crash);
        Ok(())
    }

    async fn load_image(&self, archive: &Path) -> anyhow::Result<Vec<String>> {
        self.world.borrow_mut().images_loaded.push(archive.to_path_buf());
        Ok(vec![format!("{}:latest", archive.file_stem().unwrap_or_default().to_string_lossy())])
    }

    // The executor's tests keep their data in `backup.paths`: no volumes.
    async fn volume(&self, _name: &str) -> anyhow::Result<Option<Volume>> {
        Ok(None)
    }

    async fn create_volume(&self, volume: &lifeboat_machine::NewVolume) -> anyhow::Result<()> {
        anyhow::bail!("the fake daemon has no volumes (asked to create {})", volume.name)
    }

    async fn remove_volume(&self, _name: &str) -> anyhow::Result<()> {
        Ok(())
    }

    async fn remove_project(&self) -> anyhow::Result<()> {
        anyhow::bail!("the fake daemon does not remove containers")
    }
}
