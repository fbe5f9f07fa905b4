//! `deal generate`: plain decoding (greedy or sampled) from a prompt, streamed to stdout.

use std::io::{Read, Write};

use deal_backend::sampling::SamplingParams;
use deal_engine::GenerateParams;

use super::{ModelArgs, RewardArgs};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The prompt; `-` reads it from stdin.
    #[arg(short = 'p', long)]
    pub prompt: String,
    /// Most tokens to generate.
    #[arg(short = 'n', long = "max-tokens", default_value_t = 128)]
    pub max_tokens: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Keep only the k most likely tokens (0 = off).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Nucleus sampling threshold (1 = off).
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Drop tokens below min_p × the top probability (0 = off).
    #[arg(long, default_value_t = 0.0)]
    pub min_p: f32,
    /// Repetition penalty (1 = off).
    #[arg(long, default_value_t = 1.0)]
    pub repeat_penalty: f32,
    /// Window of recent tokens the repetition penalty looks at.
    #[arg(long, default_value_t = 64)]
    pub repeat_last_n: usize,
    /// RNG seed (same seed, same output).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop when this string appears (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    /// Do not print timing statistics to stderr.
    #[arg(long)]
    pub quiet: bool,
    /// Search controller steering the output by the reward (-W / --head / --spec): deal,
    /// args, blockwise, best_of_n, early_prune, or the baselines greedy / sample. Without
    /// it: plain decoding with the sampling flags above.
    #[arg(long)]
    pub controller: Option<String>,
    /// Controller settings as JSON, e.g. '{"k": 4, "beams": 2, "lookahead": 4, "lambda": 5}'.
    #[arg(long, value_name = "JSON")]
    pub params: Option<String>,
    #[command(flatten)]
    pub reward: RewardArgs,
    /// Constrain the output to JSON valid against the JSON Schema in this file (a hard
    /// constraint inside every controller, as `response_format` in the API).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["grammar", "regex"])]
    pub json_schema: Option<std::path::PathBuf>,
    /// Constrain the output to the Lark grammar in this file (llguidance's dialect).
    #[arg(long, value_name = "FILE", conflicts_with = "regex")]
    pub grammar: Option<std::path::PathBuf>,
    /// Constrain the whole output to match this regular expression.
    #[arg(long, value_name = "REGEX")]
    pub regex: Option<String>,
}

impl Args {
    /// The grammar the flags ask for, read from its file.
    fn grammar_spec(&self) -> anyhow::Result<Option<deal_controllers::grammar::GrammarSpec>> {
        use deal_controllers::grammar::GrammarSpec;
        let read = |p: &std::path::Path| std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()));
        Ok(match (&self.json_schema, &self.grammar, &self.regex) {
            (Some(p), _, _) => {
                let schema = serde_json::from_str(&read(p)?).map_err(|e| anyhow::anyhow!("{}: not JSON: {e}", p.display()))?;
                Some(GrammarSpec::JsonSchema { schema, strict: true })
            }
            (_, Some(p), _) => Some(GrammarSpec::Lark(read(p)?)),
            (_, _, Some(r)) => Some(GrammarSpec::Regex(r.clone())),
            _ => None,
        })
    }
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let sampling = SamplingParams {
        temperature: a.temperature,
        top_k: a.top_k,
        top_p: a.top_p,
        min_p: a.min_p,
        repetition_penalty: a.repeat_penalty,
        repeat_last_n: a.repeat_last_n,
        seed: a.seed,
    };
    sampling.validate()?;
    let prompt = if a.prompt == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        s
    } else {
        a.prompt.clone()
    };
    if let Some(name) = a.controller.clone() {
        return aligned(a, &name, prompt);
    }
    if a.model.engine.is_some() || a.json_schema.is_some() || a.grammar.is_some() || a.regex.is_some() {
        // a remote engine or a grammar: plain decoding is the greedy / sample controller
        let name = if a.temperature > 0.0 { "sample" } else { "greedy" };
        return aligned(a, name, prompt);
    }
    if !a.reward.is_empty() {
        anyhow::bail!("a reward (-W/--head/--spec) needs --controller (e.g. --controller deal)");
    }
    let engine = a.model.load()?;
    let ids = engine.encode_prompt(&prompt)?;
    let params = GenerateParams { max_tokens: a.max_tokens, sampling, stop: a.stop.clone() };
    let mut stdout = std::io::stdout().lock();
    let g = engine.generate(&ids, &params, &mut |piece| {
        // a closed stdout (e.g. `| head`) cancels generation instead of failing
        stdout.write_all(piece.as_bytes()).and_then(|_| stdout.flush()).is_ok()
    })?;
    let _ = writeln!(stdout);
    if !a.quiet {
        let n = g.tokens.len();
        eprintln!(
            "[{} prompt tokens in {:.2}s ({:.1} tok/s); {n} tokens in {:.2}s ({:.1} tok/s); finish: {}]",
            g.prompt_tokens,
            g.prefill_secs,
            g.prompt_tokens as f64 / g.prefill_secs.max(1e-9),
            g.decode_secs,
            n as f64 / g.decode_secs.max(1e-9),
            g.finish_reason.as_str()
        );
    }
    Ok(())
}

/// Generation steered by a search controller and a weighted reward; the per-head breakdown
/// and search statistics go to stderr.
fn aligned(a: Args, name: &str, prompt: String) -> anyhow::Result<()> {
    let mut cfg: deal_controllers::SearchConfig = match &a.params {
        Some(p) => deal_controllers::SearchConfig::from_json(p)?,
        None => Default::default(),
    };
    cfg.max_tokens = a.max_tokens;
    cfg.seed = a.seed;
    cfg.stop = a.stop.clone();
    if a.temperature > 0.0 {
        cfg.temperature = a.temperature;
    }
    cfg.validate()?;
    let spec = a.reward.spec()?;
    let driver = a.model.driver()?;
    let backend = driver.backend();
    let tokens = backend.encode_prompt(&prompt)?;
    let room = backend.context_length().saturating_sub(tokens.len() + 1);
    if room == 0 {
        anyhow::bail!("the prompt has {} tokens; the model's context is {}", tokens.len(), backend.context_length());
    }
    cfg.max_tokens = cfg.max_tokens.min(room);
    let mut req = deal_driver::Request::new(
        vec![deal_driver::Prompt { tokens, text: prompt }],
        1,
        name,
        cfg,
        (!spec.weights.is_empty()).then_some(spec),
    );
    if let Some(g) = a.grammar_spec()? {
        req.grammar = Some(driver.grammar(&g).map_err(|e| anyhow::anyhow!("the grammar does not compile: {e}"))?);
    }
    let mut stdout = std::io::stdout().lock();
    let mut outcomes = driver.run(&req, None, &mut |ev| match ev {
        // a closed stdout (e.g. `| head`) cancels the search instead of failing
        deal_driver::Event::Text { text, .. } => stdout.write_all(text.as_bytes()).and_then(|_| stdout.flush()).is_ok(),
        _ => true,
    })?;
    let _ = writeln!(stdout);
    let out = outcomes.pop().ok_or_else(|| anyhow::anyhow!("the search produced no answer"))?;
    if !a.quiet {
        if let Some(b) = &out.breakdown {
            eprintln!("{}", serde_json::to_string(b)?);
        }
        eprintln!("{}", serde_json::to_string(&out.stats)?);
    }
    Ok(())
}
