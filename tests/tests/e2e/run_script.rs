//! `make run` supervises what it starts (scripts/supervise.sh): a command that exits is
//! restarted with a doubling pause and a line saying which and why; SIGTERM (what `make run`
//! sends on Ctrl-C) stops everything and leaves no process behind.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

fn alive(pid: u32) -> bool {
    // A zombie is gone for all purposes: its status line says Z.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

#[tokio::test]
async fn the_supervisor_restarts_what_exits_with_backoff_and_leaves_nothing_behind() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/supervise.sh");
    let mut child = tokio::process::Command::new("bash")
        .arg(&script)
        .args(["crash", "sh -c 'echo boom; exit 3'", "steady", "sleep 1000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut restarts = Vec::new();
    let mut pids = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), async {
        while restarts.len() < 2 {
            let line = stderr
                .next_line()
                .await
                .unwrap()
                .expect("the supervisor runs");
            if let Some(rest) = line.strip_prefix("run: started ") {
                let pid: u32 = rest
                    .rsplit("pid ")
                    .next()
                    .unwrap()
                    .trim_end_matches(')')
                    .parse()
                    .unwrap();
                pids.push(pid);
            }
            if line.starts_with("run: crash exited with status 3; restarting it in") {
                restarts.push(line);
            }
        }
    })
    .await
    .expect("two restarts of the command that exits");
    assert!(restarts[0].contains("in 1 s"), "{restarts:?}");
    assert!(
        restarts[1].contains("in 2 s"),
        "the pause doubles: {restarts:?}"
    );
    // The steady command's output is prefixed, and it is still the first one started.
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = stdout.next_line().await.unwrap().unwrap();
    assert_eq!(first, "[crash] boom");
    assert!(pids.iter().any(|p| alive(*p)), "the steady command runs");

    let pid = child.id().unwrap();
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("the supervisor stops")
        .unwrap();
    assert!(status.success());
    for pid in pids {
        assert!(!alive(pid), "pid {pid} was left behind");
    }
}
