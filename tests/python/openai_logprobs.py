"""logprobs, echo, penalties and logit_bias through the official `openai` client.

Usage: openai_logprobs.py BASE_URL API_KEY. Run by tests/openai_python.rs.
"""
import math
import sys

import openai
from openai import OpenAI

base, key = sys.argv[1], sys.argv[2]
client = OpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=300)
model = client.models.list().data[0].id
messages = [{"role": "user", "content": "Name three colours."}]

# 1. chat logprobs: one entry per token, alternatives sorted, greedy picks the best one,
#    for greedy and for a steered search
def chat(**kw):
    return client.chat.completions.create(model=model, messages=messages, max_tokens=8, temperature=0,
                                          logprobs=True, top_logprobs=3, **kw)

for label, extra in [("greedy", {}), ("deal", {"extra_body": {"alignment": {
        "weights": {"keywords": 1.0}, "heads": {"keywords": {"words": ["red"]}}, "params": {"k": 3, "l": 2}}}})]:
    r = chat(**extra)
    lp = r.choices[0].logprobs
    assert lp is not None and lp.content, (label, r)
    assert r.usage.completion_tokens == len(lp.content), (label, r.usage, len(lp.content))
    assert "".join(t.token for t in lp.content).strip().startswith(r.choices[0].message.content.strip()[:3]), (label, lp)
    for t in lp.content:
        assert t.logprob <= 0.0 and len(t.top_logprobs) == 3, (label, t)
        tops = [a.logprob for a in t.top_logprobs]
        assert tops == sorted(tops, reverse=True), (label, tops)
        assert t.top_logprobs[0].logprob >= t.logprob - 1e-6, (label, t)
        assert bytes(t.bytes).decode("utf-8", "replace") == t.token or t.token.startswith("<"), (label, t)
        if label == "greedy":
            assert t.token == t.top_logprobs[0].token, t

# 2. streaming chunks carry the same logprobs
chunks = list(client.chat.completions.create(model=model, messages=messages, max_tokens=8, temperature=0,
                                              logprobs=True, top_logprobs=2, stream=True))
streamed = [t for c in chunks if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content]
whole = chat().choices[0].logprobs.content
assert [t.token for t in streamed] == [t.token for t in whole], (streamed, whole)
assert all(abs(a.logprob - b.logprob) < 1e-5 for a, b in zip(streamed, whole))

# 3. completions: logprobs=N, and echo scores the prompt (first token null); the logprobs
#    of a generated continuation equal the teacher-forced ones of the same text
prompt = "The capital of France is"
g = client.completions.create(model=model, prompt=prompt, max_tokens=6, temperature=0, logprobs=5)
gl = g.choices[0].logprobs
assert len(gl.tokens) == len(gl.token_logprobs) == len(gl.top_logprobs) == len(gl.text_offset) == g.usage.completion_tokens, gl
assert all(len(t) <= 5 for t in gl.top_logprobs) and all(x <= 0 for x in gl.token_logprobs), gl
assert gl.text_offset == sorted(gl.text_offset), gl.text_offset

e = client.completions.create(model=model, prompt=prompt + g.choices[0].text, max_tokens=0, echo=True, logprobs=1)
el = e.choices[0].logprobs
assert e.choices[0].text == prompt + g.choices[0].text, e.choices[0].text
assert el.token_logprobs[0] is None and el.top_logprobs[0] is None, el
assert all(x is not None and x <= 0 for x in el.token_logprobs[1:]), el
assert e.usage.completion_tokens == 0, e.usage
n = len(gl.tokens)
if el.tokens[-n:] == gl.tokens:  # same tokenization of the concatenated text
    for a, b in zip(el.token_logprobs[-n:], gl.token_logprobs):
        assert abs(a - b) < 0.35, (el.token_logprobs[-n:], gl.token_logprobs)

# echo with generation: prompt text first, its logprobs before the completion's
eg = client.completions.create(model=model, prompt=prompt, max_tokens=3, temperature=0, echo=True, logprobs=0)
assert eg.choices[0].text.startswith(prompt) and len(eg.choices[0].text) > len(prompt), eg
egl = eg.choices[0].logprobs
assert len(egl.tokens) == eg.usage.prompt_tokens + eg.usage.completion_tokens, (egl.tokens, eg.usage)
assert egl.token_logprobs[0] is None and all(x is not None for x in egl.token_logprobs[1:]), egl

# 4. penalties change outputs in the expected direction: fewer repeated tokens
rep = "apple apple apple apple apple apple"
def completion_tokens(**kw):
    c = client.completions.create(model=model, prompt=rep, max_tokens=24, temperature=0, logprobs=0, **kw)
    return c.choices[0].logprobs.tokens

plain = completion_tokens()
pen = completion_tokens(frequency_penalty=2.0, presence_penalty=2.0)
repeats = lambda ts: len(ts) - len(set(ts))
assert repeats(pen) < repeats(plain), (pen, plain)

# 5. logit_bias: +100 on one token makes every token that token; -100 bans it
forced = client.completions.create(model=model, prompt=prompt, max_tokens=4, temperature=0, logprobs=0,
                                   logit_bias={"1000": 100})
ft = forced.choices[0].logprobs.tokens
assert len(ft) == 4 and len(set(ft)) == 1, ft
banned = client.completions.create(model=model, prompt=prompt, max_tokens=8, temperature=0, logprobs=0,
                                   logit_bias={"1000": -100})
assert ft[0] not in banned.choices[0].logprobs.tokens, (ft, banned.choices[0].logprobs.tokens)

# 6. what remains refused is a 400 naming the field
def refused(field, **kw):
    try:
        client.chat.completions.create(model=model, messages=messages, max_tokens=2, **kw)
    except openai.BadRequestError as err:
        body = err.body.get("error", err.body) if isinstance(err.body, dict) else {}
        assert body.get("param") == field, (field, err.body)
        return
    raise AssertionError(f"{field} was accepted")

refused("top_logprobs", logprobs=True, top_logprobs=21)
refused("top_logprobs", top_logprobs=2)
refused("logit_bias", logit_bias={"999999999": 1})
refused("frequency_penalty", frequency_penalty=3)
refused("tools", tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}])

print("openai logprobs: all checks passed")
