#!/usr/bin/env bash
# Fuzzes every target in fuzz/fuzz_targets for SECONDS each, one after another.
#
#   fuzz/run.sh SECONDS [TARGET...]      (from anywhere; default: every target)
#
# Each target first runs its committed regression inputs (fuzz/regressions/TARGET/), then
# fuzzes from a working corpus (fuzz/corpus/TARGET/, git-ignored) that the committed seeds
# (fuzz/seeds/TARGET/) are copied into, so the seeds never change. Crashes, timeouts and
# OOMs land in fuzz/artifacts/TARGET/. Prints one line per target (executions, corpus
# size, findings); exits 1 if any target crashed, hung or ran out of memory, 0 otherwise.
# Without a nightly toolchain or cargo-fuzz it prints a one-line note and exits 0 (it
# tries `cargo install cargo-fuzz` when nightly is there).
#
# Builds and runs at nice 19. Debug assertions and overflow checks are on (cargo fuzz's default, -a),
# as in the tests. Settings: KILN_FUZZ_RSS_MB (default 2048), KILN_FUZZ_TIMEOUT (seconds
# for one input, default 10).
set -euo pipefail

usage() { echo "usage: $0 SECONDS [TARGET...]" >&2; exit 2; }
[[ $# -ge 1 && $1 =~ ^[0-9]+$ ]] || usage
seconds=$1
shift

fuzz_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$fuzz_dir/target}
rss_mb=${KILN_FUZZ_RSS_MB:-2048}
timeout_s=${KILN_FUZZ_TIMEOUT:-10}

if ! command -v cargo > /dev/null || ! cargo +nightly --version > /dev/null 2>&1; then
  echo "fuzz: skipped: no nightly Rust toolchain (cargo +nightly) on this machine; cargo-fuzz needs one"
  exit 0
fi
if ! cargo fuzz --version > /dev/null 2>&1; then
  echo "fuzz: cargo-fuzz is missing; installing it (cargo install cargo-fuzz)" >&2
  if ! nice -n 19 cargo install --locked cargo-fuzz > /dev/null 2>&1 || ! cargo fuzz --version > /dev/null 2>&1; then
    echo "fuzz: skipped: cargo-fuzz is not installed and could not be installed (cargo install cargo-fuzz)"
    exit 0
  fi
fi

mapfile -t all_targets < <(cargo fuzz list --fuzz-dir "$fuzz_dir")
if [[ $# -gt 0 ]]; then targets=("$@"); else targets=("${all_targets[@]}"); fi
for t in "${targets[@]}"; do
  printf '%s\n' "${all_targets[@]}" | grep -qx -- "$t" || { echo "fuzz: no target $t (there are: ${all_targets[*]})" >&2; exit 2; }
done

# Scratch folders (kiln-fuzz-PID, see src/lib.rs) of fuzz processes that have exited.
clean_scratch() {
  local dir pid
  for dir in "${KILN_FUZZ_TMP:-/dev/shm}"/kiln-fuzz-* "${TMPDIR:-/tmp}"/kiln-fuzz-*; do
    [[ -d $dir ]] || continue
    pid=${dir##*-}
    [[ $pid =~ ^[0-9]+$ && ! -d /proc/$pid ]] && rm -rf -- "$dir"
  done
  return 0
}

# Longest input per target: a model file of the fixtures' size, short text elsewhere.
max_len() {
  case $1 in
    model_load) echo 65536 ;;
    model_metadata) echo 16384 ;;
    *) echo 4096 ;;
  esac
}

logs=$fuzz_dir/artifacts/logs
mkdir -p "$logs"
build=(cargo +nightly fuzz build --fuzz-dir "$fuzz_dir" --debug-assertions)
echo "fuzz: building the targets (${build[*]})"
if ! nice -n 19 "${build[@]}" > "$logs/build.log" 2>&1; then
  tail -40 "$logs/build.log" >&2
  echo "fuzz: the build failed (log: $logs/build.log)" >&2
  exit 1
fi

failed=0
for t in "${targets[@]}"; do
  corpus=$fuzz_dir/corpus/$t
  artifacts=$fuzz_dir/artifacts/$t
  mkdir -p "$corpus" "$artifacts"
  [[ -d $fuzz_dir/seeds/$t ]] && cp -n "$fuzz_dir/seeds/$t"/* "$corpus"/ 2> /dev/null || true
  run=(cargo +nightly fuzz run --fuzz-dir "$fuzz_dir" --debug-assertions "$t")
  flags=(-rss_limit_mb="$rss_mb" -timeout="$timeout_s" -max_len="$(max_len "$t")" -print_final_stats=1)

  # Known findings first: each committed regression input must now pass.
  regressions=()
  [[ -d $fuzz_dir/regressions/$t ]] && mapfile -t regressions < <(find "$fuzz_dir/regressions/$t" -type f ! -name '*.md' ! -name '*.txt' | sort)
  regression_note=""
  if [[ ${#regressions[@]} -gt 0 ]]; then
    : > "$logs/$t.regressions.log"
    bad=()
    for input in "${regressions[@]}"; do
      echo "=== $input" >> "$logs/$t.regressions.log"
      nice -n 19 "${run[@]}" "$input" -- "${flags[@]}" >> "$logs/$t.regressions.log" 2>&1 || bad+=("${input##*/}")
    done
    if [[ ${#bad[@]} -eq 0 ]]; then
      regression_note=", ${#regressions[@]} regression inputs pass"
    else
      regression_note=", ${#bad[@]} of ${#regressions[@]} REGRESSION INPUTS FAIL (${bad[*]}; log $logs/$t.regressions.log)"
      failed=1
    fi
  fi

  before=$(find "$artifacts" -type f | wc -l)
  status=0
  nice -n 19 "${run[@]}" "$corpus" -- "${flags[@]}" -max_total_time="$seconds" > "$logs/$t.log" 2>&1 || status=$?
  clean_scratch
  execs=$(grep -oE 'stat::number_of_executed_units: [0-9]+' "$logs/$t.log" | tail -1 | grep -oE '[0-9]+$' || true)
  [[ -n $execs ]] || execs=$(grep -oE '^Done [0-9]+ runs' "$logs/$t.log" | tail -1 | grep -oE '[0-9]+' || true)
  files=$(find "$corpus" -type f | wc -l)
  new=$(( $(find "$artifacts" -type f | wc -l) - before ))
  if [[ $status -eq 0 && $new -eq 0 ]]; then
    found="fuzzing found nothing"
  else
    kind=$(grep -oE 'ERROR: libFuzzer: [a-z-]+|panicked at [^:]+:[0-9]+' "$logs/$t.log" | head -1 || true)
    found="FOUND: exit $status, $new new artifact(s) in $artifacts ${kind:+($kind)}; log $logs/$t.log"
    failed=1
  fi
  echo "fuzz: $t: ${seconds}s, ${execs:-?} executions, corpus $files inputs$regression_note, $found"
done
exit "$failed"
