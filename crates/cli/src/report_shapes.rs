//! Snapshots of the JSON shapes of the reports that need the daemon to make for real (backup,
//! restore, upgrade, rollback, auto-backup run, recover, package build), built here with fixed
//! values; the others are pinned through the binary in tests/snapshots.rs. docs/json.md
//! documents every shape. Update with `INSTA_UPDATE=always cargo test -p lifeboat --lib`.

use crate::commands::package::PackageReport;
use crate::commands::restore::RestoreReport;
use crate::commands::rollback::RollbackReport;
use crate::commands::upgrade::UpgradeReport;
use crate::runs::backup::BackupReport;
use crate::runs::history::{DowntimeParts, StepTiming};
use crate::runs::prune::PruneReport;
use crate::runs::recover::{RecoverReport, Recovered};
use crate::runs::scheduled::ScheduledRun;
use lifeboat_machine::SkippedPath;

fn json(value: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(value).unwrap()
}

pub(crate) fn backup() -> BackupReport {
    BackupReport {
        run_id: 12,
        backup_id: 12,
        path: "/srv/demo/backups/demo-20261126T020000Z-run000012.tar.gz".into(),
        sha256: "9f2c4d1e8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d".into(),
        size_bytes: 191_234_567,
        file_count: 5_234,
        stopped: vec!["app".into(), "db".into()],
        restarted: vec!["db".into(), "app".into()],
        downtime_ms: 4_210,
        apparent_bytes: 402_653_184,
        stored_bytes: 398_000_000,
        skipped: vec![SkippedPath { path: "paths/data/run/app.sock".into(), kind: "socket".into() }],
        hook_failures: vec![],
        mode: "stop",
        downtime_parts: DowntimeParts { stop_ms: 1_210, sync_ms: 0, start_ms: 1_020 },
        archive_ms: 1_950,
        presync_ms: 0,
        copies: vec![crate::runs::ship::CopyReport {
            remote: "offsite".into(),
            backup_id: 12,
            key: "demo-20261126T020000Z-run000012.tar.gz.age".into(),
            status: "shipped",
            encrypted: true,
            run_id: Some(13),
            stored_bytes: Some(191_234_999),
            error: None,
            exit: crate::exit::Exit::Success,
        }],
    }
}

fn steps() -> Vec<StepTiming> {
    vec![StepTiming { step: "stop_services".into(), ms: 1_850 }, StepTiming { step: "compose_up".into(), ms: 2_400 }]
}

#[test]
fn run_report_shapes() {
    insta::assert_snapshot!("backup_report", json(&backup()));
    insta::assert_snapshot!(
        "restore_report",
        json(&RestoreReport {
            run_id: 13,
            backup_id: 12,
            restored: vec!["paths/data".into(), "volumes/dbdata".into()],
            differences: vec!["paths/old is in lifeboat.toml but not in the backup: it is left as it is".into()],
            stopped: vec!["app".into(), "db".into()],
            restarted: vec!["db".into(), "app".into()],
            downtime_ms: 6_020,
            hook_failures: vec![],
        })
    );
    insta::assert_snapshot!(
        "upgrade_report",
        json(&UpgradeReport {
            run_id: 14,
            backup_id: Some(14),
            first_deployment: false,
            from_version: Some("1.0.0".into()),
            to_version: "1.1.0".into(),
            state: "completed".into(),
            downtime_ms: 9_300,
            steps: steps(),
            hook_failures: vec![],
            copies: vec![],
        })
    );
    insta::assert_snapshot!(
        "rollback_report",
        json(&RollbackReport {
            run_id: 15,
            backup_id: 14,
            to_version: Some("1.0.0".into()),
            state: "completed".into(),
            downtime_ms: 8_100,
            steps: steps(),
        })
    );
    let mut prune = PruneReport::default();
    prune.deleted = vec![3, 4];
    prune.kept = vec![(6, crate::retention::KeepReason::NewestVerified), (5, crate::retention::KeepReason::KeepLast)];
    prune.failed_verification = vec![(2, "sha256 mismatch".into())];
    prune.unknown_files = vec!["/srv/demo/backups/stray.tar.gz".into()];
    prune.file_errors = vec![(7, "cannot delete /srv/demo/backups/b.tar.gz: permission denied".into())];
    insta::assert_snapshot!("prune_report", json(&prune));
    insta::assert_snapshot!("auto_backup_run_report", json(&ScheduledRun { backup: backup(), prune: Ok(prune) }));
    insta::assert_snapshot!(
        "auto_backup_run_report_prune_failed",
        json(&ScheduledRun { backup: backup(), prune: Err(anyhow::anyhow!("cannot list /srv/demo/backups")) })
    );
    insta::assert_snapshot!(
        "recover_report",
        json(&RecoverReport {
            runs: vec![Recovered {
                run_id: 2,
                kind: "backup",
                interrupted_in: "archiving",
                decision: "roll_back",
                steps: vec!["discard_archive", "start_services"],
                step_details: Vec::new(),
                state: "rolled_back",
            }],
        })
    );
    insta::assert_snapshot!(
        "package_report",
        json(&PackageReport {
            path: "/srv/demo/demo-1.1.0.tar.gz".into(),
            version: "1.1.0".into(),
            sha256: "0b1c".into(),
            size_bytes: 52_428_800,
            deploy_files: vec!["docker-compose.yml".into(), ".env".into()],
            images: vec!["images/app.tar".into()],
        })
    );
}
