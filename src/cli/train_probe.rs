//! `deal train-probe`: fit a linear probe on the policy's final hidden state, from a JSONL
//! file of (prompt, response, score) or distilled from a reward head over texts the policy
//! generates, and print how well it agrees with its targets on held-out prompts.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use deal_heads::probe_train::{self, DistillOptions, FitOptions};
use deal_heads::{HeadContext, Registry, Scale};

use super::ModelArgs;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// JSONL training data: one {"prompt", "response" (or "text"), "score"} per line.
    #[arg(long, value_name = "FILE.jsonl", conflicts_with = "distill", required_unless_present = "distill")]
    pub data: Option<PathBuf>,
    /// Distill this reward head: generate texts with the policy and use its scores as targets.
    #[arg(long, value_name = "HEAD")]
    pub distill: Option<String>,
    /// Params of the distilled head, as JSON.
    #[arg(long, value_name = "JSON", default_value = "{}")]
    pub teacher_params: String,
    /// Texts to generate when distilling.
    #[arg(long, default_value_t = 2400)]
    pub n: usize,
    /// Tokens per generated text at most.
    #[arg(long, default_value_t = 40)]
    pub max_tokens: usize,
    /// A training record every this many tokens of a generated text (partial responses).
    #[arg(long, default_value_t = 8)]
    pub every: usize,
    /// Texts sampled per prompt.
    #[arg(long, default_value_t = 10)]
    pub per_prompt: usize,
    /// Seed of sampling and of the held-out split.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Fraction of prompts held out for evaluation.
    #[arg(long, default_value_t = 0.2)]
    pub holdout: f64,
    /// Write the (distilled) training records here as JSONL.
    #[arg(long, value_name = "FILE.jsonl")]
    pub save_data: Option<PathBuf>,
    /// The raw score range of the targets ("lo,hi"), for normalisation. Default: the
    /// teacher's range when distilling, else a z-score on the training targets.
    #[arg(long, value_name = "LO,HI", value_delimiter = ',', num_args = 2)]
    pub range: Option<Vec<f64>>,
    /// Where to write the probe.
    #[arg(short, long, default_value = "probe.safetensors")]
    pub out: PathBuf,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let engine = std::sync::Arc::new(a.model.load()?);
    let t0 = Instant::now();
    let mut meta = BTreeMap::new();
    meta.insert("model".to_string(), engine.name());
    meta.insert("created_by".to_string(), "deal train-probe".to_string());
    let (mut records, teacher_scale) = match (&a.data, &a.distill) {
        (Some(path), _) => {
            meta.insert("data".into(), path.display().to_string());
            (probe_train::read_jsonl(path)?, None)
        }
        (None, Some(head)) => {
            let params: serde_json::Value =
                serde_json::from_str(&a.teacher_params).map_err(|e| anyhow::anyhow!("--teacher-params is not JSON: {e}"))?;
            let ctx = HeadContext::with_policy(engine.clone());
            let teacher = Registry::with_builtin().get(head)?.build(&params, &ctx)?;
            meta.insert("teacher".into(), head.clone());
            meta.insert("teacher_params".into(), params.to_string());
            let opts = DistillOptions {
                n: a.n,
                max_tokens: a.max_tokens,
                every: a.every,
                per_prompt: a.per_prompt,
                seed: a.seed,
                ..Default::default()
            };
            meta.insert(
                "distill".into(),
                format!("n={} max_tokens={} every={} per_prompt={} seed={}", a.n, a.max_tokens, a.every, a.per_prompt, a.seed),
            );
            eprintln!("deal train-probe: generating {} texts with {} and scoring them with `{head}`", a.n, engine.name());
            let recs = probe_train::distill(engine.as_ref(), &*teacher, &opts, &mut |done| {
                eprint!("\r  {done}/{} texts ({:.0}s)", a.n, t0.elapsed().as_secs_f64());
                let _ = std::io::stderr().flush();
            })?;
            eprintln!();
            (recs, Some(teacher.scale()))
        }
        (None, None) => anyhow::bail!("give --data FILE.jsonl or --distill HEAD"),
    };
    if records.is_empty() {
        anyhow::bail!("no training records");
    }
    if let Some(path) = &a.save_data {
        probe_train::write_jsonl(path, &records)?;
        eprintln!("wrote {} records to {}", records.len(), path.display());
    }
    let missing = records.iter().filter(|r| r.hidden.is_none()).count();
    if missing > 0 {
        eprintln!("computing hidden states of {missing} records with {}", engine.name());
        probe_train::attach_hidden(engine.as_ref(), &mut records, 16, &mut |done| {
            eprint!("\r  {done}/{missing}");
            let _ = std::io::stderr().flush();
        })?;
        eprintln!();
    }
    let opts = FitOptions { holdout: a.holdout, seed: a.seed, ..Default::default() };
    let (weight, bias, rep) = probe_train::fit(&records, &opts)?;
    let scale = match (&a.range, teacher_scale) {
        (Some(r), _) => Scale::Range { lo: r[0], hi: r[1] },
        (None, Some(s)) => s,
        (None, None) => Scale::Zscore { mean: rep.target_mean, std: rep.target_std.max(1e-9) },
    };
    scale.validate().map_err(|e| anyhow::anyhow!("--range: {e}"))?;
    let probe = probe_train::to_probe(weight, bias, scale, &rep, meta);
    probe.save(&a.out)?;

    println!(
        "records         {} train ({} prompts/groups), {} held out ({} groups)",
        rep.n_train, rep.groups_train, rep.n_test, rep.groups_test
    );
    println!("ridge lambda    {:e} (grouped {}-fold CV R² {:.3})", rep.lambda, opts.folds, rep.cv_r2);
    println!("train R²        {:.3}", rep.r2_train);
    println!("held-out R²     {:.3}", rep.r2_test);
    println!(
        "held-out r      {:.3} Pearson, {:.3} Spearman ({:.3} on finished texts)",
        rep.pearson_test, rep.spearman_test, rep.spearman_test_final
    );
    println!("held-out RMSE   {:.3} (target std {:.3})", rep.rmse_test, rep.target_std);
    println!("scale           {}", scale.describe());
    println!("wrote           {} ({:.0}s)", a.out.display(), t0.elapsed().as_secs_f64());
    Ok(())
}
