//! `deal eval sweep`: the trade-off between heads that a weight vector dials. For each
//! weight vector on a grid (the simplex, or DPA-style unit directions), one controller runs
//! every prompt; each point is the mean normalised score of each head. The sweep's Pareto
//! front and its hypervolume are compared with two references run on the same prompts:
//! greedy (no steering) and best-of-N with the same weights at an equal token budget (N
//! chosen so best-of-N generates about as many tokens as the controller did).

use std::collections::BTreeMap;

use deal_controllers::SearchConfig;

use crate::measure::{Measured, Runner, Setting};
use crate::pareto;
use crate::task::Task;

/// How the weight vectors are laid out.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Grid {
    /// Weights ≥ 0 summing to 1, `n` steps per head between 0 and 1 (every composition).
    Simplex(usize),
    /// Unit vectors at `n` evenly spaced angles of the positive quadrant (two heads), as in
    /// DPA's directions; weights sum of squares 1.
    Directions(usize),
}

/// The weight vectors of `grid` over `heads`, in order.
pub fn weight_vectors(heads: &[String], grid: Grid) -> Vec<BTreeMap<String, f64>> {
    let d = heads.len();
    let mut out = Vec::new();
    match grid {
        Grid::Simplex(n) => {
            let steps = n.max(2) - 1;
            let mut parts = vec![0usize; d];
            compositions(steps, 0, &mut parts, &mut |p| {
                out.push(heads.iter().cloned().zip(p.iter().map(|&k| k as f64 / steps as f64)).collect());
            });
        }
        Grid::Directions(n) => {
            let n = n.max(2);
            for i in 0..n {
                let theta = std::f64::consts::FRAC_PI_2 * i as f64 / (n - 1) as f64;
                let (s, c) = theta.sin_cos();
                let w = [c, s];
                out.push(heads.iter().take(2).cloned().zip(w.iter().map(|x| (x * 1e6).round() / 1e6)).collect());
            }
        }
    }
    out
}

/// Every way to split `left` into `parts[at..]` (in lexicographic order of the first parts,
/// descending), calling `f` with each full split.
fn compositions(left: usize, at: usize, parts: &mut Vec<usize>, f: &mut dyn FnMut(&[usize])) {
    if at + 1 == parts.len() {
        parts[at] = left;
        f(parts);
        return;
    }
    for k in (0..=left).rev() {
        parts[at] = k;
        compositions(left - k, at + 1, parts, f);
    }
}

/// Sweep settings.
#[derive(Debug, Clone)]
pub struct Sweep {
    /// The heads whose weights are varied (and which every output is scored by).
    pub heads: Vec<String>,
    pub grid: Grid,
    /// The steered controller and its config.
    pub controller: String,
    pub config: SearchConfig,
    /// Run the references (greedy, and best-of-N at the controller's token budget).
    pub references: bool,
    /// The hypervolume's reference point, one value per head (default: all 0).
    pub reference_point: Vec<f64>,
}

/// One front.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Front {
    /// Indices into its points, along the front.
    pub indices: Vec<usize>,
    pub hypervolume: f64,
}

/// What a sweep measured (also its partial state while it runs).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct SweepReport {
    pub heads: Vec<String>,
    pub controller: String,
    pub config: SearchConfig,
    pub grid: Option<Grid>,
    pub reference_point: Vec<f64>,
    /// The controller at each weight vector measured so far.
    pub points: Vec<Measured>,
    pub front: Front,
    /// Greedy on the same prompts.
    pub greedy: Option<Measured>,
    /// Best-of-N at each weight vector, N set to match the controller's tokens.
    pub best_of_n: Vec<Measured>,
    pub best_of_n_front: Front,
    /// N of the best-of-N reference.
    pub best_of_n_n: Option<usize>,
    /// Whether every planned run finished (false after an interrupt).
    pub complete: bool,
}

impl SweepReport {
    /// The mean scores of `m` in head order.
    pub fn coords(&self, m: &Measured) -> Vec<f64> {
        self.heads.iter().map(|h| m.scores.get(h).copied().unwrap_or(0.0)).collect()
    }

    fn front_of(&self, ms: &[Measured]) -> Front {
        let pts: Vec<Vec<f64>> = ms.iter().map(|m| self.coords(m)).collect();
        let indices = pareto::front(&pts);
        let hypervolume = pareto::hypervolume(&pts, &self.reference_point);
        Front { indices, hypervolume }
    }

    /// Recompute both fronts from the points.
    pub fn update_fronts(&mut self) {
        self.front = self.front_of(&self.points);
        self.best_of_n_front = self.front_of(&self.best_of_n);
    }
}

/// `head=weight` pairs in the sweep's head order.
fn label(heads: &[String], w: &BTreeMap<String, f64>) -> String {
    heads.iter().filter_map(|h| w.get(h).map(|x| format!("{h}={x:.2}"))).collect::<Vec<_>>().join(" ")
}

/// Best-of-N's N for an equal token budget: the controller's mean generated tokens over
/// greedy's mean tokens, rounded, at least 1.
pub fn equal_budget_n(controller_generated: f64, greedy_tokens: f64) -> usize {
    if greedy_tokens <= 0.0 {
        return 1;
    }
    ((controller_generated / greedy_tokens).round() as usize).clamp(1, 256)
}

/// Run the sweep. `on_search` is called after every search (progress: `done`, `total`);
/// `on_point` after every finished setting with the report so far (so an interrupt keeps it).
pub fn run(
    runner: &Runner<'_>,
    task: &Task,
    s: &Sweep,
    on_search: &mut dyn FnMut(usize, usize),
    on_point: &mut dyn FnMut(&SweepReport) -> anyhow::Result<()>,
) -> anyhow::Result<SweepReport> {
    let vectors = weight_vectors(&s.heads, s.grid);
    let per = task.items.len();
    let total = per * (vectors.len() * if s.references { 2 } else { 1 } + usize::from(s.references));
    let mut done = 0;
    let mut report = SweepReport {
        heads: s.heads.clone(),
        controller: s.controller.clone(),
        config: s.config.clone(),
        grid: Some(s.grid),
        reference_point: if s.reference_point.len() == s.heads.len() { s.reference_point.clone() } else { vec![0.0; s.heads.len()] },
        ..Default::default()
    };
    let mut tick = || {
        done += 1;
        on_search(done, total);
    };
    if s.references {
        let greedy = Setting { label: "greedy".into(), controller: "greedy".into(), config: s.config.clone(), weights: BTreeMap::new() };
        let Some(m) = runner.run(task, &greedy, &mut tick)? else { return Ok(report) };
        report.greedy = Some(m);
        on_point(&report)?;
    }
    for w in &vectors {
        let label = label(&s.heads, w);
        let setting = Setting { label, controller: s.controller.clone(), config: s.config.clone(), weights: w.clone() };
        let Some(m) = runner.run(task, &setting, &mut tick)? else { return Ok(report) };
        report.points.push(m);
        report.update_fronts();
        on_point(&report)?;
    }
    if s.references {
        let greedy_tokens = report.greedy.as_ref().map_or(0.0, |g| g.tokens_generated);
        let generated = report.points.iter().map(|m| m.tokens_generated).sum::<f64>() / report.points.len().max(1) as f64;
        let n = equal_budget_n(generated, greedy_tokens);
        report.best_of_n_n = Some(n);
        for w in &vectors {
            let label = label(&s.heads, w);
            let config = SearchConfig { n, ..s.config.clone() };
            let setting = Setting { label, controller: "best_of_n".into(), config, weights: w.clone() };
            let Some(m) = runner.run(task, &setting, &mut tick)? else { return Ok(report) };
            report.best_of_n.push(m);
            report.update_fronts();
            on_point(&report)?;
        }
    }
    report.complete = true;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_simplex_grid_lists_every_composition() {
        let v = weight_vectors(&h(&["a", "b"]), Grid::Simplex(5));
        let a: Vec<f64> = v.iter().map(|w| w["a"]).collect();
        assert_eq!(a, vec![1.0, 0.75, 0.5, 0.25, 0.0]);
        assert!(v.iter().all(|w| (w["a"] + w["b"] - 1.0).abs() < 1e-12));
        // 3 heads, 3 steps per head: C(2 + 2, 2) = 6 vectors
        let v = weight_vectors(&h(&["a", "b", "c"]), Grid::Simplex(3));
        assert_eq!(v.len(), 6);
        assert!(v.iter().all(|w| (w.values().sum::<f64>() - 1.0).abs() < 1e-12));
    }

    #[test]
    fn directions_are_unit_vectors_of_the_quadrant() {
        let v = weight_vectors(&h(&["a", "b"]), Grid::Directions(3));
        assert_eq!(v.len(), 3);
        assert_eq!((v[0]["a"], v[0]["b"]), (1.0, 0.0));
        assert!((v[1]["a"] - 0.5f64.sqrt()).abs() < 1e-6 && (v[1]["b"] - 0.5f64.sqrt()).abs() < 1e-6);
        assert_eq!((v[2]["a"], v[2]["b"]), (0.0, 1.0));
    }

    #[test]
    fn equal_budget() {
        assert_eq!(equal_budget_n(160.0, 16.0), 10);
        assert_eq!(equal_budget_n(5.0, 16.0), 1);
        assert_eq!(equal_budget_n(5.0, 0.0), 1);
    }
}
