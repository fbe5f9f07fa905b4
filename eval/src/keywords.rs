//! `deal eval keywords`: CommonGen-style constrained generation. Each controller runs
//! ([`crate::measure::interleaved`]) on
//! every concept set steered by the `keywords` head (weight 1); the table gives soft
//! coverage (share of the words present), hard coverage (share of outputs with all of
//! them), committed tokens per second, and forward passes and rows per committed token.
//! Prompts run in the outer loop, every controller in turn on each, so a slow spell of a
//! shared machine lands on all controllers alike.

use std::collections::BTreeMap;

use deal_controllers::SearchConfig;

use crate::measure::{Measured, Setting};

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
    use crate::measure::mean;

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
