#!/usr/bin/env bash
# How cost grows with the work: the reference MLP at hidden width 128/512/2048 (batch 64)
# and batch 16/64/256 (width 512), for kiln, PyTorch (denormals flushed) and Keras, one
# after another at each point. Writes bench/out/sweep.json, sweep.md and sweep.svg.
#
#   bench/sweep.sh [EPOCHS=2]
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS=${1:-2}
PEERS=${PEERS:-/tmp/kiln-peers}
SHARED=${SHARED:-$(cd .. && pwd)/shared}
export KILN_DATA=${KILN_DATA:-$SHARED/data}
export KILN_PEERS_DIR=$SHARED/peers
OUT=bench/out
mkdir -p "$OUT"
: > "$OUT/sweep.jsonl"
cargo build --release --quiet

point() {
  local width=$1 batch=$2 spec="$OUT/sweep-$1-$2.toml"
  sed -e "s/units = 512/units = $width/" -e "s/batch_size = 64/batch_size = $batch/" examples/mnist-mlp.toml > "$spec"
  rm -rf "$OUT/sweep-run"
  ./target/release/kiln train "$spec" --epochs "$EPOCHS" --quiet --no-checkpoint --run-dir "$OUT/sweep-run" --report "$OUT/sweep-report.json" > /dev/null
  python3 -c "import json; r=json.load(open('$OUT/sweep-report.json')); print(json.dumps({'framework': 'kiln', 'width': $width, 'batch': $batch, 'epochs': $EPOCHS, 's_per_epoch': round(r['s_per_epoch'], 4), 'test_acc': round(r['test_accuracy'], 4)}))" | tee -a "$OUT/sweep.jsonl"
  "$PEERS/torch/bin/python" bench/peer_mlp.py torch "$KILN_DATA/mnist" "$EPOCHS" "$width" "$batch" | tee -a "$OUT/sweep.jsonl"
  "$PEERS/tf/bin/python" bench/peer_mlp.py keras "$KILN_DATA/mnist" "$EPOCHS" "$width" "$batch" 2>/dev/null | tail -n 1 | tee -a "$OUT/sweep.jsonl"
}

for width in 128 512 2048; do point "$width" 64; done
for batch in 16 256; do point 512 "$batch"; done
python3 bench/chart.py "$OUT/sweep.jsonl" "$OUT"
