#!/usr/bin/env bash
# The README as a new user follows it: the Install section's Cargo.toml lines
# and the "Use" example, copied into a new crate (this crate by path, since
# it is not published from here). The receiver it builds must answer a
# signed event 200 and print the handler's line, and a forged one 401.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
port=${INSTALL_CHECK_PORT:-3919}
dir=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$dir"' EXIT

# The first toml block under "## Install", and the first rust block under "## Use".
deps=$(awk '/^## Install/{f=1} f&&/^```toml/{p=1; next} p&&/^```/{exit} p' README.md)
grep -q '^ltvboost-webhooks = "0.1"$' <<<"$deps" || { echo "no install line in the README"; exit 1; }
mkdir -p "$dir/src"
{
  printf '[package]\nname = "first-receiver"\nversion = "0.1.0"\nedition = "2024"\n\n'
  sed "s|^ltvboost-webhooks = \"0.1\"$|ltvboost-webhooks = { path = \"$repo\" }|" <<<"$deps"
} >"$dir/Cargo.toml"
# The code exactly as shown (rustdoc's hidden `# ` lines included), on a free port.
awk '/^## Use/{f=1} f&&/^```rust/{p=1; next} p&&/^```$/{exit} p' README.md \
  | sed -e 's/^# //' -e 's/^#$//' -e "s/0\.0\.0\.0:3000/127.0.0.1:$port/" >"$dir/src/main.rs"
# The same versions as this repository's lock file, where they apply.
cp Cargo.lock "$dir/"
CARGO_TARGET_DIR="$repo/target/install-check" cargo build --quiet --manifest-path "$dir/Cargo.toml"

secret=install-check-secret-0123456789abcdef
LTVBOOST_WEBHOOK_SECRET=$secret "$repo/target/install-check/debug/first-receiver" >"$dir/out" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break
  sleep 0.1
done
BODY='{"id":"evt_first","type":"response.created","created_at":"'$(date -u +%FT%TZ)'","data":{"id":"rsp_first"}}'
SIG=$(printf '%s' "$BODY" | openssl dgst -sha256 -hmac "$secret" -r | cut -d' ' -f1)
send() { curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/webhooks/ltvboost" -H "x-ltvboost-signature: sha256=$SIG" --data-binary "$1"; }
signed=$(send "$BODY"); forged=$(send "${BODY/rsp_first/rsp_other}")
sleep 0.2
echo "a new crate from the README: signed=$signed forged=$forged"
[ "$signed" = 200 ] && [ "$forged" = 401 ] || { cat "$dir/out"; exit 1; }
grep -q 'evt_first: new response rsp_first' "$dir/out" || { echo "no handler line"; cat "$dir/out"; exit 1; }
