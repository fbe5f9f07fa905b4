//! [`Batch`]: the rows of a search over one forked KV cache.
//!
//! A row is the response tokens of one continuation of the prompt, how many of them are in
//! the cache, the logits/hidden state after the last one fed, and why it ended (if it did).
//! Controllers push tokens into rows, then [`Batch::forward`] feeds every row's pending
//! tokens in one forward pass (ragged rows allowed). [`Batch::select`] forks, prunes and
//! reorders rows (cache included; forking a single row shares it as a prefix without
//! copies); [`Batch::truncate`] undoes a lookahead. Text, stop strings and EOS are handled
//! here once for all controllers.

use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use deal_runtime::heads::Candidate;
use deal_runtime::kv_cache::KvCache;
use deal_runtime::model::LogitsFor;
use deal_runtime::Engine;

use crate::error::{ControlError, Result};
use crate::stats::SearchStats;

/// Why a row stopped growing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// The model produced an end-of-generation token (not kept in the row).
    Eos,
    /// A stop string appeared (the row's text ends before it).
    Stop,
    /// `max_tokens` reached.
    Length,
}

/// One row's next-token logits: a view into the logits of the forward pass that produced
/// them, shared, so forking or keeping a row never copies a vocabulary-sized vector.
#[derive(Debug, Clone)]
pub struct Logits {
    pass: Arc<Vec<f32>>,
    start: usize,
    len: usize,
}

impl Logits {
    /// Logits of a single row.
    pub fn from_vec(v: Vec<f32>) -> Self {
        let len = v.len();
        Self { pass: Arc::new(v), start: 0, len }
    }
}

impl Deref for Logits {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
        &self.pass[self.start..self.start + self.len]
    }
}

/// One continuation of the prompt.
#[derive(Debug, Clone, Default)]
pub struct Row {
    /// Response token ids (the prompt excluded; an EOS is never stored).
    pub tokens: Vec<u32>,
    /// How many of `tokens` are in the cache.
    fed: usize,
    /// Next-token logits after `tokens[..fed]` (when the last pass asked for them).
    pub logits: Option<Logits>,
    /// Final hidden state after `tokens[..fed]`.
    pub hidden: Option<Vec<f32>>,
    /// Why the row ended; `None` while it is still live.
    pub finish: Option<Finish>,
    /// Cumulative log-probability, kept by the controllers that rank by it.
    pub logprob: f64,
}

impl Row {
    /// Whether the row has ended (it takes no more tokens).
    pub fn is_done(&self) -> bool {
        self.finish.is_some()
    }

    /// Tokens in the cache.
    pub fn fed(&self) -> usize {
        self.fed
    }

    /// The row's next-token logits, or an error naming what the controller expected.
    pub fn next_logits(&self) -> Result<&[f32]> {
        self.logits.as_deref().ok_or_else(|| ControlError::internal("a live row has no next-token logits"))
    }
}

/// The rows of one search and their shared cache.
pub struct Batch<'a> {
    engine: &'a Engine,
    cache: KvCache,
    prompt_len: usize,
    max_tokens: usize,
    stop: Vec<String>,
    cancel: Option<&'a AtomicBool>,
    /// The rows, in the order the last [`Batch::select`] left them.
    pub rows: Vec<Row>,
    /// What the search has cost so far.
    pub stats: SearchStats,
}

impl<'a> Batch<'a> {
    /// Prefill `prompt` into a single row.
    pub fn start(
        engine: &'a Engine,
        prompt: &[u32],
        max_tokens: usize,
        stop: &[String],
        cancel: Option<&'a AtomicBool>,
    ) -> Result<Self> {
        let t = std::time::Instant::now();
        let (cache, out) = engine.prefill(prompt)?;
        let logits = out.logits.ok_or_else(|| ControlError::internal("prefill returned no logits"))?.get(0)?.to_vec1::<f32>()?;
        let hidden = out.hidden.get(0)?.to_vec1::<f32>()?;
        let row = Row { logits: Some(Logits::from_vec(logits)), hidden: Some(hidden), ..Default::default() };
        let stats = SearchStats { prompt_tokens: prompt.len(), prefill_secs: t.elapsed().as_secs_f64(), ..Default::default() };
        Ok(Self {
            engine,
            cache,
            prompt_len: prompt.len(),
            max_tokens,
            stop: stop.iter().filter(|s| !s.is_empty()).cloned().collect(),
            cancel,
            rows: vec![row],
            stats,
        })
    }

    /// The engine the search runs on.
    pub fn engine(&self) -> &'a Engine {
        self.engine
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Whether every row has ended.
    pub fn all_done(&self) -> bool {
        self.rows.iter().all(Row::is_done)
    }

    /// Err([`ControlError::Cancelled`]) once the caller's cancel flag is set.
    pub fn check_cancel(&self) -> Result<()> {
        match self.cancel {
            Some(c) if c.load(Ordering::Relaxed) => Err(ControlError::Cancelled),
            _ => Ok(()),
        }
    }

    /// Append `token` to row `r` (not yet fed). An end-of-generation token ends the row
    /// instead; so do a stop string in its text and `max_tokens`. Returns whether the row is
    /// still live.
    pub fn push(&mut self, r: usize, token: u32) -> Result<bool> {
        let eog = self.engine.tokenizer().is_eog(token);
        let max = self.max_tokens;
        let row = self.row_mut(r)?;
        if row.is_done() {
            return Err(ControlError::internal(format!("token pushed into finished row {r}")));
        }
        if eog {
            row.finish = Some(Finish::Eos);
            return Ok(false);
        }
        row.tokens.push(token);
        self.stats.tokens_generated += 1;
        let len = self.rows[r].tokens.len();
        if !self.stop.is_empty() && self.text(r)?.1 {
            self.rows[r].finish = Some(Finish::Stop);
        } else if len >= max {
            self.rows[r].finish = Some(Finish::Length);
        }
        Ok(!self.rows[r].is_done())
    }

    /// Feed every row's pending tokens in one forward pass (rows with none wait). Rows that
    /// brought tokens get new hidden states, and logits when `want` asks for them.
    pub fn forward(&mut self, want: LogitsFor) -> Result<()> {
        let new: Vec<Vec<u32>> = self.rows.iter().map(|r| r.tokens[r.fed..].to_vec()).collect();
        let active = new.iter().filter(|t| !t.is_empty()).count();
        if active == 0 {
            return Ok(());
        }
        self.check_cancel()?;
        let want = if want == LogitsFor::All { LogitsFor::Last } else { want };
        let out = self.engine.model().forward(&mut self.cache, &new, want)?;
        self.stats.forward_passes += 1;
        self.stats.rows_evaluated += active;
        // one copy of the pass's logits, shared by its rows
        let logits = match out.logits {
            Some(l) => {
                let vocab = l.dim(candle_core::D::Minus1)?;
                Some((Arc::new(l.flatten_all()?.to_vec1::<f32>()?), vocab))
            }
            None => None,
        };
        let hidden = out.hidden.to_vec2::<f32>()?;
        for (i, ((row, t), h)) in self.rows.iter_mut().zip(&new).zip(hidden).enumerate() {
            if t.is_empty() {
                continue;
            }
            row.fed += t.len();
            row.hidden = Some(h);
            let l = logits.as_ref().map(|(pass, vocab)| Logits { pass: pass.clone(), start: i * vocab, len: *vocab });
            row.logits = l;
        }
        Ok(())
    }

    /// Feed pending tokens without computing logits, so every row's hidden state is current
    /// (for heads that read it). Rows that get fed lose their logits.
    pub fn sync_hidden(&mut self) -> Result<()> {
        self.forward(LogitsFor::None)
    }

    /// Row `i` of the result is row `indices[i]` (fork, prune, reorder, duplicate).
    pub fn select(&mut self, indices: &[usize]) -> Result<()> {
        if let Some(&bad) = indices.iter().find(|&&i| i >= self.rows.len()) {
            return Err(ControlError::internal(format!("select: row {bad} of {}", self.rows.len())));
        }
        self.cache.select(indices)?;
        self.rows = indices.iter().map(|&i| self.rows[i].clone()).collect();
        Ok(())
    }

    /// Cut row `r` back to `len` response tokens and mark it live again. Logits and hidden
    /// state survive only if no fed token was cut.
    pub fn truncate(&mut self, r: usize, len: usize) -> Result<()> {
        let prompt_len = self.prompt_len;
        let row = self.rows.get_mut(r).ok_or_else(|| ControlError::internal(format!("truncate: no row {r}")))?;
        if len > row.tokens.len() {
            return Err(ControlError::internal(format!("truncate row {r} to {len} > {}", row.tokens.len())));
        }
        row.tokens.truncate(len);
        row.finish = None;
        if row.fed > len {
            row.fed = len;
            row.logits = None;
            row.hidden = None;
            self.cache.truncate(r, prompt_len + len)?;
        }
        Ok(())
    }

    /// The response text of row `r`, cut before the first stop string, and whether one was
    /// found.
    pub fn text(&self, r: usize) -> Result<(String, bool)> {
        let row = self.rows.get(r).ok_or_else(|| ControlError::internal(format!("text: no row {r}")))?;
        let text = self.engine.tokenizer().decode(&row.tokens, true)?;
        Ok(cut_at_stop(text, &self.stop))
    }

    /// Row `r` as a candidate for the reward heads. It is `partial` unless it has ended.
    pub fn candidate(&self, r: usize, prompt: &str, hidden: bool) -> Result<Candidate> {
        let row = &self.rows[r];
        let (response, _) = self.text(r)?;
        let mut c = Candidate::new(prompt, response).partial(!row.is_done()).with_tokens(row.tokens.clone());
        if hidden {
            if let Some(h) = &row.hidden {
                c = c.with_hidden(h.clone());
            }
        }
        Ok(c)
    }

    fn row_mut(&mut self, r: usize) -> Result<&mut Row> {
        self.rows.get_mut(r).ok_or_else(|| ControlError::internal(format!("no row {r}")))
    }
}

/// `text` cut before the earliest stop string, and whether one was found.
pub fn cut_at_stop(mut text: String, stop: &[String]) -> (String, bool) {
    match stop.iter().filter(|s| !s.is_empty()).filter_map(|s| text.find(s.as_str())).min() {
        Some(at) => {
            text.truncate(at);
            (text, true)
        }
        None => (text, false),
    }
}

/// Length of the longest common prefix of the rows' tokens.
pub fn common_prefix(rows: &[Row]) -> usize {
    let Some(first) = rows.first() else { return 0 };
    let mut n = first.tokens.len();
    for r in &rows[1..] {
        n = n.min(first.tokens.iter().zip(&r.tokens).take_while(|(a, b)| a == b).count());
    }
    n
}
