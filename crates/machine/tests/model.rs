//! The model-based property test of the run machine.
//!
//! A case is a scenario: the services running at the start, a sequence of operations (backups,
//! upgrades to a healthy v2 or a broken v3, restores, rollbacks, prunes, copies of a catalogued
//! backup shipped to an S3 or a directory remote, prunes of catalogued copies (any subset of one
//! remote's or of all, as a remote's retention would pick them), application writes and manual
//! service toggles between runs), seeded effect failures, an operator's cancel (a signal) before
//! some effect, and a seed for crashes during recovery. The simulated Docker knows a stop that
//! was requested and has not finished: the container still reports running, a start leaves it to
//! exit, a health check passes it; only a second stop waits it out (see `sim`).
//!
//! For each scenario a probe pass runs it without a crash and counts its crash points (journal
//! appends and effect micro-steps, see `sim`). Then, for every point, the scenario runs again and
//! crashes there; `recover` runs, itself crashing at a point drawn from the seed (possibly twice),
//! and runs again; the remaining operations follow. After every run or recovery that ends, the
//! oracle checks invariants 1-6 (ARCHITECTURE.md); after every micro-step it checks invariants 2
//! and 6. From each crash, a clean recovery and a recovery that crashes and recovers again (both
//! without injected failures) must leave the same world. The probe pass runs twice and must give
//! the same journal and world (determinism).
//!
//! `LIFEBOAT_PROPTEST_CASES` sets the number of cases (default 2000). The default seed is fixed,
//! so CI runs the same cases every time; `LIFEBOAT_PROPTEST_SEED` picks other ones. A failing case
//! is shrunk and saved under `proptest-regressions/`, and replayed first on every later run.

mod sim;

use lifeboat_machine::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, RngSeed};
use sim::*;

#[derive(Clone, Debug)]
enum Op {
    /// A backup in stop mode, or in snapshot mode.
    Backup {
        snapshot: bool,
    },
    /// Upgrade to a package that becomes healthy (v2) or never does (v3).
    Upgrade {
        healthy: bool,
    },
    /// Restore the catalogued backup at this index (modulo the catalog size).
    Restore(usize),
    /// Roll back to the pre-upgrade backup of the last upgrade.
    Rollback,
    /// Prune the oldest backups, as many as this (modulo the catalog size), keeping the newest.
    Prune(usize),
    /// Ship the catalogued backup at this index (modulo the catalog size) to `REMOTES[remote]`
    /// (modulo their number).
    Ship {
        backup: usize,
        remote: usize,
    },
    /// Prune catalogued copies (`RunSpec::PruneCopies`): of `REMOTES[remote]` only, or of every
    /// remote; of those n copies, the non-empty subset number `pick` modulo 2^n - 1 (the bits of
    /// the subset's mask: `1 + pick % (2^n - 1)`).
    /// `faults`: (effect number, micro-steps) of this run's effects that fail, as [`Fault`]
    /// (the scenario's faults rarely reach a run this late, or an effect this early).
    PruneCopies {
        remote: Option<usize>,
        pick: u32,
        faults: Vec<(usize, usize)>,
    },
    AppWrite,
    Toggle(usize),
}

#[derive(Clone, Debug)]
struct Fault {
    /// The run (1-based, in start order) whose effect fails.
    run: RunId,
    /// Which of its effects (0-based, counted over its whole life).
    nth: usize,
    /// After how many micro-steps.
    after: usize,
}

#[derive(Clone, Debug)]
struct Scenario {
    running: Vec<bool>,
    ops: Vec<Op>,
    faults: Vec<Fault>,
    /// `(run, effects carried out)`: the operator cancels that run (SIGINT) before that effect.
    cancels: Vec<(RunId, usize)>,
    /// The hooks of backups, upgrades and restores: before or after, on the host or in a service,
    /// idempotent, failing.
    hooks: Vec<Hook>,
    /// An `on_failure` hook for every run, idempotent or not.
    on_failure: Option<bool>,
    seed: u64,
}

fn hook() -> impl Strategy<Value = Hook> {
    let points = [
        HookPoint::BeforeBackup,
        HookPoint::AfterBackup,
        HookPoint::BeforeUpgrade,
        HookPoint::AfterUpgrade,
        HookPoint::BeforeRestore,
        HookPoint::AfterRestore,
    ];
    (0..points.len(), prop::option::of(0..4usize), any::<bool>(), prop::bool::weighted(0.25), 0..1000u32).prop_map(
        move |(point, service, idempotent, fails, n)| Hook {
            point: points[point],
            service: service.map(|i| SERVICES[i].to_owned()),
            command: format!("hook-{n}{}", if fails { "-fail" } else { "" }),
            timeout_secs: 10,
            idempotent,
        },
    )
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => any::<bool>().prop_map(|snapshot| Op::Backup { snapshot }),
        3 => any::<bool>().prop_map(|healthy| Op::Upgrade { healthy }),
        2 => (0..4usize).prop_map(Op::Restore),
        2 => Just(Op::Rollback),
        1 => (1..4usize).prop_map(Op::Prune),
        3 => (0..4usize, 0..REMOTES.len()).prop_map(|(backup, remote)| Op::Ship { backup, remote }),
        2 => (prop::option::of(0..REMOTES.len()), any::<u32>(), prune_faults())
            .prop_map(|(remote, pick, faults)| Op::PruneCopies { remote, pick, faults }),
        1 => Just(Op::AppWrite),
        1 => (0..4usize).prop_map(Op::Toggle),
    ]
}

/// Faults of a prune of copies' own effects: none mostly, one, or two (a retried step failing
/// again ends the run `Failed`).
fn prune_faults() -> impl Strategy<Value = Vec<(usize, usize)>> {
    prop_oneof![2 => Just(Vec::new()), 1 => prop::collection::vec((0..4usize, 0..3usize), 1..=2)]
}

/// A backup shipped to one remote or both, some of its copies pruned, a few more operations,
/// then another attempt to ship it to the first remote (which must not happen if that copy was
/// pruned). Random operations alone rarely get a copy catalogued and then prune it.
fn retention_ops() -> impl Strategy<Value = Vec<Op>> {
    (
        any::<bool>(),
        0..REMOTES.len(),
        any::<bool>(),
        prop::option::of(0..REMOTES.len()),
        any::<u32>(),
        prune_faults(),
        prop::collection::vec(op(), 0..=2),
    )
        .prop_map(|(snapshot, remote, both, prune_remote, pick, faults, tail)| {
            // The remote shipped to first, the other, or both.
            let prune_remote = prune_remote.map(|offset| (remote + offset) % REMOTES.len());
            let mut ops = vec![Op::Backup { snapshot }, Op::Ship { backup: 0, remote }];
            if both {
                ops.push(Op::Ship { backup: 0, remote: remote + 1 });
            }
            ops.push(Op::PruneCopies { remote: prune_remote, pick, faults });
            ops.extend(tail);
            ops.push(Op::Ship { backup: 0, remote });
            ops
        })
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        prop::collection::vec(any::<bool>(), 4),
        prop_oneof![3 => prop::collection::vec(op(), 1..=4), 1 => retention_ops()],
        prop::collection::vec((1..=4u64, 0..12usize, 0..4usize), 0..=2),
        prop::collection::vec((1..=4u64, 0..8usize), 0..=1),
        prop::collection::vec(hook(), 0..=2),
        prop::option::of(any::<bool>()),
        any::<u64>(),
    )
        .prop_map(|(running, ops, faults, cancels, hooks, on_failure, seed)| Scenario {
            running,
            ops,
            faults: faults.into_iter().map(|(run, nth, after)| Fault { run, nth, after }).collect(),
            cancels,
            hooks,
            on_failure,
            seed,
        })
}

/// What a play of a scenario left behind.
struct Played {
    sim: Sim,
    crashed: bool,
}

impl Scenario {
    fn sim(&self) -> Sim {
        let running: Vec<&str> = SERVICES.iter().zip(&self.running).filter(|(_, r)| **r).map(|(s, _)| *s).collect();
        let mut world = World::new(&running);
        // Distinct commands: the oracle counts runs of a hook by its command.
        world.hooks = self
            .hooks
            .iter()
            .enumerate()
            .map(|(i, h)| Hook { command: format!("{i}:{}", h.command), ..h.clone() })
            .collect();
        world.on_failure = self
            .on_failure
            .iter()
            .map(|&idempotent| Hook {
                point: HookPoint::OnFailure,
                service: None,
                command: "on-failure".into(),
                timeout_secs: 10,
                idempotent,
            })
            .collect();
        let mut sim = Sim::new(world);
        for f in &self.faults {
            sim.inject(f.run, f.nth, f.after);
        }
        sim.cancels.extend(self.cancels.iter().copied());
        sim
    }

    /// The spec of the next run for `op`, or `None` when the op is not a run or has nothing to act
    /// on (a restore with an empty catalog).
    fn spec(op: &Op, sim: &Sim) -> Option<RunSpec> {
        let id = sim.next_run_id();
        let w = &sim.world;
        match op {
            Op::Backup { snapshot } => {
                let kind = if id.is_multiple_of(2) { BackupKind::Auto } else { BackupKind::Manual };
                Some(if *snapshot { snapshot_backup_spec(id, kind) } else { backup_spec(id, kind) })
            }
            Op::Upgrade { healthy } => Some(upgrade_spec(id, if *healthy { "v2" } else { "v3" })),
            Op::Restore(i) => {
                let ids: Vec<RunId> = w.catalog.keys().copied().collect();
                let pick = *ids.get(i % ids.len().max(1))?;
                Some(RunSpec::Restore { backup: backup_ref(w, pick)? })
            }
            Op::Rollback => Some(RunSpec::Rollback { backup: last_pre_upgrade(w)? }),
            Op::Prune(n) => {
                let ids: Vec<RunId> = w.catalog.keys().copied().collect();
                let oldest = &ids[..ids.len().saturating_sub(1)];
                let deletions = oldest.iter().take(*n).filter_map(|id| backup_ref(w, *id)).collect::<Vec<_>>();
                (!deletions.is_empty()).then_some(RunSpec::Prune { deletions })
            }
            Op::Ship { backup, remote } => {
                let ids: Vec<RunId> = w.catalog.keys().copied().collect();
                let pick = *ids.get(backup % ids.len().max(1))?;
                // A backup has one copy per remote: a copy already catalogued there is not shipped
                // again (its key is the copy's, and another upload would replace it), and neither
                // is one the remote's retention pruned (`runs/ship.rs`: pending is "no row and
                // not pruned").
                let RunSpec::Ship { backup, target } = ship_spec(w, pick, *remote)? else { unreachable!() };
                let pair = (backup.backup_id, target.remote.clone());
                (!w.copies.contains_key(&pair) && !w.copies_pruned.contains(&pair))
                    .then_some(RunSpec::Ship { backup, target })
            }
            Op::PruneCopies { remote, pick, .. } => {
                let only = remote.map(|r| REMOTES[r % REMOTES.len()].0);
                let candidates: Vec<_> =
                    w.copies.iter().filter(|((_, name), _)| only.is_none_or(|only| only == name)).collect();
                if candidates.is_empty() {
                    return None;
                }
                // At most 4 backups on 2 remotes in a scenario: far from 64 bits.
                let mask = 1 + u64::from(*pick) % ((1u64 << candidates.len()) - 1);
                let deletions: Vec<CopyDeletion> = candidates
                    .into_iter()
                    .enumerate()
                    .filter(|(i, _)| mask & (1 << i) != 0)
                    .map(|(_, ((backup_id, name), copy))| {
                        let (_, url, _) = REMOTES.iter().find(|(n, _, _)| n == name).expect("a configured remote");
                        let target = CopyTarget { remote: name.clone(), url: (*url).into(), key: copy.key.clone() };
                        CopyDeletion { backup_id: *backup_id, target }
                    })
                    .collect();
                (!deletions.is_empty()).then_some(RunSpec::PruneCopies { deletions })
            }
            Op::AppWrite | Op::Toggle(_) => None,
        }
    }

    /// Plays the scenario, crashing at point `crash` (counted from the start) if given.
    fn play(&self, crash: Option<usize>) -> Played {
        let mut sim = self.sim();
        sim.crash_after(crash);
        let mut crashed = false;
        for op in &self.ops {
            match op {
                Op::AppWrite => sim.world.app_write(),
                Op::Toggle(i) => sim.world.toggle(*i),
                _ => {}
            }
            let Some(spec) = Self::spec(op, &sim) else { continue };
            if let Op::PruneCopies { faults, .. } = op {
                for &(nth, after) in faults {
                    sim.inject(sim.next_run_id(), nth, after);
                }
            }
            let ended = match sim.run(spec) {
                Ok(run) => vec![run],
                Err(Crashed) => {
                    crashed = true;
                    let point = sim.points as u64;
                    self.check_recovery_is_idempotent(&sim, point);
                    let live = recover_crashing(&mut sim, self.seed ^ point, 2);
                    // A second recovery finds nothing to do and changes nothing.
                    let mut again = sim.clone();
                    assert!(again.recover_all().expect("no crash was planned").is_empty());
                    assert_eq!((&again.world, &again.journal), (&sim.world, &sim.journal), "a second recovery acted");
                    // Only one run is ever in progress: the one that crashed, ended by the last
                    // recovery (the live run it drove) or by its last event before a crash.
                    let id = sim.next_run_id() - 1;
                    let run = live.into_iter().find(|r| r.id() == id);
                    vec![run.unwrap_or_else(|| ended_runs(&sim, &[id]).remove(0))]
                }
            };
            let mut failed = false;
            for run in &ended {
                sim.check_ended(run);
                failed |= run.state() == State::Failed;
            }
            // Time passes before the next operation: a stop left in progress (only by a run that
            // failed the invariants above, or ended Failed) ends.
            sim.world.finish_stops();
            if failed {
                // A failed run needs the operator: the scenario stops here.
                break;
            }
        }
        Played { sim, crashed }
    }

    /// From a crashed sim: a clean recovery and one that crashes (at a seeded point) and recovers
    /// again leave the same world and end the runs in the same states. Failures are off in both,
    /// so the effects they carry out succeed alike.
    fn check_recovery_is_idempotent(&self, crashed: &Sim, point: u64) {
        let mut clean = crashed.clone();
        clean.faults_enabled = false;
        let mut bumpy = clean.clone();
        let interrupted = interrupted_runs(&clean);
        if interrupted.is_empty() {
            // The crash came right after the run's last event: nothing to recover.
            return;
        }
        let start = clean.points;
        clean.recover_all().expect("no crash was planned");
        let points = clean.points - start;
        let at = (mix(self.seed.wrapping_add(point)) % points.max(1) as u64) as usize;
        bumpy.crash_after(Some(at));
        assert_eq!(bumpy.recover_all().err(), Some(Crashed), "recovery did not reach its crash point {at}");
        let live = bumpy.recover_all().expect("no crash was planned");
        // But for the hooks: one interrupted in the bumpy recovery is not run again (at most once,
        // or as often as an idempotent one is retried), so how often hooks ran may differ.
        let forget_hooks = |world: &World| World { hook_runs: Default::default(), ..world.clone() };
        assert_eq!(
            forget_hooks(&clean.world),
            forget_hooks(&bumpy.world),
            "recovery interrupted at point {at} ends in another world"
        );
        let states = |sim: &Sim| ended_runs(sim, &interrupted).iter().map(|r| r.state()).collect::<Vec<_>>();
        assert_eq!(states(&clean), states(&bumpy), "recovery interrupted at point {at} ends otherwise");
        // A prune (of backups or of copies) is past its point of no return from the start: a
        // recovery without failures always completes it, unless it had failed twice already and
        // was running its `on_failure` hooks on its way to `Failed` (see `Sim::recover_all`).
        for run in ended_runs(&clean, &interrupted) {
            let was_failing = replay(run.id(), &crashed.journal[&run.id()])
                .is_ok_and(|r| matches!(r.mode(), Mode::Compensating { end: State::Failed, .. }));
            if run.kind() == RunKind::Prune && !was_failing {
                assert_eq!(run.state(), State::Completed, "run {}: a recovered prune ended otherwise", run.id());
            }
        }
        for run in &live {
            bumpy.check_ended(run);
        }
    }
}

/// The runs that need recovery.
fn interrupted_runs(sim: &Sim) -> Vec<RunId> {
    sim.journal.iter().filter(|(id, events)| recover(**id, events).unwrap().is_some()).map(|(id, _)| *id).collect()
}

/// The runs `ids` as their journals now tell them; each must have ended.
fn ended_runs(sim: &Sim, ids: &[RunId]) -> Vec<Run> {
    ids.iter().map(|id| replay(*id, &sim.journal[id]).unwrap()).collect()
}

/// Runs `recover`, crashing during it up to `crashes` times at points drawn from `seed`, then
/// once more to the end. Returns the runs the last recovery drove to their end.
fn recover_crashing(sim: &mut Sim, seed: u64, crashes: u32) -> Vec<Run> {
    for attempt in 0..crashes {
        let mut probe = sim.clone();
        let start = probe.points;
        probe.recover_all().expect("no crash was planned");
        let points = (probe.points - start) as u64;
        // One chance in (points + 1) of no crash at all.
        let at = mix(seed.wrapping_add(u64::from(attempt))) % (points + 1);
        if at == points {
            break;
        }
        sim.crash_after(Some(at as usize));
        assert_eq!(sim.recover_all().err(), Some(Crashed), "recovery did not crash at point {at} of {points}");
    }
    sim.crash_after(None);
    let live = sim.recover_all().expect("no crash was planned");
    assert!(interrupted_runs(sim).is_empty(), "a run still needs recovery after recover");
    live
}

fn check_scenario(s: &Scenario) {
    // Probe pass, twice: determinism.
    let probe = s.play(None);
    let again = s.play(None);
    assert!(!probe.crashed);
    assert_eq!(probe.sim.journal, again.sim.journal, "the same scenario gave another journal");
    assert_eq!(probe.sim.world, again.sim.world, "the same scenario gave another world");
    // A crash at every point.
    for point in 0..probe.sim.points {
        let played = s.play(Some(point));
        assert!(played.crashed, "point {point} of {} was not reached", probe.sim.points);
    }
}

fn config() -> Config {
    let cases = std::env::var("LIFEBOAT_PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    let seed = std::env::var("LIFEBOAT_PROPTEST_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x11feb0a7);
    Config {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        max_shrink_iters: 2048,
        // Integration tests have no lib.rs above them: keep the file next to this one.
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn every_crash_point_recovers_to_the_invariants(s in scenario()) {
        check_scenario(&s);
    }
}
