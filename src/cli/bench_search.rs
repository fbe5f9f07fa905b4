//! `deal bench search`: wall time per committed token of every search controller vs.
//! greedy on the same keyword prompts, and of `deal` vs. a naive implementation of the same
//! search (rows one at a time, prefix recomputed every step). Ratios from one run.
//!
//! With `--engine URL` the same searches also run on that OpenAI-compatible engine
//! (serving the GGUF `-m` names), interleaved with the local ones, so remote and local cost
//! per token and the engine calls each controller makes are measured in one run.

use deal_bench::search::{self, SearchBench};

use super::ModelArgs;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Keyword prompts run by every controller.
    #[arg(long, default_value_t = 4)]
    pub prompts: usize,
    /// Of those, how many the (slow) naive reference runs.
    #[arg(long, default_value_t = 1)]
    pub naive_prompts: usize,
    /// Most tokens per response.
    #[arg(long, default_value_t = 24)]
    pub max_tokens: usize,
    /// DeAL candidates per beam.
    #[arg(short = 'k', long, default_value_t = deal_controllers::config::DEFAULT_K)]
    pub k: usize,
    /// DeAL beams.
    #[arg(short = 'b', long, default_value_t = deal_controllers::config::DEFAULT_BEAMS)]
    pub beams: usize,
    /// DeAL lookahead tokens.
    #[arg(short = 'l', long, default_value_t = deal_controllers::config::DEFAULT_LOOKAHEAD)]
    pub lookahead: usize,
    /// DeAL λ (weight of the keyword reward).
    #[arg(long, default_value_t = deal_controllers::config::DEFAULT_LAMBDA)]
    pub lambda: f64,
    /// Score leads at which `deal-lead<m>` variants commit a whole lookahead (comma separated).
    #[arg(long, value_delimiter = ',', default_value = "2")]
    pub lead_margins: Vec<f64>,
    /// For each margin, also variants `deal-lead<m>-p<p>` that accept only the lookahead's
    /// leading tokens chosen with probability >= p (comma separated; empty = none).
    #[arg(long, value_delimiter = ',')]
    pub lead_min_probs: Vec<f64>,
    /// Explicit row budgets of further `deal-pipe<rows>` variants: the paper rule's choices
    /// with the pipelined lookahead (comma separated). `deal` runs the default commit rule
    /// (pipelined, automatic budget), `deal-token` the paper rule step by step.
    #[arg(long, value_delimiter = ',')]
    pub pipeline_rows: Vec<usize>,
    /// Write the results as JSON to this file too.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    if a.prompts == 0 || a.max_tokens == 0 || a.k == 0 || a.beams == 0 {
        anyhow::bail!("--prompts, --max-tokens, -k and -b must be > 0");
    }
    let engine = a.model.load()?;
    let remote = a.model.remote()?;
    let cfg = SearchBench {
        prompts: a.prompts,
        naive_prompts: a.naive_prompts.min(a.prompts),
        max_tokens: a.max_tokens,
        k: a.k,
        beams: a.beams,
        lookahead: a.lookahead,
        lambda: a.lambda,
        lead_margins: a.lead_margins.clone(),
        lead_min_probs: a.lead_min_probs.clone(),
        pipeline_rows: a.pipeline_rows.clone(),
    };
    eprintln!(
        "deal bench search: {}, {} prompts, max {} tokens, deal k={} b={} l={} λ={}",
        engine.name(),
        cfg.prompts,
        cfg.max_tokens,
        cfg.k,
        cfg.beams,
        cfg.lookahead,
        cfg.lambda
    );
    let mut backends: Vec<(&str, &dyn deal_backend::Backend)> = vec![("local", &engine)];
    if let Some(r) = &remote {
        eprintln!("also on the remote engine at {}", a.model.engine.as_deref().unwrap_or(""));
        backends.push(("remote", r.as_ref()));
    }
    let report = search::run(&backends, Some(&engine), &cfg)?;
    println!(
        "{:>7} {:>14} {:>10} {:>10} {:>8} {:>8} {:>8} {:>8} {:>6} {:>6}",
        "backend", "controller", "ms/token", "vs greedy", "tokens", "passes", "rows/tok", "calls/tok", "soft", "hard"
    );
    for p in &report.points {
        println!(
            "{:>7} {:>14} {:>10.1} {:>9.2}x {:>8} {:>8} {:>8.1} {:>9.2} {:>6.3} {:>6.3}",
            p.backend,
            p.controller,
            p.secs_per_token * 1e3,
            p.vs_greedy,
            p.tokens_committed,
            p.forward_passes,
            p.rows_per_token,
            p.calls_per_token,
            p.soft_coverage,
            p.hard_coverage
        );
    }
    if let Some(n) = report.naive.as_ref().filter(|n| n.prompts > 0) {
        println!(
            "deal vs naive ({} prompt(s)): naive {:.1} ms/token, deal {:.1} ms/token: {:.1}x faster; same output on {}/{}",
            n.prompts,
            n.naive_secs_per_token * 1e3,
            n.deal_secs_per_token * 1e3,
            n.speedup,
            n.same_output,
            n.prompts
        );
    }
    if let Some(path) = a.json {
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(())
}
