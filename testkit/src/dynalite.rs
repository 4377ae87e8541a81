//! A real DynamoDB-compatible server (dynalite, from `tools/dynalite`) on a free loopback port.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::net::{free_port, set_local_aws_env, wait_for_port};
use crate::{workspace_root, TempDir};

pub struct Dynalite {
    pub port: u16,
    child: Option<Child>,
    /// Set when the data lives on disk (survives restarts).
    dir: Option<TempDir>,
}

fn dynalite_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("DYNALITE_BIN") {
        return bin.into();
    }
    let root = workspace_root().join("tools/dynalite");
    assert!(
        root.join("node_modules/dynalite").exists(),
        "dynalite is not installed under {}: run `npm ci --prefix tools/dynalite` (scripts/test does it)",
        root.display()
    );
    root.join("run.js")
}

impl Dynalite {
    /// In-memory dynalite.
    pub fn start() -> Self {
        Self::launch(None)
    }

    /// Dynalite keeping its data in a folder, so that it survives [`Dynalite::restart`].
    pub fn start_persistent() -> Self {
        Self::launch(Some(TempDir::new("dynalite")))
    }

    fn launch(dir: Option<TempDir>) -> Self {
        set_local_aws_env();
        let mut server = Self {
            port: free_port(),
            child: None,
            dir,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(std::env::var("NODE_BIN").unwrap_or_else(|_| "node".into()));
        cmd.arg(dynalite_bin())
            .args(["--port", &self.port.to_string(), "--host", "127.0.0.1"])
            .env("CANVAS_PARENT_PID", std::process::id().to_string());
        if let Some(dir) = &self.dir {
            cmd.arg("--path").arg(dir.path());
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start dynalite with node ({e}); run scripts/test"));
        self.child = Some(child);
        assert!(
            wait_for_port(self.port, Duration::from_secs(20)),
            "dynalite did not start on port {}",
            self.port
        );
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stops it (SIGKILL).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (with the same data, if persistent).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for Dynalite {
    fn drop(&mut self) {
        self.stop();
    }
}
