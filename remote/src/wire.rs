//! The engine's JSON: a `/v1/completions` reply read into tokens and top-N distributions, in
//! llama.cpp's shape (`logprobs.content[]` with `id`s) or OpenAI's legacy shape with
//! `token_id:N` tokens (vLLM's `return_tokens_as_token_ids`).

use deal_backend::{Error, Result, TokenDist};
use serde_json::Value;

fn bad(message: impl Into<String>) -> Error {
    Error::Upstream { status: Some(200), message: format!("unexpected reply: {}", message.into()) }
}

/// The error type an engine's error body names (`invalid_request_error`...), never its text.
pub fn error_kind(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.pointer("/error/type").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| "no error type".into())
}

/// One entry per prompt: the generated tokens, each with the distribution it was chosen from.
/// A choice that stopped (`finish_reason: "stop"`) ends with `eos` if its tokens do not.
pub fn parse_completions(text: &str, prompts: usize, eos: Option<u32>) -> Result<Vec<Vec<(u32, TokenDist)>>> {
    let v: Value = serde_json::from_str(text).map_err(|e| bad(format!("not JSON ({e})")))?;
    let choices = v.get("choices").and_then(Value::as_array).ok_or_else(|| bad("no `choices`"))?;
    let mut out: Vec<Option<Vec<(u32, TokenDist)>>> = vec![None; prompts];
    for (k, c) in choices.iter().enumerate() {
        let index = c.get("index").and_then(Value::as_u64).map_or(k, |i| i as usize);
        let slot = out.get_mut(index).ok_or_else(|| bad(format!("choice index {index} for {prompts} prompts")))?;
        let lp = c.get("logprobs").ok_or_else(|| bad("a choice has no `logprobs` (does the engine support them?)"))?;
        let mut steps = match lp.get("content").and_then(Value::as_array) {
            Some(content) => content.iter().map(content_entry).collect::<Result<Vec<_>>>()?,
            None => legacy(lp)?,
        };
        let stopped = c.get("finish_reason").and_then(Value::as_str) == Some("stop");
        if let (true, Some(e)) = (stopped, eos) {
            if steps.last().map(|s| s.0) != Some(e) {
                steps.push((e, TokenDist::top_n(vec![(e, 0.0)])));
            }
        }
        *slot = Some(steps);
    }
    out.into_iter().enumerate().map(|(i, s)| s.ok_or_else(|| bad(format!("no choice for prompt {i}")))).collect()
}

/// llama.cpp: `{"id", "token", "logprob", "top_logprobs": [{"id", "token", "logprob"}]}`.
fn content_entry(e: &Value) -> Result<(u32, TokenDist)> {
    let id = e.get("id").and_then(Value::as_u64).ok_or_else(|| bad("a logprobs entry has no token `id`"))? as u32;
    let top = e.get("top_logprobs").and_then(Value::as_array).ok_or_else(|| bad("no `top_logprobs`"))?;
    let mut pairs = Vec::with_capacity(top.len());
    for t in top {
        let tid = t.get("id").and_then(Value::as_u64).ok_or_else(|| bad("a top_logprobs entry has no `id`"))?;
        let lp = t.get("logprob").and_then(Value::as_f64).ok_or_else(|| bad("a top_logprobs entry has no `logprob`"))?;
        pairs.push((tid as u32, lp.max(-1e30) as f32));
    }
    Ok((id, TokenDist::top_n(pairs)))
}

/// OpenAI legacy: `{"tokens": ["token_id:5"], "top_logprobs": [{"token_id:5": -0.1}]}`.
fn legacy(lp: &Value) -> Result<Vec<(u32, TokenDist)>> {
    let id = |s: &str| -> Result<u32> {
        s.strip_prefix("token_id:")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| bad(format!("token {s:?} is not `token_id:N` (ask the engine for token ids: vLLM's return_tokens_as_token_ids)")))
    };
    let tokens = lp.get("tokens").and_then(Value::as_array).ok_or_else(|| bad("logprobs have neither `content` nor `tokens`"))?;
    let tops = lp.get("top_logprobs").and_then(Value::as_array).ok_or_else(|| bad("no `top_logprobs`"))?;
    let mut out = Vec::with_capacity(tokens.len());
    for (t, top) in tokens.iter().zip(tops) {
        let t = id(t.as_str().ok_or_else(|| bad("a token is not a string"))?)?;
        let obj = top.as_object().ok_or_else(|| bad("a top_logprobs entry is not an object"))?;
        let pairs = obj.iter().map(|(k, v)| Ok((id(k)?, v.as_f64().unwrap_or(f64::NEG_INFINITY).max(-1e30) as f32))).collect::<Result<Vec<_>>>()?;
        out.push((t, TokenDist::top_n(pairs)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_llama_cpp_and_legacy_shapes() {
        let cpp = r#"{"choices":[{"index":0,"finish_reason":"length","logprobs":{"content":[
            {"id":5,"token":"a","logprob":-0.1,"top_logprobs":[{"id":5,"logprob":-0.1},{"id":7,"logprob":-2.5}]}]}}]}"#;
        let r = parse_completions(cpp, 1, Some(1)).unwrap();
        assert_eq!(r[0].len(), 1);
        assert_eq!(r[0][0].0, 5);
        assert_eq!(r[0][0].1.top_k(2).iter().map(|x| x.0).collect::<Vec<_>>(), vec![5, 7]);
        let legacy = r#"{"choices":[{"index":1,"finish_reason":"stop","logprobs":{"tokens":["token_id:9"],
            "top_logprobs":[{"token_id:9":-0.2,"token_id:3":-1.9}]}},
            {"index":0,"finish_reason":"length","logprobs":{"tokens":["token_id:4"],"top_logprobs":[{"token_id:4":-0.3}]}}]}"#;
        let r = parse_completions(legacy, 2, Some(1)).unwrap();
        assert_eq!(r[0][0].0, 4, "choices are put back in prompt order");
        assert_eq!(r[1].iter().map(|s| s.0).collect::<Vec<_>>(), vec![9, 1], "a stopped choice ends with EOS");
        assert!((r[1][0].1.logprob(3) + 1.9).abs() < 1e-6);
    }

    #[test]
    fn refuses_what_it_cannot_use_without_echoing_it() {
        assert!(parse_completions("<html>", 1, None).is_err());
        assert!(parse_completions(r#"{"choices":[]}"#, 1, None).is_err());
        let no_ids = r#"{"choices":[{"index":0,"logprobs":{"tokens":["hello"],"top_logprobs":[{"hello":-0.1}]}}]}"#;
        assert!(parse_completions(no_ids, 1, None).unwrap_err().to_string().contains("token_id"));
        assert_eq!(error_kind(r#"{"error":{"type":"invalid_request_error","message":"secret"}}"#), "invalid_request_error");
        assert!(!error_kind("secret page").contains("secret"));
    }
}
