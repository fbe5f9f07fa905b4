//! The edge: a raw request body (bytes) becomes a typed, validated [`GenerationRequest`], or
//! an [`ApiError`] that names the field at fault. Nothing past this module sees JSON.
//!
//! Standard OpenAI fields honoured: `model`, `messages` / `prompt`, `max_tokens` (and
//! `max_completion_tokens`), `temperature`, `top_p`, `seed`, `stop`, `n`, `stream`,
//! `stream_options.include_usage`. Steering comes in one extra object, `alignment` (see
//! [`deal_controllers::alignment`]). Fields deal cannot honour (`logprobs: true`, `tools`,
//! a JSON `response_format`, non-zero penalties, `logit_bias`) are refused with a 400 rather
//! than silently ignored; other fields (`user`, `metadata`, `store`...) are ignored.

use deal_backend::chat::{Message, Role};
use deal_controllers::SearchConfig;
use deal_controllers::grammar::GrammarSpec;
use deal_driver::{Alignment, Driver, Prompt};
use serde_json::{Map, Value};

use crate::error::ApiError;

/// Which endpoint a request came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v1/chat/completions`
    Chat,
    /// `/v1/completions`
    Completion,
}

/// A validated generation request.
#[derive(Debug, Clone)]
pub struct GenerationRequest {
    /// The endpoint the request came to.
    pub endpoint: Endpoint,
    /// Whether to answer with server-sent chunks.
    pub stream: bool,
    /// `stream_options.include_usage`: end the stream with a chunk of token counts.
    pub include_usage: bool,
    /// `return_tokens_as_token_ids` (vLLM's field): logprobs name tokens `token_id:N`, so
    /// a client with the same vocabulary (a remote deal) reads ids, not text.
    pub token_ids: bool,
    /// What the driver runs: the prompts (a completions request may give a list), `n`
    /// (1 to [`MAX_N`]), the controller (`greedy` / `sample` without alignment), its config
    /// (the OpenAI sampling fields plus `alignment.params`) and the reward spec.
    pub job: deal_driver::Request,
}

/// Most choices per request.
pub const MAX_N: usize = 16;
/// Most stop strings.
pub const MAX_STOP: usize = 16;
/// Most prompts in one completions request.
pub const MAX_PROMPTS: usize = 16;
/// `max_tokens` when the request gives none (capped by the room left in the context).
pub const DEFAULT_MAX_TOKENS: usize = 256;
/// Most alternatives per position `top_logprobs` (chat) / `logprobs` (completions) may ask for.
pub const MAX_TOP_LOGPROBS: u64 = 20;
/// Most entries of `logit_bias` (OpenAI's limit).
pub const MAX_LOGIT_BIAS: usize = 300;

/// Parse and validate a request body for `endpoint`.
pub fn parse(body: &[u8], endpoint: Endpoint, driver: &Driver, served: &[String]) -> Result<GenerationRequest, ApiError> {
    let engine = driver.backend();
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!("the request body is not valid JSON: {e}"))
    })?;
    let obj = value.as_object().ok_or_else(|| ApiError::bad_request("the request body must be a JSON object"))?;
    let f = Fields(obj);

    let model = f.str("model")?.ok_or_else(|| ApiError::invalid("model", "`model` is required (see GET /v1/models)"))?;
    if !served.iter().any(|s| s == model) {
        return Err(ApiError::model_not_found(model, &served[0]));
    }
    f.refuse_unsupported()?;

    let stream = f.bool("stream")?.unwrap_or(false);
    let include_usage = match obj.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(Value::Object(o)) => Fields(o).bool("include_usage")?.unwrap_or(false),
        Some(_) => return Err(ApiError::invalid("stream_options", "`stream_options` must be an object")),
    };
    let n = match f.uint("n")? {
        None => 1,
        Some(n) if (1..=MAX_N as u64).contains(&n) => n as usize,
        Some(n) => return Err(ApiError::invalid("n", format!("`n` is {n}; it must be between 1 and {MAX_N}"))),
    };
    let temperature = f.num("temperature")?;
    if let Some(t) = temperature {
        if !(0.0..=2.0).contains(&t) {
            return Err(ApiError::invalid("temperature", format!("`temperature` is {t}; it must be in [0, 2]")));
        }
    }
    let top_p = f.num("top_p")?;
    if let Some(p) = top_p {
        if !(p > 0.0 && p <= 1.0) {
            return Err(ApiError::invalid("top_p", format!("`top_p` is {p}; it must be in (0, 1]")));
        }
    }
    let seed = match obj.get("seed") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_i64()
                .map(|s| s as u64)
                .or_else(|| v.as_u64())
                .ok_or_else(|| ApiError::invalid("seed", "`seed` must be an integer"))?,
        ),
    };
    let stop = f.stop()?;
    let (logprobs, echo) = f.logprobs(endpoint)?;
    let frequency_penalty = f.penalty("frequency_penalty")?;
    let presence_penalty = f.penalty("presence_penalty")?;
    let logit_bias = f.logit_bias(engine.codec().vocab_size())?;
    let response_format = f.response_format()?;
    if echo && stream {
        return Err(ApiError::invalid("echo", "`echo` is not supported with `stream: true`; ask without streaming"));
    }
    let max_tokens = match (f.uint("max_completion_tokens")?, f.uint("max_tokens")?) {
        (Some(a), _) => Some(("max_completion_tokens", a)),
        (None, Some(b)) => Some(("max_tokens", b)),
        (None, None) => None,
    };

    // prompts
    let mut prompts = Vec::new();
    let mut stop = stop;
    match endpoint {
        Endpoint::Chat => {
            if obj.contains_key("prompt") {
                return Err(ApiError::invalid("prompt", "chat completions take `messages`, not `prompt`"));
            }
            let messages = parse_messages(obj.get("messages"))?;
            let head_text = messages.iter().rev().find(|m| m.role == Role::User).map(|m| m.content.clone());
            let tokens = engine.encode_chat(&messages).map_err(|e| ApiError::invalid("messages", e.to_string()))?;
            prompts.push(Prompt { tokens, text: head_text.unwrap_or_default() });
            for s in engine.chat_stop_strings() {
                if !stop.contains(&s) {
                    stop.push(s);
                }
            }
        }
        Endpoint::Completion => {
            if obj.contains_key("messages") {
                return Err(ApiError::invalid("messages", "completions take `prompt`; use /v1/chat/completions for `messages`"));
            }
            match token_prompts(obj.get("prompt"), engine.codec().vocab_size())? {
                // token ids, as OpenAI allows (a remote deal sends them): used as given
                Some(lists) => {
                    for tokens in lists {
                        let text = engine.codec().decode(&tokens, true).map_err(|e| ApiError::invalid("prompt", e.to_string()))?;
                        prompts.push(Prompt { tokens, text });
                    }
                }
                None => {
                    for text in parse_prompts(obj.get("prompt"))? {
                        let tokens = engine.encode_prompt(&text).map_err(|e| ApiError::invalid("prompt", e.to_string()))?;
                        prompts.push(Prompt { tokens, text });
                    }
                }
            }
        }
    }

    // context room
    let ctx = engine.context_length();
    let longest = prompts.iter().map(|p| p.tokens.len()).max().unwrap_or(0);
    let prompt_param = if endpoint == Endpoint::Chat { "messages" } else { "prompt" };
    if longest == 0 {
        return Err(ApiError::invalid(prompt_param, "the prompt is empty"));
    }
    if longest >= ctx {
        let mut e = ApiError::invalid(
            prompt_param,
            format!("the prompt has {longest} tokens; this model's maximum context length is {ctx} tokens"),
        );
        e.code = Some("context_length_exceeded");
        return Err(e);
    }
    let room = ctx - longest;
    // `echo` with `max_tokens: 0` scores the prompt and generates nothing
    let generate = !(echo && matches!(max_tokens, Some((_, 0))));
    let max_tokens = match max_tokens {
        None => DEFAULT_MAX_TOKENS.min(room),
        Some((_, 0)) if !generate => 1,
        Some((field, 0)) => {
            return Err(ApiError::invalid(field, format!("`{field}` must be at least 1 (0 only with `echo`: score the prompt)")))
        }
        Some((field, m)) if m as usize > room || m > u32::MAX as u64 => {
            let mut e = ApiError::invalid(
                field,
                format!(
                    "this model's maximum context length is {ctx} tokens; you asked for {m} tokens \
                     ({longest} in the prompt, {m} in the completion); at most {room} can be generated"
                ),
            );
            e.code = Some("context_length_exceeded");
            return Err(e);
        }
        Some((_, m)) => m as usize,
    };

    // alignment
    let alignment = match obj.get("alignment") {
        None | Some(Value::Null) => None,
        Some(v) => Some(Alignment::from_value(v, driver.registries()).map_err(|e| ApiError::invalid(e.param, e.message))?),
    };
    let seed = seed.unwrap_or_else(rand::random::<u64>);
    let grammar_spec = match (response_format, alignment.as_ref().and_then(|a| a.grammar.clone())) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid("alignment.grammar", "give either `response_format` or `alignment.grammar`, not both"))
        }
        (Some(g), None) => Some(("response_format", g)),
        (None, Some(g)) => Some(("alignment.grammar", g)),
        (None, None) => None,
    };
    let grammar = match grammar_spec {
        Some((param, spec)) => Some(driver.grammar(&spec).map_err(|e| ApiError::invalid(param, format!("the grammar does not compile: {e}")))?),
        None => None,
    };
    if grammar.is_some() && !engine.capabilities().cheap_steps {
        return Err(ApiError::invalid(
            "response_format",
            "structured outputs need the local engine: a remote engine continues rows on its own, unmasked",
        ));
    }
    let (controller, mut config, reward) = match alignment {
        Some(a) => {
            let reward = a.has_reward().then_some(a.reward);
            (a.controller, a.config, reward)
        }
        None => {
            // OpenAI's default temperature is 1; 0 means greedy.
            let t = temperature.unwrap_or(1.0);
            let name = if t == 0.0 { "greedy" } else { "sample" };
            (name.to_string(), SearchConfig::default(), None)
        }
    };
    config.max_tokens = max_tokens;
    config.stop = stop;
    config.seed = seed;
    if let Some(t) = temperature {
        config.temperature = t as f32;
    } else if reward.is_none() {
        config.temperature = 1.0;
    }
    if let Some(p) = top_p {
        config.top_p = p as f32;
    }
    if let Some(x) = frequency_penalty {
        config.frequency_penalty = x;
    }
    if let Some(x) = presence_penalty {
        config.presence_penalty = x;
    }
    if let Some(b) = logit_bias {
        config.logit_bias = b;
    }
    // the standard fields may make the controller's config invalid (e.g. temperature 0 for a
    // sampling controller): report it against the field the user set
    if let Err(e) = driver.registries().controllers.build(&controller, &config) {
        let e = ApiError::from(e);
        let param = match e.param.as_deref() {
            Some("alignment.params.temperature") if temperature.is_some() => Some("temperature".to_string()),
            Some("alignment.params.top_p") if top_p.is_some() => Some("top_p".to_string()),
            _ => e.param.clone(),
        };
        return Err(ApiError { param, ..e });
    }
    let mut job = deal_driver::Request::new(prompts, n, controller, config, reward);
    job.logprobs = logprobs;
    job.echo = echo;
    job.generate = generate;
    job.grammar = grammar;
    let token_ids = f.bool("return_tokens_as_token_ids")?.unwrap_or(false);
    Ok(GenerationRequest { endpoint, stream, include_usage, token_ids, job })
}

/// Typed getters over a JSON object; errors name the field.
struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }

    fn str(&self, key: &str) -> Result<Option<&str>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(ApiError::invalid(key, format!("`{key}` must be a string"))),
        }
    }

    fn bool(&self, key: &str) -> Result<Option<bool>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(ApiError::invalid(key, format!("`{key}` must be true or false"))),
        }
    }

    fn num(&self, key: &str) -> Result<Option<f64>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .filter(|x| x.is_finite())
                .map(Some)
                .ok_or_else(|| ApiError::invalid(key, format!("`{key}` must be a number"))),
        }
    }

    fn uint(&self, key: &str) -> Result<Option<u64>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .or_else(|| v.as_f64().filter(|x| x.fract() == 0.0 && *x >= 0.0 && *x < 1e15).map(|x| x as u64))
                .map(Some)
                .ok_or_else(|| ApiError::invalid(key, format!("`{key}` must be a non-negative integer"))),
        }
    }

    fn stop(&self) -> Result<Vec<String>, ApiError> {
        let list = match self.get("stop") {
            None => return Ok(Vec::new()),
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| ApiError::invalid("stop", "`stop` must be a string or a list of strings"))?,
            Some(_) => return Err(ApiError::invalid("stop", "`stop` must be a string or a list of strings")),
        };
        if list.len() > MAX_STOP {
            return Err(ApiError::invalid("stop", format!("at most {MAX_STOP} stop strings")));
        }
        if list.iter().any(String::is_empty) {
            return Err(ApiError::invalid("stop", "stop strings must not be empty"));
        }
        Ok(list)
    }

    /// `logprobs` / `top_logprobs` (chat) or `logprobs` / `echo` (completions): how many
    /// alternatives per position to report (`None`: no logprobs), and whether to echo the
    /// prompt with its logprobs.
    fn logprobs(&self, endpoint: Endpoint) -> Result<(Option<usize>, bool), ApiError> {
        let top = |key: &str| -> Result<Option<usize>, ApiError> {
            match self.get(key) {
                None => Ok(None),
                Some(v) => match v.as_u64() {
                    Some(n) if n <= MAX_TOP_LOGPROBS => Ok(Some(n as usize)),
                    _ => Err(ApiError::invalid(key, format!("`{key}` must be an integer between 0 and {MAX_TOP_LOGPROBS}"))),
                },
            }
        };
        match endpoint {
            Endpoint::Chat => {
                if self.get("echo").is_some() {
                    return Err(ApiError::invalid("echo", "`echo` is a field of /v1/completions, not of chat completions"));
                }
                let on = self.bool("logprobs")?.unwrap_or(false);
                let n = top("top_logprobs")?;
                if n.is_some() && !on {
                    return Err(ApiError::invalid("top_logprobs", "`top_logprobs` needs `logprobs: true`"));
                }
                Ok((on.then(|| n.unwrap_or(0)), false))
            }
            Endpoint::Completion => {
                if self.get("top_logprobs").is_some() {
                    return Err(ApiError::invalid("top_logprobs", "completions take `logprobs` (an integer), not `top_logprobs`"));
                }
                Ok((top("logprobs")?, self.bool("echo")?.unwrap_or(false)))
            }
        }
    }

    /// `response_format`: `text` (none), `json_object`, or `json_schema` with
    /// `{"name", "schema", "strict"}` (OpenAI's shapes).
    fn response_format(&self) -> Result<Option<GrammarSpec>, ApiError> {
        let o = match self.get("response_format") {
            None => return Ok(None),
            Some(Value::Object(o)) => o,
            Some(_) => return Err(ApiError::invalid("response_format", "`response_format` must be an object with a `type`")),
        };
        match o.get("type").and_then(Value::as_str) {
            Some("text") => Ok(None),
            Some("json_object") => Ok(Some(GrammarSpec::JsonObject)),
            Some("json_schema") => {
                let js = o.get("json_schema").and_then(Value::as_object).ok_or_else(|| {
                    ApiError::invalid("response_format.json_schema", "`json_schema` must be an object with a `schema`")
                })?;
                let schema = js.get("schema").filter(|s| s.is_object()).ok_or_else(|| {
                    ApiError::invalid("response_format.json_schema.schema", "`schema` must be a JSON Schema object")
                })?;
                let strict = match js.get("strict") {
                    None | Some(Value::Null) => false,
                    Some(Value::Bool(b)) => *b,
                    Some(_) => return Err(ApiError::invalid("response_format.json_schema.strict", "`strict` must be true or false")),
                };
                Ok(Some(GrammarSpec::JsonSchema { schema: schema.clone(), strict }))
            }
            other => Err(ApiError::invalid(
                "response_format.type",
                format!("`type` is {other:?}; it must be \"text\", \"json_object\" or \"json_schema\""),
            )),
        }
    }

    /// `frequency_penalty` and `presence_penalty` (each in [-2, 2]).
    fn penalty(&self, key: &str) -> Result<Option<f32>, ApiError> {
        match self.num(key)? {
            Some(x) if (-2.0..=2.0).contains(&x) => Ok(Some(x as f32)),
            Some(x) => Err(ApiError::invalid(key, format!("`{key}` is {x}; it must be in [-2, 2]"))),
            None => Ok(None),
        }
    }

    /// `logit_bias`: token id (a string key, as JSON objects have) → bias in [-100, 100]; ids
    /// must be in the vocabulary.
    fn logit_bias(&self, vocab: usize) -> Result<Option<std::collections::BTreeMap<u32, f32>>, ApiError> {
        let o = match self.get("logit_bias") {
            None => return Ok(None),
            Some(Value::Object(o)) => o,
            Some(_) => return Err(ApiError::invalid("logit_bias", "`logit_bias` must be an object of token id → bias")),
        };
        if o.len() > MAX_LOGIT_BIAS {
            return Err(ApiError::invalid("logit_bias", format!("at most {MAX_LOGIT_BIAS} entries")));
        }
        let mut out = std::collections::BTreeMap::new();
        for (k, v) in o {
            let id: u32 = k
                .parse()
                .ok()
                .filter(|&id: &u32| (id as usize) < vocab)
                .ok_or_else(|| ApiError::invalid("logit_bias", format!("`{k}` is not a token id of this model (0 to {})", vocab - 1)))?;
            let b = v
                .as_f64()
                .filter(|b| (-100.0..=100.0).contains(b))
                .ok_or_else(|| ApiError::invalid("logit_bias", format!("the bias of token {k} must be a number in [-100, 100]")))?;
            out.insert(id, b as f32);
        }
        Ok(Some(out))
    }

    /// Refuse fields whose meaning deal cannot honour (rather than silently ignoring them).
    fn refuse_unsupported(&self) -> Result<(), ApiError> {
        for key in ["tools", "functions", "tool_choice", "function_call"] {
            if self.get(key).is_some() {
                return Err(ApiError::invalid(
                    key,
                    format!(
                        "`{key}` is not supported: deal does not parse tool calls; constrain the output to your \
                         function's arguments with `response_format: {{\"type\": \"json_schema\", ...}}`"
                    ),
                ));
            }
        }
        for key in ["audio", "prediction"] {
            if self.get(key).is_some() {
                return Err(ApiError::invalid(key, format!("`{key}` is not supported")));
            }
        }
        for key in ["suffix", "best_of"] {
            let set = match self.get(key) {
                None | Some(Value::Bool(false)) => false,
                Some(Value::Number(n)) => n.as_u64() != Some(1),
                Some(Value::String(s)) => !s.is_empty(),
                Some(_) => true,
            };
            if set {
                return Err(ApiError::invalid(key, format!("`{key}` is not supported (best-of-N: alignment.controller = \"best_of_n\")")));
            }
        }
        Ok(())
    }
}

/// `messages`: a non-empty list of {role, content}; content is a string or a list of text
/// parts (`{"type": "text", "text": ...}`).
fn parse_messages(v: Option<&Value>) -> Result<Vec<Message>, ApiError> {
    let list = match v {
        Some(Value::Array(a)) if !a.is_empty() => a,
        Some(Value::Array(_)) => return Err(ApiError::invalid("messages", "`messages` must not be empty")),
        None | Some(Value::Null) => return Err(ApiError::invalid("messages", "`messages` is required")),
        Some(_) => return Err(ApiError::invalid("messages", "`messages` must be a list of {role, content} objects")),
    };
    let mut out = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        let param = format!("messages[{i}]");
        let m = m.as_object().ok_or_else(|| ApiError::invalid(&param, "each message must be an object with `role` and `content`"))?;
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::invalid(format!("{param}.role"), "`role` must be a string"))?;
        let role = Role::parse(role).ok_or_else(|| {
            ApiError::invalid(
                format!("{param}.role"),
                format!("role `{role}` is not supported (system, developer, user, assistant)"),
            )
        })?;
        let content = match m.get("content") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None if role == Role::Assistant => String::new(),
            Some(Value::Array(parts)) => {
                let mut text = String::new();
                for (j, p) in parts.iter().enumerate() {
                    let t = p
                        .as_object()
                        .filter(|o| o.get("type").and_then(Value::as_str) == Some("text"))
                        .and_then(|o| o.get("text"))
                        .and_then(Value::as_str)
                        .ok_or_else(|| {
                            ApiError::invalid(format!("{param}.content[{j}]"), "only text parts ({\"type\": \"text\", \"text\": ...}) are supported")
                        })?;
                    text.push_str(t);
                }
                text
            }
            _ => return Err(ApiError::invalid(format!("{param}.content"), "`content` must be a string or a list of text parts")),
        };
        out.push(Message::new(role, content));
    }
    Ok(out)
}

/// `prompt` as token ids: a list of integers (one prompt) or a list of such lists; `None`
/// when it is text. Ids must be in the vocabulary.
fn token_prompts(v: Option<&Value>, vocab: usize) -> Result<Option<Vec<Vec<u32>>>, ApiError> {
    let Some(Value::Array(a)) = v else { return Ok(None) };
    let ids = |list: &[Value]| -> Result<Vec<u32>, ApiError> {
        list.iter()
            .map(|x| {
                x.as_u64().filter(|&t| (t as usize) < vocab).map(|t| t as u32).ok_or_else(|| {
                    ApiError::invalid("prompt", format!("token prompts must be ids of this model's vocabulary (0 to {}), got {x}", vocab - 1))
                })
            })
            .collect()
    };
    let lists = match a.first() {
        Some(Value::Number(_)) => vec![ids(a)?],
        Some(Value::Array(_)) => a
            .iter()
            .map(|p| match p {
                Value::Array(l) if !l.is_empty() => ids(l),
                _ => Err(ApiError::invalid("prompt", "a list of token prompts must hold non-empty lists of token ids")),
            })
            .collect::<Result<_, _>>()?,
        _ => return Ok(None),
    };
    if lists.len() > MAX_PROMPTS {
        return Err(ApiError::invalid("prompt", format!("at most {MAX_PROMPTS} prompts per request")));
    }
    Ok(Some(lists))
}

/// `prompt`: a string or a non-empty list of strings.
fn parse_prompts(v: Option<&Value>) -> Result<Vec<String>, ApiError> {
    let list = match v {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) if a.is_empty() => return Err(ApiError::invalid("prompt", "`prompt` must not be empty")),
        Some(Value::Array(a)) => a
            .iter()
            .map(|p| p.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| ApiError::invalid("prompt", "`prompt` must be a string, a list of strings, or token ids"))?,
        None | Some(Value::Null) => return Err(ApiError::invalid("prompt", "`prompt` is required")),
        Some(_) => return Err(ApiError::invalid("prompt", "`prompt` must be a string or a list of strings")),
    };
    if list.len() > MAX_PROMPTS {
        return Err(ApiError::invalid("prompt", format!("at most {MAX_PROMPTS} prompts per request")));
    }
    Ok(list)
}
