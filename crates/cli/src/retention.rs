//! Retention: which backups `lifeboat prune` deletes. A pure function of the catalog, the
//! verification results, the time and the policy; the command (`commands/prune.rs`) does the I/O.
//!
//! # The rules
//!
//! A backup is *old* when it was created more than `retention_days` before `now`. Only old backups
//! are ever deleted, and of those, none that is:
//!
//! 1. the newest verified backup;
//! 2. one of the newest `keep_last` verified backups (so prune never leaves fewer than `keep_last`
//!    verified backups, counting only the verified ones that remain);
//! 3. the protected backup: the pre-upgrade backup of the latest completed upgrade, which
//!    `lifeboat rollback` needs (the caller finds it in the journal);
//! 4. a backup whose archive failed verification. A corrupt archive is not counted as verified,
//!    and it is not deleted either: a verification failure can be a missing mount as well as a
//!    damaged file, and deleting catalog entries then would lose good backups. The command reports
//!    it and exits 5.
//!
//! # Verification is lazy
//!
//! Re-hashing every archive on every prune would read the whole backup directory each night.
//! [`plan_prune`] asks for a verification only where the answer changes the plan: walking from
//! the newest backup to the oldest, every backup until `max(keep_last, 1)` verified ones are
//! found (they are the ones rules 1 and 2 rely on), and then every old backup about to be deleted
//! (rule 4). Recent backups past that point are kept without being read.

use lifeboat_journal::BackupEntry;
use lifeboat_machine::Timestamp;

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// The retention settings of `[backup]` in `lifeboat.toml`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub retention_days: u32,
    pub keep_last: u32,
}

/// Why a backup survives a prune.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeepReason {
    /// The newest backup whose archive verified.
    NewestVerified,
    /// The pre-upgrade backup a rollback would use.
    Protected,
    /// Not older than `retention_days`.
    WithinRetention,
    /// Old, but one of the newest `keep_last` verified backups.
    KeepLast,
    /// Old, but its archive failed verification: reported, never deleted by prune.
    FailedVerification,
}

impl KeepReason {
    /// The name used in JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            KeepReason::NewestVerified => "newest-verified",
            KeepReason::Protected => "protected-pre-upgrade",
            KeepReason::WithinRetention => "within-retention",
            KeepReason::KeepLast => "keep-last",
            KeepReason::FailedVerification => "failed-verification",
        }
    }

    /// A few words for people.
    pub fn describe(self) -> &'static str {
        match self {
            KeepReason::NewestVerified => "the newest verified backup",
            KeepReason::Protected => "the pre-upgrade backup of the last upgrade",
            KeepReason::WithinRetention => "within retention_days",
            KeepReason::KeepLast => "one of the newest keep_last verified backups",
            KeepReason::FailedVerification => "its archive failed verification, so prune leaves it alone",
        }
    }
}

/// What a prune does. Every backup of the catalog is in exactly one of `delete` and `keep`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrunePlan {
    /// Backup ids to delete, oldest first.
    pub delete: Vec<u64>,
    /// Backup ids to keep with the reason, newest first.
    pub keep: Vec<(u64, KeepReason)>,
    /// Backups whose archive was checked and failed verification (all of them kept), newest first.
    pub failed: Vec<u64>,
}

/// Whether a backup is older than the retention period at `now`.
pub fn is_old(entry: &BackupEntry, now: Timestamp, retention_days: u32) -> bool {
    now.0.saturating_sub(entry.created_at.0) > i64::from(retention_days) * DAY_MS
}

/// Plans a prune (see the module documentation for the rules). `verify` answers whether a
/// backup's archive verifies; it is called at most once per backup, and only where the answer
/// matters.
pub fn plan_prune(
    backups: &[BackupEntry],
    verify: &mut dyn FnMut(&BackupEntry) -> bool,
    now: Timestamp,
    policy: Policy,
    protected: Option<u64>,
) -> PrunePlan {
    let mut newest_first: Vec<&BackupEntry> = backups.iter().collect();
    newest_first.sort_by_key(|b| std::cmp::Reverse((b.created_at, b.id)));
    let needed = policy.keep_last.max(1) as usize;
    let mut verified_kept = 0usize;
    let mut plan = PrunePlan::default();
    for entry in newest_first {
        let old = is_old(entry, now, policy.retention_days);
        let is_protected = protected == Some(entry.id);
        let reason = if verified_kept < needed {
            // Rules 1 and 2 still need verified backups: this one's verification counts.
            if verify(entry) {
                verified_kept += 1;
                if verified_kept == 1 {
                    KeepReason::NewestVerified
                } else if is_protected {
                    KeepReason::Protected
                } else if old {
                    KeepReason::KeepLast
                } else {
                    KeepReason::WithinRetention
                }
            } else {
                plan.failed.push(entry.id);
                if is_protected {
                    KeepReason::Protected
                } else if old {
                    KeepReason::FailedVerification
                } else {
                    KeepReason::WithinRetention
                }
            }
        } else if is_protected {
            KeepReason::Protected
        } else if !old {
            KeepReason::WithinRetention
        } else if verify(entry) {
            plan.delete.push(entry.id);
            continue;
        } else {
            plan.failed.push(entry.id);
            KeepReason::FailedVerification
        };
        plan.keep.push((entry.id, reason));
    }
    plan.delete.reverse();
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use lifeboat_machine::BackupKind;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};

    /// The newest backup of kind `pre-upgrade`: the tests' stand-in for the protected backup (the
    /// command asks the journal which upgrade completed).
    fn protected_backup(backups: &[BackupEntry]) -> Option<u64> {
        backups.iter().filter(|b| b.kind == BackupKind::PreUpgrade).max_by_key(|b| (b.created_at, b.id)).map(|b| b.id)
    }

    const NOW: Timestamp = Timestamp(1_800_000_000_000);

    fn entry(id: u64, days_ago: i64, kind: BackupKind) -> BackupEntry {
        BackupEntry {
            id,
            run_id: id,
            kind,
            created_at: Timestamp(NOW.0 - days_ago * DAY_MS),
            path: format!("backups/b{id}.tar.gz"),
            size_bytes: 1,
            file_count: 1,
            entry_count: 1,
            content_bytes: 1,
            sha256: "00".repeat(32),
            note: None,
            protects_version: None,
        }
    }

    fn plan(backups: &[BackupEntry], bad: &[u64], policy: Policy) -> (PrunePlan, Vec<u64>) {
        let mut asked = Vec::new();
        let plan = plan_prune(
            backups,
            &mut |b| {
                asked.push(b.id);
                !bad.contains(&b.id)
            },
            NOW,
            policy,
            protected_backup(backups),
        );
        (plan, asked)
    }

    #[test]
    fn deletes_old_backups_beyond_keep_last_and_keeps_recent_ones_unread() {
        let backups: Vec<_> = (1..=10).map(|id| entry(id, 100 - 10 * id as i64, BackupKind::Auto)).collect();
        // Ages: 90, 80, ..., 0 days. 30 days keeps 7..=10 (ages 30.., 20, 10, 0).
        let (plan, asked) = plan(&backups, &[], Policy { retention_days: 30, keep_last: 2 });
        assert_eq!(plan.delete, vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(
            plan.keep,
            vec![
                (10, KeepReason::NewestVerified),
                (9, KeepReason::WithinRetention),
                (8, KeepReason::WithinRetention),
                (7, KeepReason::WithinRetention)
            ]
        );
        // The two newest for keep_last, then each one about to be deleted; 7 and 8 never read.
        assert_eq!(asked, vec![10, 9, 6, 5, 4, 3, 2, 1]);
    }

    #[test]
    fn keep_last_counts_only_verified_backups_and_corrupt_ones_are_never_deleted() {
        let backups: Vec<_> = (1..=5).map(|id| entry(id, 100 - id as i64, BackupKind::Manual)).collect();
        let (plan, _) = plan(&backups, &[5, 3], Policy { retention_days: 30, keep_last: 2 });
        assert_eq!(plan.delete, vec![1]);
        assert_eq!(
            plan.keep,
            vec![
                (5, KeepReason::FailedVerification),
                (4, KeepReason::NewestVerified),
                (3, KeepReason::FailedVerification),
                (2, KeepReason::KeepLast)
            ]
        );
        assert_eq!(plan.failed, vec![5, 3]);
    }

    #[test]
    fn the_newest_pre_upgrade_backup_is_protected() {
        let backups = vec![
            entry(1, 90, BackupKind::PreUpgrade),
            entry(2, 80, BackupKind::PreUpgrade),
            entry(3, 70, BackupKind::Auto),
            entry(4, 1, BackupKind::Auto),
        ];
        assert_eq!(protected_backup(&backups), Some(2));
        let (plan, _) = plan(&backups, &[], Policy { retention_days: 30, keep_last: 1 });
        assert_eq!(plan.delete, vec![1, 3]);
        assert_eq!(plan.keep, vec![(4, KeepReason::NewestVerified), (2, KeepReason::Protected)]);
    }

    #[test]
    fn an_empty_catalog_plans_nothing() {
        let (plan, asked) = plan(&[], &[], Policy { retention_days: 0, keep_last: 0 });
        assert_eq!(plan, PrunePlan::default());
        assert!(asked.is_empty());
    }

    fn arb_catalog() -> impl Strategy<Value = (Vec<(BackupEntry, bool)>, i64, Policy)> {
        let one = (0i64..200 * DAY_MS, 0u8..3, any::<bool>()).prop_map(|(age, kind, ok)| {
            let kind = [BackupKind::Manual, BackupKind::Auto, BackupKind::PreUpgrade][kind as usize];
            (age, kind, ok)
        });
        (prop::collection::vec(one, 0..25), -DAY_MS..400 * DAY_MS, 0u32..60, 0u32..6).prop_map(
            |(items, clock_shift, retention_days, keep_last)| {
                let entries = items
                    .into_iter()
                    .enumerate()
                    .map(|(i, (age, kind, ok))| {
                        let mut e = entry(i as u64 + 1, 0, kind);
                        e.created_at = Timestamp(NOW.0 - age);
                        (e, ok)
                    })
                    .collect();
                (entries, clock_shift, Policy { retention_days, keep_last })
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, rng_seed: proptest::test_runner::RngSeed::Fixed(0x11feb0a7), ..ProptestConfig::default() })]

        /// No rule is ever broken, for any catalog, verification flags, clock and policy.
        #[test]
        fn no_retention_rule_is_ever_broken((catalog, clock_shift, policy) in arb_catalog()) {
            let now = Timestamp(NOW.0 + clock_shift);
            let backups: Vec<BackupEntry> = catalog.iter().map(|(e, _)| e.clone()).collect();
            let ok: BTreeMap<u64, bool> = catalog.iter().map(|(e, ok)| (e.id, *ok)).collect();
            let protected = protected_backup(&backups);
            let mut asked = BTreeSet::new();
            let plan = plan_prune(&backups, &mut |b| { assert!(asked.insert(b.id), "asked twice"); ok[&b.id] }, now, policy, protected);

            // Every backup is either deleted or kept, once.
            let deleted: BTreeSet<u64> = plan.delete.iter().copied().collect();
            let kept: BTreeSet<u64> = plan.keep.iter().map(|(id, _)| *id).collect();
            prop_assert_eq!(deleted.len(), plan.delete.len());
            prop_assert_eq!(kept.len(), plan.keep.len());
            prop_assert!(deleted.is_disjoint(&kept));
            prop_assert_eq!(deleted.len() + kept.len(), backups.len());

            for b in &backups {
                if deleted.contains(&b.id) {
                    // Only old backups go, only verified ones, never the protected one.
                    prop_assert!(now.0 - b.created_at.0 > i64::from(policy.retention_days) * DAY_MS);
                    prop_assert!(ok[&b.id] && asked.contains(&b.id));
                    prop_assert!(Some(b.id) != protected);
                }
            }
            // The newest verified backup stays.
            let mut verified: Vec<&BackupEntry> = backups.iter().filter(|b| ok[&b.id]).collect();
            verified.sort_by_key(|b| std::cmp::Reverse((b.created_at, b.id)));
            if let Some(newest) = verified.first() {
                prop_assert!(kept.contains(&newest.id));
            }
            // Never fewer than keep_last verified backups remain (or all of them, if fewer exist).
            let verified_left = verified.iter().filter(|b| kept.contains(&b.id)).count();
            prop_assert!(verified_left >= verified.len().min(policy.keep_last as usize));
            // A failed verification is reported and its backup kept.
            for id in &plan.failed {
                prop_assert!(!ok[id] && kept.contains(id));
            }
        }
    }
}
