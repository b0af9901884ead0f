//! `lifeboat prune`: not built yet.

use super::Ctx;
use crate::args::PruneArgs;

pub async fn run(_ctx: &Ctx, _args: &PruneArgs) -> anyhow::Result<()> {
    crate::fail!(crate::exit::Exit::Usage, "prune is not available in this version")
}
