//! `deal bench all`: the benchmark report. Runs the decode (vs llama.cpp), search (vs greedy
//! and the naive search), heads (cost per head) and concurrency benchmarks one after another,
//! each as its own `deal` process so that one's memory does not weigh on the next, and
//! writes `bench/REPORT.md`: the machine, the model, each benchmark's output and the exact
//! command that reproduces it. A benchmark that fails is reported as failed (and the command
//! exits non-zero) without stopping the others.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;

use super::ModelArgs;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Where the report goes.
    #[arg(long, default_value = "bench/REPORT.md")]
    pub out: PathBuf,
    /// Small sizes everywhere (a quick look, or a test of the report itself; not for quoting).
    #[arg(long)]
    pub quick: bool,
    /// Skip llama.cpp (when it is not built).
    #[arg(long)]
    pub no_peer: bool,
}

/// One benchmark of the report.
struct Part {
    title: &'static str,
    what: &'static str,
    args: Vec<String>,
    /// Takes every model option (`deal info` takes only the file's).
    all_model_options: bool,
}

fn parts(a: &Args) -> Vec<Part> {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let mut decode = if a.quick { s(&["bench", "decode", "--steps", "8", "--batches", "1,4", "--prefill-tokens", "64"]) } else { s(&["bench", "decode"]) };
    if a.no_peer {
        decode.push("--no-peer".into());
    }
    let search = if a.quick {
        s(&["bench", "search", "--prompts", "2", "--naive-prompts", "1", "--max-tokens", "8", "--lambda", "12"])
    } else {
        s(&["bench", "search", "--prompts", "8", "--naive-prompts", "1", "--max-tokens", "16", "--lambda", "12"])
    };
    let heads = if a.quick { s(&["heads", "bench", "--iters", "3", "--cheap-only"]) } else { s(&["heads", "bench"]) };
    let concurrent = if a.quick { s(&["bench", "concurrent", "--clients", "2", "--max-tokens", "8"]) } else { s(&["bench", "concurrent"]) };
    vec![
        Part { title: "Model", what: "The GGUF the benchmarks ran on.", args: s(&["info"]), all_model_options: false },
        Part {
            title: "Decode",
            what: "Decode tokens/s at batch 1 and aggregate tokens/s of forked lockstep rows, prefill, load to first token, peak memory and the batch-1 roofline, against llama.cpp (`llama-bench`, `llama-batched-bench`, `llama-simple`) on the same file and threads.",
            args: decode,
            all_model_options: true,
        },
        Part {
            title: "Search",
            what: "Wall time per committed token of every controller against greedy on the same prompts (interleaved), passes and rows per token, keyword coverage, and deal against a naive implementation of the same search (rows one at a time, the prefix recomputed every step).",
            args: search,
            all_model_options: true,
        },
        Part { title: "Heads", what: "Each reward head's cost for a batch of candidates against one decode step of as many rows.", args: heads, all_model_options: true },
        Part { title: "Concurrency", what: "Concurrent searches (as concurrent server requests) against the same searches one after another.", args: concurrent, all_model_options: true },
    ]
}

impl ModelArgs {
    /// The model file's options as command-line arguments (`-m` or `--synthetic`).
    fn file_args(&self) -> Vec<String> {
        let mut v = Vec::new();
        if let Some(m) = &self.model {
            v.extend(["-m".to_string(), m.display().to_string()]);
        }
        if let Some(s) = &self.synthetic {
            v.extend(["--synthetic".to_string(), s.clone()]);
        }
        v
    }

    /// Every model option as command-line arguments (for the child benchmarks).
    fn as_args(&self) -> Vec<String> {
        let mut v = self.file_args();
        v.extend(["--device".to_string(), self.device.clone(), "--weights".to_string(), self.weights.clone()]);
        v
    }
}

fn first_line_with(path: &str, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find(|l| l.starts_with(key)).and_then(|l| l.split_once(':')).map(|(_, v)| v.trim().to_string())
}

fn command_output(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string()).filter(|s| !s.is_empty())
}

/// The machine, as the report's header states it.
fn machine() -> String {
    let cpu = first_line_with("/proc/cpuinfo", "model name").unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mem = deal_server::total_memory_bytes().map_or("?".to_string(), |b| format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64));
    let os = std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| format!("Linux {}", s.trim())).unwrap_or_else(|_| std::env::consts::OS.into());
    format!("{cpu}, {threads} threads, {mem} memory, {os}")
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    // the model first (fetching the default one with its progress bar), so every part runs
    // on the same file
    a.model.path()?;
    let parts = parts(&a);
    let model_args = a.model.as_args();
    let date = command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default();
    let rev = command_output("git", &["rev-parse", "--short", "HEAD"]);
    let mut report = String::new();
    writeln!(report, "# deal benchmark report\n")?;
    writeln!(report, "Written by `deal bench all{}{}` on {date}.", if a.quick { " --quick" } else { "" }, if a.no_peer { " --no-peer" } else { "" })?;
    writeln!(report, "Every figure that compares is a ratio measured in one run against a peer or a baseline; these machines are shared, so absolute times vary between runs.\n")?;
    writeln!(report, "- **Machine**: {}", machine())?;
    writeln!(report, "- **deal**: {}{}", env!("CARGO_PKG_VERSION"), rev.map_or(String::new(), |r| format!(" (git {r})")))?;
    writeln!(report, "- **Model options**: `{}`\n", model_args.join(" "))?;
    let bar = indicatif::ProgressBar::new(parts.len() as u64);
    bar.set_style(indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} benchmarks [{elapsed_precise}] {msg}").unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()));
    let mut failed = Vec::new();
    for p in &parts {
        bar.set_message(p.title);
        let model = if p.all_model_options { model_args.clone() } else { a.model.file_args() };
        let args: Vec<String> = p.args.iter().cloned().chain(model).collect();
        let t = std::time::Instant::now();
        let out = Command::new(&exe).args(&args).output()?;
        let secs = t.elapsed().as_secs_f64();
        writeln!(report, "## {}\n\n{}\n\n```sh\ndeal {}\n```\n", p.title, p.what, args.join(" "))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if out.status.success() {
            writeln!(report, "```text\n{}\n```\n\n({secs:.0} s)\n", stdout.trim_end())?;
        } else {
            failed.push(p.title);
            let err = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = err.lines().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect();
            writeln!(report, "**Failed** ({}):\n\n```text\n{}\n{}\n```\n", out.status, stdout.trim_end(), tail.join("\n"))?;
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    if let Some(dir) = a.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&a.out, &report).map_err(|e| anyhow::anyhow!("{}: {e}", a.out.display()))?;
    eprintln!("wrote {}", a.out.display());
    if !failed.is_empty() {
        anyhow::bail!("benchmarks failed: {} (their errors are in {})", failed.join(", "), a.out.display());
    }
    Ok(())
}
