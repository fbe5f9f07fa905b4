//! `deal heads`: the reward heads (names, params, scales); `deal heads score` scores texts
//! with a weight vector and prints the breakdown; `deal heads bench` measures each head's
//! cost for a batch of candidates against a decode step.

use std::sync::Arc;

use deal_heads::{Candidate, HeadContext, Registry};

use super::{ModelArgs, RewardArgs};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<HeadsCommand>,
    /// Print the listing as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Subcommand, Debug)]
pub enum HeadsCommand {
    /// Score responses to a prompt with a weight vector; prints one breakdown per response.
    Score(ScoreArgs),
    /// Cost of each head for a batch of candidates, vs one decode step of as many rows.
    Bench(BenchArgs),
}

#[derive(clap::Args, Debug)]
pub struct ScoreArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub reward: RewardArgs,
    #[arg(short, long, default_value = "")]
    pub prompt: String,
    /// A response to score (repeatable).
    #[arg(short, long = "response", required = true)]
    pub responses: Vec<String>,
    /// Score the responses as partial (lookahead prefixes).
    #[arg(long)]
    pub partial: bool,
    /// Do not load the policy model (heads that need it will fail).
    #[arg(long)]
    pub no_model: bool,
}

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Candidates per batch (rows of the decode step compared against).
    #[arg(long, default_value_t = 16)]
    pub candidates: usize,
    /// Tokens per candidate.
    #[arg(long, default_value_t = 48)]
    pub tokens: usize,
    /// Timed repetitions per head (the median is reported).
    #[arg(long, default_value_t = 20)]
    pub iters: usize,
    /// Skip the heads that run a model (relevance, judge, probe without hidden state).
    #[arg(long)]
    pub cheap_only: bool,
    /// Write the results as JSON to this file too.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    match a.command {
        None => list(a.json),
        Some(HeadsCommand::Score(s)) => score(s),
        Some(HeadsCommand::Bench(b)) => bench(b),
    }
}

fn list(json: bool) -> anyhow::Result<()> {
    let r = Registry::with_builtin();
    if json {
        let v: Vec<serde_json::Value> = r.kinds().iter().map(|k| k.describe()).collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    for k in r.kinds() {
        println!("{:<11} {}", k.name, k.description);
        for p in k.params {
            println!("    {:<12} {:<28} {:<16} {}", p.name, p.ty, format!("[{}]", p.default), p.doc);
        }
        println!("    example: {{\"heads\": {{\"{}\": {}}}}}", k.name, k.example);
        println!();
    }
    println!("Weights: {{\"weights\": {{\"sentiment\": 1.0, \"length\": 0.5}}}}; scores are normalised to [0, 1], higher = more of");
    println!("what the head rewards; negative weights ask for less. See docs/heads.md.");
    Ok(())
}

fn score(a: ScoreArgs) -> anyhow::Result<()> {
    // validated before loading anything
    let spec = a.reward.spec()?;
    let (ctx, engine) = if a.no_model {
        (HeadContext::new(), None)
    } else {
        let e = Arc::new(a.model.load()?);
        (HeadContext::with_policy(e.clone()), Some(e))
    };
    let reward = spec.build(&Registry::with_builtin(), &ctx)?;
    let cands = a
        .responses
        .iter()
        .map(|r| {
            let c = Candidate::new(a.prompt.clone(), r.clone()).partial(a.partial);
            match &engine {
                Some(e) => Ok(c.with_tokens(e.tokenizer().encode(r, false)?)),
                None => Ok(c),
            }
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let out = reward.score(&cands)?;
    let order = deal_heads::reward::rank(&out);
    let json: Vec<serde_json::Value> = out
        .iter()
        .zip(&a.responses)
        .enumerate()
        .map(|(i, (b, r))| {
            let mut v = serde_json::to_value(b).unwrap_or_default();
            v["response"] = serde_json::json!(r);
            v["rank"] = serde_json::json!(order.iter().position(|&j| j == i).map(|p| p + 1));
            v
        })
        .collect();
    println!("{}", serde_json::to_string_pretty(&json)?);
    Ok(())
}

fn bench(a: BenchArgs) -> anyhow::Result<()> {
    if a.candidates == 0 || a.tokens == 0 || a.iters == 0 {
        anyhow::bail!("--candidates, --tokens and --iters must be > 0");
    }
    let engine = Arc::new(a.model.load()?);
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let cfg = deal_bench::heads::HeadsBench {
        candidates: a.candidates,
        tokens: a.tokens,
        iters: a.iters,
        cheap_only: a.cheap_only,
        ..Default::default()
    };
    eprintln!(
        "deal heads bench: {} ({threads} threads), {} candidates of {} tokens, median of {} runs",
        engine.name(),
        cfg.candidates,
        cfg.tokens,
        cfg.iters
    );
    let r = deal_bench::heads::run(engine, &cfg)?;
    println!("decode step, {} rows: {:.2} ms", cfg.candidates, r.decode_step_ms);
    println!("{:<22} {:>12} {:>14}", "head", "ms / batch", "% of a step");
    for h in &r.heads {
        println!("{:<22} {:>12.3} {:>13.2}%", h.head, h.ms, 100.0 * h.ms / r.decode_step_ms);
    }
    if let Some(path) = a.json {
        std::fs::write(&path, serde_json::to_string_pretty(&r)?)?;
    }
    Ok(())
}
