//! A write-ahead log file: checksummed frames appended to one file, made durable with
//! `fdatasync`, replayed in order when the file is opened.
//!
//! Each frame is `[payload length: u32 LE][CRC-32 of the payload: u32 LE][payload]`. Frames are
//! only ever appended, the caller syncs each frame before it appends the next (so at most the
//! last frame is unsynced), and a frame is reported durable only after that sync. A crash can
//! therefore damage only the last frame. On open, a zero length ends the log (space the file
//! was extended by, never written, or a frame whose first sector was lost), and a damaged
//! frame with nothing but zeros or the end of the file after it is a torn write: both are
//! cut off. Damage followed by further data cannot come from a crash and is refused as
//! corruption, rather than silently dropping what was acknowledged after it. This is the
//! shape of etcd's WAL (`server/storage/wal`: length-prefixed, CRC-checked records, space
//! preallocated, torn tail repaired on open).
//!
//! Space is preallocated ([`PREALLOCATE_BYTES`] at a time, `fallocate`), so a sync after an
//! append flushes the data without also changing the file's size (~25 % faster here). The
//! file grows with every frame; [`Wal::rewrite`] replaces it atomically (temporary file,
//! fsync, rename, fsync of the directory) by one frame holding what is still live.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Bytes before each frame's payload: its length and its checksum.
const HEADER_BYTES: usize = 8;

/// Bytes of file space allocated ahead of the frames at a time (16 MiB).
pub const PREALLOCATE_BYTES: u64 = 16 << 20;

#[derive(Debug, Error)]
pub enum WalError {
    #[error(
        "{path}: an earlier sync failed ({cause}), so what the file holds is unknown: restart \
         the member (it replays the log from the disk)"
    )]
    SyncFailed { path: PathBuf, cause: String },
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is corrupt at byte {offset} of {len} (a damaged frame followed by more data, \
         which a crash cannot leave): this member's log cannot be trusted; remove its data \
         directory so that it rejoins as a new member"
    )]
    Corrupt {
        path: PathBuf,
        offset: u64,
        len: u64,
    },
    #[error("a frame of {0} bytes is larger than the log's limit of 4 GiB")]
    FrameTooLarge(usize),
}

/// An open write-ahead log, positioned at its end.
pub struct Wal {
    path: PathBuf,
    file: File,
    /// Bytes of frames: where the next frame goes.
    len: u64,
    /// Bytes of file space allocated (at least `len`; zeros after it).
    allocated: u64,
    /// Why a sync failed, once one has: after a failed `fdatasync` the kernel may have dropped
    /// the dirty pages it could not write and a later sync can succeed without them, so no
    /// later frame may be reported durable (PostgreSQL's "fsyncgate", 2018).
    sync_failed: Option<String>,
}

impl Wal {
    /// Opens (or creates) the log at `path` and returns it with every intact frame's
    /// payload, oldest first. A torn last frame is cut off (logged at WARN); an unfinished
    /// [`Wal::rewrite`] is discarded (the file it would have replaced is intact).
    pub fn open(path: &Path) -> Result<(Self, Vec<Vec<u8>>), WalError> {
        let io = |action| move |source| io_error(action, path, source);
        remove_if_present(&temporary(path)).map_err(io("removing the unfinished rewrite of"))?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io("opening"))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io("reading"))?;
        let (frames, intact) = parse(&bytes).map_err(|offset| WalError::Corrupt {
            path: path.to_owned(),
            offset: offset as u64,
            len: bytes.len() as u64,
        })?;
        let torn = &bytes[intact..];
        if torn.iter().any(|b| *b != 0) {
            tracing::warn!(
                path = %path.display(),
                kept = intact,
                cut = torn.len(),
                "cutting off a torn write at the end of the log (never reported durable)"
            );
            file.set_len(intact as u64)
                .map_err(io("cutting the torn end of"))?;
            file.sync_all().map_err(io("syncing"))?;
        }
        let frames = frames.into_iter().map(<[u8]>::to_vec).collect();
        let allocated = file.metadata().map_err(io("reading the size of"))?.len();
        let wal = Self {
            path: path.to_owned(),
            file,
            len: intact as u64,
            allocated,
            sync_failed: None,
        };
        Ok((wal, frames))
    }

    /// Bytes of frames in the file (preallocated space not counted).
    pub fn end(&self) -> u64 {
        self.len
    }

    /// Appends one frame (not yet durable: see [`Wal::sync`], which must come before the
    /// next append).
    pub fn append(&mut self, payload: &[u8]) -> Result<(), WalError> {
        self.check_synced()?;
        let frame = frame(payload)?;
        self.allocate(self.len + frame.len() as u64)?;
        // A failed write may have left part of the frame: the end is found again from `len`.
        use std::os::unix::fs::FileExt;
        let written = self.file.write_all_at(&frame, self.len);
        written.map_err(|e| io_error("appending to", &self.path, e))?;
        self.len += frame.len() as u64;
        Ok(())
    }

    /// Makes sure the file has space up to `end`, allocating [`PREALLOCATE_BYTES`] or more.
    fn allocate(&mut self, end: u64) -> Result<(), WalError> {
        if end <= self.allocated {
            return Ok(());
        }
        let more = (end - self.allocated).max(PREALLOCATE_BYTES);
        let flags = rustix::fs::FallocateFlags::empty();
        rustix::fs::fallocate(&self.file, flags, self.allocated, more)
            .map_err(|e| io_error("allocating space for", &self.path, e.into()))?;
        self.allocated += more;
        Ok(())
    }

    /// Makes every frame appended so far durable (`fdatasync`).
    pub fn sync(&mut self) -> Result<(), WalError> {
        self.check_synced()?;
        self.file.sync_data().map_err(|e| {
            self.sync_failed = Some(e.to_string());
            io_error("syncing", &self.path, e)
        })
    }

    /// Refuses to go on after a failed sync.
    fn check_synced(&self) -> Result<(), WalError> {
        match &self.sync_failed {
            Some(cause) => Err(WalError::SyncFailed {
                path: self.path.clone(),
                cause: cause.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Replaces the whole log by one frame holding `payload`, atomically: after a crash the
    /// log is either the old one or the new one.
    pub fn rewrite(&mut self, payload: &[u8]) -> Result<(), WalError> {
        self.check_synced()?;
        let frame = frame(payload)?;
        let tmp = temporary(&self.path);
        let tmp = tmp.as_path();
        let tmp_io = |action| move |source| io_error(action, tmp, source);
        let mut file = File::create(tmp).map_err(tmp_io("creating"))?;
        file.write_all(&frame).map_err(tmp_io("writing"))?;
        file.sync_all().map_err(tmp_io("syncing"))?;
        std::fs::rename(tmp, &self.path).map_err(tmp_io("renaming"))?;
        // From the rename on, the path names the new file: appends must go there even if
        // syncing the directory fails (the rename is then durable with the next sync of it).
        self.file = file;
        self.len = frame.len() as u64;
        self.allocated = self.len;
        sync_parent(&self.path).map_err(|e| io_error("syncing the directory of", &self.path, e))
    }
}

fn io_error(action: &'static str, path: &Path, source: std::io::Error) -> WalError {
    WalError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

fn temporary(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".rewrite");
    PathBuf::from(name)
}

fn remove_if_present(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Makes a rename in the file's directory durable.
fn sync_parent(path: &Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

fn frame(payload: &[u8]) -> Result<Vec<u8>, WalError> {
    let len = u32::try_from(payload.len()).map_err(|_| WalError::FrameTooLarge(payload.len()))?;
    let mut frame = Vec::with_capacity(HEADER_BYTES + payload.len());
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    frame.extend_from_slice(payload);
    Ok(frame)
}

/// Splits `bytes` into frame payloads. Returns them with the length of the intact prefix
/// (shorter than `bytes` when the last frame is torn), or the offset of a damaged frame that
/// is not the last one (corruption).
fn parse(bytes: &[u8]) -> Result<(Vec<&[u8]>, usize), usize> {
    let mut frames = Vec::new();
    let mut offset = 0;
    while offset < bytes.len() {
        match frame_at(bytes, offset) {
            Some(payload) => {
                frames.push(payload);
                offset += HEADER_BYTES + payload.len();
            }
            None if is_torn_tail(bytes, offset) => return Ok((frames, offset)),
            None => return Err(offset),
        }
    }
    Ok((frames, offset))
}

/// The payload of the intact frame at `offset`, if there is one.
fn frame_at(bytes: &[u8], offset: usize) -> Option<&[u8]> {
    let header = bytes.get(offset..offset + HEADER_BYTES)?;
    let len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().ok()?);
    let start = offset + HEADER_BYTES;
    let payload = bytes.get(start..start + len)?;
    (len > 0 && crc32fast::hash(payload) == crc).then_some(payload)
}

/// A frame at `offset` that is not intact ends the log when it is a torn write: its header
/// is cut short or its length is zero (unwritten space), or nothing but zeros follows the
/// payload it claims (or that payload reaches past the end of the file).
fn is_torn_tail(bytes: &[u8], offset: usize) -> bool {
    let rest = &bytes[offset..];
    let Some(header) = rest.get(..4) else {
        return true;
    };
    let claimed = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let after = rest.get(HEADER_BYTES + claimed..).unwrap_or_default();
    claimed == 0 || after.iter().all(|b| *b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reopen(path: &Path) -> Vec<Vec<u8>> {
        Wal::open(path).expect("open").1
    }

    #[test]
    fn frames_come_back_in_order_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.wal");
        let (mut wal, frames) = Wal::open(&path).unwrap();
        assert!(frames.is_empty());
        wal.append(b"one").unwrap();
        wal.sync().unwrap();
        wal.append(b"two").unwrap();
        wal.sync().unwrap();
        assert_eq!(reopen(&path), vec![b"one".to_vec(), b"two".to_vec()]);
    }

    #[test]
    fn a_torn_last_frame_is_cut_off_and_appending_goes_on_after_the_intact_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.wal");
        let (mut wal, _) = Wal::open(&path).unwrap();
        wal.append(b"kept").unwrap();
        wal.sync().unwrap();
        wal.append(b"torn frame").unwrap();
        wal.sync().unwrap();
        // Cut inside the second frame's payload, as a crash during its write could.
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(wal.end() - 3)
            .unwrap();
        let (mut wal, frames) = Wal::open(&path).unwrap();
        assert_eq!(frames, vec![b"kept".to_vec()]);
        assert_eq!(wal.end(), (HEADER_BYTES + 4) as u64);
        wal.append(b"next").unwrap();
        wal.sync().unwrap();
        assert_eq!(reopen(&path), vec![b"kept".to_vec(), b"next".to_vec()]);
    }

    #[test]
    fn a_bad_checksum_on_the_last_frame_or_a_zeroed_tail_is_a_torn_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.wal");
        let (mut wal, _) = Wal::open(&path).unwrap();
        wal.append(b"kept").unwrap();
        wal.sync().unwrap();
        wal.append(b"flipped").unwrap();
        wal.sync().unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[wal.end() as usize - 1] ^= 0xff; // the last frame's last byte; zeros follow
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(reopen(&path), vec![b"kept".to_vec()]);

        // The file system extended the file but its data never reached the disk.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&[0; 4096]);
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(reopen(&path), vec![b"kept".to_vec()]);
    }

    #[test]
    fn a_last_frame_whose_first_sector_was_lost_ends_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.wal");
        let (mut wal, _) = Wal::open(&path).unwrap();
        wal.append(b"kept").unwrap();
        wal.sync().unwrap();
        let start = wal.end() as usize;
        wal.append(&[7; 1000]).unwrap();
        wal.sync().unwrap();
        // Its later sectors reached the disk, its first one (with the header) did not.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[start..start + 512].fill(0);
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(reopen(&path), vec![b"kept".to_vec()]);
    }

    #[test]
    fn damage_followed_by_more_frames_is_refused_as_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.wal");
        let (mut wal, _) = Wal::open(&path).unwrap();
        for payload in [&b"first"[..], b"second", b"third"] {
            wal.append(payload).unwrap();
            wal.sync().unwrap();
        }
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[HEADER_BYTES + 5 + HEADER_BYTES] ^= 0xff; // the second frame's payload
        std::fs::write(&path, &bytes).unwrap();
        let err = Wal::open(&path).err().expect("corruption refused");
        assert!(
            matches!(err, WalError::Corrupt { offset, .. } if offset == (HEADER_BYTES + 5) as u64),
            "{err}"
        );
        // Nothing was cut: the file is left as found for whoever inspects it.
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
    }

    #[test]
    fn a_rewrite_replaces_the_log_and_an_unfinished_one_is_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.wal");
        let (mut wal, _) = Wal::open(&path).unwrap();
        wal.append(b"old").unwrap();
        wal.sync().unwrap();
        wal.rewrite(b"checkpoint").unwrap();
        wal.append(b"after").unwrap();
        wal.sync().unwrap();
        assert_eq!(
            reopen(&path),
            vec![b"checkpoint".to_vec(), b"after".to_vec()]
        );
        // A crash before the rename leaves the temporary file beside the intact log.
        std::fs::write(temporary(&path), b"half a checkpoint").unwrap();
        assert_eq!(
            reopen(&path),
            vec![b"checkpoint".to_vec(), b"after".to_vec()]
        );
        assert!(!temporary(&path).exists());
    }
}
