#!/bin/sh
# Runs one real program under LD_PRELOAD=$1 (libmapheap_preload.so) and
# checks it by its own exit status and output. $2 names the program; $3 is a
# scratch directory; $4 the project's source directory.
set -eu
LIB=$1
WHAT=$2
TMP=$3
SRC=$4
mkdir -p "$TMP"
run() { env LD_PRELOAD="$LIB" "$@"; }

case "$WHAT" in
  python)
    # PYTHONMALLOC=malloc: every Python object through malloc, not pymalloc.
    out=$(run env PYTHONMALLOC=malloc /usr/bin/python3 -c '
import json, re, threading, gc
d = {i: str(i) * 3 for i in range(200000)}
s = json.dumps(d)
assert json.loads(s)["199999"] == "199999" * 3
assert len(re.findall(r"\d+", s)) == 400000
def work():
    l = []
    for i in range(100000):
        l.append({"a": i, "b": [i] * 3})
ts = [threading.Thread(target=work) for _ in range(8)]
[t.start() for t in ts]; [t.join() for t in ts]
gc.collect()
print("python ok")
')
    [ "$out" = "python ok" ]
    ;;
  python_tests)
    # A slice of Python's own regression tests (Debian's
    # libpython3.11-testsuite, for Debian's /usr/bin/python3).
    run env PYTHONMALLOC=malloc /usr/bin/python3 -m test test_list test_dict test_set \
      test_unicode test_threading test_json test_re test_gc > "$TMP/python_tests.log" 2>&1 ||
      { tail -30 "$TMP/python_tests.log"; exit 1; }
    grep -q "Tests result: SUCCESS" "$TMP/python_tests.log"
    ;;
  lua)
    # Tables churned: built, grown, rehashed, dropped, collected.
    out=$(run lua5.4 -e '
      local total = 0
      for round = 1, 20 do
        local t = {}
        for i = 1, 20000 do t[i] = {i, tostring(i), {x = i}} end
        for i = 1, 20000, 2 do t[i] = nil end
        local m = {}
        for k, v in pairs(t) do m[v[2]] = v end
        for _, v in pairs(m) do total = total + v[3].x end
        collectgarbage()
      end
      print(total)')
    [ "$out" = "2000200000" ]  # 20 rounds of the even numbers to 20000
    ;;
  sqlite3)
    out=$(run sqlite3 "$TMP/t.db" "
      drop table if exists t;
      create table t(a integer primary key, b text);
      with recursive c(x) as (select 1 union all select x + 1 from c where x < 100000)
        insert into t select x, hex(randomblob(20)) from c;
      create index i on t(b);
      select count(*) from t where length(b) = 40;
      pragma integrity_check;")
    [ "$out" = "100000
ok" ]
    ;;
  gxx)
    # The project's biggest source file, with and without the preload: the
    # object files must be identical.
    big=$(ls -S "$SRC"/tools/mapheap/*.cpp "$SRC"/src/*/*.cpp | head -1)
    flags="-std=c++20 -O2 -I$SRC/src -I$SRC/include -c"
    run g++ $flags "$big" -o "$TMP/with.o"
    g++ $flags "$big" -o "$TMP/without.o"
    cmp "$TMP/with.o" "$TMP/without.o"
    ;;
  git)
    rm -rf "$TMP/clone"
    run git clone -q "$SRC" "$TMP/clone"
    [ "$(run git -C "$TMP/clone" log --oneline | wc -l)" = "$(git -C "$SRC" log --oneline | wc -l)" ]
    ;;
  *)
    echo "unknown program $WHAT" >&2
    exit 2
    ;;
esac
echo "$WHAT ok under the preload"
