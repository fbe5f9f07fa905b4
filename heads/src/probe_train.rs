//! Fitting linear probes on the policy's final hidden state (`deal train-probe`).
//!
//! - Data: (prompt, response, score) records, from a JSONL file or **distilled** from a
//!   teacher head over texts the policy generates itself ([`distill`]): the prompts of
//!   [`DISTILL_PROMPTS`] sampled several times each, with a record every few tokens (partial
//!   responses, as the search scores them) whose hidden state is the one the decode step
//!   produced.
//! - Fit: ridge regression on standardised features, λ chosen by grouped k-fold
//!   cross-validation on the training groups, evaluated on held-out groups (prompts), so
//!   texts from one prompt never sit on both sides: held-out R², Pearson and Spearman
//!   against the teacher.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::Path;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use deal_backend::sampling::{Sampler, SamplingParams};
use deal_backend::{Backend, TokenDist};

use crate::probe::{policy_hidden, ProbeWeights};
use crate::{Candidate, DynHead, Error, Result, Scale};

/// One training example.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The prompt the response continues (empty when absent).
    #[serde(default)]
    pub prompt: String,
    /// The response (`text` is accepted as an alias).
    #[serde(alias = "text")]
    pub response: String,
    /// Target score (the teacher head's raw score when distilled).
    pub score: f32,
    /// Records of one group (default: one per prompt) are held out together.
    #[serde(default)]
    pub group: Option<String>,
    /// `true` for a partial response: a prefix that was still growing when it was scored.
    #[serde(default)]
    pub partial: bool,
    /// The policy's hidden state after the response (computed when absent).
    #[serde(skip)]
    pub hidden: Option<Vec<f32>>,
}

impl Record {
    fn group_key(&self) -> &str {
        self.group.as_deref().unwrap_or(&self.prompt)
    }
}

/// Read records from a JSONL file: one `{"prompt", "response" | "text", "score"}` per line.
pub fn read_jsonl(path: &Path) -> Result<Vec<Record>> {
    let io = |source| Error::Io { path: path.to_path_buf(), source };
    let f = std::fs::File::open(path).map_err(io)?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.map_err(io)?;
        if line.trim().is_empty() {
            continue;
        }
        let r: Record = serde_json::from_str(&line)
            .map_err(|e| Error::invalid(format!("{}:{}: {e} (expected {{\"prompt\", \"response\", \"score\"}})", path.display(), i + 1)))?;
        if !r.score.is_finite() {
            return Err(Error::invalid(format!("{}:{}: score is not finite", path.display(), i + 1)));
        }
        out.push(r);
    }
    Ok(out)
}

/// Write records as JSONL (without hidden states).
pub fn write_jsonl(path: &Path, records: &[Record]) -> Result<()> {
    let io = |source| Error::Io { path: path.to_path_buf(), source };
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).map_err(io)?);
    for r in records {
        let line = serde_json::to_string(r).map_err(|e| Error::invalid(e.to_string()))?;
        writeln!(f, "{line}").map_err(io)?;
    }
    f.flush().map_err(io)
}

/// Compute missing hidden states with the policy, `batch` records per forward.
pub fn attach_hidden(engine: &dyn Backend, records: &mut [Record], batch: usize, progress: &mut dyn FnMut(usize)) -> Result<()> {
    let todo: Vec<usize> = (0..records.len()).filter(|&i| records[i].hidden.is_none()).collect();
    // keep records of one prompt together so each forward shares one prefilled prompt
    let mut order = todo.clone();
    order.sort_by(|&a, &b| records[a].prompt.cmp(&records[b].prompt));
    let mut done = 0;
    for chunk in order.chunks(batch.max(1)) {
        let cands: Vec<Candidate> = chunk
            .iter()
            .map(|&i| Candidate::new(records[i].prompt.clone(), records[i].response.clone()).partial(records[i].partial))
            .collect();
        let refs: Vec<&Candidate> = cands.iter().collect();
        for (&i, h) in chunk.iter().zip(policy_hidden(engine, &refs)?) {
            records[i].hidden = Some(h);
        }
        done += chunk.len();
        progress(done);
    }
    Ok(())
}

/// Prompts the policy continues when distilling a head into a probe: reviews, letters,
/// diary entries and plain prose, to cover positive, negative and neutral text.
pub const DISTILL_PROMPTS: &[&str] = &[
    "My review of the new phone:",
    "I hate it when",
    "The best day of my life was when",
    "Customer complaint: I am writing to tell you that",
    "Dear diary, today was awful because",
    "Five reasons to love autumn:",
    "The weather report for tomorrow:",
    "The meeting notes say that",
    "Why I will never go back to that restaurant:",
    "Thank you so much for",
    "The hotel was",
    "I was so disappointed when",
    "What a wonderful surprise:",
    "The instructions for assembling the shelf are",
    "He looked at the broken window and",
    "Our team won the championship and",
    "The service at the bank was",
    "My neighbour's dog keeps",
    "The concert last night was",
    "A short history of the bicycle:",
    "I'm really worried that",
    "The kindest thing anyone ever did for me was",
    "This movie was a complete waste of time because",
    "The recipe calls for",
    "Honestly, the new manager is",
    "After the storm, the village",
    "I can't stop smiling because",
    "The train was late again and",
    "The museum exhibit about ancient Egypt",
    "Breaking news:",
    "My favourite teacher always",
    "The worst part of the trip was",
    "I just finished reading the book and",
    "Dear customer service, your product",
    "The garden looks beautiful this morning because",
    "Nobody told me that moving house would be",
    "The new café on the corner",
    "My grandmother's kitchen smelled of",
    "I regret buying this laptop because",
    "The city council decided to",
    "Yesterday's football match was",
    "Working from home has been",
    "The doctor said my results were",
    "Our wedding day was",
    "The airline lost my suitcase and",
    "A guide to planting tomatoes:",
    "I am so proud of my daughter because",
    "The neighbours' party kept us awake and",
    "The lecture on quantum physics",
    "Five things I dislike about winter:",
    "The puppy we adopted",
    "The software update broke",
    "Today I volunteered at the shelter and",
    "The price of groceries",
    "My first day at the new school",
    "The sunset over the lake",
    "The customer was furious because",
    "The annual report shows that",
    "I finally passed my driving test and",
    "Living next to the airport is",
];

/// Settings of [`distill`].
#[derive(Debug, Clone)]
pub struct DistillOptions {
    /// Number of generated texts.
    pub n: usize,
    /// Tokens per text at most.
    pub max_tokens: usize,
    /// A record every this many tokens (and at the end).
    pub every: usize,
    /// Texts sampled per prompt (rows decoded in lockstep).
    pub per_prompt: usize,
    /// Sampling temperature.
    pub temperature: f32,
    /// Top-p (nucleus) sampling threshold.
    pub top_p: f32,
    /// Base seed of the samplers (each text derives its own).
    pub seed: u64,
}

impl Default for DistillOptions {
    fn default() -> Self {
        Self { n: 2400, max_tokens: 40, every: 8, per_prompt: 10, temperature: 1.0, top_p: 0.95, seed: 0 }
    }
}

/// Generate texts with the policy and label every snapshot with `teacher`'s raw score.
/// Hidden states are the decode step's own. `progress(texts_done)` is called per prompt.
pub fn distill(engine: &dyn Backend, teacher: &dyn DynHead, opts: &DistillOptions, progress: &mut dyn FnMut(usize)) -> Result<Vec<Record>> {
    if opts.n == 0 || opts.max_tokens == 0 || opts.every == 0 || opts.per_prompt == 0 {
        return Err(Error::invalid("distill: n, max_tokens, every and per_prompt must be > 0"));
    }
    let tok = engine.codec();
    let mut records = Vec::new();
    let mut done = 0;
    let mut p = 0;
    while done < opts.n {
        let prompt = DISTILL_PROMPTS[p % DISTILL_PROMPTS.len()];
        let group = format!("prompt{}", p % DISTILL_PROMPTS.len());
        let rows = opts.per_prompt.min(opts.n - done);
        let (mut cache, out) = engine.start(&engine.encode_prompt(prompt)?, true)?;
        cache.select(&vec![0; rows])?;
        let first = out.dist.ok_or_else(|| Error::invalid("no logits"))?;
        let mut logits: Vec<TokenDist> = vec![first; rows];
        let mut samplers = (0..rows)
            .map(|r| {
                Sampler::new(SamplingParams {
                    temperature: opts.temperature,
                    top_k: 100,
                    top_p: opts.top_p,
                    repetition_penalty: 1.1,
                    seed: opts.seed.wrapping_mul(1_000_003).wrapping_add((done + r) as u64),
                    ..Default::default()
                })
            })
            .collect::<deal_backend::Result<Vec<_>>>()?;
        let mut tokens: Vec<Vec<u32>> = vec![Vec::new(); rows];
        let mut active = vec![true; rows];
        let mut last_hidden: Vec<Option<Vec<f32>>> = vec![None; rows];
        let mut last_snap = vec![0usize; rows];
        let mut snaps: Vec<(usize, usize, Vec<f32>)> = Vec::new(); // (row, length, hidden)
        for _ in 0..opts.max_tokens {
            let mut step: Vec<Vec<u32>> = vec![Vec::new(); rows];
            for r in 0..rows {
                if !active[r] {
                    continue;
                }
                let next = logits[r].sample(&mut samplers[r], &tokens[r])?;
                if tok.is_eog(next) {
                    active[r] = false;
                    continue;
                }
                tokens[r].push(next);
                step[r].push(next);
            }
            if step.iter().all(Vec::is_empty) {
                break;
            }
            let out = cache.feed(&step, true, true)?;
            for (r, s) in out.into_iter().enumerate() {
                let Some(s) = s else { continue };
                let (Some(d), Some(h)) = (s.dist, s.hidden) else {
                    return Err(Error::invalid("distill: the policy returned no logits or hidden state"));
                };
                logits[r] = d;
                last_hidden[r] = Some(h.clone());
                let len = tokens[r].len();
                if len.is_multiple_of(opts.every) || len == opts.max_tokens {
                    snaps.push((r, len, h));
                    last_snap[r] = len;
                }
            }
        }
        // rows that stopped early get a final record
        for r in 0..rows {
            if let Some(h) = last_hidden[r].take() {
                if last_snap[r] != tokens[r].len() {
                    snaps.push((r, tokens[r].len(), h));
                }
            }
        }
        let mut cands = Vec::with_capacity(snaps.len());
        for (r, len, _) in &snaps {
            let finished = *len == tokens[*r].len() && (!active[*r] || *len == opts.max_tokens);
            let text = tok.decode(&tokens[*r][..*len], true)?;
            cands.push(Candidate::new(prompt, text).with_tokens(tokens[*r][..*len].to_vec()).partial(!finished));
        }
        let scores = teacher.score(&cands)?;
        for ((c, s), (_, _, h)) in cands.into_iter().zip(scores).zip(snaps) {
            records.push(Record {
                prompt: c.prompt,
                response: c.response,
                score: s,
                group: Some(group.clone()),
                partial: c.partial,
                hidden: Some(h),
            });
        }
        done += rows;
        p += 1;
        progress(done);
    }
    Ok(records)
}

/// Settings of [`fit`].
#[derive(Debug, Clone)]
pub struct FitOptions {
    /// Fraction of groups held out for evaluation.
    pub holdout: f64,
    /// Folds of the grouped cross-validation that picks λ.
    pub folds: usize,
    /// Candidate ridge strengths (per sample, on standardised features).
    pub lambdas: Vec<f64>,
    /// Seed of the random split of groups into train and held-out sets.
    pub seed: u64,
}

impl Default for FitOptions {
    fn default() -> Self {
        Self { holdout: 0.2, folds: 5, lambdas: (-8..=4).map(|e| 10f64.powf(e as f64 / 2.0)).collect(), seed: 0 }
    }
}

/// How well a fitted probe agrees with its targets.
#[derive(Debug, Clone, Serialize)]
pub struct FitReport {
    /// Number of training records.
    pub n_train: usize,
    /// Number of held-out records.
    pub n_test: usize,
    /// Number of training groups (prompts).
    pub groups_train: usize,
    /// Number of held-out groups (prompts).
    pub groups_test: usize,
    /// Ridge strength λ chosen by cross-validation.
    pub lambda: f64,
    /// Grouped k-fold cross-validated R² at that λ.
    pub cv_r2: f64,
    /// R² on the training set.
    pub r2_train: f64,
    /// R² on the held-out set.
    pub r2_test: f64,
    /// Held-out Pearson correlation with the targets.
    pub pearson_test: f64,
    /// Held-out Spearman correlation with the targets.
    pub spearman_test: f64,
    /// Held-out root-mean-square error, in the targets' units.
    pub rmse_test: f64,
    /// Held-out Spearman on finished (non-partial) records only.
    pub spearman_test_final: f64,
    /// Target mean and std on the training set.
    pub target_mean: f64,
    /// Standard deviation of the training targets.
    pub target_std: f64,
}

/// Fit a probe on records that carry hidden states. Returns (weight, bias, report).
pub fn fit(records: &[Record], opts: &FitOptions) -> Result<(Vec<f32>, f32, FitReport)> {
    let x: Vec<&Vec<f32>> = records
        .iter()
        .map(|r| r.hidden.as_ref().ok_or_else(|| Error::invalid("fit: a record has no hidden state")))
        .collect::<Result<_>>()?;
    let d = x.first().map(|h| h.len()).ok_or_else(|| Error::invalid("fit: no records"))?;
    if x.iter().any(|h| h.len() != d) {
        return Err(Error::invalid("fit: hidden states differ in size"));
    }
    if !(0.0..1.0).contains(&opts.holdout) || opts.lambdas.is_empty() {
        return Err(Error::invalid("fit: holdout must be in [0, 1) and lambdas non-empty"));
    }
    // split by group
    let mut groups: Vec<&str> = records.iter().map(Record::group_key).collect();
    groups.sort();
    groups.dedup();
    let mut rng = rand::rngs::StdRng::seed_from_u64(opts.seed);
    groups.shuffle(&mut rng);
    let n_test_groups = ((groups.len() as f64 * opts.holdout).round() as usize).min(groups.len().saturating_sub(2));
    let test_groups: BTreeMap<&str, ()> = groups[..n_test_groups].iter().map(|g| (*g, ())).collect();
    let (train, test): (Vec<usize>, Vec<usize>) =
        (0..records.len()).partition(|&i| !test_groups.contains_key(records[i].group_key()));
    if train.len() < 10 {
        return Err(Error::invalid(format!("fit: only {} training records (need at least 10)", train.len())));
    }
    let train_groups: Vec<&str> = groups[n_test_groups..].to_vec();

    // standardise on the training set
    let n = train.len() as f64;
    let mut mu = vec![0f64; d];
    for &i in &train {
        for (m, v) in mu.iter_mut().zip(x[i].iter()) {
            *m += *v as f64 / n;
        }
    }
    let mut sd = vec![0f64; d];
    for &i in &train {
        for ((s, v), m) in sd.iter_mut().zip(x[i].iter()).zip(&mu) {
            *s += (*v as f64 - m).powi(2) / n;
        }
    }
    for s in sd.iter_mut() {
        *s = s.sqrt().max(1e-6);
    }
    let z = |i: usize| -> Vec<f64> { x[i].iter().zip(&mu).zip(&sd).map(|((v, m), s)| (*v as f64 - m) / s).collect() };
    let y = |i: usize| records[i].score as f64;

    // grouped k-fold CV over λ: per-fold Gram matrices, training Gram = total − fold
    let k = opts.folds.clamp(2, train_groups.len().max(2));
    let fold_of_group: BTreeMap<&str, usize> = train_groups.iter().enumerate().map(|(j, g)| (*g, j % k)).collect();
    let mut fold_g = vec![vec![0f64; d * d]; k];
    let mut fold_c = vec![vec![0f64; d]; k];
    let mut fold_ys = vec![(0f64, 0usize); k];
    let mut fold_s = vec![vec![0f64; d]; k];
    let mut fold_rows: Vec<Vec<(Vec<f64>, f64)>> = vec![Vec::new(); k];
    for &i in &train {
        let f = fold_of_group[records[i].group_key()];
        let zi = z(i);
        gram_add(&mut fold_g[f], &zi);
        for (c, v) in fold_c[f].iter_mut().zip(&zi) {
            *c += v * y(i);
        }
        for (t, v) in fold_s[f].iter_mut().zip(&zi) {
            *t += v;
        }
        fold_ys[f].0 += y(i);
        fold_ys[f].1 += 1;
        fold_rows[f].push((zi, y(i)));
    }
    let mut total_g = vec![0f64; d * d];
    let mut total_c = vec![0f64; d];
    let mut total_s = vec![0f64; d];
    for f in 0..k {
        for (t, v) in total_s.iter_mut().zip(&fold_s[f]) {
            *t += v;
        }
        for (t, v) in total_g.iter_mut().zip(&fold_g[f]) {
            *t += v;
        }
        for (t, v) in total_c.iter_mut().zip(&fold_c[f]) {
            *t += v;
        }
    }
    let mut best = (f64::NEG_INFINITY, opts.lambdas[0]);
    for &lambda in &opts.lambdas {
        let (mut sse, mut sst) = (0.0, 0.0);
        for f in 0..k {
            let nf = fold_ys[f].1;
            let ntr = train.len() - nf;
            if nf == 0 || ntr == 0 {
                continue;
            }
            let ybar = (fold_ys.iter().map(|p| p.0).sum::<f64>() - fold_ys[f].0) / ntr as f64;
            // centred normal equations on the other folds:
            // Σ (z − z̄)(z − z̄)ᵀ = G − n z̄ z̄ᵀ and Σ (z − z̄)(y − ȳ) = c − n z̄ ȳ
            let zbar: Vec<f64> = total_s.iter().zip(&fold_s[f]).map(|(a, b)| (a - b) / ntr as f64).collect();
            let mut g: Vec<f64> = total_g.iter().zip(&fold_g[f]).map(|(a, b)| a - b).collect();
            for a in 0..d {
                for b in 0..d {
                    g[a * d + b] -= ntr as f64 * zbar[a] * zbar[b];
                }
            }
            let c: Vec<f64> =
                total_c.iter().zip(&fold_c[f]).zip(&zbar).map(|((a, b), m)| a - b - ntr as f64 * m * ybar).collect();
            let beta = ridge_solve(&g, &c, d, lambda * ntr as f64)?;
            for (zi, yi) in &fold_rows[f] {
                let centred: Vec<f64> = zi.iter().zip(&zbar).map(|(v, m)| v - m).collect();
                let pred = ybar + dot(&beta, &centred);
                sse += (yi - pred).powi(2);
                sst += (yi - ybar).powi(2);
            }
        }
        let r2 = 1.0 - sse / sst.max(1e-12);
        if r2 > best.0 {
            best = (r2, lambda);
        }
    }
    let (cv_r2, lambda) = best;
    let ybar = train.iter().map(|&i| y(i)).sum::<f64>() / n;
    let beta = ridge_solve(&total_g, &total_c, d, lambda * n)?;
    let weight: Vec<f32> = beta.iter().zip(&sd).map(|(b, s)| (b / s) as f32).collect();
    let bias = (ybar - beta.iter().zip(&mu).zip(&sd).map(|((b, m), s)| b * m / s).sum::<f64>()) as f32;

    let predict = |i: usize| -> f64 { weight.iter().zip(x[i].iter()).map(|(w, h)| *w as f64 * *h as f64).sum::<f64>() + bias as f64 };
    let eval = |idx: &[usize]| -> (Vec<f64>, Vec<f64>) { (idx.iter().map(|&i| y(i)).collect(), idx.iter().map(|&i| predict(i)).collect()) };
    let (ytr, ptr) = eval(&train);
    let (yte, pte) = eval(&test);
    let finals: Vec<usize> = test.iter().copied().filter(|&i| !records[i].partial).collect();
    let (yf, pf) = eval(&finals);
    let target_std = (ytr.iter().map(|v| (v - ybar).powi(2)).sum::<f64>() / n).sqrt();
    let report = FitReport {
        n_train: train.len(),
        n_test: test.len(),
        groups_train: train_groups.len(),
        groups_test: n_test_groups,
        lambda,
        cv_r2,
        r2_train: r2(&ytr, &ptr),
        r2_test: r2(&yte, &pte),
        pearson_test: pearson(&yte, &pte),
        spearman_test: spearman(&yte, &pte),
        rmse_test: (yte.iter().zip(&pte).map(|(a, b)| (a - b).powi(2)).sum::<f64>() / yte.len().max(1) as f64).sqrt(),
        spearman_test_final: spearman(&yf, &pf),
        target_mean: ybar,
        target_std,
    };
    Ok((weight, bias, report))
}

/// Package a fit as probe weights with `scale` and metadata.
pub fn to_probe(weight: Vec<f32>, bias: f32, scale: Scale, report: &FitReport, meta: BTreeMap<String, String>) -> ProbeWeights {
    let mut meta = meta;
    let fmt = |v: f64| format!("{v:.4}");
    meta.insert("n_train".into(), report.n_train.to_string());
    meta.insert("n_test".into(), report.n_test.to_string());
    meta.insert("lambda".into(), format!("{:e}", report.lambda));
    meta.insert("r2_test".into(), fmt(report.r2_test));
    meta.insert("spearman_test".into(), fmt(report.spearman_test));
    meta.insert("pearson_test".into(), fmt(report.pearson_test));
    ProbeWeights { weight, bias, scale, meta }
}

fn gram_add(g: &mut [f64], z: &[f64]) {
    let d = z.len();
    for a in 0..d {
        let za = z[a];
        let row = &mut g[a * d..(a + 1) * d];
        for (r, zb) in row.iter_mut().zip(z) {
            *r += za * zb;
        }
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Solve (G + λI) β = c by Cholesky (G symmetric positive semi-definite, λ > 0).
pub fn ridge_solve(g: &[f64], c: &[f64], d: usize, lambda: f64) -> Result<Vec<f64>> {
    let mut l = g.to_vec();
    for i in 0..d {
        l[i * d + i] += lambda;
    }
    for j in 0..d {
        let mut s = l[j * d + j];
        for k in 0..j {
            s -= l[j * d + k] * l[j * d + k];
        }
        if s <= 0.0 {
            return Err(Error::invalid("ridge: matrix not positive definite (λ too small?)"));
        }
        let s = s.sqrt();
        l[j * d + j] = s;
        for i in j + 1..d {
            let mut t = l[i * d + j];
            for k in 0..j {
                t -= l[i * d + k] * l[j * d + k];
            }
            l[i * d + j] = t / s;
        }
    }
    let mut y = c.to_vec();
    for i in 0..d {
        for k in 0..i {
            y[i] -= l[i * d + k] * y[k];
        }
        y[i] /= l[i * d + i];
    }
    for i in (0..d).rev() {
        for k in i + 1..d {
            y[i] -= l[k * d + i] * y[k];
        }
        y[i] /= l[i * d + i];
    }
    Ok(y)
}

/// Coefficient of determination of predictions `p` for targets `y`.
pub fn r2(y: &[f64], p: &[f64]) -> f64 {
    if y.is_empty() {
        return f64::NAN;
    }
    let m = y.iter().sum::<f64>() / y.len() as f64;
    let sse: f64 = y.iter().zip(p).map(|(a, b)| (a - b).powi(2)).sum();
    let sst: f64 = y.iter().map(|a| (a - m).powi(2)).sum();
    1.0 - sse / sst.max(1e-12)
}

/// Pearson correlation.
pub fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    if a.len() < 2 {
        return f64::NAN;
    }
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    cov / (va * vb).sqrt().max(1e-300)
}

/// Spearman rank correlation (ties get their average rank).
pub fn spearman(a: &[f64], b: &[f64]) -> f64 {
    pearson(&ranks(a), &ranks(b))
}

fn ranks(v: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&i, &j| v[i].total_cmp(&v[j]));
    let mut r = vec![0.0; v.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0;
        for k in i..=j {
            r[idx[k]] = avg;
        }
        i = j + 1;
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ridge_recovers_a_linear_map_and_statistics_are_right() {
        // y = 2·x0 − x1 + 0.5 on random points: tiny λ recovers it
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        use rand::Rng;
        let records: Vec<Record> = (0..200)
            .map(|i| {
                let h: Vec<f32> = (0..5).map(|_| rng.gen_range(-1.0..1.0)).collect();
                let score = 2.0 * h[0] - h[1] + 0.5;
                Record { prompt: String::new(), response: String::new(), score, group: Some(format!("g{}", i % 20)), partial: false, hidden: Some(h) }
            })
            .collect();
        let opts = FitOptions { lambdas: vec![1e-8, 1e-2, 1.0], ..Default::default() };
        let (w, b, rep) = fit(&records, &opts).unwrap();
        assert!((w[0] - 2.0).abs() < 1e-3 && (w[1] + 1.0).abs() < 1e-3 && w[2].abs() < 1e-3, "{w:?}");
        assert!((b - 0.5).abs() < 1e-3);
        assert!(rep.r2_test > 0.999 && rep.spearman_test > 0.99 && rep.lambda == 1e-8, "{rep:?}");
        assert_eq!(rep.groups_test, 4);
        assert_eq!(spearman(&[1.0, 2.0, 3.0, 4.0], &[10.0, 20.0, 20.0, 40.0]), pearson(&[0.0, 1.0, 2.0, 3.0], &[0.0, 1.5, 1.5, 3.0]));
        assert!((spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
        assert!((r2(&[1.0, 2.0, 3.0], &[2.0, 2.0, 2.0])).abs() < 1e-12);
    }
}
