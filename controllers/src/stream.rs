//! [`Stream`]: hands committed tokens to the caller as text, as soon as the text is final
//! (UTF-8 complete, not the start of a stop string), and turns a `false` from the callback
//! into [`ControlError::Cancelled`].

use deal_backend::codec::StreamDecoder;
use deal_backend::stop::StopMatcher;
use deal_backend::TextCodec;

use crate::error::{ControlError, Result};

/// The committed output of a search.
pub struct Stream<'a> {
    tokenizer: &'a dyn TextCodec,
    on_text: &'a mut dyn FnMut(&str) -> bool,
    tokens: Vec<u32>,
    decoder: StreamDecoder,
    stops: StopMatcher,
    text: String,
}

impl<'a> Stream<'a> {
    /// Decode tokens with `tokenizer`, hold text back at the `stop` strings, and hand final text to
    /// `on_text` (which returns `false` to cancel).
    pub fn new(tokenizer: &'a dyn TextCodec, stop: &[String], on_text: &'a mut dyn FnMut(&str) -> bool) -> Self {
        Self {
            tokenizer,
            on_text,
            tokens: Vec::new(),
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
    /// (controllers only commit what no later step can change).
    pub fn commit(&mut self, tokens: &[u32]) -> Result<()> {
        if !tokens.starts_with(&self.tokens) {
            return Err(ControlError::internal("a controller tried to change tokens it had already committed"));
        }
        for &id in &tokens[self.tokens.len()..] {
            self.tokens.push(id);
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
            return Ok(());
        }
        let out = self.stops.push(&self.decoder.finish());
        let mut tail = out.emit;
        if !out.stopped {
            tail.push_str(&self.stops.finish());
        }
        self.emit(&tail)
    }

    fn emit(&mut self, piece: &str) -> Result<()> {
        if piece.is_empty() {
            return Ok(());
        }
        self.text.push_str(piece);
        if (self.on_text)(piece) {
            Ok(())
        } else {
            Err(ControlError::Cancelled)
        }
    }
}
