"""Streaming: text arrives as the search commits it (server-sent events).

    python3 examples/python/stream.py
"""
import os

from openai import OpenAI

client = OpenAI(base_url=os.environ.get("DEAL_URL", "http://127.0.0.1:8080") + "/v1",
                api_key=os.environ.get("DEAL_API_KEY", "none"))
model = client.models.list().data[0].id

stream = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "Describe a rainy afternoon."}],
    max_tokens=40,
    stream=True,
    stream_options={"include_usage": True},
)
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        print(chunk.choices[0].delta.content, end="", flush=True)
    if chunk.usage:
        print(f"\n[{chunk.usage.completion_tokens} tokens]")
