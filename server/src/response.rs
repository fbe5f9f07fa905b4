//! OpenAI response shapes: `chat.completion`, `text_completion`, their streaming chunks and
//! `usage`, plus deal's `alignment` object (per-head breakdown, total, search stats).

use std::sync::Arc;

use deal_backend::{Backend, FinishReason, TextCodec, TokenLogprob};
use deal_controllers::Outcome;
use serde_json::{json, Value};

use crate::request::{Endpoint, GenerationRequest};

/// Identity of one response (shared by all its chunks), and the backend whose tokenizer
/// spells the tokens of `logprobs`.
#[derive(Clone)]
pub struct ResponseMeta {
    /// Response id, `chatcmpl-…` or `cmpl-…`.
    pub id: String,
    /// Creation time, Unix seconds.
    pub created: u64,
    /// The served model's id.
    pub model: String,
    /// The endpoint answered (decides the `object` type).
    pub endpoint: Endpoint,
    /// The backend that answered (its tokenizer spells tokens).
    pub backend: Arc<dyn Backend>,
}

impl ResponseMeta {
    /// Identity of a new response to `endpoint`: a random id, the current time, and `model`.
    pub fn new(endpoint: Endpoint, model: &str, backend: Arc<dyn Backend>) -> Self {
        let prefix = match endpoint {
            Endpoint::Chat => "chatcmpl",
            Endpoint::Completion => "cmpl",
        };
        let created = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        Self { id: format!("{prefix}-{:024x}", rand::random::<u128>() >> 32), created, model: model.to_string(), endpoint, backend }
    }

    fn object(&self, chunk: bool) -> &'static str {
        match (self.endpoint, chunk) {
            (Endpoint::Chat, false) => "chat.completion",
            (Endpoint::Chat, true) => "chat.completion.chunk",
            (Endpoint::Completion, _) => "text_completion",
        }
    }
}

/// OpenAI's finish reason (a cancelled search has no client left to read it).
pub fn finish_reason(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Length => "length",
        _ => "stop",
    }
}

/// deal's `alignment` object for one choice: the breakdown of its reward and the search stats.
pub fn choice_alignment(req: &GenerationRequest, o: &Outcome) -> Value {
    let mut v = match &o.breakdown {
        Some(b) => serde_json::to_value(b).unwrap_or_default(),
        None => json!({}),
    };
    if let Some(m) = v.as_object_mut() {
        m.insert("controller".into(), json!(req.job.controller));
        m.insert("stats".into(), serde_json::to_value(&o.stats).unwrap_or_default());
    }
    v
}

/// A token as text (special tokens by name; bytes of a split character as U+FFFD) and its
/// bytes.
fn spell(codec: &dyn TextCodec, token: u32) -> (String, Vec<u8>) {
    let mut bytes = Vec::new();
    if codec.push_piece(token, true, &mut bytes).is_err() {
        bytes.clear();
    }
    (String::from_utf8_lossy(&bytes).into_owned(), bytes)
}

/// OpenAI writes a log-probability it cannot give (a token a top-N engine did not list) as
/// -9999.
fn finite(lp: f32) -> f64 {
    if lp.is_finite() {
        lp as f64
    } else {
        -9999.0
    }
}

/// A chat choice's (or chunk's) `logprobs`: `{"content": [{token, logprob, bytes,
/// top_logprobs}], "refusal": null}`.
pub fn chat_logprobs(codec: &dyn TextCodec, lps: &[TokenLogprob]) -> Value {
    let entry = |t: u32, lp: f32| {
        let (token, bytes) = spell(codec, t);
        json!({"token": token, "logprob": finite(lp), "bytes": bytes})
    };
    let content: Vec<Value> = lps
        .iter()
        .map(|l| {
            let mut e = entry(l.token, l.logprob);
            e["top_logprobs"] = Value::Array(l.top.iter().map(|&(t, lp)| entry(t, lp)).collect());
            e
        })
        .collect();
    json!({"content": content, "refusal": null})
}

/// A completion choice's (or chunk's) `logprobs`: `{"tokens", "token_logprobs",
/// "top_logprobs", "text_offset"}`, the echoed prompt's tokens first (the first of them has
/// no logprob: null). Offsets count characters of the choice's text from `offset`.
/// With `ids`, tokens are named `token_id:N` (vLLM's `return_tokens_as_token_ids`).
pub fn completion_logprobs(
    codec: &dyn TextCodec,
    prompt: &[(u32, Option<TokenLogprob>)],
    lps: &[TokenLogprob],
    offset: usize,
    ids: bool,
) -> Value {
    let (mut tokens, mut token_logprobs, mut tops, mut offsets) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut at = offset;
    let name = |t: u32| if ids { format!("token_id:{t}") } else { spell(codec, t).0 };
    let items = prompt.iter().map(|(t, l)| (*t, l.as_ref())).chain(lps.iter().map(|l| (l.token, Some(l))));
    for (t, l) in items {
        let token = name(t);
        offsets.push(at);
        let mut plain = Vec::new();
        if codec.push_piece(t, false, &mut plain).is_ok() {
            at += String::from_utf8_lossy(&plain).chars().count();
        }
        tokens.push(Value::String(token));
        match l {
            Some(l) => {
                token_logprobs.push(json!(finite(l.logprob)));
                let mut top = serde_json::Map::new();
                for &(alt, lp) in &l.top {
                    top.entry(name(alt)).or_insert(json!(finite(lp)));
                }
                tops.push(Value::Object(top));
            }
            None => {
                token_logprobs.push(Value::Null);
                tops.push(Value::Null);
            }
        }
    }
    json!({"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": tops, "text_offset": offsets})
}

/// The `logprobs` of one whole choice (null unless the request asked for them).
fn choice_logprobs(meta: &ResponseMeta, req: &GenerationRequest, o: &Outcome) -> Value {
    if req.job.logprobs.is_none() && !req.job.echo {
        return Value::Null;
    }
    let codec = meta.backend.codec();
    match meta.endpoint {
        Endpoint::Chat => chat_logprobs(codec, &o.logprobs),
        Endpoint::Completion => {
            let prompt = o.prompt_logprobs.as_deref().unwrap_or_default();
            completion_logprobs(codec, prompt, &o.logprobs, 0, req.token_ids)
        }
    }
}

/// Token counts of a request.
pub fn usage(outcomes: &[&Outcome], req: &GenerationRequest) -> Value {
    let prompt: usize = req.job.prompts.iter().map(|p| p.tokens.len()).sum();
    let completion: usize = outcomes.iter().map(|o| o.tokens.len()).sum();
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

/// The whole (non-streaming) response.
pub fn completion(meta: &ResponseMeta, req: &GenerationRequest, outcomes: &[&Outcome]) -> Value {
    let aligned = req.job.reward.is_some();
    let choices: Vec<Value> = outcomes
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let logprobs = choice_logprobs(meta, req, o);
            let mut c = match meta.endpoint {
                Endpoint::Chat => json!({
                    "index": i,
                    "message": {"role": "assistant", "content": o.text, "refusal": null},
                    "logprobs": logprobs,
                    "finish_reason": finish_reason(o.finish),
                }),
                Endpoint::Completion => {
                    // `echo`: the prompt, then the completion
                    let text = match req.job.echo {
                        true => {
                            let prompt = req.job.prompts.get(i / req.job.n.max(1)).map_or("", |p| p.text.as_str());
                            format!("{prompt}{}", o.text)
                        }
                        false => o.text.clone(),
                    };
                    json!({"index": i, "text": text, "logprobs": logprobs, "finish_reason": finish_reason(o.finish)})
                }
            };
            if aligned {
                c["alignment"] = choice_alignment(req, o);
            }
            c
        })
        .collect();
    let mut body = json!({
        "id": meta.id,
        "object": meta.object(false),
        "created": meta.created,
        "model": meta.model,
        "system_fingerprint": null,
        "choices": choices,
        "usage": usage(outcomes, req),
    });
    if aligned {
        if let Some(first) = outcomes.first() {
            body["alignment"] = choice_alignment(req, first);
        }
    }
    body
}

/// A streaming chunk carrying text (or the chat role) for choice `index`, with the
/// logprobs of the tokens it completes when the request asked for them (`offset`: characters
/// of the choice's text streamed before this chunk).
pub fn text_chunk(
    meta: &ResponseMeta,
    index: usize,
    text: &str,
    role: bool,
    logprobs: Option<(&[TokenLogprob], usize)>,
    ids: bool,
) -> Value {
    let codec = meta.backend.codec();
    let choice = match meta.endpoint {
        Endpoint::Chat => {
            let delta = if role { json!({"role": "assistant", "content": ""}) } else { json!({"content": text}) };
            let lp = logprobs.map_or(Value::Null, |(l, _)| chat_logprobs(codec, l));
            json!({"index": index, "delta": delta, "logprobs": lp, "finish_reason": null})
        }
        Endpoint::Completion => {
            let lp = logprobs.map_or(Value::Null, |(l, at)| completion_logprobs(codec, &[], l, at, ids));
            json!({"index": index, "text": text, "logprobs": lp, "finish_reason": null})
        }
    };
    chunk(meta, vec![choice])
}

/// The last chunk of choice `index`: its finish reason, and the alignment breakdown.
pub fn final_chunk(meta: &ResponseMeta, req: &GenerationRequest, index: usize, o: &Outcome) -> Value {
    let mut choice = match meta.endpoint {
        Endpoint::Chat => json!({"index": index, "delta": {}, "logprobs": null, "finish_reason": finish_reason(o.finish)}),
        Endpoint::Completion => json!({"index": index, "text": "", "logprobs": null, "finish_reason": finish_reason(o.finish)}),
    };
    if req.job.reward.is_some() {
        choice["alignment"] = choice_alignment(req, o);
    }
    chunk(meta, vec![choice])
}

/// The usage chunk (`stream_options.include_usage`): no choices.
pub fn usage_chunk(meta: &ResponseMeta, req: &GenerationRequest, outcomes: &[&Outcome]) -> Value {
    let mut c = chunk(meta, vec![]);
    c["usage"] = usage(outcomes, req);
    c
}

fn chunk(meta: &ResponseMeta, choices: Vec<Value>) -> Value {
    json!({
        "id": meta.id,
        "object": meta.object(true),
        "created": meta.created,
        "model": meta.model,
        "system_fingerprint": null,
        "choices": choices,
    })
}
