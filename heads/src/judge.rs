//! `judge`: an LLM rubric head. The score is P(Yes) / (P(Yes) + P(No)) at the answer position
//! of a prompt asking a GGUF model (the policy by default) whether the response satisfies
//! the rubric ("is polite", "answers the question").
//!
//! Cost: the template up to the response (with the request's prompt) is prefilled (the
//! local engine keeps recent prompts' prefills, so once per search); each call then runs
//! **one** batched feed over all candidates (ragged rows: response + the question after it)
//! on rows forked from that prefix. Works on any backend: a remote one's top-N log-
//! probabilities carry Yes / No whenever they are likely.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;

use super::{bad_param, check_model_path, Candidate, HeadContext, ParamInfo, RewardHead, Scale};
use deal_backend::{Backend, TokenDist};

use crate::reward::log_sigmoid;
use crate::{Error, Result};

/// The default judging prompt: four worked examples (two Yes, two No, on other rubrics),
/// then the request, the rubric as a statement and the response. `{prompt}`, `{response}`
/// and `{rubric}` are filled in; the model's next token is read as Yes / No. Chosen on the
/// default 270M base model, where it separated polite from rude replies and beat the plain
/// zero-shot question (docs/heads.md has the numbers); instruction-tuned judges may prefer
/// their chat format, given as `template`.
pub const DEFAULT_TEMPLATE: &str = "Statement: The reply is about the weather.\nReply: It will rain all day tomorrow.\nTrue? Yes\n\n\
Statement: The reply answers the question \"How old are you?\"\nReply: I like green apples.\nTrue? No\n\n\
Statement: The reply is friendly.\nReply: Go away, I hate talking to you.\nTrue? No\n\n\
Statement: The reply mentions a color.\nReply: She wore a red coat.\nTrue? Yes\n\n\
Request: {prompt}\nStatement: The reply {rubric}.\nReply: {response}\nTrue?";

/// Params of the [`Judge`] head.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// What the response should do, completing "The reply ..." (e.g. `is polite`).
    pub rubric: String,
    /// GGUF judge model file; `None` = the policy.
    pub model: Option<PathBuf>,
    /// Judging prompt with `{prompt}`, `{response}` (exactly once) and `{rubric}`;
    /// default [`DEFAULT_TEMPLATE`].
    pub template: Option<String>,
}

/// A judge model with its Yes/No token ids.
pub struct JudgeModel {
    backend: Arc<dyn Backend>,
    yes: Vec<u32>,
    no: Vec<u32>,
}

impl JudgeModel {
    /// Wrap a backend, finding single-token spellings of Yes and No in its vocabulary.
    pub fn new(backend: Arc<dyn Backend>) -> Result<Self> {
        let find = |words: &[&str]| -> Result<Vec<u32>> {
            let mut ids = Vec::new();
            for w in words {
                let t = backend.codec().encode(w, false)?;
                if t.len() == 1 && !ids.contains(&t[0]) {
                    ids.push(t[0]);
                }
            }
            Ok(ids)
        };
        let yes = find(&[" Yes", "Yes", " yes", "yes"])?;
        let no = find(&[" No", "No", " no", "no"])?;
        if yes.is_empty() || no.is_empty() {
            return Err(bad_param(Judge::NAME, format!("model {} has no single-token Yes / No", backend.model_id())));
        }
        Ok(Self { backend, yes, no })
    }

    /// The backend that runs the judge model.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// log P(Yes) − log P(No) for each `suffixes[i]` continuing `prefix`, in one feed over
    /// rows forked from the prefilled prefix (the local engine keeps recent prompts'
    /// prefills, so a search's repeated calls prefill the prefix once).
    ///
    /// Rows are fed in chunks of at most [`JUDGE_CHUNK_ROWS`] rows and
    /// [`JUDGE_CHUNK_TOKENS`] tokens, each chunk forked from the (cached) prefix, so the
    /// attention mask, KV and time of one pass stay bounded however many and however long
    /// the candidates are, and the request's cancellation flag is checked between passes;
    /// the engine is batch-invariant, so chunking changes no margin.
    pub fn yes_no_margins(&self, prefix: &str, suffixes: &[String]) -> Result<Vec<f64>> {
        let tokens = self.backend.encode_prompt(prefix)?;
        let mut encoded = Vec::with_capacity(suffixes.len());
        for s in suffixes {
            let t = self.backend.codec().encode(s, false)?;
            if t.is_empty() {
                return Err(Error::invalid("judge: empty text after the prompt prefix"));
            }
            encoded.push(t);
        }
        let mut out = Vec::with_capacity(suffixes.len());
        for chunk in chunks_within(&encoded, JUDGE_CHUNK_ROWS, JUDGE_CHUNK_TOKENS) {
            deal_backend::cancel::check()?;
            out.extend(self.chunk_margins(&tokens, chunk)?);
        }
        Ok(out)
    }

    fn chunk_margins(&self, tokens: &[u32], new: &[Vec<u32>]) -> Result<Vec<f64>> {
        let (mut rows, _) = self.backend.start_shared(tokens, false)?;
        rows.select(&vec![0; new.len()])?;
        let steps = rows.feed(new, true, false)?;
        steps
            .into_iter()
            .map(|s| {
                let d = s.and_then(|s| s.dist).ok_or_else(|| Error::invalid("judge: the backend returned no distribution"))?;
                Ok(margin(&d, &self.yes, &self.no))
            })
            .collect()
    }
}

/// Most candidates scored per judge pass (see [`JudgeModel::yes_no_margins`]).
pub const JUDGE_CHUNK_ROWS: usize = 16;

/// Most candidate tokens per judge pass (a longer single candidate gets a pass of its own).
pub const JUDGE_CHUNK_TOKENS: usize = 1024;

/// Consecutive runs of `rows` of at most `max_rows` rows whose lengths sum to at most
/// `max_tokens` (a row longer than that alone), in order.
fn chunks_within(rows: &[Vec<u32>], max_rows: usize, max_tokens: usize) -> Vec<&[Vec<u32>]> {
    let mut out = Vec::new();
    let (mut start, mut tokens) = (0, 0);
    for (i, r) in rows.iter().enumerate() {
        if i > start && (i - start == max_rows || tokens + r.len() > max_tokens) {
            out.push(&rows[start..i]);
            (start, tokens) = (i, 0);
        }
        tokens += r.len();
    }
    if start < rows.len() {
        out.push(&rows[start..]);
    }
    out
}

/// log Σ P(yes ids) − log Σ P(no ids) (0 when the distribution knows neither).
fn margin(d: &TokenDist, yes: &[u32], no: &[u32]) -> f64 {
    let lse = |ids: &[u32]| -> f64 {
        let vals: Vec<f64> = ids
            .iter()
            .map(|&i| match d.logits() {
                Some(l) => l.get(i as usize).map_or(f64::NEG_INFINITY, |&x| x as f64),
                None => d.logprob(i),
            })
            .collect();
        let m = vals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if m == f64::NEG_INFINITY {
            return m;
        }
        m + vals.iter().map(|v| (v - m).exp()).sum::<f64>().ln()
    };
    let (y, n) = (lse(yes), lse(no));
    match (y.is_finite(), n.is_finite()) {
        (true, true) => y - n,
        (true, false) => 20.0,
        (false, true) => -20.0,
        (false, false) => 0.0,
    }
}

/// See the module documentation.
pub struct Judge {
    rubric: String,
    /// Template text before `{response}` (trailing whitespace removed).
    before: String,
    /// Whitespace removed from the end of `before`: it starts each row.
    lead: String,
    /// Template text after `{response}`.
    after: String,
    model: Option<PathBuf>,
    ctx: Arc<HeadContext>,
}

impl Judge {
    /// The judge model of this head, loaded on first use and shared through the context.
    pub fn judge_model(&self) -> Result<Arc<JudgeModel>> {
        let (backend, key) = self.ctx.model(Self::NAME, self.model.as_deref())?;
        self.ctx.shared(&key, || JudgeModel::new(backend))
    }

    fn fill(&self, part: &str, prompt: &str) -> String {
        part.replace("{rubric}", &self.rubric).replace("{prompt}", prompt)
    }
}

impl RewardHead for Judge {
    const NAME: &'static str = "judge";
    const DESCRIPTION: &'static str =
        "LLM rubric: P(Yes) that the response satisfies the rubric, asked of a GGUF model (the policy by default)";
    const PARAMS: &'static [ParamInfo] = &[
        ParamInfo { name: "rubric", ty: "string", default: "required", doc: "what the response should do, completing \"The reply ...\" (e.g. \"is polite\")" },
        ParamInfo { name: "model", ty: "path", default: "the policy", doc: "GGUF judge model (loaded once, shared)" },
        ParamInfo { name: "template", ty: "string", default: "built-in", doc: "judging prompt with {prompt}, {response} (once), {rubric}; the next token is read as Yes/No" },
    ];
    const EXAMPLE: &'static str = r#"{"rubric": "is polite", "model": null}"#;
    type Params = Params;

    fn build(p: Params, ctx: &Arc<HeadContext>) -> Result<Self> {
        if p.rubric.trim().is_empty() {
            return Err(bad_param(Self::NAME, "`rubric` is empty"));
        }
        check_model_path(Self::NAME, &p.model, ctx)?;
        if p.model.is_none() && ctx.policy().is_none() {
            return Err(bad_param(Self::NAME, "no `model` given and no policy model is loaded"));
        }
        let template = p.template.unwrap_or_else(|| DEFAULT_TEMPLATE.to_string());
        let mut parts = template.split("{response}");
        let (before, after) = match (parts.next(), parts.next(), parts.next()) {
            (Some(b), Some(a), None) => (b.to_string(), a.to_string()),
            _ => return Err(bad_param(Self::NAME, "`template` must contain `{response}` exactly once")),
        };
        // whitespace before the response belongs to its first token ("▁word"), so it moves
        // from the cached prefix into each row
        let trimmed = before.trim_end().len();
        let (before, lead) = (before[..trimmed].to_string(), before[trimmed..].to_string());
        if after.trim().is_empty() {
            return Err(bad_param(Self::NAME, "`template` must ask its question after `{response}`"));
        }
        Ok(Self { rubric: p.rubric.trim().trim_end_matches('.').to_string(), before, lead, after, model: p.model, ctx: ctx.clone() })
    }

    fn scale(&self) -> Scale {
        Scale::UNIT
    }

    fn prepare(&self) -> Result<()> {
        self.judge_model().map(|_| ())
    }

    fn score(&self, cands: &[Candidate]) -> Result<Vec<f32>> {
        let jm = self.judge_model()?;
        let mut out = vec![0.0f32; cands.len()];
        // one forward per distinct prompt (a search scores candidates of one prompt: one forward)
        for (prompt, idx) in super::group_by_prompt(cands) {
            let prefix = self.fill(&self.before, prompt);
            let after = self.fill(&self.after, prompt);
            let suffixes: Vec<String> = idx.iter().map(|&i| format!("{}{}{after}", self.lead, cands[i].response)).collect();
            let margins = jm.yes_no_margins(&prefix, &suffixes)?;
            for (&i, m) in idx.iter().zip(margins) {
                out[i] = log_sigmoid(m).exp() as f32;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn chunks_respect_rows_and_tokens() {
        let rows: Vec<Vec<u32>> = [3, 3, 3, 10, 1, 1, 1, 1].iter().map(|&n| vec![0; n]).collect();
        let lens = |c: Vec<&[Vec<u32>]>| c.iter().map(|c| c.len()).collect::<Vec<_>>();
        assert_eq!(lens(super::chunks_within(&rows, 16, 6)), vec![2, 1, 1, 4]);
        assert_eq!(lens(super::chunks_within(&rows, 3, 100)), vec![3, 3, 2]);
        assert_eq!(lens(super::chunks_within(&rows, 16, 1000)), vec![8]);
        assert!(super::chunks_within(&[], 16, 10).is_empty());
    }
}
