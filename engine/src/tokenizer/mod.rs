//! The tokenizer, built from the GGUF's own vocabulary (no `tokenizer.json` needed).
//!
//! This module owns turning `tokenizer.ggml.*` metadata into a [`GgufTokenizer`] that gives
//! the same ids as llama.cpp, plus the pieces a runtime needs around it: BOS/EOS and
//! end-of-generation ids, lookup of control tokens by name (for chat templates), decoding
//! and [`deal_backend::TextCodec`] for it (streamed decoding: [`deal_backend::codec::StreamDecoder`]).
//!
//! Two vocabulary kinds are supported:
//!
//! - `tokenizer.ggml.model = "llama"` (SentencePiece vocab with scores; llama 1/2, mistral,
//!   gemma): llama.cpp's merge-by-score algorithm on the vocab's own table ([`spm`]).
//! - `tokenizer.ggml.model = "gpt2"` (byte-level BPE with `tokenizer.ggml.merges`; llama3,
//!   qwen2...): a [`tokenizers::Tokenizer`] with the regex pre-tokenizer chosen by
//!   `tokenizer.ggml.pre`, then ByteLevel.
//!
//! The vocabulary itself (pieces, types, text → id) is held compactly ([`vocab`]).
//!
//! Token types decide how text may reach a token. User-defined tokens (type 4: gemma's
//! `"\n\n"`, space runs, html tags) are split out of the raw text before the model runs, as
//! llama.cpp does. Control tokens (type 3: `<bos>`, `<start_of_turn>`...) are never matched in
//! text: the string `"<start_of_turn>"` tokenizes as ordinary pieces. A caller that wants one
//! inserts its id explicitly, found with [`GgufTokenizer::token_id`].
//!
//! Decoding is done here (not by the `tokenizers` decoder) from each token's bytes, exactly as
//! llama.cpp's `token_to_piece`, so byte-fallback tokens and raw user-defined tokens decode
//! correctly for both vocabulary kinds.

use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSeq;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use crate::{Error, Result};

mod spm;
mod vocab;

use spm::SpmEncoder;
use vocab::Vocab;

/// GGUF token types (`tokenizer.ggml.token_type`), as llama.cpp numbers them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenType {
    /// An ordinary vocabulary piece (types 1, and 0 "undefined").
    Normal,
    /// The unknown-token placeholder (type 2).
    Unknown,
    /// A control token such as `<bos>` or `<start_of_turn>` (type 3); never matched in text.
    Control,
    /// A user-defined token (type 4): split out of raw text before BPE, decoded verbatim.
    UserDefined,
    /// A reserved, unused slot (type 5).
    Unused,
    /// A byte-fallback token `<0xXX>` (type 6).
    Byte,
}

impl TokenType {
    fn from_gguf(v: i64) -> Self {
        match v {
            2 => Self::Unknown,
            3 => Self::Control,
            4 => Self::UserDefined,
            5 => Self::Unused,
            6 => Self::Byte,
            _ => Self::Normal, // 1, and 0 ("undefined") which llama.cpp treats alike
        }
    }
    /// Tokens that text can never produce and that decode to nothing unless asked.
    fn is_special(self) -> bool {
        matches!(self, Self::Control | Self::Unknown | Self::Unused)
    }
}

/// Which algorithm the vocabulary uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VocabKind {
    /// SentencePiece vocab (`llama`): merges by score, `▁` for space, byte fallback.
    Spm,
    /// Byte-level BPE (`gpt2`) with explicit merges.
    Bpe,
}

/// Texts that llama.cpp treats as end-of-generation wherever they appear in a vocab.
#[rustfmt::skip]
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<end_of_turn>", "<|endoftext|>",
    "<|eom_id|>", "<EOT>", "_<EOT>", "<|end_of_text|>", "<end_of_utterance>",
];

/// Pre-tokenizer regexes from llama.cpp (`llama-vocab.cpp`), by `tokenizer.ggml.pre`.
const RE_LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const RE_QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const RE_GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// Text to ids for one vocabulary kind.
#[derive(Clone)]
enum Encoder {
    Spm(SpmEncoder),
    Bpe(Box<Tokenizer>),
}

/// A tokenizer built from GGUF metadata, with the model's special ids.
#[derive(Clone)]
pub struct GgufTokenizer {
    encoder: Encoder,
    kind: VocabKind,
    vocab: Vocab,
    bos: Option<u32>,
    eos: Option<u32>,
    pad: Option<u32>,
    /// Every end-of-generation id (eos, eot, eom, `<end_of_turn>`...), sorted.
    eog: Vec<u32>,
    add_bos: bool,
    add_space_prefix: bool,
    /// Control tokens (`<start_of_turn>`, `<|im_start|>`...) by text, longest first: what
    /// [`GgufTokenizer::encode_with_control`] recognises in trusted text such as a rendered
    /// chat template.
    controls: Vec<(String, u32)>,
}

impl std::fmt::Debug for GgufTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufTokenizer")
            .field("kind", &self.kind)
            .field("vocab_size", &self.vocab.len())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("eog", &self.eog)
            .field("add_bos", &self.add_bos)
            .field("add_space_prefix", &self.add_space_prefix)
            .finish()
    }
}

fn err(msg: impl Into<String>) -> Error {
    Error::Tokenizer(msg.into())
}

fn int(key: &str, v: &Value) -> Result<i64> {
    Ok(match v {
        Value::U8(x) => *x as i64,
        Value::I8(x) => *x as i64,
        Value::U16(x) => *x as i64,
        Value::I16(x) => *x as i64,
        Value::U32(x) => *x as i64,
        Value::I32(x) => *x as i64,
        Value::U64(x) => i64::try_from(*x).unwrap_or(i64::MAX),
        Value::I64(x) => *x,
        other => return Err(err(format!("GGUF key `{key}` should hold integers, found {other:?}"))),
    })
}

fn opt_bool(c: &Content, key: &str) -> Result<Option<bool>> {
    match c.metadata.get(key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => int(key, v).map(|x| Some(x != 0)),
    }
}

fn opt_str<'a>(c: &'a Content, key: &str) -> Result<Option<&'a str>> {
    match c.metadata.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(v) => Err(err(format!("GGUF key `{key}` should be a string, found {v:?}"))),
    }
}

fn opt_array<'a>(c: &'a Content, key: &str) -> Result<Option<&'a [Value]>> {
    match c.metadata.get(key) {
        None => Ok(None),
        Some(Value::Array(a)) => Ok(Some(a)),
        Some(v) => Err(err(format!("GGUF key `{key}` should be an array, found {v:?}"))),
    }
}

fn strings(key: &str, a: &[Value]) -> Result<Vec<String>> {
    a.iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::String(s) => Ok(s.clone()),
            v => Err(err(format!("GGUF key `{key}`[{i}] should be a string, found {v:?}"))),
        })
        .collect()
}

fn printable(b: u8) -> bool {
    matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF)
}

/// Byte-level BPE's printable stand-in for a byte (GPT-2's `bytes_to_unicode`).
fn byte_to_char(b: u8) -> char {
    if printable(b) {
        return b as char;
    }
    let rank = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + rank).unwrap_or('\0')
}

/// Inverse of [`byte_to_char`]; `None` for a char outside the 256 stand-ins.
fn char_to_byte(c: char) -> Option<u8> {
    match u32::from(c) {
        u @ 0..=255 => Some(u as u8).filter(|&b| printable(b)),
        u => (0..=255u8).filter(|&b| !printable(b)).nth(u.checked_sub(256)? as usize),
    }
}

/// Encode raw bytes as byte-level BPE text (what `gpt2` vocab entries look like).
pub fn byte_level_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| byte_to_char(b)).collect()
}

/// Whether a match of `a` and a match of `b` can overlap in some text (one contains the
/// other, or a suffix of one is a prefix of the other).
fn can_overlap(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.is_empty() || b.is_empty() || !(a.contains(&b[0]) || b.contains(&a[0])) {
        return false;
    }
    let contains = |h: &[u8], n: &[u8]| h.windows(n.len()).any(|w| w == n);
    let fix = |x: &[u8], y: &[u8]| (1..x.len().min(y.len())).any(|k| x[x.len() - k..] == y[..k]);
    contains(a, b) || contains(b, a) || fix(a, b) || fix(b, a)
}

/// Byte-level BPE with the GGUF's merges and the pre-tokenizer regex named by `pre`.
fn bpe_tokenizer(c: &Content, vocab: &Vocab, pre: &str, llama3_pre: bool) -> Result<Tokenizer> {
    let raw =
        opt_array(c, "tokenizer.ggml.merges")?.ok_or_else(|| err("gpt2 vocab without `tokenizer.ggml.merges`"))?;
    let mut merges = Vec::with_capacity(raw.len());
    let mut dropped = 0usize;
    for m in strings("tokenizer.ggml.merges", raw)? {
        // As llama.cpp: split at the first space after the first byte.
        let Some(pos) = m.bytes().skip(1).position(|b| b == b' ').map(|p| p + 1) else {
            return Err(err(format!("`tokenizer.ggml.merges` entry {m:?} has no space")));
        };
        let (a, b) = (&m[..pos], &m[pos + 1..]);
        if vocab.id(a).is_some() && vocab.id(b).is_some() && vocab.id(&format!("{a}{b}")).is_some() {
            merges.push((a.to_string(), b.to_string()));
        } else {
            dropped += 1;
        }
    }
    if dropped > 0 {
        tracing::warn!("{dropped} GGUF merges refer to tokens outside the vocab; ignored");
    }
    // last occurrence wins for duplicated strings, as in the vocab's own table
    let map: tokenizers::models::bpe::Vocab = vocab.pieces().map(|(id, p)| (p.to_string(), id)).collect();
    let bpe = BPE::builder()
        .vocab_and_merges(map, merges)
        .ignore_merges(llama3_pre)
        .build()
        .map_err(|e| err(format!("building byte-level BPE: {e}")))?;
    let re = match pre {
        _ if llama3_pre => RE_LLAMA3,
        "qwen2" | "deepseek-r1-qwen" | "megrez" => RE_QWEN2,
        "default" | "gpt-2" | "gpt2" => RE_GPT2,
        other => {
            tracing::warn!("pre-tokenizer `{other}` not known to deal; using GPT-2's regex");
            RE_GPT2
        }
    };
    let split = Split::new(SplitPattern::Regex(re.into()), SplitDelimiterBehavior::Isolated, false)
        .map_err(|e| err(format!("pre-tokenizer regex: {e}")))?;
    let mut tk = Tokenizer::new(bpe);
    tk.with_pre_tokenizer(Some(PreSeq::new(vec![split.into(), ByteLevel::new(false, false, false).into()])));
    tk.with_decoder(Some(ByteLevel::new(false, false, false)));
    Ok(tk)
}

/// `tokenizer.ggml.scores` as floats, one per token.
fn spm_scores(c: &Content, n: usize) -> Result<Vec<f32>> {
    let scores = opt_array(c, "tokenizer.ggml.scores")?
        .ok_or_else(|| err("SentencePiece vocab without `tokenizer.ggml.scores`"))?;
    if scores.len() != n {
        return Err(err(format!("`tokenizer.ggml.scores` has {} entries for {n} tokens", scores.len())));
    }
    scores
        .iter()
        .map(|v| match v {
            Value::F32(x) => Ok(*x),
            Value::F64(x) => Ok(*x as f32),
            v => Err(err(format!("`tokenizer.ggml.scores` should hold floats, found {v:?}"))),
        })
        .collect()
}

/// [`bpe_tokenizer`] with the vocab's user-defined tokens matched in raw text (before the
/// pre-tokenizer), as llama.cpp does; control tokens are registered as special (so
/// `inner().decode(.., true)` skips them) but never matched (`encode_special_tokens`). A
/// control token whose text could overlap a user-defined one would shadow it in the shared
/// matcher, so such a token is left out.
fn bpe_tokenizer_with_added(c: &Content, vocab: &Vocab, pre: &str, llama3_pre: bool) -> Result<Tokenizer> {
    let mut inner = bpe_tokenizer(c, vocab, pre, llama3_pre)?;
    let of_type = |keep: fn(TokenType) -> bool| -> Vec<&str> {
        vocab.pieces().filter(|&(id, p)| vocab.token_type(id).is_some_and(keep) && !p.is_empty()).map(|(_, p)| p).collect()
    };
    let user = of_type(|t| t == TokenType::UserDefined);
    let special: Vec<AddedToken> = of_type(TokenType::is_special)
        .into_iter()
        .filter(|s| !user.iter().any(|u| can_overlap(u, s)))
        .map(|s| AddedToken::from(s.to_string(), true).normalized(false))
        .collect();
    inner.add_special_tokens(&special);
    let user: Vec<AddedToken> = user.iter().map(|u| AddedToken::from(u.to_string(), false).normalized(false)).collect();
    inner.add_tokens(&user);
    inner.set_encode_special_tokens(true);
    Ok(inner)
}

impl GgufTokenizer {
    /// Build the tokenizer from a GGUF header. Errors name the missing or malformed key.
    pub fn from_gguf(c: &Content) -> Result<Self> {
        let model = opt_str(c, "tokenizer.ggml.model")?
            .ok_or_else(|| err("GGUF has no `tokenizer.ggml.model`: it carries no tokenizer"))?;
        let kind = match model {
            "llama" => VocabKind::Spm,
            "gpt2" => VocabKind::Bpe,
            other => return Err(err(format!("tokenizer model `{other}` is not supported (supported: llama, gpt2)"))),
        };
        let tokens =
            opt_array(c, "tokenizer.ggml.tokens")?.ok_or_else(|| err("GGUF has no `tokenizer.ggml.tokens`"))?;
        let n = tokens.len();
        if n == 0 || n > u32::MAX as usize {
            return Err(err(format!("`tokenizer.ggml.tokens` has an unusable size {n}")));
        }
        let types: Vec<TokenType> = match opt_array(c, "tokenizer.ggml.token_type")? {
            None => vec![TokenType::Normal; n],
            Some(a) if a.len() == n => a
                .iter()
                .map(|v| int("tokenizer.ggml.token_type", v).map(TokenType::from_gguf))
                .collect::<Result<_>>()?,
            Some(a) => return Err(err(format!("`tokenizer.ggml.token_type` has {} entries for {n} tokens", a.len()))),
        };
        let id_key = |key: &str| -> Result<Option<u32>> {
            let Some(v) = c.metadata.get(key) else { return Ok(None) };
            let id = int(key, v)?;
            if (0..n as i64).contains(&id) {
                return Ok(Some(id as u32));
            }
            tracing::warn!("GGUF `{key}` = {id} is outside the vocab ({n} tokens); ignored");
            Ok(None)
        };
        let (bos, eos) = (id_key("tokenizer.ggml.bos_token_id")?, id_key("tokenizer.ggml.eos_token_id")?);
        let pad = id_key("tokenizer.ggml.padding_token_id")?;
        let unk = id_key("tokenizer.ggml.unknown_token_id")?
            .or_else(|| types.iter().position(|t| *t == TokenType::Unknown).map(|i| i as u32));
        let pre = opt_str(c, "tokenizer.ggml.pre")?.unwrap_or("default");
        let llama3_pre = matches!(pre, "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "pixtral");
        let add_bos = opt_bool(c, "tokenizer.ggml.add_bos_token")?.unwrap_or(kind == VocabKind::Spm || llama3_pre);
        let add_space_prefix =
            kind == VocabKind::Spm && opt_bool(c, "tokenizer.ggml.add_space_prefix")?.unwrap_or(true);

        // Last occurrence wins for duplicated strings, as in llama.cpp's `token_to_id`.
        let vocab = Vocab::new("tokenizer.ggml.tokens", tokens, types)?;
        let mut eog: Vec<u32> = [eos, id_key("tokenizer.ggml.eot_token_id")?, id_key("tokenizer.ggml.eom_token_id")?]
            .into_iter()
            .flatten()
            .chain(EOG_TEXTS.iter().filter_map(|t| vocab.id(t)))
            .collect();
        eog.sort_unstable();
        eog.dedup();

        let encoder = match kind {
            VocabKind::Spm => Encoder::Spm(SpmEncoder::new(&vocab, spm_scores(c, n)?, unk, add_space_prefix)?),
            VocabKind::Bpe => Encoder::Bpe(Box::new(bpe_tokenizer_with_added(c, &vocab, pre, llama3_pre)?)),
        };
        let mut controls: Vec<(String, u32)> = vocab
            .pieces()
            .filter(|&(id, p)| vocab.token_type(id) == Some(TokenType::Control) && !p.is_empty())
            .map(|(id, p)| (p.to_string(), id))
            .collect();
        controls.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        Ok(Self { encoder, kind, vocab, bos, eos, pad, eog, add_bos, add_space_prefix, controls })
    }

    /// Token ids for `text`. A BOS is prepended only if `add_bos` is asked for, the model
    /// wants one (`tokenizer.ggml.add_bos_token`) and has one. Control-token text is plain text.
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        if add_bos && self.add_bos {
            ids.extend(self.bos);
        }
        match &self.encoder {
            Encoder::Spm(spm) => spm.encode(&self.vocab, text, &mut ids)?,
            Encoder::Bpe(bpe) => {
                let enc = bpe.encode_fast(text, false).map_err(|e| err(format!("encoding: {e}")))?;
                ids.extend_from_slice(enc.get_ids());
            }
        }
        Ok(ids)
    }

    /// Like [`GgufTokenizer::encode`], but control-token text (`<start_of_turn>`, `<bos>`...)
    /// becomes the control token. Only for trusted text such as a rendered chat template;
    /// user text goes through [`GgufTokenizer::encode`] so it can never forge a turn. A BOS is
    /// added (when asked and wanted) only if the text does not already start with one.
    pub fn encode_with_control(&self, text: &str, add_bos: bool) -> Result<Vec<u32>> {
        self.encode_segments(&[(text, true)], add_bos)
    }

    /// Tokenize text made of segments; control tokens are recognised only in segments marked
    /// trusted (`true`). Plain text across segment boundaries is tokenized as one run, so a
    /// user message inside a template tokenizes as it would in one string.
    pub fn encode_segments(&self, segments: &[(&str, bool)], add_bos: bool) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        let mut plain = String::new();
        for &(text, trusted) in segments {
            if !trusted {
                plain.push_str(text);
                continue;
            }
            let mut i = 0;
            while i < text.len() {
                let rest = &text[i..];
                match self.control_at(rest) {
                    Some((len, id)) => {
                        if !plain.is_empty() {
                            ids.extend(self.encode(&plain, false)?);
                            plain.clear();
                        }
                        ids.push(id);
                        i += len;
                    }
                    None => {
                        let c = rest.chars().next().unwrap_or(' ');
                        plain.push(c);
                        i += c.len_utf8();
                    }
                }
            }
        }
        if !plain.is_empty() {
            ids.extend(self.encode(&plain, false)?);
        }
        if add_bos && self.add_bos() && ids.first() != self.bos.as_ref() {
            ids.insert(0, self.bos.unwrap_or_default());
        }
        Ok(ids)
    }

    /// The control token `text` starts with, as (byte length, id).
    fn control_at(&self, text: &str) -> Option<(usize, u32)> {
        if !(text.starts_with('<') || text.starts_with('[')) {
            return None;
        }
        self.controls.iter().find(|(t, _)| text.starts_with(t.as_str())).map(|(t, id)| (t.len(), *id))
    }

    /// Text of `ids`. With `skip_special`, control/unknown/unused tokens (BOS, `<end_of_turn>`...)
    /// produce nothing; otherwise their names are written out. Invalid UTF-8 becomes U+FFFD.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        let mut bytes = Vec::new();
        for &id in ids {
            let start = bytes.len();
            self.push_piece_bytes(id, !skip_special, &mut bytes)?;
            if start == 0 && self.add_space_prefix && bytes.first() == Some(&b' ') {
                bytes.remove(0);
            }
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// The bytes token `id` stands for (not always valid UTF-8 on its own: byte-fallback and
    /// byte-level tokens can carry part of a character). Special tokens give their name if
    /// `render_special`, else nothing.
    pub fn token_to_piece(&self, id: u32, render_special: bool) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.push_piece_bytes(id, render_special, &mut out)?;
        Ok(out)
    }

    pub(crate) fn push_piece_bytes(&self, id: u32, render_special: bool, out: &mut Vec<u8>) -> Result<()> {
        let (Some(text), Some(ty)) = (self.vocab.piece(id), self.vocab.token_type(id)) else {
            return Err(err(format!("token id {id} is out of range (vocab has {} tokens)", self.vocab.len())));
        };
        match ty {
            t if t.is_special() => {
                if render_special {
                    out.extend_from_slice(text.as_bytes());
                }
            }
            TokenType::UserDefined => out.extend_from_slice(text.as_bytes()),
            TokenType::Byte => {
                let hex = text.strip_prefix("<0x").and_then(|s| s.strip_suffix('>'));
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => out.push(b),
                    None => out.extend_from_slice(text.as_bytes()),
                }
            }
            _ => match self.kind {
                VocabKind::Spm => out.extend_from_slice(text.replace('▁', " ").as_bytes()),
                VocabKind::Bpe => {
                    let bytes: Option<Vec<u8>> = text.chars().map(char_to_byte).collect();
                    out.extend_from_slice(bytes.as_deref().unwrap_or(text.as_bytes()));
                }
            },
        }
        Ok(())
    }

    /// Number of tokens in the GGUF vocab (the embedding rows).
    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }
    /// The vocabulary algorithm.
    pub fn kind(&self) -> VocabKind {
        self.kind
    }
    /// `tokenizer.ggml.bos_token_id`, if the model has one.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }
    /// `tokenizer.ggml.eos_token_id`, if the model has one.
    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }
    /// `tokenizer.ggml.padding_token_id`, if the model has one.
    pub fn pad_id(&self) -> Option<u32> {
        self.pad
    }
    /// Whether the model expects a BOS at the start of a prompt.
    pub fn add_bos(&self) -> bool {
        self.add_bos && self.bos.is_some()
    }
    /// All end-of-generation ids (eos, eot, eom and llama.cpp's known end-of-turn texts).
    pub fn eog_ids(&self) -> &[u32] {
        &self.eog
    }
    /// Whether generating `id` should end the turn.
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.binary_search(&id).is_ok()
    }
    /// The id of a token by its exact vocab text (control tokens included), e.g.
    /// `token_id("<start_of_turn>")` for a chat template.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.vocab.id(text)
    }
    /// The vocab text of `id`, as stored in the GGUF.
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.vocab.piece(id)
    }
    /// The GGUF type of `id`.
    pub fn token_type(&self, id: u32) -> Option<TokenType> {
        self.vocab.token_type(id)
    }
    /// The `tokenizers` tokenizer that encodes a byte-level BPE (`gpt2`) vocab; `None` for a
    /// SentencePiece vocab, which [`spm`] encodes. Its `decode` is close to ours but only
    /// [`GgufTokenizer::decode`] is guaranteed to match llama.cpp.
    pub fn inner(&self) -> Option<&Tokenizer> {
        match &self.encoder {
            Encoder::Bpe(t) => Some(t),
            Encoder::Spm(_) => None,
        }
    }
}


impl deal_backend::TextCodec for GgufTokenizer {
    fn encode(&self, text: &str, add_bos: bool) -> deal_backend::Result<Vec<u32>> {
        Ok(GgufTokenizer::encode(self, text, add_bos)?)
    }

    fn add_bos(&self) -> bool {
        GgufTokenizer::add_bos(self)
    }

    fn decode(&self, ids: &[u32], skip_special: bool) -> deal_backend::Result<String> {
        Ok(GgufTokenizer::decode(self, ids, skip_special)?)
    }

    fn push_piece(&self, id: u32, render_special: bool, out: &mut Vec<u8>) -> deal_backend::Result<()> {
        Ok(self.push_piece_bytes(id, render_special, out)?)
    }

    fn strips_leading_space(&self) -> bool {
        self.add_space_prefix
    }

    fn is_eog(&self, id: u32) -> bool {
        GgufTokenizer::is_eog(self, id)
    }

    fn vocab_size(&self) -> usize {
        GgufTokenizer::vocab_size(self)
    }
}
