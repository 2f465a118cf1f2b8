//! The edge as shipped (deploy/nginx): `nginx -t` accepts it, and nginx serving it in front
//! of a real gateway adds the security headers, hides `/metrics`, refuses large bodies
//! except on bulk registration, refuses other host names, and limits logins per address.
//!
//! The one change made to the files: paths (certificates, the included proxy settings),
//! the listening ports and the upstream's address, which name a Docker network's hosts.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use eriop_tests::mosquitto::free_port;
use eriop_tests::{wait, TestApp};

const HOST: &str = "eriop.example.org";

fn nginx() -> PathBuf {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("nginx (make test installs Debian's nginx-core)")
}

fn deploy(file: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy/nginx")
            .join(file),
    )
    .unwrap()
}

/// The shipped configuration in `dir`, on these ports, in front of `upstream`.
fn configure(dir: &Path, upstream: &str, http: u16, https: u16) -> PathBuf {
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let status = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", &format!("/CN={HOST}")])
        .args(["-addext", &format!("subjectAltName=DNS:{HOST}")])
        .arg("-keyout")
        .arg(certs.join("server.key"))
        .arg("-out")
        .arg(certs.join("server.crt"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let conf = deploy("nginx.conf");
    for (shipped, count) in [
        ("server gateway:8080;", 1),
        ("listen 443 ", 2),
        ("listen 80 ", 1),
        ("listen 80;", 1),
    ] {
        assert_eq!(
            conf.matches(shipped).count(),
            count,
            "{shipped} in nginx.conf"
        );
    }
    let conf = conf
        .replace("/etc/nginx/certs/", &format!("{}/", certs.display()))
        .replace(
            "/etc/nginx/eriop-proxy.conf",
            &dir.join("eriop-proxy.conf").display().to_string(),
        )
        .replace("server gateway:8080;", &format!("server {upstream};"))
        .replace("listen 443 ", &format!("listen 127.0.0.1:{https} "))
        .replace("listen 80 ", &format!("listen 127.0.0.1:{http} "))
        .replace("listen 80;", &format!("listen 127.0.0.1:{http};"));
    std::fs::write(dir.join("eriop-proxy.conf"), deploy("eriop-proxy.conf")).unwrap();
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    path
}

/// Process-wide settings that the shipped file leaves to the image: where the pid file and
/// the error log go.
fn globals(dir: &Path, foreground: bool) -> String {
    format!(
        "pid {}/nginx.pid; error_log {}/error.log;{}",
        dir.display(),
        dir.display(),
        if foreground { " daemon off;" } else { "" }
    )
}

#[test]
fn nginx_accepts_the_shipped_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let conf = configure(dir.path(), "127.0.0.1:9", free_port(), free_port());
    let out = Command::new(nginx())
        .arg("-t")
        .arg("-c")
        .arg(&conf)
        .args(["-g", &globals(dir.path(), false)])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "nginx -t: {said}");
    assert!(said.contains("test is successful"), "{said}");
    // The first line of the API's server block is its rate limit.
    let shipped = deploy("nginx.conf");
    let tls_server = shipped.split("server {").nth(3).unwrap();
    let first = tls_server
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap();
    assert!(first.starts_with("limit_req "), "{first}");
}

struct Edge {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Edge {
    /// SIGTERM, not SIGKILL: nginx's master then stops its workers (killed, it leaves them
    /// running, orphaned).
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_front_of_a_gateway_the_edge_adds_headers_hides_metrics_and_limits() {
    let app = TestApp::spawn().await;
    let upstream = app.base.trim_start_matches("http://").to_owned();
    let dir = tempfile::tempdir().unwrap();
    let (http, https) = (free_port(), free_port());
    let conf = configure(dir.path(), &upstream, http, https);
    let child = Command::new(nginx())
        .arg("-c")
        .arg(&conf)
        .args(["-g", &globals(dir.path(), true)])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _edge = Edge { child, _dir: dir };
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .resolve(HOST, ([127, 0, 0, 1], https).into())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let url = |path: &str| format!("https://{HOST}:{https}{path}");
    let live = wait::until("nginx answers", Duration::from_secs(20), || async {
        client.get(url("/health/live")).send().await.ok()
    })
    .await;
    assert_eq!(live.status(), 200);
    let headers = live.headers();
    assert!(headers["strict-transport-security"]
        .to_str()
        .unwrap()
        .contains("max-age=63072000"));
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert!(headers.contains_key("content-security-policy"));
    assert!(headers.contains_key("x-request-id"), "the gateway answered");
    assert!(!headers.contains_key("server") || headers["server"] == "nginx");

    // /metrics: the gateway has it, the Internet does not.
    let direct = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status(), 200);
    assert_eq!(
        client.get(url("/metrics")).send().await.unwrap().status(),
        404
    );

    // Bodies: 2 MiB is refused by the edge for an ordinary route, passed on for bulk
    // registration (a JSON array, mostly white space: the gateway reads it all and answers).
    let mut body = vec![b'['];
    body.resize(2 << 20, b' ');
    body.push(b']');
    let ordinary = client
        .post(url("/api/v1/devices"))
        .bearer_auth(&app.token)
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(ordinary.status(), 413);
    let bulk = client
        .post(url("/api/v1/devices/bulk"))
        .bearer_auth(&app.token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_ne!(bulk.status(), 413);
    assert!(
        bulk.headers().contains_key("x-request-id"),
        "the gateway answered the bulk call: {}",
        bulk.status()
    );

    // Another host name: no answer at all. Plain HTTP: sent to HTTPS.
    let other = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    assert!(other
        .get(format!("https://127.0.0.1:{https}/health/live"))
        .send()
        .await
        .is_err());
    let plain = client
        .get(format!("http://{HOST}:{http}/health/live"))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 301);

    // Logins from one address: past the edge's burst, nginx itself answers 429 (HTML, not
    // the gateway's problem+json), before any password is hashed.
    let attempts = (0..80).map(|_| {
        client
            .post(url("/api/v1/auth/login"))
            .json(&serde_json::json!({"email": "nobody@eriop.test", "password": "wrong"}))
            .send()
    });
    let answers = futures::future::join_all(attempts).await;
    let by_edge = answers
        .iter()
        .filter_map(|a| a.as_ref().ok())
        .filter(|a| a.status() == 429 && !a.headers().contains_key("x-request-id"))
        .count();
    assert!(by_edge > 0, "some logins refused by nginx's limit_req");
}
