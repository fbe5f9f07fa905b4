"""Plain chat completion against `deal serve` with the official `openai` client.

    cargo run --release -- serve &          # http://127.0.0.1:8080
    python3 examples/python/chat.py

DEAL_URL (default http://127.0.0.1:8080) and DEAL_API_KEY (if the server has --api-key) are read.
"""
import os

from openai import OpenAI

client = OpenAI(base_url=os.environ.get("DEAL_URL", "http://127.0.0.1:8080") + "/v1",
                api_key=os.environ.get("DEAL_API_KEY", "none"))
model = client.models.list().data[0].id

reply = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "Write one sentence about lighthouses."}],
    max_tokens=32,
    temperature=0,
)
print(reply.choices[0].message.content.strip())
print(f"[{reply.usage.prompt_tokens} prompt + {reply.usage.completion_tokens} completion tokens, "
      f"finish: {reply.choices[0].finish_reason}]")
