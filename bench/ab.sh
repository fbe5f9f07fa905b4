#!/usr/bin/env bash
# A/B two deal builds on this machine, interleaved (old, new, old, new...), so machine drift
# lands on both alike: `deal bench decode` (tok/s per batch size) and `deal bench search`
# (seconds per committed token per controller). Prints new/old speed ratios (median of the
# rounds; > 1 means the new build is faster). Used to check that a refactor kept the speed
# (the backends issue: within 3%) and to measure a kernel change.
#
#   bench/ab.sh OLD_DEAL_BINARY NEW_DEAL_BINARY [ROUNDS] [extra args for both benches...]
set -euo pipefail
old=${1:?old deal binary}; new=${2:?new deal binary}; rounds=${3:-3}; shift $(( $# < 3 ? $# : 3 ))
out=${DEAL_HOME:-$HOME/.cache/deal}/ab/$(date +%Y%m%d-%H%M%S); mkdir -p "$out"
for r in $(seq 1 "$rounds"); do
  for side in old new; do
    bin=$old; [ "$side" = new ] && bin=$new
    echo "round $r: $side decode" >&2
    "$bin" bench decode --no-peer --json "$out/decode-$side-$r.json" "$@" > /dev/null
    echo "round $r: $side search" >&2
    "$bin" bench search --naive-prompts 0 --json "$out/search-$side-$r.json" "$@" > /dev/null
  done
done
python3 - "$out" "$rounds" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def load(kind, side, r):
    return json.load(open(f"{out}/{kind}-{side}-{r}.json"))
def decode(side, r):
    return {f"decode b={p['batch']} tok/s": p.get("deal_tok_s", p.get("tok_per_s")) for p in load("decode", side, r)}
def search(side, r):
    j = load("search", side, r)
    pts = j["points"] if isinstance(j, dict) else j
    return {f"search {p['controller']} s/token": p["secs_per_token"] for p in pts if p.get("backend", "local") == "local"}
print(f"{'metric':<40} {'old':>10} {'new':>10} {'new speed / old':>16}")
for kind in (decode, search):
    keys = kind("old", 1).keys()
    for k in keys:
        ratios, olds, news = [], [], []
        for r in range(1, rounds + 1):
            o, n = kind("old", r).get(k), kind("new", r).get(k)
            if o is None or n is None: continue
            olds.append(o); news.append(n)
            ratios.append(n / o if "tok/s" in k else o / n)
        if ratios:
            print(f"{k:<40} {statistics.median(olds):>10.4g} {statistics.median(news):>10.4g} {statistics.median(ratios):>15.3f}x")
print(f"(median of {rounds} interleaved rounds; JSON in {out})")
PY
