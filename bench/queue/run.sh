#!/usr/bin/env bash
# The queue's figures on this machine, against a private redis-server on
# 127.0.0.1 (no persistence, the fastest setting; appendfsync always costs an
# fsync per write):
#
# * worker throughput with a no-op handler: N events enqueued, then drained
#   by 1, 2 and 3 worker processes (64 handler calls each at once);
# * Redis memory per queued event (1 KiB bodies).
#
#   bash bench/queue/run.sh              # N=200000
#   N=20000 bash bench/queue/run.sh      # a smoke
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${N:-200000}
port=${PORT:-6390}
dir=$(mktemp -d)
redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no --dir "$dir" --daemonize no >"$dir/log" 2>&1 &
redis=$!
trap 'kill $redis 2>/dev/null; wait $redis 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 1 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
url="redis://127.0.0.1:$port/"
cargo build --locked --quiet --release -p ltvboost-bench --features queue --bin queue_bench
bin=./target/release/queue_bench

echo "N=$N distinct 1 KiB events, $(nproc) cores"
for workers in 1 2 3; do
  redis-cli -p "$port" flushall >/dev/null
  before=$(redis-cli -p "$port" info memory | awk -F: '/^used_memory:/ {print $2}' | tr -d '\r')
  start=$(date +%s.%N)
  "$bin" fill "$url" "$N" >/dev/null
  filled=$(date +%s.%N)
  after=$(redis-cli -p "$port" info memory | awk -F: '/^used_memory:/ {print $2}' | tr -d '\r')
  pids=()
  for w in $(seq 1 "$workers"); do "$bin" drain "$url" >"$dir/drain.$workers.$w" & pids+=($!); done
  for p in "${pids[@]}"; do wait "$p"; done
  drained=$(date +%s.%N)
  handled=$(cat "$dir"/drain."$workers".* | awk '{s += $2} END {print s}')
  [ "$handled" = "$N" ] || { echo "workers=$workers handled $handled of $N"; exit 1; }
  python3 - "$N" "$workers" "$start" "$filled" "$drained" "$before" "$after" <<'PY'
import sys
n, workers = int(sys.argv[1]), int(sys.argv[2])
start, filled, drained, before, after = map(float, sys.argv[3:])
print(f"workers={workers}: enqueue {n / (filled - start):,.0f} events/s (64 tasks, one process); "
      f"drain {n / (drained - filled):,.0f} events/s; "
      f"Redis memory {(after - before) / n:,.0f} bytes per queued event")
PY
done
