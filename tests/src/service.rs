//! An ERIOP service run as its own process (the binary `cargo build` made, beside this one),
//! configured by `ERIOP_*` variables as a deployment configures it, its log in a file: the
//! fault suite kills it with SIGKILL and starts it again, as a crash and a restart policy do.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub struct Service {
    pub name: String,
    binary: PathBuf,
    args: Vec<String>,
    env: BTreeMap<String, String>,
    log: PathBuf,
    child: Option<Child>,
    /// How often it was started.
    pub starts: u32,
}

/// The folder of this executable: `cargo build` puts every binary of the workspace there.
pub fn binaries_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."))
}

impl Service {
    /// `binary` (e.g. `eriop-gateway`) from [`binaries_dir`], logging to `{log_dir}/{name}.log`.
    pub fn new(name: &str, binary: &str, args: &[&str], log_dir: &Path) -> Self {
        Self {
            name: name.to_owned(),
            binary: binaries_dir().join(binary),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            env: BTreeMap::new(),
            log: log_dir.join(format!("{name}.log")),
            child: None,
            starts: 0,
        }
    }

    pub fn env(&mut self, key: &str, value: impl Into<String>) -> &mut Self {
        self.env.insert(key.to_owned(), value.into());
        self
    }

    pub fn exists(&self) -> bool {
        self.binary.exists()
    }

    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} runs already", self.name);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|e| panic!("{}: {e}", self.log.display()));
        let err = log.try_clone().unwrap();
        // Only what the service is given: no ERIOP_* of the calling shell leaks in.
        let inherited = std::env::vars().filter(|(k, _)| !k.starts_with("ERIOP_"));
        let child = Command::new(&self.binary)
            .args(&self.args)
            .env_clear()
            .envs(inherited)
            .envs(&self.env)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "{} ({}): {e}; build it first (make test-faults does)",
                    self.name,
                    self.binary.display()
                )
            });
        self.child = Some(child);
        self.starts += 1;
    }

    /// SIGKILL: no shutdown hook runs, nothing is flushed, connections just drop.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether it runs; a service that exited on its own is reported with its status.
    pub fn exited(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => Some(format!("{} exited: {status}", self.name)),
            Ok(None) => None,
            Err(e) => Some(format!("{}: {e}", self.name)),
        }
    }

    /// Its process id while it runs (the benchmark reads its CPU time and memory in /proc).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}
