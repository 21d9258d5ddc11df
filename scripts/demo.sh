#!/bin/sh
# The tour of mapheap (`make demo`). Each section shows one capability on this
# machine's real resources; later subsystems add their sections here.
set -eu
BUILD=${1:-build/release}
MAPHEAP="$BUILD/tools/mapheap/mapheap"
section() { printf '\n\033[1m== %s\033[0m\n\n' "$1"; }

section "1. What this machine offers (mapheap info)"
"$MAPHEAP" info

section "2. Reading a file: read() versus mmap (mapheap bench io --quick)"
echo "A short run (the full study: mapheap bench io; results in docs/BENCHMARKS.md)."
"$MAPHEAP" bench io --quick --png "$BUILD/demo-io.png"
echo
echo "Plot written to $BUILD/demo-io.png"
