//! Text helpers the cheap heads share: word splitting and lemmatisation (an irregular-form
//! table, then the Snowball English stemmer).

use std::collections::HashMap;
use std::sync::OnceLock;

use rust_stemmers::{Algorithm, Stemmer};

/// Words of `text`: maximal runs of alphanumeric characters, with inner apostrophes kept
/// (`don't`, `dog's`). Case is preserved.
pub fn words(text: &str) -> impl Iterator<Item = &str> {
    WordIter { text, pos: 0 }
}

struct WordIter<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Iterator for WordIter<'a> {
    type Item = &'a str;
    fn next(&mut self) -> Option<&'a str> {
        let rest = &self.text[self.pos..];
        let start_rel = rest.char_indices().find(|(_, c)| c.is_alphanumeric()).map(|(i, _)| i)?;
        let start = self.pos + start_rel;
        let mut end = start;
        let mut chars = self.text[start..].char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c.is_alphanumeric() {
                end = start + i + c.len_utf8();
            } else if (c == '\'' || c == '’') && chars.peek().is_some_and(|(_, n)| n.is_alphanumeric()) {
                continue;
            } else {
                break;
            }
        }
        self.pos = end;
        Some(&self.text[start..end])
    }
}

/// Lower-cased words of `text`.
pub fn lower_words(text: &str) -> Vec<String> {
    words(text).map(|w| w.to_lowercase()).collect()
}

/// Irregular English forms → base form (verbs: past / participle; nouns: plural).
const IRREGULAR: &str = "\
ran:run be:be was:be were:be been:be is:be am:be are:be went:go gone:go goes:go did:do done:do \
does:do had:have has:have made:make said:say saw:see seen:see took:take taken:take came:come \
got:get gotten:get knew:know known:know thought:think gave:give given:give found:find told:tell \
became:become left:leave felt:feel brought:bring began:begin begun:begin kept:keep held:hold \
wrote:write written:write stood:stand heard:hear meant:mean met:meet paid:pay sat:sit spoke:speak \
spoken:speak led:lead grew:grow grown:grow lost:lose fell:fall fallen:fall sent:send built:build \
understood:understand drew:draw drawn:draw broke:break broken:break spent:spend rose:rise risen:rise \
drove:drive driven:drive bought:buy wore:wear worn:wear chose:choose chosen:choose sought:seek \
threw:throw thrown:throw caught:catch dealt:deal won:win fought:fight fed:feed forgot:forget \
forgotten:forget sold:sell taught:teach ate:eat eaten:eat slept:sleep swam:swim swum:swim flew:fly \
flown:fly sang:sing sung:sing drank:drink drunk:drink rode:ride ridden:ride hid:hide hidden:hide \
shook:shake shaken:shake stole:steal stolen:steal struck:strike woke:wake woken:wake froze:freeze \
frozen:freeze bit:bite bitten:bite blew:blow blown:blow hung:hang lay:lie lain:lie laid:lay \
led:lead lit:light mistook:mistake rang:ring rung:ring shot:shoot shone:shine sank:sink sunk:sink \
slid:slide spun:spin sprang:spring stuck:stick stung:sting swore:swear sworn:swear swept:sweep \
swung:swing tore:tear torn:tear wept:weep wound:wind withdrew:withdraw \
men:man women:woman children:child mice:mouse geese:goose feet:foot \
teeth:tooth people:person oxen:ox wives:wife knives:knife wolves:wolf \
halves:half selves:self shelves:shelf loaves:loaf thieves:thief data:datum criteria:criterion \
phenomena:phenomenon analyses:analysis crises:crisis theses:thesis indices:index cacti:cactus \
fungi:fungus nuclei:nucleus radii:radius stimuli:stimulus";

fn irregular() -> &'static HashMap<&'static str, &'static str> {
    static M: OnceLock<HashMap<&'static str, &'static str>> = OnceLock::new();
    M.get_or_init(|| IRREGULAR.split_whitespace().filter_map(|p| p.split_once(':')).collect())
}

fn stemmer() -> &'static Stemmer {
    static S: OnceLock<Stemmer> = OnceLock::new();
    S.get_or_init(|| Stemmer::create(Algorithm::English))
}

/// Lemma key of a word: lower-cased, possessive `'s` dropped, irregular forms mapped to their
/// base, then Snowball-stemmed, so dog/dogs/dog's, run/running/runs/ran, mouse/mice share a key.
pub fn lemma(word: &str) -> String {
    let lower = word.to_lowercase().replace('’', "'");
    let w = lower.strip_suffix("'s").unwrap_or(&lower);
    let base = irregular().get(w).copied().unwrap_or(w);
    stemmer().stem(base).into_owned()
}

/// Lemma keys of every word of `text`, in order.
pub fn lemmas(text: &str) -> Vec<String> {
    words(text).map(lemma).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_on_punctuation_and_keep_contractions() {
        let w: Vec<&str> = words("Don't stop -- the dog's 3 toys,ok? café!").collect();
        assert_eq!(w, ["Don't", "stop", "the", "dog's", "3", "toys", "ok", "café"]);
        assert_eq!(words("  ...  ").count(), 0);
        assert_eq!(words("it' s").collect::<Vec<_>>(), ["it", "s"]);
    }

    #[test]
    fn lemmas_group_inflections() {
        for (a, b) in [("dog", "dogs"), ("run", "running"), ("run", "ran"), ("run", "runs"), ("mouse", "mice"), ("Dog", "dog's"), ("go", "went"), ("child", "children")] {
            assert_eq!(lemma(a), lemma(b), "{a} vs {b}");
        }
        assert_ne!(lemma("dog"), lemma("cat"));
        assert_ne!(lemma("park"), lemma("part"));
    }
}
