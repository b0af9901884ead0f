//! Free space, checked before a run that writes a lot (an upgrade's pre-upgrade backup and
//! package), so that it is refused with nothing changed rather than failing midway.

use crate::docker::Volume;
use crate::exit::Exit;
use crate::fsutil::{existing_ancestor, free_space, tree_size};
use crate::project::Project;
use crate::render;

/// Refuses (exit 1, nothing changed) when the filesystems cannot hold a backup of the data (at
/// most its size) plus `extra_bytes` on the project's filesystem (an extracted package and its
/// images while they load).
pub fn check(project: &Project, volumes: &[Volume], extra_bytes: u64) -> anyhow::Result<()> {
    let mut data_bytes: u64 = project.config.backup.paths.iter().map(|path| tree_size(&project.dir.join(path))).sum();
    data_bytes += volumes.iter().map(|volume| tree_size(&volume.mountpoint)).sum::<u64>();
    let backup_dir = project.backup_dir();
    let backup_fs = existing_ancestor(&backup_dir);
    let (backup_free, backup_fsid) = free_space(backup_fs)?;
    let (state_free, state_fsid) = free_space(&project.dir)?;
    let shortfall = if backup_fsid == state_fsid {
        (data_bytes + extra_bytes > backup_free).then_some((data_bytes + extra_bytes, backup_free, backup_fs))
    } else if data_bytes > backup_free {
        Some((data_bytes, backup_free, backup_fs))
    } else {
        (extra_bytes > state_free).then_some((extra_bytes, state_free, project.dir.as_path()))
    };
    if let Some((needed, free, place)) = shortfall {
        crate::fail!(
            Exit::Failed,
            "not enough free space on the filesystem of {} for the pre-upgrade backup and the package: about {} \
             needed, {} free; free some space (or run 'lifeboat prune') and try again; nothing was changed",
            place.display(),
            render::bytes(needed),
            render::bytes(free)
        );
    }
    Ok(())
}
