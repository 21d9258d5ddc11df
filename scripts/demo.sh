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

section "3. One heap, many processes, kept in a file (mapheap's mapped heap)"
WORDCOUNT="$BUILD/examples/wordcount"
HEAPFILE="$BUILD/demo-words.heap"
CORPUS=/usr/lib/python3.11
[ -d "$CORPUS" ] || CORPUS=$(dirname "$0")/..
echo "Four worker processes count the words of $CORPUS's text files into one"
echo "heap file, each into a map of its own (boost::container::map of strings, with"
echo "mapheap::allocator). Worker 2 is killed with SIGKILL half-way; the others"
echo "carry on (the dead worker's locks are taken over, its half-done critical"
echo "section rolled back), and the parent redoes worker 2's share."
echo
"$WORDCOUNT" build "$HEAPFILE" "$CORPUS" --workers 4 --kill 2 --max-files 1500
echo
echo "Every invariant of the heap holds (mapheap check):"
"$MAPHEAP" check "$HEAPFILE"
echo
echo "Worker 2's half-built map was never named: gc finds it unreachable and frees it."
"$MAPHEAP" gc "$HEAPFILE"
echo
echo "Reopened by a new process: no rebuild, no scan, whatever the heap's size."
"$WORDCOUNT" query "$HEAPFILE" self import def return mapheap
echo
"$MAPHEAP" ls "$HEAPFILE"
echo
"$MAPHEAP" map "$HEAPFILE" --png "$BUILD/demo-heap.png" | tail -n 3
echo "The heap's pages, coloured by state and size class: $BUILD/demo-heap.png"
