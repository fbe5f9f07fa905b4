//! [`TextCodec`]: what deal needs of a tokenizer (encode, decode, the bytes of one token,
//! end-of-generation ids), and [`StreamDecoder`], which turns committed tokens into text
//! deltas that are always valid UTF-8.

use crate::Result;

/// A tokenizer, as controllers and heads use it. The local engine's GGUF tokenizer implements
/// it; a remote backend uses the same one (built from the model's GGUF vocabulary).
pub trait TextCodec: Send + Sync {
    /// Token ids of `text`, with BOS first when `add_bos`.
    fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>>;
    /// Whether prompts of this model start with BOS.
    fn add_bos(&self) -> bool;
    /// Text of `ids`; with `skip_special`, control tokens produce nothing. Invalid UTF-8
    /// becomes U+FFFD.
    fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String>;
    /// Append the bytes token `id` stands for to `out` (special tokens: their name if
    /// `render_special`, else nothing).
    fn push_piece(&self, id: u32, render_special: bool, out: &mut Vec<u8>) -> Result<()>;
    /// Whether decoding drops the space the tokenizer put before the first word.
    fn strips_leading_space(&self) -> bool;
    /// Whether `id` ends a generation (EOS, end of turn).
    fn is_eog(&self, id: u32) -> bool;
    /// Number of tokens in the vocabulary.
    fn vocab_size(&self) -> usize;
}

/// Incremental detokenizer: feed ids one at a time, get text deltas that are always valid
/// UTF-8. Bytes of a character split across tokens are held back until it is complete.
#[derive(Debug, Clone, Default)]
pub struct StreamDecoder {
    pending: Vec<u8>,
    skip_special: bool,
    started: bool,
}

impl StreamDecoder {
    /// A decoder for one generated sequence (the first piece's prefix space is stripped like
    /// [`TextCodec::decode`] does).
    pub fn new(skip_special: bool) -> Self {
        Self { pending: Vec::new(), skip_special, started: false }
    }

    /// Add one token; returns the text that became complete (possibly empty).
    pub fn push(&mut self, tok: &dyn TextCodec, id: u32) -> Result<String> {
        let start = self.pending.len();
        tok.push_piece(id, !self.skip_special, &mut self.pending)?;
        if !self.started && self.pending.len() > start {
            self.started = true;
            if tok.strips_leading_space() && self.pending.get(start) == Some(&b' ') {
                self.pending.remove(start);
            }
        }
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    break;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(&String::from_utf8_lossy(&self.pending[..valid]));
                    match e.error_len() {
                        // An incomplete character at the end: wait for the next token.
                        None => {
                            self.pending.drain(..valid);
                            break;
                        }
                        Some(bad) => {
                            out.push('\u{FFFD}');
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// End of the sequence: whatever is still held back (an unfinished character) as U+FFFD.
    pub fn finish(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        s
    }
}
