#!/bin/sh
# `make bench`: the full measurements. Tables go to stdout and $BUILD/bench/;
# plots to docs/bench/. Copy the tables into docs/BENCHMARKS.md with the date.
set -eu
BUILD=${1:-build/release}
ONLY=${2:-all}  # "malloc": only the process allocators' comparison; "heap": only the mapped heaps
MAPHEAP="$BUILD/tools/mapheap/mapheap"
mkdir -p "$BUILD/bench" docs/bench
date -u +"%Y-%m-%d %H:%M UTC" | tee "$BUILD/bench/when.txt"
"$MAPHEAP" info | tee "$BUILD/bench/machine.txt"
if [ "$ONLY" = all ]; then
  "$MAPHEAP" bench io --png docs/bench/io.png | tee "$BUILD/bench/io.txt"
  "$BUILD/bench/mapping_bench" --benchmark_repetitions=5 --benchmark_report_aggregates_only=true \
    | tee "$BUILD/bench/mapping.txt"
  taskset -c 1 "$BUILD/bench/slab_bench" --benchmark_repetitions=5 --benchmark_report_aggregates_only=true \
    | tee "$BUILD/bench/slab.txt"
  "$BUILD/bench/engine_bench" --benchmark_repetitions=5 --benchmark_enable_random_interleaving=true \
    --benchmark_report_aggregates_only=true \
    | tee "$BUILD/bench/engine.txt"
  taskset -c 1 "$BUILD/bench/size_class_bench" --benchmark_repetitions=5 \
    --benchmark_report_aggregates_only=true | tee "$BUILD/bench/size_class.txt"
fi

# Process allocators side by side (glibc, jemalloc, tcmalloc, mimalloc,
# mapheap by LD_PRELOAD): the stress workloads of bench/malloc/ and three real
# programs. $MAPHEAP_BENCH_TMP is the runner's scratch directory.
if [ "$ONLY" = all ] || [ "$ONLY" = malloc ]; then
  SRC=$(pwd)
  BIG=$(ls -S "$SRC"/tools/mapheap/*.cpp "$SRC"/src/*/*.cpp | head -1)
  SQL="create table t(a integer primary key, b text);
with recursive c(x) as (select 1 union all select x + 1 from c where x < 100000)
  insert into t select x, hex(randomblob(20)) from c;
create index i on t(b); select count(*) from t where b like 'AB%'; pragma integrity_check;"
  "$MAPHEAP" bench malloc --reps "${MALLOC_REPS:-3}" \
    --json "$BUILD/bench/malloc.json" --png docs/bench/malloc.png \
    --program "python-tests=PYTHONMALLOC=malloc /usr/bin/python3 -m test -q test_json test_set test_dict test_re >/dev/null" \
    --program "g++=g++ -std=c++20 -O2 -I$SRC/src -I$SRC/include -c $BIG -o \$MAPHEAP_BENCH_TMP/big.o" \
    --program "sqlite3=rm -f \$MAPHEAP_BENCH_TMP/t.db && sqlite3 \$MAPHEAP_BENCH_TMP/t.db \"$SQL\" >/dev/null" \
    | tee "$BUILD/bench/malloc.txt"
fi

# The shared and persistent heap side by side with Boost.Interprocess
# (managed_mapped_file, managed_shared_memory) and glibc malloc: allocation
# throughput by 1 and 2 processes, a graph's adjacency lists, reopening a 1 GiB
# and a 4 GiB heap. Heap files go to a new directory in /var/tmp (on a disk).
if [ "$ONLY" = all ] || [ "$ONLY" = heap ]; then
  "$BUILD/bench/heap_bench" --reps "${HEAP_REPS:-3}" --json "$BUILD/bench/heap.json" \
    | tee "$BUILD/bench/heap.txt"
fi
