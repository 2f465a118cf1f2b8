//! CPU time and memory of the deployment's processes, read from /proc (Linux): what each
//! service costs during a run, and how much it holds idle.
//!
//! * CPU: `utime + stime` of `/proc/{pid}/stat` before and after a run, divided by the run's
//!   wall time: cores used (1.0 = one core busy all along).
//! * Memory: resident set size. For one process, its peak (`VmHWM`, reset at the start of a
//!   run through `clear_refs`); for PostgreSQL (a postmaster and its backends, which share
//!   their buffers) the largest sum of proportional set sizes (`Pss`) seen by a sampler, so
//!   shared pages count once.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A process of the deployment, by name.
#[derive(Debug, Clone)]
pub struct Watched {
    pub name: String,
    pub pid: u32,
    /// PostgreSQL: the postmaster and its children count together.
    pub tree: bool,
}

/// What one process used during a run.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    /// Cores used on average.
    pub cores: f64,
    /// Peak resident memory, MiB.
    pub peak_mib: f64,
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// Fields of `/proc/{pid}/stat` after the command name (which may hold spaces).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// `utime + stime` in clock ticks.
fn ticks(pid: u32) -> u64 {
    stat_fields(pid)
        .and_then(|f| Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?))
        .unwrap_or(0)
}

/// `pid` and, for a tree, its children (one level: PostgreSQL's backends).
fn members(w: &Watched) -> Vec<u32> {
    let mut pids = vec![w.pid];
    if w.tree {
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let parent = stat_fields(pid).and_then(|f| f.get(1)?.parse::<u32>().ok());
            if parent == Some(w.pid) {
                pids.push(pid);
            }
        }
    }
    pids
}

/// A `kB` line of a /proc status-like file, in KiB.
fn kib(path: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Resident memory now, MiB: RSS of one process, or the PSS sum of a tree.
pub fn resident_mib(w: &Watched) -> f64 {
    let kib_total: u64 = if w.tree {
        members(w)
            .iter()
            .filter_map(|p| kib(&format!("/proc/{p}/smaps_rollup"), "Pss:"))
            .sum()
    } else {
        kib(&format!("/proc/{}/status", w.pid), "VmRSS:").unwrap_or(0)
    };
    kib_total as f64 / 1024.0
}

/// How often a run reads PostgreSQL's proportional set size (see [`Meter::start`]).
const PSS_EVERY: Duration = Duration::from_secs(5);

/// Measures the watched processes from [`Meter::start`] to [`Meter::stop`].
pub struct Meter {
    watched: Vec<Watched>,
    started: Instant,
    ticks: BTreeMap<String, u64>,
    peaks: std::sync::Arc<std::sync::Mutex<BTreeMap<String, f64>>>,
    sampler: tokio::task::JoinHandle<()>,
}

fn tree_ticks(w: &Watched) -> u64 {
    members(w).into_iter().map(ticks).sum()
}

impl Meter {
    pub fn start(watched: &[Watched]) -> Self {
        for w in watched.iter().filter(|w| !w.tree) {
            // "5" resets the peak resident size (proc(5), clear_refs).
            let _ = std::fs::write(format!("/proc/{}/clear_refs", w.pid), "5");
        }
        let ticks = watched
            .iter()
            .map(|w| (w.name.clone(), tree_ticks(w)))
            .collect();
        let peaks = std::sync::Arc::new(std::sync::Mutex::new(BTreeMap::new()));
        let trees: Vec<Watched> = watched.iter().filter(|w| w.tree).cloned().collect();
        let sampled = peaks.clone();
        // Reading a tree's proportional set size walks the page tables of each of its
        // processes (PostgreSQL's shared buffers in every backend): tens of milliseconds of
        // kernel time. So on a blocking thread: never on the runtime whose workers publish
        // the load, where it would delay the lights (seen in a profile as `smaps_account`,
        // 3% of the machine at 10,000 messages a second). And every [`PSS_EVERY`], not every
        // second: once a second it was still 2.4% of the machine in a profile of the
        // 10,000/s run, CPU the system under test did not have. PostgreSQL's memory grows
        // as its buffers fill, slowly; `stop` reads it once more at the end.
        let sampler = tokio::spawn(async move {
            loop {
                let trees = trees.clone();
                let sampled = sampled.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    for w in &trees {
                        let now = resident_mib(w);
                        if let Ok(mut peaks) = sampled.lock() {
                            let peak = peaks.entry(w.name.clone()).or_insert(0.0);
                            *peak = f64::max(*peak, now);
                        }
                    }
                })
                .await;
                tokio::time::sleep(PSS_EVERY).await;
            }
        });
        Self {
            watched: watched.to_vec(),
            started: Instant::now(),
            ticks,
            peaks,
            sampler,
        }
    }

    /// Each process's cores and peak memory since [`Meter::start`].
    pub fn stop(self) -> BTreeMap<String, Usage> {
        self.sampler.abort();
        let wall = self.started.elapsed().as_secs_f64().max(1e-3);
        let hz = clock_ticks();
        let peaks = self.peaks.lock().map(|p| p.clone()).unwrap_or_default();
        self.watched
            .iter()
            .map(|w| {
                let before = self.ticks.get(&w.name).copied().unwrap_or(0);
                let used = tree_ticks(w).saturating_sub(before) as f64 / hz;
                let peak_mib = if w.tree {
                    let sampled = peaks.get(&w.name).copied().unwrap_or(0.0);
                    f64::max(sampled, resident_mib(w))
                } else {
                    kib(&format!("/proc/{}/status", w.pid), "VmHWM:").unwrap_or(0) as f64 / 1024.0
                };
                (
                    w.name.clone(),
                    Usage {
                        cores: used / wall,
                        peak_mib,
                    },
                )
            })
            .collect()
    }
}
