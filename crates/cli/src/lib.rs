//! The `lifeboat` binary's library half: commands, the executor and the adapters (Docker through
//! bollard, compose through its CLI, archives through `lifeboat-archive`). `main.rs` is a thin
//! shell over [`main_entry`].
//!
//! The state machine decides; the executor here carries its effects out and journals them. The
//! journal and archive crates write their own files; everything else that touches the world is
//! here (ARCHITECTURE.md, "crates/cli").

pub mod args;
pub mod commands;
pub mod compose;
pub mod config;
pub mod crash;
pub mod docker;
pub mod effects;
pub mod executor;
pub mod exit;
#[cfg(test)]
mod fake_services;
pub mod fsutil;
pub mod lock;
pub mod manifest;
pub mod metrics;
pub mod notify;
pub mod output;
pub mod package;
pub mod perms;
pub mod progress;
pub mod project;
pub mod remotes;
pub mod render;
#[cfg(test)]
mod report_shapes;
pub mod retention;
pub mod runs;
pub mod schedule;
pub mod services;
pub mod signals;

use args::{AutoBackupCommand, Cli, Command, JournalCommand, PackageCommand};
use clap::Parser;
use commands::Ctx;
use exit::Exit;
use output::emit;
use std::process::ExitCode;

/// Parses the command line, runs the command, prints an error once (with its causes) and maps it
/// to the documented exit code.
pub fn main_entry() -> ExitCode {
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return if err.use_stderr() { Exit::Usage.into() } else { Exit::Success.into() };
        }
    };
    init_logging(cli.verbose, cli.quiet);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return Exit::Failed.into();
        }
    };
    let json = cli.json;
    match runtime.block_on(run(cli)) {
        Ok(()) => Exit::Success.into(),
        // The reader of our output went away (`| head`): what it wanted, it has. Say nothing
        // more, as git and ripgrep do; a run this command made is complete and journaled.
        Err(err) if is_broken_pipe(&err) => Exit::Success.into(),
        Err(err) => {
            use std::io::Write as _;
            // stderr may be closed too: never panic over an error message.
            let _ = writeln!(std::io::stderr(), "error: {err:#}");
            output::error_document(json, &err);
            Exit::of(&err).into()
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain()
        .any(|cause| cause.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe))
}

fn init_logging(verbose: u8, quiet: bool) {
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, _) => "debug",
    };
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // The HTTP client logs request paths at trace level, and notification URLs carry tokens
    // (`notify`): its own logs stay at warnings whatever the level asked.
    for quiet in ["ureq=warn", "ureq_proto=warn", "rustls=warn"] {
        if let Ok(directive) = quiet.parse() {
            filter = filter.add_directive(directive);
        }
    }
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).try_init();
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let ctx = Ctx { dir: cli.dir, json: cli.json, progress: progress::wanted(cli.json, cli.quiet) };
    // Commands that change something settle a run on SIGINT/SIGTERM instead of dying midway; the
    // daemon stops its own loop and only needs the run in progress settled (`signals`).
    match &cli.command {
        Command::Backup(_)
        | Command::AutoBackup(AutoBackupCommand::Run)
        | Command::Restore(_)
        | Command::Rollback(_)
        | Command::Upgrade(_)
        | Command::Prune(_)
        | Command::Push(_)
        | Command::Recover => signals::install(true)?,
        Command::AutoBackup(AutoBackupCommand::Daemon) => signals::install(false)?,
        _ => {}
    }
    let json = ctx.json;
    match cli.command {
        Command::Init(args) => emit(json, commands::init::run(&ctx, &args)?),
        Command::Status => emit(json, commands::status::run(&ctx).await?),
        Command::Backup(args) => emit(json, commands::backup::run(&ctx, args.note).await?),
        Command::AutoBackup(cmd) => match cmd {
            AutoBackupCommand::Run => emit(json, commands::auto_backup::run_once(&ctx).await?),
            AutoBackupCommand::Status => emit(json, commands::auto_backup::status(&ctx)?),
            AutoBackupCommand::Enable => emit(json, commands::auto_backup::set_enabled(&ctx, true)?),
            AutoBackupCommand::Disable => emit(json, commands::auto_backup::set_enabled(&ctx, false)?),
            AutoBackupCommand::Schedule { cron } => emit(json, commands::auto_backup::schedule(&ctx, &cron)?),
            // One line per run on stdout as it goes; with --json, the summary is a last line.
            AutoBackupCommand::Daemon => {
                let report = commands::daemon::run(&ctx).await?;
                if json { output::print_line(json, &report) } else { Ok(()) }
            }
        },
        Command::List(args) => match &args.remote {
            Some(remote) => emit(json, commands::remote::list(&ctx, remote).await?),
            None => emit(json, commands::catalog::list(&ctx)?),
        },
        Command::Verify(args) => match &args.remote {
            Some(remote) => {
                let report = commands::remote::verify(&ctx, remote, args.backup_id, args.identity.as_deref()).await?;
                emit(json, report)
            }
            None => emit(json, commands::catalog::verify(&ctx, args.backup_id, args.all)?),
        },
        Command::Push(args) => emit(json, commands::remote::push(&ctx, args.remote.as_deref()).await?),
        Command::Recover => emit(json, commands::recover::run(&ctx).await?),
        Command::Restore(args) => match &args.from {
            Some(from) => {
                let from = commands::remote::fetch_for_restore(&ctx, &args, from).await?;
                emit(json, commands::restore_from::run(&ctx, &args, &from).await?)
            }
            None => emit(json, commands::restore::run(&ctx, &args).await?),
        },
        Command::Import(args) => match &args.remote {
            Some(remote) => emit(json, commands::remote::import(&ctx, remote, args.identity.as_deref()).await?),
            None => emit(json, commands::import::run(&ctx, &args.paths)?),
        },
        Command::Prune(args) => emit(json, commands::prune::run(&ctx, &args).await?),
        Command::Upgrade(args) => emit(json, commands::upgrade::run(&ctx, &args).await?),
        Command::Rollback(args) => emit(json, commands::rollback::run(&ctx, &args).await?),
        Command::Package(PackageCommand::Build { dir, output, version }) => {
            emit(json, commands::package::build(&ctx, &dir, &output, version.as_deref())?)
        }
        Command::Completions { shell } => emit(json, commands::docs::completions(shell)?),
        Command::Man => emit(json, commands::docs::man()?),
        Command::Journal(cmd) => match cmd {
            JournalCommand::List => emit(json, commands::journal::list(&ctx)?),
            JournalCommand::Show { run_id } => emit(json, commands::journal::show(&ctx, run_id)?),
            JournalCommand::Replay { run_id } => emit(json, commands::journal::replay_cmd(&ctx, run_id)?),
            JournalCommand::Verify => emit(json, commands::journal::verify(&ctx)?),
            JournalCommand::Rebuild => emit(json, commands::import::rebuild(&ctx)?),
        },
    }
}
