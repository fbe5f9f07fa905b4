//! `judge`: an LLM rubric head. The score is P(Yes) / (P(Yes) + P(No)) at the answer position
//! of a prompt asking a GGUF model (the policy by default) whether the response satisfies
//! the rubric ("is polite", "answers the question").
//!
//! Cost: the template up to the response (with the request's prompt) is prefilled once and
//! kept as a shared KV prefix; each call then runs **one** batched forward over all
//! candidates (ragged rows: response + the question after it) on a fork of that prefix.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::Deserialize;

use super::{bad_param, check_model_path, Candidate, HeadContext, ParamInfo, RewardHead, Scale};
use crate::kv_cache::KvCache;
use crate::model::LogitsFor;
use crate::reward::log_sigmoid;
use crate::{Engine, Error, Result};

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

/// Prefixes kept per judge model.
const PREFIX_CACHE: usize = 8;

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

/// A judge model with its Yes/No token ids and cached prompt prefixes.
pub struct JudgeModel {
    engine: Arc<Engine>,
    yes: Vec<u32>,
    no: Vec<u32>,
    prefixes: Mutex<HashMap<String, Arc<KvCache>>>,
}

impl JudgeModel {
    /// Wrap an engine, finding single-token spellings of Yes and No in its vocabulary.
    pub fn new(engine: Arc<Engine>) -> Result<Self> {
        let find = |words: &[&str]| -> Result<Vec<u32>> {
            let mut ids = Vec::new();
            for w in words {
                let t = engine.tokenizer().encode(w, false)?;
                if t.len() == 1 && !ids.contains(&t[0]) {
                    ids.push(t[0]);
                }
            }
            Ok(ids)
        };
        let yes = find(&[" Yes", "Yes", " yes", "yes"])?;
        let no = find(&[" No", "No", " no", "no"])?;
        if yes.is_empty() || no.is_empty() {
            return Err(bad_param(Judge::NAME, format!("model {} has no single-token Yes / No", engine.name())));
        }
        Ok(Self { engine, yes, no, prefixes: Mutex::new(HashMap::new()) })
    }

    /// The engine that runs the judge model.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// A single-row cache holding `prefix` as a shared prefix (prefilled once, then cached).
    fn prefix_cache(&self, prefix: &str) -> Result<Arc<KvCache>> {
        if let Some(c) = self.prefixes.lock().ok().and_then(|m| m.get(prefix).cloned()) {
            return Ok(c);
        }
        let tokens = self.engine.encode_prompt(prefix)?;
        let (mut cache, _) = self.engine.prefill(&tokens)?;
        cache.promote_prefix()?;
        let cache = Arc::new(cache);
        if let Ok(mut m) = self.prefixes.lock() {
            if m.len() >= PREFIX_CACHE {
                m.clear();
            }
            m.insert(prefix.to_string(), cache.clone());
        }
        Ok(cache)
    }

    /// log P(Yes) − log P(No) for each `suffixes[i]` continuing `prefix`, in one forward.
    pub fn yes_no_margins(&self, prefix: &str, suffixes: &[String]) -> Result<Vec<f64>> {
        let base = self.prefix_cache(prefix)?;
        let mut cache = base.deep_clone()?;
        cache.fork(suffixes.len())?;
        let mut rows = Vec::with_capacity(suffixes.len());
        for s in suffixes {
            let t = self.engine.tokenizer().encode(s, false)?;
            if t.is_empty() {
                return Err(Error::invalid("judge: empty text after the prompt prefix"));
            }
            rows.push(t);
        }
        let out = self.engine.model().forward(&mut cache, &rows, LogitsFor::Last)?;
        let logits = out.logits.ok_or_else(|| Error::invalid("judge: the forward pass returned no logits"))?.to_vec2::<f32>()?;
        Ok(logits.iter().map(|l| logsumexp(l, &self.yes) - logsumexp(l, &self.no)).collect())
    }
}

fn logsumexp(logits: &[f32], ids: &[u32]) -> f64 {
    let vals: Vec<f64> = ids.iter().map(|&i| logits[i as usize] as f64).collect();
    let m = vals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    m + vals.iter().map(|v| (v - m).exp()).sum::<f64>().ln()
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
        let engine = self.ctx.engine(Self::NAME, self.model.as_deref())?;
        let key = engine.path().to_string_lossy().into_owned();
        self.ctx.shared(&key, || JudgeModel::new(engine.clone()))
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
        check_model_path(Self::NAME, &p.model)?;
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
