//! [`Stream`]: hands committed tokens to the caller as text, as soon as the text is final
//! (UTF-8 complete, not the start of a stop string), and turns a `false` from the callback
//! into [`ControlError::Cancelled`]. Each [`Piece`] of text carries the log-probabilities
//! of the tokens committed since the previous piece, when the request records them.

use deal_backend::codec::StreamDecoder;
use deal_backend::stop::StopMatcher;
use deal_backend::{TextCodec, TokenLogprob};

use crate::error::{ControlError, Result};

/// What the caller's callback gets: new final text, and the log-probabilities of the tokens
/// committed since the last piece (empty unless the request asked for logprobs).
#[derive(Debug, Clone, Copy)]
pub struct Piece<'a> {
    /// Text to append to what came before (may be empty when only logprobs are new).
    pub text: &'a str,
    /// The model's log-probabilities of the tokens this piece completes.
    pub logprobs: &'a [TokenLogprob],
}

/// The committed output of a search.
pub struct Stream<'a> {
    tokenizer: &'a dyn TextCodec,
    on_text: &'a mut dyn FnMut(Piece<'_>) -> bool,
    tokens: Vec<u32>,
    /// Log-probabilities of committed tokens not yet handed out with a piece.
    pending: Vec<TokenLogprob>,
    decoder: StreamDecoder,
    stops: StopMatcher,
    text: String,
}

impl<'a> Stream<'a> {
    /// Decode tokens with `tokenizer`, hold text back at the `stop` strings, and hand final text to
    /// `on_text` (which returns `false` to cancel).
    pub fn new(tokenizer: &'a dyn TextCodec, stop: &[String], on_text: &'a mut dyn FnMut(Piece<'_>) -> bool) -> Self {
        Self {
            tokenizer,
            on_text,
            tokens: Vec::new(),
            pending: Vec::new(),
            decoder: StreamDecoder::new(true),
            stops: StopMatcher::new(stop),
            text: String::new(),
        }
    }

    /// Tokens committed so far.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Text emitted so far.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Commit `tokens`, the whole response so far: it must extend what was committed before
    /// (controllers only commit what no later step can change). `logprobs` are the row's
    /// recorded log-probabilities, parallel to `tokens` (empty when not recorded).
    pub fn commit(&mut self, tokens: &[u32], logprobs: &[TokenLogprob]) -> Result<()> {
        if !tokens.starts_with(&self.tokens) {
            return Err(ControlError::internal("a controller tried to change tokens it had already committed"));
        }
        for (i, &id) in tokens.iter().enumerate().skip(self.tokens.len()) {
            self.tokens.push(id);
            if let Some(lp) = logprobs.get(i) {
                self.pending.push(lp.clone());
            }
            if self.stops.stopped() {
                continue;
            }
            let piece = self.decoder.push(self.tokenizer, id)?;
            let out = self.stops.push(&piece);
            self.emit(&out.emit)?;
        }
        Ok(())
    }

    /// Flush what is held back (an unfinished character, a partial stop string) at the end.
    pub fn finish(&mut self) -> Result<()> {
        if self.stops.stopped() {
            return self.emit_with("", true);
        }
        let out = self.stops.push(&self.decoder.finish());
        let mut tail = out.emit;
        if !out.stopped {
            tail.push_str(&self.stops.finish());
        }
        self.emit_with(&tail, true)
    }

    /// Flush at the end also hands out the log-probabilities of tokens whose text was never
    /// emitted (those cut by a stop string).
    fn emit(&mut self, piece: &str) -> Result<()> {
        self.emit_with(piece, false)
    }

    fn emit_with(&mut self, piece: &str, last: bool) -> Result<()> {
        if piece.is_empty() && !(last && !self.pending.is_empty()) {
            return Ok(());
        }
        self.text.push_str(piece);
        let logprobs = std::mem::take(&mut self.pending);
        if (self.on_text)(Piece { text: piece, logprobs: &logprobs }) {
            Ok(())
        } else {
            Err(ControlError::Cancelled)
        }
    }
}
