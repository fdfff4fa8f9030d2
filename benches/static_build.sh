#!/usr/bin/env bash
# The static release binary: build it, check it is static, report its size,
# and run it once against the built-in sim.
#   bash benches/static_build.sh
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-gnu
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --target "$target"
bin=target/$target/release/trie
file "$bin"
ldd "$bin" 2>&1 || true
echo "size: $(stat -c %s "$bin") bytes ($(du -h "$bin" | cut -f1))"
"$bin" --version
"$bin" --workload data/qa.jsonl --endpoint sim --concurrency 4 --duration 2 -q 2>&1 | grep "benchmark complete" | cut -c1-120
