//! A private PostgreSQL cluster per test (`initdb` in a temporary folder, its own port), for
//! what the shared server cannot show: cluster-wide objects made for the first time (roles),
//! or a database server a test may kill.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

pub struct PrivatePostgres {
    pub port: u16,
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// `-c name=value` settings of the server, beside the port and socket.
    settings: Vec<String>,
}

/// The tests' settings: `fsync=off` (see [`PrivatePostgres::start`]).
const TEST_SETTINGS: &[&str] = &["fsync=off", "max_connections=200"];

/// Debian's server binaries (the newest installed major version).
fn server_bin() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL's server binaries (Debian's postgresql package)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().expect("an initdb under /usr/lib/postgresql")
}

fn runs_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

impl PrivatePostgres {
    /// Runs a server tool; as the `postgres` user when this process is root (PostgreSQL
    /// refuses to run as root).
    fn tool(&self, name: &str) -> Command {
        let path = self.bin.join(name);
        if runs_as_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    /// A new cluster with trust authentication for `postgres` on 127.0.0.1, started.
    ///
    /// `fsync=off`: the tests kill the server process, never the machine, so what it wrote
    /// is in the kernel's page cache and survives; crash recovery still replays its WAL.
    pub fn start() -> Self {
        Self::start_with(TEST_SETTINGS)
    }

    /// A new cluster with these server settings (`name=value`, as `postgres -c` takes them):
    /// the benchmark's is durable (fsync on) and records commit times.
    pub fn start_with(settings: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        if runs_as_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success());
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cluster = Self {
            port,
            dir,
            bin: server_bin(),
            settings: settings.iter().map(|s| format!("-c {s}")).collect(),
        };
        let data = cluster.dir.path().join("data");
        let status = cluster
            .tool("initdb")
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "initdb");
        cluster.resume();
        cluster
    }

    /// Starts the server (again) on its port and data: after [`Self::kill`], PostgreSQL
    /// recovers from its WAL as after a crash.
    pub fn resume(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 {}",
            self.port,
            self.dir.path().display(),
            self.settings.join(" ")
        );
        let status = self
            .tool("pg_ctl")
            .args(["-w", "-t", "60", "-D"])
            .arg(self.dir.path().join("data"))
            .args(["-o", &options, "-l"])
            .arg(self.dir.path().join("server.log"))
            .arg("start")
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "pg_ctl start");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The postmaster's process id while it runs (its backends are its children).
    pub fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.path().join("data/postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// Kills the server as a crash would: SIGKILL to every backend and to the postmaster,
    /// no checkpoint, no goodbye to the clients. Returns once the port is closed.
    pub fn kill(&self) {
        let Some(pid) = self.pid().map(|p| p.to_string()) else {
            return;
        };
        let _ = Command::new("pkill").args(["-KILL", "-P", &pid]).status();
        let _ = Command::new("kill").args(["-KILL", &pid]).status();
        for _ in 0..200 {
            let alive = Command::new("kill")
                .args(["-0", &pid])
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !alive && std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The URL of database `name` on this cluster.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self
            .tool("pg_ctl")
            .args(["-m", "immediate", "-D"])
            .arg(self.dir.path().join("data"))
            .arg("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
