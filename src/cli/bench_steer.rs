//! `deal bench steer`: what a weight of 1 does with every other setting at its default, per
//! λ (keyword coverage, sentiment, and the perplexity cost against greedy), in one run.

use deal_bench::steer::{self, SteerBench};

use super::ModelArgs;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// λ values to measure (comma separated).
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16")]
    pub lambdas: Vec<f64>,
    /// Controllers to measure at their default settings (comma separated).
    #[arg(long, value_delimiter = ',', default_value = "deal,args")]
    pub controllers: Vec<String>,
    /// Keyword concept sets.
    #[arg(long, default_value_t = 20)]
    pub keyword_prompts: usize,
    /// Sentiment openings.
    #[arg(long, default_value_t = 12)]
    pub sentiment_prompts: usize,
    /// Most tokens per response.
    #[arg(long, default_value_t = 24)]
    pub max_tokens: usize,
    /// Write the results as JSON to this file too.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    if a.lambdas.is_empty() || a.max_tokens == 0 {
        anyhow::bail!("--lambdas must list at least one value and --max-tokens must be > 0");
    }
    let engine = a.model.load()?;
    let b = SteerBench {
        lambdas: a.lambdas.clone(),
        controllers: a.controllers.clone(),
        keyword_prompts: a.keyword_prompts,
        sentiment_prompts: a.sentiment_prompts,
        max_tokens: a.max_tokens,
    };
    eprintln!("deal bench steer: {}, λ in {:?}, controllers {:?}, max {} tokens", engine.name(), b.lambdas, b.controllers, b.max_tokens);
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} searches [{elapsed_precise}, eta {eta}]")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let points = steer::run(&engine, &b, &mut |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    println!("| task | controller | λ | score | normalised | tokens | ppl | ppl / greedy |");
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for p in &points {
        let lambda = p.lambda.map_or("—".to_string(), |l| format!("{l}"));
        println!(
            "| {} | {} | {} | {:.3} | {:.3} | {:.1} | {:.2} | {:.2} |",
            p.task, p.controller, lambda, p.score, p.normalized, p.tokens, p.ppl, p.ppl_vs_greedy
        );
    }
    println!("score: keywords = hard coverage (every word present), sentiment = mean VADER compound in [-1, 1]");
    if let Some(path) = a.json {
        std::fs::write(&path, serde_json::to_string_pretty(&points)?)?;
    }
    Ok(())
}
