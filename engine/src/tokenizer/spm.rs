//! SentencePiece vocabularies (`tokenizer.ggml.model = "llama"`: llama 1/2, mistral, gemma)
//! encoded exactly as llama.cpp encodes them.
//!
//! llama.cpp does **not** run SentencePiece's unigram algorithm on these vocabs
//! (`llm_tokenizer_spm_session` in `llama-vocab.cpp`): it starts from single characters and
//! repeatedly merges the adjacent pair whose concatenation is a vocab piece with the highest
//! score (ties: the leftmost pair). A final piece that is not in the vocab (a character it
//! lacks) becomes its `<0xXX>` byte tokens. Before that, user-defined pieces (type 4: gemma's
//! `"\n\n"`, space runs, html tags) are split out of the raw text, leftmost-longest; each
//! stretch of text between them has its spaces turned into `▁`, and gets a leading `▁` when
//! `tokenizer.ggml.add_space_prefix` says so.
//!
//! Only normal and user-defined pieces are merge results: text never turns into a control,
//! unused or byte token, so the string `"<start_of_turn>"` stays plain text.
//!
//! This runs on the vocabulary's own lookup table. `tokenizers`' BPE model can express the
//! same algorithm only as a ranked list of every split of every piece (515k merges for
//! Gemma 3's 262k vocab), which cost 85 MB resident and 0.7 s of every load.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

use super::vocab::Vocab;
use super::{err, TokenType};
use crate::Result;

/// A SentencePiece-vocab encoder: piece scores, byte-fallback ids, and the matcher for
/// user-defined pieces.
#[derive(Clone)]
pub(crate) struct SpmEncoder {
    scores: Vec<f32>,
    /// `<0xXX>` token of each byte, where the vocab has it.
    byte_tokens: Vec<Option<u32>>,
    unk: Option<u32>,
    add_space_prefix: bool,
    /// User-defined pieces, leftmost-longest, and their ids by pattern number.
    user: Option<(AhoCorasick, Vec<u32>)>,
}

impl SpmEncoder {
    /// The encoder of `vocab` with its `scores` (one per piece).
    pub(crate) fn new(vocab: &Vocab, scores: Vec<f32>, unk: Option<u32>, add_space_prefix: bool) -> Result<Self> {
        if scores.len() != vocab.len() {
            return Err(err(format!("`tokenizer.ggml.scores` has {} entries for {} tokens", scores.len(), vocab.len())));
        }
        let byte_tokens = (0..=255u8).map(|b| vocab.id(&format!("<0x{b:02X}>"))).collect();
        let (mut patterns, mut ids) = (Vec::new(), Vec::new());
        for (id, piece) in vocab.pieces() {
            if vocab.token_type(id) == Some(TokenType::UserDefined) && !piece.is_empty() && vocab.id(piece) == Some(id) {
                patterns.push(piece);
                ids.push(id);
            }
        }
        let user = if patterns.is_empty() {
            None
        } else {
            let ac = AhoCorasickBuilder::new()
                .match_kind(MatchKind::LeftmostLongest)
                .build(&patterns)
                .map_err(|e| err(format!("user-defined tokens: {e}")))?;
            Some((ac, ids))
        };
        Ok(Self { scores, byte_tokens, unk, add_space_prefix, user })
    }

    /// Append the ids of `text` to `out`.
    pub(crate) fn encode(&self, vocab: &Vocab, text: &str, out: &mut Vec<u32>) -> Result<()> {
        // A stretch of text gets the space prefix when it starts the text or follows a
        // user-defined piece, as llama.cpp's `is_prev_special`.
        let (mut from, mut work) = (0, Work::default());
        if let Some((ac, ids)) = &self.user {
            for m in ac.find_iter(text) {
                if m.start() > from {
                    self.encode_stretch(vocab, &text[from..m.start()], &mut work, out)?;
                }
                out.push(ids[m.pattern().as_usize()]);
                from = m.end();
            }
        }
        if from < text.len() {
            self.encode_stretch(vocab, &text[from..], &mut work, out)?;
        }
        Ok(())
    }

    /// One stretch of plain text: escape, then merge by score from single characters.
    fn encode_stretch(&self, vocab: &Vocab, raw: &str, work: &mut Work, out: &mut Vec<u32>) -> Result<()> {
        let Work { text, symbols, queue } = work;
        text.clear();
        if self.add_space_prefix {
            text.push('▁');
        }
        for c in raw.chars() {
            text.push(if c == ' ' { '▁' } else { c });
        }
        symbols.clear();
        for (start, c) in text.char_indices() {
            symbols.push(Symbol { start, len: c.len_utf8(), prev: symbols.len().checked_sub(1), next: None });
        }
        let n = symbols.len();
        for (i, s) in symbols.iter_mut().enumerate() {
            s.next = (i + 1 < n).then_some(i + 1);
        }
        queue.clear();
        for i in 1..n {
            self.push_pair(vocab, text, symbols, queue, Some(i - 1), Some(i));
        }
        while let Some(pair) = queue.pop() {
            let (l, r) = (&symbols[pair.left], &symbols[pair.right]);
            // a pair whose sides changed since it was queued is stale
            if l.len == 0 || r.len == 0 || l.len + r.len != pair.len {
                continue;
            }
            let next = r.next;
            symbols[pair.left].len = pair.len;
            symbols[pair.right].len = 0;
            symbols[pair.left].next = next;
            if let Some(nx) = next {
                symbols[nx].prev = Some(pair.left);
            }
            let prev = symbols[pair.left].prev;
            self.push_pair(vocab, text, symbols, queue, prev, Some(pair.left));
            self.push_pair(vocab, text, symbols, queue, Some(pair.left), next);
        }
        let mut at = (n > 0).then_some(0);
        while let Some(i) = at {
            let s = &symbols[i];
            let piece = &text[s.start..s.start + s.len];
            match vocab.id(piece) {
                Some(id) => out.push(id),
                None => {
                    for b in piece.bytes() {
                        let id = self.byte_tokens[b as usize]
                            .or(self.unk)
                            .ok_or_else(|| err(format!("byte 0x{b:02X} has no token and the vocab no unknown token")))?;
                        out.push(id);
                    }
                }
            }
            at = s.next;
        }
        Ok(())
    }

    /// Queue the merge of symbols `left` and `right` (adjacent) if their text is a piece
    /// that text may become.
    fn push_pair(&self, vocab: &Vocab, text: &str, symbols: &[Symbol], queue: &mut BinaryHeap<Pair>, left: Option<usize>, right: Option<usize>) {
        let (Some(left), Some(right)) = (left, right) else { return };
        let (l, r) = (&symbols[left], &symbols[right]);
        let len = l.len + r.len;
        let Some(id) = vocab.id(&text[l.start..l.start + len]) else { return };
        if matches!(vocab.token_type(id), Some(TokenType::Normal | TokenType::UserDefined)) {
            queue.push(Pair { score: self.scores[id as usize], left, right, len });
        }
    }
}

/// Buffers reused across the stretches of one text.
#[derive(Default)]
struct Work {
    text: String,
    symbols: Vec<Symbol>,
    queue: BinaryHeap<Pair>,
}

/// A run of `text` that is one piece so far, linked to its neighbours; `len` 0 once merged
/// into its left neighbour.
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

/// A candidate merge: the higher score first, then the leftmost.
struct Pair {
    score: f32,
    left: usize,
    right: usize,
    /// Bytes of the merged piece (to spot stale pairs).
    len: usize,
}

impl Ord for Pair {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score.total_cmp(&other.score).then(other.left.cmp(&self.left))
    }
}

impl PartialOrd for Pair {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Pair {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Pair {}
