//! OpenAI response shapes: `chat.completion`, `text_completion`, their streaming chunks and
//! `usage`, plus deal's `alignment` object (per-head breakdown, total, search stats).

use deal_controllers::Outcome;
use deal_backend::FinishReason;
use serde_json::{json, Value};

use crate::request::{Endpoint, GenerationRequest};

/// Identity of one response (shared by all its chunks).
#[derive(Debug, Clone)]
pub struct ResponseMeta {
    /// Response id, `chatcmpl-…` or `cmpl-…`.
    pub id: String,
    /// Creation time, Unix seconds.
    pub created: u64,
    /// The served model's id.
    pub model: String,
    /// The endpoint answered (decides the `object` type).
    pub endpoint: Endpoint,
}

impl ResponseMeta {
    /// Identity of a new response to `endpoint`: a random id, the current time, and `model`.
    pub fn new(endpoint: Endpoint, model: &str) -> Self {
        let prefix = match endpoint {
            Endpoint::Chat => "chatcmpl",
            Endpoint::Completion => "cmpl",
        };
        let created = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        Self { id: format!("{prefix}-{:024x}", rand::random::<u128>() >> 32), created, model: model.to_string(), endpoint }
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
            let mut c = match meta.endpoint {
                Endpoint::Chat => json!({
                    "index": i,
                    "message": {"role": "assistant", "content": o.text, "refusal": null},
                    "logprobs": null,
                    "finish_reason": finish_reason(o.finish),
                }),
                Endpoint::Completion => json!({
                    "index": i, "text": o.text, "logprobs": null, "finish_reason": finish_reason(o.finish),
                }),
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

/// A streaming chunk carrying text (or the chat role) for choice `index`.
pub fn text_chunk(meta: &ResponseMeta, index: usize, text: &str, role: bool) -> Value {
    let choice = match meta.endpoint {
        Endpoint::Chat => {
            let delta = if role { json!({"role": "assistant", "content": ""}) } else { json!({"content": text}) };
            json!({"index": index, "delta": delta, "logprobs": null, "finish_reason": null})
        }
        Endpoint::Completion => json!({"index": index, "text": text, "logprobs": null, "finish_reason": null}),
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
