#!/usr/bin/env bash
# Data-parallel scaling on this machine, in one sitting: the reference MLP (and the CNN)
# trained by one process with one thread, then by `mpirun -np 2 kiln train --distributed`
# with one thread per rank (same global batch, so the same steps), and the all-reduce
# times of Open MPI over shared memory and over TCP (loopback), with the ring cost model
# fitted to them and its predictions for 8 and 64 nodes. Writes bench/out/distributed.md
# and .json.
#
#   bench/distributed.sh [MLP_EPOCHS=5] [CNN_EPOCHS=1]     (CNN_EPOCHS=0 skips the CNN)
#
# Needs Open MPI (apt-get install libopenmpi-dev openmpi-bin libclang-dev) and MNIST in
# $KILN_DATA/mnist (default ../shared/data). Builds kiln with the `distributed` feature.
# Run it on a quiet machine: two ranks take both cores.
set -euo pipefail
cd "$(dirname "$0")/.."
MLP_EPOCHS=${1:-5}
CNN_EPOCHS=${2:-1}
export KILN_DATA=${KILN_DATA:-$(cd .. && pwd)/shared/data}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
OUT=bench/out
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT"

fail() { echo "distributed.sh: $*" >&2; exit 1; }
[[ $MLP_EPOCHS =~ ^[1-9][0-9]*$ ]] || fail "MLP_EPOCHS must be a positive integer, got '$MLP_EPOCHS'"
[[ $CNN_EPOCHS =~ ^[0-9]+$ ]] || fail "CNN_EPOCHS must be a whole number, got '$CNN_EPOCHS'"
command -v mpirun > /dev/null || fail "mpirun not found; install openmpi-bin"

cargo build --release -q -p kiln-cli --features distributed
cargo build --release -q -p kiln-dist --features mpi --bin allreduce-bench
KILN=./target/release/kiln

# run NAME SPEC EPOCHS RANKS: one training run with one thread per process, its report kept.
run() {
  local name=$1 spec=$2 epochs=$3 ranks=$4
  local report="$WORK/$name.json"
  echo "== $name ($ranks rank(s), 1 thread each), load $(cut -d' ' -f1 /proc/loadavg)" >&2
  if [ "$ranks" = 1 ]; then
    RAYON_NUM_THREADS=1 "$KILN" train "$spec" --epochs "$epochs" --quiet --no-checkpoint \
      --run-dir "$WORK/$name" --report "$report" >&2
  else
    mpirun -np "$ranks" -x RAYON_NUM_THREADS=1 "$KILN" train "$spec" --distributed \
      --epochs "$epochs" --quiet --no-checkpoint --run-dir "$WORK/$name" --report "$report" >&2
  fi
}

run mlp-1 examples/mnist-mlp.toml "$MLP_EPOCHS" 1
run mlp-2 examples/mnist-mlp.toml "$MLP_EPOCHS" 2
if [ "$CNN_EPOCHS" -gt 0 ]; then
  run cnn-1 examples/mnist-cnn-classic.toml "$CNN_EPOCHS" 1
  run cnn-2 examples/mnist-cnn-classic.toml "$CNN_EPOCHS" 2
fi

# One step of the MLP on one thread (batch 64), for the efficiency predictions.
STEP_MS=$(python3 -c "
import json; r = json.load(open('$WORK/mlp-1.json'))
h = r['history']; steps = 750
print(sorted(e['train_seconds'] for e in h)[len(h) // 2] / steps * 1e3)")
echo "== all-reduce over shared memory" >&2
mpirun -np 2 ./target/release/allreduce-bench --compute-ms-per-step "$STEP_MS" > "$WORK/shm.json"
echo "== all-reduce over TCP (loopback)" >&2
mpirun -np 2 --mca pml ob1 --mca btl tcp,self --mca btl_tcp_if_include lo \
  ./target/release/allreduce-bench --compute-ms-per-step "$STEP_MS" > "$WORK/tcp.json"

python3 - "$WORK" "$OUT" <<'EOF'
import json, statistics, sys
work, out = sys.argv[1], sys.argv[2]
load = lambda n: json.load(open(f"{work}/{n}.json"))
rows, data = [], {"training": {}, "all_reduce": {}}
for model in ["mlp", "cnn"]:
    try:
        one, two = load(f"{model}-1"), load(f"{model}-2")
    except FileNotFoundError:
        continue
    def figures(r):
        h = r["history"]
        share = sum(e.get("communication_seconds", 0) for e in h) / sum(e["train_seconds"] for e in h)
        return {"s_per_epoch": r["median_epoch_seconds"], "test_accuracy": r["test_accuracy"],
                "all_reduce_share": share, "epochs": r["epochs"]}
    f1, f2 = figures(one), figures(two)
    data["training"][model] = {"1_rank": f1, "2_ranks": f2, "speed_up": f1["s_per_epoch"] / f2["s_per_epoch"]}
    rows.append(f"| {model.upper()} | {f1['epochs']} | {f1['s_per_epoch']:.3f} | {f2['s_per_epoch']:.3f} | "
                f"{f1['s_per_epoch'] / f2['s_per_epoch']:.2f}x | {100 * f2['all_reduce_share']:.0f}% | "
                f"{f1['test_accuracy']:.4f} / {f2['test_accuracy']:.4f} |")
lines = ["| model | epochs | 1 rank s/epoch | 2 ranks s/epoch | speed-up | all-reduce share (2 ranks) | test accuracy 1 / 2 |",
         "|---|---|---|---|---|---|---|", *rows, ""]
for transport in ["shm", "tcp"]:
    r = load(transport)
    data["all_reduce"][transport] = r
    name = {"shm": "shared memory", "tcp": "TCP over loopback"}[transport]
    lines += [f"All-reduce over {name} ({r['library']}), 2 ranks, median of 30: fitted latency "
              f"{r['fitted']['latency_us']:.1f} us, bandwidth {r['fitted']['gigabits_per_second']:.1f} Gb/s; "
              f"the MLP's {r['gradient_bytes'] / 1e6:.2f} MB of gradients: {r['fitted_all_reduce_ms_for_gradient']:.3f} ms (model).", "",
              "| bytes | measured ms | model ms |", "|---|---|---|"]
    lines += [f"| {int(m['bytes'])} | {m['median_seconds'] * 1e3:.4f} | {m['model_seconds'] * 1e3:.4f} |" for m in r["measured"]]
    lines.append("")
r = data["all_reduce"]["shm"]
lines += [f"Predicted efficiency of the reference MLP (per-rank batch 64, one thread computing "
          f"{r['compute_ms_per_step']:.2f} ms per step, no overlap):", "",
          "| network | nodes | all-reduce ms | efficiency |", "|---|---|---|---|"]
lines += [f"| {p['network']} | {p['nodes']} | {p['all_reduce_ms']:.3f} | {100 * p['efficiency']:.0f}% |" for p in r["predictions"]]
text = "\n".join(lines) + "\n"
open(f"{out}/distributed.md", "w").write(text)
json.dump(data, open(f"{out}/distributed.json", "w"), indent=2)
print(text)
EOF
