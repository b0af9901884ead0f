//! `[metrics] file`: the project's figures as Prometheus text-format gauges, for node_exporter's
//! textfile collector, rewritten atomically after every run; `status --json` carries the same
//! figures (docs/json.md, "status"; README, "Monitoring").
//!
//! The figures are one fold over the journal ([`Figures::gather`]), so the file and `status` can
//! never disagree. Prune runs (retention after a scheduled backup) are left out of the run
//! figures: the last run is the last backup, upgrade, restore or rollback.

use crate::project::Project;
use crate::render;
use anyhow::Context;
use lifeboat_journal::Journal;
use lifeboat_machine::{RunKind, State, Timestamp, replay};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The project's figures (JSON: add fields, never rename).
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Figures {
    /// Per run kind, when its last completed run ended.
    pub last_success_at: BTreeMap<&'static str, String>,
    /// Per run kind, when its last run that did not complete (rolled back or failed) ended.
    pub last_failure_at: BTreeMap<&'static str, String>,
    /// The last ended run (not a prune): its kind, outcome, duration and downtime.
    pub last_run: Option<LastRun>,
    /// The size of the newest backup in the catalog.
    pub last_archive_size_bytes: Option<u64>,
    /// Backups in the catalog.
    pub backups: u64,
    /// Runs waiting for `lifeboat recover`.
    pub interrupted_runs: u64,
    /// Per `[[remote]]`: catalogued backups not copied there yet.
    pub copies_pending: BTreeMap<String, u64>,
    #[serde(skip)]
    success_ms: BTreeMap<&'static str, i64>,
    #[serde(skip)]
    failure_ms: BTreeMap<&'static str, i64>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LastRun {
    pub run_id: u64,
    pub kind: &'static str,
    pub outcome: &'static str,
    pub duration_ms: i64,
    /// 0 when the run stopped nothing.
    pub downtime_ms: i64,
}

impl Figures {
    /// The figures the journal holds now, with the pending copies of `config`'s remotes.
    pub fn gather(journal: &Journal, project: &Project) -> anyhow::Result<Figures> {
        let mut figures = Figures::default();
        let mut last: Option<(Timestamp, LastRun)> = None;
        for id in journal.runs()? {
            let events = journal.events(id)?;
            let Ok(run) = replay(id, &events) else { continue };
            if !run.is_ended() {
                figures.interrupted_runs += 1;
                continue;
            }
            if run.kind() == RunKind::Prune {
                continue;
            }
            let (kind, ended) = (run.kind().as_str(), run.last_event_at());
            let map = if run.state() == State::Completed { &mut figures.success_ms } else { &mut figures.failure_ms };
            let entry = map.entry(kind).or_insert(ended.0);
            *entry = (*entry).max(ended.0);
            // A copy shipped after a backup is not the run whose downtime an operator watches.
            if run.kind() != RunKind::Ship && last.as_ref().is_none_or(|(at, _)| ended >= *at) {
                let row = LastRun {
                    run_id: id,
                    kind,
                    outcome: crate::runs::history::outcome(&run),
                    duration_ms: ended.0 - run.started_at().0,
                    downtime_ms: crate::runs::history::downtime_ms(&events).unwrap_or(0),
                };
                last = Some((ended, row));
            }
        }
        figures.last_run = last.map(|(_, row)| row);
        figures.last_success_at =
            figures.success_ms.iter().map(|(k, ms)| (*k, render::rfc3339(Timestamp(*ms)))).collect();
        figures.last_failure_at =
            figures.failure_ms.iter().map(|(k, ms)| (*k, render::rfc3339(Timestamp(*ms)))).collect();
        let backups = journal.backups()?;
        figures.backups = backups.len() as u64;
        figures.last_archive_size_bytes = backups.iter().max_by_key(|b| (b.created_at, b.id)).map(|b| b.size_bytes);
        figures.copies_pending = crate::runs::ship::pending_counts(project, journal)?.into_iter().collect();
        Ok(figures)
    }

    /// The Prometheus text format (version 0.0.4) of these figures for `project`.
    pub fn to_prometheus(&self, project: &str) -> String {
        let project = escape_label(project);
        let mut out = String::new();
        let mut gauge = |name: &str, help: &str, samples: Vec<(String, String)>| {
            out.push_str(&format!("# HELP lifeboat_{name} {help}\n# TYPE lifeboat_{name} gauge\n"));
            for (labels, value) in samples {
                out.push_str(&format!("lifeboat_{name}{{project=\"{project}\"{labels}}} {value}\n"));
            }
        };
        let per_kind = |map: &BTreeMap<&'static str, i64>| {
            map.iter().map(|(kind, ms)| (format!(",kind=\"{kind}\""), seconds(*ms))).collect::<Vec<_>>()
        };
        gauge(
            "last_success_timestamp_seconds",
            "When the last completed run of each kind ended, in Unix seconds.",
            per_kind(&self.success_ms),
        );
        gauge(
            "last_failure_timestamp_seconds",
            "When the last run of each kind that did not complete ended, in Unix seconds.",
            per_kind(&self.failure_ms),
        );
        let last = |f: fn(&LastRun) -> String| self.last_run.iter().map(|r| (String::new(), f(r))).collect();
        gauge("last_run_duration_seconds", "How long the last run took.", last(|r| seconds(r.duration_ms)));
        gauge(
            "last_run_downtime_seconds",
            "How long the last run kept services down.",
            last(|r| seconds(r.downtime_ms)),
        );
        gauge(
            "last_run_success",
            "1 if the last run completed, 0 if it did not.",
            last(|r| u8::from(r.outcome == "completed").to_string()),
        );
        gauge(
            "last_archive_size_bytes",
            "The size of the newest backup's archive.",
            self.last_archive_size_bytes.iter().map(|n| (String::new(), n.to_string())).collect(),
        );
        gauge("backups", "Backups in the catalog.", vec![(String::new(), self.backups.to_string())]);
        gauge(
            "interrupted_runs",
            "Runs waiting for 'lifeboat recover'.",
            vec![(String::new(), self.interrupted_runs.to_string())],
        );
        gauge(
            "copies_pending",
            "Backups not yet copied to each remote.",
            self.copies_pending
                .iter()
                .map(|(remote, n)| (format!(",remote=\"{}\"", escape_label(remote)), n.to_string()))
                .collect(),
        );
        out
    }
}

/// Milliseconds as seconds with three decimals.
fn seconds(ms: i64) -> String {
    format!("{:.3}", ms as f64 / 1000.0)
}

/// A label value as the text format wants it: backslash, double quote and newline escaped.
fn escape_label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Where `[metrics] file` points, if set.
pub fn metrics_path(project: &Project) -> Option<PathBuf> {
    project.config.metrics.file.as_ref().map(|file| project.dir.join(file))
}

/// Rewrites the metrics file, if one is configured, from the journal. Best effort: a run is never
/// failed by its metrics; a problem is logged.
pub fn write_after_run(project: &Project, journal: &Journal) {
    let Some(path) = metrics_path(project) else { return };
    let written = Figures::gather(journal, project)
        .and_then(|figures| write_atomically(&path, &figures.to_prometheus(&project.config.project.name)));
    if let Err(err) = written {
        tracing::warn!("could not write the metrics file {}: {err:#}", path.display());
    }
}

/// Writes `text` to `path` so a reader sees the old file or the new one, never a torn one: a
/// temporary file beside it, fsynced, renamed over it, the directory fsynced. Mode 0644: the
/// figures are no secret, and the collector usually runs as another user.
pub fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = crate::fsutil::parent(path);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // node_exporter reads only `*.prom`: the temporary name ends otherwise.
    let temp = dir.join(format!(".{name}.lifeboat-tmp"));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&temp)
        .with_context(|| format!("cannot create {}", temp.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", temp.display()))?;
    drop(file);
    std::fs::rename(&temp, path).with_context(|| format!("cannot rename {} to {}", temp.display(), path.display()))?;
    crate::fsutil::fsync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_format_has_help_type_and_labelled_samples() {
        let mut figures =
            Figures { backups: 2, interrupted_runs: 1, last_archive_size_bytes: Some(1234), ..Figures::default() };
        figures.success_ms.insert("backup", 1_764_122_400_123);
        figures.last_run =
            Some(LastRun { run_id: 3, kind: "backup", outcome: "completed", duration_ms: 4500, downtime_ms: 2100 });
        let text = figures.to_prometheus("de\"mo");
        assert!(
            text.contains(
                "lifeboat_last_success_timestamp_seconds{project=\"de\\\"mo\",kind=\"backup\"} 1764122400.123\n"
            ),
            "{text}"
        );
        assert!(text.contains("lifeboat_last_run_downtime_seconds{project=\"de\\\"mo\"} 2.100\n"), "{text}");
        assert!(text.contains("lifeboat_backups{project=\"de\\\"mo\"} 2\n"), "{text}");
        assert!(text.contains("# TYPE lifeboat_interrupted_runs gauge\n"), "{text}");
        // No failure yet: the family is declared with no sample.
        assert!(!text.contains("lifeboat_last_failure_timestamp_seconds{"), "{text}");
    }

    #[test]
    fn the_file_is_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lifeboat.prom");
        write_atomically(&path, "a 1\n").unwrap();
        write_atomically(&path, "b 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "b 2\n");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1, "no temporary file left: {names:?}");
    }
}
