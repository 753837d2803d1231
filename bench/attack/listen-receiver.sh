#!/usr/bin/env bash
# `ltvboost listen` run as bench/attack/run.sh runs a receiver: on
# LTVBOOST_WEBHOOK_ADDR, verifying with the development secret (loopback).
#
#   cargo build --release --locked --features cli --bin ltvboost
#   RECEIVER=bench/attack/listen-receiver.sh bash bench/attack/run.sh
exec "${LTVBOOST_BIN:-./target/release/ltvboost}" listen --addr "$LTVBOOST_WEBHOOK_ADDR"
