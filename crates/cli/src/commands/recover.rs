//! `lifeboat recover`: settle every interrupted run, oldest first, as its journal dictates
//! (`crate::runs::recover`).

use super::Ctx;
use crate::runs::RunSession;
use crate::runs::recover::RecoverReport;

pub async fn run(ctx: &Ctx) -> anyhow::Result<RecoverReport> {
    let mut session = RunSession::open_to_recover(ctx)?;
    crate::runs::recover::recover_all(&mut session).await
}
