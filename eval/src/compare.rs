//! `deal eval compare`: the DeAL paper's open question, DeAL against best-of-N and ARGS at
//! equal generated tokens. Each family runs at several sizes (best-of-N's N, ARGS's k,
//! DeAL's k and lookahead l) on the same prompts with the same weights; each point is the
//! mean reward (Σ weight · normalised score / Σ |weight|) against the mean tokens the search
//! generated per prompt (rollouts and discarded samples included). Greedy is the common
//! origin. Prompts run in the outer loop so machine noise lands on every setting alike.

use std::collections::BTreeMap;

use deal_controllers::SearchConfig;

use crate::measure::{Measured, Runner, Setting};
use crate::task::Task;

/// The sizes of each family.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Families {
    /// best-of-N's N values.
    pub best_of_n: Vec<usize>,
    /// ARGS's k values.
    pub args: Vec<usize>,
    /// DeAL's (k, lookahead) pairs (beams from the base config).
    pub deal: Vec<(usize, usize)>,
}

impl Default for Families {
    fn default() -> Self {
        Self { best_of_n: vec![2, 4, 8, 16], args: vec![2, 4, 8], deal: vec![(2, 1), (2, 2), (4, 2), (4, 4)] }
    }
}

/// One setting per family member, plus greedy first.
pub fn settings(f: &Families, base: &SearchConfig, weights: &BTreeMap<String, f64>) -> Vec<(String, Setting)> {
    let mut out = vec![("greedy".to_string(), Setting { label: "greedy".into(), controller: "greedy".into(), config: base.clone(), weights: weights.clone() })];
    for &n in &f.best_of_n {
        let config = SearchConfig { n, ..base.clone() };
        out.push(("best_of_n".into(), Setting { label: format!("best_of_n N={n}"), controller: "best_of_n".into(), config, weights: weights.clone() }));
    }
    for &k in &f.args {
        let config = SearchConfig { k, ..base.clone() };
        out.push(("args".into(), Setting { label: format!("args k={k}"), controller: "args".into(), config, weights: weights.clone() }));
    }
    for &(k, l) in &f.deal {
        let config = SearchConfig { k, lookahead: l, ..base.clone() };
        out.push(("deal".into(), Setting { label: format!("deal k={k} l={l}"), controller: "deal".into(), config, weights: weights.clone() }));
    }
    out
}

/// One measured family member.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ComparePoint {
    pub family: String,
    #[serde(flatten)]
    pub measured: Measured,
}

/// Run every setting on every prompt (prompts outer); `None` when stopped.
pub fn run(runner: &Runner<'_>, task: &Task, settings: &[(String, Setting)], on_search: &mut dyn FnMut(usize, usize)) -> anyhow::Result<Option<Vec<ComparePoint>>> {
    let plain: Vec<Setting> = settings.iter().map(|(_, s)| s.clone()).collect();
    let Some(ms) = crate::measure::interleaved(runner, task, &plain, on_search)? else { return Ok(None) };
    Ok(Some(settings.iter().zip(ms).map(|((family, _), measured)| ComparePoint { family: family.clone(), measured }).collect()))
}

/// The table: one row per setting.
pub fn table(points: &[ComparePoint]) -> String {
    let mut s = String::from("| setting | tokens generated / prompt | reward | passes/token | tokens/s |\n| --- | ---: | ---: | ---: | ---: |\n");
    for p in points {
        let m = &p.measured;
        s += &format!("| {} | {:.1} | {:.3} | {:.2} | {:.1} |\n", m.label, m.tokens_generated, m.reward.unwrap_or(0.0), m.passes_per_token, m.tokens_per_sec);
    }
    s
}
