//! The project lock: one lifeboat run per project at a time.
//!
//! An exclusive `flock`-style lock (std `File::try_lock`) on `.lifeboat/lock`. The kernel drops it
//! when the process dies, even by kill -9, so a crash never leaves a stale lock; the pid written
//! into the file is only there to name the holder in the error.

use crate::exit::Exit;
use anyhow::Context;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Held for as long as it lives.
#[derive(Debug)]
pub struct ProjectLock {
    _file: File,
}

impl ProjectLock {
    /// Takes the lock or fails with exit code 3, naming the holder's pid.
    pub fn acquire(state_dir: &Path) -> anyhow::Result<ProjectLock> {
        let path = state_dir.join("lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .mode(0o600)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open the lock file {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let who = if holder.is_empty() { "another process".to_owned() } else { format!("pid {holder}") };
                return Err(Exit::Locked.wrap(anyhow::anyhow!(
                    "another lifeboat run ({who}) holds the project lock {}: wait for it to finish",
                    path.display()
                )));
            }
            Err(std::fs::TryLockError::Error(err)) => {
                return Err(err).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
        file.set_len(0)?;
        file.rewind()?;
        write!(file, "{}", std::process::id())?;
        Ok(ProjectLock { _file: file })
    }

    /// The pid holding the lock, if any process does. Used by `status`.
    pub fn holder(state_dir: &Path) -> Option<String> {
        let path = state_dir.join("lock");
        let mut file = File::open(path).ok()?;
        match file.try_lock_shared() {
            Ok(()) => None,
            Err(_) => {
                let mut pid = String::new();
                file.read_to_string(&mut pid).ok()?;
                Some(pid.trim().to_owned())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_acquire_fails_with_exit_3_naming_the_pid() {
        let dir = tempfile::tempdir().unwrap();
        let held = ProjectLock::acquire(dir.path()).unwrap();
        let err = ProjectLock::acquire(dir.path()).unwrap_err();
        assert_eq!(Exit::of(&err), Exit::Locked);
        assert!(err.to_string().contains(&format!("pid {}", std::process::id())), "{err}");
        assert_eq!(ProjectLock::holder(dir.path()), Some(std::process::id().to_string()));
        drop(held);
        assert_eq!(ProjectLock::holder(dir.path()), None);
        ProjectLock::acquire(dir.path()).unwrap();
    }
}
