#!/usr/bin/env bash
# Serving under load, side by side in one run: `kiln serve` against FastAPI + uvicorn serving
# the same model in PyTorch (bench/serve_fastapi.py), both on loopback, driven by wrk at
# concurrency 1, 16 and 64 (kiln and FastAPI alternately at each level, so machine noise hits
# both), one MNIST test image per request (Open Inference Protocol v2, raw pixels). Then a
# soak of kiln at concurrency 64 with a mix of valid and invalid requests: answers by status,
# socket errors (dropped connections) and the server's RSS at start and end.
# Prints Markdown tables, also written to bench/out/serve.md.
#
#   bench/serve.sh [SECONDS_PER_RUN=10] [SOAK_SECONDS=60]
#
# Needs: wrk (apt-get install wrk), the PyTorch venv (../shared/peers/setup.sh
# /tmp/kiln-peers, or PEERS=DIR) with fastapi, uvicorn and safetensors (installed here if
# missing), MNIST in $KILN_DATA/mnist (default ../shared/data). MODEL=FILE serves that kiln
# model instead of training the reference MLP. FASTAPI_WORKERS (default 1, plain
# `uvicorn app:app`) sets uvicorn's --workers; with more than one, each gets one torch thread.
# (Here, with --workers 2, every request at concurrency 1 took 44 ms — a delayed-ACK-like
# stall of uvicorn's multi-process mode — and c64 gained under 10%, so 1 is the default.)
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-10}
SOAK=${2:-60}
PEERS=${PEERS:-/tmp/kiln-peers}
SHARED=${SHARED:-$(cd .. && pwd)/shared}
export KILN_DATA=${KILN_DATA:-$SHARED/data}
PY=$PEERS/torch/bin/python
OUT=bench/out
KILN_PORT=${KILN_PORT:-18181}
PEER_PORT=${PEER_PORT:-18182}
WORKERS=${FASTAPI_WORKERS:-1}
mkdir -p "$OUT"

command -v wrk > /dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
[ -x "$PY" ] || { echo "missing $PY: run $SHARED/peers/setup.sh $PEERS" >&2; exit 1; }
"$PY" -c "import fastapi, uvicorn, safetensors" 2> /dev/null ||
  "$PY" -m pip install --quiet fastapi uvicorn safetensors
cargo build --release --quiet -p kiln-cli
KILN=target/release/kiln

MODEL=${MODEL:-$OUT/serve-mnist-mlp.safetensors}
if [ ! -f "$MODEL" ]; then
  "$KILN" train examples/mnist-mlp.toml --quiet --no-checkpoint --run-dir "$OUT/serve-run" --out "$MODEL"
fi

# Request bodies: one test image as [1, 28, 28] raw pixels, and the soak's invalid mix.
python3 - "$KILN_DATA/mnist/t10k-images-idx3-ubyte.gz" "$OUT" <<'PY'
import gzip, json, sys
images, out = sys.argv[1], sys.argv[2]
with gzip.open(images) as f:
    raw = f.read()
pixels = list(raw[16:16 + 784])
def v2(data, shape=(1, 28, 28), datatype="FP32", name="input"):
    return json.dumps({"inputs": [{"name": name, "shape": list(shape), "datatype": datatype, "data": data}]})
bodies = {
    "valid": v2(pixels),
    "bad-json": v2(pixels)[:-7],
    "bad-shape": v2(pixels, shape=(1, 27, 28)),
    "bad-value": v2(pixels[:5] + ["NaN"] + pixels[6:]),
    "bad-type": v2(pixels, datatype="INT8"),
    "too-big": v2(pixels * 65, shape=(65, 28, 28)),
    "tf-valid": json.dumps({"instances": [pixels]}),
}
for name, body in bodies.items():
    with open(f"{out}/serve-{name}.json", "w") as f:
        f.write(body)
# Half valid (v2 and TF), half invalid (400s and a 404), in a fixed cycle.
mix = [("/v2/models/mnist/infer", "valid"), ("/v2/models/mnist/infer", "bad-json"),
       ("/v1/models/mnist:predict", "tf-valid"), ("/v2/models/mnist/infer", "bad-shape"),
       ("/v2/models/mnist/infer", "valid"), ("/v2/models/mnist/infer", "bad-value"),
       ("/v2/models/mnist/infer", "valid"), ("/v2/models/mnist/infer", "bad-type"),
       ("/v2/models/mnist/infer", "valid"), ("/v2/models/nope/infer", "valid"),
       ("/v2/models/mnist/infer", "valid"), ("/v2/models/mnist/infer", "too-big")]
with open(f"{out}/serve-soak.txt", "w") as f:
    for path, name in mix:
        f.write(f"{path} {out}/serve-{name}.json\n")
PY

"$KILN" serve "mnist=$MODEL" --port "$KILN_PORT" > "$OUT/serve-kiln.log" 2>&1 &
KILN_PID=$!
MODEL="$MODEL" NAME=mnist WEB_CONCURRENCY=$WORKERS "$PY" -m uvicorn serve_fastapi:app --app-dir bench \
  --host 127.0.0.1 --port "$PEER_PORT" --workers "$WORKERS" --log-level warning > "$OUT/serve-fastapi.log" 2>&1 &
PEER_PID=$!
trap 'kill $KILN_PID $PEER_PID 2> /dev/null || true; wait 2> /dev/null || true' EXIT
for port in "$KILN_PORT" "$PEER_PORT"; do
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$port/v2/health/ready" > /dev/null && break
    sleep 0.2
  done
done

# Both must give the same answer for the image (same weights, same normalization).
kiln_answer=$(curl -sf -H "Content-Type: application/json" "http://127.0.0.1:$KILN_PORT/v2/models/mnist/infer" -d @"$OUT/serve-valid.json")
peer_answer=$(curl -sf -H "Content-Type: application/json" "http://127.0.0.1:$PEER_PORT/v2/models/mnist/infer" -d @"$OUT/serve-valid.json")
python3 - "$kiln_answer" "$peer_answer" <<'PY'
import json, sys
k, p = (json.loads(a) for a in sys.argv[1:3])
kp, pp = k["outputs"][0]["data"], p["outputs"][0]["data"]
diff = max(abs(a - b) for a, b in zip(kp, pp))
assert k["outputs"][1]["data"] == p["outputs"][1]["data"] and diff < 1e-4, (k, p)
print(f"answers agree: class {k['outputs'][1]['data'][0]}, max |Δp| {diff:.1e}")
PY

# "requests/s p50_ms p99_ms socket_errors" from wrk's --latency output.
parse_wrk() {
  python3 -c '
import re, sys
text = sys.stdin.read()
ms = lambda v, u: float(v) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[u]
pct = {p: ms(v, u) for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)}
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
nerr = sum(map(int, errs.groups())) if errs else 0
p50, p99 = pct["50"], pct["99"]
print(f"{rps:.0f} {p50:.2f} {p99:.2f} {nerr}")'
}

load() { # URL CONCURRENCY SECONDS
  local threads=$(( $2 < 2 ? 1 : 2 ))
  BODY="$OUT/serve-valid.json" wrk -t"$threads" -c"$2" -d"$3"s --latency -s bench/serve_wrk.lua "$1"
}

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

table="| concurrency | server | requests/s | p50 ms | p99 ms | socket errors |\n|---|---|---|---|---|---|\n"
ratios=""
for c in 1 16 64; do
  k=$(load "http://127.0.0.1:$KILN_PORT/v2/models/mnist/infer" "$c" "$DUR" | tee "$OUT/serve-wrk-kiln-c$c.txt" | parse_wrk)
  p=$(load "http://127.0.0.1:$PEER_PORT/v2/models/mnist/infer" "$c" "$DUR" | tee "$OUT/serve-wrk-fastapi-c$c.txt" | parse_wrk)
  read -r krps kp50 kp99 kerr <<< "$k"
  read -r prps pp50 pp99 perr <<< "$p"
  table+="| $c | kiln serve | $krps | $kp50 | $kp99 | $kerr |\n| $c | FastAPI + PyTorch (uvicorn --workers $WORKERS) | $prps | $pp50 | $pp99 | $perr |\n"
  ratios+="c$c: kiln/FastAPI requests/s $(python3 -c "print(f'{$krps/max($prps,1):.1f}')")x, p99 $kp99 vs $pp99 ms\n"
done

rss_start=$(rss_kib "$KILN_PID")
# RSS every 10 s during the soak: flat means no leak, whatever the first warm-up costs.
(while sleep 10 && [ -e "/proc/$KILN_PID" ]; do rss_kib "$KILN_PID"; done) > "$OUT/serve-soak-rss.txt" &
SAMPLER=$!
SOAK_BODIES="$OUT/serve-soak.txt" wrk -t2 -c64 -d"$SOAK"s --latency -s bench/serve_soak.lua \
  "http://127.0.0.1:$KILN_PORT" > "$OUT/serve-soak-wrk.txt"
kill "$SAMPLER"
rss_end=$(rss_kib "$KILN_PID")
rss_series=$(awk '{printf "%d ", $1 / 1024}' "$OUT/serve-soak-rss.txt")
soak=$(parse_wrk < "$OUT/serve-soak-wrk.txt")
read -r srps sp50 sp99 serr <<< "$soak"
statuses=$(grep '^status' "$OUT/serve-soak-wrk.txt" | sort -k2 | awk '{printf "%s: %s, ", $2, $3}')
fivexx=$( (grep '^status 5' "$OUT/serve-soak-wrk.txt" || true) | awk '{s += $3} END {print s + 0}')
curl -sf "http://127.0.0.1:$KILN_PORT/v2/health/ready" > /dev/null || { echo "kiln serve is not ready after the soak" >&2; exit 1; }

{
  echo "## kiln serve vs FastAPI + uvicorn + PyTorch ($(nproc) cores, wrk, ${DUR}s per run, one 28×28 image per request)"
  echo
  printf '%b' "$table"
  echo
  printf '%b' "$ratios"
  echo
  echo "## Soak: kiln serve, ${SOAK}s at concurrency 64, half valid / half invalid requests"
  echo
  echo "- requests/s $srps, p50 $sp50 ms, p99 $sp99 ms"
  echo "- answers by status: ${statuses%, }"
  echo "- 5xx answers: $fivexx; socket errors (dropped connections): $serr"
  echo "- RSS at start $((rss_start / 1024)) MiB, at end $((rss_end / 1024)) MiB (every 10 s: ${rss_series% })"
} | tee "$OUT/serve.md"
