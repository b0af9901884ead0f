//! What a run's journal says, each fold over its events written once: downtime, restart order,
//! step timings, the timeline of `journal show`, how it ended, and the catalog questions that
//! depend on how runs ended.

use crate::render;
use lifeboat_journal::{BackupEntry, Journal};
use lifeboat_machine::{BackupKind, Effect, Event, Outcome, Run, RunKind, State, Timestamp, replay};

/// How a run ended, in the words of the JSON `outcome` fields.
pub fn outcome(run: &Run) -> &'static str {
    match run.state() {
        State::Completed => "completed",
        State::RolledBack => "rolled_back",
        State::Failed => "failed",
        _ => "interrupted",
    }
}

/// The services the run's last successful start brought up, in the order they came up. `None`
/// for journals written before starts reported their order.
pub fn restarted(events: &[Event]) -> Option<Vec<String>> {
    events.iter().rev().find_map(|event| match event {
        Event::Outcome { outcome: Outcome::Started { services }, .. } => Some(services.clone()),
        _ => None,
    })
}

/// Service downtime: the intent to stop the first service to the outcome of the last start.
pub fn downtime_ms(events: &[Event]) -> Option<i64> {
    let stop = events.iter().find_map(|e| match e {
        Event::Intent { at, effect: Effect::StopServices { services } } if !services.is_empty() => Some(*at),
        _ => None,
    })?;
    let mut last_start_intent = false;
    let mut up = None;
    for event in events {
        match event {
            Event::Intent { effect, .. } => {
                last_start_intent = matches!(effect, Effect::StartServices { .. } | Effect::ComposeUp { .. })
            }
            Event::Outcome { at, outcome: Outcome::Done | Outcome::Started { .. } } if last_start_intent => {
                up = Some(*at)
            }
            _ => {}
        }
    }
    Some(up?.0 - stop.0)
}

/// Where a backup's time went (docs/json.md, `backup`): the parts of its downtime, and the
/// archive step wherever it fell (inside the downtime in stop mode, after it in snapshot mode).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DowntimeParts {
    pub stop_ms: i64,
    /// The sync of the mirror with the services stopped (0 in stop mode).
    pub sync_ms: i64,
    /// Starting the services until they were up (and healthy).
    pub start_ms: i64,
}

/// How long a run's steps took, added up by state: (downtime parts, archive, presync).
pub fn backup_times(events: &[Event]) -> (DowntimeParts, i64, i64) {
    let (mut parts, mut archive, mut presync) = (DowntimeParts::default(), 0, 0);
    for row in timeline(events) {
        let Some(ms) = row.duration_ms else { continue };
        match row.state {
            State::Stopping => parts.stop_ms += ms,
            State::Snapshotting => parts.sync_ms += ms,
            State::Restarting => parts.start_ms += ms,
            State::Archiving => archive += ms,
            State::Presyncing => presync += ms,
            _ => {}
        }
    }
    (parts, archive, presync)
}

/// When the mirror last became a consistent snapshot (a stopped sync that succeeded), `None`
/// when no sync ever did, or one began since (a presync, or a sync a crash cut short): the
/// newest run that synced decides.
pub fn mirror_consistent_at(journal: &Journal) -> anyhow::Result<Option<Timestamp>> {
    for id in journal.runs()?.into_iter().rev() {
        let events = journal.events(id)?;
        let mut last: Option<Option<Timestamp>> = None;
        let mut stopped_sync = false;
        for event in &events {
            match event {
                Event::Intent { effect: Effect::SyncMirror { stopped, .. }, .. } => {
                    stopped_sync = *stopped;
                    last = Some(None);
                }
                Event::Intent { .. } => stopped_sync = false,
                Event::Outcome { at, outcome: Outcome::MirrorSynced { .. } } if stopped_sync => last = Some(Some(*at)),
                _ => {}
            }
        }
        if let Some(at) = last {
            return Ok(at);
        }
    }
    Ok(None)
}

/// How long one step took, from its intent to its outcome.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct StepTiming {
    pub step: String,
    pub ms: i64,
}

/// How long each effect took, in order.
pub fn step_timings(events: &[Event]) -> Vec<StepTiming> {
    timeline(events)
        .iter()
        .filter_map(|row| Some(StepTiming { step: row.step?.to_owned(), ms: row.duration_ms? }))
        .collect()
}

/// One line of a run's timeline.
#[derive(Clone, Debug)]
pub struct Row<'e> {
    pub seq: usize,
    pub event: &'e Event,
    /// The state the run was in when the event happened (for an outcome: the state of its step).
    pub state: State,
    /// For an outcome: the effect it ended.
    pub step: Option<&'static str>,
    /// For an outcome: how long its effect took.
    pub duration_ms: Option<i64>,
}

/// The timeline of a run: one fold, knowing the state each event happened in. Events that do
/// not replay (see `lifeboat journal verify`) show as `failed`.
pub fn timeline(events: &[Event]) -> Vec<Row<'_>> {
    let mut rows = Vec::with_capacity(events.len());
    let mut run: Option<Run> = None;
    let mut intent: Option<(&'static str, i64)> = None;
    for (seq, event) in events.iter().enumerate() {
        let state = match (&mut run, event) {
            (None, _) if event.started_spec().is_some() => {
                run = Run::from_started(0, event).ok();
                run.as_ref().map_or(State::Failed, Run::state)
            }
            (Some(current), _) => {
                let before = current.state();
                if current.apply(event).is_err() {
                    run = None;
                }
                before
            }
            (None, _) => State::Failed,
        };
        let (step, duration_ms) = match event {
            Event::Intent { at, effect } => {
                intent = Some((effect.name(), at.0));
                (None, None)
            }
            Event::Outcome { at, .. } => {
                intent.take().map_or((None, None), |(step, start)| (Some(step), Some(at.0 - start)))
            }
            _ => (None, None),
        };
        rows.push(Row { seq, event, state, step, duration_ms });
    }
    rows
}

/// One paragraph for an unsuccessful run: what failed, how it ended, what to do.
pub fn failure_summary(run: &Run) -> String {
    // Journaled, or received while the archive writer ran (which then failed the same way).
    let cancelled = crate::signals::cancelled_by(run);
    let mut text = match (run.state(), cancelled) {
        (State::RolledBack, Some(signal)) => {
            format!("{} run {} was cancelled by {signal} and rolled back", run.kind(), run.id())
        }
        (State::RolledBack, None) => format!("{} run {} failed and was rolled back", run.kind(), run.id()),
        (State::Failed, _) => {
            format!("{} run {} FAILED and could not be rolled back completely", run.kind(), run.id())
        }
        (other, _) => format!("{} run {} stopped while {other}", run.kind(), run.id()),
    };
    for failure in run.failures() {
        text.push_str(&format!("\n  {} ({}): {}", failure.state, failure.effect.name(), failure.error));
    }
    text.push_str(match (run.state(), cancelled) {
        (State::RolledBack, Some(_)) => "\nservices are as they were before the run",
        (State::RolledBack, None) => "\nservices are as they were before the run; fix the cause above and run it again",
        (State::Failed, _) => {
            "\nsee 'lifeboat journal show' for every step; bring the services named above up by hand, then run 'lifeboat status'"
        }
        _ => "",
    });
    text
}

/// Whether the run ended because its archive failed verification (before anything was touched).
pub fn archive_refused(run: &Run) -> bool {
    run.failures().first().is_some_and(|f| matches!(f.effect, Effect::VerifyArchive { .. }))
}

/// The newest pre-upgrade backup whose upgrade run completed: what `rollback` goes back to by
/// default, and what `prune` never deletes.
pub fn last_upgrade_backup(journal: &Journal) -> anyhow::Result<Option<BackupEntry>> {
    let mut entries: Vec<BackupEntry> =
        journal.backups()?.into_iter().filter(|e| e.kind == BackupKind::PreUpgrade).collect();
    entries.sort_by_key(|e| std::cmp::Reverse(e.id));
    for entry in entries {
        let events = journal.events(entry.run_id)?;
        if replay(entry.run_id, &events).is_ok_and(|run| run.state() == State::Completed) {
            return Ok(Some(entry));
        }
    }
    Ok(None)
}

/// Records how the last backup ended in the settings (`status`, `auto-backup status`). Best
/// effort: the run itself is already journaled, and this is only a summary of it.
pub fn note_last_backup(journal: &Journal, run: &Run) {
    if run.kind() != RunKind::Backup || !run.is_ended() {
        return;
    }
    let noted = journal.update_settings(|s| {
        s.last_backup_at = Some(run.last_event_at());
        s.last_backup_outcome = Some(run.state().as_str().to_owned());
    });
    if let Err(err) = noted {
        tracing::warn!("could not note the last backup in the settings: {err}");
    }
}

/// `journal show`'s detail column for one row.
pub fn detail(row: &Row<'_>) -> String {
    render::event_detail(row.event)
}

/// The step timings of an upgrade or rollback report, one line each.
pub fn write_steps(out: &mut dyn std::io::Write, steps: &[StepTiming]) -> std::io::Result<()> {
    for step in steps {
        writeln!(out, "  {:<19} {}", step.step, render::duration_ms(step.ms))?;
    }
    Ok(())
}

/// The report lines of the `after_*` hooks that failed, one each.
pub fn write_hook_failures(out: &mut dyn std::io::Write, failures: &[String]) -> std::io::Result<()> {
    for failure in failures {
        writeln!(out, "  HOOK FAILED {failure}")?;
    }
    Ok(())
}

/// Exit 6 when an `after_*` hook failed: what the run did (`done`, "backup 12") stays done.
pub fn hook_failure_exit(done: &str, failures: &[String]) -> anyhow::Result<()> {
    if failures.is_empty() {
        return Ok(());
    }
    Err(crate::exit::Exit::HookFailed
        .wrap(anyhow::anyhow!("{done} completed, but a hook after it failed: {}", failures.join("; "))))
}
