"""Steering a reply per request: the `alignment` object travels in `extra_body`; the response
carries the per-head breakdown and the search stats in its `alignment` field.

    python3 examples/python/alignment.py
"""
import os

from openai import OpenAI

client = OpenAI(base_url=os.environ.get("DEAL_URL", "http://127.0.0.1:8080") + "/v1",
                api_key=os.environ.get("DEAL_API_KEY", "none"))
model = client.models.list().data[0].id
question = "Write a sentence using the words: dog, park, ball."

for weights in ({"keywords": 0.0, "sentiment": 1.0}, {"keywords": 1.0, "sentiment": 0.2}):
    reply = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": question}],
        max_tokens=24,
        extra_body={"alignment": {
            "controller": "deal",
            "weights": weights,
            "heads": {"keywords": {"words": ["dog", "park", "ball"]}},
            "params": {"k": 4, "l": 4, "beams": 2, "lambda": 4.0},
        }},
    )
    alignment = reply.model_extra["alignment"]
    print(f"weights {weights}")
    print("  ", reply.choices[0].message.content.strip())
    for h in alignment["heads"]:
        print(f"   {h['head']:<10} normalised {h['normalized']:.3f} x {h['weight']:.1f} = {h['contribution']:.3f}")
    stats = alignment["stats"]
    print(f"   total {alignment['total']:.3f}; {stats['forward_passes']} forward passes, "
          f"{stats['rows_evaluated']} rows, {stats['wall_secs']:.2f}s")
