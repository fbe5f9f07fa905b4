//! `lexicon`: penalty for terms from a word list (deal's default list of offensive English
//! terms, `assets/lexicon/offensive_en.txt`, or the request's own), word-boundary aware.
//! The raw score is the number of matches; it normalises as 1 − min(hits, cap)/cap.

use std::sync::{Arc, OnceLock};

use regex::Regex;
use serde::Deserialize;

use super::{bad_param, Candidate, Details, HeadContext, ParamInfo, RewardHead, Scale};
use crate::Result;

/// The default list, one term per line (`#` comments; trailing `*` = any ending).
pub const DEFAULT_LIST: &str = include_str!("../assets/lexicon/offensive_en.txt");

/// Params of the [`Lexicon`] head.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Terms replacing the default list [`DEFAULT_LIST`] (trailing `*` = any ending).
    pub words: Option<Vec<String>>,
    /// Terms added to the list.
    #[serde(default)]
    pub add: Vec<String>,
    /// Hits at which the normalised score reaches 0 (≥ 1, default 3).
    #[serde(default = "default_cap")]
    pub cap: u32,
}

fn default_cap() -> u32 {
    3
}

/// See the module documentation.
pub struct Lexicon {
    re: Arc<Regex>,
    cap: u32,
}

/// Terms of a list file: trimmed lines, comments and blanks dropped.
pub fn parse_list(text: &str) -> Vec<String> {
    text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from).collect()
}

/// One alternation matching all `terms` on word boundaries, case-insensitively.
pub fn compile_terms(terms: &[String]) -> std::result::Result<Regex, String> {
    let mut alts = Vec::with_capacity(terms.len());
    for t in terms {
        let t = t.trim();
        let (body, prefix) = match t.strip_suffix('*') {
            Some(b) => (b.trim(), true),
            None => (t, false),
        };
        let parts: Vec<String> = body.split_whitespace().map(regex::escape).collect();
        if parts.is_empty() {
            return Err(format!("term {t:?} is empty"));
        }
        let mut alt = parts.join(r"\s+");
        alt.push_str(if prefix { r"\w*" } else { "(?:e?s)?" });
        alts.push(alt);
    }
    if alts.is_empty() {
        return Err("the word list is empty".into());
    }
    // longest first so that a phrase wins over its first word
    alts.sort_by_key(|a| std::cmp::Reverse(a.len()));
    Regex::new(&format!(r"(?i)\b(?:{})\b", alts.join("|"))).map_err(|e| e.to_string())
}

fn default_regex() -> Result<Arc<Regex>> {
    static RE: OnceLock<std::result::Result<Arc<Regex>, String>> = OnceLock::new();
    RE.get_or_init(|| compile_terms(&parse_list(DEFAULT_LIST)).map(Arc::new))
        .clone()
        .map_err(|e| bad_param(Lexicon::NAME, format!("default list: {e}")))
}

impl Lexicon {
    /// Number of matches of the list in `text`.
    pub fn hits(&self, text: &str) -> usize {
        self.re.find_iter(text).count()
    }
}

impl RewardHead for Lexicon {
    const NAME: &'static str = "lexicon";
    const DESCRIPTION: &'static str =
        "count of listed terms (default: offensive English terms), word-boundary aware; higher normalised = cleaner";
    const PARAMS: &'static [ParamInfo] = &[
        ParamInfo { name: "words", ty: "string[]", default: "deal's offensive-terms list", doc: "terms replacing the default list (trailing * = any ending)" },
        ParamInfo { name: "add", ty: "string[]", default: "[]", doc: "terms added to the list" },
        ParamInfo { name: "cap", ty: "integer", default: "3", doc: "hits at which the normalised score reaches 0" },
    ];
    const EXAMPLE: &'static str = r#"{"words": ["darn", "heck*"], "add": ["drat"], "cap": 3}"#;
    type Params = Params;

    fn build(p: Params, _ctx: &Arc<HeadContext>) -> Result<Self> {
        if p.cap == 0 {
            return Err(bad_param(Self::NAME, "`cap` must be at least 1"));
        }
        let re = match (&p.words, p.add.is_empty()) {
            (None, true) => default_regex()?,
            _ => {
                let mut terms = match &p.words {
                    Some(w) => w.clone(),
                    None => parse_list(DEFAULT_LIST),
                };
                terms.extend(p.add.iter().cloned());
                Arc::new(compile_terms(&terms).map_err(|e| bad_param(Self::NAME, e))?)
            }
        };
        Ok(Self { re, cap: p.cap })
    }

    fn scale(&self) -> Scale {
        Scale::Range { lo: self.cap as f64, hi: 0.0 }
    }

    fn score(&self, cands: &[Candidate]) -> Result<Vec<f32>> {
        Ok(cands.iter().map(|c| self.hits(&c.response) as f32).collect())
    }

    fn score_with_details(&self, cands: &[Candidate]) -> Result<Vec<(f32, Details)>> {
        Ok(self.score(cands)?.into_iter().map(|s| (s, Vec::new())).collect())
    }
}
