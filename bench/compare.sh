#!/usr/bin/env bash
# Side by side, in one sitting: the reference MLP (784-512-10, ReLU, dropout 0.2, softmax;
# Adam 1e-3; batch 64; last 20% held out) trained by kiln, Keras and PyTorch on the same
# MNIST files, one after another, repeated ROUNDS times alternating. Then the machine's
# large-matmul rate (kiln's effective training GFLOP/s as a fraction of it) and inference:
# batch-1 latency and batch-1024 throughput of kiln's predict path against PyTorch's.
# Prints Markdown tables (also written to bench/out/compare.md and .json) with ratios.
#
#   bench/compare.sh [EPOCHS=10] [ROUNDS=1]
#
# Needs: the peers' virtual environments (../shared/peers/setup.sh /tmp/kiln-peers, or
# PEERS=DIR) and MNIST in $KILN_DATA/mnist (default ../shared/data). Set WITH_TORCH_DEFAULT=1
# to also run PyTorch without flushing denormals (about 20 s/epoch here).
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS=${1:-10}
ROUNDS=${2:-1}
PEERS=${PEERS:-/tmp/kiln-peers}
SHARED=${SHARED:-$(cd .. && pwd)/shared}
export KILN_DATA=${KILN_DATA:-$SHARED/data}
OUT=bench/out
mkdir -p "$OUT"
: > "$OUT/runs.jsonl"

cargo build --release --quiet
for py in "$PEERS/tf/bin/python" "$PEERS/torch/bin/python"; do
  [ -x "$py" ] || { echo "missing $py: run $SHARED/peers/setup.sh $PEERS" >&2; exit 1; }
done

# Peak RSS (KiB) of a command, recorded beside its one-line JSON result.
run() {
  local label=$1; shift
  local json rss
  json=$( { /usr/bin/time -f "RSS %M" "$@" 2> "$OUT/$label.err" | tail -n 1; } )
  rss=$(grep -o 'RSS [0-9]*' "$OUT/$label.err" | tail -n 1 | cut -d' ' -f2)
  python3 - "$label" "$rss" "$json" >> "$OUT/runs.jsonl" <<'PY'
import json, sys
label, rss, line = sys.argv[1], sys.argv[2], sys.argv[3]
r = json.loads(line)
print(json.dumps({"label": label, "s_per_epoch": r["s_per_epoch"], "test_acc": r.get("test_acc", r.get("test_accuracy")),
                  "rss_mb": round(int(rss) / 1024, 1)}))
PY
  tail -n 1 "$OUT/runs.jsonl"
}

kiln_run() {
  rm -rf "$OUT/kiln-run"
  ./target/release/kiln train examples/mnist-mlp.toml --epochs "$EPOCHS" --quiet --no-checkpoint --run-dir "$OUT/kiln-run" --report "$OUT/kiln-report.json" \
    --out "$OUT/kiln-mlp.safetensors" > "$OUT/kiln.log"
  cat "$OUT/kiln-report.json" | python3 -c 'import json,sys; r=json.load(sys.stdin); print(json.dumps({"s_per_epoch": r["s_per_epoch"], "test_acc": r["test_accuracy"]}))'
}
export -f kiln_run
export EPOCHS OUT

for round in $(seq 1 "$ROUNDS"); do
  echo "== round $round/$ROUNDS ($EPOCHS epochs each)" >&2
  run kiln bash -c kiln_run
  run keras "$PEERS/tf/bin/python" "$SHARED/peers/keras_seed_mlp.py" "$KILN_DATA/mnist" "$EPOCHS"
  run pytorch-ftz "$PEERS/torch/bin/python" "$SHARED/peers/torch_seed_mlp.py" "$KILN_DATA/mnist" "$EPOCHS" ftz
  if [ "${WITH_TORCH_DEFAULT:-0}" = 1 ]; then
    run pytorch "$PEERS/torch/bin/python" "$SHARED/peers/torch_seed_mlp.py" "$KILN_DATA/mnist" "$EPOCHS"
  fi
done

echo "== roofline and inference" >&2
./target/release/kiln-bench roofline > "$OUT/roofline.jsonl"
: > "$OUT/predict.jsonl"
for round in 1 2 3; do
  ./target/release/kiln-bench predict "$OUT/kiln-mlp.safetensors" >> "$OUT/predict.jsonl"
  "$PEERS/torch/bin/python" bench/torch_predict.py >> "$OUT/predict.jsonl"
done

python3 - "$OUT" "$EPOCHS" "$ROUNDS" <<'PY'
import json, statistics, sys, platform, os
out, epochs, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
runs = [json.loads(l) for l in open(f"{out}/runs.jsonl")]
labels = list(dict.fromkeys(r["label"] for r in runs))
rows = {}
for label in labels:
    mine = [r for r in runs if r["label"] == label]
    rows[label] = {
        "s_per_epoch": statistics.median(r["s_per_epoch"] for r in mine),
        "test_acc": statistics.median(r["test_acc"] for r in mine),
        "rss_mb": max(r["rss_mb"] for r in mine),
    }
kiln = rows["kiln"]["s_per_epoch"]
# On a shared machine a burst of load can slow one whole run; runs of the same round sit
# next to each other in time, so the median of per-round ratios is the sturdier figure.
by_round = [runs[i:i + len(labels)] for i in range(0, len(runs), len(labels))]
def round_ratio(label):
    ratios = [{r["label"]: r["s_per_epoch"] for r in rnd}[label] / {r["label"]: r["s_per_epoch"] for r in rnd}["kiln"]
              for rnd in by_round]
    return statistics.median(ratios)
lines = [f"Reference MLP on MNIST, {epochs} epochs, batch 64, median of {rounds} alternating round(s), "
         f"{os.cpu_count()} cores ({platform.machine()}). s/epoch = fit time / epochs, validation included.", "",
         "| framework | s/epoch | test accuracy | peak RSS (MB) | kiln speed-up (median per round) |",
         "|---|---|---|---|---|"]
for label, r in rows.items():
    ratio = "—" if label == "kiln" else f"{r['s_per_epoch'] / kiln:.1f}× ({round_ratio(label):.1f}×)"
    r["speedup_per_round"] = None if label == "kiln" else round_ratio(label)
    lines.append(f"| {label} | {r['s_per_epoch']:.3f} | {r['test_acc']:.4f} | {r['rss_mb']:.0f} | {ratio} |")

# Roofline: every product of an epoch counted exactly (48,000 training samples in batches of
# 64: forward and weight gradients of both layers, the input gradient of the second; the
# first layer's input gradient is never computed), plus the 12,000-sample validation pass.
train_n, val_n, width = 48000, 12000, 512
per_sample = 784 * width + width * 10
flops = 2 * train_n * per_sample * 2 + 2 * train_n * width * 10 + 2 * val_n * per_sample
peak = json.loads(open(f"{out}/roofline.jsonl").readline())["gflops"]
effective = flops / rows["kiln"]["s_per_epoch"] / 1e9
lines += ["", f"Roofline: {flops / 1e9:.1f} GFLOP per epoch; this machine's 1024³ matmul through kiln's gemm path "
          f"runs at {peak:.0f} GFLOP/s; kiln trains at {effective:.0f} GFLOP/s effective, "
          f"{effective / peak:.0%} of it."]

preds = [json.loads(l) for l in open(f"{out}/predict.jsonl")]
def med(fw, key):
    return statistics.median(p[key] for p in preds if p["framework"].startswith(fw))
k50, t50 = med("kiln", "batch1_p50_us"), med("pytorch", "batch1_p50_us")
k99, t99 = med("kiln", "batch1_p99_us"), med("pytorch", "batch1_p99_us")
kt, tt = med("kiln", "batch1024_samples_per_s"), med("pytorch", "batch1024_samples_per_s")
lines += ["", "Inference on the trained reference model (median of 3 alternating rounds):", "",
          "| | kiln | PyTorch (FTZ, eval, no_grad) | kiln ÷ PyTorch |", "|---|---|---|---|",
          f"| batch-1 latency p50 | {k50:.1f} µs | {t50:.1f} µs | {k50 / t50:.2f} |",
          f"| batch-1 latency p99 | {k99:.1f} µs | {t99:.1f} µs | {k99 / t99:.2f} |",
          f"| batch-1024 throughput | {kt:,.0f} samples/s | {tt:,.0f} samples/s | {kt / tt:.2f} |"]
table = "\n".join(lines)
print(table)
open(f"{out}/compare.md", "w").write(table + "\n")
json.dump({"epochs": epochs, "rounds": rounds, "results": rows, "gflop_per_epoch": flops / 1e9, "peak_gflops": peak,
           "effective_gflops": effective, "inference": {"kiln": {"p50_us": k50, "p99_us": k99, "per_s": kt},
           "pytorch": {"p50_us": t50, "p99_us": t99, "per_s": tt}}}, open(f"{out}/compare.json", "w"), indent=2)
PY
