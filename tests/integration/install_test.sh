#!/bin/sh
# Installs the build tree into a scratch prefix, then builds two consumers
# against it: one with find_package(mapheap), one with pkg-config.
# usage: install_test.sh SOURCE_DIR BUILD_DIR SCRATCH_DIR CXX
set -eu
SRC=$1 BUILD=$2 SCRATCH=$3 CXX=$4
rm -rf "$SCRATCH"
mkdir -p "$SCRATCH"
cmake --install "$BUILD" --prefix "$SCRATCH/prefix" >/dev/null
test -x "$SCRATCH/prefix/bin/mapheap"
test -f "$SCRATCH/prefix/include/mapheap/mapping.hpp"
"$SCRATCH/prefix/bin/mapheap" info --json >/dev/null

# CMake package. The consumer is built without sanitizer flags of the outer
# build, so link the sanitizer runtime if the library was built with one.
cmake -S "$SRC/tests/integration/consumer" -B "$SCRATCH/cmake-consumer" \
  -DCMAKE_PREFIX_PATH="$SCRATCH/prefix" -DCMAKE_CXX_COMPILER="$CXX" \
  -DCMAKE_CXX_FLAGS="${CONSUMER_FLAGS:-}" -DCMAKE_EXE_LINKER_FLAGS="${CONSUMER_FLAGS:-}" >/dev/null
cmake --build "$SCRATCH/cmake-consumer" >/dev/null
"$SCRATCH/cmake-consumer/consumer"

# pkg-config
PKG_CONFIG_PATH="$SCRATCH/prefix/lib/pkgconfig" pkg-config --exists mapheap
# shellcheck disable=SC2046
"$CXX" ${CONSUMER_FLAGS:-} -o "$SCRATCH/pc-consumer" "$SRC/tests/integration/consumer/main.cpp" \
  $(PKG_CONFIG_PATH="$SCRATCH/prefix/lib/pkgconfig" pkg-config --cflags --libs mapheap)
"$SCRATCH/pc-consumer"
echo "install test ok"
