#!/usr/bin/env bash
# kiln against kiln: two builds (say, the release before a change and this one) train the
# reference MLP (3 epochs), the MNIST CNN (1 epoch) and the char GPT (300 steps),
# alternating, ROUNDS times, in one sitting. Prints one line per run: build, model, figure.
#
#   A=/path/to/old/kiln B=target/release/kiln bench/ab.sh [ROUNDS=3]
#
# Needs MNIST and tiny Shakespeare in $KILN_DATA (default ../shared/data).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
A=${A:?set A to the first kiln binary}
B=${B:-target/release/kiln}
export KILN_DATA=${KILN_DATA:-$(cd .. && pwd)/shared/data}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
figure() { python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(r.get(sys.argv[2]))" "$OUT/report.json" "$1"; }
for round in $(seq "$ROUNDS"); do
  for build in A B; do
    bin=${!build}
    rm -rf "$OUT/run"; "$bin" train examples/mnist-mlp.toml --epochs 3 --quiet --no-checkpoint --run-dir "$OUT/run" --report "$OUT/report.json" > /dev/null
    echo "$build mlp s/epoch $(figure median_epoch_seconds) test_accuracy $(figure test_accuracy)"
    rm -rf "$OUT/run"; "$bin" train examples/mnist-cnn.toml --epochs 1 --quiet --no-checkpoint --run-dir "$OUT/run" --report "$OUT/report.json" > /dev/null
    echo "$build cnn s/epoch $(figure median_epoch_seconds) test_accuracy $(figure test_accuracy)"
    rm -rf "$OUT/run"; "$bin" train examples/shakespeare-char-gpt.toml --steps 300 --quiet --run-dir "$OUT/run" --report "$OUT/report.json" > /dev/null
    echo "$build gpt ms/step $(figure ms_per_step) val_loss $(figure val_loss)"
  done
done
