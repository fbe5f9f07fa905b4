//! Search speed: wall time per committed token of every controller vs. greedy on the same
//! prompts, and of `deal` vs. a naive implementation of the same search.
//!
//! The naive reference ([`naive_deal`]) is DeAL as research code writes it: beams and
//! candidates one at a time, and every next-token distribution computed by running the
//! whole sequence (prompt + response so far) through the model from scratch, no cache kept
//! between calls. It makes the same choices as `deal` (the default commit rule, the paper
//! rule pipelined; up to quantization noise between batched and single-row arithmetic), so
//! the ratio is the speed-up of batching, the forked cache, lookahead undo and pipelining.
//!
//! Several backends can be measured in one run (the local engine and a remote
//! OpenAI-compatible engine, `deal bench search --engine URL`): every prompt runs every
//! controller on every backend in turn, each backend's ratios are against its own greedy,
//! and the backend's call counter gives the engine calls per committed token.

use std::time::Instant;

use deal_backend::sampling::{argmax, log_softmax, top_k};
use deal_backend::Backend;
use deal_controllers::{Commit, Request, SearchConfig};
use deal_engine::Engine;
use deal_heads::reward::{RewardSpec, WeightedReward};
use deal_heads::{Candidate, HeadContext};

/// Keyword concept sets, one per line (shared with `controllers/tests/alignment.rs`).
pub const CONCEPTS_TEXT: &str = include_str!("../data/keyword_concepts.txt");

/// The concept sets of the benchmark prompts.
pub fn concepts() -> Vec<Vec<&'static str>> {
    CONCEPTS_TEXT.lines().map(|l| l.split_whitespace().collect::<Vec<_>>()).filter(|w| !w.is_empty()).collect()
}

/// Benchmark settings.
#[derive(Debug, Clone)]
pub struct SearchBench {
    /// How many concept sets (prompts) to run, from [`concepts`].
    pub prompts: usize,
    /// How many of them the naive reference runs (it is slow).
    pub naive_prompts: usize,
    pub max_tokens: usize,
    /// DeAL settings (k, b, l, λ) shared by `deal`, `deal-lead` and the naive reference.
    pub k: usize,
    pub beams: usize,
    pub lookahead: usize,
    pub lambda: f64,
    /// Margins of the `deal-lead` variants (`Commit::Lead`), one variant each: the
    /// speed/quality trade-off of committing a whole lookahead.
    pub lead_margins: Vec<f64>,
    /// For each margin, further variants accepting only the lookahead's leading tokens of at
    /// least this probability (`min_prob`).
    pub lead_min_probs: Vec<f64>,
    /// Explicit row budgets of further `deal-pipe<rows>` variants (`Commit::Pipeline`: the
    /// paper rule's choices, pipelined), one variant each; `deal` itself runs the default
    /// (pipelined, automatic budget) and `deal-token` the paper rule step by step.
    pub pipeline_rows: Vec<usize>,
}

impl Default for SearchBench {
    fn default() -> Self {
        Self {
            prompts: 4,
            naive_prompts: 1,
            max_tokens: 24,
            k: deal_controllers::config::DEFAULT_K,
            beams: deal_controllers::config::DEFAULT_BEAMS,
            lookahead: deal_controllers::config::DEFAULT_LOOKAHEAD,
            lambda: deal_controllers::config::DEFAULT_LAMBDA,
            lead_margins: vec![2.0],
            lead_min_probs: Vec::new(),
            pipeline_rows: Vec::new(),
        }
    }
}

/// One measured controller.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SearchPoint {
    /// The backend it ran on (`local`, or `remote` for `--engine`).
    pub backend: String,
    pub controller: String,
    /// Decode seconds (prefill excluded) per committed token, over all its prompts.
    pub secs_per_token: f64,
    /// `secs_per_token` / greedy's on the same prompts.
    pub vs_greedy: f64,
    pub tokens_committed: usize,
    pub forward_passes: usize,
    /// Rows run per committed token (Σ rows over passes / tokens).
    pub rows_per_token: f64,
    /// Calls to the backend per committed token (its `*_calls_total` counter: forward calls
    /// for the local engine, HTTP calls for a remote one).
    pub calls_per_token: f64,
    /// Mean keyword soft coverage of its outputs.
    pub soft_coverage: f64,
    /// Share of outputs with every keyword (hard coverage).
    pub hard_coverage: f64,
}

/// `deal` against the naive reference on the same prompts.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NaivePoint {
    pub prompts: usize,
    pub naive_secs_per_token: f64,
    pub deal_secs_per_token: f64,
    /// naive / deal.
    pub speedup: f64,
    /// Prompts on which both produced the same tokens.
    pub same_output: usize,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct SearchReport {
    pub points: Vec<SearchPoint>,
    /// `None` when no local engine ran the naive reference.
    pub naive: Option<NaivePoint>,
}

/// The prompt for a concept set (one worked example, then the set).
pub fn prompt(words: &[&str]) -> String {
    format!(
        "Write a sentence using the words: apple, tree, red.\nSentence: The red apple fell from the tree.\n\n\
         Write a sentence using the words: {}.\nSentence:",
        words.join(", ")
    )
}

/// Keyword-coverage reward for `words`.
pub fn keyword_reward(words: &[&str]) -> anyhow::Result<WeightedReward> {
    let spec = RewardSpec::from_value(serde_json::json!({"weights": {"keywords": 1.0}, "heads": {"keywords": {"words": words}}}))?;
    Ok(spec.build(&deal_heads::Registry::with_builtin(), &HeadContext::new())?)
}

impl SearchBench {
    fn base(&self) -> SearchConfig {
        SearchConfig { max_tokens: self.max_tokens, stop: vec!["\n".into()], seed: 1, temperature: 0.8, ..Default::default() }
    }

    fn deal(&self) -> SearchConfig {
        SearchConfig { k: self.k, beams: self.beams, lookahead: self.lookahead, lambda: self.lambda, ..self.base() }
    }

    /// The controllers measured: (label, registry name, config).
    pub fn controllers(&self) -> Vec<(String, &'static str, SearchConfig)> {
        let base = self.base();
        let mut v = vec![
            ("greedy".to_string(), "greedy", base.clone()),
            ("sample".to_string(), "sample", base.clone()),
            // the default commit rule (pipelined: the paper rule's choices in fewer passes),
            // then the paper rule run step by step
            ("deal".to_string(), "deal", self.deal()),
            ("deal-token".to_string(), "deal", SearchConfig { commit: Commit::Token, ..self.deal() }),
        ];
        for &m in &self.lead_margins {
            v.push((format!("deal-lead{m}"), "deal", SearchConfig { commit: Commit::Lead { margin: m, min_prob: 0.0 }, ..self.deal() }));
            for &p in &self.lead_min_probs {
                let commit = Commit::Lead { margin: m, min_prob: p };
                v.push((format!("deal-lead{m}-p{p}"), "deal", SearchConfig { commit, ..self.deal() }));
            }
        }
        for &rows in &self.pipeline_rows {
            v.push((format!("deal-pipe{rows}"), "deal", SearchConfig { commit: Commit::Pipeline { rows: Some(rows) }, ..self.deal() }));
        }
        v.extend([
            ("args".to_string(), "args", SearchConfig { k: 8, lambda: self.lambda, temperature: 0.0, ..base.clone() }),
            ("blockwise".to_string(), "blockwise", SearchConfig { blocks: 4, block_len: 4, ..base.clone() }),
            ("best_of_n".to_string(), "best_of_n", SearchConfig { n: 8, ..base.clone() }),
            ("early_prune".to_string(), "early_prune", SearchConfig { n: 8, prune_every: 4, ..base }),
        ]);
        v
    }
}

/// The value of `backend`'s call counter (`*_calls_total`), 0 if it has none.
fn calls(backend: &dyn Backend) -> u64 {
    backend.counters().iter().find(|c| c.name.ends_with("_calls_total")).map(|c| c.value).unwrap_or(0)
}

#[derive(Default, Clone, Copy)]
struct Sums {
    decode_secs: f64,
    tokens: usize,
    passes: usize,
    rows: usize,
    calls: u64,
    soft: f64,
    hard: f64,
}

/// Run the benchmark on each `(label, backend)`; the naive reference runs on `naive_on` (a
/// local engine) when given.
pub fn run(backends: &[(&str, &dyn Backend)], naive_on: Option<&Engine>, b: &SearchBench) -> anyhow::Result<SearchReport> {
    let all = concepts();
    let sets: Vec<&[&str]> = all.iter().map(Vec::as_slice).cycle().take(b.prompts.max(1)).collect();
    let controllers = b.controllers();
    let registry = deal_controllers::Registry::builtin();
    // Prompts run in the outer loop and every backend and controller in turn on each, so a
    // slow spell of this shared machine lands on all of them alike instead of on whichever
    // ran then.
    let mut sums = vec![vec![Sums::default(); controllers.len()]; backends.len()];
    let mut deal_first: Vec<(f64, usize, Vec<u32>)> = Vec::new();
    for (i, words) in sets.iter().enumerate() {
        let reward = keyword_reward(words)?;
        let p = prompt(words);
        for (bi, (_, backend)) in backends.iter().enumerate() {
            for ((label, name, cfg), sum) in controllers.iter().zip(sums[bi].iter_mut()) {
                let calls_before = calls(*backend);
                let out = registry.search(name, cfg, &Request::new(*backend, &p).with_reward(&reward), &mut |_| true)?;
                let decode = out.stats.wall_secs - out.stats.prefill_secs;
                let head = out.breakdown.as_ref().and_then(|bd| bd.heads.first());
                sum.decode_secs += decode;
                sum.tokens += out.tokens.len();
                sum.passes += out.stats.forward_passes;
                sum.rows += out.stats.rows_evaluated;
                sum.calls += calls(*backend).saturating_sub(calls_before);
                sum.soft += head.map(|h| h.normalized as f64).unwrap_or(0.0);
                sum.hard += head.and_then(|h| h.details.get("hard")).map(|&x| x as f64).unwrap_or(0.0);
                if bi == 0 && label == "deal" && i < b.naive_prompts {
                    deal_first.push((decode, out.tokens.len(), out.tokens.clone()));
                }
            }
        }
    }
    let mut points: Vec<SearchPoint> = Vec::new();
    for ((backend, _), sums) in backends.iter().zip(&sums) {
        let greedy = sums[0].decode_secs / sums[0].tokens.max(1) as f64;
        for ((label, _, _), s) in controllers.iter().zip(sums) {
            let tokens = s.tokens.max(1) as f64;
            let spt = s.decode_secs / tokens;
            points.push(SearchPoint {
                backend: backend.to_string(),
                controller: label.clone(),
                secs_per_token: spt,
                vs_greedy: spt / greedy,
                tokens_committed: s.tokens,
                forward_passes: s.passes,
                rows_per_token: s.rows as f64 / tokens,
                calls_per_token: s.calls as f64 / tokens,
                soft_coverage: s.soft / sets.len() as f64,
                hard_coverage: s.hard / sets.len() as f64,
            });
        }
    }
    let Some(engine) = naive_on else {
        return Ok(SearchReport { points, naive: None });
    };
    let (mut naive_secs, mut naive_tokens, mut same) = (0.0, 0, 0);
    let cfg = b.deal();
    for (words, (_, _, deal_tokens)) in sets.iter().zip(&deal_first) {
        let reward = keyword_reward(words)?;
        let t = Instant::now();
        let tokens = naive_deal(engine, &prompt(words), &cfg, &reward)?;
        naive_secs += t.elapsed().as_secs_f64();
        naive_tokens += tokens.len();
        same += usize::from(&tokens == deal_tokens);
    }
    let naive_spt = naive_secs / naive_tokens.max(1) as f64;
    let deal_secs: f64 = deal_first.iter().map(|d| d.0).sum();
    let deal_tokens: usize = deal_first.iter().map(|d| d.1).sum();
    let deal_spt = deal_secs / deal_tokens.max(1) as f64;
    let naive = NaivePoint {
        prompts: deal_first.len(),
        naive_secs_per_token: naive_spt,
        deal_secs_per_token: deal_spt,
        speedup: naive_spt / deal_spt,
        same_output: same,
    };
    Ok(SearchReport { points, naive: Some(naive) })
}

/// Next-token logits after `prompt + tokens`, computed from scratch (a fresh cache).
fn logits_from_scratch(engine: &Engine, prompt: &[u32], tokens: &[u32]) -> anyhow::Result<Vec<f32>> {
    let ids: Vec<u32> = prompt.iter().chain(tokens).copied().collect();
    let (_, out) = engine.prefill(&ids)?;
    let logits = out.logits.ok_or_else(|| anyhow::anyhow!("no logits"))?;
    Ok(logits.get(0)?.to_vec1::<f32>()?)
}

/// Text of `tokens` cut before the first stop string, and whether one was found.
fn text_of(engine: &Engine, tokens: &[u32], stop: &[String]) -> anyhow::Result<(String, bool)> {
    let mut text = engine.tokenizer().decode(tokens, true)?;
    let at = stop.iter().filter(|s| !s.is_empty()).filter_map(|s| text.find(s.as_str())).min();
    if let Some(at) = at {
        text.truncate(at);
    }
    Ok((text, at.is_some()))
}

/// DeAL (one token committed per step) the naive way: every beam, every candidate and every
/// lookahead token one at a time, each distribution recomputed from the full sequence.
/// Returns the response tokens.
pub fn naive_deal(engine: &Engine, prompt_text: &str, cfg: &SearchConfig, reward: &WeightedReward) -> anyhow::Result<Vec<u32>> {
    struct Beam {
        tokens: Vec<u32>,
        lp: f64,
        done: bool,
    }
    let prompt = engine.encode_prompt(prompt_text)?;
    let tok = engine.tokenizer();
    let ended = |tokens: &[u32]| -> anyhow::Result<bool> { Ok(tokens.len() >= cfg.max_tokens || text_of(engine, tokens, &cfg.stop)?.1) };
    let mut beams = vec![Beam { tokens: Vec::new(), lp: 0.0, done: false }];
    while beams.iter().any(|b| !b.done) {
        let mut next: Vec<(Beam, f64)> = Vec::new();
        for beam in &beams {
            if beam.done {
                let (text, _) = text_of(engine, &beam.tokens, &cfg.stop)?;
                let h = reward.values(&[Candidate::new(prompt_text, text).with_tokens(beam.tokens.clone())])?[0];
                next.push((Beam { tokens: beam.tokens.clone(), lp: beam.lp, done: true }, beam.lp + cfg.lambda * h));
                continue;
            }
            let logits = logits_from_scratch(engine, &prompt, &beam.tokens)?;
            let lsm = log_softmax(&logits);
            for (t, _) in top_k(&logits, cfg.k) {
                let lp = beam.lp + lsm[t as usize] as f64;
                let mut tokens = beam.tokens.clone();
                let mut done = tok.is_eog(t);
                if !done {
                    tokens.push(t);
                    done = ended(&tokens)?;
                }
                // greedy lookahead, one token per full recomputation
                let mut look = tokens.clone();
                let mut look_done = done;
                for _ in 0..cfg.lookahead {
                    if look_done {
                        break;
                    }
                    let g = argmax(&logits_from_scratch(engine, &prompt, &look)?);
                    if tok.is_eog(g) {
                        look_done = true;
                        break;
                    }
                    look.push(g);
                    look_done = ended(&look)?;
                }
                let (text, _) = text_of(engine, &look, &cfg.stop)?;
                let cand = Candidate::new(prompt_text, text).partial(!look_done).with_tokens(look);
                let h = reward.values(&[cand])?[0];
                next.push((Beam { tokens, lp, done }, lp + cfg.lambda * h));
            }
        }
        let mut idx: Vec<usize> = (0..next.len()).collect();
        idx.sort_by(|&a, &b| next[b].1.total_cmp(&next[a].1).then(a.cmp(&b)));
        let mut keep: Vec<Option<(Beam, f64)>> = next.into_iter().map(Some).collect();
        beams = idx.into_iter().take(cfg.beams).filter_map(|i| keep[i].take().map(|(b, _)| b)).collect();
    }
    let mut best: Option<(f64, Vec<u32>)> = None;
    for b in beams {
        let (text, _) = text_of(engine, &b.tokens, &cfg.stop)?;
        let score = b.lp + cfg.lambda * reward.values(&[Candidate::new(prompt_text, text).with_tokens(b.tokens.clone())])?[0];
        if best.as_ref().is_none_or(|(s, _)| score > *s) {
            best = Some((score, b.tokens));
        }
    }
    Ok(best.map(|b| b.1).unwrap_or_default())
}
