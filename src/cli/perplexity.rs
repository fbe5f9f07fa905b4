//! `deal perplexity`: a text's perplexity under the model, by llama.cpp's `llama-perplexity`
//! protocol (see `deal_engine::perplexity`), with a progress bar. Compare with
//! `llama-perplexity -m MODEL -f FILE -c 512 --chunks N` on the same file.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use deal_engine::perplexity::{perplexity, tokenize};

use super::ModelArgs;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The text to score (UTF-8).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: PathBuf,
    /// Tokens per chunk (llama.cpp's `-c`); the second half of each chunk is scored.
    #[arg(short = 'c', long = "ctx-size", default_value_t = 512)]
    pub ctx: usize,
    /// Score at most this many chunks (default: every whole chunk of the text).
    #[arg(long)]
    pub chunks: Option<usize>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    anyhow::ensure!(a.model.engine.is_none(), "--engine: perplexity needs full logits, so it runs on the local engine only");
    let text = std::fs::read_to_string(&a.file).with_context(|| format!("reading {}", a.file.display()))?;
    let t0 = Instant::now();
    let engine = a.model.load()?;
    let load_secs = t0.elapsed().as_secs_f64();
    let tokens = tokenize(&engine, &text)?;
    let total = a.chunks.map_or(tokens.len() / a.ctx.max(1), |c| c.min(tokens.len() / a.ctx.max(1)));
    let bar = indicatif::ProgressBar::new(total as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} chunks, ppl {msg} [{elapsed_precise}, eta {eta}]")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let t1 = Instant::now();
    let r = perplexity(&engine, &tokens, a.ctx, a.chunks, &mut |done, _, p| {
        bar.set_position(done as u64);
        bar.set_message(format!("{p:.4}"));
    })?;
    bar.finish_and_clear();
    let secs = t1.elapsed().as_secs_f64();
    let tok_s = (r.chunks * a.ctx) as f64 / secs.max(1e-9);
    if a.json {
        let v = serde_json::json!({
            "model": engine.path(), "file": a.file, "ctx": a.ctx, "chunks": r.chunks, "tokens": tokens.len(),
            "scored": r.scored, "ppl": r.ppl, "stderr": r.stderr, "running": r.running,
            "load_secs": load_secs, "secs": secs, "tokens_per_sec": tok_s,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let running: Vec<String> = r.running.iter().enumerate().map(|(i, p)| format!("[{}]{p:.4}", i + 1)).collect();
        println!("{}", running.join(","));
        println!("{} tokens, {} chunks of {}, {} scored, {tok_s:.1} tok/s", tokens.len(), r.chunks, a.ctx, r.scored);
        println!("Final estimate: PPL = {:.4} +/- {:.5}", r.ppl, r.stderr);
    }
    Ok(())
}
