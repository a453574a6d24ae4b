#!/usr/bin/env bash
# User-space instructions per proxied HTTP/1.1 request, counted by callgrind: deterministic,
# so two builds can be compared on this noisy machine where CPU time per request moves by
# ±10 % between runs (and the VM exposes no hardware counters to `perf stat`).
#
#   bench/instructions.sh [BINARY] [REQUESTS]
#
# BINARY defaults to target/release/gatehouse (built if missing); target/release/examples/floor
# (`cargo build --release -p appliance --example floor`) is the bare hyper proxy, the floor. The setup is bench/run.sh's
# route (one VirtualService to an nginx backend, 100-byte body), plain HTTP, one worker.
# 2,000 warm-up requests are not counted; then REQUESTS (default 20,000) with
# `h2load --h1 -c8`. Prints Ir/request; the callgrind dump is kept in bench/out/ for
# `callgrind_annotate --inclusive=yes`.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BIN=$(realpath -m "${1:-$HERE/../target/release/gatehouse}")
cd "$HERE/.."
N=${2:-20000}
BASE=${BENCH_PORT_BASE:-18100}
BACKEND=$BASE H1=$((BASE + 1)) ADMIN=$((BASE + 9))
[ -x "$BIN" ] || cargo build --release -p appliance
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"
bench_need valgrind=valgrind callgrind_control=valgrind h2load=nghttp2-client nginx=nginx-light curl=curl
bench_init instructions
W=$WORK
start_backend "$BACKEND"
one_route_repo "$W/repo" "$H1" "$BACKEND"
proxy_args "$BIN" "$W/repo" "$H1" "$BACKEND" "$ADMIN"
valgrind --tool=callgrind --callgrind-out-file="$W/callgrind.out" \
  "$BIN" "${ARGS[@]}" >"$W/gatehouse.log" 2>&1 &
VG=$!
PIDS+=("$VG")
up=0
for _ in $(seq 600); do
  if curl -sf -o /dev/null "http://127.0.0.1:$ADMIN/ready" &&
     [ "$(curl -s -o /dev/null -w '%{http_code}' "http://localhost:$H1/index.html")" = 200 ]; then up=1; break; fi
  sleep 0.2
done
[ "$up" = 1 ] || { echo "gatehouse did not come up: route answered $(curl -s -w "%{http_code}" "http://localhost:$H1/index.html"); $(tail -5 "$W/gatehouse.log")" >&2; exit 1; }
h2load --h1 -n 2000 -c 8 "http://localhost:$H1/index.html" >/dev/null
callgrind_control -z "$VG" >/dev/null
out=$(h2load --h1 -n "$N" -c 8 "http://localhost:$H1/index.html")
callgrind_control -d "$VG" >/dev/null
ok=$(echo "$out" | awk '/^requests:/{print $8}')
[ "$ok" = "$N" ] || { echo "only $ok of $N requests succeeded" >&2; exit 1; }
mkdir -p bench/out
dump=bench/out/instructions-$(date +%Y%m%d-%H%M%S).callgrind
cp "$W"/callgrind.out.1 "$dump"
ir=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/{gsub(",", "", $1); print $1; exit}')
printf '| binary | requests | user-space instructions per request |\n|---|---|---|\n'
printf '| %s | %s | %s |\n' "$BIN" "$N" "$((ir / N))"
echo "callgrind dump: $dump"
