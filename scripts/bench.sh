#!/bin/sh
# `make bench`: the full measurements. Tables go to stdout and $BUILD/bench/;
# plots to docs/bench/. Copy the tables into docs/BENCHMARKS.md with the date.
set -eu
BUILD=${1:-build/release}
MAPHEAP="$BUILD/tools/mapheap/mapheap"
mkdir -p "$BUILD/bench" docs/bench
date -u +"%Y-%m-%d %H:%M UTC" | tee "$BUILD/bench/when.txt"
"$MAPHEAP" info | tee "$BUILD/bench/machine.txt"
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
