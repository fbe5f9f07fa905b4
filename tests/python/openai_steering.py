"""Default-strength steering and structured outputs through the official `openai` client.

Usage: openai_steering.py BASE_URL API_KEY CONCEPTS_FILE. Run by tests/openai_python.rs.
"""
import json
import sys

import openai
from openai import OpenAI

base, key, concepts_file = sys.argv[1], sys.argv[2], sys.argv[3]
client = OpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=600)
model = client.models.list().data[0].id

# 1. a weight of 1 steers with every other setting at its default: keywords = 1 raises hard
#    coverage by >= 0.25 over greedy on the concept sets (same prompts, same measure)
sets = [l.split() for l in open(concepts_file) if l.strip()]

def prompt(words):
    return ("Write a sentence using the words: apple, tree, red.\nSentence: The red apple fell from the tree.\n\n"
            f"Write a sentence using the words: {', '.join(words)}.\nSentence:")

def hard(words, controller):
    alignment = {"weights": {"keywords": 1.0}, "heads": {"keywords": {"words": words}}}
    if controller:
        alignment["controller"] = controller
    r = client.completions.create(model=model, prompt=prompt(words), max_tokens=24, stop=["\n"],
                                  extra_body={"alignment": alignment})
    heads = {h["head"]: h for h in r.choices[0].model_extra["alignment"]["heads"]}
    return heads["keywords"]["details"]["hard"]

greedy = sum(hard(w, "greedy") for w in sets) / len(sets)
steered = sum(hard(w, None) for w in sets) / len(sets)
print(f"hard coverage over {len(sets)} concept sets: greedy {greedy:.2f}, weight 1 with defaults {steered:.2f}")
assert steered >= greedy + 0.25, (greedy, steered)

# 2. structured outputs: json_schema (strict) and json_object outputs parse and satisfy the
#    schema, for greedy, deal and best_of_n, streamed or not
person = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 16},
                                           "age": {"type": "integer", "minimum": 0, "maximum": 120},
                                           "pet": {"enum": ["cat", "dog", "none"]}},
          "required": ["name", "age", "pet"]}
fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": person, "strict": True}}
messages = [{"role": "user", "content": "Describe a person as JSON."}]

def check_person(text):
    v = json.loads(text)
    assert set(v) == {"name", "age", "pet"}, v
    assert isinstance(v["name"], str) and len(v["name"]) <= 16, v
    assert isinstance(v["age"], int) and 0 <= v["age"] <= 120, v
    assert v["pet"] in ("cat", "dog", "none"), v
    return v

for alignment in [None, {"controller": "deal", "weights": {"keywords": 1.0}, "heads": {"keywords": {"words": ["dog"]}}},
                  {"controller": "best_of_n", "weights": {"keywords": 1.0}, "heads": {"keywords": {"words": ["cat"]}}, "params": {"n": 4}}]:
    extra = {"extra_body": {"alignment": alignment}} if alignment else {}
    # best_of_n samples (its default temperature); the others decode deterministically
    extra["temperature"] = 1.0 if alignment and alignment["controller"] == "best_of_n" else 0
    r = client.chat.completions.create(model=model, messages=messages, max_tokens=64, response_format=fmt, **extra)
    v = check_person(r.choices[0].message.content)
    if alignment and alignment["controller"] == "deal":
        assert v["pet"] == "dog", v  # the weighted head picks among valid outputs
    chunks = client.chat.completions.create(model=model, messages=messages, max_tokens=64,
                                            response_format=fmt, stream=True, **extra)
    check_person("".join(c.choices[0].delta.content or "" for c in chunks if c.choices))

r = client.chat.completions.create(model=model, messages=messages, max_tokens=48, temperature=0,
                                   response_format={"type": "json_object"})
assert isinstance(json.loads(r.choices[0].message.content), dict), r.choices[0].message.content

# a Lark grammar through alignment.grammar
r = client.completions.create(model=model, prompt="Is water wet? Answer:", max_tokens=4, temperature=0,
                              extra_body={"alignment": {"controller": "greedy", "grammar": {"lark": 'start: " yes" | " no"'}}})
assert r.choices[0].text.strip() in ("yes", "no"), r.choices[0].text

# 3. a schema that does not compile is a 400 naming the field
for bad, field in [({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "properties": {"a": {"type": "no-such-type"}}}}}, "response_format"),
                   ({"type": "yaml"}, "response_format.type"),
                   ({"type": "json_schema", "json_schema": {"name": "x"}}, "response_format.json_schema.schema")]:
    try:
        client.chat.completions.create(model=model, messages=messages, max_tokens=4, response_format=bad)
        raise AssertionError(f"{bad} was accepted")
    except openai.BadRequestError as err:
        body = err.body.get("error", err.body) if isinstance(err.body, dict) else {}
        assert body.get("param") == field, (bad, err.body)

# 4. GET /v1/heads says what a weight's size means and shows the defaults
import urllib.request
req = urllib.request.Request(base + "/v1/heads", headers={"Authorization": f"Bearer {key}"})
heads = json.load(urllib.request.urlopen(req))
assert "λ = 12" in heads["weights"] and heads["params"]["lambda"] == 12.0, heads["weights"]

print("openai steering: all checks passed")
