#!/usr/bin/env bash
# Redis misbehaving under a running example receiver, with real tools:
# `redis-cli DEBUG SLEEP`, `SHUTDOWN NOSAVE`, `kill -9`, then a restart.
# Prints what a sender saw for each delivery (status, seconds).
#
#   bash bench/redis/faults.sh store   # the Redis dedupe store (LTVBOOST_REDIS_URL)
#   bash bench/redis/faults.sh queue   # enqueue mode (LTVBOOST_QUEUE_URL)
set -uo pipefail
cd "$(dirname "$0")/../.."
MODE=${1:-store}
rport=${REDIS_PORT:-4295}; port=${PORT:-4296}
cargo build --quiet --release --features queue --example receiver
dir=$(mktemp -d)
start_redis() { redis-server --bind 127.0.0.1 --port $rport --save '' --appendonly no --dir $dir --daemonize yes --logfile $dir/redis.log --enable-debug-command local; sleep 0.3; }
start_redis
if [ "$MODE" = store ]; then export LTVBOOST_REDIS_URL=redis://127.0.0.1:$rport/; else export LTVBOOST_QUEUE_URL=redis://127.0.0.1:$rport/; fi
LTVBOOST_WEBHOOK_ADDR=127.0.0.1:$port ./target/release/examples/receiver > $dir/receiver.log 2>&1 &
rpid=$!
trap 'kill $rpid 2>/dev/null; redis-cli -p $rport SHUTDOWN NOSAVE >/dev/null 2>&1; rm -rf "$dir"' EXIT
for _ in $(seq 50); do (echo > /dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
n=0
send() { # id -> "status seconds"
  local id=$1
  local body="{\"id\":\"$id\",\"type\":\"action.sent\",\"created_at\":\"$(date -u +%Y-%m-%dT%H:%M:%SZ)\",\"data\":{\"id\":\"act_$id\"}}"
  local sig=$(printf '%s' "$body" | openssl dgst -sha256 -hmac ltvboost-development-secret-do-not-use-in-production -r | cut -d' ' -f1)
  curl -s -o /dev/null -w '%{http_code} %{time_total}s' -H "x-ltvboost-signature: sha256=$sig" -H 'content-type: application/json' --data-binary "$body" http://127.0.0.1:$port/webhooks/ltvboost
}
say() { echo "[$MODE] $*"; }
say "healthy: $(send evt_a1) / $(send evt_a2)"
redis-cli -p $rport DEBUG SLEEP 5 >/dev/null &
sleeper=$!
sleep 0.2
say "during DEBUG SLEEP 5: $(send evt_b1) / $(send evt_b2)"
wait $sleeper
say "after the sleep: $(send evt_b3) ; evt_b1 again: $(send evt_b1)"
redis-cli -p $rport SHUTDOWN NOSAVE >/dev/null 2>&1
say "after SHUTDOWN: $(send evt_c1)"
start_redis
sleep 0.5
say "restarted: $(send evt_c2) ; evt_c1 again: $(send evt_c1)"
kill -9 $(pgrep -f "redis-server 127.0.0.1:$rport")
sleep 0.2
say "after kill -9: $(send evt_d1)"
start_redis
sleep 0.5
say "restarted: $(send evt_d2) ; evt_d1 again: $(send evt_d1)"
say "receiver RSS: $(awk '/VmRSS/ {print $2, $3}' /proc/$rpid/status), alive: $(kill -0 $rpid && echo yes)"
kill -TERM $rpid; wait $rpid; say "receiver exit on SIGTERM: $?"
grep -c 'ERROR' "$dir/receiver.log" | sed "s/^/[$MODE] lines logged at error: /"
