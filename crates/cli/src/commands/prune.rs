//! `lifeboat prune`: retention now (`crate::runs::prune`).

use super::Ctx;
use crate::args::PruneArgs;
use crate::runs::{RunSession, prune::PruneReport};

pub async fn run(ctx: &Ctx, args: &PruneArgs) -> anyhow::Result<PruneReport> {
    let session = RunSession::open(ctx)?;
    crate::runs::prune::prune(&session, args.dry_run).await
}
