//! Steering strength: what a weight of 1 does with every other setting at its default, as a
//! function of λ (the strength of the reward against log-probability), for the controllers
//! that take a heuristic. Two tasks, greedy measured on the same prompts in the same run:
//!
//! - **keywords**: the CommonGen-style concept sets of [`crate::search`], weight 1 on the
//!   `keywords` head; hard coverage (all words present) against greedy's;
//! - **sentiment**: short neutral openings (`bench/data/sentiment_prompts.txt`), weight 1
//!   on the `sentiment` head; mean VADER compound of the texts against greedy's.
//!
//! Fluency: the perplexity of the steered texts under the model (their committed tokens'
//! log-probabilities, which every controller reports) divided by greedy's on the same
//! prompts. This is what chose the default λ ([`deal_controllers::SearchConfig`]).

use deal_backend::Backend;
use deal_controllers::{Outcome, Request, SearchConfig};
use deal_heads::reward::{RewardSpec, WeightedReward};
use deal_heads::HeadContext;

use crate::search::{concepts, prompt as keyword_prompt};

/// Neutral openings for the sentiment task, one per line.
pub const SENTIMENT_PROMPTS: &str = include_str!("../data/sentiment_prompts.txt");

/// Benchmark settings.
#[derive(Debug, Clone)]
pub struct SteerBench {
    /// λ values to measure.
    pub lambdas: Vec<f64>,
    /// Controllers that take a heuristic, run with their default settings.
    pub controllers: Vec<String>,
    /// Keyword concept sets (from the start of the list).
    pub keyword_prompts: usize,
    /// Sentiment openings.
    pub sentiment_prompts: usize,
    /// Most tokens per response.
    pub max_tokens: usize,
}

/// One measured (task, controller, λ).
#[derive(Debug, Clone, serde::Serialize)]
pub struct SteerPoint {
    pub task: &'static str,
    pub controller: String,
    /// `None` for greedy.
    pub lambda: Option<f64>,
    /// Mean of the task's measure: hard coverage (keywords) or VADER compound (sentiment).
    pub score: f64,
    /// Mean normalised head score in [0, 1].
    pub normalized: f64,
    /// Perplexity of the texts under the model.
    pub ppl: f64,
    /// `ppl` over greedy's on the same prompts.
    pub ppl_vs_greedy: f64,
    /// Mean committed tokens per text.
    pub tokens: f64,
}

fn reward(spec: serde_json::Value) -> anyhow::Result<WeightedReward> {
    Ok(RewardSpec::from_value(spec)?.build(&deal_heads::Registry::with_builtin(), &HeadContext::new())?)
}

#[derive(Default, Clone, Copy)]
struct Acc {
    score: f64,
    normalized: f64,
    nll: f64,
    tokens: usize,
    n: usize,
}

impl Acc {
    fn add(&mut self, o: &Outcome, detail: Option<&str>) {
        let head = o.breakdown.as_ref().and_then(|b| b.heads.first());
        let score = match (head, detail) {
            (Some(h), Some(d)) => h.details.get(d).copied().unwrap_or(0.0) as f64,
            (Some(h), None) => h.raw as f64,
            _ => 0.0,
        };
        self.score += score;
        self.normalized += head.map_or(0.0, |h| h.normalized as f64);
        self.nll -= o.logprobs.iter().map(|l| l.logprob as f64).filter(|x| x.is_finite()).sum::<f64>();
        self.tokens += o.tokens.len();
        self.n += 1;
    }

    fn ppl(&self) -> f64 {
        (self.nll / self.tokens.max(1) as f64).exp()
    }
}

/// Run every task on `backend`: greedy and each controller × λ on every prompt in turn.
pub fn run(backend: &dyn Backend, b: &SteerBench, on_progress: &mut dyn FnMut(usize, usize)) -> anyhow::Result<Vec<SteerPoint>> {
    let registry = deal_controllers::Registry::builtin();
    let sets = concepts();
    let mut tasks: Vec<(&'static str, Vec<(String, WeightedReward)>, Option<&'static str>)> = Vec::new();
    let kw = sets
        .iter()
        .take(b.keyword_prompts)
        .map(|w| Ok((keyword_prompt(w), reward(serde_json::json!({"weights": {"keywords": 1.0}, "heads": {"keywords": {"words": w}}}))?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    tasks.push(("keywords", kw, Some("hard")));
    let sent = reward(serde_json::json!({"weights": {"sentiment": 1.0}}))?;
    let sp = SENTIMENT_PROMPTS.lines().filter(|l| !l.trim().is_empty()).take(b.sentiment_prompts);
    tasks.push(("sentiment", sp.map(|p| (p.to_string(), sent.clone())).collect(), None));

    let runs: Vec<(String, Option<f64>)> = std::iter::once(("greedy".to_string(), None))
        .chain(b.controllers.iter().flat_map(|c| b.lambdas.iter().map(move |&l| (c.clone(), Some(l)))))
        .collect();
    let total: usize = tasks.iter().map(|t| t.1.len()).sum::<usize>() * runs.len();
    let mut done = 0;
    let mut points = Vec::new();
    for (task, prompts, detail) in &tasks {
        let mut accs = vec![Acc::default(); runs.len()];
        for (p, r) in prompts {
            for ((name, lambda), acc) in runs.iter().zip(accs.iter_mut()) {
                let mut cfg = SearchConfig { max_tokens: b.max_tokens, stop: vec!["\n".into()], ..Default::default() };
                if let Some(l) = lambda {
                    cfg.lambda = *l;
                }
                let req = Request::new(backend, p).with_reward(r).with_logprobs(0);
                let out = registry.search(name, &cfg, &req, &mut |_| true)?;
                acc.add(&out, *detail);
                done += 1;
                on_progress(done, total);
            }
        }
        let greedy_ppl = accs[0].ppl();
        for ((name, lambda), a) in runs.iter().zip(&accs) {
            let n = a.n.max(1) as f64;
            points.push(SteerPoint {
                task,
                controller: name.clone(),
                lambda: *lambda,
                score: a.score / n,
                normalized: a.normalized / n,
                ppl: a.ppl(),
                ppl_vs_greedy: a.ppl() / greedy_ppl,
                tokens: a.tokens as f64 / n,
            });
        }
    }
    Ok(points)
}
