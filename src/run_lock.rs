//! The run lock: one `chargetail run` per state database. A second daemon
//! on the same state would read and deliver everything twice; `replay` and
//! `status` look at the lock to know whether a daemon is running.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};

/// Held for the life of `run`: a second daemon on the same state would read
/// and deliver everything twice, so it must not start.
pub struct RunLock {
    _file: File,
}

pub fn lock_path(state: &Path) -> PathBuf {
    let mut p = state.as_os_str().to_owned();
    p.push(".run.lock");
    PathBuf::from(p)
}

impl RunLock {
    pub fn acquire(state: &Path) -> anyhow::Result<RunLock> {
        let path = lock_path(state);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating state directory {}", dir.display()))?;
        }
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening lock file {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(RunLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(anyhow!(
                "another `chargetail run` is already using the state database {} (lock {} is held); \
                 refusing to start a second one",
                state.display(),
                path.display()
            )),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(anyhow!(e).context(format!("locking {}", path.display())))
            }
        }
    }

    /// Whether a daemon holds the lock right now (for status/replay).
    pub fn is_held(state: &Path) -> bool {
        let Ok(file) = File::options().write(true).open(lock_path(state)) else {
            return false;
        };
        match file.try_lock() {
            Ok(()) => {
                let _ = file.unlock();
                false
            }
            Err(_) => true,
        }
    }
}
