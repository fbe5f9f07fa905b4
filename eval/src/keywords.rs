//! `deal eval keywords`: CommonGen-style constrained generation. Each controller runs on
//! every concept set steered by the `keywords` head (weight 1); the table gives soft
//! coverage (share of the words present), hard coverage (share of outputs with all of
//! them), committed tokens per second, and forward passes and rows per committed token.
//! Prompts run in the outer loop, every controller in turn on each, so a slow spell of a
//! shared machine lands on all controllers alike.

use std::collections::BTreeMap;

use deal_controllers::SearchConfig;

use crate::measure::{Measured, Runner, Setting};
use crate::task::Task;

/// The settings of every named controller, steered by keywords at weight 1 (none for
/// greedy and sample, which take no reward).
pub fn settings(controllers: &[String], config: &SearchConfig, registry: &deal_controllers::Registry) -> anyhow::Result<Vec<Setting>> {
    controllers
        .iter()
        .map(|c| {
            let kind = registry.get(c).ok_or_else(|| anyhow::anyhow!("unknown controller `{c}` (valid: {})", registry.names().join(", ")))?;
            let weights = if kind.needs_reward { BTreeMap::from([("keywords".to_string(), 1.0)]) } else { BTreeMap::new() };
            Ok(Setting { label: c.clone(), controller: c.clone(), config: config.clone(), weights })
        })
        .collect()
}

/// Run every setting on every prompt (prompts outer); one [`Measured`] per setting, `None`
/// when stopped.
pub fn run(runner: &Runner<'_>, task: &Task, settings: &[Setting], on_search: &mut dyn FnMut(usize, usize)) -> anyhow::Result<Option<Vec<Measured>>> {
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
    Ok(Some(parts.into_iter().map(|ms| mean(&ms)).collect()))
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

/// The table: one row per controller.
pub fn table(ms: &[Measured]) -> String {
    let mut s = String::from("| controller | soft coverage | hard coverage | tokens/s | passes/token | rows/token | tokens |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for m in ms {
        s += &format!(
            "| {} | {:.3} | {:.3} | {:.1} | {:.2} | {:.1} | {:.1} |\n",
            m.label,
            m.scores.get("keywords").copied().unwrap_or(0.0),
            m.hard_coverage.unwrap_or(0.0),
            m.tokens_per_sec,
            m.passes_per_token,
            m.rows_per_token,
            m.tokens
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn means_weight_rates_by_tokens() {
        let a = Measured { tokens: 10.0, tokens_per_sec: 10.0, passes_per_token: 1.0, hard_coverage: Some(1.0), scores: [("keywords".into(), 1.0)].into(), ..Default::default() };
        let b = Measured { tokens: 30.0, tokens_per_sec: 5.0, passes_per_token: 3.0, hard_coverage: Some(0.0), scores: [("keywords".into(), 0.5)].into(), ..Default::default() };
        let m = mean(&[a, b]);
        assert_eq!(m.tokens, 20.0);
        // 40 tokens in 1 s + 6 s
        assert!((m.tokens_per_sec - 40.0 / 7.0).abs() < 1e-12);
        assert!((m.passes_per_token - 2.5).abs() < 1e-12);
        assert_eq!(m.hard_coverage, Some(0.5));
        assert_eq!(m.scores["keywords"], 0.75);
    }
}
