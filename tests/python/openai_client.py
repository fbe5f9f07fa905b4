"""The official `openai` Python client against a running `deal serve`.

Usage: openai_client.py BASE_URL API_KEY. Exits non-zero (AssertionError) on any mismatch.
Run by tests/openai_python.rs, which starts the server.
"""
import sys

import openai
from openai import OpenAI

base, key = sys.argv[1], sys.argv[2]
client = OpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=300)
model = client.models.list().data[0].id
assert model == "gemma-3-270m-q4_k_m", model
messages = [{"role": "user", "content": "Write one sentence about the sea."}]

# 1. chat, non-streaming
r = client.chat.completions.create(model=model, messages=messages, max_tokens=12, temperature=0)
assert r.object == "chat.completion", r
assert r.id.startswith("chatcmpl-")
assert r.choices[0].message.role == "assistant"
assert r.choices[0].finish_reason in ("stop", "length")
assert 1 <= r.usage.completion_tokens <= 12
assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
text = r.choices[0].message.content
assert text, r

# 2. chat, streaming: same text (greedy), chunks, usage at the end
chunks = list(client.chat.completions.create(model=model, messages=messages, max_tokens=12, temperature=0,
                                              stream=True, stream_options={"include_usage": True}))
streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
assert streamed == text, (streamed, text)
assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) >= 2, "text comes in pieces"
assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == r.usage.total_tokens
assert any(c.choices and c.choices[0].finish_reason for c in chunks)

# 3. alignment through extra_body: the breakdown reflects the weights
def aligned(weights):
    out = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Write a sentence using the words: dog, park, ball."}],
        max_tokens=16, temperature=0,
        extra_body={"alignment": {"controller": "deal", "weights": weights,
                                  "heads": {"keywords": {"words": ["dog", "park", "ball"]}, "length": {"target": 10}},
                                  "params": {"k": 3, "l": 2, "beams": 2, "lambda": 4.0}}})
    al = out.model_extra["alignment"]
    heads = {h["head"]: h for h in al["heads"]}
    total = sum(h["contribution"] for h in al["heads"])
    assert abs(total - al["total"]) < 1e-6, al
    for h in al["heads"]:
        assert abs(h["contribution"] - h["weight"] * h["normalized"]) < 1e-6, h
    assert al["controller"] == "deal" and al["stats"]["forward_passes"] > 0, al
    return heads, al

h1, a1 = aligned({"keywords": 1.0, "length": 0.5})
assert h1["keywords"]["weight"] == 1.0 and h1["length"]["weight"] == 0.5, h1
h2, a2 = aligned({"keywords": 0.0, "length": 2.0})
assert h2["keywords"]["weight"] == 0.0 and h2["length"]["weight"] == 2.0, h2
assert h1["keywords"]["normalized"] >= h2["keywords"]["normalized"], (h1, h2)

# 4. the completions API too
c = client.completions.create(model=model, prompt="The capital of France is", max_tokens=4, temperature=0)
assert c.object == "text_completion" and c.choices[0].text, c

# 5. errors: unknown head -> 400 with an OpenAI error body; wrong key -> 401; unknown model -> 404
try:
    client.chat.completions.create(model=model, messages=messages, max_tokens=2,
                                   extra_body={"alignment": {"weights": {"no_such_head": 1}}})
    raise AssertionError("an unknown head was accepted")
except openai.BadRequestError as e:
    assert e.status_code == 400
    body = e.body.get("error", e.body) if isinstance(e.body, dict) else {}
    assert body.get("param") == "alignment.weights", e.body
    assert "no_such_head" in body.get("message", ""), e.body
    assert body.get("type") == "invalid_request_error", e.body

try:
    OpenAI(base_url=base + "/v1", api_key="wrong-key", max_retries=0).models.list()
    raise AssertionError("a wrong key was accepted")
except openai.AuthenticationError as e:
    assert e.status_code == 401

try:
    client.chat.completions.create(model="gpt-4o", messages=messages, max_tokens=2)
    raise AssertionError("an unknown model was accepted")
except openai.NotFoundError as e:
    assert e.status_code == 404

print("openai client: all checks passed")
