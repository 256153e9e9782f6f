//! The server's CPU and memory, sampled from /proc during the run, and GPU utilisation from
//! nvidia-smi where there is one.

use std::process::Command;
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Usage {
    /// Mean CPU over the run, in percent of one core (200 = two cores busy).
    pub server_cpu_pct: Option<f64>,
    pub server_rss_mb: Option<f64>,
    pub gpu_util_pct: Option<f64>,
}

pub struct Sampler {
    stop: Sender<()>,
    handle: JoinHandle<Usage>,
}

fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may itself hold spaces, closed by the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn gpu_util() -> Option<f64> {
    let out = Command::new("nvidia-smi")
        .args([
            "--query-gpu=utilization.gpu",
            "--format=csv,noheader,nounits",
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let values: Vec<f64> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

impl Sampler {
    pub fn start(pid: Option<u32>) -> Sampler {
        let (stop, flag) = channel::<()>();
        let handle = std::thread::spawn(move || {
            // SAFETY: sysconf has no preconditions.
            let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
            let start = Instant::now();
            let ticks0 = pid.and_then(cpu_ticks);
            let mut rss_max: Option<f64> = None;
            let mut gpu = Vec::new();
            let has_gpu = gpu_util().is_some();
            let mut last_gpu = Instant::now();
            loop {
                if let Some(r) = pid.and_then(rss_mb) {
                    rss_max = Some(rss_max.map_or(r, |m: f64| m.max(r)));
                }
                if has_gpu && last_gpu.elapsed() >= Duration::from_millis(500) {
                    gpu.extend(gpu_util());
                    last_gpu = Instant::now();
                }
                // Wakes at once when stopped, so the run's end is not delayed.
                match flag.recv_timeout(Duration::from_millis(100)) {
                    Err(RecvTimeoutError::Timeout) => {}
                    _ => break,
                }
            }
            let cpu = match (ticks0, pid.and_then(cpu_ticks)) {
                (Some(a), Some(b)) => {
                    Some((b - a) as f64 / hz / start.elapsed().as_secs_f64() * 100.0)
                }
                _ => None,
            };
            Usage {
                server_cpu_pct: cpu,
                server_rss_mb: rss_max,
                gpu_util_pct: (!gpu.is_empty()).then(|| gpu.iter().sum::<f64>() / gpu.len() as f64),
            }
        });
        Sampler { stop, handle }
    }

    pub fn finish(self) -> Usage {
        let _ = self.stop.send(());
        self.handle.join().unwrap_or_default()
    }
}
