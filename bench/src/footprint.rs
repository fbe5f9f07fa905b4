//! Load time and memory, ours and llama.cpp's on the same file: the wall time from process
//! start (or `Engine::load`) to the first generated token, and peak resident memory, for
//! `deal bench decode`. llama.cpp's side runs `llama-simple -n 1` as a child process and
//! reads its own peak RSS from `wait4`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

/// Resident and peak resident bytes of this process (`VmRSS`, `VmHWM`); zeros where
/// `/proc` is not available.
pub fn rss_self() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb << 10)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// One engine's footprint.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Footprint {
    /// Wall seconds from start to the first generated token (load + a short prompt + 1 token).
    pub first_token_secs: f64,
    /// Peak resident bytes until then.
    pub peak_rss: u64,
}

/// llama.cpp's footprint on `model`: `llama-simple -n 1` with the same prompt text (on all
/// cores, as deal), timed from spawn to exit, its peak RSS from `wait4`.
pub fn llamacpp(model: &Path, prompt: &str) -> anyhow::Result<Footprint> {
    let exe = crate::llamacpp::tool("llama-simple").ok_or_else(|| anyhow::anyhow!("llama-simple not built"))?;
    let t = Instant::now();
    let child = Command::new(exe)
        .arg("-m")
        .arg(model)
        .args(["-n", "1", prompt])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: plain FFI call on our own child's pid; `ru` is a zeroed out-parameter.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    let secs = t.elapsed().as_secs_f64();
    anyhow::ensure!(r == pid, "wait4 failed: {}", std::io::Error::last_os_error());
    anyhow::ensure!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "llama-simple failed (status {status})");
    std::mem::forget(child); // already reaped
    Ok(Footprint { first_token_secs: secs, peak_rss: (ru.ru_maxrss as u64) << 10 })
}

/// Memory bandwidth of this machine, STREAM-style: every core copies its share of a buffer
/// far larger than the caches; the best of 5 rounds, in bytes per second (read + write).
pub fn copy_bandwidth() -> f64 {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per = 256usize << 20;
    let mut bufs: Vec<(Vec<u8>, Vec<u8>)> = (0..workers).map(|i| (vec![i as u8 + 1; per], vec![0u8; per])).collect();
    let mut best = 0f64;
    for _ in 0..5 {
        let t = Instant::now();
        std::thread::scope(|s| {
            for (src, dst) in bufs.iter_mut() {
                s.spawn(move || dst.copy_from_slice(src));
            }
        });
        let secs = t.elapsed().as_secs_f64();
        best = best.max((2 * per * workers) as f64 / secs);
    }
    std::hint::black_box(&bufs);
    best
}
