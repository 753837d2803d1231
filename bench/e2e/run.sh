#!/usr/bin/env bash
# End-to-end load: wrk posts distinct signed 1 KiB events to each receiver in
# turn, on this machine, in one run, and prints a table with ratios.
#
#   bash bench/e2e/run.sh                       # 3 rounds of 10 s a server
#   DURATION=3 ROUNDS=1 bash bench/e2e/run.sh   # a quick smoke
#   BASELINE_BIN=/path/to/bench_server bash bench/e2e/run.sh
#                                               # also an older build's `memory` mode
#   BASELINE_MODES="layer redis" BASELINE_BIN=… # …or other modes of it
#   RECEIVERS="layer metrics baseline_memory" ROUNDS=8 bash bench/e2e/run.sh
#                                               # an interleaved A/B of a few
#   KEEP=rounds.txt bash bench/e2e/run.sh       # also keep every measurement
#                                               # (name, requests/s, p50, p99, RSS
#                                               # KiB, requests, server and Redis
#                                               # CPU ticks)
#
# Each round measures every receiver once, in turn, so that a slow spell on
# the shared machine hits one round rather than one receiver; the table
# gives each receiver's median over the rounds. Every receiver is started
# afresh for each measurement, so each event it sees is new to it: every
# delivery goes the whole way (verify, parse, claim, handler, done-record).
#
# Receivers: the bare axum ceiling, the WebhookLayer with every default (the
# in-memory store: what users run), the same without deduplication
# (NoDedupe: the best case), the layer mounted with Router::layer, the
# WebhookEndpoint under route_service, and the seed's Express receiver
# (express.raw + the documented HMAC). Installs wrk (Debian) and express
# (npm) when missing. Only 127.0.0.1 is targeted; every run is bounded by
# DURATION. Besides requests/s, each row gives the CPU time the receiver (and
# Redis or Postgres, for the rows that use them) spent per request, read from /proc: steadier
# than requests/s on a shared machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
here=bench/e2e
work=$(mktemp -d)
pids=()
pg_dir=$(mktemp -d)
# Postgres refuses root: its commands run as the `postgres` user then.
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -z "${pg_bin:-}" ] || as_pg "$pg_bin/pg_ctl" -D "$pg_dir/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$work" "$pg_dir"
}
trap cleanup EXIT

command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
if [ ! -d "$here/express/node_modules/express" ]; then
  (cd "$here/express" && npm install --silent --no-package-lock --no-audit --no-fund >/dev/null)
fi
# Two builds: without the `metrics` feature (every receiver below), and with
# it, for the metrics' cost.
cargo build --locked --quiet --release -p ltvboost-bench --bin bench_server
cp target/release/bench_server "$work/bench_server"
cargo build --locked --quiet --release -p ltvboost-bench --features metrics --bin bench_server
cp target/release/bench_server "$work/bench_server_metrics"
cargo build --locked --quiet --release -p ltvboost-bench --features queue --bin bench_server
cp target/release/bench_server "$work/bench_server_queue"
# The example receiver as shipped (its log lines and printed lines included),
# and with the Redis and Postgres stores it offers.
cargo build --locked --quiet --release --example receiver
cp target/release/examples/receiver "$work/example_receiver"
cargo build --locked --quiet --release --features redis,postgres --example receiver
cp target/release/examples/receiver "$work/example_receiver_stores"

# A private Redis for the Redis dedupe store and enqueue mode: no
# persistence (the fastest setting), emptied before each measurement.
command -v redis-server >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }
redis_port=4190
redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no --dir "$work" --daemonize no >"$work/redis.log" 2>&1 &
redis_pid=$!
pids+=("$redis_pid")
# User and system CPU time of a process so far, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
for _ in $(seq 1 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
export BENCH_REDIS_URL="redis://127.0.0.1:$redis_port/"

# A private Postgres for the example's Postgres path, with Debian's
# defaults (fsync and synchronous_commit on: what a user runs); its tables
# emptied before each measurement.
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }
pg_bin=$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")
pg_port=4191
[ "$(id -u)" != 0 ] || chown postgres "$pg_dir"
as_pg "$pg_bin/initdb" -D "$pg_dir/data" -U ltvboost --auth=trust -E UTF8 >/dev/null
as_pg "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/log" -w \
  -o "-p $pg_port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$pg_dir" start >/dev/null
pg_url="postgres://ltvboost@127.0.0.1:$pg_port/postgres"
pg_pid=$(head -1 "$pg_dir/data/postmaster.pid")
# CPU ticks of the store a receiver uses: Redis, or Postgres' postmaster and
# every backend it forked.
store_ticks() {
  case $1 in
    example_postgres)
      local total=0 pid
      for pid in $pg_pid $(ps -o pid= --ppid "$pg_pid"); do
        total=$(( total + $(cpu_ticks "$pid" 2>/dev/null || echo 0) ))
      done
      echo "$total" ;;
    *) cpu_ticks "$redis_pid" ;;
  esac
}

# Realistic 1 KiB response.created events, created now, signed: one list of
# ids and signatures per wrk thread, enough for 120 000 requests/s.
per_thread=$(( 120000 * (DURATION + 1) / THREADS + 1 ))
python3 - "$work" "$THREADS" "$per_thread" <<'PY'
import hashlib, hmac, json, sys, time
work, threads, per_thread = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
answers = [{"question": f"q{i}", "answer": f"answer number {i}"} for i in range(18)]
event = {"id": "evt_bench_IDMARK", "type": "response.created",
         "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
         "data": {"id": "rsp_8f3a9c2d", "quiz_id": "quiz_onboarding", "customer_id": "cus_1042",
                  "email": "ada@example.com", "answers": answers}}
prefix, suffix = json.dumps(event, separators=(",", ":")).split("IDMARK")
open(f"{work}/prefix", "w").write(prefix)
open(f"{work}/suffix", "w").write(suffix)
key = hmac.new(b"ltvboost-development-secret-do-not-use-in-production", digestmod=hashlib.sha256)
for t in range(threads):
    with open(f"{work}/sigs.{t}", "w") as out:
        for n in range(1, per_thread + 1):
            mac = key.copy()
            mac.update(f"{prefix}t{t}_{n}{suffix}".encode())
            out.write("sha256=" + mac.hexdigest() + "\n")
    if t == 0:
        open(f"{work}/body", "w").write(f"{prefix}probe{suffix}")
print(f"event body: {len(prefix) + len(suffix) + 8} bytes, {per_thread} events a thread", file=sys.stderr)
PY
export EVENTS_DIR="$work"
key=ltvboost-development-secret-do-not-use-in-production
printf 'sha256=%s' "$(openssl dgst -sha256 -hmac "$key" -r "$work/body" | cut -d' ' -f1)" >"$work/sig"
export BODY_FILE="$work/body" SIG_FILE="$work/sig"

declare -A commands
start() { # name port command...
  local name=$1 port=$2; shift 2
  commands[$name]="$*"
  "$@" >"$work/$name.out" 2>&1 &
  pids+=($!)
  eval "pid_$name=$!"
  for _ in $(seq 1 100); do
    (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "$name did not start"; cat "$work/$name.out"; exit 1
}

measure() { # name port
  local name=$1 port=$2 pid_var="pid_$1"
  local url="http://127.0.0.1:$port/webhooks/ltvboost"
  case $name in redis | enqueue | handoff | xadd | example_redis | baseline_redis | baseline_enqueue) redis-cli -p "$redis_port" flushall >/dev/null ;; esac
  [ "$name" != example_postgres ] || "$pg_bin/psql" -q "$pg_url" \
    -c 'TRUNCATE ltvboost.dedupe, ltvboost.inbox, ltvboost_example_effects' >/dev/null 2>&1 || true
  # A correctness check first: a benchmark of errors would be worthless.
  local status
  status=$(curl -s -o /dev/null -w '%{http_code}' "$url" -H "x-ltvboost-signature: $(cat "$SIG_FILE")" \
    -H 'content-type: application/json' --data-binary @"$BODY_FILE")
  [ "$status" = 200 ] || [ "$status" = 202 ] || { echo "$name answered $status to a valid event"; exit 1; }
  START=$(( per_thread - 120000 / THREADS )) wrk -t"$THREADS" -c"$CONNECTIONS" -d1s -s "$here/post.lua" "$url" >/dev/null # warm-up
  local server_before redis_before server_after redis_after
  server_before=$(cpu_ticks "${!pid_var}"); redis_before=$(store_ticks "$name")
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$here/post.lua" "$url" >"$work/$name.wrk"
  server_after=$(cpu_ticks "${!pid_var}"); redis_after=$(store_ticks "$name")
  local rps p50 p99 rss errors requests
  rps=$(awk '/^Requests\/sec/ {print $2}' "$work/$name.wrk")
  p50=$(awk '$1=="50%" {print $2}' "$work/$name.wrk")
  p99=$(awk '$1=="99%" {print $2}' "$work/$name.wrk")
  errors=$(awk '/Non-2xx/ {print $NF}' "$work/$name.wrk"); errors=${errors:-0}
  rss=$(awk '/VmHWM/ {print $2}' "/proc/${!pid_var}/status")
  [ "$errors" = 0 ] || { echo "$name: $errors non-2xx answers"; cat "$work/$name.wrk"; exit 1; }
  requests=$(awk '/requests in/ {print $1}' "$work/$name.wrk")
  printf '%s %s %s %s %s %s %s %s\n' "$name" "$rps" "$p50" "$p99" "$rss" "$requests" \
    $(( server_after - server_before )) $(( redis_after - redis_before )) >>"$work/results"
  # A fresh process for the next round: its store has seen none of the events.
  kill "${!pid_var}" 2>/dev/null || true
  wait "${!pid_var}" 2>/dev/null || true
  # shellcheck disable=SC2086
  start "$name" "$port" ${commands[$name]}
}

receivers=("bare 4101" "handwritten 4114" "layer 4102" "example 4115" "example_redis 4116" "example_postgres 4117" "metrics 4109" "nodedupe 4106" "routerlayer 4105" "endpoint 4107" "redis 4110" "enqueue 4111" "handoff 4113" "xadd 4112" "express 4104")
start bare 4101 "$work/bench_server" bare 127.0.0.1:4101
start layer 4102 "$work/bench_server" layer 127.0.0.1:4102
start handwritten 4114 "$work/bench_server" handwritten 127.0.0.1:4114
start example 4115 env LTVBOOST_WEBHOOK_ADDR=127.0.0.1:4115 "$work/example_receiver"
start example_redis 4116 env LTVBOOST_WEBHOOK_ADDR=127.0.0.1:4116 LTVBOOST_REDIS_URL="$BENCH_REDIS_URL" "$work/example_receiver_stores"
start example_postgres 4117 env LTVBOOST_WEBHOOK_ADDR=127.0.0.1:4117 LTVBOOST_DATABASE_URL="$pg_url" "$work/example_receiver_stores"
start metrics 4109 "$work/bench_server_metrics" layer-metrics 127.0.0.1:4109
start nodedupe 4106 "$work/bench_server" layer-no-dedupe 127.0.0.1:4106
start routerlayer 4105 "$work/bench_server" router-layer 127.0.0.1:4105
start endpoint 4107 "$work/bench_server" endpoint 127.0.0.1:4107
start redis 4110 "$work/bench_server_queue" redis 127.0.0.1:4110
start enqueue 4111 "$work/bench_server_queue" enqueue 127.0.0.1:4111
start handoff 4113 "$work/bench_server_queue" handoff 127.0.0.1:4113
start xadd 4112 "$work/bench_server_queue" xadd 127.0.0.1:4112
start express 4104 node "$here/express/server.js" 4104
if [ -n "${BASELINE_BIN:-}" ]; then
  port=4120
  for mode in ${BASELINE_MODES:-memory}; do
    name="baseline_${mode//-/_}" # a shell variable's name holds no '-'
    start "$name" "$port" "$BASELINE_BIN" "$mode" "127.0.0.1:$port"
    receivers+=("$name $port")
    port=$((port + 1))
  done
fi
if [ -n "${RECEIVERS:-}" ]; then # keep only those named, in their order
  chosen=()
  for name in $RECEIVERS; do
    for pair in "${receivers[@]}"; do [ "${pair%% *}" = "$name" ] && chosen+=("$pair"); done
  done
  receivers=("${chosen[@]}")
fi

echo "wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s, one receiver at a time, median of $ROUNDS rounds, $(nproc) cores"
for _ in $(seq 1 "$ROUNDS"); do
  for pair in "${receivers[@]}"; do
    # shellcheck disable=SC2086
    measure $pair
  done
done

python3 - "$work/results" "$(getconf CLK_TCK)" <<'PY'
import statistics, sys
def micros(text):
    for unit, scale in (("us", 1), ("ms", 1000), ("s", 1_000_000)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * scale
    raise ValueError(text)
tick = 1_000_000 / int(sys.argv[2])  # µs
runs = {}
for line in open(sys.argv[1]):
    name, rps, p50, p99, rss, requests, server, redis = line.split()
    n = int(requests)
    runs.setdefault(name, []).append((float(rps), micros(p50), micros(p99), int(rss),
                                      int(server) * tick / n, int(redis) * tick / n))
median = {n: statistics.median(r[0] for r in rs) for n, rs in runs.items()}
names = {"bare": "bare axum (reads the body only)",
         "handwritten": "hand-written receiver: verify, serde of envelope and payload, 200",
         "layer": "WebhookLayer wrapping the router, default in-memory store",
         "example": "examples/receiver as shipped (logs, printed line)",
         "example_redis": "the example on the Redis store (LTVBOOST_REDIS_URL)",
         "example_postgres": "the example in a Postgres transaction (LTVBOOST_DATABASE_URL): insert, done-record, inbox row, COMMIT",
         "nodedupe": "the same with NoDedupe (best case)",
         "metrics": "the default layer, feature metrics, Prometheus recorder",
         "routerlayer": "the default layer mounted with Router::layer",
         "endpoint": "WebhookEndpoint under Router::route_service",
         "redis": "the layer with RedisStore, handlers inline",
         "enqueue": "enqueue mode: 202 once in the Redis stream",
         "handoff": "hand-written durable hand-off: verify, serde, XADD body + signature",
         "xadd": "the floor: axum that only XADDs the body (no verify, no dedupe)",
         "express": "seed's Express receiver"}
def ratio(name, over):
    return f"{median[name] / median[over]:.2f}" if over in median else "–"
print("| receiver | requests/s | × bare | × Express | p50 | p99 | peak RSS | server CPU/req | Redis or Postgres CPU/req |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for name, rs in runs.items():
    r = median[name]
    p50 = statistics.median(x[1] for x in rs)
    p99 = statistics.median(x[2] for x in rs)
    rss = max(x[3] for x in rs)
    server = statistics.median(x[4] for x in rs)
    redis = statistics.median(x[5] for x in rs)
    uses_redis = name in ("redis", "enqueue", "handoff", "xadd", "example_redis", "example_postgres",
                          "baseline_redis", "baseline_enqueue")
    redis = f"{redis:.1f} µs" if uses_redis else "–"
    spread = f" ({min(x[0] for x in rs):,.0f}–{max(x[0] for x in rs):,.0f})" if len(rs) > 1 else ""
    label = names.get(name) or f"BASELINE_BIN {name.removeprefix('baseline_')}"
    print(f"| {label} | {r:,.0f}{spread} | {ratio(name, 'bare')} | {ratio(name, 'express')} "
          f"| {p50:,.0f} µs | {p99:,.0f} µs | {rss / 1024:.1f} MiB | {server:.1f} µs | {redis} |")
# Paired ratios of each round (rows measured one after another in a round):
# steadier than the ratio of medians when the machine's speed drifts.
for over in ("handoff", "xadd"):
    if len(next(iter(runs.values()))) > 1 and over in runs and "enqueue" in runs:
        pairs = [a[0] / b[0] for a, b in zip(runs["enqueue"], runs[over])]
        cpu = [a[5] / b[5] for a, b in zip(runs["enqueue"], runs[over]) if b[5] > 0]
        print(f"enqueue / {over}, paired by round: requests/s {statistics.median(pairs):.3f} "
              f"({min(pairs):.3f}–{max(pairs):.3f}); Redis CPU a request "
              f"{statistics.median(cpu):.2f}× ({min(cpu):.2f}–{max(cpu):.2f})")
if len(next(iter(runs.values()))) > 1 and "layer" in runs:
    for name in runs:
        if name != "layer":
            pairs = [a[0] / b[0] for a, b in zip(runs[name], runs["layer"])]
            cpu = [a[4] / b[4] for a, b in zip(runs["layer"], runs[name]) if b[4] > 0]
            print(f"{name} / layer, paired by round: median {statistics.median(pairs):.3f} "
                  f"({min(pairs):.3f}–{max(pairs):.3f}); layer's server CPU a request "
                  f"{statistics.median(cpu):.2f}× {name}'s")
PY
if [ -n "${KEEP:-}" ]; then cp "$work/results" "$KEEP"; fi
