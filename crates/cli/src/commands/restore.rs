//! `lifeboat restore`: not built yet.

use super::Ctx;
use crate::args::RestoreArgs;

pub async fn run(_ctx: &Ctx, _args: &RestoreArgs) -> anyhow::Result<()> {
    crate::fail!(crate::exit::Exit::Usage, "restore is not available in this version")
}
