#!/usr/bin/env bash
# kiln and Hugging Face transformers side by side on the 124M-parameter GPT-2 architecture
# (random weights, made offline by crates/kiln/tests/fixtures/gpt2-tiny/make_fixture.py
# --full; its tokenizer's merges are not GPT-2's, which changes nothing timed here):
#   1. import: `kiln import gpt2 DIR` wall time and peak RSS;
#   2. logits: every position of a 64-token prompt, kiln against transformers (max |Δ|);
#   3. generation: 200 new tokens after the prompt, greedy, KV cache, batch 1 (tokens/s;
#      also whether the two greedy continuations agree);
#   4. fine-tuning: ms/step at batch 4, context 256, Adam, dropout 0 (`kiln train --init`
#      against a PyTorch training loop on GPT2LMHeadModel), on tiny Shakespeare, the first
#      (warm-up) step left out on both sides.
# Prints a Markdown table (also bench/out/gpt2.md and bench/out/gpt2.json).
#
#   bench/gpt2.sh                       # FT_STEPS=6 GEN_TOKENS=200
#   GPT2_DIR=/path/to/gpt2 bench/gpt2.sh   # a real checkpoint folder instead
#
# Needs: a release build (cargo build --release --workspace; this script does not build),
# the PyTorch virtual environment with transformers ($PEERS/torch, ../shared/peers/setup.sh)
# and tiny Shakespeare in $KILN_DATA/shakespeare/input.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
PEERS=${PEERS:-/tmp/kiln-peers}
SHARED=${SHARED:-$(cd .. && pwd)/shared}
export KILN_DATA=${KILN_DATA:-$SHARED/data}
KILN=${KILN:-./target/release/kiln}
BENCH=${BENCH:-./target/release/kiln-bench}
PY=$PEERS/torch/bin/python
GPT2_DIR=${GPT2_DIR:-/tmp/kiln-gpt2-124m}
GEN_TOKENS=${GEN_TOKENS:-200}
FT_STEPS=${FT_STEPS:-6}
TEXT=$KILN_DATA/shakespeare/input.txt
OUT=bench/out
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

fail() { echo "gpt2.sh: $*" >&2; exit 1; }
[ -x "$KILN" ] && [ -x "$BENCH" ] || fail "build first: cargo build --release --workspace"
[ -x "$PY" ] || fail "missing $PY: run $SHARED/peers/setup.sh $PEERS"
[ -f "$TEXT" ] || fail "missing $TEXT (set KILN_DATA)"
mkdir -p "$OUT"
if [ ! -f "$GPT2_DIR/model.safetensors" ]; then
  echo "== making the 124M checkpoint in $GPT2_DIR"
  "$PY" crates/kiln/tests/fixtures/gpt2-tiny/make_fixture.py --full "$GPT2_DIR" > /dev/null
fi
MODEL=$WORK/gpt2.safetensors

echo "== import"
/usr/bin/time -f "%e %M" -o "$WORK/import.time" "$KILN" import gpt2 "$GPT2_DIR" --out "$MODEL"
read -r IMPORT_S IMPORT_KB < "$WORK/import.time"

PROMPT="ROMEO: But soft, what light through yonder window breaks? It is the east, and Juliet is the sun."
IDS=$("$KILN" tokenize "$MODEL" --text "$PROMPT" | tr -d '[] \n')
IDS64=$("$KILN" tokenize "$MODEL" --text "$(head -c 400 "$TEXT")" | tr -d '[] \n' | cut -d, -f1-64)

echo "== logits"
"$BENCH" logits "$MODEL" --ids "$IDS64" --out "$WORK/kiln.f32" > /dev/null
"$PY" bench/hf_gpt2.py logits "$GPT2_DIR" "$IDS64" "$WORK/hf.f32" > /dev/null
MAX_DIFF=$("$PY" -c "import numpy as n; a=n.fromfile('$WORK/kiln.f32','<f4'); b=n.fromfile('$WORK/hf.f32','<f4'); print(f'{abs(a-b).max():.2e}')")

echo "== generation ($GEN_TOKENS tokens, greedy, KV cache)"
KILN_GEN=$("$KILN" generate "$MODEL" --prompt "$PROMPT" --tokens "$GEN_TOKENS" --temperature 0 2>&1 >/dev/null | grep -o '[0-9.]* tokens/s' | cut -d' ' -f1)
HF_GEN_JSON=$("$PY" bench/hf_gpt2.py generate "$GPT2_DIR" "$IDS" "$GEN_TOKENS")
HF_GEN=$(echo "$HF_GEN_JSON" | "$PY" -c "import json,sys; print(f\"{json.load(sys.stdin)['tokens_per_s']:.1f}\")")

echo "== fine-tuning ($FT_STEPS steps, batch 4, context 256)"
cat > "$WORK/ft.toml" <<SPEC
name = "gpt2-ft"
[data]
path = "$TEXT"
[model]
type = "gpt"
layers = 12
heads = 12
width = 768
context = 256
tie_weights = true
activation = "gelu_new"
[training]
steps = $FT_STEPS
batch_size = 4
eval_interval = 100000
eval_batches = 1
optimizer = { type = "adam", learning_rate = 1e-4 }
SPEC
# kiln reports the mean over all steps, the first included (it touches every weight and
# buffer for the first time); transformers' figure is the median after its first step. So
# kiln runs once for 1 step and once for all, and the steady step is what the rest took.
kiln_ms_per_step() {
  sed "s/^steps = .*/steps = $1/" "$WORK/ft.toml" > "$WORK/ft-$1.toml"
  rm -rf "$WORK/run"
  "$KILN" train "$WORK/ft-$1.toml" --init "$MODEL" --run-dir "$WORK/run" --no-checkpoint --quiet | grep -o '[0-9.]* ms/step' | cut -d' ' -f1
}
KILN_FT_FIRST=$(kiln_ms_per_step 1)
KILN_FT_ALL=$(kiln_ms_per_step "$FT_STEPS")
KILN_FT=$("$PY" -c "print(f'{($KILN_FT_ALL * $FT_STEPS - $KILN_FT_FIRST) / ($FT_STEPS - 1):.0f}')")
HF_FT=$("$PY" bench/hf_gpt2.py finetune "$GPT2_DIR" "$TEXT" "$FT_STEPS" 4 256 | "$PY" -c "import json,sys; print(f\"{json.load(sys.stdin)['ms_per_step']:.0f}\")")

RATIO_GEN=$("$PY" -c "print(f'{$KILN_GEN/$HF_GEN:.2f}')")
RATIO_FT=$("$PY" -c "print(f'{$KILN_FT/$HF_FT:.2f}')")
{
  echo "| 124M GPT-2 ($(nproc) cores, $(date -u +%F)) | kiln | transformers | ratio |"
  echo "|---|---|---|---|"
  echo "| import (wall, peak RSS) | ${IMPORT_S} s, $((IMPORT_KB / 1024)) MiB | | |"
  echo "| logits, 64 positions | max abs difference $MAX_DIFF | | |"
  echo "| generation, $GEN_TOKENS tokens greedy, KV cache, batch 1 (tokens/s) | $KILN_GEN | $HF_GEN | ${RATIO_GEN}× |"
  echo "| fine-tuning, batch 4 × 256 (ms/step) | $KILN_FT | $HF_FT | ${RATIO_FT}× |"
} | tee "$OUT/gpt2.md"
"$PY" -c "import json; print(json.dumps({'import_s': $IMPORT_S, 'import_kb': $IMPORT_KB, 'max_logit_difference': $MAX_DIFF, 'kiln_tokens_per_s': $KILN_GEN, 'hf_tokens_per_s': $HF_GEN, 'kiln_ms_per_step': $KILN_FT, 'hf_ms_per_step': $HF_FT}))" > "$OUT/gpt2.json"
