//! `--disk-pressure`: a background writer that keeps the disk busy for the whole comparison,
//! as another process's writeback on a shared host would. It writes a file 1 MiB at a time up
//! to [`ROUND_BYTES`], syncs it, empties it and starts again; every member's `fdatasync`
//! queues behind that writeback, and stalls of a few hundred ms follow (a 200-byte append's
//! sync here: p50 0.3 ms, p99 ~270 ms, max ~350 ms). The question it answers: does a disk
//! stall shared by all the members depose a healthy leader?

use std::fs::File;
use std::io::{Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::Context;

/// Bytes written between two syncs (800 MiB).
const ROUND_BYTES: usize = 800 * 1024 * 1024;
/// Bytes per write (1 MiB).
const BLOCK_BYTES: usize = 1024 * 1024;

/// The running writer; [`DiskPressure::stop`] ends it and removes its file.
pub struct DiskPressure {
    stop: Arc<AtomicBool>,
    writer: JoinHandle<()>,
    path: PathBuf,
}

impl DiskPressure {
    /// Starts writing into a new file in `dir` (the members' temporary directories are there
    /// too, so they share its file system).
    pub fn start(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join(format!("caplab-bench-disk-pressure-{}", std::process::id()));
        let file = File::create(&path)
            .with_context(|| format!("creating the disk-pressure file {}", path.display()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("disk-pressure".into())
                .spawn(move || keep_writing(file, &stop))?
        };
        Ok(Self { stop, writer, path })
    }

    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        if self.writer.join().is_err() {
            eprintln!("the disk-pressure writer panicked");
        }
        if let Err(e) = std::fs::remove_file(&self.path) {
            eprintln!("could not remove {}: {e}", self.path.display());
        }
    }
}

fn keep_writing(mut file: File, stop: &AtomicBool) {
    let block = vec![0u8; BLOCK_BYTES];
    while !stop.load(Ordering::Relaxed) {
        let filled = (0..ROUND_BYTES / BLOCK_BYTES)
            .take_while(|_| !stop.load(Ordering::Relaxed))
            .try_for_each(|_| file.write_all(&block));
        let round = filled
            .and_then(|()| file.sync_data())
            .and_then(|()| file.set_len(0))
            .and_then(|()| file.rewind());
        if let Err(e) = round {
            eprintln!("the disk-pressure writer stopped: {e}");
            return;
        }
    }
}
