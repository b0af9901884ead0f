//! `lifeboat backup`: one manual backup run (`crate::runs::backup`).

use super::Ctx;
use crate::runs::{RunSession, backup::BackupReport};
use lifeboat_machine::BackupKind;

pub async fn run(ctx: &Ctx, note: Option<String>) -> anyhow::Result<BackupReport> {
    let mut session = RunSession::open(ctx)?;
    crate::runs::backup::backup(&mut session, BackupKind::Manual, note).await
}
