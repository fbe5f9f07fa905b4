//! llama.cpp as the speed peer: runs its `llama-bench` and `llama-batched-bench` (built by
//! `bench/llamacpp/build.sh` from the PyPI `llama-cpp-python` sdist) on the same GGUF and
//! thread count, and parses their numbers. Absent binaries are reported, not fatal.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the llama.cpp binaries are: `$DEAL_LLAMACPP_BIN`, else `$DEAL_HOME/llama.cpp/bin`.
pub fn bin_dir() -> PathBuf {
    match std::env::var_os("DEAL_LLAMACPP_BIN").filter(|s| !s.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => deal_engine::setup::deal_home().join("llama.cpp").join("bin"),
    }
}

/// Path of one llama.cpp tool, if built.
pub fn tool(name: &str) -> Option<PathBuf> {
    let p = bin_dir().join(name);
    p.is_file().then_some(p)
}

/// Decode tok/s at batch 1 from `llama-bench -p 0 -n <n>`.
pub fn bench_b1(model: &Path, threads: usize, n: usize) -> anyhow::Result<f64> {
    llama_bench(model, threads, 0, n, 3)
}

/// Prompt-processing tok/s for an `n`-token prompt from `llama-bench -p <n> -n 0`.
pub fn bench_prefill(model: &Path, threads: usize, n: usize) -> anyhow::Result<f64> {
    llama_bench(model, threads, n, 0, 2)
}

/// `llama-bench -p <prompt> -n <gen> -r <reps>`: the mean tok/s of its one test (prompt
/// processing when `gen` is 0, generation otherwise).
fn llama_bench(model: &Path, threads: usize, prompt: usize, gen: usize, reps: usize) -> anyhow::Result<f64> {
    let exe = tool("llama-bench").ok_or_else(|| anyhow::anyhow!("llama-bench not built"))?;
    let out = Command::new(exe)
        .args(["-m"])
        .arg(model)
        .args(["-t", &threads.to_string(), "-p", &prompt.to_string(), "-n", &gen.to_string(), "-r", &reps.to_string(), "-o", "json"])
        .output()?;
    if !out.status.success() {
        anyhow::bail!("llama-bench failed: {}", String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or(""));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let key = if gen > 0 { "n_gen" } else { "n_prompt" };
    v.as_array()
        .and_then(|a| a.iter().find(|r| r[key].as_u64().unwrap_or(0) > 0))
        .and_then(|r| r["avg_ts"].as_f64())
        .ok_or_else(|| anyhow::anyhow!("no avg_ts in llama-bench output"))
}

/// Aggregate text-generation tok/s per batch size from `llama-batched-bench` (prompt shared
/// across the parallel sequences, like our forked rows).
pub fn batched(model: &Path, threads: usize, npp: usize, ntg: usize, batches: &[usize]) -> anyhow::Result<Vec<(usize, f64)>> {
    let exe = tool("llama-batched-bench").ok_or_else(|| anyhow::anyhow!("llama-batched-bench not built"))?;
    let npl: Vec<String> = batches.iter().map(|b| b.to_string()).collect();
    let ctx = npp + ntg * batches.iter().copied().max().unwrap_or(1) + 64;
    let out = Command::new(exe)
        .arg("-m")
        .arg(model)
        .args(["-t", &threads.to_string(), "-c", &ctx.to_string(), "-b", "2048", "-ub", "512"])
        .args(["-npp", &npp.to_string(), "-ntg", &ntg.to_string(), "-npl", &npl.join(","), "-pps"])
        .output()?;
    if !out.status.success() {
        anyhow::bail!("llama-batched-bench failed: {}", String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or(""));
    }
    parse_batched(&String::from_utf8_lossy(&out.stdout))
}

/// Parse the markdown table of `llama-batched-bench`: columns `B` and `S_TG t/s`.
pub fn parse_batched(text: &str) -> anyhow::Result<Vec<(usize, f64)>> {
    let mut header: Option<Vec<String>> = None;
    let mut rows = Vec::new();
    for line in text.lines().filter(|l| l.trim_start().starts_with('|')) {
        let cells: Vec<String> = line.trim().trim_matches('|').split('|').map(|c| c.trim().to_string()).collect();
        if cells.iter().all(|c| c.chars().all(|ch| ch == '-' || ch == ':')) {
            continue;
        }
        match &header {
            None => header = Some(cells),
            Some(h) => {
                let col = |name: &str| h.iter().position(|c| c == name);
                let (Some(bi), Some(ti)) = (col("B"), col("S_TG t/s")) else { anyhow::bail!("unexpected table header {h:?}") };
                if let (Some(b), Some(t)) = (cells.get(bi), cells.get(ti)) {
                    rows.push((b.parse()?, t.parse()?));
                }
            }
        }
    }
    if rows.is_empty() {
        anyhow::bail!("no rows in llama-batched-bench output");
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_batched_bench_table() {
        let t = "\n|    PP |     TG |    B |   N_KV |   T_PP s | S_PP t/s |   T_TG s | S_TG t/s |      T s |    S t/s |\n\
                 |-------|--------|------|--------|----------|----------|----------|----------|----------|----------|\n\
                 |    32 |     64 |    1 |     96 |    0.050 |   640.00 |    2.000 |    32.00 |    2.050 |    46.83 |\n\
                 |    32 |     64 |    8 |    544 |    0.050 |   640.00 |    4.000 |   128.00 |    4.050 |   134.32 |\n";
        let r = super::parse_batched(t).unwrap();
        assert_eq!(r, vec![(1, 32.0), (8, 128.0)]);
    }
}
