//! `deal eval`: the trade-offs a user can dial, measured on their model and heads.
//! `keywords` (coverage and speed per controller), `sweep` (a weight grid, its Pareto front,
//! hypervolume and plots against greedy and best-of-N at equal tokens), `compare` (DeAL vs
//! best-of-N vs ARGS at equal generated tokens, plotted). Progress bars with ETA; Ctrl-C
//! stops between searches and keeps what finished (the sweep writes its JSON and plots
//! after every weight vector).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use deal_controllers::SearchConfig;
use deal_eval::measure::Runner;
use deal_eval::sweep::{Grid, Sweep};
use deal_eval::task::Task;
use deal_eval::{compare, keywords, plot, sweep};
use serde_json::Value;

use super::ModelArgs;

#[derive(clap::Subcommand, Debug)]
pub enum EvalCommand {
    /// Keyword coverage (soft, hard), tokens/s and passes per token of each controller on
    /// CommonGen-style concept sets.
    Keywords(KeywordsArgs),
    /// Sweep the weights of two or more heads: mean normalised score per head at each weight
    /// vector, the Pareto front and its hypervolume, against greedy and best-of-N at an equal
    /// token budget; JSON, PNG and SVG.
    Sweep(SweepArgs),
    /// DeAL vs best-of-N vs ARGS at equal generated tokens: reward against tokens spent,
    /// as a table, JSON and a plot.
    Compare(CompareArgs),
    /// Draw the plots of a saved `sweep` or `compare` JSON again (PNG and SVG beside it, or
    /// at --out): after an interrupt, or to restyle without rerunning.
    Plot(PlotArgs),
}

#[derive(clap::Args, Debug)]
pub struct PlotArgs {
    /// The JSON a sweep or compare wrote.
    pub file: PathBuf,
    /// Path of the plots without extension (default: the JSON's).
    #[arg(long, value_name = "STEM")]
    pub out: Option<PathBuf>,
}

/// What every evaluation takes: the model, prompts, the base search config.
#[derive(clap::Args, Debug)]
pub struct Common {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Prompts, one per line.
    #[arg(long, value_name = "FILE", conflicts_with = "concepts")]
    pub prompts: Option<PathBuf>,
    /// Keyword concept sets, one per line (each becomes a prompt with keywords.words set).
    #[arg(long, value_name = "FILE")]
    pub concepts: Option<PathBuf>,
    /// Use only the first N prompts (0: all).
    #[arg(long, default_value_t = 0)]
    pub limit: usize,
    /// Most tokens per response.
    #[arg(short = 'n', long = "max-tokens", default_value_t = 24)]
    pub max_tokens: usize,
    /// Base search config as JSON (SearchConfig fields: k, beams, lookahead, lambda, n, ...).
    #[arg(long, value_name = "JSON")]
    pub params: Option<String>,
    /// Params of one head for every prompt, as NAME=JSON (repeatable), e.g.
    /// length='{"target": 8}'.
    #[arg(long = "head", value_name = "NAME=JSON")]
    pub head_params: Vec<String>,
    /// Write the results as JSON here (default: under --out).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Folder for JSON and plots.
    #[arg(long, value_name = "DIR", default_value = "eval-out")]
    pub out: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct KeywordsArgs {
    #[command(flatten)]
    pub common: Common,
    /// Controllers to measure (comma separated).
    #[arg(long, value_delimiter = ',', default_value = "greedy,deal,args,blockwise,best_of_n,early_prune")]
    pub controllers: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct SweepArgs {
    #[command(flatten)]
    pub common: Common,
    /// Heads whose weights are swept (comma separated; the plot shows the first two).
    #[arg(long, value_delimiter = ',', default_value = "sentiment,length")]
    pub heads: Vec<String>,
    /// Points per head on the weight simplex (weights ≥ 0 summing to 1).
    #[arg(long, default_value_t = 11, conflicts_with = "directions")]
    pub grid: usize,
    /// Instead of the simplex: N unit weight vectors at even angles (DPA-style directions;
    /// two heads).
    #[arg(long, value_name = "N")]
    pub directions: Option<usize>,
    /// The steered controller.
    #[arg(long, default_value = "deal")]
    pub controller: String,
    /// Skip the greedy and best-of-N references.
    #[arg(long)]
    pub no_references: bool,
    /// The hypervolume's reference point, one value per head (default: 0 for every head).
    #[arg(long, value_delimiter = ',')]
    pub reference: Vec<f64>,
}

#[derive(clap::Args, Debug)]
pub struct CompareArgs {
    #[command(flatten)]
    pub common: Common,
    /// The reward: weights as NAME=W pairs (comma separated).
    #[arg(short = 'W', long = "reward", value_name = "NAME=W", value_delimiter = ',', default_value = "keywords=1")]
    pub reward: Vec<String>,
    /// best-of-N's N values.
    #[arg(long, value_delimiter = ',', default_value = "2,4,8,16")]
    pub best_of_n: Vec<usize>,
    /// ARGS's k values.
    #[arg(long, value_delimiter = ',', default_value = "2,4,8")]
    pub args_k: Vec<usize>,
    /// DeAL's settings as K:L (top-k candidates : lookahead tokens).
    #[arg(long, value_delimiter = ',', default_value = "2:1,2:2,4:2,4:4")]
    pub deal: Vec<String>,
}

pub fn run(cmd: EvalCommand) -> anyhow::Result<()> {
    match cmd {
        EvalCommand::Keywords(a) => keywords_eval(a),
        EvalCommand::Sweep(a) => sweep_eval(a),
        EvalCommand::Compare(a) => compare_eval(a),
        EvalCommand::Plot(a) => replot(a),
    }
}

fn replot(a: PlotArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&a.file).map_err(|e| anyhow::anyhow!("{}: {e}", a.file.display()))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: not JSON ({e})", a.file.display()))?;
    let stem = a.out.clone().unwrap_or_else(|| a.file.with_extension(""));
    let [png, svg] = if v.get("front").is_some() && v.get("heads").is_some() {
        let r: sweep::SweepReport = serde_json::from_value(v).map_err(|e| anyhow::anyhow!("{}: not a sweep report ({e})", a.file.display()))?;
        if r.points.is_empty() {
            anyhow::bail!("{}: the sweep has no point yet", a.file.display());
        }
        plot::front(&r, &stem)?
    } else if let Some(points) = v.get("points").filter(|p| p.get(0).is_some_and(|p| p.get("family").is_some())) {
        let points: Vec<compare::ComparePoint> = serde_json::from_value(points.clone()).map_err(|e| anyhow::anyhow!("{}: not a compare report ({e})", a.file.display()))?;
        plot::compare(&points, &stem)?
    } else {
        anyhow::bail!("{}: neither a sweep nor a compare report", a.file.display());
    };
    eprintln!("wrote {} and {}", png.display(), svg.display());
    Ok(())
}

/// Set on the first Ctrl-C (searches stop between prompts; a second Ctrl-C exits at once).
fn interrupt_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_io().build() else { return };
        rt.block_on(async {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("\ndeal eval: stopping after the current search (Ctrl-C again quits)");
                f.store(true, Ordering::Relaxed);
            }
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        });
    });
    flag
}

fn bar(what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(0);
    let template = format!("{{bar:30}} {{pos}}/{{len}} {what} [{{elapsed_precise}}, eta {{eta}}]");
    bar.set_style(indicatif::ProgressStyle::with_template(&template).unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()));
    bar
}

/// A search-count callback that moves `bar`.
fn progress(bar: &indicatif::ProgressBar) -> impl FnMut(usize, usize) + '_ {
    move |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    }
}

impl Common {
    fn task(&self, default_concepts: bool) -> anyhow::Result<Task> {
        let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()));
        let task = match (&self.prompts, &self.concepts) {
            (Some(p), _) => Task::prompts(&read(p)?),
            (None, Some(c)) => Task::keywords(&read(c)?),
            (None, None) if default_concepts => Task::keywords(deal_bench::search::CONCEPTS_TEXT),
            (None, None) => Task::prompts(deal_bench::steer::SENTIMENT_PROMPTS),
        }
        .take(self.limit);
        if task.is_empty() {
            anyhow::bail!("no prompts: the file has no non-empty line");
        }
        Ok(task)
    }

    fn config(&self) -> anyhow::Result<SearchConfig> {
        let mut cfg = match &self.params {
            Some(p) => SearchConfig::from_json(p)?,
            None => SearchConfig::default(),
        };
        if self.max_tokens == 0 {
            anyhow::bail!("--max-tokens must be at least 1");
        }
        cfg.max_tokens = self.max_tokens;
        if cfg.stop.is_empty() {
            // one sentence or line per prompt, as the benchmarks measure
            cfg.stop = vec!["\n".into()];
        }
        cfg.validate()?;
        Ok(cfg)
    }

    fn head_params(&self) -> anyhow::Result<BTreeMap<String, Value>> {
        self.head_params
            .iter()
            .map(|hp| {
                let (name, json) = hp.split_once('=').ok_or_else(|| anyhow::anyhow!("--head {hp:?}: expected NAME=JSON"))?;
                let v: Value = serde_json::from_str(json).map_err(|e| anyhow::anyhow!("--head {name}: not JSON ({e})"))?;
                Ok((name.to_string(), v))
            })
            .collect()
    }

    /// A runner over `driver`'s backend and head context, scoring by `evaluated`, checked
    /// on every prompt of `task` before anything runs.
    fn runner<'a>(&self, driver: &'a deal_driver::Driver, evaluated: Vec<String>, task: &Task, stop: &'a AtomicBool) -> anyhow::Result<Runner<'a>> {
        let runner = Runner::new(driver.backend().as_ref(), driver.heads().clone(), evaluated, self.head_params()?, stop);
        runner.check(task)?;
        Ok(runner)
    }

    fn json_path(&self, name: &str) -> anyhow::Result<PathBuf> {
        std::fs::create_dir_all(&self.out).map_err(|e| anyhow::anyhow!("{}: {e}", self.out.display()))?;
        Ok(self.json.clone().unwrap_or_else(|| self.out.join(format!("{name}.json"))))
    }
}

/// Write `v` as JSON to `path` through a temporary file (an interrupt never leaves half a file).
fn write_json(path: &Path, v: &impl serde::Serialize) -> anyhow::Result<()> {
    let tmp = path.with_extension("json.partial");
    std::fs::write(&tmp, serde_json::to_string_pretty(v)?)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn keywords_eval(a: KeywordsArgs) -> anyhow::Result<()> {
    let c = &a.common;
    let task = c.task(true)?;
    let cfg = c.config()?;
    let driver = c.model.driver()?;
    let stop = interrupt_flag();
    let runner = c.runner(&driver, vec!["keywords".into()], &task, &stop)?;
    let settings = keywords::settings(&a.controllers, &cfg, &runner.registry)?;
    eprintln!("deal eval keywords: {} on {} concept sets, {} controllers, max {} tokens", driver.backend().model_id(), task.items.len(), settings.len(), cfg.max_tokens);
    let bar = bar("searches");
    let out = deal_eval::measure::interleaved(&runner, &task, &settings, &mut progress(&bar))?;
    bar.finish_and_clear();
    let Some(ms) = out else {
        anyhow::bail!("interrupted: the controllers are compared on the same prompts, so nothing is reported");
    };
    print!("{}", keywords::table(&ms));
    let path = c.json_path("keywords")?;
    write_json(&path, &serde_json::json!({"model": driver.backend().model_id(), "config": cfg, "prompts": task.items.len(), "results": ms}))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

fn sweep_eval(a: SweepArgs) -> anyhow::Result<()> {
    let c = &a.common;
    if a.heads.len() < 2 {
        anyhow::bail!("--heads: a sweep needs at least two heads");
    }
    if a.directions.is_some() && a.heads.len() != 2 {
        anyhow::bail!("--directions takes exactly two heads");
    }
    if !a.reference.is_empty() && a.reference.len() != a.heads.len() {
        anyhow::bail!("--reference needs one value per head ({})", a.heads.len());
    }
    let grid = match a.directions {
        Some(n) if n >= 2 => Grid::Directions(n),
        Some(_) => anyhow::bail!("--directions must be at least 2"),
        None if a.grid >= 2 => Grid::Simplex(a.grid),
        None => anyhow::bail!("--grid must be at least 2"),
    };
    let task = c.task(a.heads.iter().any(|h| h == "keywords"))?;
    let cfg = c.config()?;
    let driver = c.model.driver()?;
    let stop = interrupt_flag();
    let runner = c.runner(&driver, a.heads.clone(), &task, &stop)?;
    if runner.registry.get(&a.controller).is_none() {
        anyhow::bail!("unknown controller `{}` (valid: {})", a.controller, runner.registry.names().join(", "));
    }
    let s = Sweep { heads: a.heads.clone(), grid, controller: a.controller.clone(), config: cfg, references: !a.no_references, reference_point: a.reference.clone() };
    let path = c.json_path("sweep")?;
    let stem = path.with_extension("");
    eprintln!(
        "deal eval sweep: {} on {} prompts, {} over {} weight vectors ({:?}){}",
        driver.backend().model_id(),
        task.items.len(),
        a.controller,
        sweep::weight_vectors(&s.heads, grid).len(),
        grid,
        if s.references { ", with greedy and best-of-N references" } else { "" }
    );
    let bar = bar("searches");
    let report = sweep::run(
        &runner,
        &task,
        &s,
        &mut progress(&bar),
        &mut |r| {
            write_json(&path, r)?;
            if !r.points.is_empty() {
                plot::front(r, &stem)?;
            }
            Ok(())
        },
    )?;
    bar.finish_and_clear();
    write_json(&path, &report)?;
    println!("| weights | {} | tokens generated / prompt | on the front |", report.heads.join(" | "));
    println!("| --- |{} ---: | :---: |", " ---: |".repeat(report.heads.len()));
    let rows = report.greedy.iter().map(|m| (m, false)).chain(report.points.iter().enumerate().map(|(i, m)| (m, report.front.indices.contains(&i))));
    let rows = rows.chain(report.best_of_n.iter().enumerate().map(|(i, m)| (m, report.best_of_n_front.indices.contains(&i))));
    for (m, on) in rows {
        let scores: Vec<String> = report.coords(m).iter().map(|x| format!("{x:.3}")).collect();
        let who = if m.controller == a.controller || m.label == m.controller { m.label.clone() } else { format!("{} {}", m.controller, m.label) };
        println!("| {who} | {} | {:.1} | {} |", scores.join(" | "), m.tokens_generated, if on { "yes" } else { "" });
    }
    println!("hypervolume against {:?}: {} {:.4}", report.reference_point, a.controller, report.front.hypervolume);
    if let Some(n) = report.best_of_n_n {
        println!("hypervolume against {:?}: best_of_n N={n} (equal tokens) {:.4}", report.reference_point, report.best_of_n_front.hypervolume);
    }
    if !report.points.is_empty() {
        let [png, svg] = plot::front(&report, &stem)?;
        eprintln!("wrote {}, {} and {}", path.display(), png.display(), svg.display());
    }
    if !report.complete {
        eprintln!("interrupted: the JSON and plot hold the {} weight vectors that finished", report.points.len());
    }
    Ok(())
}

fn compare_eval(a: CompareArgs) -> anyhow::Result<()> {
    let c = &a.common;
    let mut weights = BTreeMap::new();
    for w in &a.reward {
        let (name, value) = w.split_once('=').ok_or_else(|| anyhow::anyhow!("-W {w:?}: expected NAME=W"))?;
        let value: f64 = value.trim().parse().map_err(|_| anyhow::anyhow!("-W {w:?}: the weight is not a number"))?;
        weights.insert(name.trim().to_string(), value);
    }
    if weights.is_empty() || weights.values().all(|w| *w == 0.0) {
        anyhow::bail!("-W: give at least one non-zero weight");
    }
    let mut deal = Vec::new();
    for d in &a.deal {
        let (k, l) = d.split_once(':').ok_or_else(|| anyhow::anyhow!("--deal {d:?}: expected K:L"))?;
        deal.push((k.trim().parse()?, l.trim().parse()?));
    }
    let families = compare::Families { best_of_n: a.best_of_n.clone(), args: a.args_k.clone(), deal };
    let task = c.task(weights.contains_key("keywords"))?;
    let cfg = c.config()?;
    let driver = c.model.driver()?;
    let stop = interrupt_flag();
    let runner = c.runner(&driver, weights.keys().cloned().collect(), &task, &stop)?;
    let settings = compare::settings(&families, &cfg, &weights);
    for (_, s) in &settings {
        runner.registry.build(&s.controller, &s.config)?;
    }
    eprintln!("deal eval compare: {} on {} prompts, {} settings, weights {:?}", driver.backend().model_id(), task.items.len(), settings.len(), weights);
    let bar = bar("searches");
    let out = compare::run(&runner, &task, &settings, &mut progress(&bar))?;
    bar.finish_and_clear();
    let Some(points) = out else {
        anyhow::bail!("interrupted: the settings are compared on the same prompts, so nothing is reported");
    };
    print!("{}", compare::table(&points));
    let path = c.json_path("compare")?;
    write_json(&path, &serde_json::json!({"model": driver.backend().model_id(), "weights": weights, "config": cfg, "families": families, "prompts": task.items.len(), "points": points}))?;
    let [png, svg] = plot::compare(&points, &path.with_extension(""))?;
    eprintln!("wrote {}, {} and {}", path.display(), png.display(), svg.display());
    Ok(())
}
