#!/usr/bin/env bash
# Side by side, in one sitting: kiln's MNIST CNN (examples/mnist-cnn.toml: Conv 32 3x3 relu ->
# MaxPool 2 -> Conv 64 3x3 relu -> MaxPool 2 -> Flatten -> Dropout 0.25 -> Dense 128 relu ->
# Dropout 0.5 -> Dense 10 softmax; Adam 1e-3; sparse categorical cross-entropy; or, with
# SPEC=examples/mnist-cnn-classic.toml, the classic Keras MNIST CNN) trained by kiln,
# Keras and PyTorch (denormals flushed) on the same MNIST files, one after another, repeated
# ROUNDS times alternating. Issue 6's acceptance: kiln s/epoch <= 0.7 x PyTorch-FTZ's and
# <= 0.5 x Keras's. Prints a Markdown table (also bench/out/compare-cnn.md and .json).
#
#   bench/compare_cnn.sh [EPOCHS=12] [ROUNDS=1]
#
# The peers take batch size and validation split from the spec's [training] table (so all
# three train the same number of steps on the same split); BATCH=, VALIDATION_SPLIT= override
# both and are then passed to kiln's spec check only as a warning. SEED= (default 0) seeds
# the peers. WITH_TORCH_DEFAULT=1 also runs PyTorch without flushing denormals.
# TORCH_MEMORY_FORMAT= channels_last (default, see bench/peer_cnn.py) or channels_first.
# PEER_ARGS= extra arguments for both peers (e.g. "--subset 6000" for a smoke test of this
# script; the table is then not a comparison). SPEC=, KILN= point at another spec or binary.
#
# Needs: a release build (cargo build --release; this script does not build), the spec
# examples/mnist-cnn.toml, the peers' virtual environments (../shared/peers/setup.sh
# /tmp/kiln-peers, or PEERS=DIR) and MNIST in $KILN_DATA/mnist (default ../shared/data).
# Each full-data peer epoch takes tens of seconds on 2 cores: 12 epochs x 3 frameworks x
# ROUNDS is a long sitting. Run it on a quiet machine: PyTorch's OpenMP threads spin when a
# core is taken away and its times degrade far more than Keras's or kiln's under load; the
# load average around each run is recorded beside it.
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS=${1:-12}
ROUNDS=${2:-1}
PEERS=${PEERS:-/tmp/kiln-peers}
SHARED=${SHARED:-$(cd .. && pwd)/shared}
export KILN_DATA=${KILN_DATA:-$SHARED/data}
SPEC=${SPEC:-examples/mnist-cnn.toml}
KILN=${KILN:-./target/release/kiln}
OUT=bench/out
SEED=${SEED:-0}
TORCH_MEMORY_FORMAT=${TORCH_MEMORY_FORMAT:-channels_last}

fail() { echo "compare_cnn.sh: $*" >&2; exit 1; }
[[ $EPOCHS =~ ^[1-9][0-9]*$ ]] || fail "EPOCHS must be a positive integer, got '$EPOCHS'"
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || fail "ROUNDS must be a positive integer, got '$ROUNDS'"
[ -f "$SPEC" ] || fail "$SPEC is missing: the CNN spec (issue 6) has not been written yet"
[ -x "$KILN" ] || fail "$KILN is missing: run 'cargo build --release' first (this script does not build)"
if [ -n "$(find crates src -name '*.rs' -newer "$KILN" 2>/dev/null | head -n 1)" ]; then
  echo "compare_cnn.sh: warning: Rust sources are newer than $KILN; rebuild with 'cargo build --release' for current figures" >&2
fi
for py in "$PEERS/tf/bin/python" "$PEERS/torch/bin/python"; do
  [ -x "$py" ] || fail "missing $py: run $SHARED/peers/setup.sh $PEERS"
done
for f in train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz; do
  [ -f "$KILN_DATA/mnist/$f" ] || fail "missing $KILN_DATA/mnist/$f (set KILN_DATA)"
done
[ -x /usr/bin/time ] || fail "/usr/bin/time is needed to measure peak RSS"

# Batch size and validation split from the spec, so the peers train exactly what kiln trains.
read -r SPEC_BATCH SPEC_SPLIT < <(python3 - "$SPEC" <<'PY'
import sys, tomllib
t = tomllib.load(open(sys.argv[1], "rb")).get("training", {})
print(t.get("batch_size", 128), t.get("validation_split", 0.1))
PY
) || fail "could not read [training] from $SPEC"
BATCH=${BATCH:-$SPEC_BATCH}
VALIDATION_SPLIT=${VALIDATION_SPLIT:-$SPEC_SPLIT}
if [ "$BATCH" != "$SPEC_BATCH" ] || [ "$VALIDATION_SPLIT" != "$SPEC_SPLIT" ]; then
  echo "compare_cnn.sh: warning: peers use batch $BATCH, validation split $VALIDATION_SPLIT; $SPEC has $SPEC_BATCH, $SPEC_SPLIT" >&2
fi

mkdir -p "$OUT"
RUNS=$OUT/runs-cnn.jsonl
: > "$RUNS"

# Runs a command that prints a one-line JSON result last; records it with the command's peak
# RSS and CPU time (from /usr/bin/time) and the 1-minute load average before and after.
run() {
  local label=$1; shift
  local json load0 load1 code=0
  load0=$(cut -d' ' -f1 /proc/loadavg)
  json=$( { /usr/bin/time -f "RSS %M CPU %U %S" "$@" 2> "$OUT/cnn-$label.err" | tail -n 1; } ) || code=$?
  load1=$(cut -d' ' -f1 /proc/loadavg)
  [ "$code" = 0 ] && [ -n "$json" ] || fail "$label failed (exit $code); see $OUT/cnn-$label.err"
  python3 - "$label" "$OUT/cnn-$label.err" "$json" "$load0" "$load1" >> "$RUNS" <<'PY'
import json, re, sys
label, err, line, load0, load1 = sys.argv[1:6]
r = json.loads(line)
m = re.findall(r"RSS (\d+) CPU ([\d.]+) ([\d.]+)", open(err).read())[-1]
print(json.dumps({"label": label, "s_per_epoch": r["s_per_epoch"], "test_acc": r.get("test_acc", r.get("test_accuracy")),
                  "rss_mb": round(int(m[0]) / 1024, 1), "cpu_s": round(float(m[1]) + float(m[2]), 1),
                  "batch": r.get("batch"), "load_before": float(load0), "load_after": float(load1)}))
PY
  tail -n 1 "$RUNS" >&2
}

kiln_run() {
  rm -rf "$OUT/kiln-cnn-run"
  "$KILN" train "$SPEC" --epochs "$EPOCHS" --quiet --no-checkpoint --run-dir "$OUT/kiln-cnn-run" \
    --report "$OUT/kiln-cnn-report.json" > "$OUT/kiln-cnn.log"
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))
print(json.dumps({"s_per_epoch": r["s_per_epoch"], "test_acc": r["test_accuracy"], "batch": r.get("batch_size")}))' \
    "$OUT/kiln-cnn-report.json"
}
export -f kiln_run
export EPOCHS OUT KILN SPEC

PEER=(bench/peer_cnn.py --epochs "$EPOCHS" --batch "$BATCH" --validation-split "$VALIDATION_SPLIT" --seed "$SEED"
      --data "$KILN_DATA/mnist" --spec "$SPEC" ${PEER_ARGS:-})
for round in $(seq 1 "$ROUNDS"); do
  echo "== round $round/$ROUNDS ($EPOCHS epochs each, batch $BATCH, validation split $VALIDATION_SPLIT)" >&2
  run kiln bash -c kiln_run
  run keras "$PEERS/tf/bin/python" "${PEER[@]}" --framework keras
  run pytorch-ftz "$PEERS/torch/bin/python" "${PEER[@]}" --framework pytorch --memory-format "$TORCH_MEMORY_FORMAT"
  if [ "${WITH_TORCH_DEFAULT:-0}" = 1 ]; then
    run pytorch "$PEERS/torch/bin/python" "${PEER[@]}" --framework pytorch --memory-format "$TORCH_MEMORY_FORMAT" --no-ftz
  fi
done

python3 - "$OUT" "$EPOCHS" "$ROUNDS" "$BATCH" "$VALIDATION_SPLIT" "$TORCH_MEMORY_FORMAT" "$SPEC" <<'PY'
import json, statistics, sys, platform, os, tomllib
out, epochs, rounds, batch, split, torch_fmt = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), sys.argv[6]
spec_path = sys.argv[7]

def model_description():
    """The spec's name and its layers in short form, e.g. 32c3-pool2-128-10."""
    spec = tomllib.load(open(spec_path, "rb"))
    short = {"conv2d": lambda l: f"{l['filters']}c{l['kernel_size'] if isinstance(l['kernel_size'], int) else 'x'.join(map(str, l['kernel_size']))}",
             "max_pooling2d": lambda l: f"pool{l.get('pool_size', 2)}", "dropout": lambda l: f"drop{l['rate']:g}",
             "dense": lambda l: str(l["units"]), "batch_normalization": lambda l: "bn"}
    parts = [short[l["type"]](l) for l in spec["model"]["layers"] if l["type"] in short]
    return f"{spec.get('name', os.path.basename(spec_path))} ({'-'.join(parts)})"
runs = [json.loads(l) for l in open(f"{out}/runs-cnn.jsonl")]
labels = list(dict.fromkeys(r["label"] for r in runs))
# Issue 6's acceptance: kiln s/epoch at most this fraction of the peer's.
targets = {"keras": 0.5, "pytorch-ftz": 0.7}
by_round = [runs[i:i + len(labels)] for i in range(0, len(runs), len(labels))]
def per_round(label):
    # Runs of one round sit next to each other in time, so on a shared machine the median of
    # per-round ratios is the sturdier figure.
    return statistics.median({r["label"]: r["s_per_epoch"] for r in rnd}["kiln"] /
                             {r["label"]: r["s_per_epoch"] for r in rnd}[label] for rnd in by_round)
rows = {}
for label in labels:
    mine = [r for r in runs if r["label"] == label]
    rows[label] = {
        "s_per_epoch": statistics.median(r["s_per_epoch"] for r in mine),
        "s_per_epoch_all": [r["s_per_epoch"] for r in mine],
        "test_acc": statistics.median(r["test_acc"] for r in mine),
        "rss_mb": max(r["rss_mb"] for r in mine),
        "cpu_s": statistics.median(r["cpu_s"] for r in mine),
        "max_load": max(max(r["load_before"], r["load_after"]) for r in mine),
    }
kiln = rows["kiln"]["s_per_epoch"]
lines = [f"{model_description()}, {epochs} epochs, batch {batch}, "
         f"validation split {split:g}, median of {rounds} alternating round(s), {os.cpu_count()} cores "
         f"({platform.machine()}). s/epoch = fit time / epochs, validation included. "
         f"ratio = kiln s/epoch ÷ peer s/epoch (issue 6 target: ≤ 0.5 vs Keras, ≤ 0.7 vs PyTorch-FTZ); "
         f"PyTorch runs {torch_fmt}.", "",
         "| framework | s/epoch | test accuracy | peak RSS (MB) | CPU s (whole run) | kiln ratio (median per round) | kiln speed-up | target |",
         "|---|---|---|---|---|---|---|---|"]
for label, r in rows.items():
    if label == "kiln":
        r.update(ratio=None, ratio_per_round=None, speedup=None, target=None, meets_target=None)
        cells = ["—", "—", "—"]
    else:
        r["ratio"], r["ratio_per_round"] = kiln / r["s_per_epoch"], per_round(label)
        r["speedup"] = r["s_per_epoch"] / kiln
        r["target"] = targets.get(label)
        r["meets_target"] = None if r["target"] is None else r["ratio"] <= r["target"]
        verdict = "—" if r["target"] is None else f"≤ {r['target']}: {'met' if r['meets_target'] else 'NOT met'}"
        cells = [f"{r['ratio']:.2f} ({r['ratio_per_round']:.2f})", f"{r['speedup']:.1f}×", verdict]
    lines.append(f"| {label} | {r['s_per_epoch']:.2f} | {r['test_acc']:.4f} | {r['rss_mb']:.0f} | {r['cpu_s']:.0f} | "
                 + " | ".join(cells) + " |")
max_load = max(r["max_load"] for r in rows.values())
lines += ["", f"Highest 1-minute load average seen around a run: {max_load:.2f} on {os.cpu_count()} cores"
          + (" — the machine was busy; rerun for trustworthy ratios." if max_load > (os.cpu_count() or 2) + 0.5 else ".")]
table = "\n".join(lines)
print(table)
open(f"{out}/compare-cnn.md", "w").write(table + "\n")
json.dump({"model": model_description(), "epochs": epochs, "rounds": rounds, "batch": batch, "validation_split": split,
           "torch_memory_format": torch_fmt, "cores": os.cpu_count(), "targets": targets, "results": rows},
          open(f"{out}/compare-cnn.json", "w"), indent=2)
PY
