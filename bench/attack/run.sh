#!/usr/bin/env bash
# Hostile networks against the example receiver (release build, default
# settings), each run while a legitimate sender delivers one new signed event
# a second and waits up to 10 s for each answer:
#
#   slowloris  slowhttptest -H: new connections that send their headers slowly
#   slowbody   slowhttptest -B: complete heads, then bodies a few bytes at a time
#              (without a signature header: refused at the head)
#   slowsigned the same with a well-formed forged signature, so bodies are read
#   silent     connections that send nothing and are held open
#   budget     heads that declare a 1 MiB body with a well-formed (forged)
#              signature, then never send it; reopened when closed
#   hogging    keep-alive connections, each sending one cheap refused request
#              (GET on the webhook path: 405) every 5 s; reopened when closed
#
# Each attack runs twice: with the receiver's open-file limit at 1024 (a
# common default for services, below the 1024-connection cap plus what the
# process holds) and raised to the hard limit (LIMITS="1024 <hard limit>").
#
#   bash bench/attack/run.sh                    # full size: 4000 connections
#   CONNECTIONS=400 DURATION=12 bash bench/attack/run.sh   # the CI smoke
#   ATTACKS="budget hogging" RECEIVER=/path/to/receiver bash bench/attack/run.sh
#                                               # some attacks, another build
#   RECEIVER=bench/attack/listen-receiver.sh bash bench/attack/run.sh
#                                               # ltvboost listen (build it first)
#
# Prints one line per attack: the deliveries answered 200 within 10 s, the
# slowest answer, and the receiver's peak RSS. Exits non-zero when a delivery
# was not answered 200 within 10 s, or the peak RSS passed 256 MiB. Only 127.0.0.1 is targeted, every run is
# bounded by DURATION. Installs slowhttptest (Debian) when missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
CONNECTIONS=${CONNECTIONS:-4000}
DURATION=${DURATION:-40}
PORT=${PORT:-4210}
hard=$(ulimit -Hn); [ "$hard" = unlimited ] && hard=1048576
LIMITS=${LIMITS:-1024 $hard}
ATTACKS=${ATTACKS:-slowloris slowbody slowsigned silent budget hogging}
RECEIVER=${RECEIVER:-./target/release/examples/receiver}
url="http://127.0.0.1:$PORT/webhooks/ltvboost"
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

command -v slowhttptest >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slowhttptest >/dev/null; }
[ "$RECEIVER" != ./target/release/examples/receiver ] || cargo build --locked --quiet --release --example receiver

# One new event a second, each signed with the development secret; prints
# "<status> <seconds>" per delivery (000 for no answer within 10 s).
cat >"$work/sender.py" <<'PY'
import hashlib, hmac, http.client, json, sys, time, uuid
port, duration = int(sys.argv[1]), float(sys.argv[2])
key = b"ltvboost-development-secret-do-not-use-in-production"
end = time.time() + duration
while time.time() < end:
    tick = time.time()
    body = json.dumps({"id": "evt_" + uuid.uuid4().hex, "type": "response.created",
                       "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                       "data": {"id": "rsp_1", "quiz_id": "quiz_7"}}).encode()
    signature = "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()
    started = time.time()
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("POST", "/webhooks/ltvboost", body,
                           {"content-type": "application/json", "x-ltvboost-signature": signature})
        status = connection.getresponse().status
        connection.close()
    except Exception:
        status = 0
    print(f"{status:03d} {time.time() - started:.3f}", flush=True)
    time.sleep(max(0.0, 1.0 - (time.time() - tick)))
PY

# Connections that send nothing, opened at 150/s up to CONNECTIONS and held.
cat >"$work/silent.py" <<'PY'
import atexit, resource, signal, socket, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # print the tally when stopped
port, total, duration = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, total + 256), hard))
held, end = [], time.time() + duration
atexit.register(lambda: print(f"silent: {len(held)} connections opened", file=sys.stderr))
while time.time() < end:
    tick = time.time()
    for _ in range(150):
        if len(held) >= total:
            break
        try:
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            held.append(s)
        except OSError:
            break
    time.sleep(max(0.0, 1.0 - (time.time() - tick)))
PY

# Like slowhttptest -B, but with a well-formed (forged) signature header, so
# the body is read rather than refused at the head: 200 new connections/s up
# to CONNECTIONS, each sending an 8 KiB body one byte every 5 s.
cat >"$work/slowsigned.py" <<'PY'
import atexit, resource, signal, socket, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # print the tally when stopped
port, total, duration = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, total + 256), hard))
head = ("POST /webhooks/ltvboost HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        "content-length: 8192\r\nx-ltvboost-signature: sha256=" + "ab" * 32 + "\r\n\r\n").encode()
held, end, last_drip, opened = [], time.time() + duration, time.time(), 0
atexit.register(lambda: print(f"slowsigned: {opened} connections opened, {len(held)} still open", file=sys.stderr))
while time.time() < end:
    tick = time.time()
    for _ in range(200):
        if opened >= total:
            break
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=1)
            s.setblocking(False)
            s.send(head + b"{")
            held.append(s)
            opened += 1
        except OSError:
            break
    if time.time() - last_drip >= 5:
        last_drip = time.time()
        alive = []
        for s in held:
            try:
                s.send(b" ")
                alive.append(s)
            except OSError:
                s.close()
        held = alive
    time.sleep(max(0.0, 1.0 - (time.time() - tick)))
PY

# Heads that declare a 1 MiB body (well-formed forged signature) and send
# none of it: 200 new connections/s up to CONNECTIONS, reopened when closed.
cat >"$work/budget.py" <<'PY'
import atexit, resource, signal, socket, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # print the tally when stopped
port, total, duration = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, total + 256), hard))
head = ("POST /webhooks/ltvboost HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        "content-length: 1048576\r\nx-ltvboost-signature: sha256=" + "ab" * 32 + "\r\n\r\n").encode()
held, end, opened, ended = [], time.time() + duration, 0, 0
atexit.register(lambda: print(f"budget: {opened} connections opened, {ended} ended by the receiver", file=sys.stderr))
while time.time() < end:
    tick = time.time()
    alive = []
    for s in held:
        try:
            s.recv(4096)  # an answer (408) or a close: either ends it
            s.close()
            ended += 1
        except BlockingIOError:
            alive.append(s)
        except OSError:
            s.close()
            ended += 1
    held = alive
    for _ in range(200):
        if len(held) >= total:
            break
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=1)
            s.setblocking(False)
            s.send(head)
            held.append(s)
            opened += 1
        except OSError:
            break
    time.sleep(max(0.0, 0.5 - (time.time() - tick)))
PY

# Keep-alive connections that each send one cheap refused request every
# 5 s: 300 new connections/s up to CONNECTIONS, reopened when closed.
cat >"$work/hogging.py" <<'PY'
import atexit, resource, signal, socket, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # print the tally when stopped
port, total, duration = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, total + 256), hard))
poke = b"GET /webhooks/ltvboost HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n"
held, end, opened, closed = {}, time.time() + duration, 0, 0
atexit.register(lambda: print(f"hogging: {opened} connections opened, {closed} closed by the receiver", file=sys.stderr))
while time.time() < end:
    tick = time.time()
    for s, last in list(held.items()):
        try:
            if s.recv(65536) == b"":
                raise OSError("closed")
        except BlockingIOError:
            pass
        except OSError:
            s.close()
            del held[s]
            closed += 1
            continue
        if tick - last >= 5:
            try:
                s.send(poke)
                held[s] = tick
            except OSError:
                s.close()
                del held[s]
                closed += 1
    for _ in range(300):
        if len(held) >= total:
            break
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=1)
            s.setblocking(False)
            s.send(poke)
            held[s] = tick
            opened += 1
        except OSError:
            break
    time.sleep(max(0.0, 0.5 - (time.time() - tick)))
PY

attack() { # name command...
  local name=$1; shift
  case " $ATTACKS " in *" $name "*) ;; *) return 0 ;; esac
  (ulimit -n "$nofile" && exec env LTVBOOST_WEBHOOK_ADDR=127.0.0.1:$PORT RUST_LOG=error "$RECEIVER") >"$work/$name.receiver" 2>&1 &
  local receiver=$!; pids+=("$receiver")
  # Up once it answers HTTP at all (ltvboost listen has no /healthz: 405).
  for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$PORT/healthz" && break; sleep 0.1; done
  "$@" >"$work/$name.attack" 2>&1 &
  local attacker=$!; pids+=("$attacker")
  sleep 3 # let the attack build up first
  python3 "$work/sender.py" "$PORT" "$((DURATION - 6))" >"$work/$name.sender"
  kill "$attacker" 2>/dev/null || true; wait "$attacker" 2>/dev/null || true
  # How hard the attack held on: slowhttptest's peak of connected sockets.
  if [ -f "$work/$name.csv" ]; then
    awk -F, 'NR > 1 && $4 > max { max = $4 } END { printf "  slowhttptest: at most %d connections open at once\n", max }' "$work/$name.csv"
  fi
  grep -h 'connections opened' "$work/$name.attack" || true
  local rss_kib; rss_kib=$(awk '/VmHWM/ {print $2}' "/proc/$receiver/status")
  local rss; rss=$(awk -v k="$rss_kib" 'BEGIN {printf "%.1f MiB", k / 1024}')
  kill "$receiver"; wait "$receiver" 2>/dev/null || true
  local sent ok slowest
  sent=$(wc -l <"$work/$name.sender")
  ok=$(awk '$1 == "200" && $2 < 10' "$work/$name.sender" | wc -l)
  slowest=$(sort -k2 -n "$work/$name.sender" | tail -n 1 | awk '{print $2 " s"}')
  printf '%-10s nofile %-5s deliveries answered 200 within 10 s: %s/%s, slowest %s, receiver peak RSS %s\n' \
    "$name" "$nofile" "$ok" "$sent" "$slowest" "$rss"
  [ "$ok" = "$sent" ] && [ "$sent" -gt 0 ] || { echo "$name: a delivery failed"; cat "$work/$name.sender"; failed=1; }
  [ "$rss_kib" -le $((256 * 1024)) ] || { echo "$name: peak RSS over 256 MiB"; failed=1; }
  rm -f "$work/$name.csv"
}

failed=0
echo "attacks of up to $CONNECTIONS connections, ${DURATION}s each, against $url"
for nofile in $LIMITS; do
  attack slowloris slowhttptest -H -c "$CONNECTIONS" -r 200 -i 5 -x 24 -t POST -u "$url" -p 3 -l "$DURATION" -g -o "$work/slowloris"
  attack slowbody slowhttptest -B -c "$CONNECTIONS" -r 200 -i 5 -x 10 -s 8192 -t POST -u "$url" -p 3 -l "$DURATION" -g -o "$work/slowbody"
  attack slowsigned python3 "$work/slowsigned.py" "$PORT" "$CONNECTIONS" "$DURATION"
  attack silent python3 "$work/silent.py" "$PORT" "$CONNECTIONS" "$DURATION"
  attack budget python3 "$work/budget.py" "$PORT" "$CONNECTIONS" "$DURATION"
  attack hogging python3 "$work/hogging.py" "$PORT" "$CONNECTIONS" "$DURATION"
done
exit "$failed"
