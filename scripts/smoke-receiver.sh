#!/usr/bin/env bash
# Runs the README's set-up command and sends it the README's signed event:
# proves the set-up steps work as written.
set -euo pipefail
cd "$(dirname "$0")/.."
port=${SMOKE_PORT:-3917}
log=$(mktemp)
hyper_log=$(mktemp)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -f "$log" "$hyper_log"' EXIT
# Built first, so that starting them is quick.
cargo build --locked --quiet --example receiver --example hyper_receiver

start() { # example port log: runs it as the README says, waits for /healthz
  LTVBOOST_WEBHOOK_ADDR=127.0.0.1:$2 cargo run --locked --quiet --example "$1" >"$3" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 300); do
    curl -sf "http://127.0.0.1:$2/healthz" >/dev/null && return 0
    sleep 0.1
  done
  echo "$1 did not start"; cat "$3"; exit 1
}

start receiver "$port" "$log"
BODY='{"id":"evt_1","type":"response.created","created_at":"'$(date -u +%FT%TZ)'","data":{"id":"rsp_1","quiz_id":"quiz_7"}}'
SIG=$(printf '%s' "$BODY" | openssl dgst -sha256 -hmac 'ltvboost-development-secret-do-not-use-in-production' -r | cut -d' ' -f1)
send() { curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/webhooks/ltvboost" -H "x-ltvboost-signature: sha256=$SIG" -H 'content-type: application/json' --data-binary "$1"; }
first=$(send "$BODY"); again=$(send "$BODY"); forged=$(send "${BODY/rsp_1/rsp_2}")
sleep 0.2
echo "receiver smoke: first=$first again=$again forged=$forged"
[ "$first" = 200 ] && [ "$again" = 200 ] && [ "$forged" = 401 ] || { cat "$log"; exit 1; }
grep -q 'response.created evt_1' "$log" || { echo "no handler line in the receiver's output"; cat "$log"; exit 1; }
[ "$(grep -c 'response.created evt_1' "$log")" = 1 ] || { echo "handler ran more than once"; cat "$log"; exit 1; }
grep -q 'development secret' "$log" || { echo "no warning about the development secret"; exit 1; }
# The CLI delivers a signed fixture through the sender simulator.
cargo run --locked --quiet --features cli --bin ltvboost -- send "http://127.0.0.1:$port/webhooks/ltvboost" action.sent --id evt_smoke_cli
sleep 0.2
grep -q 'action.sent evt_smoke_cli' "$log" || { echo "the CLI's event was not handled"; cat "$log"; exit 1; }
# The same receiver on plain hyper answers the same way.
start hyper_receiver "$((port + 1))" "$hyper_log"
hyper_first=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$((port + 1))/webhooks/ltvboost" \
  -H "x-ltvboost-signature: sha256=$SIG" --data-binary "$BODY")
hyper_404=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$((port + 1))/nowhere")
sleep 0.2
echo "hyper receiver smoke: first=$hyper_first elsewhere=$hyper_404"
[ "$hyper_first" = 200 ] && [ "$hyper_404" = 404 ] || { cat "$hyper_log"; exit 1; }
grep -q 'response.created evt_1' "$hyper_log" || { echo "no handler line from hyper_receiver"; cat "$hyper_log"; exit 1; }

# The register example refuses an unknown event before any request, and
# names the status when the API answers an error (the receiver is no API: 404).
if out=$(cargo run --locked --quiet --features client --example register -- https://app.example/hook quiz.archived 2>&1); then
  echo "register accepted an unknown event"; exit 1
fi
grep -q 'unknown event "quiz.archived"' <<<"$out" || { echo "$out"; exit 1; }
if out=$(LTVBOOST_API_TOKEN=smoke-token-not-for-logs LTVBOOST_API_BASE="http://127.0.0.1:$port/v1" \
         cargo run --locked --quiet --features client --example register -- https://app.example/hook response.created 2>&1); then
  echo "register succeeded against a non-API"; exit 1
fi
grep -q '404' <<<"$out" || { echo "register did not name the status: $out"; exit 1; }
! grep -q 'smoke-token-not-for-logs' <<<"$out" || { echo "register printed the token"; exit 1; }
echo "receiver smoke: ok"
