//! One measured setting: a controller with its config and weights run on every prompt of a
//! [`Task`], every output scored by every evaluated head at weight 1 (whatever the search
//! was steered by), and what the search cost; several settings run prompt by prompt in turn
//! ([`interleaved`]) and averaged ([`mean`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use deal_backend::Backend;
use deal_controllers::{Request, SearchConfig};
use deal_heads::reward::{RewardSpec, WeightedReward};
use deal_heads::{Candidate, HeadContext};
use serde_json::Value;

use crate::task::{Item, Task};

/// A controller, its settings, and the weights it steers by.
#[derive(Debug, Clone)]
pub struct Setting {
    /// Shown in tables and plots.
    pub label: String,
    pub controller: String,
    pub config: SearchConfig,
    /// Weights per head; empty for an unsteered controller.
    pub weights: BTreeMap<String, f64>,
}

/// Means over a task's prompts.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Measured {
    pub label: String,
    pub controller: String,
    pub weights: BTreeMap<String, f64>,
    /// Mean normalised score in [0, 1] per evaluated head.
    pub scores: BTreeMap<String, f64>,
    /// Share of outputs with every keyword (when `keywords` is evaluated).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hard_coverage: Option<f64>,
    pub prompts: usize,
    /// Mean committed tokens per prompt.
    pub tokens: f64,
    /// Mean tokens the search generated per prompt (rollouts and discarded samples included):
    /// the budget of "equal tokens" comparisons.
    pub tokens_generated: f64,
    pub passes_per_token: f64,
    pub rows_per_token: f64,
    /// Committed tokens per second of decoding (prefill excluded).
    pub tokens_per_sec: f64,
    /// Mean of the weighted total of the normalised scores (Σ weight · score / Σ |weight|)
    /// under this setting's weights, when it has any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reward: Option<f64>,
    /// The first outputs, for reading.
    pub samples: Vec<String>,
}

/// Runs settings on a task: the backend, the heads evaluated and their shared params.
pub struct Runner<'a> {
    pub backend: &'a dyn Backend,
    pub registry: deal_controllers::Registry,
    pub heads: deal_heads::Registry,
    pub context: std::sync::Arc<HeadContext>,
    /// The heads every output is scored by.
    pub evaluated: Vec<String>,
    /// Params per head for every prompt (a prompt's own are merged over them).
    pub head_params: BTreeMap<String, Value>,
    /// Set to stop between searches (Ctrl-C): the setting being run is then incomplete and
    /// [`Runner::run`] returns `None`.
    pub stop: &'a AtomicBool,
}

/// Merge object `over` into `base` (keys of `over` win).
fn merged(base: Option<&Value>, over: Option<&Value>) -> Option<Value> {
    match (base, over) {
        (None, None) => None,
        (Some(b), None) => Some(b.clone()),
        (None, Some(o)) => Some(o.clone()),
        (Some(Value::Object(b)), Some(Value::Object(o))) => {
            let mut m = b.clone();
            m.extend(o.iter().map(|(k, v)| (k.clone(), v.clone())));
            Some(Value::Object(m))
        }
        (_, Some(o)) => Some(o.clone()),
    }
}

impl<'a> Runner<'a> {
    /// A runner with the built-in registries; `context` holds the heads' models (the
    /// driver's, so model heads share the policy).
    pub fn new(
        backend: &'a dyn Backend,
        context: std::sync::Arc<HeadContext>,
        evaluated: Vec<String>,
        head_params: BTreeMap<String, Value>,
        stop: &'a AtomicBool,
    ) -> Self {
        Self {
            backend,
            registry: deal_controllers::Registry::builtin(),
            heads: deal_heads::Registry::with_builtin(),
            context,
            evaluated,
            head_params,
            stop,
        }
    }

    fn params(&self, item: &Item, head: &str) -> Option<Value> {
        merged(self.head_params.get(head), item.heads.get(head))
    }

    /// The reward of `weights` on `item` (the heads with their params).
    pub fn reward(&self, item: &Item, weights: &BTreeMap<String, f64>) -> anyhow::Result<WeightedReward> {
        let mut spec = RewardSpec { weights: weights.clone(), ..Default::default() };
        for h in weights.keys() {
            if let Some(p) = self.params(item, h) {
                spec.heads.insert(h.clone(), p);
            }
        }
        Ok(spec.build(&self.heads, &self.context)?)
    }

    /// Check that every evaluated head builds on every prompt (before a long run starts).
    pub fn check(&self, task: &Task) -> anyhow::Result<()> {
        let all: BTreeMap<String, f64> = self.evaluated.iter().map(|h| (h.clone(), 1.0)).collect();
        for item in &task.items {
            self.reward(item, &all)?;
        }
        Ok(())
    }

    /// Run `s` on every prompt of `task`; `None` when stopped before the end.
    pub fn run(&self, task: &Task, s: &Setting, on_search: &mut dyn FnMut()) -> anyhow::Result<Option<Measured>> {
        let judge_weights: BTreeMap<String, f64> = self.evaluated.iter().map(|h| (h.clone(), 1.0)).collect();
        let mut sums: BTreeMap<String, f64> = self.evaluated.iter().map(|h| (h.clone(), 0.0)).collect();
        let (mut hard, mut tokens, mut generated, mut passes, mut rows, mut decode, mut reward) = (0.0, 0usize, 0usize, 0usize, 0usize, 0.0, 0.0);
        let mut samples = Vec::new();
        let wsum: f64 = s.weights.values().map(|w| w.abs()).sum();
        for item in &task.items {
            if self.stop.load(Ordering::Relaxed) {
                return Ok(None);
            }
            let steer = if s.weights.is_empty() { None } else { Some(self.reward(item, &s.weights)?) };
            let mut req = Request::new(self.backend, &item.prompt);
            if let Some(r) = &steer {
                req = req.with_reward(r);
            }
            let out = self.registry.search(&s.controller, &s.config, &req, &mut |_| true)?;
            let judge = self.reward(item, &judge_weights)?;
            let b = judge.score(&[Candidate::new(item.prompt.clone(), out.text.clone())])?;
            let b = b.first().ok_or_else(|| anyhow::anyhow!("the judge returned no score"))?;
            let mut weighted = 0.0;
            for h in &b.heads {
                *sums.entry(h.head.clone()).or_default() += h.normalized as f64;
                weighted += s.weights.get(&h.head).copied().unwrap_or(0.0) * h.normalized as f64;
                if h.head == "keywords" {
                    hard += h.details.get("hard").copied().unwrap_or(0.0) as f64;
                }
            }
            if wsum > 0.0 {
                reward += weighted / wsum;
            }
            tokens += out.tokens.len();
            generated += out.stats.tokens_generated;
            passes += out.stats.forward_passes;
            rows += out.stats.rows_evaluated;
            decode += (out.stats.wall_secs - out.stats.prefill_secs).max(0.0);
            if samples.len() < 3 {
                samples.push(out.text.clone());
            }
            on_search();
        }
        let n = task.items.len().max(1) as f64;
        let t = tokens.max(1) as f64;
        Ok(Some(Measured {
            label: s.label.clone(),
            controller: s.controller.clone(),
            weights: s.weights.clone(),
            scores: sums.into_iter().map(|(k, v)| (k, v / n)).collect(),
            hard_coverage: self.evaluated.iter().any(|h| h == "keywords").then_some(hard / n),
            prompts: task.items.len(),
            tokens: tokens as f64 / n,
            tokens_generated: generated as f64 / n,
            passes_per_token: passes as f64 / t,
            rows_per_token: rows as f64 / t,
            tokens_per_sec: if decode > 0.0 { tokens as f64 / decode } else { 0.0 },
            reward: (wsum > 0.0).then_some(reward / n),
            samples,
        }))
    }
}

/// Run every setting on every prompt, prompts in the outer loop (so a slow spell of a shared
/// machine lands on all settings alike), and average each setting over the prompts; `None`
/// when stopped.
pub fn interleaved(runner: &Runner<'_>, task: &Task, settings: &[Setting], on_search: &mut dyn FnMut(usize, usize)) -> anyhow::Result<Option<Vec<Measured>>> {
    let total = task.items.len() * settings.len();
    let mut parts: Vec<Vec<Measured>> = vec![Vec::new(); settings.len()];
    let mut done = 0;
    for item in &task.items {
        let one = Task { items: vec![item.clone()] };
        for (s, acc) in settings.iter().zip(parts.iter_mut()) {
            let Some(m) = runner.run(&one, s, &mut || {})? else { return Ok(None) };
            acc.push(m);
            done += 1;
            on_search(done, total);
        }
    }
    Ok(Some(parts.iter().map(|ms| mean(ms)).collect()))
}

/// The mean of per-prompt measurements of one setting (rates weighted by tokens).
pub fn mean(ms: &[Measured]) -> Measured {
    let Some(first) = ms.first() else { return Measured::default() };
    let n = ms.len() as f64;
    let tokens: f64 = ms.iter().map(|m| m.tokens).sum();
    let secs: f64 = ms.iter().map(|m| if m.tokens_per_sec > 0.0 { m.tokens / m.tokens_per_sec } else { 0.0 }).sum();
    let per_token = |f: fn(&Measured) -> f64| if tokens > 0.0 { ms.iter().map(|m| f(m) * m.tokens).sum::<f64>() / tokens } else { 0.0 };
    let mut scores = BTreeMap::new();
    for m in ms {
        for (h, v) in &m.scores {
            *scores.entry(h.clone()).or_insert(0.0) += v / n;
        }
    }
    Measured {
        label: first.label.clone(),
        controller: first.controller.clone(),
        weights: first.weights.clone(),
        scores,
        hard_coverage: first.hard_coverage.map(|_| ms.iter().filter_map(|m| m.hard_coverage).sum::<f64>() / n),
        prompts: ms.iter().map(|m| m.prompts).sum(),
        tokens: tokens / n,
        tokens_generated: ms.iter().map(|m| m.tokens_generated).sum::<f64>() / n,
        passes_per_token: per_token(|m| m.passes_per_token),
        rows_per_token: per_token(|m| m.rows_per_token),
        tokens_per_sec: if secs > 0.0 { tokens / secs } else { 0.0 },
        reward: first.reward.map(|_| ms.iter().filter_map(|m| m.reward).sum::<f64>() / n),
        samples: ms.iter().flat_map(|m| m.samples.iter().cloned()).take(3).collect(),
    }
}

