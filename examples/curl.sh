#!/usr/bin/env bash
# The HTTP API with curl. Start the server first: cargo run --release -- serve
set -euo pipefail
URL="${DEAL_URL:-http://127.0.0.1:8080}"
AUTH=(-H "Authorization: Bearer ${DEAL_API_KEY:-none}")

echo "# models and heads"
curl -s "${AUTH[@]}" "$URL/v1/models"; echo
curl -s "${AUTH[@]}" "$URL/v1/heads" | head -c 300; echo " ..."

echo "# plain chat completion"
curl -s "${AUTH[@]}" "$URL/v1/chat/completions" -H 'Content-Type: application/json' -d '{
  "model": "deal", "max_tokens": 24, "temperature": 0,
  "messages": [{"role": "user", "content": "Write one sentence about lighthouses."}]}'; echo

echo "# streaming (server-sent events)"
curl -sN "${AUTH[@]}" "$URL/v1/chat/completions" -H 'Content-Type: application/json' -d '{
  "model": "deal", "max_tokens": 12, "stream": true,
  "messages": [{"role": "user", "content": "Describe a rainy afternoon."}]}'; echo

echo "# aligned: more positive, about 15 words"
curl -s "${AUTH[@]}" "$URL/v1/chat/completions" -H 'Content-Type: application/json' -d '{
  "model": "deal", "max_tokens": 32,
  "messages": [{"role": "user", "content": "How was your day?"}],
  "alignment": {"controller": "deal", "weights": {"sentiment": 1.0, "length": 0.5},
                "heads": {"length": {"target": 15}},
                "params": {"k": 4, "l": 4, "beams": 2, "lambda": 2.0}}}'; echo

echo "# an invalid request: OpenAI-style 400"
curl -s "${AUTH[@]}" "$URL/v1/chat/completions" -H 'Content-Type: application/json' -d '{
  "model": "deal", "messages": [{"role": "user", "content": "hi"}],
  "alignment": {"weights": {"nonexistent": 1}}}'; echo
