//! A write-ahead log file: checksummed frames appended to one file, made durable with
//! `fdatasync`, replayed in order when the file is opened.
//!
//! Each frame is `[payload length: u32 LE][CRC-32 of the payload: u32 LE][payload]`, padded
//! with zeros to a multiple of 8 bytes, so that every header lies within one disk sector and a
//! crash cannot tear a length in two. Frames are only ever appended, the caller syncs each
//! frame before it appends the next (so at most the last frame is unsynced), and a frame is
//! reported durable only after that sync: a crash can damage only the last frame, and only by
//! leaving part of it unwritten (zeros: the file's preallocated space). On open, a damaged
//! last frame is such a torn write when its length is zero, it runs past the end of the file,
//! or one of its 512-byte sectors is all zeros (payloads are JSON text, which holds no zero
//! byte); it is cut off. Any other damage (a flipped bit, damage followed by an intact frame)
//! cannot come from a crash and is refused as corruption, rather than silently dropping what
//! was acknowledged. This is etcd's WAL's shape (`server/storage/wal`: length-prefixed,
//! CRC-checked, 8-byte-aligned records, space preallocated, `isTornEntry` on open).
//!
//! Opening also syncs the file and its directory: frames a killed process wrote but never
//! synced may still sit in the page cache, and are replayed; they must be durable before the
//! member reports what they hold.
//!
//! Space is preallocated ([`PREALLOCATE_BYTES`] at a time, `fallocate`), so a sync after an
//! append flushes the data without also changing the file's size (~25 % faster here); on a
//! file system without `fallocate` the file simply grows. A lock file beside it (`<log>.lock`,
//! `flock`) is held while the log is open: a second process on the same data directory is
//! refused. The file grows with every frame; once it has grown [`REWRITE_AFTER_BYTES`] past
//! its size after the last rewrite (and at least doubled), [`Wal::rewrite_if_grown`] replaces
//! it atomically ([`crate::durable_file`]) by one frame holding what is still live. After a
//! failed sync nothing more is written (see [`WalError::SyncFailed`]).

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::fs::{FallocateFlags, FlockOperation};
use rustix::io::Errno;
use thiserror::Error;

use crate::durable_file;

/// Bytes before each frame's payload: its length and its checksum.
const HEADER_BYTES: usize = 8;

/// Frames start at multiples of this many bytes.
const ALIGN: usize = 8;

/// Bytes of file space allocated ahead of the frames at a time (16 MiB).
pub const PREALLOCATE_BYTES: u64 = 16 << 20;

/// Growth after which the file is rewritten from what is live (64 MiB).
pub const REWRITE_AFTER_BYTES: u64 = 64 << 20;

/// A torn write leaves at least one whole sector of this many bytes unwritten.
const SECTOR: usize = 512;

#[derive(Debug, Error)]
pub enum WalError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is locked by another process: is another caplab-node running on this data \
         directory? Stop it first (two members writing one log would corrupt it)"
    )]
    Locked { path: PathBuf },
    #[error(
        "{path} is corrupt at byte {offset} of {len} (damage a crash cannot leave): this \
         member's log cannot be trusted; remove its data directory so that it rejoins as a new \
         member"
    )]
    Corrupt {
        path: PathBuf,
        offset: u64,
        len: u64,
    },
    #[error(
        "{path}: an earlier sync or rewrite failed ({cause}), so what the file holds is unknown: \
         restart the member (it replays the log from the disk)"
    )]
    SyncFailed { path: PathBuf, cause: String },
    #[error("a frame of {0} bytes is outside the log's limits (1 byte to 4 GiB)")]
    FrameSize(usize),
}

/// The intact frames found when the log was opened, oldest first (read in place).
pub struct Frames {
    bytes: Vec<u8>,
    ranges: Vec<Range<usize>>,
}

impl Frames {
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Each frame's payload, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.ranges.iter().map(|r| &self.bytes[r.clone()])
    }
}

/// An open write-ahead log, positioned at its end.
pub struct Wal {
    path: PathBuf,
    file: File,
    /// The lock file, held (`flock`) while the log is open; it outlives rewrites, which
    /// replace the log's file.
    _lock: File,
    /// Bytes of frames after the last rewrite (or at open).
    rewritten_len: u64,
    /// Bytes of frames: where the next frame goes.
    len: u64,
    /// Bytes of file space allocated (at least `len`; zeros after it).
    allocated: u64,
    /// False once the file system refused `fallocate` (the file then grows with each frame).
    preallocate: bool,
    /// Why a sync (or a rewrite after its rename) failed, once one has: after a failed
    /// `fdatasync` the kernel may have dropped the dirty pages it could not write and a later
    /// sync can succeed without them, so no later frame may be reported durable
    /// (PostgreSQL's "fsyncgate", 2018).
    failed: Option<String>,
}

impl Wal {
    /// Opens (or creates) and locks the log at `path` and returns it with every intact
    /// frame, oldest first. A torn last frame is cut off (logged at WARN); an unfinished
    /// [`Wal::rewrite`] is discarded (the file it would have replaced is intact).
    pub fn open(path: &Path) -> Result<(Self, Frames), WalError> {
        let io = |action| move |source| io_error(action, path, source);
        let lock = lock(path)?;
        durable_file::remove_if_present(&durable_file::temporary(path))
            .map_err(io("removing the unfinished rewrite of"))?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io("opening"))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io("reading"))?;
        let (ranges, intact) = parse(&bytes).map_err(|offset| WalError::Corrupt {
            path: path.to_owned(),
            offset: offset as u64,
            len: bytes.len() as u64,
        })?;
        let torn = &bytes[intact.min(bytes.len())..];
        if torn.iter().any(|b| *b != 0) {
            tracing::warn!(
                path = %path.display(),
                kept = intact,
                cut = torn.len(),
                "cutting off a torn write at the end of the log (a frame never reported durable)"
            );
            file.set_len(intact as u64)
                .map_err(io("cutting the torn end of"))?;
        }
        file.sync_all().map_err(io("syncing"))?;
        durable_file::sync_directory_of(path).map_err(io("syncing the directory of"))?;
        let allocated = file.metadata().map_err(io("reading the size of"))?.len();
        let wal = Self {
            path: path.to_owned(),
            file,
            _lock: lock,
            rewritten_len: intact as u64,
            len: intact as u64,
            allocated,
            preallocate: true,
            failed: None,
        };
        Ok((wal, Frames { bytes, ranges }))
    }

    /// [`Wal::open`]; when the log has no frames (new, or an import that did not finish),
    /// `import` may supply one payload (state an earlier version kept elsewhere), which is
    /// written as the log's one frame and returned as such.
    pub fn open_importing<E: From<WalError>>(
        path: &Path,
        import: impl FnOnce() -> Result<Option<Vec<u8>>, E>,
    ) -> Result<(Self, Frames), E> {
        let (mut wal, frames) = Self::open(path)?;
        if !frames.is_empty() {
            return Ok((wal, frames));
        }
        let Some(payload) = import()? else {
            return Ok((wal, frames));
        };
        wal.rewrite(&payload)?;
        let ranges = std::iter::once(0..payload.len()).collect();
        Ok((
            wal,
            Frames {
                bytes: payload,
                ranges,
            },
        ))
    }

    /// Bytes of frames in the file (preallocated space not counted).
    pub fn end(&self) -> u64 {
        self.len
    }

    /// Appends one frame (not yet durable: see [`Wal::sync`], which must come before the
    /// next append).
    pub fn append(&mut self, payload: &[u8]) -> Result<(), WalError> {
        self.check_usable()?;
        let frame = frame(payload)?;
        self.allocate(self.len + frame.len() as u64)?;
        // A failed write may have left part of the frame: the next one overwrites it.
        let written = self.file.write_all_at(&frame, self.len);
        written.map_err(|e| io_error("appending to", &self.path, e))?;
        self.len += frame.len() as u64;
        Ok(())
    }

    /// Makes sure the file has space up to `end`: [`PREALLOCATE_BYTES`] more at a time, or
    /// just what is needed when the file system is short of space for that much.
    fn allocate(&mut self, end: u64) -> Result<(), WalError> {
        if !self.preallocate || end <= self.allocated {
            return Ok(());
        }
        let needed = end - self.allocated;
        let mut result = self.fallocate(needed.max(PREALLOCATE_BYTES));
        if result == Err(Errno::NOSPC) {
            result = self.fallocate(needed);
        }
        match result {
            Ok(more) => self.allocated += more,
            Err(Errno::OPNOTSUPP | Errno::NOSYS | Errno::INVAL) => {
                tracing::info!(path = %self.path.display(), "no fallocate here: the log grows with each frame");
                self.preallocate = false;
            }
            Err(e) => return Err(io_error("allocating space for", &self.path, e.into())),
        }
        Ok(())
    }

    fn fallocate(&self, bytes: u64) -> Result<u64, Errno> {
        let flags = FallocateFlags::empty();
        rustix::fs::fallocate(&self.file, flags, self.allocated, bytes).map(|()| bytes)
    }

    /// Makes every frame appended so far durable (`fdatasync`).
    pub fn sync(&mut self) -> Result<(), WalError> {
        self.check_usable()?;
        self.file.sync_data().map_err(|e| self.fail("syncing", e))
    }

    /// Replaces the whole log by one frame holding `payload`, atomically: after a crash the
    /// log is either the old one or the new one. A failure before the rename leaves the old
    /// log in use; one after it (syncing the directory) stops the log like a failed sync.
    pub fn rewrite(&mut self, payload: &[u8]) -> Result<(), WalError> {
        self.check_usable()?;
        let frame = frame(payload)?;
        let tmp = durable_file::temporary(&self.path);
        let tmp = tmp.as_path();
        let io = |action| move |e| io_error(action, tmp, e);
        let file = durable_file::write_temporary(&self.path, &frame).map_err(io("writing"))?;
        std::fs::rename(tmp, &self.path).map_err(io("renaming"))?;
        // From the rename on, the path names the new file: appends must go there.
        self.file = file;
        self.len = frame.len() as u64;
        self.allocated = self.len;
        self.rewritten_len = self.len;
        durable_file::sync_directory_of(&self.path)
            .map_err(|e| self.fail("syncing the directory of", e))
    }

    /// Rewrites the log from `checkpoint` (what is live, as one payload) once it has grown
    /// [`REWRITE_AFTER_BYTES`] past its size after the last rewrite and at least doubled. A
    /// failed rewrite is logged and tried again after as much growth.
    pub fn rewrite_if_grown<E: std::fmt::Display>(
        &mut self,
        checkpoint: impl FnOnce() -> Result<Vec<u8>, E>,
    ) {
        let due = (2 * self.rewritten_len).max(self.rewritten_len + REWRITE_AFTER_BYTES);
        if self.len < due {
            return;
        }
        let outcome = checkpoint()
            .map_err(|e| e.to_string())
            .and_then(|payload| self.rewrite(&payload).map_err(|e| e.to_string()));
        let path = self.path.display();
        match outcome {
            Ok(()) => tracing::info!(%path, bytes = self.len, "rewrote the log from what is live"),
            Err(e) => {
                tracing::error!(%path, error = %e, "rewriting the log failed");
                self.rewritten_len = self.len;
            }
        }
    }

    /// Records a failure after which nothing more may be reported durable.
    fn fail(&mut self, action: &'static str, e: std::io::Error) -> WalError {
        self.failed = Some(format!("{action}: {e}"));
        io_error(action, &self.path, e)
    }

    /// Refuses to go on after a failed sync.
    fn check_usable(&self) -> Result<(), WalError> {
        match &self.failed {
            Some(cause) => Err(WalError::SyncFailed {
                path: self.path.clone(),
                cause: cause.clone(),
            }),
            None => Ok(()),
        }
    }
}

fn io_error(action: &'static str, path: &Path, source: std::io::Error) -> WalError {
    WalError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// How long opening waits for the lock: long enough for a member's previous process (or, in
/// tests, a store just dropped) to let go; a live second process keeps it and is refused.
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// Takes the log's lock file (`<path>.lock`), or refuses when another process keeps it.
fn lock(path: &Path) -> Result<File, WalError> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let lock_path = PathBuf::from(name);
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(|e| io_error("opening", &lock_path, e))?;
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(file),
            Err(Errno::WOULDBLOCK) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(Errno::WOULDBLOCK) => {
                return Err(WalError::Locked {
                    path: path.to_owned(),
                })
            }
            Err(e) => return Err(io_error("locking", &lock_path, e.into())),
        }
    }
}

fn padded(len: usize) -> usize {
    len.div_ceil(ALIGN) * ALIGN
}

fn frame(payload: &[u8]) -> Result<Vec<u8>, WalError> {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|len| *len > 0)
        .ok_or(WalError::FrameSize(payload.len()))?;
    let mut frame = Vec::with_capacity(HEADER_BYTES + padded(payload.len()));
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    frame.extend_from_slice(payload);
    frame.resize(HEADER_BYTES + padded(payload.len()), 0);
    Ok(frame)
}

/// Finds the frames in `bytes`. Returns their payloads' ranges with the length of the intact
/// prefix (shorter than `bytes` after a torn write, or preallocated space), or the offset of
/// a damaged frame followed by an intact one (corruption).
fn parse(bytes: &[u8]) -> Result<(Vec<Range<usize>>, usize), usize> {
    let mut frames = Vec::new();
    let mut offset = 0;
    while offset < bytes.len() {
        match frame_at(bytes, offset) {
            Some(payload) => {
                offset = payload.start + padded(payload.len());
                frames.push(payload);
            }
            None if is_torn(bytes, offset) && !intact_frame_after(bytes, offset) => break,
            None => return Err(offset),
        }
    }
    Ok((frames, offset))
}

/// The payload range of the intact frame at `offset`, if there is one.
fn frame_at(bytes: &[u8], offset: usize) -> Option<Range<usize>> {
    let header = bytes.get(offset..offset.checked_add(HEADER_BYTES)?)?;
    let len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().ok()?);
    let start = offset + HEADER_BYTES;
    let range = start..start.checked_add(len)?;
    let payload = bytes.get(range.clone())?;
    (len > 0 && crc32fast::hash(payload) == crc).then_some(range)
}

/// Whether the damaged frame at `offset` looks like a write cut short: its header is cut
/// short or zero, it runs past the end of the file, or one of its sectors is all zeros.
fn is_torn(bytes: &[u8], offset: usize) -> bool {
    let Some(header) = bytes.get(offset..offset + HEADER_BYTES) else {
        return true;
    };
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let end = offset + HEADER_BYTES + padded(len);
    if len == 0 || end > bytes.len() {
        return true;
    }
    let first_sector = offset / SECTOR * SECTOR;
    (first_sector..end)
        .step_by(SECTOR)
        .map(|s| &bytes[s..(s + SECTOR).min(bytes.len())])
        .any(|sector| sector.iter().all(|b| *b == 0))
}

/// Whether an intact frame starts anywhere after the damaged one at `offset` (zeros, the
/// usual tail, are skipped at once: a zero length is never a frame).
fn intact_frame_after(bytes: &[u8], offset: usize) -> bool {
    (offset + ALIGN..bytes.len())
        .step_by(ALIGN)
        .any(|o| frame_at(bytes, o).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reopen(path: &Path) -> Vec<Vec<u8>> {
        let (_, frames) = Wal::open(path).expect("open");
        frames.iter().map(<[u8]>::to_vec).collect()
    }

    /// A log holding `payloads`, each synced; returns each frame's offset.
    fn written(path: &Path, payloads: &[&[u8]]) -> Vec<usize> {
        let (mut wal, _) = Wal::open(path).unwrap();
        let mut offsets = Vec::new();
        for payload in payloads {
            offsets.push(wal.end() as usize);
            wal.append(payload).unwrap();
            wal.sync().unwrap();
        }
        offsets
    }

    fn damage(path: &Path, f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut bytes = std::fs::read(path).unwrap();
        f(&mut bytes);
        std::fs::write(path, &bytes).unwrap();
        bytes
    }

    #[test]
    fn frames_come_back_in_order_after_a_reopen_and_start_on_eight_byte_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.wal");
        let offsets = written(&path, &[b"one", b"two!", b"a longer third one"]);
        assert!(offsets.iter().all(|o| o % ALIGN == 0), "{offsets:?}");
        assert_eq!(
            reopen(&path),
            vec![
                b"one".to_vec(),
                b"two!".to_vec(),
                b"a longer third one".to_vec()
            ]
        );
    }

    #[test]
    fn a_torn_last_frame_is_cut_off_and_appending_goes_on_after_the_intact_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.wal");
        let offsets = written(&path, &[b"kept", b"torn frame"]);
        // Cut inside the second frame's payload, as a crash during its write could.
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len((offsets[1] + HEADER_BYTES + 4) as u64)
            .unwrap();
        drop(file);
        assert_eq!(reopen(&path), vec![b"kept".to_vec()]);
        let (mut wal, _) = Wal::open(&path).unwrap();
        assert_eq!(wal.end(), offsets[1] as u64);
        wal.append(b"next").unwrap();
        wal.sync().unwrap();
        drop(wal);
        assert_eq!(reopen(&path), vec![b"kept".to_vec(), b"next".to_vec()]);
    }

    #[test]
    fn a_last_frame_with_an_unwritten_sector_is_torn_but_a_flipped_bit_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.wal");
        let offsets = written(&path, &[b"kept", &[b'x'; 2000]]);
        // A later sector reached the disk, a middle one did not.
        let middle = (offsets[1] / SECTOR + 2) * SECTOR;
        damage(&path, |b| b[middle..middle + SECTOR].fill(0));
        assert_eq!(reopen(&path), vec![b"kept".to_vec()]);
        // The file system extended the file but its data never reached the disk.
        damage(&path, |b| b.extend_from_slice(&[0; 4096]));
        assert_eq!(reopen(&path), vec![b"kept".to_vec()]);

        let offsets = written(&path, &[b"flipped"]);
        damage(&path, |b| b[offsets[0] + HEADER_BYTES] ^= 0x01);
        let err = Wal::open(&path)
            .err()
            .expect("a flipped bit is not a torn write");
        assert!(matches!(err, WalError::Corrupt { .. }), "{err}");
    }

    #[test]
    fn a_last_frame_whose_first_sector_was_lost_ends_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.wal");
        let offsets = written(&path, &[b"kept", &[7; 1000]]);
        // Its later sectors reached the disk, its first one (with the header) did not.
        damage(&path, |b| b[offsets[1]..offsets[1] + 512].fill(0));
        assert_eq!(reopen(&path), vec![b"kept".to_vec()]);
    }

    #[test]
    fn damage_followed_by_an_intact_frame_is_refused_as_corruption() {
        for zero_the_length in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("log.wal");
            let offsets = written(&path, &[b"first", b"second", b"third"]);
            let bytes = damage(&path, |b| match zero_the_length {
                true => b[offsets[1]..offsets[1] + 4].fill(0),
                false => b[offsets[1] + HEADER_BYTES] ^= 0xff,
            });
            let err = Wal::open(&path).err().expect("corruption refused");
            assert!(
                matches!(err, WalError::Corrupt { offset, .. } if offset == offsets[1] as u64),
                "{err}"
            );
            // Nothing was cut: the file is left as found for whoever inspects it.
            assert_eq!(std::fs::read(&path).unwrap(), bytes);
        }
    }

    #[test]
    fn an_empty_frame_is_refused_and_a_second_opener_is_locked_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.wal");
        let (mut wal, _) = Wal::open(&path).unwrap();
        assert!(matches!(wal.append(b""), Err(WalError::FrameSize(0))));
        let err = Wal::open(&path).err().expect("locked");
        assert!(matches!(err, WalError::Locked { .. }), "{err}");
    }

    #[test]
    fn a_rewrite_replaces_the_log_and_an_unfinished_one_is_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.wal");
        written(&path, &[b"old"]);
        let (mut wal, _) = Wal::open(&path).unwrap();
        wal.rewrite(b"checkpoint").unwrap();
        wal.append(b"after").unwrap();
        wal.sync().unwrap();
        drop(wal);
        let expected = vec![b"checkpoint".to_vec(), b"after".to_vec()];
        assert_eq!(reopen(&path), expected);
        // A crash before the rename leaves the temporary file beside the intact log.
        std::fs::write(durable_file::temporary(&path), b"half a checkpoint").unwrap();
        assert_eq!(reopen(&path), expected);
        assert!(!durable_file::temporary(&path).exists());
    }
}
