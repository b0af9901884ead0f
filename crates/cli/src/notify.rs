//! `[notify]`: telling someone how a run ended, when nobody is watching (README, "Monitoring").
//!
//! Three targets, each optional: a webhook (an HTTP POST of the notification document,
//! docs/json.md "The notification"), a command (the same document on its stdin), and a
//! dead-man's-switch ping URL in the Healthchecks.io convention (`URL/start` when a run starts,
//! `URL` when it completes, `URL/fail` when it does not). The webhook and the command hear
//! failures, and successes too with `on_success`; the ping URL hears every run but prunes.
//!
//! Delivery never changes a run: every attempt is bounded by `notify.timeout_secs`, a failed one
//! is retried (three attempts in all), a notification that still cannot be delivered is logged as
//! a warning, and nothing here returns an error to the run. URLs usually carry a token, so they
//! are only ever printed through [`redact`].

use crate::config::NotifySection;
use crate::project::Project;
use crate::render;
use lifeboat_machine::{Run, RunKind};
use serde::Serialize;
use std::time::Duration;

/// How many times a notification is tried before it is given up (and logged).
pub const ATTEMPTS: u32 = 3;

/// The notification document (docs/json.md, "The notification"): add fields, never rename.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Notification {
    pub project: String,
    /// `null` when the command failed before its run was journaled.
    pub run_id: Option<u64>,
    pub kind: &'static str,
    /// `completed`, `rolled_back`, `failed`, or `interrupted` (the run stopped and waits for
    /// `lifeboat recover`).
    pub outcome: &'static str,
    /// The process's exit code for this run (README, "Command-line contract").
    pub exit_code: i32,
    /// What failed, how the run ended and what to do; `null` when it completed.
    pub error: Option<String>,
    pub started_at: Option<String>,
    pub ended_at: String,
    pub duration_ms: Option<i64>,
    /// From the stop of the first service to the start of the last; `null` when none was stopped.
    pub downtime_ms: Option<i64>,
    /// The archive the run wrote (a backup's, an upgrade's pre-upgrade backup), if it wrote one.
    pub archive_path: Option<String>,
    pub archive_size_bytes: Option<u64>,
    /// The host's name.
    pub host: String,
}

impl Notification {
    /// The notification for a run that ended, `exit_code` being the exit its command takes.
    pub fn of_run(project: &Project, run: &Run, events: &[lifeboat_machine::Event], exit_code: i32) -> Notification {
        let completed = run.state() == lifeboat_machine::State::Completed;
        let archive = run.archive();
        Notification {
            project: project.config.project.name.clone(),
            run_id: Some(run.id()),
            kind: run.kind().as_str(),
            outcome: crate::runs::history::outcome(run),
            exit_code,
            error: match crate::runs::after_hooks_failed(run) {
                _ if !completed => Some(crate::runs::history::failure_summary(run)),
                Err(err) => Some(format!("{err:#}")),
                Ok(()) => None,
            },
            started_at: Some(render::rfc3339(run.started_at())),
            ended_at: render::rfc3339(run.last_event_at()),
            duration_ms: Some(run.last_event_at().0 - run.started_at().0),
            downtime_ms: crate::runs::history::downtime_ms(events),
            archive_path: archive.map(|a| a.path.clone()),
            archive_size_bytes: archive.map(|a| a.size_bytes),
            host: hostname(),
        }
    }

    /// The notification for a command of `kind` that failed with `error` before or while its run
    /// was journaled.
    pub fn of_error(project: &Project, kind: RunKind, run_id: Option<u64>, error: &anyhow::Error) -> Notification {
        Notification {
            project: project.config.project.name.clone(),
            run_id,
            kind: kind.as_str(),
            outcome: if run_id.is_some() { "interrupted" } else { "failed" },
            exit_code: crate::exit::Exit::of(error) as i32,
            error: Some(format!("{error:#}")),
            started_at: None,
            ended_at: render::rfc3339(render::now()),
            duration_ms: None,
            downtime_ms: None,
            archive_path: None,
            archive_size_bytes: None,
            host: hostname(),
        }
    }

    /// Completed with nothing to report: an `after_*` hook that failed (exit 6) is a failure to
    /// hear of, though the run's work stays.
    pub fn succeeded(&self) -> bool {
        self.outcome == "completed" && self.exit_code == 0
    }
}

/// Where notifications go: the `[notify]` section, with the retry pause (shorter in unit tests).
#[derive(Clone, Debug)]
pub struct Notifier {
    config: NotifySection,
    project_dir: std::path::PathBuf,
    retry_pause: Duration,
}

impl Notifier {
    pub fn new(project: &Project) -> Notifier {
        Notifier {
            config: project.config.notify.clone(),
            project_dir: project.dir.clone(),
            retry_pause: Duration::from_secs(1),
        }
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.config.timeout_secs.unwrap_or(10))
    }

    /// Whether a run of `kind` pings: every kind but prune, which follows a scheduled backup.
    fn pings(&self, kind: RunKind) -> bool {
        self.config.ping_url.is_some() && kind != RunKind::Prune
    }

    /// The `/start` ping of a run of `kind` that is about to start.
    pub async fn run_starting(&self, kind: RunKind) {
        if let (true, Some(url)) = (self.pings(kind), &self.config.ping_url) {
            let url = format!("{}/start", url.trim_end_matches('/'));
            self.deliver("the start ping", &url, None).await;
        }
    }

    /// Sends `note` where it should go: the ping URL (success or `/fail`), and the webhook and the
    /// command when it is a failure or `on_success` is set. Never fails: see the module doc.
    pub async fn run_ended(&self, kind: RunKind, note: &Notification) {
        let body = match serde_json::to_vec(note) {
            Ok(body) => body,
            Err(err) => {
                tracing::warn!("cannot encode the notification: {err}");
                return;
            }
        };
        if let (true, Some(url)) = (self.pings(kind), &self.config.ping_url) {
            let url = url.trim_end_matches('/');
            let url = if note.succeeded() { url.to_owned() } else { format!("{url}/fail") };
            self.deliver("the ping", &url, Some(&body)).await;
        }
        if !note.succeeded() || self.config.on_success {
            if let Some(url) = &self.config.webhook {
                self.deliver("the webhook", url, Some(&body)).await;
            }
            if let Some(command) = &self.config.command {
                self.run_command(command, &body).await;
            }
        }
    }

    /// POSTs `body` (or nothing) to `url`, retrying; logs the outcome with the URL redacted.
    async fn deliver(&self, what: &str, url: &str, body: Option<&[u8]>) {
        let shown = redact(url);
        for attempt in 1..=ATTEMPTS {
            let (target, payload, timeout) = (url.to_owned(), body.map(<[u8]>::to_vec), self.timeout());
            let sent = tokio::task::spawn_blocking(move || post(&target, payload.as_deref(), timeout)).await;
            let result = sent.map_err(|err| err.to_string()).and_then(|r| r);
            match result {
                Ok(()) => {
                    tracing::info!("notify: {what} {shown} delivered");
                    return;
                }
                // The error may quote the URL: never print it in full.
                Err(err) => {
                    let err = scrub(&err, url);
                    tracing::warn!("notify: {what} {shown}: attempt {attempt} of {ATTEMPTS} failed: {err}");
                }
            }
            if attempt < ATTEMPTS {
                tokio::time::sleep(self.retry_pause * attempt).await;
            }
        }
        tracing::warn!("notify: {what} {shown} could not be delivered; the run's outcome is unchanged");
    }

    /// Runs `command` with `sh -c` in the project directory, `body` on its stdin, retrying when it
    /// fails or outlives the timeout.
    async fn run_command(&self, command: &str, body: &[u8]) {
        for attempt in 1..=ATTEMPTS {
            match self.command_once(command, body).await {
                Ok(()) => {
                    tracing::info!("notify: the command delivered");
                    return;
                }
                Err(err) => tracing::warn!("notify: the command: attempt {attempt} of {ATTEMPTS} failed: {err}"),
            }
            if attempt < ATTEMPTS {
                tokio::time::sleep(self.retry_pause * attempt).await;
            }
        }
        tracing::warn!("notify: the command could not deliver; the run's outcome is unchanged");
    }

    async fn command_once(&self, command: &str, body: &[u8]) -> anyhow::Result<()> {
        use tokio::io::AsyncWriteExt;
        let mut child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(command)
            .current_dir(&self.project_dir)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|err| anyhow::anyhow!("cannot start sh: {err}"))?;
        let mut stdin = child.stdin.take().ok_or_else(|| anyhow::anyhow!("no stdin"))?;
        let body = body.to_vec();
        let run = async move {
            // A command that does not read its stdin is its own business: not a failure.
            let _ = stdin.write_all(&body).await;
            drop(stdin);
            child.wait().await
        };
        match tokio::time::timeout(self.timeout(), run).await {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => anyhow::bail!("it exited with {status}"),
            Ok(Err(err)) => anyhow::bail!("cannot wait for it: {err}"),
            Err(_) => anyhow::bail!("it ran past {} s and was killed", self.timeout().as_secs()),
        }
    }
}

/// One POST: a 2xx answer is delivered, anything else is an error.
fn post(url: &str, body: Option<&[u8]>, timeout: Duration) -> Result<(), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .user_agent(concat!("lifeboat/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let request = agent.post(url).header("Content-Type", "application/json");
    let response = request.send(body.unwrap_or_default()).map_err(|err| err.to_string())?;
    let status = response.status();
    if status.is_success() { Ok(()) } else { Err(format!("the server answered {status}")) }
}

/// A URL as it may be printed: scheme and host only, the path and query (where tokens live) and
/// any user or password replaced by `…`. `https://hc-ping.com/UUID` shows as `https://hc-ping.com/…`.
pub fn redact(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    let hidden = !tail.trim_start_matches('/').is_empty() || authority.contains('@');
    let prefix = if scheme.is_empty() { String::new() } else { format!("{scheme}://") };
    format!("{prefix}{host}/{}", if hidden { "…" } else { "" })
}

/// `text` with every appearance of `url`, and of its path, replaced by its redacted form.
fn scrub(text: &str, url: &str) -> String {
    let mut text = text.replace(url, &redact(url));
    if let Some((_, rest)) = url.split_once("://")
        && let Some(index) = rest.find('/')
        && rest.len() > index + 1
    {
        text = text.replace(&rest[index..], "/…");
    }
    text
}

/// The host's name, as `uname -n` says it; `unknown` if it cannot be read.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length, which is passed; gethostname NUL-terminates
    // within it when the name fits.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".to_owned();
    }
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..len]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_keeps_the_host_and_hides_the_token() {
        assert_eq!(redact("https://hc-ping.com/8c5a-uuid"), "https://hc-ping.com/…");
        assert_eq!(redact("https://ntfy.example/backups?auth=secret"), "https://ntfy.example/…");
        assert_eq!(redact("http://user:pw@127.0.0.1:8080/x"), "http://127.0.0.1:8080/…");
        assert_eq!(redact("http://127.0.0.1:8080/"), "http://127.0.0.1:8080/");
        assert_eq!(redact("http://127.0.0.1:8080"), "http://127.0.0.1:8080/");
        let url = "http://127.0.0.1:9/hook/s3cr3t";
        let scrubbed = scrub(&format!("{url}: connection refused; path /hook/s3cr3t"), url);
        assert!(!scrubbed.contains("s3cr3t"), "{scrubbed}");
    }

    #[test]
    fn the_hostname_is_not_empty() {
        assert!(!hostname().is_empty());
    }
}
