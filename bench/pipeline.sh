#!/usr/bin/env bash
# The data pipeline's figures, in one sitting: the reference MLP on MNIST with and without
# augmentation (test accuracy, s/epoch, so the augmentation's cost per epoch is their
# difference); 5-fold cross-validation, a grid search and a 5-member bagged ensemble of the
# reference-shaped MLP on the embedded digits; and the wine example's cleaning. Writes
# bench/out/pipeline.md.
#
#   bench/pipeline.sh
#
# Needs a release build (cargo build --release) and MNIST in $KILN_DATA/mnist (default
# ../shared/data).
set -euo pipefail
cd "$(dirname "$0")/.."
export KILN_DATA=${KILN_DATA:-$(cd .. && pwd)/shared/data}
KILN=${KILN:-./target/release/kiln}
OUT=bench/out
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT"
[ -x "$KILN" ] || { echo "pipeline.sh: $KILN is missing: run 'cargo build --release' first" >&2; exit 1; }

summary() { grep '^test_loss' | sed 's/ - data.*//'; }
{
  echo "## Augmentation (reference MLP, MNIST, 10 epochs)"
  echo
  echo '```'
  echo "plain:     $("$KILN" train examples/mnist-mlp.toml --quiet --no-checkpoint --run-dir "$WORK/plain" | summary)"
  echo "augmented: $("$KILN" train examples/mnist-mlp-augmented.toml --quiet --no-checkpoint --run-dir "$WORK/aug" | summary)"
  echo '```'
  echo
  echo "## Cross-validation, search and bagging (examples/digits-mlp-reference.toml)"
  echo
  echo '```'
  "$KILN" cv examples/digits-mlp-reference.toml --folds 5
  echo
  "$KILN" tune examples/digits-mlp-reference.toml --space examples/digits-space.toml --folds 5 --out-dir "$WORK/tune" \
    | sed -n '/^rank/,$p' | grep -v '^wrote'
  echo
  "$KILN" ensemble examples/digits-mlp-reference.toml --members 5 --out "$WORK/bag.safetensors" | grep -v '^saved'
  echo '```'
  echo
  echo "## Cleaning (examples/wine.toml)"
  echo
  echo '```'
  "$KILN" train examples/wine.toml --no-checkpoint --run-dir "$WORK/wine" | grep -v '^Epoch\|^run folder\|^saved'
  echo '```'
} | tee "$OUT/pipeline.md"
