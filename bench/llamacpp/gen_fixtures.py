#!/usr/bin/env python3
"""Record llama.cpp reference fixtures for deal's tests.

Usage: python3 bench/llamacpp/gen_fixtures.py [--only tokenize|greedy|long]
Needs the binaries from bench/llamacpp/build.sh and the Gemma 3 270M Q4_K_M gguf.
Writes runtime/tests/fixtures/{tokenize,greedy,long_prompt}.json.
"""
import json, os, re, subprocess, sys, tempfile

DEAL_HOME = os.environ.get("DEAL_HOME", os.path.expanduser("~/.cache/deal"))
BIN = os.path.join(DEAL_HOME, "llama.cpp", "bin")
MODEL_NAME = "gemma-3-270m-q4_k_m.gguf"
MODEL = os.environ.get("DEAL_MODEL", os.path.join(DEAL_HOME, "models", MODEL_NAME))
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(REPO, "runtime", "tests", "fixtures")
BOS = 2


def tokenize(text: str, add_bos: bool = False, parse_special: bool = True):
    """Exact-bytes tokenization via a temp file (-f is read verbatim; --no-escape)."""
    with tempfile.NamedTemporaryFile("wb", delete=False, suffix=".txt") as f:
        f.write(text.encode("utf-8"))
        path = f.name
    try:
        cmd = [os.path.join(BIN, "llama-tokenize"), "-m", MODEL, "-f", path,
               "--ids", "--no-escape", "--log-disable"]
        if not add_bos:
            cmd.append("--no-bos")
        if not parse_special:
            cmd.append("--no-parse-special")
        r = subprocess.run(cmd, capture_output=True, check=True)
    finally:
        os.unlink(path)
    lines = [l.strip() for l in r.stdout.decode("utf-8").splitlines()]
    lists = [l for l in lines if l.startswith("[") and l.endswith("]")]
    assert len(lists) >= 1, r.stdout
    ids = json.loads(lists[-1])
    assert all(isinstance(i, int) for i in ids)
    if add_bos:
        assert ids[:1] == [BOS], ids
    else:
        assert ids[:1] != [BOS] or text.startswith("<bos>"), ids
    return ids


def simple(prompt: str, n: int):
    """Greedy generation with llama-simple; returns the continuation text (exact bytes)."""
    r = subprocess.run([os.path.join(BIN, "llama-simple"), "-m", MODEL, "-n", str(n), prompt],
                       capture_output=True, check=True)
    out = r.stdout.decode("utf-8")
    # llama-simple prints every prompt token piece (special=true, so BOS shows as "<bos>"),
    # then each generated piece, then a single "\n".
    echo = "<bos>" + prompt
    assert out.startswith(echo), (out[:200], echo[:200])
    assert out.endswith("\n")
    err = r.stderr.decode("utf-8", "replace")
    m = re.search(r"main: decoded (\d+) tokens", err)
    assert m, err[-2000:]
    return out[len(echo):-1], int(m.group(1))


TOKENIZE_CASES = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    " Hello",
    "Hello ",
    "   leading and trailing   ",
    "multiple    spaces   between\twords",
    "line one\nline two\n\nline four\n\n\n",
    "\n\n\nstarts with newlines",
    "\ttab\t\tseparated\tvalues\t",
    "1234567890",
    "3.14159 and 2.71828, also 1,000,000 and 123456789012345678901234567890",
    "Emoji: 😀🎉👍🏽 and ZWJ family 👨‍👩‍👧‍👦 and flag 🇫🇷 and ❤️",
    "中文测试：你好，世界！日本語のテキストも。한국어 문장입니다.",
    "مرحبا بالعالم، كيف حالك؟",
    "नमस्ते दुनिया, आप कैसे हैं?",
    "Café naïve résumé façade Ångström Øre Łódź straße",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n",
    "fn main() {\n    let v: Vec<u32> = (0..10).map(|x| x * x).collect();\n    println!(\"{:?}\", v);\n}\n",
    "https://example.com/path/to/page?query=hello%20world&lang=en#section-2",
    "Wait... what?!?! No way!!! ---- ==== ;;;; (((nested))) [[[x]]] {{{y}}}",
    "MiXeD CaSe WoRdS and ALLCAPS and lowercase and camelCaseIdentifier snake_case_name",
    " ",
    "  ",
    "<start_of_turn>user\nHello there<end_of_turn>\n<start_of_turn>model\n",
    "text with <pad> and <bos> and <eos> inside",
    "<unused0> <unused1> <mask> [multimodal]",
    "email: someone@example.org, phone: +1 (555) 010-9999",
    "JSON: {\"key\": [1, 2, 3], \"nested\": {\"a\": null, \"b\": true}}",
    "a",
    "\u00a0non-breaking\u00a0space and\u200bzero-width",
]

GREEDY_PROMPTS = [
    "Once upon a time, in a small village by the sea,",
    "The capital of France is",
    "def fibonacci(n):",
    "Here is a list of fruits:\n1. Apple\n2.",
    "Alice: Hi Bob, how was your weekend?\nBob:",
    "If x + 3 = 7, then x =",
    "La capitale de l'Allemagne est",
    "The three primary colors are",
    "import numpy as np\n\n# Compute the mean of an array\n",
    "Water boils at a temperature of",
    "My favorite book is",
    "東京は日本の",
]

LONG_PROMPT = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "long_prompt.txt"),
                   encoding="utf-8").read().rstrip("\n") if os.path.exists(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "long_prompt.txt")) else None


def write(name, obj):
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, name), "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print("wrote", os.path.join(OUT, name))


def gen_tokenize():
    cases = []
    for t in TOKENIZE_CASES:
        c = {"text": t, "ids": tokenize(t)}
        raw = tokenize(t, parse_special=False)
        if raw != c["ids"]:
            c["ids_no_parse_special"] = raw
        cases.append(c)
    write("tokenize.json", {
        "model": MODEL_NAME,
        "add_bos": False,
        "parse_special": True,
        "note": "ids from `llama-tokenize -f FILE --ids --no-escape --no-bos --log-disable` (llama.cpp "
                "from llama-cpp-python 0.3.36 sdist). No BOS (id 2) included. llama-tokenize parses special "
                "tokens by default (e.g. '<start_of_turn>' -> 105), same as llama-simple; where that differs "
                "from plain-text tokenization, 'ids_no_parse_special' holds the --no-parse-special result.",
        "cases": cases,
    })


def gen_greedy(n=32):
    cases = []
    for p in GREEDY_PROMPTS:
        text, n_out = simple(p, n)
        cases.append({"prompt": p, "prompt_ids": tokenize(p, add_bos=True), "output_text": text,
                      "n_output_tokens": n_out})
    write("greedy.json", {
        "model": MODEL_NAME,
        "n_predict": n,
        "note": "output_text from `llama-simple -m MODEL -n 32 PROMPT` (greedy sampler, stops early on EOG). "
                "Prompt tokenized with add_special=true (BOS=2 prepended) and parse_special=true; prompts "
                "contain no special-token text so prompt_ids (from llama-tokenize) match. output_ids not "
                "recorded (llama-simple only prints pieces); n_output_tokens is llama-simple's own count of "
                "generated (non-EOG) tokens; < n_predict means it stopped on an EOG token.",
        "cases": cases,
    })


def gen_long(n=16):
    assert LONG_PROMPT, "bench/llamacpp/long_prompt.txt missing"
    p = LONG_PROMPT
    ids = tokenize(p, add_bos=True)
    assert len(ids) > 600, len(ids)
    text, n_out = simple(p, n)
    write("long_prompt.json", {
        "n_output_tokens": n_out,
        "model": MODEL_NAME,
        "n_predict": n,
        "prompt": p,
        "prompt_n_tokens": len(ids),
        "prompt_ids": ids,
        "output_text": text,
        "note": "prompt_n_tokens includes BOS. Exceeds Gemma 3's 512-token sliding window. "
                "output_text from `llama-simple -n 16` (greedy).",
    })


if __name__ == "__main__":
    only = sys.argv[2] if len(sys.argv) > 2 and sys.argv[1] == "--only" else None
    if only in (None, "tokenize"):
        gen_tokenize()
    if only in (None, "greedy"):
        gen_greedy()
    if only in (None, "long"):
        gen_long()
