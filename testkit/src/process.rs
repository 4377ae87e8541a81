//! A child process of a test (the real `gateway` or `saver` binary): started with the environment the test gives,
//! its stderr in a log file the test can show on failure, signalled by number, and killed when dropped so that no
//! test leaves a process behind.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The signals tests send, for crates without their own `libc`.
pub use libc::{SIGKILL, SIGTERM};

/// How to start a [`ChildProcess`]; [`ChildProcess::command`] makes one.
pub struct ProcessBuilder {
    name: String,
    command: Command,
    log: Option<PathBuf>,
}

impl ProcessBuilder {
    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Self {
        self.command.env(key, value);
        self
    }

    pub fn env_remove(mut self, key: &str) -> Self {
        self.command.env_remove(key);
        self
    }

    /// Only what the test sets, plus `PATH`, `HOME` and `RUST_BACKTRACE`: nothing from the developer's shell
    /// (OTEL_*, tokens, log formats) changes what the process does.
    pub fn clean_env(mut self) -> Self {
        self.command.env_clear();
        for key in ["PATH", "HOME", "RUST_BACKTRACE"] {
            if let Ok(value) = std::env::var(key) {
                self.command.env(key, value);
            }
        }
        self
    }

    /// Sends stderr to `dir/<name>.log` (otherwise it is discarded).
    pub fn log_in(mut self, dir: &Path) -> Self {
        self.log = Some(dir.join(format!("{}.log", self.name)));
        self
    }

    pub fn spawn(mut self) -> ChildProcess {
        let stderr = match &self.log {
            Some(path) => std::fs::File::create(path)
                .map(Stdio::from)
                .unwrap_or_else(|e| panic!("log file {}: {e}", path.display())),
            None => Stdio::null(),
        };
        let child = self
            .command
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.name));
        ChildProcess {
            name: self.name,
            child,
            log: self.log,
        }
    }
}

/// A running child process, SIGKILLed on drop unless it has exited.
pub struct ChildProcess {
    name: String,
    child: Child,
    log: Option<PathBuf>,
}

impl ChildProcess {
    /// A process named `name` (in messages and its log file) running `program`.
    pub fn command(name: &str, program: impl AsRef<OsStr>) -> ProcessBuilder {
        ProcessBuilder {
            name: name.to_string(),
            command: Command::new(program),
            log: None,
        }
    }

    /// What it wrote to stderr so far (empty without a log).
    pub fn logs(&self) -> String {
        self.log
            .as_ref()
            .and_then(|path| std::fs::read_to_string(path).ok())
            .unwrap_or_default()
    }

    /// Sends signal `sig` ([`SIGTERM`], [`SIGKILL`], …).
    pub fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// Its exit status, once it has exited.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits up to `within` for it to exit; `None` if it is still running then.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.exit_status() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM (the services drain and flush on the way out), then up to `within` for the exit; SIGKILL after.
    pub async fn terminate(&mut self, within: Duration) -> Option<ExitStatus> {
        self.signal(libc::SIGTERM);
        let status = self.wait_exit(within).await;
        if status.is_none() {
            eprintln!(
                "{} did not exit {within:?} after SIGTERM; killing it",
                self.name
            );
            self.kill();
        }
        status
    }

    /// SIGKILL, and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
