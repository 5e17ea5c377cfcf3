//! `--disk-pressure`: a background writer that keeps the disk busy for the whole comparison,
//! as another process's writeback on a shared host would. It writes a file 1 MiB at a time up
//! to [`ROUND_BYTES`], syncs it, empties it and starts again; every member's `fdatasync`
//! queues behind that writeback, and stalls of a few hundred ms follow (a 200-byte append's
//! sync here: p50 0.3 ms, p99 ~270 ms, max ~350 ms). The question it answers: does a disk
//! stall shared by all the members depose a healthy leader? (On a tmpfs the syncs cost
//! nothing and the file takes memory: give a directory on a disk.)

use std::fs::File;
use std::io::{Seek, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use anyhow::Context;

/// Bytes written between two syncs (800 MiB).
const ROUND_BYTES: usize = 800 * 1024 * 1024;
/// Bytes per write (1 MiB).
const BLOCK_BYTES: usize = 1024 * 1024;

/// The running writer; [`DiskPressure::stop`] ends it.
pub struct DiskPressure {
    stop: Arc<AtomicBool>,
    writer: JoinHandle<()>,
    failure: Arc<Mutex<Option<String>>>,
}

impl DiskPressure {
    /// Starts writing into a new file in `dir`, which should be on the members' file system.
    /// The file is unlinked at once (written through its open handle), so nothing is left
    /// behind however the run ends.
    pub fn start(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(format!("caplab-bench-disk-pressure-{}", std::process::id()));
        let file = File::create(&path)
            .with_context(|| format!("creating the disk-pressure file {}", path.display()))?;
        std::fs::remove_file(&path)
            .with_context(|| format!("unlinking the disk-pressure file {}", path.display()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let failure = Arc::new(Mutex::new(None));
        let writer = {
            let (stop, failure) = (stop.clone(), failure.clone());
            std::thread::Builder::new()
                .name("disk-pressure".into())
                .spawn(move || {
                    if let Err(e) = keep_writing(file, &stop) {
                        eprintln!("the disk-pressure writer stopped: {e}");
                        *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                    }
                })?
        };
        Ok(Self {
            stop,
            writer,
            failure,
        })
    }

    /// Stops the writer; `Err` says why it stopped early, if it did (the run was then not
    /// under pressure throughout).
    pub fn stop(self) -> Result<(), String> {
        self.stop.store(true, Ordering::Relaxed);
        if self.writer.join().is_err() {
            return Err("the disk-pressure writer panicked".into());
        }
        let failure = self
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        failure.map_or(Ok(()), Err)
    }
}

fn keep_writing(mut file: File, stop: &AtomicBool) -> std::io::Result<()> {
    let block = vec![0u8; BLOCK_BYTES];
    let stopped = || stop.load(Ordering::Relaxed);
    while !stopped() {
        for _ in 0..ROUND_BYTES / BLOCK_BYTES {
            if stopped() {
                return Ok(());
            }
            file.write_all(&block)?;
        }
        file.sync_data()?;
        file.set_len(0)?;
        file.rewind()?;
    }
    Ok(())
}
