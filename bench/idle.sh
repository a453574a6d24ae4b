#!/usr/bin/env bash
# Memory per idle HTTP/1.1 keep-alive connection, one worker, one binary at a time: the RSS the
# process gains while holding N connections that each made one GET (bench/helper.py `idle`,
# the same client as bench/run.sh's idle test), divided by N.
#
#   bench/idle.sh [BINARY] [N]
#
# BINARY defaults to target/release/gatehouse (built if missing); target/release/examples/floor
# (`scripts/release-build.sh -p appliance --example floor`) is the bare hyper proxy, the floor.
# N defaults to 3,000. bench/run.sh's route (one VirtualService to an nginx backend), plain
# HTTP; 20,000 requests of warm-up first. Prints a Markdown row.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BIN=$(realpath -m "${1:-$HERE/../target/release/gatehouse}")
cd "$HERE/.."
N=${2:-3000}
BASE=${BENCH_PORT_BASE:-18100}
BACKEND=$BASE H1=$((BASE + 1)) ADMIN=$((BASE + 9))
[ -x "$BIN" ] || scripts/release-build.sh -p appliance
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"
bench_need h2load=nghttp2-client nginx=nginx-light curl=curl python3=python3
bench_init idle
W=$WORK
[ "$(ulimit -n)" -ge $((N * 2 + 100)) ] || { echo "ulimit -n is $(ulimit -n); needs $((N * 2 + 100))" >&2; exit 1; }
start_backend "$BACKEND"
one_route_repo "$W/repo" "$H1" "$BACKEND"
proxy_args "$BIN" "$W/repo" "$H1" "$BACKEND" "$ADMIN"
"$BIN" "${ARGS[@]}" >"$W/proxy.log" 2>&1 &
PID=$!
PIDS+=("$PID")
wait_ok "http://localhost:$H1/index.html"
h2load --h1 -n 20000 -c 8 "http://localhost:$H1/index.html" >/dev/null
python3 "$HERE/helper.py" idle --port "$H1" --authority "localhost:$H1" -n "$N" --pid "$PID" \
  --settle 2 --out "$W/results.json" --proxy idle --test idle > "$W/idle.json"
python3 - "$W/idle.json" "$BIN" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print("| binary | connections held | bytes per idle connection | statuses |")
print("|---|---|---|---|")
print(f"| {sys.argv[2]} | {d['opened']:,} | {d['bytes_per_conn']:,} | {d['statuses']} |")
PY
