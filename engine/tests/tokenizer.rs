//! The GGUF tokenizer against llama.cpp's ids (fixture from `llama-tokenize`), plus roundtrip,
//! control-token, streaming and byte-level BPE checks.
//!
//! Model-dependent tests use `$DEAL_MODEL`, else the default model (fetched on first use).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Instant;

use candle_core::quantized::gguf_file::{Content, Value, VersionedMagic};
use deal_backend::codec::StreamDecoder;
use deal_engine::tokenizer::{byte_level_encode, GgufTokenizer, TokenType};

fn model_path() -> PathBuf {
    deal_engine::setup::resolve_model(None).unwrap_or_else(|e| panic!("the default model is needed for this test: {e}"))
}

/// The gemma tokenizer, built once for all tests of this binary.
fn gemma() -> &'static GgufTokenizer {
    static TOK: OnceLock<GgufTokenizer> = OnceLock::new();
    TOK.get_or_init(|| {
        let path = model_path();
        let mut f = std::fs::File::open(&path).unwrap_or_else(|e| {
            panic!("test model {} not found ({e}); set DEAL_MODEL or run `deal setup` to fetch it", path.display())
        });
        let content = Content::read(&mut f).expect("readable GGUF");
        let t0 = Instant::now();
        let tok = GgufTokenizer::from_gguf(&content).expect("tokenizer from GGUF");
        eprintln!("tokenizer built in {:?}", t0.elapsed());
        tok
    })
}

fn pieces(tok: &GgufTokenizer, ids: &[u32]) -> Vec<String> {
    ids.iter().map(|&i| tok.token_text(i).unwrap_or("?").to_string()).collect()
}

/// `text` with control-token names turned into their ids and the rest encoded as plain text:
/// what a chat template does explicitly, and what llama.cpp's `parse_special` does implicitly.
fn encode_parsing_specials(tok: &GgufTokenizer, text: &str) -> Vec<u32> {
    let controls: Vec<(u32, &str)> = (0..tok.vocab_size() as u32)
        .filter(|&i| tok.token_type(i) == Some(TokenType::Control))
        .filter_map(|i| Some((i, tok.token_text(i)?)))
        .collect();
    let (mut ids, mut rest) = (Vec::new(), text);
    // Leftmost match, longest first among those starting there.
    while let Some((at, id, len)) = controls
        .iter()
        .filter_map(|&(id, name)| rest.find(name).map(|at| (at, id, name.len())))
        .min_by_key(|&(at, _, len)| (at, usize::MAX - len))
    {
        ids.extend(tok.encode(&rest[..at], false).unwrap());
        ids.push(id);
        rest = &rest[at + len..];
    }
    ids.extend(tok.encode(rest, false).unwrap());
    ids
}

fn ids_of(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().expect("ids array").iter().map(|v| v.as_u64().expect("id") as u32).collect()
}

/// Every fixture case: `encode` equals llama.cpp's plain-text ids (`--no-parse-special`), and
/// inserting control tokens explicitly reproduces its default (`parse_special`) ids.
#[test]
fn matches_llama_cpp_fixture() {
    let tok = gemma();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenize.json");
    let raw = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("fixture {} missing ({e})", path.display()));
    let fixture: serde_json::Value = serde_json::from_str(&raw).expect("fixture is JSON");
    assert_eq!(fixture["add_bos"], serde_json::Value::Bool(false), "fixture ids must be without BOS");
    let parse_special = fixture["parse_special"].as_bool().unwrap_or(false);
    let cases = fixture["cases"].as_array().expect("fixture has `cases`");
    assert!(!cases.is_empty());
    let (mut failures, mut n_checks) = (Vec::new(), 0);
    for case in cases {
        let text = case["text"].as_str().expect("case text");
        let ids = ids_of(&case["ids"]);
        let plain = if case.get("ids_no_parse_special").is_some() {
            ids_of(&case["ids_no_parse_special"])
        } else {
            ids.clone()
        };
        let mut check = |what: &str, want: &[u32], got: Vec<u32>| {
            if got != want {
                failures.push(format!(
                    "{what} {text:?}\n  llama.cpp: {want:?} {:?}\n  deal:      {got:?} {:?}",
                    pieces(tok, want),
                    pieces(tok, &got)
                ));
            }
        };
        let got = tok.encode(text, false).expect("encode");
        assert_eq!(tok.decode(&got, false).unwrap(), text, "roundtrip");
        check("encode", &plain, got);
        n_checks += 1;
        if parse_special {
            check("explicit specials", &ids, encode_parsing_specials(tok, text));
            n_checks += 1;
        }
    }
    eprintln!("{}/{n_checks} checks on {} fixture cases match llama.cpp", n_checks - failures.len(), cases.len());
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn known_gemma_ids() {
    let tok = gemma();
    assert_eq!(tok.vocab_size(), 262_144);
    assert_eq!(tok.bos_id(), Some(2));
    assert_eq!(tok.eos_id(), Some(1));
    assert_eq!(tok.pad_id(), Some(0));
    assert!(tok.add_bos());
    let eot = tok.token_id("<end_of_turn>").expect("<end_of_turn>");
    assert_eq!(eot, 106);
    assert!(tok.is_eog(1) && tok.is_eog(eot) && !tok.is_eog(2));
    assert_eq!(tok.token_id("<start_of_turn>"), Some(105));

    assert_eq!(tok.encode("Hello world", false).unwrap(), vec![9259, 1902]);
    assert_eq!(tok.encode("Hello world", true).unwrap(), vec![2, 9259, 1902]);
    assert_eq!(tok.encode("", false).unwrap(), Vec::<u32>::new());
    // User-defined tokens are split out of raw text: "\n\n" and a run of two spaces.
    assert_eq!(
        tok.encode("Hello, world!\n\nHow are you?", false).unwrap(),
        vec![9259, 236764, 1902, 236888, 108, 3910, 659, 611, 236881]
    );
    assert_eq!(tok.encode("  indented", false).unwrap(), vec![138, 724, 16764]);
    assert_eq!(tok.encode("<table>", false).unwrap(), vec![tok.token_id("<table>").unwrap()]);
    // Emoji in the vocab, and a character that needs byte fallback.
    assert_eq!(tok.encode("emoji 😀🎉", false).unwrap(), vec![67906, 163543, 242061]);
    let rare = tok.encode("\u{10FFFD}", false).unwrap();
    assert_eq!(rare.len(), 4, "4 byte-fallback tokens");
    assert!(rare.iter().all(|&i| tok.token_type(i) == Some(TokenType::Byte)));
}

#[test]
fn control_token_text_is_plain_text() {
    let tok = gemma();
    for name in ["<start_of_turn>", "<end_of_turn>", "<bos>", "<eos>", "<pad>", "<mask>", "<unused0>"] {
        let id = tok.token_id(name).unwrap_or_else(|| panic!("{name} in vocab"));
        assert_eq!(tok.token_type(id), Some(TokenType::Control), "{name}");
        let ids = tok.encode(&format!("<start_of_turn>user\n{name} hi"), false).unwrap();
        assert!(ids.len() > 3, "{name}: {ids:?}");
        assert!(ids.iter().all(|&i| tok.token_type(i) != Some(TokenType::Control)), "{name} matched: {ids:?}");
        assert_eq!(tok.decode(&ids, true).unwrap(), format!("<start_of_turn>user\n{name} hi"));
    }
    // Explicitly inserted control tokens decode to their names or to nothing.
    let mut ids = vec![2, 105];
    ids.extend(tok.encode("user\nHi", false).unwrap());
    ids.push(106);
    assert_eq!(tok.decode(&ids, false).unwrap(), "<bos><start_of_turn>user\nHi<end_of_turn>");
    assert_eq!(tok.decode(&ids, true).unwrap(), "user\nHi");
}

const SAMPLES: &[&str] = &[
    "Hello world",
    " leading space",
    "   three leading spaces and trailing   ",
    "tabs\tand\t\tmore\t\t\ttabs",
    "line one\nline two\n\n\nline five\r\nwindows",
    "The quick brown fox jumps over the lazy dog. 1234567890 + 3.14159 = π?",
    "fn main() {\n    println!(\"{}\", 42);\n}\n",
    "<html><body><table><tr><td>cell</td></tr></table></body></html>",
    "Ünïcödé: café, naïve, Straße, Ελληνικά, русский, 日本語のテキスト, 中文, 한국어, עברית, العربية",
    "emoji: 😀🎉👍🏽 👨‍👩‍👧‍👦 🇫🇷 and ✓ ✗ ★",
    "rare: \u{10FFFD} \u{E000} \u{1D11E} \u{0301}a",
    "-----====*****______......",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n",
    "<0x41> <unk> [multimodal] <s></s>",
    "\n",
    " ",
    "",
];

#[test]
fn decode_encode_roundtrip() {
    let tok = gemma();
    for text in SAMPLES {
        let ids = tok.encode(text, false).unwrap();
        assert_eq!(tok.decode(&ids, false).unwrap(), *text, "ids {ids:?}");
        let with_bos = tok.encode(text, true).unwrap();
        assert_eq!(tok.decode(&with_bos, true).unwrap(), *text);
    }
    // deal encodes SentencePiece vocabs itself; `tokenizers` only byte-level BPE ones
    assert!(tok.inner().is_none());
}

#[test]
fn stream_decoder_holds_back_split_characters() {
    let tok = gemma();
    let text = "Smile 😀, 𝄞 clef, \u{10FFFD} rare, 👨‍👩‍👧 family, done.";
    let ids = tok.encode(text, true).unwrap();
    // Some characters here are byte-fallback tokens: 4 ids for one character.
    assert!(ids.iter().any(|&i| tok.token_type(i) == Some(TokenType::Byte)));
    let mut sd = StreamDecoder::new(true);
    let mut out = String::new();
    let mut held_back = 0;
    for &id in &ids {
        let delta = sd.push(tok, id).unwrap();
        if delta.is_empty() {
            held_back += 1;
        }
        out.push_str(&delta);
    }
    out.push_str(&sd.finish());
    assert_eq!(out, text);
    assert!(held_back >= 3, "partial bytes must be held back ({held_back})");
    assert!(!out.contains('\u{FFFD}'));
    // Pieces of one character: the first three bytes give nothing, the fourth the character.
    let clef = tok.encode("\u{10FFFD}", false).unwrap();
    let mut sd = StreamDecoder::new(false);
    let deltas: Vec<String> = clef.iter().map(|&i| sd.push(tok, i).unwrap()).collect();
    assert_eq!(deltas, ["", "", "", "\u{10FFFD}"]);
    // Invalid or unfinished bytes come out as U+FFFD, never as broken UTF-8.
    let b = |x: u8| tok.token_id(&format!("<0x{x:02X}>")).unwrap();
    let mut sd = StreamDecoder::new(false);
    assert_eq!(sd.push(tok, b(0xF0)).unwrap(), "");
    assert_eq!(sd.push(tok, b(0x41)).unwrap(), "\u{FFFD}A");
    assert_eq!(sd.push(tok, b(0xE2)).unwrap(), "");
    assert_eq!(sd.finish(), "\u{FFFD}");
}

#[test]
fn out_of_range_ids_are_errors() {
    let tok = gemma();
    assert!(tok.decode(&[9259, 300_000], false).is_err());
    assert!(tok.token_to_piece(u32::MAX, true).is_err());
    let mut sd = StreamDecoder::new(true);
    assert!(sd.push(tok, 300_000).is_err());
}

fn content(md: Vec<(&str, Value)>) -> Content {
    Content {
        magic: VersionedMagic::GgufV3,
        metadata: md.into_iter().map(|(k, v)| (k.to_string(), v)).collect::<HashMap<_, _>>(),
        tensor_infos: HashMap::new(),
        tensor_data_offset: 0,
    }
}

fn strs(v: &[&str]) -> Value {
    Value::Array(v.iter().map(|s| Value::String(s.to_string())).collect())
}

/// A tiny byte-level (`gpt2`) vocab: all 256 byte symbols plus a few merges, two control
/// tokens and one user-defined token.
fn tiny_gpt2(pre: &str) -> Content {
    let mut tokens: Vec<String> = (0..=255u8).map(|b| byte_level_encode(&[b])).collect();
    let merges = ["h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "Ġwor l", "Ġworl d", "Ġ Ġ"];
    for m in merges {
        tokens.push(m.replace(' ', ""));
    }
    let mut types = vec![1i32; tokens.len()];
    for (t, ty) in [("<|begin_of_text|>", 3), ("<|eot_id|>", 3), ("<tool>", 4)] {
        tokens.push(t.to_string());
        types.push(ty);
    }
    let tokens: Vec<&str> = tokens.iter().map(String::as_str).collect();
    content(vec![
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", Value::String(pre.into())),
        ("tokenizer.ggml.tokens", strs(&tokens)),
        ("tokenizer.ggml.token_type", Value::Array(types.into_iter().map(Value::I32).collect())),
        ("tokenizer.ggml.merges", strs(&merges)),
        ("tokenizer.ggml.bos_token_id", Value::U32(266)),
        ("tokenizer.ggml.eos_token_id", Value::U32(266)),
        ("tokenizer.ggml.add_bos_token", Value::Bool(true)),
    ])
}

/// A tiny SentencePiece (`llama`) vocab: `<unk> <s> </s>`, the 256 byte tokens, then pieces
/// with hand-picked scores, a control token whose text merges could spell, a user-defined
/// token, and a duplicated piece.
fn tiny_spm(add_space_prefix: bool) -> Content {
    let mut pieces: Vec<(String, f32, i32)> = vec![("<unk>".into(), 0.0, 2), ("<s>".into(), 0.0, 3), ("</s>".into(), 0.0, 3)];
    pieces.extend((0..=255u8).map(|b| (format!("<0x{b:02X}>"), 0.0, 6)));
    #[rustfmt::skip]
    let rest = [
        ("▁", -1.0, 1), ("a", -2.0, 1), ("b", -3.0, 1), ("c", -4.0, 1),
        // "bc" (lower id) and "ab" tie: llama.cpp merges the leftmost pair first
        ("bc", -10.0, 1), ("ab", -10.0, 1), ("▁a", -5.0, 1),
        // text never becomes a control token, even when merges could spell it
        ("abc", 0.0, 3),
        ("<u>", 0.0, 4), ("<", -30.0, 1), ("u", -31.0, 1), (">", -32.0, 1),
        // a duplicated piece resolves to its last id
        ("c", -4.0, 1),
    ];
    pieces.extend(rest.iter().map(|&(t, s, ty)| (t.to_string(), s, ty)));
    let texts: Vec<&str> = pieces.iter().map(|p| p.0.as_str()).collect();
    content(vec![
        ("tokenizer.ggml.model", Value::String("llama".into())),
        ("tokenizer.ggml.tokens", strs(&texts)),
        ("tokenizer.ggml.scores", Value::Array(pieces.iter().map(|p| Value::F32(p.1)).collect())),
        ("tokenizer.ggml.token_type", Value::Array(pieces.iter().map(|p| Value::I32(p.2)).collect())),
        ("tokenizer.ggml.unknown_token_id", Value::U32(0)),
        ("tokenizer.ggml.bos_token_id", Value::U32(1)),
        ("tokenizer.ggml.eos_token_id", Value::U32(2)),
        ("tokenizer.ggml.add_space_prefix", Value::Bool(add_space_prefix)),
    ])
}

/// llama.cpp's SentencePiece algorithm on a hand-made vocab: highest score first, ties to the
/// leftmost pair, no merge into a control token, byte fallback, user-defined tokens split out
/// of raw text, and the space prefix on every stretch of text after one.
#[test]
fn spm_merges_as_llama_cpp() {
    let tok = GgufTokenizer::from_gguf(&tiny_spm(false)).expect("tiny spm tokenizer");
    assert!(tok.inner().is_none());
    let id = |t: &str| tok.token_id(t).unwrap();
    let pieces = |ids: Vec<u32>| ids.iter().map(|&i| tok.token_text(i).unwrap().to_string()).collect::<Vec<_>>();
    assert_eq!(tok.token_id("c"), Some(tok.vocab_size() as u32 - 1), "last duplicate wins");
    assert_eq!(pieces(tok.encode("abc", false).unwrap()), ["ab", "c"]);
    assert_eq!(tok.encode("abc", true).unwrap()[0], 1);
    assert!(!tok.encode("abc", false).unwrap().contains(&id("abc")));
    // "é" is not in the vocab: its two UTF-8 bytes
    assert_eq!(pieces(tok.encode("é", false).unwrap()), ["<0xC3>", "<0xA9>"]);
    assert_eq!(pieces(tok.encode("a b", false).unwrap()), ["a", "▁", "b"]);
    assert_eq!(pieces(tok.encode("a<u>b", false).unwrap()), ["a", "<u>", "b"]);
    assert_eq!(tok.decode(&tok.encode("a b<u>é", false).unwrap(), false).unwrap(), "a b<u>é");

    let tok = GgufTokenizer::from_gguf(&tiny_spm(true)).expect("tiny spm tokenizer");
    let pieces = |ids: Vec<u32>| ids.iter().map(|&i| tok.token_text(i).unwrap().to_string()).collect::<Vec<_>>();
    assert_eq!(pieces(tok.encode("a b", false).unwrap()), ["▁a", "▁", "b"]);
    assert_eq!(pieces(tok.encode("ab<u>a", false).unwrap()), ["▁a", "b", "<u>", "▁a"]);
    assert_eq!(tok.encode("", false).unwrap(), Vec::<u32>::new());
    // the prefix after `<u>` decodes as a space; only the text's first one is stripped
    assert_eq!(tok.decode(&tok.encode("a b<u>é", false).unwrap(), false).unwrap(), "a b<u> é");
}

#[test]
fn gpt2_byte_level_roundtrip() {
    for pre in ["llama-bpe", "qwen2", "default", "something-new"] {
        let tok = GgufTokenizer::from_gguf(&tiny_gpt2(pre)).expect("tiny gpt2 tokenizer");
        let id = |t: &str| tok.token_id(t).unwrap();
        assert_eq!(tok.encode("hello world", true).unwrap(), vec![266, id("hello"), id("Ġworld")]);
        // Control text is plain text; user-defined tokens are matched in raw text.
        let ids = tok.encode("<|eot_id|>x<tool>", false).unwrap();
        assert!(!ids.contains(&id("<|eot_id|>")), "{pre}: {ids:?}");
        assert_eq!(*ids.last().unwrap(), id("<tool>"));
        assert!(tok.is_eog(id("<|eot_id|>")) && tok.is_eog(266));
        for text in ["hello world", "  héllo,\n\twörld 😀 12345 it's", "<|eot_id|><tool> x", ""] {
            let ids = tok.encode(text, false).unwrap();
            assert_eq!(tok.decode(&ids, false).unwrap(), text, "{pre}: {ids:?}");
            let mut sd = StreamDecoder::new(false);
            let mut s: String = ids.iter().map(|&i| sd.push(&tok, i).unwrap()).collect();
            s.push_str(&sd.finish());
            assert_eq!(s, text);
        }
        assert_eq!(tok.decode(&[266, id("hello"), id("<|eot_id|>")], true).unwrap(), "hello");
    }
}

#[test]
fn bad_metadata_is_a_clear_error() {
    let msg = |c: Content| match GgufTokenizer::from_gguf(&c) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    };
    assert!(msg(content(vec![])).contains("tokenizer.ggml.model"));
    let m = msg(content(vec![("tokenizer.ggml.model", Value::String("rwkv".into()))]));
    assert!(m.contains("rwkv"), "{m}");
    let m = msg(content(vec![
        ("tokenizer.ggml.model", Value::String("llama".into())),
        ("tokenizer.ggml.tokens", strs(&["a", "b"])),
    ]));
    assert!(m.contains("tokenizer.ggml.scores"), "{m}");
    let m = msg(content(vec![
        ("tokenizer.ggml.model", Value::String("llama".into())),
        ("tokenizer.ggml.tokens", Value::Array(vec![Value::U32(3)])),
    ]));
    assert!(m.contains("tokenizer.ggml.tokens"), "{m}");
    let mut c = tiny_gpt2("qwen2");
    c.metadata.remove("tokenizer.ggml.merges");
    assert!(msg(c).contains("tokenizer.ggml.merges"));
}
