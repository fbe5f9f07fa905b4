//! Pipelined lookahead for `deal` ([`Commit::Pipeline`](crate::Commit::Pipeline)): the
//! paper's search (one token committed per step, b beams × top-k candidates, each ranked by
//! log P + λ·h after an l-token greedy lookahead), without l sequential passes per step.
//!
//! The paper's rule, run step by step, rolls every candidate out l tokens before it can
//! choose one: l passes per committed token. Two facts remove most of them:
//!
//! - **Reuse.** The most likely candidate's lookahead is the greedy continuation, so a
//!   beam's *spine* (its row extended greedily ahead of the step being decided) is at once
//!   the top candidate's rollout at this step, the next step's, and so on: it is never
//!   rolled out twice.
//! - **Speculation.** The other candidates of step t + 1 are the top-k after the spine's
//!   token at step t, known as soon as the spine has fed it. They are started then (forked
//!   from the spine, rolled out in the same passes as step t's), on the guess that the
//!   spine's token wins step t. A step is decided as soon as all its candidates' lookaheads
//!   are l tokens deep; when the guess held (the spine won), the next step's lookaheads are
//!   already under way, and when another candidate won, that candidate's rollout becomes the
//!   beam's new spine and only the rows built on the old guess are dropped.
//!
//! The candidates, their lookaheads and their scores are exactly the paper rule's, so the
//! choices are too (the engine's passes are batch-invariant: a row's numbers do not depend
//! on the rows beside it); only the order of the work changes. `rows` bounds the batch: the
//! step being decided always gets its candidates, later steps get theirs while the budget
//! lasts (b·(1 + (k−1)·l) rows keep l steps in flight, one pass per committed token when
//! the spines win).
//!
//! Needs cheap steps (the local engine) and a reward that does not read hidden states (a
//! spine's text is cut at each step's window, its hidden state is not); otherwise `deal`
//! runs the paper's rule step by step, with the same result.

use std::collections::BTreeMap;

use deal_backend::TokenDist;
use deal_heads::reward::WeightedReward;

use crate::batch::{common_prefix_of, Finish};
use crate::config::{auto_pipeline_rows, SearchConfig};
use crate::controller::{Final, Session};
use crate::error::{ControlError, Result};
use crate::deal::Deal;
use crate::util::{candidates, order_desc};

/// What a batch row is to the pipeline.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Role {
    /// The prompt alone, never extended: keeps the batch above one row, so a fork never
    /// promotes a spine's speculative tokens into the shared prefix.
    Anchor,
    /// Beam `beam`'s row: its decided tokens, then greedy tokens ahead.
    Spine { beam: usize },
    /// A candidate of beam `beam` at token index `at` (forked from its spine) and its
    /// lookahead.
    Alt { beam: usize, at: usize },
}

/// One batch row's bookkeeping (parallel to `Session::batch.rows`).
#[derive(Debug, Clone)]
struct Node {
    role: Role,
    /// Next-token distribution after the row's first `i` response tokens, for the indices
    /// where the row may still need its candidates.
    dists: BTreeMap<usize, TokenDist>,
    /// The candidates (top-k, top-p) of `dists`, computed once each.
    cands: BTreeMap<usize, Vec<(u32, f64)>>,
    /// For an `Alt`: why the row ended with its candidate token itself (stop string,
    /// `max_tokens`), as the paper rule records before the lookahead.
    start_finish: Option<Finish>,
}

/// One of the b beams.
#[derive(Debug, Clone)]
struct Beam {
    /// Decided response tokens (the front: the next step chooses token `len`).
    len: usize,
    /// log P of the decided tokens.
    logprob: f64,
    finish: Option<Finish>,
    /// Candidates were forked for every token index in `len..spawned`.
    spawned: usize,
}

/// A candidate of one step, as the paper rule orders them.
#[derive(Debug, Clone, Copy)]
enum Cand {
    /// A finished beam, carried over with its score.
    Done { beam: usize },
    /// The beam's spine token at its front.
    Spine { beam: usize, lp: f64 },
    /// Another candidate token, rolled out in its own row.
    Alt { beam: usize, row: usize, lp: f64 },
    /// An end-of-generation token: the beam ends at its front.
    Eos { beam: usize, lp: f64 },
}

struct Pipeline<'c> {
    cfg: &'c SearchConfig,
    reward: &'c WeightedReward,
    budget: usize,
    nodes: Vec<Node>,
    beams: Vec<Beam>,
}

/// The batch budget of a search asking for `rows` (unset: [`auto_pipeline_rows`]): at least
/// the anchor plus every beam's candidates of the step being decided.
pub(crate) fn budget(rows: Option<usize>, cfg: &SearchConfig) -> usize {
    rows.unwrap_or_else(|| auto_pipeline_rows(cfg.k, cfg.beams, cfg.lookahead)).max(1 + cfg.beams * cfg.k)
}

/// Run the search; see the module documentation. `rows`: the requested row budget.
pub(crate) fn search(cfg: &SearchConfig, rows: Option<usize>, s: &mut Session<'_>, reward: &WeightedReward) -> Result<Final> {
    if s.batch.len() != 1 {
        return Err(ControlError::internal("the pipelined search starts from the prompt's single row"));
    }
    let first = s.batch.rows[0].dist.clone();
    // row 0: the anchor (done, never fed again); row 1: beam 0's spine
    s.batch.select(&[0, 0])?;
    s.batch.rows[0].finish = Some(Finish::Length);
    let mut dists = BTreeMap::new();
    if let Some(d) = first {
        dists.insert(0, d);
    }
    let mut p = Pipeline {
        cfg,
        reward,
        budget: budget(rows, cfg),
        nodes: vec![
            Node { role: Role::Anchor, dists: BTreeMap::new(), cands: BTreeMap::new(), start_finish: None },
            Node { role: Role::Spine { beam: 0 }, dists, cands: BTreeMap::new(), start_finish: None },
        ],
        beams: vec![Beam { len: 0, logprob: 0.0, finish: None, spawned: 0 }],
    };
    loop {
        p.extend(s)?;
        // a step is decided once its last lookahead token is pushed (it need not be fed)
        let mut decided = false;
        while p.beams.iter().any(|b| b.finish.is_none()) && p.ready(s)? {
            p.decide(s)?;
            decided = true;
        }
        if p.beams.iter().all(|b| b.finish.is_some()) {
            break;
        }
        if decided {
            // new fronts: grow their rows before forking from them
            continue;
        }
        p.spawn(s)?;
        if s.batch.rows.iter().all(|r| r.fed() == r.tokens.len()) {
            return Err(ControlError::internal("the pipelined search stalled: no row to feed and no step to decide"));
        }
        s.batch.forward()?;
        p.keep_dists(s);
    }
    p.finish(s)
}

impl Pipeline<'_> {
    fn spine_row(&self, beam: usize) -> Result<usize> {
        self.nodes
            .iter()
            .position(|n| n.role == Role::Spine { beam })
            .ok_or_else(|| ControlError::internal(format!("beam {beam} has no spine row")))
    }

    fn alt_row(&self, s: &Session<'_>, beam: usize, at: usize, token: u32) -> Option<usize> {
        self.nodes
            .iter()
            .enumerate()
            .position(|(r, n)| n.role == Role::Alt { beam, at } && s.batch.rows[r].tokens.get(at) == Some(&token))
    }

    /// The candidates at beam `beam`'s spine's token index `at` (None until the spine fed
    /// `at` tokens).
    fn spine_candidates(&mut self, spine: usize, at: usize) -> Option<Vec<(u32, f64)>> {
        let (k, top_p) = (self.cfg.k, self.cfg.top_p);
        let node = &mut self.nodes[spine];
        if !node.cands.contains_key(&at) {
            let list = candidates(node.dists.get(&at)?, k, top_p);
            node.cands.insert(at, list);
        }
        node.cands.get(&at).cloned()
    }

    /// Whether row `r`'s lookahead after its token at `at` is complete (l tokens, or it ended).
    fn deep_enough(&self, s: &Session<'_>, r: usize, at: usize) -> bool {
        let row = &s.batch.rows[r];
        row.is_done() || row.tokens.len() >= at + 1 + self.cfg.lookahead
    }

    /// Whether every live beam's step can be decided now.
    fn ready(&mut self, s: &Session<'_>) -> Result<bool> {
        let codec = s.batch.backend().codec();
        for b in 0..self.beams.len() {
            let (len, finish) = (self.beams[b].len, self.beams[b].finish);
            if finish.is_some() {
                continue;
            }
            let spine = self.spine_row(b)?;
            let Some(cands) = self.spine_candidates(spine, len) else { return Ok(false) };
            let spine_token = s.batch.rows[spine].tokens.get(len).copied();
            for (t, _) in cands {
                if codec.is_eog(t) {
                    continue;
                }
                let ok = if Some(t) == spine_token {
                    self.deep_enough(s, spine, len)
                } else {
                    self.alt_row(s, b, len, t).is_some_and(|r| self.deep_enough(s, r, len))
                };
                if !ok {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// Decide one step of every live beam (the paper rule's step).
    fn decide(&mut self, s: &mut Session<'_>) -> Result<()> {
        let codec = s.batch.backend().codec();
        let l = self.cfg.lookahead;
        let mut cands: Vec<Cand> = Vec::new();
        let mut texts = Vec::new();
        for b in 0..self.beams.len() {
            let spine = self.spine_row(b)?;
            let t = self.beams[b].len;
            if self.beams[b].finish.is_some() {
                cands.push(Cand::Done { beam: b });
                texts.push((spine, t, true));
                continue;
            }
            let list = self.spine_candidates(spine, t).ok_or_else(|| ControlError::internal("step decided before its candidates"))?;
            let row = &s.batch.rows[spine];
            for (tok, lp) in list {
                if codec.is_eog(tok) {
                    cands.push(Cand::Eos { beam: b, lp });
                    texts.push((spine, t, true));
                } else if row.tokens.get(t) == Some(&tok) {
                    // the paper rule's lookahead of this candidate: l tokens after it, ended
                    // if the spine ended within them
                    let len = row.tokens.len();
                    let ended = match row.finish {
                        Some(Finish::Eos) => len <= t + l,
                        Some(_) => len <= t + 1 + l,
                        None => false,
                    };
                    cands.push(Cand::Spine { beam: b, lp });
                    texts.push((spine, len.min(t + 1 + l), ended));
                } else {
                    let r = self.alt_row(s, b, t, tok).ok_or_else(|| ControlError::internal("candidate without its row"))?;
                    cands.push(Cand::Alt { beam: b, row: r, lp });
                    texts.push((r, s.batch.rows[r].tokens.len(), s.batch.rows[r].is_done()));
                }
            }
        }
        let values = if self.cfg.lambda == 0.0 {
            vec![0.0; cands.len()]
        } else {
            let list = texts
                .iter()
                .map(|&(r, len, ended)| s.batch.candidate_of(&s.batch.rows[r].tokens[..len], ended, s.prompt))
                .collect::<Result<Vec<_>>>()?;
            s.batch.stats.candidates_scored += list.len();
            self.reward.values(&list)?
        };
        let scores: Vec<f64> = cands
            .iter()
            .zip(&values)
            .map(|(c, v)| {
                let lp = match *c {
                    Cand::Done { beam } => self.beams[beam].logprob,
                    Cand::Spine { beam, lp } | Cand::Alt { beam, lp, .. } | Cand::Eos { beam, lp } => self.beams[beam].logprob + lp,
                };
                lp + self.cfg.lambda * v
            })
            .collect();
        let keep: Vec<usize> = order_desc(&scores).into_iter().take(self.cfg.beams).collect();
        // the next batch: the anchor, each kept candidate's row (as its beam's spine), the
        // spine's later candidates when its own token won
        let mut pick: Vec<usize> = vec![0];
        let mut nodes = vec![self.nodes[0].clone()];
        let mut beams = Vec::new();
        let mut cut: Vec<(usize, usize, Finish)> = Vec::new();
        for &i in &keep {
            let nb = beams.len();
            match cands[i] {
                Cand::Done { beam } => {
                    let r = self.spine_row(beam)?;
                    pick.push(r);
                    nodes.push(Node { role: Role::Spine { beam: nb }, ..self.nodes[r].clone() });
                    beams.push(self.beams[beam].clone());
                }
                Cand::Eos { beam, lp } => {
                    let r = self.spine_row(beam)?;
                    let old = &self.beams[beam];
                    cut.push((pick.len(), old.len, Finish::Eos));
                    pick.push(r);
                    nodes.push(Node { role: Role::Spine { beam: nb }, dists: BTreeMap::new(), cands: BTreeMap::new(), start_finish: None });
                    beams.push(Beam { len: old.len, logprob: old.logprob + lp, finish: Some(Finish::Eos), spawned: old.len });
                }
                Cand::Spine { beam, lp } => {
                    let r = self.spine_row(beam)?;
                    let old = &self.beams[beam];
                    let t = old.len;
                    let row = &s.batch.rows[r];
                    let finish = match row.finish {
                        Some(f @ (Finish::Stop | Finish::Length)) if row.tokens.len() == t + 1 => Some(f),
                        _ => None,
                    };
                    if let Some(f) = finish {
                        cut.push((pick.len(), t + 1, f));
                    }
                    pick.push(r);
                    nodes.push(Node { role: Role::Spine { beam: nb }, ..self.nodes[r].clone() });
                    beams.push(Beam { len: t + 1, logprob: old.logprob + lp, finish, spawned: old.spawned.max(t + 1) });
                    if finish.is_none() {
                        // the guess held: the spine's later candidates stay
                        for (a, n) in self.nodes.iter().enumerate() {
                            if let Role::Alt { beam: b2, at } = n.role {
                                if b2 == beam && at > t {
                                    pick.push(a);
                                    nodes.push(Node { role: Role::Alt { beam: nb, at }, ..n.clone() });
                                }
                            }
                        }
                    }
                }
                Cand::Alt { beam, row: r, lp } => {
                    let old = &self.beams[beam];
                    let t = old.len;
                    let finish = self.nodes[r].start_finish;
                    if let Some(f) = finish {
                        cut.push((pick.len(), t + 1, f));
                    }
                    pick.push(r);
                    nodes.push(Node { role: Role::Spine { beam: nb }, ..self.nodes[r].clone() });
                    beams.push(Beam { len: t + 1, logprob: old.logprob + lp, finish, spawned: t + 1 });
                }
            }
        }
        s.batch.select(&pick)?;
        for (r, len, f) in cut {
            if s.batch.rows[r].tokens.len() > len {
                s.batch.truncate(r, len)?;
            }
            s.batch.rows[r].finish = Some(f);
            nodes[r].dists.clear();
        }
        self.nodes = nodes;
        self.beams = beams;
        for n in &mut self.nodes {
            if let Role::Spine { beam } = n.role {
                let front = self.beams[beam].len;
                n.dists = n.dists.split_off(&front);
                n.cands = n.cands.split_off(&front);
            }
        }
        // tokens every beam agrees on are final
        let rows: Vec<usize> = (0..self.beams.len()).map(|b| self.spine_row(b)).collect::<Result<_>>()?;
        let decided: Vec<&[u32]> = rows.iter().zip(&self.beams).map(|(&r, b)| &s.batch.rows[r].tokens[..b.len]).collect();
        let agreed = common_prefix_of(&decided);
        s.commit_prefix(rows[0], agreed)
    }

    /// Fork the candidates of upcoming steps from the spines: every live beam's front first
    /// (always), then later token indices while the row budget lasts.
    fn spawn(&mut self, s: &mut Session<'_>) -> Result<()> {
        let codec = s.batch.backend().codec();
        let mut forks: Vec<(usize, usize, usize, u32)> = Vec::new(); // (spine row, beam, at, token)
        let mut rows = s.batch.len();
        for offset in 0..=self.cfg.lookahead.max(1) {
            for b in 0..self.beams.len() {
                let beam = &self.beams[b];
                let at = beam.len + offset;
                if beam.finish.is_some() || beam.spawned != at {
                    continue;
                }
                let spine = self.spine_row(b)?;
                let Some(list) = self.spine_candidates(spine, at) else { continue };
                let row = &s.batch.rows[spine];
                // the spine holds its token there, or ended there with an end-of-generation
                let spine_token = row.tokens.get(at).copied();
                if spine_token.is_none() && !(row.finish == Some(Finish::Eos) && row.tokens.len() == at) {
                    continue;
                }
                let alts: Vec<u32> = list.iter().map(|&(t, _)| t).filter(|&t| Some(t) != spine_token && !codec.is_eog(t)).collect();
                if offset > 0 && rows + alts.len() > self.budget {
                    continue;
                }
                rows += alts.len();
                forks.extend(alts.into_iter().map(|t| (spine, b, at, t)));
                self.beams[b].spawned = at + 1;
            }
        }
        if forks.is_empty() {
            return Ok(());
        }
        let n = s.batch.len();
        let pick: Vec<usize> = (0..n).chain(forks.iter().map(|f| f.0)).collect();
        s.batch.select(&pick)?;
        for (i, &(spine, beam, at, token)) in forks.iter().enumerate() {
            let r = n + i;
            s.batch.truncate(r, at)?;
            s.batch.rows[r].dist = self.nodes[spine].dists.get(&at).cloned();
            s.batch.push(r, token)?;
            let start_finish = s.batch.rows[r].finish;
            self.nodes.push(Node { role: Role::Alt { beam, at }, dists: BTreeMap::new(), cands: BTreeMap::new(), start_finish });
        }
        Ok(())
    }

    /// Push the next greedy token into every row whose lookahead must grow: alternatives to
    /// l tokens after their candidate, spines l tokens past their front plus as far ahead as
    /// the budget lets later steps be forked from them.
    fn extend(&mut self, s: &mut Session<'_>) -> Result<()> {
        let per_step = self.beams.len() * self.cfg.k.saturating_sub(1).max(1);
        let ahead = (self.budget.saturating_sub(1 + self.beams.len()) / per_step).max(1);
        let l = self.cfg.lookahead;
        for r in 0..s.batch.len() {
            let row = &s.batch.rows[r];
            if row.is_done() || row.fed() < row.tokens.len() {
                continue;
            }
            let want = match self.nodes[r].role {
                Role::Anchor => continue,
                Role::Spine { beam } if self.beams[beam].finish.is_none() => self.beams[beam].len + 1 + l.max(ahead),
                Role::Spine { .. } => continue,
                Role::Alt { at, .. } => at + 1 + l,
            };
            if row.tokens.len() >= want {
                continue;
            }
            let t = row.next_dist()?.argmax();
            s.batch.push(r, t)?;
        }
        Ok(())
    }

    /// Keep each fed row's new distribution under its length (its candidates, should it be
    /// or become a spine).
    fn keep_dists(&mut self, s: &Session<'_>) {
        for (r, row) in s.batch.rows.iter().enumerate() {
            if row.fed() == row.tokens.len() && !row.is_done() {
                if let Some(d) = &row.dist {
                    self.nodes[r].dists.entry(row.tokens.len()).or_insert_with(|| d.clone());
                }
            }
        }
    }

    /// Every beam has ended: keep their rows (decided tokens only) and return the best.
    fn finish(&mut self, s: &mut Session<'_>) -> Result<Final> {
        let rows: Vec<usize> = (0..self.beams.len()).map(|b| self.spine_row(b)).collect::<Result<_>>()?;
        s.batch.select(&rows)?;
        for (r, beam) in self.beams.iter().enumerate() {
            if s.batch.rows[r].tokens.len() > beam.len {
                s.batch.truncate(r, beam.len)?;
            }
            s.batch.rows[r].finish = beam.finish;
            s.batch.rows[r].logprob = beam.logprob;
        }
        Deal::best_beam(self.cfg, s, self.reward)
    }
}
