#!/usr/bin/env bash
# User-space instructions per proxied HTTP/1.1 request, counted by callgrind: deterministic,
# so two builds can be compared on this noisy machine where CPU time per request moves by
# ±10 % between runs (and the VM exposes no hardware counters to `perf stat`).
#
#   bench/instructions.sh [BINARY] [REQUESTS]
#
# BINARY defaults to target/release/gatehouse (built if missing); target/release/examples/floor
# (`scripts/release-build.sh -p appliance --example floor`) is the bare hyper proxy, the floor;
# `nginx` and `haproxy` count Debian's nginx (one worker, no master process) and HAProxy (one
# thread) with bench/run.sh's configurations of them instead. The setup is bench/run.sh's
# route (one VirtualService to an nginx backend, 100-byte body), plain HTTP, one worker.
# 2,000 warm-up requests are not counted; then REQUESTS (default 20,000) with
# `h2load --h1 -c8` (CONNS=N sets the connections: the benchmark's wrk -c64 on two workers is
# 32 a worker, where more of each connection's state has left the cache by its next turn).
# Prints Ir/request; the callgrind dump is kept in bench/out/ for
# `callgrind_annotate --inclusive=yes` (a PGO build is inlined into one function: with
# CALLGRIND_ARGS=--dump-instr=yes, bench/misses.py sums an event by inlined source position
# instead). CACHE_SIM=1 adds valgrind's cache and branch-predictor
# simulation and prints every event per request (L1/last-level misses, mispredicted branches).
# ALLOCS=1 runs valgrind's DHAT instead and prints heap allocations per request with the sites
# that make them (bench/allocs.py). DHAT sees malloc, not mimalloc: the binary must be built
# without it; the default binary is then target/sysalloc/release/gatehouse (built if missing:
# `--no-default-features`, no profile, its own target folder).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ALLOCS=${ALLOCS:-0}
DEFAULT=$HERE/../target/release/gatehouse
[ "$ALLOCS" = 0 ] || DEFAULT=$HERE/../target/sysalloc/release/gatehouse
case "${1:-}" in
  nginx | haproxy) BIN=$1 ;;
  *) BIN=$(realpath -m "${1:-$DEFAULT}") ;;
esac
cd "$HERE/.."
N=${2:-20000}
CONNS=${CONNS:-8}
BASE=${BENCH_PORT_BASE:-18100}
BACKEND=$BASE H1=$((BASE + 1)) ADMIN=$((BASE + 9))
if [ ! -x "$BIN" ] && [ "$BIN" != nginx ] && [ "$BIN" != haproxy ]; then
  if [ "$ALLOCS" = 0 ]; then
    scripts/release-build.sh -p appliance
  else
    CARGO_TARGET_DIR=target/sysalloc GATEHOUSE_PGO=0 \
      scripts/release-build.sh -p appliance --bin gatehouse --no-default-features
  fi
fi
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"
# shellcheck source=bench/haproxy-cfg.sh
. "$HERE/haproxy-cfg.sh"
bench_need valgrind=valgrind callgrind_control=valgrind h2load=nghttp2-client nginx=nginx-light curl=curl
[ "$BIN" != haproxy ] || bench_need haproxy=haproxy
bench_init instructions
W=$WORK
start_backend "$BACKEND"
case "$BIN" in
  nginx)
    mkdir -p "$W/nginx"
    { nginx_head "$W/nginx" 1
      cat <<EOF
master_process off;
http {
  access_log off;
  keepalive_requests 100000000;
  client_body_temp_path $W/nginx;
  proxy_temp_path $W/nginx;
  upstream backend { server 127.0.0.1:$BACKEND; keepalive 64; keepalive_requests 100000000; }
  server {
    listen 127.0.0.1:$H1;
    location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
EOF
    } >"$W/nginx/nginx.conf"
    CMD=("$NGINX" -p "$W/nginx" -c "$W/nginx/nginx.conf" -e "$W/nginx/error.log" -g 'daemon off;')
    READY="http://localhost:$H1/index.html" ;;
  haproxy)
    haproxy_cfg 1 4000 "$BACKEND" "127.0.0.1:$H1" >"$W/haproxy.cfg"
    CMD=(haproxy -f "$W/haproxy.cfg" -db)
    READY="http://localhost:$H1/index.html" ;;
  *)
    one_route_repo "$W/repo" "$H1" "$BACKEND"
    proxy_args "$BIN" "$W/repo" "$H1" "$BACKEND" "$ADMIN"
    CMD=("$BIN" "${ARGS[@]}")
    READY="http://127.0.0.1:$ADMIN/ready" ;;
esac
SIM=()
[ "${CACHE_SIM:-0}" = 0 ] || SIM=(--cache-sim=yes --branch-sim=yes)
if [ "$ALLOCS" = 0 ]; then
  # shellcheck disable=SC2206 # CALLGRIND_ARGS: extra options, split on spaces (--dump-instr=yes)
  TOOL=(--tool=callgrind "${SIM[@]}" ${CALLGRIND_ARGS:-} --callgrind-out-file="$W/callgrind.out")
else
  TOOL=(--tool=dhat --read-inline-info=yes --dhat-out-file="$W/dhat.out")
fi
valgrind "${TOOL[@]}" "${CMD[@]}" >"$W/proxy.log" 2>&1 &
VG=$!
PIDS+=("$VG")
up=0
for _ in $(seq 600); do
  if curl -sf -o /dev/null "$READY" &&
     [ "$(curl -s -o /dev/null -w '%{http_code}' "http://localhost:$H1/index.html")" = 200 ]; then up=1; break; fi
  sleep 0.2
done
[ "$up" = 1 ] || { echo "$BIN did not come up: route answered $(curl -s -w "%{http_code}" "http://localhost:$H1/index.html"); $(tail -5 "$W/proxy.log")" >&2; exit 1; }
h2load --h1 -n 2000 -c "$CONNS" "http://localhost:$H1/index.html" >/dev/null
[ "$ALLOCS" != 0 ] || callgrind_control -z "$VG" >/dev/null
out=$(h2load --h1 -n "$N" -c "$CONNS" "http://localhost:$H1/index.html")
ok=$(echo "$out" | awk '/^requests:/{print $8}')
[ "$ok" = "$N" ] || { echo "only $ok of $N requests succeeded" >&2; exit 1; }
if [ "$ALLOCS" != 0 ]; then
  # DHAT writes its profile when the process exits; it cannot be reset after the warm-up, so
  # the sites are divided by every request served and the startup's own are left out.
  kill -TERM "$VG"
  wait "$VG" || true
  python3 "$HERE/allocs.py" "$W/dhat.out" "$((N + 2000))"
  exit $?
fi
callgrind_control -d "$VG" >/dev/null
mkdir -p bench/out
dump=bench/out/instructions-$(basename "$BIN")-$(date +%Y%m%d-%H%M%S).callgrind
cp "$W"/callgrind.out.1 "$dump"
ir=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/{gsub(",", "", $1); print $1; exit}')
printf '| binary | requests | user-space instructions per request |\n|---|---|---|\n'
printf '| %s | %s | %s |\n' "$BIN" "$N" "$((ir / N))"
if [ "${CACHE_SIM:-0}" != 0 ]; then
  # Simulated caches (valgrind's model of this CPU's L1 and last level) and branch
  # predictors: what an instruction count cannot show about time per request.
  callgrind_annotate "$dump" 2>/dev/null | awk -v n="$N" '
    /^Events shown:/ { for (i = 3; i <= NF; i++) ev[i - 2] = $i; ne = NF - 2 }
    /PROGRAM TOTALS/ { printf "| event |"; for (i = 1; i <= ne; i++) printf " %s |", ev[i]; printf "\n|---|"
                       for (i = 1; i <= ne; i++) printf "---|"; printf "\n| per request |"
                       for (i = 1; i <= ne; i++) { v = $(2 * i - 1); gsub(",", "", v); printf " %.1f |", v / n }
                       printf "\n"; exit }'
fi
echo "callgrind dump: $dump"
