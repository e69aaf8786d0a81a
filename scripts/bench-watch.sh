#!/bin/sh
# Pill-to-reaction latency (median, max over N pills) and memory of our SBD watcher and of
# Debian sbd's watcher on the same three loop devices. Needs root and Debian sbd
# (scripts/install-test-deps.sh). Usage: scripts/bench-watch.sh [N=20]
set -eu
cd "$(dirname "$0")/.."
cargo build -q -p watchdog --bin palisade-sbd
exec cargo run -q -p hw-tests --example watch_bench -- "${1:-20}"
