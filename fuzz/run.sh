#!/usr/bin/env bash
# Runs every fuzz target for N seconds (default 30) on stable Rust, without a
# sanitizer (`-s none`): cargo-fuzz is installed when missing. Seeds and the
# dictionary are committed; the working corpus lives under fuzz/target.
#
#   bash fuzz/run.sh            # 30 s a target: the CI smoke pass
#   bash fuzz/run.sh 600        # longer runs
#   bash fuzz/run.sh 60 event   # one target
#   SANITIZER=address bash fuzz/run.sh 40   # AddressSanitizer and libFuzzer's
#                                           # compare hooks (RUSTC_BOOTSTRAP=1)
#
# Prints the executions run per target; exits non-zero on a crash (the
# reproducer is left in fuzz/artifacts/<target>/).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-30}
sanitizer=${SANITIZER:-none}
# The sanitizer build needs nightly flags; stable accepts them with this.
[ "$sanitizer" = none ] || export RUSTC_BOOTSTRAP=1
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(signature event service)

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz"
  cargo install --quiet --locked cargo-fuzz
fi

for target in "${targets[@]}"; do
  corpus="fuzz/target/corpus/$target"
  mkdir -p "$corpus"
  log="fuzz/target/$target.log"
  echo "== fuzz $target for ${seconds}s (sanitizer: $sanitizer)"
  if ! cargo fuzz run -s "$sanitizer" --release "$target" "$corpus" "fuzz/seeds/$target" -- \
      -max_total_time="$seconds" -dict=fuzz/dict/webhooks.dict -print_final_stats=1 \
      -rss_limit_mb=4096 >"$log" 2>&1; then
    tail -n 40 "$log"
    echo "fuzz $target: CRASH (see fuzz/artifacts/$target/)"
    exit 1
  fi
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -n 1)
  echo "fuzz $target: ${runs:-?} executions, no crash"
done
