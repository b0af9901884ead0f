//! `lifeboat`: crash-safe backups and upgrades of a Docker Compose deployment. See the library
//! half (`lib.rs`) for everything; this file only hands over to it.

fn main() -> std::process::ExitCode {
    lifeboat::main_entry()
}
