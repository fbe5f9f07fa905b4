//! Structured outputs as hard constraints inside every search: a JSON schema (OpenAI's
//! `response_format`), any JSON object, a Lark grammar or a regex, compiled by
//! [llguidance](https://github.com/guidance-ai/llguidance) for the backend's tokenizer and
//! enforced as a token mask on every row.
//!
//! - [`GrammarCompiler`]: built once per tokenizer (a token trie of the vocabulary, the
//!   parser factory); compiles a [`GrammarSpec`] into a [`Grammar`], so that a bad schema
//!   is an error at the edge, before any search.
//! - [`Grammar`]: a compiled constraint; each search row gets its own [`RowGrammar`]
//!   (parser state), forked with the row ([`crate::batch::Batch::select`]), advanced by
//!   every pushed token and rolled back by [`crate::batch::Batch::truncate`] (DeAL's
//!   lookaheads).
//!
//! The mask is applied where every distribution enters a row, after the penalties and
//! logit bias ([`crate::logits`]): DeAL's candidates and lookahead tokens, ARGS's top-k and
//! every sample are valid continuations, and soft reward heads only rank among those. The
//! end-of-generation tokens are allowed exactly where the grammar may end.

use std::sync::Arc;

use deal_backend::{TextCodec, TokenDist};
use llguidance::api::TopLevelGrammar;
use llguidance::{Matcher, ParserFactory};
use serde_json::Value;
use toktrie::{ApproximateTokEnv, TokRxInfo, TokTrie};

/// What a request constrains its output to.
#[derive(Debug, Clone, PartialEq)]
pub enum GrammarSpec {
    /// Any JSON object (`response_format: {"type": "json_object"}`).
    JsonObject,
    /// JSON valid against this schema. With `strict` (OpenAI's strict mode), objects take no
    /// properties beyond those listed unless the schema says otherwise.
    JsonSchema {
        /// The JSON Schema.
        schema: Value,
        /// OpenAI's `strict` flag.
        strict: bool,
    },
    /// A Lark grammar (llguidance's dialect; `start` is the top rule).
    Lark(String),
    /// A regular expression the whole output must match.
    Regex(String),
}

/// A grammar that does not compile, in words for the user.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct GrammarError(pub String);

/// Compiles grammars for one tokenizer; see the module documentation.
pub struct GrammarCompiler {
    factory: ParserFactory,
    eog: Arc<Vec<u32>>,
    vocab: usize,
}

impl std::fmt::Debug for GrammarCompiler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrammarCompiler").field("vocab", &self.vocab).field("eog", &self.eog).finish()
    }
}

/// The bytes each token stands for, as llguidance's trie takes them: plain tokens their
/// text's bytes, special (control) tokens `\xFF` + their name, so no grammar text can
/// produce them.
fn token_bytes(codec: &dyn TextCodec) -> Vec<Vec<u8>> {
    (0..codec.vocab_size() as u32)
        .map(|id| {
            let mut plain = Vec::new();
            if codec.push_piece(id, false, &mut plain).is_ok() && !plain.is_empty() {
                return plain;
            }
            let mut named = vec![TokTrie::SPECIAL_TOKEN_MARKER];
            match codec.push_piece(id, true, &mut named) {
                Ok(()) if named.len() > 1 => named,
                // a token with no text at all: unreachable from any grammar
                _ => vec![TokTrie::SPECIAL_TOKEN_MARKER],
            }
        })
        .collect()
}

impl GrammarCompiler {
    /// A compiler for `codec`'s vocabulary (builds the token trie: about a second for a
    /// 262k vocabulary; build it once per backend).
    pub fn new(codec: &dyn TextCodec) -> Result<Self, GrammarError> {
        let vocab = codec.vocab_size();
        if vocab == 0 {
            return Err(GrammarError("the tokenizer has an empty vocabulary".into()));
        }
        let eog: Vec<u32> = (0..vocab as u32).filter(|&t| codec.is_eog(t)).collect();
        let Some(&eos) = eog.first() else {
            return Err(GrammarError("the tokenizer has no end-of-generation token, so no grammar can end".into()));
        };
        let words = token_bytes(codec);
        let trie = TokTrie::from(&TokRxInfo::new(vocab as u32, eos), &words).with_eos_tokens(&eog);
        let env: toktrie::TokEnv = Arc::new(ApproximateTokEnv::new(trie));
        let mut factory = ParserFactory::new_simple(&env).map_err(|e| GrammarError(format!("grammar engine: {e}")))?;
        factory.quiet();
        Ok(Self { factory, eog: Arc::new(eog), vocab })
    }

    /// Compile `spec`; the error says what is wrong with it.
    pub fn compile(&self, spec: &GrammarSpec) -> Result<Grammar, GrammarError> {
        let top = match spec {
            GrammarSpec::JsonObject => TopLevelGrammar::from_json_schema(compact(serde_json::json!({"type": "object"}))),
            GrammarSpec::JsonSchema { schema, strict } => {
                if !schema.is_object() {
                    return Err(GrammarError("a JSON schema must be an object".into()));
                }
                let mut schema = schema.clone();
                if *strict {
                    close_objects(&mut schema);
                }
                TopLevelGrammar::from_json_schema(compact(schema))
            }
            GrammarSpec::Lark(g) => TopLevelGrammar::from_lark(g.clone()),
            GrammarSpec::Regex(r) => TopLevelGrammar::from_regex(r),
        };
        let parser = self.factory.create_parser(top).map_err(|e| GrammarError(e.to_string()))?;
        let mut template = Matcher::new(Ok(parser));
        // a grammar that compiles but cannot produce anything fails on its first mask
        if let Err(e) = template.compute_mask_or_eos() {
            return Err(GrammarError(e.to_string()));
        }
        if let Some(e) = template.get_error() {
            return Err(GrammarError(e));
        }
        Ok(Grammar { template, eog: self.eog.clone(), vocab: self.vocab })
    }
}

/// JSON in one line with single spaces after `,` and `:` (llguidance's `x-guidance`
/// options), unless the schema sets its own: free whitespace lets a small model loop on
/// newlines inside an object until `max_tokens`.
fn compact(mut schema: Value) -> Value {
    if let Some(o) = schema.as_object_mut() {
        o.entry("x-guidance").or_insert_with(|| serde_json::json!({"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "}));
    }
    schema
}

/// OpenAI's strict mode: an object schema that does not say `additionalProperties` takes
/// none beyond its `properties`.
fn close_objects(v: &mut Value) {
    match v {
        Value::Object(o) => {
            let is_object = o.get("type").is_some_and(|t| t == "object" || t.as_array().is_some_and(|a| a.iter().any(|x| x == "object")));
            if is_object && o.contains_key("properties") && !o.contains_key("additionalProperties") {
                o.insert("additionalProperties".into(), Value::Bool(false));
            }
            for (_, child) in o.iter_mut() {
                close_objects(child);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(close_objects),
        _ => {}
    }
}

/// A compiled grammar; see the module documentation.
#[derive(Clone)]
pub struct Grammar {
    template: Matcher,
    eog: Arc<Vec<u32>>,
    vocab: usize,
}

impl std::fmt::Debug for Grammar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grammar").field("vocab", &self.vocab).finish_non_exhaustive()
    }
}

impl Grammar {
    /// Parser state for a new row (nothing generated yet).
    pub fn start(&self) -> RowGrammar {
        RowGrammar { matcher: self.template.clone(), eog: self.eog.clone(), vocab: self.vocab }
    }

    /// Whether `tokens` (a whole response, an end-of-generation token excluded) is a
    /// complete match of the grammar.
    pub fn accepts(&self, tokens: &[u32]) -> bool {
        let mut r = self.start();
        tokens.iter().all(|&t| r.consume(t).is_ok()) && r.matcher.is_accepting().unwrap_or(false)
    }
}

/// One row's parser state.
#[derive(Clone)]
pub struct RowGrammar {
    matcher: Matcher,
    eog: Arc<Vec<u32>>,
    vocab: usize,
}

impl std::fmt::Debug for RowGrammar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowGrammar").field("error", &self.matcher.get_error()).finish_non_exhaustive()
    }
}

impl RowGrammar {
    /// Advance by a generated token (end-of-generation tokens end the row and are not fed).
    pub fn consume(&mut self, token: u32) -> Result<(), GrammarError> {
        if self.eog.contains(&token) {
            return Ok(());
        }
        self.matcher.consume_token(token).map_err(|e| GrammarError(e.to_string()))
    }

    /// Undo the last `n` consumed tokens.
    pub fn rollback(&mut self, n: usize) -> Result<(), GrammarError> {
        self.matcher.rollback(n).map_err(|e| GrammarError(e.to_string()))
    }

    /// `dist` with every token the grammar does not allow next at −∞ (end-of-generation
    /// tokens allowed where the grammar may end). A parser in an error state allows only
    /// ending.
    pub fn mask(&mut self, dist: &TokenDist) -> TokenDist {
        let allowed = self.matcher.compute_mask_or_eos().ok();
        let ok = |t: usize| allowed.as_ref().map_or_else(|| self.eog.contains(&(t as u32)), |m| t < self.vocab && m.get(t));
        let processed = match dist.listed() {
            Some(listed) => TokenDist::top_n(listed.iter().copied().filter(|&(t, _)| ok(t as usize)).collect()),
            None => {
                let mut logits = dist.logits().unwrap_or_default().to_vec();
                match &allowed {
                    Some(m) => apply_mask(&mut logits, m.as_slice(), self.vocab),
                    None => {
                        for (t, l) in logits.iter_mut().enumerate() {
                            if !self.eog.contains(&(t as u32)) {
                                *l = f32::NEG_INFINITY;
                            }
                        }
                    }
                }
                TokenDist::from_logits(logits)
            }
        };
        TokenDist::processed(processed, dist)
    }
}

/// Set every logit whose bit in `words` (32 tokens per word) is clear to −∞, and every
/// logit past the vocabulary (padding of the output layer).
fn apply_mask(logits: &mut [f32], words: &[u32], vocab: usize) {
    for (w, chunk) in logits.chunks_mut(32).enumerate() {
        let bits = words.get(w).copied().unwrap_or(0);
        if bits == u32::MAX && (w + 1) * 32 <= vocab {
            continue;
        }
        for (i, l) in chunk.iter_mut().enumerate() {
            let t = w * 32 + i;
            if t >= vocab || bits & (1 << i) == 0 {
                *l = f32::NEG_INFINITY;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_clear_bits_and_padding() {
        let mut l = vec![1.0f32; 70];
        let words = [0b101u32, u32::MAX, 0b1];
        apply_mask(&mut l, &words, 65);
        assert_eq!(l[0], 1.0);
        assert_eq!(l[1], f32::NEG_INFINITY);
        assert_eq!(l[2], 1.0);
        assert!(l[32..64].iter().all(|&x| x == 1.0));
        assert_eq!(l[64], 1.0);
        assert!(l[65..].iter().all(|&x| x == f32::NEG_INFINITY));
    }

    #[test]
    fn strict_mode_closes_objects_that_list_properties() {
        let mut s = serde_json::json!({"type": "object", "properties": {"a": {"type": "object", "properties": {}}, "b": {"type": "string"}},
            "$defs": {"x": {"type": "object", "properties": {"y": {"type": "integer"}}, "additionalProperties": true}}});
        close_objects(&mut s);
        assert_eq!(s["additionalProperties"], false);
        assert_eq!(s["properties"]["a"]["additionalProperties"], false);
        assert!(s["properties"]["b"].get("additionalProperties").is_none());
        assert_eq!(s["$defs"]["x"]["additionalProperties"], true);
    }
}
