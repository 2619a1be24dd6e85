#!/usr/bin/env bash
# Side by side, in one sitting: the character-level GPT of examples/shakespeare-char-gpt.toml
# (4 layers, 4 heads, width 128, context 64, batch 12, AdamW, warm-up + cosine schedule) trained
# on tiny Shakespeare by kiln and by the PyTorch peer (../shared/peers/torch_char_gpt.py,
# denormals flushed), alternating, ROUNDS times. Then generation: 500 tokens after "ROMEO:"
# (temperature 0.8, top-k 40) by kiln with and without its KV cache on the model trained here,
# and by PyTorch the naive way (bench/torch_generate.py: the whole forward pass over the last
# 64 tokens for every new token), each the median of 3 alternating runs. Then "scale on
# paper": a few training steps of a 6-layer, 6-head, width-384, context-256 GPT (batch 12) by
# kiln (a copy of the spec with that [model]) and by PyTorch (bench/torch_gpt_sized.py).
# Prints Markdown tables (also written to bench/out/gpt.md and bench/out/gpt.json).
#
#   bench/gpt.sh                                   # STEPS=2000 ROUNDS=1 SIZED_STEPS=30
#   STEPS=30 SIZED_STEPS=3 bench/gpt.sh            # a smoke test of this script (not a comparison)
#   ROUNDS=3 bench/gpt.sh
#
# Environment: STEPS (training steps per run, default 2000), ROUNDS (default 1), SIZED_STEPS
# (default 30; PyTorch leaves its first 3 out of the timing, kiln times every step),
# GEN_TOKENS (default 500), KILN= another binary, SPEC= another spec, PEERS= the peers'
# folder (default /tmp/kiln-peers), KILN_DATA (default ../shared/data).
#
# Needs: a release build (cargo build --release; this script does not build), the PyTorch
# virtual environment ($PEERS/torch, from ../shared/peers/setup.sh /tmp/kiln-peers) and
# tiny Shakespeare in $KILN_DATA/shakespeare/input.txt. ms/step counts training steps only
# (evaluation excluded) for both. Run it on a quiet machine: the load average around each
# run is recorded beside it.
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${STEPS:-2000}
ROUNDS=${ROUNDS:-1}
SIZED_STEPS=${SIZED_STEPS:-30}
GEN_TOKENS=${GEN_TOKENS:-500}
GEN_RUNS=3
# The "scale on paper" model.
SIZED_LAYERS=6 SIZED_HEADS=6 SIZED_WIDTH=384 SIZED_CONTEXT=256 SIZED_BATCH=12
PEERS=${PEERS:-/tmp/kiln-peers}
SHARED=${SHARED:-$(cd .. && pwd)/shared}
export KILN_DATA=${KILN_DATA:-$SHARED/data}
SPEC=${SPEC:-examples/shakespeare-char-gpt.toml}
KILN=${KILN:-./target/release/kiln}
TORCH=$PEERS/torch/bin/python
PEER=$SHARED/peers/torch_char_gpt.py
TEXT=$KILN_DATA/shakespeare/input.txt
OUT=bench/out

fail() { echo "gpt.sh: $*" >&2; exit 1; }
for v in STEPS ROUNDS SIZED_STEPS GEN_TOKENS; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || fail "$v must be a positive integer, got '${!v}'"
done
[ -x "$KILN" ] || fail "$KILN is missing: run 'cargo build --release' first (this script does not build)"
if [ -n "$(find crates src -name '*.rs' -newer "$KILN" 2>/dev/null | head -n 1)" ]; then
  echo "gpt.sh: warning: Rust sources are newer than $KILN; rebuild with 'cargo build --release' for current figures" >&2
fi
[ -x "$TORCH" ] || fail "missing $TORCH (the PyTorch virtual environment): run $SHARED/peers/setup.sh $PEERS, or set PEERS=DIR"
[ -f "$PEER" ] || fail "missing $PEER (the PyTorch peer)"
[ -f "$SPEC" ] || fail "missing $SPEC"
[ -f "$TEXT" ] || fail "missing $TEXT (tiny Shakespeare; set KILN_DATA)"
[ -x /usr/bin/time ] || fail "/usr/bin/time is needed to measure peak RSS"

mkdir -p "$OUT"
RUNS=$OUT/gpt-runs.jsonl GEN=$OUT/gpt-generate.jsonl SIZED=$OUT/gpt-sized.jsonl
: > "$RUNS"; : > "$GEN"; : > "$SIZED"

# run FILE LABEL CMD...: runs a command that prints a one-line JSON result last and appends
# that result to FILE with the label, the command's peak RSS (from /usr/bin/time) and the
# 1-minute load average before and after.
run() {
  local file=$1 label=$2; shift 2
  local json load0 load1 code=0
  load0=$(cut -d' ' -f1 /proc/loadavg)
  json=$( { /usr/bin/time -f "RSS %M" "$@" 2> "$OUT/gpt-$label.err" | tail -n 1; } ) || code=$?
  load1=$(cut -d' ' -f1 /proc/loadavg)
  [ "$code" = 0 ] && [ -n "$json" ] || fail "$label failed (exit $code); see $OUT/gpt-$label.err"
  python3 - "$label" "$OUT/gpt-$label.err" "$json" "$load0" "$load1" >> "$file" <<'PY' || fail "$label: no JSON result (got: $json)"
import json, re, sys
label, err, line, load0, load1 = sys.argv[1:6]
r = json.loads(line)
rss = re.findall(r"RSS (\d+)", open(err).read())
print(json.dumps({"label": label, **r, "rss_mb": round(int(rss[-1]) / 1024, 1) if rss else None,
                  "load_before": float(load0), "load_after": float(load1)}))
PY
  tail -n 1 "$file" >&2
}

# kiln_train SPEC STEPS NAME: trains, keeps the model and report as $OUT/gpt-NAME.*, prints
# the report's figures as one JSON line.
kiln_train() {
  local spec=$1 steps=$2 name=$3
  rm -rf "$OUT/gpt-$name-run" "$OUT/gpt-$name-report.json"
  "$KILN" train "$spec" --steps "$steps" --quiet --run-dir "$OUT/gpt-$name-run" \
    --report "$OUT/gpt-$name-report.json" --out "$OUT/gpt-$name.safetensors" > "$OUT/gpt-$name.log" || return
  python3 -c 'import json, sys; r = json.load(open(sys.argv[1]))
print(json.dumps({k: r[k] for k in ("parameters", "vocab_size", "steps", "batch_size", "context", "train_seconds",
                                    "ms_per_step", "tokens_per_s", "val_loss", "threads")}))' "$OUT/gpt-$name-report.json"
}

# kiln_generate cache|no-cache: GEN_TOKENS tokens from the model trained above; the text goes
# to $OUT/gpt-sample-MODE.txt, kiln's own timing line (stderr) becomes one JSON line.
kiln_generate() {
  local mode=$1 flag=()
  [ "$mode" = no-cache ] && flag=(--no-cache)
  "$KILN" generate "$OUT/gpt-kiln.safetensors" --prompt "ROMEO:" --tokens "$GEN_TOKENS" --temperature 0.8 \
    --top-k 40 --seed 1 "${flag[@]}" > "$OUT/gpt-sample-$mode.txt" 2> "$OUT/gpt-generate-$mode.log" || {
    cat "$OUT/gpt-generate-$mode.log" >&2; return 1; }
  python3 - "$OUT/gpt-generate-$mode.log" <<'PY'
import json, re, sys
log = open(sys.argv[1]).read()
m = re.findall(r"(\d+) tokens in ([\d.]+) s \(([\d.]+) tokens/s", log)
if not m:
    sys.exit(f"no timing line in {sys.argv[1]}: {log!r}")
n, s, rate = m[-1]
print(json.dumps({"tokens": int(n), "seconds": float(s), "tokens_per_s": float(rate)}))
PY
}
export -f kiln_train kiln_generate
export KILN OUT GEN_TOKENS

for round in $(seq 1 "$ROUNDS"); do
  echo "== round $round/$ROUNDS: training, $STEPS steps each" >&2
  run "$RUNS" kiln bash -c 'kiln_train "$@"' _ "$SPEC" "$STEPS" kiln
  run "$RUNS" pytorch-ftz "$TORCH" "$PEER" "$TEXT" "$STEPS" ftz
done

echo "== generation: $GEN_TOKENS tokens, $GEN_RUNS runs each" >&2
for i in $(seq 1 "$GEN_RUNS"); do
  run "$GEN" kiln-cache bash -c 'kiln_generate "$@"' _ cache
  run "$GEN" kiln-no-cache bash -c 'kiln_generate "$@"' _ no-cache
  run "$GEN" pytorch-naive "$TORCH" bench/torch_generate.py "$TEXT" "$GEN_TOKENS"
done

echo "== scale on paper: $SIZED_LAYERS layers, $SIZED_HEADS heads, width $SIZED_WIDTH, context $SIZED_CONTEXT, batch $SIZED_BATCH; $SIZED_STEPS steps" >&2
SIZED_SPEC=$OUT/gpt-sized.toml
python3 - "$SPEC" "$SIZED_SPEC" "$SIZED_LAYERS" "$SIZED_HEADS" "$SIZED_WIDTH" "$SIZED_CONTEXT" "$SIZED_BATCH" <<'PY' || fail "could not write $SIZED_SPEC from $SPEC"
# A copy of the spec with the [model] table's sizes replaced (the rest, comments included,
# kept) and one validation batch, so the final step's evaluation stays small.
import re, sys, tomllib
src, dst = sys.argv[1], sys.argv[2]
layers, heads, width, context, batch = map(int, sys.argv[3:8])
want = {"model": {"layers": layers, "heads": heads, "width": width, "context": context},
        "training": {"eval_batches": 1, "batch_size": batch}}
out, table = [], None
for line in open(src, encoding="utf-8").read().splitlines():
    m = re.match(r"\s*\[([^\]]+)\]", line)
    if m:
        table = m.group(1).strip()
    m = re.match(r"(\s*)([A-Za-z_]+)(\s*=\s*)([^#]*?)(\s*#.*)?$", line)
    if m and table in want and m.group(2) in want[table]:
        line = f"{m.group(1)}{m.group(2)}{m.group(3)}{want[table].pop(m.group(2))}{m.group(5) or ''}"
    out.append(line)
for name, keys in want.items():  # a key the spec did not set: add it at the table's end
    for key, value in keys.items():
        at = next(i for i, l in enumerate(out) if re.match(rf"\s*\[{name}\]", l))
        end = next((j for j in range(at + 1, len(out)) if re.match(r"\s*\[", out[j])), len(out))
        out.insert(end, f"{key} = {value}")
text = "\n".join(out) + "\n"
spec = tomllib.loads(text)
assert {k: spec["model"][k] for k in ("layers", "heads", "width", "context")} == \
       {"layers": layers, "heads": heads, "width": width, "context": context}, spec["model"]
assert spec["training"]["eval_batches"] == 1 and spec["training"]["batch_size"] == batch, spec["training"]
open(dst, "w", encoding="utf-8").write(text)
PY
run "$SIZED" kiln-sized bash -c 'kiln_train "$@"' _ "$SIZED_SPEC" "$SIZED_STEPS" sized
run "$SIZED" pytorch-ftz-sized "$TORCH" bench/torch_gpt_sized.py "$TEXT" \
  "$SIZED_LAYERS" "$SIZED_HEADS" "$SIZED_WIDTH" "$SIZED_CONTEXT" "$SIZED_BATCH" "$SIZED_STEPS"

python3 - "$OUT" "$STEPS" "$ROUNDS" "$SPEC" "$GEN_TOKENS" "$SIZED_STEPS" <<'PY'
import json, os, platform, statistics, sys, tomllib
out, steps, rounds, spec_path, gen_tokens, sized_steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
load = lambda name: [json.loads(l) for l in open(f"{out}/{name}")]
runs, gens, sized = load("gpt-runs.jsonl"), load("gpt-generate.jsonl"), load("gpt-sized.jsonl")
spec = tomllib.load(open(spec_path, "rb"))
m, t = spec["model"], spec["training"]
med = statistics.median
every = runs + gens + sized
max_load = max(max(r["load_before"], r["load_after"]) for r in every)
cores = os.cpu_count()

# Training: medians over rounds, and the median of per-round ratios (runs of one round sit
# next to each other in time, so on a shared machine that is the sturdier figure).
labels = list(dict.fromkeys(r["label"] for r in runs))
by_round = [runs[i:i + len(labels)] for i in range(0, len(runs), len(labels))]
def params(r):
    return r.get("parameters", r.get("params"))
rows = {}
for label in labels:
    mine = [r for r in runs if r["label"] == label]
    rows[label] = {"ms_per_step": med(r["ms_per_step"] for r in mine),
                   "ms_per_step_all": [r["ms_per_step"] for r in mine],
                   "tokens_per_s": med(r["tokens_per_s"] for r in mine),
                   "val_loss": med(r["val_loss"] for r in mine),
                   "params": params(mine[-1]), "rss_mb": max(r["rss_mb"] or 0 for r in mine),
                   "peer": mine[-1].get("peer", "kiln")}
kiln = rows["kiln"]["ms_per_step"]
torch_name = rows["pytorch-ftz"]["peer"]
for label, r in rows.items():
    if label == "kiln":
        r["kiln_ratio"] = r["kiln_ratio_per_round"] = None
    else:
        r["kiln_ratio"] = kiln / r["ms_per_step"]
        r["kiln_ratio_per_round"] = med({x["label"]: x["ms_per_step"] for x in rnd}["kiln"] /
                                        {x["label"]: x["ms_per_step"] for x in rnd}[label] for rnd in by_round)
threads = runs[0].get("threads")
nominal = t.get("steps")
lines = [f"Character-level GPT on tiny Shakespeare ({spec_path}: {m['layers']} layers, {m['heads']} heads, "
         f"width {m['width']}, context {m['context']}, batch {t['batch_size']}; {rows['kiln']['params']:,} parameters), "
         f"{steps} steps, median of {rounds} alternating round(s), {cores} cores ({platform.machine()}), "
         f"kiln on {threads} threads. ms/step = training steps only (evaluation excluded); validation loss "
         f"over {t.get('eval_batches')} batches; ratio = kiln ms/step ÷ PyTorch ms/step.", ""]
if steps != nominal:
    lines += [f"Note: {steps} steps, not the spec's {nominal}: kiln keeps the spec's learning-rate schedule "
              f"(laid out for {nominal} steps), the peer fits its schedule to {steps}; the losses are not a comparison.", ""]
if rows["kiln"]["params"] != rows["pytorch-ftz"]["params"]:
    lines += [f"WARNING: parameter counts differ: kiln {rows['kiln']['params']:,}, "
              f"PyTorch {rows['pytorch-ftz']['params']:,}.", ""]
lines += ["| framework | ms/step | tokens/s | validation loss | peak RSS (MB) | kiln ms/step ratio (median per round) |",
          "|---|---|---|---|---|---|"]
for label, r in rows.items():
    name = "kiln" if label == "kiln" else f"{r['peer']} (FTZ)"
    ratio = "—" if r["kiln_ratio"] is None else f"{r['kiln_ratio']:.2f} ({r['kiln_ratio_per_round']:.2f})"
    lines.append(f"| {name} | {r['ms_per_step']:.2f} | {r['tokens_per_s']:,.0f} | {r['val_loss']:.4f} | "
                 f"{r['rss_mb']:.0f} | {ratio} |")

# Generation.
gen = {}
for label in dict.fromkeys(g["label"] for g in gens):
    mine = [g for g in gens if g["label"] == label]
    gen[label] = {"tokens": mine[0]["tokens"], "tokens_per_s": med(g["tokens_per_s"] for g in mine),
                  "seconds": med(g["seconds"] for g in mine), "tokens_per_s_all": [g["tokens_per_s"] for g in mine]}
naive = gen["pytorch-naive"]["tokens_per_s"]
describe = {"kiln-cache": "kiln, KV cache (model trained above)",
            "kiln-no-cache": "kiln, no KV cache (`--no-cache`)",
            "pytorch-naive": f"{torch_name} naive loop (full forward over the last {m['context']} tokens; random weights; FTZ)"}
lines += ["", f"Generation: {gen_tokens} tokens after \"ROMEO:\", temperature 0.8, top-k 40, median of "
          f"{len([g for g in gens if g['label'] == 'kiln-cache'])} alternating runs each "
          f"(kiln's time from its own stderr line; PyTorch's around its loop):", "",
          "| | tokens/s | seconds | ÷ PyTorch naive |", "|---|---|---|---|"]
for label, g in gen.items():
    g["ratio_to_pytorch_naive"] = g["tokens_per_s"] / naive
    lines.append(f"| {describe.get(label, label)} | {g['tokens_per_s']:,.0f} | {g['seconds']:.3f} | "
                 f"{g['ratio_to_pytorch_naive']:.2f}× |")

# Scale on paper.
ks, ts = sized[0], sized[1]
sized_row = {"kiln": {"ms_per_step": ks["ms_per_step"], "tokens_per_s": ks["tokens_per_s"], "params": ks["parameters"],
                      "timed_steps": ks["steps"], "threads": ks.get("threads"), "rss_mb": ks["rss_mb"]},
             "pytorch-ftz": {"ms_per_step": ts["ms_per_step"], "tokens_per_s": ts["tokens_per_s"], "params": ts["params"],
                             "timed_steps": ts["timed_steps"], "rss_mb": ts["rss_mb"], "peer": ts["peer"]}}
sized_ratio = ks["ms_per_step"] / ts["ms_per_step"]
lines += ["", f"Scale on paper: {ts['layers']} layers, {ts['heads']} heads, width {ts['width']}, context {ts['context']}, "
          f"batch {ts['batch']} ({ks['parameters']:,} parameters), {sized_steps} steps; kiln's ms/step over all of them, "
          f"PyTorch's over the {ts['timed_steps']} after its warm-up:", ""]
if ks["parameters"] != ts["params"]:
    lines += [f"WARNING: parameter counts differ: kiln {ks['parameters']:,}, PyTorch {ts['params']:,}.", ""]
lines += ["| framework | ms/step | tokens/s | peak RSS (MB) | kiln ms/step ratio |", "|---|---|---|---|---|",
          f"| kiln | {ks['ms_per_step']:.1f} | {ks['tokens_per_s']:,.0f} | {ks['rss_mb']:.0f} | — |",
          f"| {ts['peer']} (FTZ) | {ts['ms_per_step']:.1f} | {ts['tokens_per_s']:,.0f} | {ts['rss_mb']:.0f} | {sized_ratio:.2f} |"]

lines += ["", f"Highest 1-minute load average seen around a run: {max_load:.2f} on {cores} cores"
          + (" — the machine was busy; rerun for trustworthy ratios." if max_load > (cores or 2) + 0.5 else ".")]
table = "\n".join(lines)
print(table)
open(f"{out}/gpt.md", "w").write(table + "\n")
json.dump({"model": spec.get("name"), "spec": spec_path, "steps": steps, "rounds": rounds, "cores": cores,
           "kiln_threads": threads, "training": rows,
           "generation": {"tokens": gen_tokens, "results": gen},
           "sized": {"layers": ts["layers"], "heads": ts["heads"], "width": ts["width"], "context": ts["context"],
                     "batch": ts["batch"], "steps": sized_steps, "results": sized_row, "kiln_ratio": sized_ratio},
           "max_load": max_load}, open(f"{out}/gpt.json", "w"), indent=2)
PY
