//! A directory as a remote (`file:///mnt/backups`: a second disk, an NFS mount). A copy is written
//! as archives are: `KEY.partial`, fsynced, renamed, the directory fsynced; its metadata is
//! `KEY.meta` beside it, in place before the copy is.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::transfer::{self, PartSink};
use crate::{CopyMeta, ObjectInfo, RemoteError, Result, Shipment, StoredCopy, UploadId};

const PARTIAL: &str = ".partial";
const META: &str = ".meta";

#[derive(Debug)]
pub(crate) struct DirRemote {
    name: String,
    root: PathBuf,
}

impl DirRemote {
    pub fn open(name: &str, root: &Path) -> Result<DirRemote> {
        Ok(DirRemote { name: name.into(), root: root.into() })
    }

    fn file(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    fn local(&self, path: &Path) -> impl Fn(io::Error) -> RemoteError + '_ {
        let path = path.to_path_buf();
        move |source| RemoteError::Local { path: path.clone(), source }
    }

    pub fn check(&self) -> Result<()> {
        match fs::metadata(&self.root) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(RemoteError::Config {
                    remote: self.name.clone(),
                    detail: format!("{} is not a directory", self.root.display()),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(RemoteError::NoBucket {
                    remote: self.name.clone(),
                    detail: format!("the directory {} does not exist (is the disk mounted?)", self.root.display()),
                });
            }
            Err(e) => return Err(self.local(&self.root)(e)),
        }
        // Writable? Only trying tells (read-only mounts, NFS permissions).
        let probe = self.root.join(format!(".lifeboat-probe-{}", std::process::id()));
        File::create(&probe).and_then(|_| fs::remove_file(&probe)).map_err(|e| RemoteError::Config {
            remote: self.name.clone(),
            detail: format!("cannot write in {}: {e}", self.root.display()),
        })
    }

    pub fn begin_upload(&self, key: &str, _meta: &CopyMeta) -> Result<UploadId> {
        let partial = with_suffix(&self.file(key), PARTIAL);
        if let Some(parent) = partial.parent() {
            fs::create_dir_all(parent).map_err(self.local(parent))?;
        }
        File::create(&partial).map_err(self.local(&partial))?;
        Ok(format!("{key}{PARTIAL}"))
    }

    pub async fn upload(&self, key: &str, id: &UploadId, shipment: &Shipment<'_>) -> Result<StoredCopy> {
        let meta = shipment.meta;
        let target = self.file(key);
        let partial = with_suffix(&target, PARTIAL);
        if *id != format!("{key}{PARTIAL}") {
            return Err(RemoteError::Store { remote: self.name.clone(), detail: format!("unknown upload {id:?}") });
        }
        let file = OpenOptions::new().write(true).open(&partial).map_err(self.local(&partial))?;
        file.set_len(0).map_err(self.local(&partial))?;
        let part_size = transfer::part_size_for(meta.archive_bytes, shipment.options.part_size);
        let sink = FileParts { file: &file, part_size, path: &partial };
        let sent = transfer::send_parts(&self.name, key, shipment, part_size, &sink).await?;
        file.sync_all().map_err(self.local(&partial))?;
        drop(file);
        self.put_small(&format!("{key}{META}"), encode_meta(meta).as_bytes())?;
        fs::rename(&partial, &target).map_err(self.local(&target))?;
        sync_parent(&target).map_err(self.local(&target))?;
        Ok(StoredCopy {
            key: key.into(),
            stored_bytes: sent.stored_bytes,
            stored_sha256: sent.stored_sha256,
            parts: sent.parts.len(),
        })
    }

    pub fn abort_upload(&self, key: &str, _id: &UploadId) -> Result<()> {
        let partial = with_suffix(&self.file(key), PARTIAL);
        remove(&partial).map_err(self.local(&partial))
    }

    /// Removes what an upload of `key` that never completed left: `KEY.partial` (what
    /// `begin_upload` creates; counted), and the metadata of a copy that was never renamed into
    /// place (`KEY.meta.partial`; `KEY.meta` when there is no `KEY`). A completed copy and its
    /// metadata stay. The directories `begin_upload` created stay too: other keys may share them.
    pub fn abort_uploads_of(&self, key: &str) -> Result<usize> {
        let target = self.file(key);
        let partial = with_suffix(&target, PARTIAL);
        let meta = with_suffix(&target, META);
        let mut removed = false;
        let mut remove_counted = |path: &Path| -> Result<bool> {
            match fs::remove_file(path) {
                Ok(()) => {
                    removed = true;
                    Ok(true)
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(self.local(path)(e)),
            }
        };
        let aborted = usize::from(remove_counted(&partial)?);
        remove_counted(&with_suffix(&meta, PARTIAL))?;
        match fs::symlink_metadata(&target) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                remove_counted(&meta)?;
            }
            Err(e) => return Err(self.local(&target)(e)),
            Ok(_) => {}
        }
        if removed {
            sync_parent(&target).map_err(self.local(&target))?;
        }
        Ok(aborted)
    }

    pub fn stat(&self, key: &str) -> Result<Option<ObjectInfo>> {
        let path = self.file(key);
        let size = match fs::metadata(&path) {
            Ok(m) if m.is_file() => m.len(),
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.local(&path)(e)),
        };
        let meta = self.get_small(&format!("{key}{META}"), 4096)?.and_then(|bytes| decode_meta(&bytes));
        Ok(Some(ObjectInfo { key: key.into(), size, meta }))
    }

    pub fn list(&self) -> Result<Vec<ObjectInfo>> {
        let mut objects = Vec::new();
        let mut pending = vec![self.root.clone()];
        while let Some(dir) = pending.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound && dir == self.root => {
                    return Err(RemoteError::NoBucket {
                        remote: self.name.clone(),
                        detail: format!("the directory {} does not exist", self.root.display()),
                    });
                }
                Err(e) => return Err(self.local(&dir)(e)),
            };
            for entry in entries {
                let entry = entry.map_err(self.local(&dir))?;
                let kind = entry.file_type().map_err(self.local(&entry.path()))?;
                let path = entry.path();
                if kind.is_dir() {
                    pending.push(path);
                    continue;
                }
                let name = entry.file_name().to_string_lossy().into_owned();
                if !kind.is_file() || name.ends_with(PARTIAL) || name.ends_with(META) || name.starts_with(".lifeboat-")
                {
                    continue;
                }
                let Ok(relative) = path.strip_prefix(&self.root) else { continue };
                let size = entry.metadata().map_err(self.local(&path))?.len();
                objects.push(ObjectInfo { key: relative.to_string_lossy().into_owned(), size, meta: None });
            }
        }
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(objects)
    }

    pub fn get(&self, key: &str) -> Result<transfer::Body> {
        let path = self.file(key);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(RemoteError::Mismatch {
                    remote: self.name.clone(),
                    key: key.into(),
                    detail: "the object is not there".into(),
                });
            }
            Err(e) => return Err(self.local(&path)(e)),
        };
        // A blocking read per chunk, on the blocking pool.
        let state = Some((file, path));
        Ok(Box::pin(futures_util::stream::unfold(state, |state| async move {
            let (mut file, path) = state?;
            let read = tokio::task::spawn_blocking(move || {
                let mut buf = vec![0u8; 1 << 20];
                let n = loop {
                    match file.read(&mut buf) {
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        other => break other,
                    }
                };
                (
                    n.map(|n| {
                        buf.truncate(n);
                        Bytes::from(buf)
                    }),
                    file,
                    path,
                )
            })
            .await;
            match read {
                Ok((Ok(chunk), _, _)) if chunk.is_empty() => None,
                Ok((Ok(chunk), file, path)) => Some((Ok(chunk), Some((file, path)))),
                Ok((Err(e), _, path)) => Some((Err(RemoteError::Local { path, source: e }), None)),
                Err(e) => Some((Err(RemoteError::Local { path: PathBuf::new(), source: io::Error::other(e) }), None)),
            }
        })))
    }

    pub fn delete(&self, key: &str) -> Result<()> {
        let path = self.file(key);
        remove(&path).map_err(self.local(&path))?;
        let meta = with_suffix(&path, META);
        remove(&meta).map_err(self.local(&meta))?;
        sync_parent(&path).map_err(self.local(&path))
    }

    pub fn put_small(&self, key: &str, bytes: &[u8]) -> Result<()> {
        let path = self.file(key);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(self.local(parent))?;
        }
        let partial = with_suffix(&path, PARTIAL);
        let write = || -> io::Result<()> {
            let mut file = File::create(&partial)?;
            file.write_all(bytes)?;
            file.sync_all()?;
            fs::rename(&partial, &path)?;
            sync_parent(&path)
        };
        write().map_err(self.local(&path))
    }

    pub fn get_small(&self, key: &str, limit: usize) -> Result<Option<Vec<u8>>> {
        let path = self.file(key);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.local(&path)(e)),
        };
        let mut bytes = Vec::new();
        file.take(limit as u64 + 1).read_to_end(&mut bytes).map_err(self.local(&path))?;
        if bytes.len() > limit {
            return Err(RemoteError::Store {
                remote: self.name.clone(),
                detail: format!("{key} is more than the {limit} bytes expected"),
            });
        }
        Ok(Some(bytes))
    }
}

/// Parts written at their offsets (all parts but the last are `part_size` long).
struct FileParts<'a> {
    file: &'a File,
    part_size: usize,
    path: &'a Path,
}

impl PartSink for FileParts<'_> {
    type Part = ();

    fn put_part(&self, index: usize, data: Bytes) -> impl Future<Output = Result<()>> + Send {
        let offset = index as u64 * self.part_size as u64;
        let written = self.file.write_all_at(&data, offset);
        let path = self.path.to_path_buf();
        async move { written.map_err(|source| RemoteError::Local { path, source }) }
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn remove(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(parent) => File::open(parent)?.sync_all(),
        None => Ok(()),
    }
}

fn encode_meta(meta: &CopyMeta) -> String {
    format!(
        "backup_id={}\narchive_sha256={}\narchive_bytes={}\nencryption={}\n",
        meta.backup_id, meta.archive_sha256, meta.archive_bytes, meta.encryption
    )
}

fn decode_meta(bytes: &[u8]) -> Option<CopyMeta> {
    let text = std::str::from_utf8(bytes).ok()?;
    let get = |name: &str| text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix('=')).map(str::to_string);
    Some(CopyMeta {
        backup_id: get("backup_id")?.parse().ok()?,
        archive_sha256: get("archive_sha256")?,
        archive_bytes: get("archive_bytes")?.parse().ok()?,
        encryption: get("encryption")?,
    })
}
