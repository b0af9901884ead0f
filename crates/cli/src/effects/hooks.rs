//! Hooks (docs/design.md, "Hooks"): which a backup, upgrade or restore has (`Inspect` reports
//! them, so the journal fixes them for recovery; `on_failure` comes with the run's start), and
//! `RunHook`, which runs one: a host command from `[hooks]` in `lifeboat.toml`, or a command
//! declared by a compose label (`lifeboat.before-backup`) run inside its service's running
//! container through the Engine API's exec.
//!
//! A hook always reports `Outcome::HookRan` with its exit code and the tail of its output: 124
//! when it was killed at its timeout, 127 when it could not be started. The machine decides what
//! a non-zero exit means (a `before_*` hook fails the run, an `after_*` one is reported).

use crate::config::HooksSection;
use crate::project::Project;
use crate::services::Services;
use anyhow::bail;
use lifeboat_machine::{Hook, HookPoint, Mode, Outcome, Run, RunKind, RunSpec, State};
use std::io::Read;
use std::time::Duration;

/// Lines of output a hook's outcome keeps (and at most `TAIL_BYTES` of them).
pub const TAIL_LINES: usize = 20;
pub const TAIL_BYTES: usize = 2000;

/// Exit code of a hook killed at its timeout (as `timeout(1)` says it).
pub const TIMED_OUT: i32 = 124;
/// Exit code of a hook that could not be started.
pub const NOT_STARTED: i32 = 127;

/// The hooks of a backup, an upgrade or a restore (other runs have none but `on_failure`), in
/// the order they run: the host's `before_*`, then each running service's `lifeboat.before-*`
/// label in stop order; after the last forward step, each service's `lifeboat.after-*` in start
/// order, then the host's `after_*`. `running` is the services running now, in stop order. A bad
/// label is an error (the run then fails at `Inspect`, before anything is stopped).
pub async fn run_hooks<S: Services>(
    project: &Project,
    services: &S,
    run: &Run,
    running: &[String],
) -> anyhow::Result<Vec<Hook>> {
    let config = &project.config.hooks;
    let (before, after) = match run.kind() {
        RunKind::Backup => (HookPoint::BeforeBackup, HookPoint::AfterBackup),
        RunKind::Upgrade => (HookPoint::BeforeUpgrade, HookPoint::AfterUpgrade),
        RunKind::Restore => (HookPoint::BeforeRestore, HookPoint::AfterRestore),
        _ => return Ok(Vec::new()),
    };
    let containers = if running.is_empty() { Vec::new() } else { services.containers().await? };
    let labelled = |point: HookPoint| -> anyhow::Result<Vec<Hook>> {
        let label = label_of(point);
        let mut hooks = Vec::new();
        for service in running {
            // One hook per service, from its first running container.
            let Some(container) = containers.iter().find(|c| &c.service == service && c.state.is_active()) else {
                continue;
            };
            if let Some(command) = container.hook_labels.get(&label) {
                hooks.push(label_hook(point, &label, service, command, &container.hook_labels)?);
            }
        }
        Ok(hooks)
    };
    let mut hooks = Vec::new();
    hooks.extend(host_hook(config, before));
    hooks.extend(labelled(before)?);
    let mut after_services = labelled(after)?;
    after_services.reverse();
    hooks.extend(after_services);
    hooks.extend(host_hook(config, after));
    Ok(hooks)
}

/// The hooks a run carries from its start, to run should it roll back or fail (`on_failure`, a
/// host command: a service's container may be what failed).
pub fn failure_hooks(project: &Project) -> Vec<Hook> {
    host_hook(&project.config.hooks, HookPoint::OnFailure).into_iter().collect()
}

/// The compose label of a point: `lifeboat.before-backup`.
fn label_of(point: HookPoint) -> String {
    format!("lifeboat.{}", point.as_str().replace('_', "-"))
}

fn host_hook(config: &HooksSection, point: HookPoint) -> Option<Hook> {
    config.command(point).map(|command| Hook {
        point,
        service: None,
        command: command.to_owned(),
        timeout_secs: config.timeout_secs,
        idempotent: config.idempotent.iter().any(|key| key == point.as_str()),
    })
}

/// A hook from the labels of a service: `LABEL` holds the command, `LABEL.timeout` the seconds
/// (default 300), `LABEL.idempotent` `true` when it may run twice.
fn label_hook(
    point: HookPoint,
    label: &str,
    service: &str,
    command: &str,
    labels: &std::collections::BTreeMap<String, String>,
) -> anyhow::Result<Hook> {
    if command.trim().is_empty() {
        bail!("the label {label} of service {service} is empty: give it a command, or remove it");
    }
    let timeout_secs = match labels.get(&format!("{label}.timeout")) {
        None => crate::config::DEFAULT_HOOK_TIMEOUT_SECS,
        Some(text) => match text.trim().parse::<u64>() {
            Ok(secs) if secs > 0 => secs,
            _ => bail!("the label {label}.timeout of service {service} is {text:?}: use a positive number of seconds"),
        },
    };
    let idempotent = match labels.get(&format!("{label}.idempotent")).map(|v| v.trim()) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            bail!("the label {label}.idempotent of service {service} is {other:?}: use \"true\" or \"false\"")
        }
    };
    Ok(Hook { point, service: Some(service.to_owned()), command: command.to_owned(), timeout_secs, idempotent })
}

/// `RunHook`: runs the hook and reports its exit code and output tail; never an error.
pub async fn run_hook<S: Services>(project: &Project, services: &S, run: &Run, hook: &Hook) -> Outcome {
    let timeout = Duration::from_secs(hook.timeout_secs);
    let result = match &hook.service {
        None => run_on_host(project, run, hook, timeout).await,
        Some(service) => run_in_container(services, service, &hook.command, timeout).await,
    };
    let (exit_code, output) = result.unwrap_or_else(|err| (NOT_STARTED, format!("{err:#}").into_bytes()));
    Outcome::HookRan { exit_code, output_tail: tail(&output) }
}

async fn run_in_container<S: Services>(
    services: &S,
    service: &str,
    command: &str,
    timeout: Duration,
) -> anyhow::Result<(i32, Vec<u8>)> {
    let containers = services.containers().await?;
    let Some(container) = containers.iter().find(|c| c.service == service && c.state.is_active()) else {
        bail!("service {service} has no running container to run the hook in");
    };
    services.exec(&container.id, command, timeout).await
}

/// `sh -c COMMAND` in the project directory, in a process group of its own (killed whole at the
/// timeout), stdout and stderr into one pipe. Environment: `LIFEBOAT_PROJECT`, `LIFEBOAT_RUN_ID`,
/// `LIFEBOAT_KIND` (`backup`...), `LIFEBOAT_HOOK` (`before_backup`...); `LIFEBOAT_ARCHIVE`, the
/// archive's path (the one a backup or an upgrade writes, or the one a restore puts back, with
/// `LIFEBOAT_BACKUP_ID`); `LIFEBOAT_VERSION`, the version an upgrade deploys; and for
/// `on_failure`, `LIFEBOAT_OUTCOME` (`rolled_back` or `failed`) and `LIFEBOAT_ERROR`.
async fn run_on_host(project: &Project, run: &Run, hook: &Hook, timeout: Duration) -> anyhow::Result<(i32, Vec<u8>)> {
    let (reader, writer) = std::io::pipe()?;
    let mut command = tokio::process::Command::new("sh");
    command
        .arg("-c")
        .arg(&hook.command)
        .current_dir(&project.dir)
        .env("LIFEBOAT_PROJECT", &project.config.project.name)
        .env("LIFEBOAT_RUN_ID", run.id().to_string())
        .env("LIFEBOAT_KIND", run.kind().as_str())
        .env("LIFEBOAT_HOOK", hook.point.as_str())
        .stdin(std::process::Stdio::null())
        .stdout(writer.try_clone()?)
        .stderr(writer)
        .process_group(0)
        .kill_on_drop(true);
    match run.spec() {
        RunSpec::Backup { archive_path, .. } | RunSpec::SnapshotBackup { archive_path, .. } => {
            command.env("LIFEBOAT_ARCHIVE", archive_path);
        }
        RunSpec::Upgrade { archive_path, package } => {
            command.env("LIFEBOAT_ARCHIVE", archive_path).env("LIFEBOAT_VERSION", &package.version);
        }
        RunSpec::Restore { backup } => {
            command.env("LIFEBOAT_ARCHIVE", &backup.path).env("LIFEBOAT_BACKUP_ID", backup.backup_id.to_string());
        }
        _ => {}
    }
    if hook.point == HookPoint::OnFailure {
        let outcome = match run.mode() {
            Mode::Compensating { end: State::Failed, .. } => State::Failed,
            _ => State::RolledBack,
        };
        let error = run.failures().last().map(|f| format!("{} failed: {}", f.effect.name(), f.error));
        let error = error.or_else(|| run.cancelled().map(|reason| format!("cancelled by {reason}")));
        command.env("LIFEBOAT_OUTCOME", outcome.as_str()).env("LIFEBOAT_ERROR", error.unwrap_or_default());
    }
    let mut child = command.spawn()?;
    // Our copies of the pipe's write end go with the builder: EOF comes when the hook's are gone.
    drop(command);
    let pid = child.id().map(|id| id as i32);
    let read = tokio::task::spawn_blocking(move || keep_tail(reader));
    let code = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(status) => {
            let status = status?;
            use std::os::unix::process::ExitStatusExt;
            status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
        }
        Err(_) => {
            if let Some(pid) = pid {
                // SAFETY: kill(2) has no memory-safety preconditions; a negative pid names the
                // process group the hook leads.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
            }
            let _ = child.wait().await;
            TIMED_OUT
        }
    };
    // A background process the hook left (outside its group) may hold the pipe: do not wait long.
    let mut output = match tokio::time::timeout(Duration::from_secs(5), read).await {
        Ok(Ok(output)) => output,
        _ => b"[lifeboat: the output could not be read to its end]\n".to_vec(),
    };
    if code == TIMED_OUT {
        output.extend_from_slice(format!("\n[lifeboat: killed after {} s]\n", timeout.as_secs()).as_bytes());
    }
    Ok((code, output))
}

/// Reads a pipe to its end, keeping only its last 64 KiB.
fn keep_tail(mut reader: impl Read) -> Vec<u8> {
    const KEEP: usize = 64 * 1024;
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match reader.read(&mut buf) {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > 2 * KEEP {
                    kept.drain(..kept.len() - KEEP);
                }
            }
        }
    }
}

/// The last `TAIL_LINES` lines of `output`, at most `TAIL_BYTES` bytes, as text.
pub fn tail(output: &[u8]) -> String {
    let text = String::from_utf8_lossy(output);
    let lines: Vec<&str> = text.lines().collect();
    let mut tail = lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n");
    if tail.len() > TAIL_BYTES {
        let mut cut = tail.len() - TAIL_BYTES;
        while !tail.is_char_boundary(cut) {
            cut += 1;
        }
        tail = tail[cut..].to_owned();
    }
    tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_keeps_the_last_lines_within_its_bytes() {
        let output: String = (1..=30).map(|n| format!("line {n}\n")).collect();
        let kept = tail(output.as_bytes());
        assert!(kept.starts_with("line 11\n") && kept.ends_with("line 30"), "{kept}");
        let long = "é".repeat(3000);
        assert!(tail(long.as_bytes()).len() <= TAIL_BYTES);
    }

    #[test]
    fn labels_give_the_timeout_and_idempotence() {
        let mut labels = std::collections::BTreeMap::new();
        labels.insert("lifeboat.before-backup.timeout".to_owned(), "7".to_owned());
        labels.insert("lifeboat.before-backup.idempotent".to_owned(), "true".to_owned());
        let hook = label_hook(HookPoint::BeforeBackup, "lifeboat.before-backup", "db", "sync", &labels).unwrap();
        assert_eq!((hook.timeout_secs, hook.idempotent, hook.service.as_deref()), (7, true, Some("db")));
        labels.insert("lifeboat.before-backup.timeout".to_owned(), "soon".to_owned());
        let err = label_hook(HookPoint::BeforeBackup, "lifeboat.before-backup", "db", "sync", &labels).unwrap_err();
        assert!(err.to_string().contains("lifeboat.before-backup.timeout"), "{err}");
    }
}
