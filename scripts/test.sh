#!/usr/bin/env bash
# The whole test suite: unit, integration (real HTTP on 127.0.0.1), property
# and doc tests, with every feature. CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --all-features --all-targets
cargo test --all-features --doc
