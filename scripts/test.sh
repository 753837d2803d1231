#!/usr/bin/env bash
# The whole test suite: unit, integration (real HTTP on 127.0.0.1, a real
# Redis server), property and doc tests, with every feature. CI runs exactly
# this.
#
# Postgres: the Postgres tests (tests/postgres.rs) start private clusters of
# their own from Debian's postgresql binaries (installed here when missing and
# running as root); set LTVBOOST_TEST_PG_BIN to use binaries elsewhere.
#
# Redis: uses LTVBOOST_TEST_REDIS_URL when set; otherwise starts a private
# redis-server on a free 127.0.0.1 port with no persistence (installing
# Debian's redis-server first when missing and running as root), and stops it
# at exit.
set -euo pipefail
cd "$(dirname "$0")/.."

# promtool (Debian's prometheus package) checks the scraped metrics.
if ! command -v promtool >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing prometheus (for promtool) from Debian's packages"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  else
    echo "promtool not found: install Debian's prometheus package" >&2
    exit 1
  fi
fi

if [ -z "${LTVBOOST_TEST_PG_BIN:-}" ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing postgresql from Debian's packages"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  else
    echo "Postgres' initdb not found: install Debian's postgresql, or set LTVBOOST_TEST_PG_BIN" >&2
    exit 1
  fi
fi

if [ -z "${LTVBOOST_TEST_REDIS_URL:-}" ]; then
  if ! command -v redis-server >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "installing redis-server from Debian's packages"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
    else
      echo "redis-server not found: install it (some tests start their own, even with LTVBOOST_TEST_REDIS_URL set)" >&2
      exit 1
    fi
  fi
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  redis_dir=$(mktemp -d)
  redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no \
    --dir "$redis_dir" --daemonize no >"$redis_dir/log" 2>&1 &
  redis_pid=$!
  trap 'kill $redis_pid 2>/dev/null; wait $redis_pid 2>/dev/null; rm -rf "$redis_dir"' EXIT
  for _ in $(seq 1 50); do
    redis-cli -p "$port" ping >/dev/null 2>&1 && break
    sleep 0.1
  done
  redis-cli -p "$port" ping >/dev/null || { echo "redis-server did not start:"; cat "$redis_dir/log"; exit 1; }
  export LTVBOOST_TEST_REDIS_URL="redis://127.0.0.1:$port/"
  echo "redis-server for the tests at $LTVBOOST_TEST_REDIS_URL"
fi

cargo test --locked --all-features --all-targets
cargo test --locked --all-features --doc
