//! The executor against an in-memory compose project (`crate::fake_services`), with everything
//! else real: a project directory with its `lifeboat.toml` and `data/`, the redb journal, the
//! archive writer and the data swap.
//!
//! The named tests pin one behaviour each (orders, rollbacks, retries, restore, prune, a journal
//! that cannot be written). The property test at the end drives random backups and restores into
//! random faults and a crash anywhere (a journal crash point or a service operation, possibly
//! between "stop requested" and "stopped"), recovers as `lifeboat recover` does, possibly crashing
//! during the recovery too, and checks the invariants of docs/design.md.
//!
//! A crash is a panic (`CRASH_AFTER`, or the fake's crash injection) caught around the run's
//! future: the in-memory run is dropped, the journal and the world stay, as after a kill. The
//! runs are driven on a current-thread runtime, so the thread-local `CRASH_AFTER` is the test's.

use super::{CRASH_AFTER, Executor};
use crate::config::{CONFIG_FILE, Config};
use crate::exit::Exit;
use crate::fake_services::{CrashWhen, FakeServices, Life, Op};
use crate::project::{Project, interrupted_runs};
use crate::render::now;
use crate::runs::history;
use crate::services::{NoServices, Services};
use futures_util::FutureExt;
use lifeboat_journal::{Journal, StorageBackend};
use lifeboat_machine::{BackupKind, BackupRef, Decision, Effect, Event, Outcome, Run, RunSpec, State, replay};
use proptest::prelude::*;
use std::collections::BTreeSet;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

const STACK: [&str; 4] = ["db", "cache", "app", "proxy"];

/// A project on disk: `lifeboat.toml` with the default `backup.paths = ["data"]` and
/// `backup.dir = "backups"`, a `data/` tree, and its journal.
struct Env {
    _tmp: tempfile::TempDir,
    project: Project,
    journal: Journal,
}

impl Env {
    fn new() -> Env {
        Env::with_config("")
    }

    /// As `new`, with `extra` (sections such as `[hooks]`) appended to `lifeboat.toml`.
    fn with_config(extra: &str) -> Env {
        Env::with_edit_and(|_| {}, extra)
    }

    /// [`Env::new`] with `edit` applied to the configuration first.
    fn with(edit: impl FnOnce(&mut Config)) -> Env {
        Env::with_edit_and(edit, "")
    }

    fn with_edit_and(edit: impl FnOnce(&mut Config), extra: &str) -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let mut config = Config::new("demo", "docker-compose.yml");
        edit(&mut config);
        std::fs::write(tmp.path().join(CONFIG_FILE), format!("{}\n{extra}", config.to_commented_toml())).unwrap();
        std::fs::create_dir_all(tmp.path().join("data/sub")).unwrap();
        std::fs::write(tmp.path().join("data/file"), b"before").unwrap();
        std::fs::write(tmp.path().join("data/sub/nested"), b"nested").unwrap();
        let project = Project::load(tmp.path()).unwrap();
        let journal = project.journal().unwrap();
        Env { _tmp: tmp, project, journal }
    }

    fn executor<'a, S: Services>(&'a self, services: &'a S) -> Executor<'a, S> {
        Executor { project: &self.project, journal: &self.journal, services, progress: false }
    }

    fn data(&self) -> PathBuf {
        self.project.dir.join("data")
    }

    fn archive_path(&self, id: u64) -> String {
        let ext = self.project.config.backup.extension();
        self.project.backup_dir().join(format!("demo-run{id:06}{ext}")).display().to_string()
    }

    fn backup_spec(&self) -> impl FnOnce(u64) -> RunSpec + '_ {
        |id| RunSpec::Backup { archive_path: self.archive_path(id), backup_kind: BackupKind::Manual, note: None }
    }

    /// A completed backup of the data as it is now, taken with every service stopped (nothing to
    /// stop or start): the backup a restore or prune test starts from.
    async fn backup_now(&self) -> BackupRef {
        let run = self.executor(&FakeServices::stack(&[])).start(self.backup_spec()).await.unwrap();
        assert_eq!(run.state(), State::Completed);
        self.journal.backup(run.id()).unwrap().expect("catalogued").backup_ref()
    }

    /// The files in the backup dir, by name.
    /// The archives in the backup dir (and `.partial` files); each archive must have its
    /// `NAME.sha256` sidecar, holding its hash, and no sidecar is left without its archive.
    fn backup_files(&self) -> BTreeSet<String> {
        let all: BTreeSet<String> = match std::fs::read_dir(self.project.backup_dir()) {
            Ok(dir) => dir.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect(),
            Err(_) => BTreeSet::new(),
        };
        let archives: BTreeSet<String> = all.iter().filter(|n| !n.ends_with(".sha256")).cloned().collect();
        for name in &all {
            if let Some(archive) = name.strip_suffix(".sha256") {
                assert!(archives.contains(archive), "sidecar {name} without its archive");
            }
        }
        for name in archives.iter().filter(|n| !n.ends_with(".partial")) {
            let path = self.project.backup_dir().join(name);
            let hash = crate::effects::backups::read_sidecar(&path).unwrap();
            assert_eq!(hash, Some(lifeboat_archive::sha256_file(&path).unwrap()), "the sidecar of {name}");
        }
        archives
    }

    /// The names of the project directory's entries that a restore leaves behind while it is
    /// under way (staging and aside copies).
    fn swap_leftovers(&self) -> Vec<String> {
        std::fs::read_dir(&self.project.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.contains(".lifeboat-"))
            .collect()
    }

    fn events(&self, run: &Run) -> Vec<Event> {
        self.journal.events(run.id()).unwrap()
    }
}

fn set(services: &[&str]) -> BTreeSet<String> {
    services.iter().map(|s| (*s).to_owned()).collect()
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// The effects a run's journal shows begun, by name, in order.
fn intents(events: &[Event]) -> Vec<&'static str> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Intent { effect, .. } => Some(effect.name()),
            _ => None,
        })
        .collect()
}

/// Re-hashes and reads the archive of every catalog entry through: invariant 2.
fn check_catalog(env: &Env) {
    for entry in env.journal.backups().unwrap() {
        let path = Path::new(&entry.path);
        crate::effects::backups::verify_entry(&entry, path, false)
            .unwrap_or_else(|err| panic!("backup {} does not verify: {err}", entry.id));
    }
}

/// Silences the panic messages of simulated crashes (they are expected) while alive; any other
/// panic is reported as before.
struct QuietCrashes {
    previous: Option<Arc<PanicHook>>,
}

type PanicHook = dyn Fn(&std::panic::PanicHookInfo<'_>) + Send + Sync;

impl QuietCrashes {
    fn new() -> QuietCrashes {
        let previous: Arc<PanicHook> = Arc::from(std::panic::take_hook());
        let inner = Arc::clone(&previous);
        std::panic::set_hook(Box::new(move |info| {
            let message = info
                .payload()
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| info.payload().downcast_ref::<&str>().copied())
                .unwrap_or_default();
            if !message.starts_with("simulated crash") {
                inner(info);
            }
        }));
        QuietCrashes { previous: Some(previous) }
    }
}

impl Drop for QuietCrashes {
    fn drop(&mut self) {
        // The hook cannot be changed while a failed assertion unwinds; ours then stays, and
        // passes every other panic on as before.
        if std::thread::panicking() {
            return;
        }
        if let Some(previous) = self.previous.take() {
            std::panic::set_hook(Box::new(move |info| previous(info)));
        }
    }
}

/// Runs `future`, catching a simulated crash: `Err(message)` if it panicked.
async fn crashing<T>(future: impl std::future::Future<Output = T>) -> Result<T, String> {
    AssertUnwindSafe(future).catch_unwind().await.map_err(|payload| {
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default()
    })
}

/// `lifeboat recover`, as `runs::recover::recover_all` and `runs::resume` do it: each interrupted
/// run, oldest first, gets its decision journaled, then is driven to its end. Returns the runs
/// as the executor left them.
async fn recover<S: Services>(executor: &Executor<'_, S>) -> Vec<Run> {
    let mut ended = Vec::new();
    for mut run in interrupted_runs(executor.journal).unwrap() {
        let Some(plan) = run.recovery_plan().unwrap() else { continue };
        executor.record(&mut run, plan.event(now())).await.unwrap();
        super::crash_point("recovering");
        ended.push(executor.drive(run).await.unwrap());
    }
    ended
}

// ---- backups ----

#[tokio::test(flavor = "current_thread")]
async fn a_backup_stops_the_running_services_in_stop_order_and_restarts_them_in_start_order() {
    let env = Env::new();
    // proxy is stopped: it must stay so, and never be touched.
    let fake = FakeServices::stack(&["db", "cache", "app"]);
    let run = env.executor(&fake).start(env.backup_spec()).await.unwrap();

    assert_eq!(run.state(), State::Completed, "{:?}", run.failures());
    assert_eq!(fake.logged(Op::Stop), ["app", "cache", "db"]);
    assert_eq!(fake.logged(Op::Start), ["db", "cache", "app"]);
    assert_eq!(fake.logged(Op::WaitUp), ["db", "cache", "app"]);
    assert_eq!(fake.up(), set(&["db", "cache", "app"]));
    assert_eq!(fake.life("proxy"), Life::Stopped);
    assert!(fake.stopping().is_empty());

    let events = env.events(&run);
    assert_eq!(intents(&events), ["inspect", "stop_services", "write_archive", "record_backup", "start_services"]);
    // Inspect lists the running services in stop order; the start's outcome in start order.
    assert_eq!(run.running(), Some(names(&["app", "cache", "db"]).as_slice()));
    assert!(events.iter().any(|e| matches!(e, Event::Outcome { outcome: Outcome::Started { services }, .. }
        if *services == names(&["db", "cache", "app"]))));
    assert_eq!(history::restarted(&events), Some(names(&["db", "cache", "app"])));
    // Replay equals live (invariant 5).
    assert_eq!(replay(run.id(), &events).unwrap(), run);

    // The catalog entry is the run's, its archive verifies and holds the data.
    let entry = env.journal.backup(run.id()).unwrap().expect("catalogued");
    assert_eq!(entry.path, env.archive_path(run.id()));
    assert_eq!(entry.kind, BackupKind::Manual);
    // The two data files, then the manifest and `lifeboat.toml` that make it stand alone.
    assert_eq!(entry.file_count, 4);
    check_catalog(&env);
    let manifest = crate::manifest::Manifest::read(Path::new(&entry.path)).unwrap().expect("a manifest");
    assert_eq!(manifest.run_id, run.id());
    assert_eq!(manifest.running_services, names(&["app", "cache", "db"]));
    assert_eq!(manifest.deployment_files, ["lifeboat.toml"]);
    assert_eq!(manifest.paths().map(|(_, p)| p).collect::<Vec<_>>(), ["data"]);
    assert_eq!((manifest.roots[0].file_count, manifest.roots[0].content_bytes), (2, 12));
    let archive = Path::new(&entry.path);
    assert_eq!(lifeboat_archive::read_member(archive, "paths/data/file", 1 << 20).unwrap(), b"before");
    assert_eq!(lifeboat_archive::read_member(archive, "paths/data/sub/nested", 1 << 20).unwrap(), b"nested");
    assert_eq!(env.backup_files(), set(&[&format!("demo-run{:06}.tar.gz", run.id())]));
}

#[tokio::test(flavor = "current_thread")]
async fn host_hooks_run_before_the_stop_and_after_the_start_and_a_failing_before_hook_stops_nothing() {
    let env = Env::with_config(
        "[hooks]\nbefore_backup = 'echo before >> hooks.txt'\nafter_backup = 'echo \"after $LIFEBOAT_RUN_ID $LIFEBOAT_HOOK\" >> hooks.txt'\n",
    );
    let fake = FakeServices::stack(&["db", "cache", "app"]);
    let run = env.executor(&fake).start(env.backup_spec()).await.unwrap();
    assert_eq!(run.state(), State::Completed, "{:?}", run.failures());
    let events = env.events(&run);
    assert_eq!(
        intents(&events),
        ["inspect", "run_hook", "stop_services", "write_archive", "record_backup", "start_services", "run_hook"]
    );
    let written = std::fs::read_to_string(env.project.dir.join("hooks.txt")).unwrap();
    assert_eq!(written, format!("before\nafter {} after_backup\n", run.id()));
    assert_eq!(replay(run.id(), &events).unwrap(), run);

    let env = Env::with_config("[hooks]\nbefore_backup = 'echo no space for the dump; exit 9'\n");
    let fake = FakeServices::stack(&["db", "cache", "app"]);
    let run = env.executor(&fake).start(env.backup_spec()).await.unwrap();
    assert_eq!(run.state(), State::RolledBack);
    assert_eq!(intents(&env.events(&run)), ["inspect", "run_hook"]);
    assert!(fake.log().is_empty(), "no service touched: {:?}", fake.log());
    assert_eq!(run.failures()[0].error, "hook before_backup (host) exited 9: no space for the dump");
    assert!(env.journal.backups().unwrap().is_empty());
    assert!(env.backup_files().is_empty());
}

#[tokio::test(flavor = "current_thread")]
async fn a_backup_with_nothing_running_touches_no_service() {
    let env = Env::new();
    let fake = FakeServices::stack(&[]);
    let run = env.executor(&fake).start(env.backup_spec()).await.unwrap();
    assert_eq!(run.state(), State::Completed);
    assert_eq!(run.running(), Some(&[][..]));
    assert!(fake.log().is_empty(), "{:?}", fake.log());
    assert!(fake.up().is_empty());
    check_catalog(&env);
    assert_eq!(env.journal.backups().unwrap().len(), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn a_stop_that_fails_midway_rolls_the_backup_back_and_finishes_the_stop_before_starting() {
    let env = Env::new();
    let fake = FakeServices::stack(&STACK);
    // The stop of cache is requested, then the request errors: cache is left on its way down.
    fake.fail(Op::Stop, "cache", 1, true);
    let run = env.executor(&fake).start(env.backup_spec()).await.unwrap();

    assert_eq!(run.state(), State::RolledBack);
    assert_eq!(run.failures().len(), 1);
    assert!(run.failures()[0].error.contains("injected failure: stop cache"), "{:?}", run.failures());
    // Rule 4: the stop is carried out again (waiting cache out), then everything starts.
    assert_eq!(intents(&env.events(&run)), ["inspect", "stop_services", "stop_services", "start_services"]);
    assert_eq!(fake.logged(Op::Stop), ["proxy", "app", "cache", "proxy", "app", "cache", "db"]);
    assert_eq!(fake.logged(Op::Start), ["db", "cache", "app", "proxy"]);
    assert_eq!(fake.up(), set(&STACK));
    assert!(fake.stopping().is_empty());
    // Nothing was written or catalogued.
    assert!(env.journal.backups().unwrap().is_empty());
    assert!(env.backup_files().is_empty(), "{:?}", env.backup_files());
}

#[tokio::test(flavor = "current_thread")]
async fn a_service_killed_at_the_stop_timeout_fails_the_stop_and_nothing_is_archived() {
    let env = Env::new();
    let fake = FakeServices::stack(&STACK);
    fake.edit("app", |c| c.ignores_sigterm = true);
    let run = env.executor(&fake).start(env.backup_spec()).await.unwrap();

    assert_eq!(run.state(), State::RolledBack);
    let failure = &run.failures()[0];
    assert!(matches!(failure.effect, Effect::StopServices { .. }));
    assert!(failure.error.contains("app did not stop within 30 s, so Docker killed it"), "{}", failure.error);
    // The settling stop kills nothing more: app is stopped already.
    assert_eq!(run.failures().len(), 1);
    assert_eq!(fake.up(), set(&STACK));
    assert!(env.journal.backups().unwrap().is_empty());
    assert!(env.backup_files().is_empty());
}

#[tokio::test(flavor = "current_thread")]
async fn a_start_failing_once_is_retried_by_the_settling_and_the_backup_completes() {
    let env = Env::new();
    let fake = FakeServices::stack(&STACK);
    fake.fail(Op::Start, "db", 1, false);
    let run = env.executor(&fake).start(env.backup_spec()).await.unwrap();

    // Past its point of no return (recorded), a failed start is finished, not undone: the
    // settling step is the start again, and it succeeds.
    assert_eq!(run.state(), State::Completed);
    assert_eq!(run.failures().len(), 1);
    assert_eq!(run.failures()[0].state, State::Restarting);
    assert_eq!(fake.logged(Op::Start), ["db", "db", "cache", "app", "proxy"]);
    assert_eq!(fake.up(), set(&STACK));
    assert_eq!(
        intents(&env.events(&run)),
        ["inspect", "stop_services", "write_archive", "record_backup", "start_services", "start_services"]
    );
    check_catalog(&env);
    assert!(env.journal.backup(run.id()).unwrap().is_some());
}

#[tokio::test(flavor = "current_thread")]
async fn a_service_that_never_comes_up_fails_the_run_after_three_starts_and_the_backup_stays() {
    let env = Env::new();
    let fake = FakeServices::stack(&STACK);
    fake.edit("app", |c| c.becomes_healthy = false);
    let run = env.executor(&fake).start(env.backup_spec()).await.unwrap();

    // The forward start, the settling start and its one retry (docs/design.md, rule 5).
    assert_eq!(run.state(), State::Failed);
    assert_eq!(run.failures().len(), 3);
    assert_eq!(fake.logged(Op::WaitUp).iter().filter(|s| *s == "app").count(), 3);
    // proxy depends on app: never started. The good backup is kept.
    assert_eq!(fake.up(), set(&["db", "cache", "app"]));
    assert_eq!(fake.life("proxy"), Life::Stopped);
    check_catalog(&env);
    assert!(env.journal.backup(run.id()).unwrap().is_some());
    assert!(history::failure_summary(&run).contains("FAILED"));
}

#[tokio::test(flavor = "current_thread")]
async fn the_fake_compose_up_starts_the_named_services_or_all_and_records_loaded_images() {
    let fake = FakeServices::stack(&[]);
    fake.compose_up(&names(&["db"])).await.unwrap();
    assert_eq!(fake.up(), set(&["db"]));
    fake.compose_up(&[]).await.unwrap();
    assert_eq!(fake.up(), set(&STACK));
    assert_eq!(fake.load_image(Path::new("/pkg/images/app.tar")).await.unwrap(), ["app:latest"]);
    assert_eq!(fake.images_loaded(), [PathBuf::from("/pkg/images/app.tar")]);
    assert_eq!(fake.log(), ["compose_up db", "compose_up all"]);
}

// ---- restore ----

#[tokio::test(flavor = "current_thread")]
async fn a_restore_puts_the_backup_data_back_and_the_services_as_they_were() {
    let env = Env::new();
    let backup = env.backup_now().await;
    std::fs::write(env.data().join("file"), b"after").unwrap();
    std::fs::write(env.data().join("new"), b"written since").unwrap();

    let fake = FakeServices::stack(&["db", "app"]);
    let run = env.executor(&fake).start(|_| RunSpec::Restore { backup }).await.unwrap();

    assert_eq!(run.state(), State::Completed, "{:?}", run.failures());
    assert_eq!(std::fs::read(env.data().join("file")).unwrap(), b"before");
    assert_eq!(std::fs::read(env.data().join("sub/nested")).unwrap(), b"nested");
    assert!(!env.data().join("new").exists(), "a file newer than the backup survived the restore");
    assert!(env.swap_leftovers().is_empty(), "{:?}", env.swap_leftovers());
    assert_eq!(fake.logged(Op::Stop), ["app", "db"]);
    assert_eq!(fake.logged(Op::Start), ["db", "app"]);
    assert_eq!(fake.up(), set(&["db", "app"]));
    assert_eq!(
        intents(&env.events(&run)),
        [
            "verify_archive",
            "inspect",
            "stop_services",
            "restore_data",
            "start_services",
            "verify_services",
            "commit_data"
        ]
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_zstd_backup_is_a_tar_zst_that_verifies_and_restores() {
    let env = Env::with(|config| config.backup.compression = crate::config::CompressionName::Zstd);
    let backup = env.backup_now().await;
    assert!(backup.path.ends_with(".tar.zst"), "{}", backup.path);
    let bytes = std::fs::read(&backup.path).unwrap();
    assert_eq!(bytes[..4], [0x28, 0xb5, 0x2f, 0xfd], "not a zstd frame");
    std::fs::write(env.data().join("file"), b"after").unwrap();

    let fake = FakeServices::stack(&["db"]);
    let run = env.executor(&fake).start(|_| RunSpec::Restore { backup: backup.clone() }).await.unwrap();
    assert_eq!(run.state(), State::Completed, "{:?}", run.failures());
    assert_eq!(std::fs::read(env.data().join("file")).unwrap(), b"before");
    assert_eq!(intents(&env.events(&run))[0], "verify_archive");

    // A corrupt one is refused by verification, as a .tar.gz is.
    let mut bad = bytes.clone();
    let middle = bad.len() / 2;
    bad[middle] ^= 0xff;
    std::fs::write(&backup.path, &bad).unwrap();
    let run = env.executor(&fake).start(|_| RunSpec::Restore { backup }).await.unwrap();
    assert_eq!(run.state(), State::RolledBack);
    assert!(history::archive_refused(&run));
    assert_eq!(std::fs::read(env.data().join("file")).unwrap(), b"before");
}

#[tokio::test(flavor = "current_thread")]
async fn a_corrupt_archive_fails_verification_before_any_service_or_file_is_touched() {
    let env = Env::new();
    let backup = env.backup_now().await;
    // One byte flipped in the middle of the archive.
    let mut bytes = std::fs::read(&backup.path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&backup.path, &bytes).unwrap();
    std::fs::write(env.data().join("file"), b"after").unwrap();

    let fake = FakeServices::stack(&STACK);
    let run = env.executor(&fake).start(|_| RunSpec::Restore { backup }).await.unwrap();

    assert_eq!(run.state(), State::RolledBack);
    assert_eq!(intents(&env.events(&run)), ["verify_archive"]);
    assert!(history::archive_refused(&run));
    let err = crate::runs::conclude(&run).unwrap_err();
    assert_eq!(Exit::of(&err), Exit::Integrity, "{err:#}");
    assert!(fake.log().is_empty(), "{:?}", fake.log());
    assert_eq!(fake.up(), set(&STACK));
    assert_eq!(std::fs::read(env.data().join("file")).unwrap(), b"after");
    assert!(env.swap_leftovers().is_empty());
}

// ---- prune ----

#[tokio::test(flavor = "current_thread")]
async fn a_prune_deletes_catalog_entries_and_files_without_any_service() {
    let env = Env::new();
    let old = env.backup_now().await;
    let kept = env.backup_now().await;
    let run = env.executor(&NoServices).start(|_| RunSpec::Prune { deletions: vec![old.clone()] }).await.unwrap();

    assert_eq!(run.state(), State::Completed, "{:?}", run.failures());
    let ids: Vec<u64> = env.journal.backups().unwrap().iter().map(|e| e.id).collect();
    assert_eq!(ids, [kept.backup_id]);
    assert!(!Path::new(&old.path).exists());
    assert!(Path::new(&kept.path).exists());
    check_catalog(&env);
}

#[tokio::test(flavor = "current_thread")]
async fn a_prune_interrupted_between_catalog_and_file_finishes_on_recovery() {
    let env = Env::new();
    let first = env.backup_now().await;
    let second = env.backup_now().await;
    let _quiet = QuietCrashes::new();
    // Crash points: started, intent, then inside the first deletion.
    CRASH_AFTER.set(Some(2));
    let spec = RunSpec::Prune { deletions: vec![first.clone(), second.clone()] };
    let crashed = crashing(env.executor(&NoServices).start(|_| spec)).await;
    assert_eq!(crashed.err().as_deref(), Some("simulated crash at delete_backup:catalog_removed"));
    // The first entry is gone, its file is not: a stray file, never an entry without its file.
    assert!(env.journal.backup(first.backup_id).unwrap().is_none());
    assert!(Path::new(&first.path).exists());

    let ended = recover(&env.executor(&NoServices)).await;
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].state(), State::Completed);
    assert!(env.journal.backups().unwrap().is_empty());
    assert!(env.backup_files().is_empty(), "{:?}", env.backup_files());
}

// ---- crashes at named points ----

#[tokio::test(flavor = "current_thread")]
async fn a_stop_left_in_progress_by_a_crash_is_finished_before_the_start_even_unseen_by_the_daemon() {
    let env = Env::new();
    let fake = FakeServices::stack(&STACK);
    // The daemon no longer has the kill events: start and wait_up cannot tell a container on its
    // way down from a running one. Only recovery's own stop (rule 4) can.
    fake.forget_stop_events();
    // Operations: stop proxy, stop app (crash once it is requested).
    fake.crash_at(1, CrashWhen::Midway);
    let _quiet = QuietCrashes::new();
    let crashed = crashing(env.executor(&fake).start(env.backup_spec())).await;
    assert_eq!(crashed.err().as_deref(), Some("simulated crash in stop app"));
    assert_eq!(fake.stopping(), set(&["app"]));

    let ended = recover(&env.executor(&fake)).await;
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].state(), State::RolledBack);
    assert_eq!(fake.up(), set(&STACK));
    assert!(fake.stopping().is_empty(), "{:?} left on the way down", fake.stopping());
    assert!(interrupted_runs(&env.journal).unwrap().is_empty());
}

#[tokio::test(flavor = "current_thread")]
async fn a_backup_crashed_at_every_journal_point_recovers_to_the_invariants() {
    let _quiet = QuietCrashes::new();
    let mut crashes = 0;
    for point in 0.. {
        let env = Env::new();
        let fake = FakeServices::stack(&["db", "cache", "proxy"]);
        CRASH_AFTER.set(Some(point));
        let result = crashing(env.executor(&fake).start(env.backup_spec())).await;
        CRASH_AFTER.set(None);
        let Err(message) = result else {
            // Past the last crash point: the run completed.
            assert!(point > 10, "only {point} crash points in a backup");
            break;
        };
        crashes += 1;
        assert!(message.starts_with("simulated crash at"), "{message}");
        let ended = recover(&env.executor(&fake)).await;
        let runs = env.journal.runs().unwrap();
        assert_eq!(runs.len(), 1);
        let run = replay(runs[0], &env.journal.events(runs[0]).unwrap()).unwrap();
        assert!(run.is_ended(), "point {point}: {:?}", run.state());
        if let Some(live) = ended.first() {
            assert_eq!(*live, run, "point {point}: replay differs from live");
        }
        assert_eq!(fake.up(), set(&["db", "cache", "proxy"]), "point {point}");
        check_catalog(&env);
        let files = env.backup_files();
        match run.state() {
            State::Completed => assert_eq!(files.len(), 1, "point {point}: {files:?}"),
            State::RolledBack => assert!(files.is_empty(), "point {point}: {files:?}"),
            other => panic!("point {point}: run ended {other}"),
        }
        assert_eq!(env.journal.backups().unwrap().len(), files.len(), "point {point}");
        assert!(recover(&env.executor(&fake)).await.is_empty());
    }
    // started, then intent/effect/outcome of five effects.
    assert_eq!(crashes, 16);
}

// ---- a journal that cannot be written ----

/// A journal "disk" in memory that can be made full: every write fails while it is.
#[derive(Clone, Debug, Default)]
struct FullableDisk {
    bytes: Arc<Mutex<Vec<u8>>>,
    full: Arc<std::sync::atomic::AtomicBool>,
}

impl FullableDisk {
    fn set_full(&self, full: bool) {
        self.full.store(full, std::sync::atomic::Ordering::SeqCst);
    }

    fn check(&self) -> std::io::Result<()> {
        if self.full.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(std::io::Error::new(std::io::ErrorKind::StorageFull, "no space left on device"));
        }
        Ok(())
    }
}

impl StorageBackend for FullableDisk {
    fn len(&self) -> std::io::Result<u64> {
        Ok(self.bytes.lock().unwrap().len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        let bytes = self.bytes.lock().unwrap();
        let start = usize::try_from(offset).map_err(std::io::Error::other)?;
        let source = bytes
            .get(start..start + out.len())
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "read past the end"))?;
        out.copy_from_slice(source);
        Ok(())
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.check()?;
        self.bytes.lock().unwrap().resize(usize::try_from(len).map_err(std::io::Error::other)?, 0);
        Ok(())
    }

    fn sync_data(&self) -> std::io::Result<()> {
        self.check()
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.check()?;
        let mut bytes = self.bytes.lock().unwrap();
        let start = usize::try_from(offset).map_err(std::io::Error::other)?;
        if bytes.len() < start + data.len() {
            bytes.resize(start + data.len(), 0);
        }
        bytes[start..start + data.len()].copy_from_slice(data);
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_journal_that_cannot_be_written_stops_the_run_with_the_services_started_again() {
    let env = Env::new();
    let disk = FullableDisk::default();
    let journal = Journal::open_with_backend(disk.clone(), "journal.redb").unwrap();
    let fake = FakeServices::stack(&STACK);
    // The disk fills up as the last service stops: the stop's outcome cannot be journaled.
    fake.after("stop db", {
        let disk = disk.clone();
        move || disk.set_full(true)
    });
    let executor = Executor { project: &env.project, journal: &journal, services: &fake, progress: false };
    let err = executor.start(env.backup_spec()).await.unwrap_err();

    assert_eq!(Exit::of(&err), Exit::NeedsRecovery, "{err:#}");
    assert!(format!("{err:#}").contains("run 'lifeboat recover'"), "{err:#}");
    // Started again, unjournaled, so a full disk does not leave them down.
    assert_eq!(fake.up(), set(&STACK));
    assert_eq!(fake.logged(Op::Start), ["db", "cache", "app", "proxy"]);
    assert!(env.backup_files().is_empty());

    // Space comes back; the process restarts (the journal reopens) and recovers.
    disk.set_full(false);
    drop(journal);
    let journal = Journal::open_with_backend(disk.clone(), "journal.redb").unwrap();
    let interrupted = interrupted_runs(&journal).unwrap();
    assert_eq!(interrupted.len(), 1);
    let plan = interrupted[0].recovery_plan().unwrap().unwrap();
    assert_eq!(plan.decision, Decision::RollBack);
    assert_eq!(plan.interrupted_in, State::Stopping);
    let executor = Executor { project: &env.project, journal: &journal, services: &fake, progress: false };
    let ended = recover(&executor).await;
    assert_eq!(ended[0].state(), State::RolledBack);
    assert_eq!(fake.up(), set(&STACK));
    assert!(interrupted_runs(&journal).unwrap().is_empty());
}

// ---- the property test ----

#[derive(Clone, Copy, Debug)]
enum Kind {
    Backup,
    Restore,
}

/// Where a case crashes, if it does.
#[derive(Clone, Copy, Debug)]
enum Crash {
    None,
    /// At the journal crash point after this many others (`CRASH_AFTER`).
    Journal(u32),
    /// In the fake's operation this many operations from the start of the run.
    Service(u32, CrashWhen),
}

#[derive(Clone, Debug)]
struct Fault {
    op: Op,
    service: usize,
    /// Fails once, else always.
    once: bool,
    /// For a stop: after the stop was requested.
    midway: bool,
}

#[derive(Clone, Debug)]
struct Case {
    kind: Kind,
    running: Vec<bool>,
    faults: Vec<Fault>,
    crash: Crash,
    /// A crash during the first recovery too.
    recovery_crash: Crash,
    /// Stops left in progress by the crash finish before recovery runs (time passed).
    stops_finish: bool,
    /// The daemon has forgotten the kill events of stops in progress.
    blind: bool,
    /// The crash falls inside the archive write: a stale `.partial` is left.
    stale_partial: bool,
}

fn crash() -> impl Strategy<Value = Crash> {
    let when = prop_oneof![Just(CrashWhen::Before), Just(CrashWhen::Midway), Just(CrashWhen::After)];
    prop_oneof![
        1 => Just(Crash::None),
        3 => (0..24u32).prop_map(Crash::Journal),
        3 => (0..14u32, when).prop_map(|(nth, when)| Crash::Service(nth, when)),
    ]
}

fn fault() -> impl Strategy<Value = Fault> {
    let op = prop_oneof![Just(Op::Stop), Just(Op::Start), Just(Op::WaitUp)];
    (op, 0..4usize, prop::bool::weighted(0.8), any::<bool>()).prop_map(|(op, service, once, midway)| Fault {
        op,
        service,
        once,
        midway,
    })
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop_oneof![2 => Just(Kind::Backup), 1 => Just(Kind::Restore)],
        prop::collection::vec(any::<bool>(), 4),
        prop::collection::vec(fault(), 0..=2),
        crash(),
        prop_oneof![3 => Just(Crash::None), 1 => crash()],
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(kind, running, faults, crash, recovery_crash, stops_finish, blind, stale_partial)| Case {
            kind,
            running,
            faults,
            crash,
            recovery_crash,
            stops_finish,
            blind,
            stale_partial,
        })
}

impl Case {
    fn arm(&self, crash: Crash, fake: &FakeServices) {
        match crash {
            Crash::None => {}
            Crash::Journal(n) => CRASH_AFTER.set(Some(n)),
            Crash::Service(n, when) => fake.crash_at(n, when),
        }
    }

    fn disarm(fake: &FakeServices) {
        CRASH_AFTER.set(None);
        fake.no_crash();
    }

    async fn check(&self) {
        let env = Env::new();
        let running: Vec<&str> = STACK.iter().zip(&self.running).filter(|(_, r)| **r).map(|(s, _)| *s).collect();
        let fake = FakeServices::stack(&running);
        // A restore needs a backup: taken cleanly first, then the data changes.
        let backup = match self.kind {
            Kind::Backup => None,
            Kind::Restore => {
                let backup = env.backup_now().await;
                std::fs::write(env.data().join("file"), b"after").unwrap();
                Some(backup)
            }
        };
        if self.blind {
            fake.forget_stop_events();
        }
        for f in &self.faults {
            fake.fail(f.op, STACK[f.service], if f.once { 1 } else { u32::MAX }, f.midway);
        }

        // The run, crashing where the case says.
        self.arm(self.crash, &fake);
        let executor = env.executor(&fake);
        let result = match &backup {
            None => crashing(executor.start(env.backup_spec())).await,
            Some(backup) => crashing(executor.start(|_| RunSpec::Restore { backup: backup.clone() })).await,
        };
        Self::disarm(&fake);
        let live = match result {
            Ok(run) => Some(run.unwrap()),
            Err(message) => {
                assert!(message.starts_with("simulated crash"), "a real panic: {message}");
                None
            }
        };
        let id = env.journal.last_run_id().unwrap().unwrap();

        if live.is_none() {
            let run = replay(id, &env.journal.events(id).unwrap()).unwrap();
            // A kill inside the archive writer leaves its `.partial` behind.
            if let (true, Some(Effect::WriteArchive { path })) = (self.stale_partial, run.in_flight())
                && !Path::new(path).exists()
            {
                let partial = lifeboat_archive::partial_path(Path::new(path));
                // The writer had made the backup dir, as it does first.
                std::fs::create_dir_all(partial.parent().unwrap()).unwrap();
                std::fs::write(partial, b"half an archive").unwrap();
            }
            if self.stops_finish {
                fake.finish_stops();
            }
            // Recovery, itself possibly crashing, then recovery again.
            self.arm(self.recovery_crash, &fake);
            let first = crashing(recover(&executor)).await;
            Self::disarm(&fake);
            if let Err(message) = first {
                assert!(message.starts_with("simulated crash"), "a real panic: {message}");
            }
            recover(&executor).await;
        }

        // (3) and (4): nothing left to recover; every run ended; replay equals live.
        assert!(recover(&executor).await.is_empty(), "a second recovery found work");
        for run_id in env.journal.runs().unwrap() {
            let run = replay(run_id, &env.journal.events(run_id).unwrap()).unwrap();
            assert!(run.is_ended(), "run {run_id} is {}", run.state());
        }
        let run = replay(id, &env.journal.events(id).unwrap()).unwrap();
        if let Some(live) = &live {
            assert_eq!(*live, run, "replay differs from live");
        }

        // (1): services as before, none on its way down; only a Failed run may leave them
        // otherwise, and only after the retry of a settling step failed too.
        if run.state() == State::Failed {
            assert!(fake.failures_fired() >= 2, "failed with {} injected failures", fake.failures_fired());
        } else {
            assert_eq!(fake.up(), set(&running), "services differ from before the run ({})", run.state());
            assert!(fake.stopping().is_empty(), "{:?} left on the way down", fake.stopping());
        }

        // (2): every entry verifies, no `.partial`, no archive without its entry.
        check_catalog(&env);
        let catalogued: BTreeSet<String> = env
            .journal
            .backups()
            .unwrap()
            .iter()
            .map(|e| Path::new(&e.path).file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(env.backup_files(), catalogued, "files in the backup dir differ from the catalog");
        match (self.kind, run.state()) {
            (Kind::Backup, State::Completed) => assert!(env.journal.backup(id).unwrap().is_some()),
            (Kind::Backup, State::RolledBack) => assert!(env.journal.backup(id).unwrap().is_none()),
            (Kind::Restore, State::Completed) => {
                assert_eq!(std::fs::read(env.data().join("file")).unwrap(), b"before");
                assert!(env.swap_leftovers().is_empty(), "{:?}", env.swap_leftovers());
            }
            (Kind::Restore, State::RolledBack) => {
                assert_eq!(std::fs::read(env.data().join("file")).unwrap(), b"after");
                assert!(env.swap_leftovers().is_empty(), "{:?}", env.swap_leftovers());
            }
            (_, State::Failed) => {}
            (_, other) => panic!("the run ended {other}"),
        }
    }
}

fn proptest_config() -> ProptestConfig {
    let cases = std::env::var("LIFEBOAT_PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64);
    ProptestConfig { cases, max_shrink_iters: 512, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(proptest_config())]

    #[test]
    fn runs_crashed_anywhere_with_faults_recover_to_the_invariants(case in case()) {
        let _quiet = QuietCrashes::new();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(case.check());
    }
}
