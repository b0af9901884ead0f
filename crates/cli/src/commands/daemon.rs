//! `lifeboat auto-backup daemon`: not built yet.

use super::Ctx;

pub async fn run(_ctx: &Ctx) -> anyhow::Result<()> {
    crate::fail!(crate::exit::Exit::Usage, "auto-backup daemon is not available in this version: use a systemd timer running 'lifeboat auto-backup run'")
}
