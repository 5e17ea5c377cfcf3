//! Member processes on loopback: free ports, and processes that can be killed (SIGKILL) and
//! started again on the same data, killed when dropped. Shared by the test harness
//! ([`crate::Cluster`]) and the benchmark (`caplab-bench`), for caplab members and any other
//! binary (etcd).

use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// A loopback port for a member to listen on. Taken from below the kernel's ephemeral range
/// (32768 and up on Linux), where a port the OS hands out could be taken by any outgoing
/// connection between this choice and the member's bind; each port is handed out once per
/// process, starting at an offset of the process id so that concurrent test or bench
/// processes rarely meet.
///
/// Errors when every port of the range is taken.
pub fn free_port() -> io::Result<u16> {
    const FIRST: u32 = 10_000;
    const SPAN: u32 = 22_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let offset = std::process::id().wrapping_mul(7919) % SPAN;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let Ok(port) = u16::try_from(FIRST + (offset + n) % SPAN) else {
            continue;
        };
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        format!("no free loopback port in {FIRST}..{}", FIRST + SPAN),
    ))
}

/// What it takes to start a process: the program, its arguments and environment, and the
/// file its stderr is appended to (stdout is discarded).
#[derive(Debug, Clone, Default)]
pub struct ProcessSpec {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub envs: Vec<(OsString, OsString)>,
    pub log: PathBuf,
}

impl ProcessSpec {
    pub fn new(program: impl Into<PathBuf>, log: impl Into<PathBuf>) -> Self {
        ProcessSpec {
            program: program.into(),
            log: log.into(),
            ..ProcessSpec::default()
        }
    }

    /// Adds `flag value`.
    pub fn flag(mut self, flag: &str, value: impl Into<OsString>) -> Self {
        self.args.push(flag.into());
        self.args.push(value.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }
}

/// The command line of one `caplab-node` member: its id, client and peer listeners and data
/// directory, the admin token in `CAPLAB_ADMIN_TOKEN`, then `extra` arguments.
pub fn node_spec(
    binary: &Path,
    id: u64,
    client: &str,
    peer: &str,
    data_dir: &Path,
    token: &str,
    extra: &[String],
) -> ProcessSpec {
    ProcessSpec::new(binary, data_dir.with_extension("log"))
        .flag("--id", id.to_string())
        .flag("--client-listen", client)
        .flag("--peer-listen", peer)
        .flag("--data-dir", data_dir)
        .args(extra)
        .env("CAPLAB_ADMIN_TOKEN", token)
}

/// A process started from a [`ProcessSpec`]; SIGKILLed when dropped.
#[derive(Debug)]
pub struct Process {
    spec: ProcessSpec,
    child: Option<Child>,
}

impl Process {
    /// Starts `spec`.
    pub fn start(spec: ProcessSpec) -> io::Result<Self> {
        let mut process = Process { spec, child: None };
        process.restart()?;
        Ok(process)
    }

    /// Kills the process if it runs, then starts it again from its spec.
    pub fn restart(&mut self) -> io::Result<()> {
        self.kill();
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.spec.log)?;
        let child = Command::new(&self.spec.program)
            .args(&self.spec.args)
            .envs(self.spec.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("starting {}: {e}", self.spec.program.display()),
                )
            })?;
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL (what `Child::kill` sends on Unix), then reap: no graceful shutdown, no chance
    /// to flush anything.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn spec(&self) -> &ProcessSpec {
        &self.spec
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_below_the_ephemeral_range_and_not_repeated() {
        let a = free_port().unwrap();
        let b = free_port().unwrap();
        assert_ne!(a, b);
        assert!((10_000..32_000).contains(&a));
    }

    #[test]
    fn processes_restart_and_die_with_their_handle() {
        let dir = tempfile::tempdir().unwrap();
        let spec = ProcessSpec::new("sleep", dir.path().join("sleep.log")).args(["30"]);
        let mut p = Process::start(spec).unwrap();
        assert!(p.is_running());
        p.kill();
        assert!(!p.is_running());
        p.restart().unwrap();
        assert!(p.is_running());
        let missing = ProcessSpec::new("/nonexistent/caplab", dir.path().join("x.log"));
        let e = Process::start(missing).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/caplab"), "{e}");
    }
}
