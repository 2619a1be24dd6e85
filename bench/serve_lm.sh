#!/usr/bin/env bash
# `kiln serve` generating for many clients at once, on the 6-layer, 384-wide, context-256
# character GPT (the spec of examples/shakespeare-char-gpt.toml with that [model], trained
# one step: the weights do not change the cost, and every runner uses this same file):
#   1. kiln serve under bench/serve_lm_load.py at concurrency 1, 8 and 32: each client sends
#      streamed completions of exactly TOKENS tokens after "ROMEO:" (temperature 0.8,
#      top-k 40) one after another; aggregate tokens/s and time to first token p50/p99;
#   2. `kiln generate` alone on the same model (tokens/s, for reference);
#   3. Hugging Face transformers' `generate` on the same weights (bench/hf_generate_kiln_gpt.py:
#      KV cache, same sampling, 2 threads, denormals flushed), after checking that its
#      greedy continuation equals kiln's.
# Prints a Markdown table (also bench/out/serve_lm.md and bench/out/serve_lm.json).
#
#   bench/serve_lm.sh                    # TOKENS=200
#   MODEL=q8.safetensors bench/serve_lm.sh   # another kiln GPT file (an int8 one, say)
#
# Needs: a release build (cargo build --release), the PyTorch virtual environment with
# transformers ($PEERS/torch, ../shared/peers/setup.sh) and tiny Shakespeare in
# $KILN_DATA/shakespeare/input.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
PEERS=${PEERS:-/tmp/kiln-peers}
SHARED=${SHARED:-$(cd .. && pwd)/shared}
export KILN_DATA=${KILN_DATA:-$SHARED/data}
KILN=${KILN:-./target/release/kiln}
PY=$PEERS/torch/bin/python
TOKENS=${TOKENS:-200}
OUT=bench/out
WORK=$(mktemp -d)
SERVER=
trap '[ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null; rm -rf "$WORK"' EXIT

fail() { echo "serve_lm.sh: $*" >&2; exit 1; }
[ -x "$KILN" ] || fail "build first: cargo build --release"
[ -x "$PY" ] || fail "missing $PY: run $SHARED/peers/setup.sh $PEERS"
mkdir -p "$OUT"

if [ -z "${MODEL:-}" ]; then
  MODEL=$WORK/gpt-sized.safetensors
  sed -e 's/^layers = .*/layers = 6/' -e 's/^heads = .*/heads = 6/' -e 's/^width = .*/width = 384/' \
      -e "s/^context = .*/context = 256/" -e "s/^eval_batches = .*/eval_batches = 1/" examples/shakespeare-char-gpt.toml > "$WORK/spec.toml"
  echo "== the model: one training step of the 6-layer, 384-wide GPT"
  "$KILN" train "$WORK/spec.toml" --steps 1 --quiet --no-checkpoint --run-dir "$WORK/run" --out "$MODEL" > /dev/null
fi
PROMPT="ROMEO:"

echo "== kiln serve"
"$KILN" serve "lm=$MODEL" --port 0 --max-sequences 64 --max-tokens "$TOKENS" > "$WORK/serve.out" 2> "$WORK/serve.err" &
SERVER=$!
for _ in $(seq 100); do grep -q listening "$WORK/serve.out" 2>/dev/null && break; sleep 0.1; done
ADDR=$(sed -n 's|.*http://\([^ ]*\).*|\1|p' "$WORK/serve.out")
[ -n "$ADDR" ] || fail "kiln serve did not start: $(cat "$WORK/serve.err")"
: > "$WORK/load.jsonl"
for level in "1 5" "8 3" "32 2"; do
  set -- $level
  echo "   concurrency $1"
  "$PY" bench/serve_lm_load.py "$ADDR" lm "$1" "$2" "$TOKENS" "$PROMPT" >> "$WORK/load.jsonl"
done
kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=

echo "== kiln generate"
"$KILN" generate "$MODEL" --prompt "$PROMPT" --tokens "$TOKENS" --temperature 0.8 --top-k 40 --seed 1 \
  2> "$WORK/generate.err" > /dev/null
GENERATE_RATE=$(sed -n 's/.*(\([0-9.]*\) tokens\/s.*/\1/p' "$WORK/generate.err")
GREEDY=$("$KILN" generate "$MODEL" --prompt "$PROMPT" --tokens 50 --temperature 0 2> /dev/null)
GREEDY=${GREEDY#"$PROMPT"}

echo "== transformers generate"
"$PY" bench/hf_generate_kiln_gpt.py "$MODEL" "$PROMPT" "$TOKENS" "$GREEDY" > "$WORK/hf.json"

"$PY" - "$WORK/load.jsonl" "$WORK/hf.json" "$GENERATE_RATE" "$TOKENS" "$OUT" <<'PY'
import json, sys
load_path, hf_path, generate_rate, tokens, out = sys.argv[1:6]
load = [json.loads(l) for l in open(load_path)]
hf = json.load(open(hf_path))
single = load[0]["tokens_per_s"]
lines = [f"6-layer, 384-wide, context-256 GPT; {tokens} tokens per request, temperature 0.8, top-k 40.", "",
         "| concurrency | requests | aggregate tokens/s | vs 1 stream | TTFT p50 / p99 ms |", "|---|---|---|---|---|"]
for r in load:
    lines.append(f"| {r['concurrency']} | {r['requests']} | {r['tokens_per_s']:.0f} | {r['tokens_per_s'] / single:.2f}x "
                 f"| {r['ttft_p50_ms']:.1f} / {r['ttft_p99_ms']:.1f} |")
lines += ["", f"Single stream: kiln serve {single:.0f} tokens/s, kiln generate {float(generate_rate):.0f}, "
          f"{hf['peer']} generate {hf['tokens_per_s']:.0f} (kiln serve ÷ transformers {single / hf['tokens_per_s']:.2f}x; "
          f"greedy continuations agree: {hf['greedy_agrees']})."]
text = "\n".join(lines)
print(text)
open(f"{out}/serve_lm.md", "w").write(text + "\n")
json.dump({"load": load, "kiln_generate_tokens_per_s": float(generate_rate), "transformers": hf},
          open(f"{out}/serve_lm.json", "w"), indent=1)
PY
