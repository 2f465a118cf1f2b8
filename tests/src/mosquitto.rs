//! A private Mosquitto per test, with a TLS listener and a CA the test makes (openssl), so a
//! test can restart its broker and its traffic stays its own.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Broker {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(status.success(), "openssl {args:?}");
}

/// A CA (`{name}.pem`, `{name}.key`) in `dir`.
pub fn make_ca(dir: &Path, name: &str) -> PathBuf {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    dir.join(format!("{name}.pem"))
}

/// A port nobody listens on now (the OS's choice).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Broker {
    /// A broker with a TLS listener on 127.0.0.1 whose certificate `ca` signed.
    pub fn start_tls() -> Self {
        Self::start_tls_on(free_port())
    }

    /// The same on a given port (Dimonoff's device SDK always connects to 8883).
    pub fn start_tls_on(port: u16) -> Self {
        Self::build(port, false)
    }

    /// A TLS broker that refuses clients without a certificate its CA signed (mutual TLS).
    pub fn start_tls_requiring_client_certificates() -> Self {
        Self::build(free_port(), true)
    }

    /// A client certificate and key signed by the broker's CA: `(cert, key)` paths.
    pub fn client_certificate(&self, name: &str) -> (PathBuf, PathBuf) {
        let path = self.dir.path();
        // A v3 certificate (rustls accepts no other) for client authentication.
        std::fs::write(
            path.join("client-ext.cnf"),
            "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
        )
        .unwrap();
        let (key, csr, cert) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
        );
        openssl(
            path,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                &format!("/CN={name}"),
                "-keyout",
                &key,
                "-out",
                &csr,
            ],
        );
        openssl(
            path,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                &cert,
                "-extfile",
                "client-ext.cnf",
            ],
        );
        (path.join(cert), path.join(key))
    }

    /// The deployment's own broker configuration (`deploy/mosquitto/mosquitto.conf` and its
    /// ACL file, as shipped) on a free port, with the test's certificates and a password file
    /// holding `accounts` (user name, password).
    pub fn start_shipped(accounts: &[(&str, &str)]) -> Self {
        let port = free_port();
        let dir = Self::certificates();
        let path = dir.path();
        let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/mosquitto");
        let passwd = path.join("passwd");
        std::fs::write(&passwd, "").unwrap();
        for (user, password) in accounts {
            let status = Command::new("mosquitto_passwd")
                .arg("-b")
                .arg(&passwd)
                .arg(user)
                .arg(password)
                .status()
                .expect("mosquitto_passwd runs (Debian's mosquitto package)");
            assert!(status.success());
        }
        std::fs::copy(deploy.join("acl"), path.join("acl")).unwrap();
        let shipped = std::fs::read_to_string(deploy.join("mosquitto.conf")).unwrap();
        let d = path.display().to_string();
        let mut conf = shipped
            .replace("listener 8883", &format!("listener {port} 127.0.0.1"))
            .replace("/mosquitto/certs/ca.crt", &format!("{d}/ca.pem"))
            .replace("/mosquitto/certs/server.crt", &format!("{d}/server.pem"))
            .replace("/mosquitto/certs/server.key", &format!("{d}/server.key"))
            .replace("/mosquitto/config/", &format!("{d}/"))
            .replace("/mosquitto/data/", &format!("{d}/data/"))
            .replace(
                "log_dest stdout",
                &format!("log_dest file {d}/mosquitto.log"),
            );
        if runs_as_root() {
            conf.push_str("user root\n");
        }
        std::fs::write(path.join("mosquitto.conf"), conf).unwrap();
        let mut broker = Self {
            port,
            dir,
            child: None,
        };
        broker.start();
        broker
    }

    /// What the broker logged (the shipped configuration logs to a file in its folder).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    /// A folder with a CA (`ca.pem`) and a server certificate for 127.0.0.1 it signed.
    fn certificates() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path();
        make_ca(path, "ca");
        openssl(
            path,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=127.0.0.1",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
            ],
        );
        std::fs::write(
            path.join("ext.cnf"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .unwrap();
        openssl(
            path,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                "server.pem",
                "-extfile",
                "ext.cnf",
            ],
        );
        std::fs::create_dir_all(path.join("data")).unwrap();
        dir
    }

    fn build(port: u16, require_client_certificates: bool) -> Self {
        let dir = Self::certificates();
        let path = dir.path();
        // Anonymous access on this test listener, as on Fundamentum's test setups; enough in
        // flight and queued that the bridge's batching is never throttled (DESIGN.md rule 6);
        // sessions saved every second, as deployed (deploy/mosquitto/mosquitto.conf).
        std::fs::write(
            path.join("mosquitto.conf"),
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\ncafile {d}/ca.pem\ncertfile {d}/server.pem\nkeyfile {d}/server.key\n\
                 persistence true\npersistence_location {d}/data/\nautosave_interval 1\nmax_inflight_messages 1000\nmax_queued_messages 1000000\n\
                 log_dest none\n{user}{mutual}",
                d = path.display(),
                mutual = if require_client_certificates { "require_certificate true\n" } else { "" },
                // Run as root (CI is), Mosquitto would drop to its own user and lose access to the test's files.
                user = if runs_as_root() { "user root\n" } else { "" },
            ),
        )
        .unwrap();
        let mut broker = Self {
            port,
            dir,
            child: None,
        };
        broker.start();
        broker
    }

    /// The broker's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(std::process::Child::id)
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Starts the broker (again, after [`Self::kill`]) on its port and persistence folder.
    pub fn start(&mut self) {
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto starts (Debian's mosquitto package)");
        self.child = Some(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("mosquitto did not listen on {}", self.port);
    }

    /// Stops it as `docker stop` would (SIGTERM: it saves its persistence), and waits.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }

    /// Kills the broker as a crash would (SIGKILL): what it had not saved is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.start();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Whether this process runs as root (uid 0), read from /proc: no libc call needed.
fn runs_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}
