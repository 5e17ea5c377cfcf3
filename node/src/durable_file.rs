//! Replacing a file so that a crash leaves either the old contents or the new ones: write a
//! temporary file beside it, sync it, rename it over the file, sync the directory (the rename
//! is durable only once the directory is). Used for the incarnation, Raft snapshots and the
//! write-ahead log's rewrites.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The temporary file a replacement of `path` is written to first (`<path>.tmp`); one left
/// behind by a crash holds nothing anyone relies on.
pub fn temporary(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

/// Writes `bytes` to [`temporary`]`(path)` and syncs it; returns the file, still open for
/// writing at its end (the caller renames it over `path`, then syncs the directory).
pub fn write_temporary(path: &Path, bytes: &[u8]) -> std::io::Result<File> {
    let mut file = File::create(temporary(path))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(file)
}

/// Renames [`temporary`]`(path)` over `path`, then syncs the directory.
fn rename_durably(path: &Path) -> std::io::Result<()> {
    std::fs::rename(temporary(path), path)?;
    sync_directory_of(path)
}

/// Replaces `path` by `bytes` (temporary file, sync, rename, directory sync).
pub fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_temporary(path, bytes)?;
    rename_durably(path)
}

/// Makes a rename or creation in `path`'s directory durable.
pub fn sync_directory_of(path: &Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

/// Renames `path`, if present, to `path` + `suffix` and syncs the directory: a file kept for
/// whoever wants to inspect it, out of the way of the member.
pub fn set_aside(path: &Path, suffix: &str) -> std::io::Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    std::fs::rename(path, PathBuf::from(name))?;
    sync_directory_of(path)
}

/// Removes `path`; one that is already gone is not an error.
pub fn remove_if_present(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_file_holds_the_new_bytes_and_no_temporary_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, b"old").unwrap();
        replace(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert!(!temporary(&path).exists());
        set_aside(&path, ".old").unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("state.json.old")).unwrap(),
            b"new"
        );
        set_aside(&path, ".old").unwrap();
        remove_if_present(&dir.path().join("state.json.old")).unwrap();
        remove_if_present(&dir.path().join("state.json.old")).unwrap();
        assert!(!path.exists());
    }
}
