#!/usr/bin/env bash
# Enqueue mode under the faults of a first month, with real processes: the
# example receiver and worker (release builds) on a private redis-server
# with `appendonly yes` and `appendfsync always`, senders that retry every
# event until it is answered 2xx (as LTVboost does), and meanwhile
# `redis-cli DEBUG SLEEP`, `kill -9` of the worker, `kill -9` of Redis and
# `SHUTDOWN NOSAVE`, each followed by a restart. At the end it reads back
# what was acknowledged and what the worker ran, and fails unless every
# acknowledged event ran, and no event ran twice but those the worker killed
# with kill -9 had started (the documented window: at most its 16 handler
# calls in flight).
#
#   bash bench/queue/faults.sh            # EVENTS=1000
#   EVENTS=200 bash bench/queue/faults.sh # a smoke
set -euo pipefail
cd "$(dirname "$0")/../.."
EVENTS=${EVENTS:-1000}
rport=${REDIS_PORT:-4395}; port=${PORT:-4396}
secret=fault-run-secret-0123456789abcdef
cargo build --locked --quiet --release --features queue --example receiver --example worker
dir=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  redis-cli -p "$rport" SHUTDOWN NOSAVE >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT
start_redis() {
  redis-server --bind 127.0.0.1 --port "$rport" --save '' --appendonly yes --appendfsync always \
    --dir "$dir" --daemonize yes --logfile "$dir/redis.log" --enable-debug-command local
  until redis-cli -p "$rport" INFO persistence 2>/dev/null | grep -q 'loading:0'; do sleep 0.1; done
}
redis_pid() { redis-cli -p "$rport" INFO server | awk -F: '/^process_id:/ {print $2}' | tr -d '\r'; }
export LTVBOOST_QUEUE_URL=redis://127.0.0.1:$rport/ LTVBOOST_WEBHOOK_SECRET=$secret
start_worker() {
  LTVBOOST_WORKER_CLAIM_IDLE_MS=2000 LTVBOOST_WORKER_DELAY_MS=5 \
    ./target/release/examples/worker >>"$dir/handled" 2>>"$dir/worker.log" &
  worker=$!; pids+=("$worker")
}
start_redis
LTVBOOST_WEBHOOK_ADDR=127.0.0.1:$port ./target/release/examples/receiver >"$dir/receiver.out" 2>"$dir/receiver.log" &
receiver=$!; pids+=("$receiver")
start_worker
until (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do sleep 0.1; done

# Four senders, each event retried until it is answered 2xx.
python3 - "$port" "$secret" "$EVENTS" "$dir/acknowledged" <<'PY' &
import hashlib, hmac, http.client, json, sys, threading, time
port, secret, events, out = int(sys.argv[1]), sys.argv[2].encode(), int(sys.argv[3]), sys.argv[4]
acknowledged, lock = [], threading.Lock()
def send(n):
    body = json.dumps({"id": f"evt_fault_{n}", "type": "action.sent",
                       "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                       "data": {"id": f"act_{n}"}}).encode()
    signature = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    while True:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            c.request("POST", "/webhooks/ltvboost", body, {"x-ltvboost-signature": signature,
                                                           "content-type": "application/json"})
            status = c.getresponse().status
            c.close()
            if status in (200, 202):
                with lock:
                    acknowledged.append(f"evt_fault_{n}")
                return
        except OSError:
            pass
        time.sleep(0.2)
def sender(k):
    for n in range(k, events, 4):
        send(n)
        time.sleep(0.01)
threads = [threading.Thread(target=sender, args=(k,)) for k in range(4)]
for t in threads: t.start()
for t in threads: t.join()
open(out, "w").write("\n".join(acknowledged) + "\n")
PY
senders=$!

sleep 2; echo "DEBUG SLEEP 3"; redis-cli -p "$rport" DEBUG SLEEP 3 >/dev/null
sleep 2; echo "kill -9 the worker, restart it"; kill -9 "$worker"; sleep 1; start_worker
sleep 2; echo "kill -9 Redis, restart it on its append-only file"; kill -9 "$(redis_pid)"; sleep 1; start_redis
sleep 2; echo "SHUTDOWN NOSAVE, restart"; redis-cli -p "$rport" SHUTDOWN NOSAVE >/dev/null 2>&1 || true; sleep 1; start_redis
wait "$senders"
echo "senders done; waiting for the queue to drain"
for _ in $(seq 600); do
  len=$(redis-cli -p "$rport" XLEN 'ltvboost:{default}:queue:events')
  retries=$(redis-cli -p "$rport" ZCARD 'ltvboost:{default}:queue:retry')
  [ "$len" = 0 ] && [ "$retries" = 0 ] && break
  sleep 0.1
done
kill -TERM "$worker" "$receiver"; wait "$worker" "$receiver" || true
python3 - "$dir/acknowledged" "$dir/handled" <<'PY'
import collections, sys
acknowledged = set(open(sys.argv[1]).read().split())
runs = collections.Counter(line.split()[1] for line in open(sys.argv[2]) if line.startswith("action.sent"))
lost = acknowledged - set(runs)
twice = {k: v for k, v in runs.items() if v > 1}
print(f"acknowledged {len(acknowledged)}, ran {len(runs)} distinct, lost {len(lost)}, ran twice {len(twice)}")
if lost: print("lost:", sorted(lost)[:10])
if twice: print("twice:", sorted(twice)[:10])
sys.exit(1 if lost or len(twice) > 16 else 0)
PY
echo "stream entries left: $(redis-cli -p "$rport" XLEN 'ltvboost:{default}:queue:events'), dead letters: $(redis-cli -p "$rport" XLEN 'ltvboost:{default}:queue:dead')"
echo "worker log lines at WARN or ERROR: $(grep -cE 'WARN|ERROR' "$dir/worker.log" || true)"
grep -hoE '(WARN|ERROR).*' "$dir/worker.log" | sed -E 's/[0-9]{4}-[0-9T:.Z-]+//g' | sort | uniq -c | sort -rn | head -8
