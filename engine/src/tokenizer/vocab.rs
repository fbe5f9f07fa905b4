//! A GGUF vocabulary held compactly: every piece's text in one buffer, its type, and a
//! text → id table of `u32`s.
//!
//! A 262k-piece vocabulary (Gemma 3's) takes about 7 MB this way, where a `Vec<String>` plus
//! a `HashMap<String, u32>` take over 40 MB. Duplicated texts resolve to the last id, as
//! llama.cpp's `token_to_id`.

use candle_core::quantized::gguf_file::Value;
use hashbrown::{DefaultHashBuilder, HashTable};
use std::hash::BuildHasher;

use super::{err, TokenType};
use crate::Result;

/// The pieces of a vocabulary by id, their types, and lookup by text.
#[derive(Clone)]
pub(crate) struct Vocab {
    /// Every piece's text, one after the other.
    text: String,
    /// End of piece `i` in `text` (its start is the end of piece `i - 1`).
    ends: Vec<u32>,
    types: Vec<TokenType>,
    /// Ids, found by the hash of their text.
    index: HashTable<u32>,
    hasher: DefaultHashBuilder,
}

impl Vocab {
    /// The vocabulary of `tokenizer.ggml.tokens` (`pieces`, all strings) with their types.
    pub(crate) fn new(key: &str, pieces: &[Value], types: Vec<TokenType>) -> Result<Self> {
        if pieces.len() != types.len() {
            return Err(err(format!("{} token types for {} tokens", types.len(), pieces.len())));
        }
        let mut text = String::new();
        let mut ends = Vec::with_capacity(pieces.len());
        for (i, v) in pieces.iter().enumerate() {
            match v {
                Value::String(s) => text.push_str(s),
                v => return Err(err(format!("GGUF key `{key}`[{i}] should be a string, found {v:?}"))),
            }
            let end = u32::try_from(text.len()).map_err(|_| err(format!("`{key}` holds more than 4 GB of text")))?;
            ends.push(end);
        }
        let (mut index, hasher) = (HashTable::with_capacity(pieces.len()), DefaultHashBuilder::default());
        let at = |id: u32| &text[start(&ends, id)..ends[id as usize] as usize];
        for id in 0..pieces.len() as u32 {
            let piece = at(id);
            match index.entry(hasher.hash_one(piece), |&other| at(other) == piece, |&other| hasher.hash_one(at(other))) {
                hashbrown::hash_table::Entry::Occupied(mut e) => *e.get_mut() = id,
                hashbrown::hash_table::Entry::Vacant(e) => {
                    e.insert(id);
                }
            }
        }
        Ok(Self { text, ends, types, index, hasher })
    }

    /// Number of pieces.
    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    /// The text of piece `id`.
    pub(crate) fn piece(&self, id: u32) -> Option<&str> {
        let end = *self.ends.get(id as usize)? as usize;
        Some(&self.text[start(&self.ends, id)..end])
    }

    /// The type of piece `id`.
    pub(crate) fn token_type(&self, id: u32) -> Option<TokenType> {
        self.types.get(id as usize).copied()
    }

    /// The id of the piece `text` (the last one, if several have it).
    pub(crate) fn id(&self, text: &str) -> Option<u32> {
        let hash = self.hasher.hash_one(text);
        self.index.find(hash, |&id| self.piece(id) == Some(text)).copied()
    }

    /// Every piece with its id, in id order.
    pub(crate) fn pieces(&self) -> impl Iterator<Item = (u32, &str)> {
        (0..self.len() as u32).map(|id| (id, self.piece(id).unwrap_or_default()))
    }
}

/// Start of piece `id` in the text buffer.
fn start(ends: &[u32], id: u32) -> usize {
    match id {
        0 => 0,
        id => ends[id as usize - 1] as usize,
    }
}
