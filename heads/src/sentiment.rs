//! `sentiment`: VADER compound polarity of the response (Hutto & Gilbert 2014).
//!
//! A line-by-line port of the reference implementation, `vaderSentiment` 3.3.2 (MIT), with
//! its lexicons vendored in `assets/vader/` (word and mean valence columns only). The
//! `vader_sentiment` crate was evaluated and not used: it matches booster words by substring
//! ("everything" contains "very"), drops one-character tokens and lacks 3.3.2's "no" and
//! special-case rules, so its scores drift from the reference. Unlike the reference, the
//! compound score is not rounded to 4 decimals (search wants the resolution).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use serde::Deserialize;

use super::{Candidate, Details, HeadContext, ParamInfo, RewardHead, Scale};
use crate::Result;

const LEXICON: &str = include_str!("../assets/vader/vader_lexicon.txt");
const EMOJI_LEXICON: &str = include_str!("../assets/vader/emoji_utf8_lexicon.txt");

const B_INCR: f64 = 0.293;
const B_DECR: f64 = -0.293;
const C_INCR: f64 = 0.733;
const N_SCALAR: f64 = -0.74;

const NEGATE: &[&str] = &[
    "aint", "arent", "cannot", "cant", "couldnt", "darent", "didnt", "doesnt", "ain't", "aren't", "can't", "couldn't",
    "daren't", "didn't", "doesn't", "dont", "hadnt", "hasnt", "havent", "isnt", "mightnt", "mustnt", "neither", "don't",
    "hadn't", "hasn't", "haven't", "isn't", "mightn't", "mustn't", "neednt", "needn't", "never", "none", "nope", "nor",
    "not", "nothing", "nowhere", "oughtnt", "shant", "shouldnt", "uhuh", "wasnt", "werent", "oughtn't", "shan't",
    "shouldn't", "uh-uh", "wasn't", "weren't", "without", "wont", "wouldnt", "won't", "wouldn't", "rarely", "seldom",
    "despite",
];

const BOOST_UP: &[&str] = &[
    "absolutely", "amazingly", "awfully", "completely", "considerable", "considerably", "decidedly", "deeply", "effing",
    "enormous", "enormously", "entirely", "especially", "exceptional", "exceptionally", "extreme", "extremely",
    "fabulously", "flipping", "flippin", "frackin", "fracking", "fricking", "frickin", "frigging", "friggin", "fully",
    "fuckin", "fucking", "fuggin", "fugging", "greatly", "hella", "highly", "hugely", "incredible", "incredibly",
    "intensely", "major", "majorly", "more", "most", "particularly", "purely", "quite", "really", "remarkably", "so",
    "substantially", "thoroughly", "total", "totally", "tremendous", "tremendously", "uber", "unbelievably", "unusually",
    "utter", "utterly", "very",
];

const BOOST_DOWN: &[&str] = &[
    "almost", "barely", "hardly", "just enough", "kind of", "kinda", "kindof", "kind-of", "less", "little", "marginal",
    "marginally", "occasional", "occasionally", "partly", "scarce", "scarcely", "slight", "slightly", "somewhat",
    "sort of", "sorta", "sortof", "sort-of",
];

const SPECIAL_CASES: &[(&str, f64)] = &[
    ("the shit", 3.0),
    ("the bomb", 3.0),
    ("bad ass", 1.5),
    ("badass", 1.5),
    ("bus stop", 0.0),
    ("yeah right", -2.0),
    ("kiss of death", -1.5),
    ("to die for", 3.0),
    ("beating heart", 3.5),
];

/// VADER's tables, parsed once.
pub struct Vader {
    lexicon: HashMap<&'static str, f64>,
    emojis: HashMap<char, &'static str>,
    booster: HashMap<&'static str, f64>,
    negate: HashSet<&'static str>,
    special: HashMap<&'static str, f64>,
}

/// VADER polarity of one text.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Polarity {
    /// Normalised sum of the word valences, in [-1, 1] (the head's raw score).
    pub compound: f64,
    /// Share of the text that is positive, in [0, 1].
    pub pos: f64,
    /// Share of the text that is neutral, in [0, 1].
    pub neu: f64,
    /// Share of the text that is negative, in [0, 1].
    pub neg: f64,
}

/// Python's `str.isupper()`: some cased character and no lower-case one.
fn is_upper(s: &str) -> bool {
    s.chars().any(char::is_uppercase) && !s.chars().any(char::is_lowercase)
}

impl Vader {
    /// The shared analyzer.
    pub fn get() -> &'static Vader {
        static V: OnceLock<Vader> = OnceLock::new();
        V.get_or_init(Vader::new)
    }

    fn new() -> Self {
        let lexicon = LEXICON
            .lines()
            .filter_map(|l| {
                let mut f = l.trim().split('\t');
                Some((f.next()?, f.next()?.parse().ok()?))
            })
            .collect();
        let emojis = EMOJI_LEXICON
            .lines()
            .filter_map(|l| {
                let (e, d) = l.trim().split_once('\t')?;
                let mut cs = e.chars();
                // the reference compares single characters, so multi-codepoint entries never match
                match (cs.next(), cs.next()) {
                    (Some(c), None) => Some((c, d.split('\t').next().unwrap_or(d))),
                    _ => None,
                }
            })
            .collect();
        let booster =
            BOOST_UP.iter().map(|w| (*w, B_INCR)).chain(BOOST_DOWN.iter().map(|w| (*w, B_DECR))).collect();
        Self {
            lexicon,
            emojis,
            booster,
            negate: NEGATE.iter().copied().collect(),
            special: SPECIAL_CASES.iter().copied().collect(),
        }
    }

    fn negated(&self, word: &str) -> bool {
        self.negate.contains(word) || word.contains("n't")
    }

    fn scalar_inc_dec(&self, word: &str, lower: &str, valence: f64, cap_diff: bool) -> f64 {
        let Some(&b) = self.booster.get(lower) else { return 0.0 };
        let mut scalar = if valence < 0.0 { -b } else { b };
        if is_upper(word) && cap_diff {
            scalar += if valence > 0.0 { C_INCR } else { -C_INCR };
        }
        scalar
    }

    /// Polarity scores of `text`, as `SentimentIntensityAnalyzer.polarity_scores`.
    pub fn polarity(&self, text: &str) -> Polarity {
        // emojis → their descriptions
        let mut t = String::with_capacity(text.len());
        let mut prev_space = true;
        for ch in text.chars() {
            if let Some(d) = self.emojis.get(&ch) {
                if !prev_space {
                    t.push(' ');
                }
                t.push_str(d);
                prev_space = false;
            } else {
                t.push(ch);
                prev_space = ch == ' ';
            }
        }
        let text = t.trim();
        let words: Vec<&str> = text
            .split_whitespace()
            .map(|w| {
                let s = w.trim_matches(|c: char| c.is_ascii_punctuation());
                if s.chars().count() <= 2 {
                    w
                } else {
                    s
                }
            })
            .collect();
        let lower: Vec<String> = words.iter().map(|w| w.to_lowercase()).collect();
        let n_upper = words.iter().filter(|w| is_upper(w)).count();
        let cap_diff = n_upper > 0 && n_upper < words.len();

        let mut sentiments = Vec::with_capacity(words.len());
        for i in 0..words.len() {
            let lw = lower[i].as_str();
            if self.booster.contains_key(lw) || (lw == "kind" && lower.get(i + 1).is_some_and(|n| n == "of")) {
                sentiments.push(0.0);
                continue;
            }
            sentiments.push(self.valence(&words, &lower, i, cap_diff));
        }
        // contrastive "but" (reproducing the reference's first-equal-value indexing)
        if let Some(bi) = lower.iter().position(|w| w == "but") {
            for k in 0..sentiments.len() {
                let v = sentiments[k];
                let si = sentiments.iter().position(|&x| x == v).unwrap_or(k);
                if si < bi {
                    sentiments[si] = v * 0.5;
                } else if si > bi {
                    sentiments[si] = v * 1.5;
                }
            }
        }
        self.score(&sentiments, text)
    }

    fn valence(&self, words: &[&str], lower: &[String], i: usize, cap_diff: bool) -> f64 {
        let lw = lower[i].as_str();
        let Some(&base) = self.lexicon.get(lw) else { return 0.0 };
        let mut valence = base;
        let in_lex = |k: usize| self.lexicon.contains_key(lower[k].as_str());
        if lw == "no" && i + 1 < words.len() && in_lex(i + 1) {
            valence = 0.0;
        }
        if (i > 0 && lower[i - 1] == "no")
            || (i > 1 && lower[i - 2] == "no")
            || (i > 2 && lower[i - 3] == "no" && (lower[i - 1] == "or" || lower[i - 1] == "nor"))
        {
            valence = base * N_SCALAR;
        }
        if is_upper(words[i]) && cap_diff {
            valence += if valence > 0.0 { C_INCR } else { -C_INCR };
        }
        for start_i in 0..3 {
            if i > start_i && !in_lex(i - (start_i + 1)) {
                let k = i - (start_i + 1);
                let mut s = self.scalar_inc_dec(words[k], &lower[k], valence, cap_diff);
                if start_i == 1 && s != 0.0 {
                    s *= 0.95;
                }
                if start_i == 2 && s != 0.0 {
                    s *= 0.9;
                }
                valence += s;
                valence = self.negation_check(valence, lower, start_i, i);
                if start_i == 2 {
                    valence = self.special_idioms_check(valence, lower, i);
                }
            }
        }
        // "least"
        if i > 1 && !in_lex(i - 1) && lower[i - 1] == "least" {
            if lower[i - 2] != "at" && lower[i - 2] != "very" {
                valence *= N_SCALAR;
            }
        } else if i > 0 && !in_lex(i - 1) && lower[i - 1] == "least" {
            valence *= N_SCALAR;
        }
        valence
    }

    fn negation_check(&self, valence: f64, w: &[String], start_i: usize, i: usize) -> f64 {
        let is = |k: usize, s: &str| w[k] == s;
        match start_i {
            0 if self.negated(&w[i - 1]) => valence * N_SCALAR,
            1 => {
                if is(i - 2, "never") && (is(i - 1, "so") || is(i - 1, "this")) {
                    valence * 1.25
                } else if is(i - 2, "without") && is(i - 1, "doubt") {
                    valence
                } else if self.negated(&w[i - 2]) {
                    valence * N_SCALAR
                } else {
                    valence
                }
            }
            2 => {
                // the reference's operator precedence: (never and (so or this)) or (so or this)
                if (is(i - 3, "never") && (is(i - 2, "so") || is(i - 2, "this"))) || (is(i - 1, "so") || is(i - 1, "this")) {
                    valence * 1.25
                } else if is(i - 3, "without") && (is(i - 2, "doubt") || is(i - 1, "doubt")) {
                    valence
                } else if self.negated(&w[i - 3]) {
                    valence * N_SCALAR
                } else {
                    valence
                }
            }
            _ => valence,
        }
    }

    fn special_idioms_check(&self, mut valence: f64, w: &[String], i: usize) -> f64 {
        let onezero = format!("{} {}", w[i - 1], w[i]);
        let twoonezero = format!("{} {} {}", w[i - 2], w[i - 1], w[i]);
        let twoone = format!("{} {}", w[i - 2], w[i - 1]);
        let threetwoone = format!("{} {} {}", w[i - 3], w[i - 2], w[i - 1]);
        let threetwo = format!("{} {}", w[i - 3], w[i - 2]);
        for seq in [&onezero, &twoonezero, &twoone, &threetwoone, &threetwo] {
            if let Some(&v) = self.special.get(seq.as_str()) {
                valence = v;
                break;
            }
        }
        if w.len() - 1 > i {
            if let Some(&v) = self.special.get(format!("{} {}", w[i], w[i + 1]).as_str()) {
                valence = v;
            }
        }
        if w.len() - 1 > i + 1 {
            if let Some(&v) = self.special.get(format!("{} {} {}", w[i], w[i + 1], w[i + 2]).as_str()) {
                valence = v;
            }
        }
        for g in [&threetwoone, &threetwo, &twoone] {
            if let Some(&b) = self.booster.get(g.as_str()) {
                valence += b;
            }
        }
        valence
    }

    fn score(&self, sentiments: &[f64], text: &str) -> Polarity {
        if sentiments.is_empty() {
            return Polarity { compound: 0.0, pos: 0.0, neu: 0.0, neg: 0.0 };
        }
        let ep = text.matches('!').count().min(4) as f64 * 0.292;
        let qm_count = text.matches('?').count();
        let qm = match qm_count {
            0 | 1 => 0.0,
            2 | 3 => qm_count as f64 * 0.18,
            _ => 0.96,
        };
        let amp = ep + qm;
        let mut sum: f64 = sentiments.iter().sum();
        if sum > 0.0 {
            sum += amp;
        } else if sum < 0.0 {
            sum -= amp;
        }
        let compound = (sum / (sum * sum + 15.0).sqrt()).clamp(-1.0, 1.0);
        let (mut pos_sum, mut neg_sum, mut neu) = (0.0, 0.0, 0.0);
        for &s in sentiments {
            if s > 0.0 {
                pos_sum += s + 1.0;
            }
            if s < 0.0 {
                neg_sum += s - 1.0;
            }
            if s == 0.0 {
                neu += 1.0;
            }
        }
        if pos_sum > f64::abs(neg_sum) {
            pos_sum += amp;
        } else if pos_sum < f64::abs(neg_sum) {
            neg_sum -= amp;
        }
        let total = pos_sum + f64::abs(neg_sum) + neu;
        Polarity { compound, pos: (pos_sum / total).abs(), neu: (neu / total).abs(), neg: (neg_sum / total).abs() }
    }
}

/// Params of the [`Sentiment`] head.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Which text is scored (default [`Scope::Response`]).
    #[serde(default)]
    pub scope: Scope,
}

/// Which text is scored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// The response alone.
    #[default]
    Response,
    /// Prompt and response together (a continuation of a review, a story...).
    PromptAndResponse,
}

/// See the module documentation.
pub struct Sentiment {
    scope: Scope,
}

impl RewardHead for Sentiment {
    const NAME: &'static str = "sentiment";
    const DESCRIPTION: &'static str = "VADER compound sentiment in [-1, 1]; higher = more positive";
    const PARAMS: &'static [ParamInfo] = &[ParamInfo {
        name: "scope",
        ty: "\"response\"|\"prompt_and_response\"",
        default: "response",
        doc: "which text is scored",
    }];
    const EXAMPLE: &'static str = r#"{"scope": "response"}"#;
    type Params = Params;

    fn build(p: Params, _ctx: &Arc<HeadContext>) -> Result<Self> {
        Vader::get();
        Ok(Self { scope: p.scope })
    }

    fn scale(&self) -> Scale {
        Scale::Range { lo: -1.0, hi: 1.0 }
    }

    fn score(&self, cands: &[Candidate]) -> Result<Vec<f32>> {
        Ok(self.score_with_details(cands)?.into_iter().map(|(s, _)| s).collect())
    }

    fn score_with_details(&self, cands: &[Candidate]) -> Result<Vec<(f32, Details)>> {
        let v = Vader::get();
        Ok(cands
            .iter()
            .map(|c| {
                let p = match self.scope {
                    Scope::Response => v.polarity(&c.response),
                    Scope::PromptAndResponse => v.polarity(&format!("{}{}", c.prompt, c.response)),
                };
                (p.compound as f32, vec![("pos", p.pos as f32), ("neu", p.neu as f32), ("neg", p.neg as f32)])
            })
            .collect())
    }
}
