#!/usr/bin/env bash
# The feature matrix: the crate builds and its unit tests pass with no
# features, with the defaults, and with each feature alone, so no feature
# leans on another it does not declare. Then `cargo test` with the default
# features, which the README promises needs no service (no Redis, no promtool).
#
# A test build always adds `testing`: the tests use the crate's own helpers
# (a dev-dependency on itself), and cargo unifies the features.
set -euo pipefail
cd "$(dirname "$0")/.."

features=$(sed -n '/^\[features\]/,/^\[/p' Cargo.toml | sed -n 's/^\([a-z][a-z-]*\) = \[.*/\1/p' | grep -v '^default$')

run() { printf '\n-- %s\n' "$*"; "$@"; }

# clippy rather than check: a warning under one feature set fails it too.
run cargo clippy --locked --no-default-features -- -D warnings
run cargo test --locked --no-default-features --lib
for feature in $features; do
  run cargo clippy --locked --no-default-features --features "$feature" -- -D warnings
  run cargo test --locked --no-default-features --features "$feature" --lib
done

# The README's promise: `cargo test` as it comes needs nothing running.
run env -u LTVBOOST_TEST_REDIS_URL cargo test --locked
