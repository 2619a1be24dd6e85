#!/usr/bin/env bash
# Compression of the reference MLP, in one sitting: trains examples/mnist-mlp.toml once, then
# runs `kiln compress` five ways on it (int8 static, int8 dynamic, f16, 80% magnitude
# pruning with 2 fine-tuning epochs, 50% structured pruning with 2 fine-tuning epochs); then
# the same for the CNN of examples/mnist-cnn.toml (int8, 80% pruning per kernel and global, 50% of filters, 80%
# global pruning then int8).
# Collects each before/after table into bench/out/compress.md.
#
#   bench/compress.sh
#
# Needs a release build (cargo build --release) and MNIST in $KILN_DATA/mnist (default
# ../shared/data). Latency and throughput are measured by kiln compress on the test split;
# the "before" columns are re-measured in every run, so compare each row's ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
export KILN_DATA=${KILN_DATA:-$(cd .. && pwd)/shared/data}
KILN=${KILN:-./target/release/kiln}
OUT=bench/out
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT"
[ -x "$KILN" ] || { echo "compress.sh: $KILN is missing: run 'cargo build --release' first" >&2; exit 1; }

"$KILN" train examples/mnist-mlp.toml --quiet --no-checkpoint --run-dir "$WORK/run" --out "$WORK/mlp.safetensors" >&2
{
  echo "Reference MLP (examples/mnist-mlp.toml), one trained model, compressed five ways (\`bench/compress.sh\`)."
  for variant in "int8:--quantize int8" "dynamic:--quantize dynamic" "f16:--quantize f16" \
                 "pruned80:--prune 0.8 --finetune-epochs 2" "units50:--prune 0.5 --structured --finetune-epochs 2"; do
    name=${variant%%:*}
    # shellcheck disable=SC2086 # the options are meant to split
    "$KILN" compress "$WORK/mlp.safetensors" --out "$WORK/$name.safetensors" ${variant#*:} | grep -v '^saved'
    echo
  done

  # The CNN, trained its full 12 epochs (about a minute), compressed five ways.
  "$KILN" train examples/mnist-cnn.toml --quiet --no-checkpoint --run-dir "$WORK/cnn-run" --out "$WORK/cnn.safetensors" >&2
  echo "CNN (examples/mnist-cnn.toml), one trained model, compressed five ways."
  for variant in "cnn-int8:--quantize int8" "cnn-pruned80:--prune 0.8 --finetune-epochs 2" \
                 "cnn-global80:--prune 0.8 --global --finetune-epochs 2" \
                 "cnn-filters50:--prune 0.5 --structured --finetune-epochs 2" \
                 "cnn-global80-int8:--prune 0.8 --global --finetune-epochs 2 --quantize int8"; do
    name=${variant%%:*}
    # shellcheck disable=SC2086 # the options are meant to split
    "$KILN" compress "$WORK/cnn.safetensors" --out "$WORK/$name.safetensors" ${variant#*:} | grep -v '^saved'
    echo
  done
} | tee "$OUT/compress.md"
