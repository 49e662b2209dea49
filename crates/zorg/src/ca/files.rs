//! Files as the CA writes them: keys created readable by the owner only, nothing overwritten
//! by accident, the index and CRLs replaced atomically, one `zorg ca` at a time per directory.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Says which file an I/O error is about.
pub fn io_err(path: &Path, e: impl std::fmt::Display) -> String {
    format!("{}: {e}", path.display())
}

/// Creates a new file holding a secret, mode 0600 from the moment it exists (never chmod'ed
/// afterwards, so no other user can open it in between). Fails if the file exists.
pub fn create_private(path: &Path, data: &[u8]) -> Result<(), String> {
    create_new(path, data, 0o600)
}

/// Creates a new public file (certificates), mode 0644. Fails if the file exists.
pub fn create_public(path: &Path, data: &[u8]) -> Result<(), String> {
    create_new(path, data, 0o644)
}

fn create_new(path: &Path, data: &[u8], mode: u32) -> Result<(), String> {
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = opts.open(path).map_err(|e| io_err(path, e))?;
    file.write_all(data)
        .and_then(|()| file.sync_all())
        .map_err(|e| io_err(path, e))
}

/// Replaces `path` with `data` so that a reader sees the old file or the new one, never a
/// part: a temporary file in the same directory, fsync'ed, renamed over `path`, and the
/// directory fsync'ed so the rename survives a crash. Servers reload CRL files when they
/// change, so this matters for `zorg ca crl` as much as for the index.
pub fn replace_atomically(path: &Path, data: &[u8]) -> Result<(), String> {
    let dir = parent(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let written = File::create(&tmp).and_then(|mut f| {
        f.write_all(data)?;
        f.sync_all()
    });
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err(path, e));
    }
    // Not every platform can fsync a directory; the data itself is already safe.
    #[cfg(unix)]
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The directory a file is in ("." for a bare file name).
fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Creates a directory for CA secrets, mode 0700 if it is new; an existing one is kept as is.
pub fn create_private_dir(dir: &Path) -> Result<(), String> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|e| io_err(dir, e))
}

/// An exclusive lock on a CA directory, held until dropped: two `zorg ca` commands at once
/// would otherwise each read the index, and the second write would lose the first's entry.
/// An OS lock (flock), so a crashed command leaves nothing stale behind.
pub struct DirLock {
    /// Closing the file releases the lock.
    _file: File,
}

impl DirLock {
    pub fn take(dir: &Path) -> Result<DirLock, String> {
        let path = dir.join("index.lock");
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io_err(&path, e))?;
        match file.try_lock() {
            Ok(()) => Ok(DirLock { _file: file }),
            Err(TryLockError::WouldBlock) => Err(format!(
                "another zorg ca command is working in {}; run this one when it has finished",
                dir.display()
            )),
            Err(TryLockError::Error(e)) => Err(io_err(&path, e)),
        }
    }
}

/// The permission bits of a file, where the platform has them.
#[cfg(unix)]
pub fn mode(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .ok()
        .map(|m| m.permissions().mode() & 0o777)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("zorg-ca-files-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        create_private_dir(&dir).unwrap();
        dir
    }

    #[test]
    fn a_private_file_is_0600_and_never_overwritten() {
        let dir = tmp("private");
        let key = dir.join("k.key");
        create_private(&key, b"secret").unwrap();
        #[cfg(unix)]
        assert_eq!(mode(&key), Some(0o600));
        let err = create_private(&key, b"other").unwrap_err();
        assert!(err.contains("k.key"), "{err}");
        assert_eq!(std::fs::read(&key).unwrap(), b"secret");
        #[cfg(unix)]
        assert_eq!(mode(&dir), Some(0o700));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_atomic_replace_leaves_no_temporary_file() {
        let dir = tmp("atomic");
        let file = dir.join("index.toml");
        replace_atomically(&file, b"one").unwrap();
        replace_atomically(&file, b"two").unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["index.toml"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_second_lock_on_the_same_directory_is_refused() {
        let dir = tmp("lock");
        let first = DirLock::take(&dir).unwrap();
        let err = DirLock::take(&dir).err().unwrap();
        assert!(err.contains("another zorg ca command"), "{err}");
        drop(first);
        DirLock::take(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
