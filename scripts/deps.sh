#!/bin/sh
# Installs the Debian packages mapheap needs to build, test, demo and benchmark.
# Silent when everything is present; otherwise `apt-get update` once, then
# `apt-get install -y` of exactly the packages that are missing.
set -eu

PACKAGES="
  build-essential cmake ninja-build pkg-config git
  g++ clang-14 libclang-rt-14-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libcli11-dev libfmt-dev nlohmann-json3-dev
  gnuplot-nox libboost1.81-dev
  libjemalloc2 libtcmalloc-minimal4 libmimalloc2.0 time
  python3 sqlite3 libpython3.11-testsuite lua5.4
"

missing=""
for p in $PACKAGES; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  case "$status" in
    "install ok installed") ;;
    *) missing="$missing $p" ;;
  esac
done

[ -z "$missing" ] && exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "deps.sh: missing packages:$missing; run as root or install sudo" >&2
    exit 1
  fi
fi
echo "deps.sh: installing:$missing"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq $missing >/dev/null
