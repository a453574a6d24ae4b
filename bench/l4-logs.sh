#!/usr/bin/env bash
# L4 and access-log benchmarks, each against its reference in the same run, rounds
# alternating, medians reported as a Markdown table:
#
#   1. TCP proxying (gatehouse TCP route vs HAProxy `mode tcp`): throughput (MB/s, wrk
#      fetching a 16 MB file over 4 keep-alive connections through the proxy) and new
#      connections/s (wrk with `Connection: close`, one connection per 100-byte request).
#   2. TLS SNI passthrough (gatehouse PASSTHROUGH vs HAProxy `req_ssl_sni` in `mode tcp`):
#      throughput of the 16 MB file over TLS end to end (terminated by the backend nginx).
#   3. The cost of access logging: HTTP/1.1 requests/s through gatehouse with logging off
#      and on (Envoy text format to a file), beside nginx with `access_log` off and on.
#
#   bench/l4-logs.sh [--quick] [--rounds N] [--logs-only]
#
# Backend: one nginx (1 worker) serving /index.html (100 bytes) and /big (16 MB), plain and
# TLS. Clients: wrk -t1. Proxies get 2 workers/threads. All on 127.0.0.1.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
ROUNDS=3
DUR=10
LOGS_ONLY=
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) DUR=3; ROUNDS=1 ;;
    --rounds) ROUNDS="$2"; shift ;;
    --logs-only) LOGS_ONLY=1 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done

PB=${BENCH_PORT_BASE:-19000}
BE=$PB; BE_TLS=$((PB+1))
G_TCP=$((PB+10)); G_TLS=$((PB+11)); G_HTTP=$((PB+12)); G_ADMIN=$((PB+13))
H_TCP=$((PB+20)); H_TLS=$((PB+21))
N_HTTP=$((PB+30))
HAPROXY=/usr/sbin/haproxy
GATEHOUSE="$ROOT/target/release/gatehouse"

# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"
bench_init l4

for t in wrk "$NGINX" "$HAPROXY"; do
  command -v "$t" >/dev/null || { echo "missing $t (apt-get install wrk nginx-light haproxy)" >&2; exit 1; }
done
log "building gatehouse (scripts/release-build.sh -p appliance)"
(cd "$ROOT" && scripts/release-build.sh -p appliance >/dev/null 2>&1)

# ---------------------------------------------------------------- backend
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 7 \
  -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost" \
  -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
chmod 644 "$WORK"/*.pem
head -c $((16 * 1024 * 1024)) /dev/urandom > "$WORK/www/big"
start_backend "$BE" "$BE_TLS" "$WORK/cert.pem" "$WORK/key.pem"

# ---------------------------------------------------------------- gatehouse
start_gatehouse() { # logging: on|off
  local d="$WORK/g-$1"
  rm -rf "$d"; mkdir -p "$d/repo/tenants/bench" "$d/creds"
  local mesh=""
  [ "$1" = on ] && mesh="  meshConfig:
    accessLogFile: $d/access.log"
  { operator_yaml "[{name: tcp, port: 31400, targetPort: $G_TCP}, {name: tls, port: 443, targetPort: $G_TLS}, {name: http, port: 80, targetPort: $G_HTTP}]" "$mesh"
    cat <<EOF
---
apiVersion: gatehouse.dev/v1
kind: Tenant
metadata: {name: bench}
spec:
  hosts: ["*"]
  gateways: [public-gw]
  tcpPorts: [31400]
EOF
  } > "$d/repo/gatehouse.yaml"
  cat > "$d/repo/tenants/bench/bench.yaml" <<EOF
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: bench}
spec:
  selector: {istio: public-gw}
  servers:
  - port: {number: 31400, name: tcp, protocol: TCP}
    hosts: ["*"]
  - port: {number: 443, name: tls, protocol: TLS}
    hosts: ["*"]
    tls: {mode: PASSTHROUGH}
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: backend}
spec:
  hosts: [backend.bench.internal]
  location: MESH_INTERNAL
  ports:
  - {number: 80, name: http, protocol: HTTP}
  - {number: 9000, name: tcp, protocol: TCP}
  - {number: 9443, name: tls, protocol: TLS}
  resolution: STATIC
  endpoints:
  - {address: 127.0.0.1, ports: {http: $BE, tcp: $BE, tls: $BE_TLS}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bench}
spec:
  hosts: ["*"]
  gateways: [bench]
  http:
  - route: [{destination: {host: backend.bench.internal, port: {number: 80}}}]
  tcp:
  - match: [{port: 31400}]
    route: [{destination: {host: backend.bench.internal, port: {number: 9000}}}]
  # wrk sends SNI "localhost", a short name Istio refuses in hosts: match any SNI.
  tls:
  - match: [{port: 443, sniHosts: ["*"]}]
    route: [{destination: {host: backend.bench.internal, port: {number: 9443}}}]
EOF
  "$GATEHOUSE" run --repo "$d/repo" --credentials "$d/creds" --admin "127.0.0.1:$G_ADMIN" \
    --workers 2 > "$d/log" 2>&1 &
  GPID=$!
  PIDS+=("$GPID")
  wait_ok "http://127.0.0.1:$G_ADMIN/ready"
}
stop() { kill -TERM "$1" 2>/dev/null; wait "$1" 2>/dev/null || true; }

# ---------------------------------------------------------------- HAProxy (mode tcp)
cat > "$WORK/haproxy.cfg" <<EOF
global
  nbthread 2
  maxconn 8000
defaults
  mode tcp
  timeout connect 5s
  timeout client 120s
  timeout server 120s
frontend tcp
  bind 127.0.0.1:$H_TCP
  default_backend plain
frontend tls
  bind 127.0.0.1:$H_TLS
  tcp-request inspect-delay 5s
  tcp-request content accept if { req_ssl_hello_type 1 }
  use_backend tls if { req_ssl_sni -i localhost }
backend plain
  server s1 127.0.0.1:$BE
backend tls
  server s1 127.0.0.1:$BE_TLS
EOF

# ---------------------------------------------------------------- nginx (HTTP, logs off/on)
start_nginx() { # logging: on|off
  local d="$WORK/n-$1"; mkdir -p "$d"
  local al="access_log off;"
  [ "$1" = on ] && al="access_log $d/access.log;"
  { nginx_head "$d" 2
  cat <<EOF
http {
  $al
  keepalive_requests 100000000;
  upstream be { server 127.0.0.1:$BE; keepalive 64; }
  server {
    listen 127.0.0.1:$N_HTTP reuseport;
    location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
EOF
  } > "$d/nginx.conf"
  $NGINX -p "$d" -c "$d/nginx.conf" -e "$d/error.log" -g 'daemon off;' &
  NPID=$!
  PIDS+=("$NPID")
  wait_ok "http://127.0.0.1:$N_HTTP/index.html"
}

# ---------------------------------------------------------------- measurements
# wrk's Requests/sec and Transfer/sec (MB/s).
rps() { awk '/Requests\/sec/ {print $2}'; }
mbps() {
  awk '/Transfer\/sec/ { v=$2; u=substr(v, length(v)-1); n=substr(v, 1, length(v)-2);
    if (u=="GB") n*=1024; else if (u=="KB") n/=1024; print n }'
}
declare -A R
add() { R[$1]="${R[$1]:-} $2"; }
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

W() { wrk -t1 -d"${DUR}s" "$@" 2>&1; }
# CPU ticks (utime + stime, all threads) of a process and its children (nginx workers).
ticks() {
  local t=0 p
  for p in "$1" $(pgrep -P "$1"); do
    t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  echo "$t"
}
# Runs wrk against a proxy; records req/s under "$name log_$mode" and CPU µs per request
# under "$name cpu_$mode" (steadier than req/s when anything else runs).
measure_log() { # name mode pid url
  local t0 t1 out n
  t0=$(ticks "$3")
  out=$(W -c64 "$4")
  t1=$(ticks "$3")
  n=$(echo "$out" | awk '/requests in/ {print $1}')
  add "$1 log_$2" "$(echo "$out" | rps)"
  add "$1 cpu_$2" "$(awk -v d=$((t1 - t0)) -v n="$n" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.1f", d / hz * 1e6 / n }')"
}
for r in $(seq "$ROUNDS"); do
  if [ -z "$LOGS_ONLY" ]; then
  log "round $r/$ROUNDS: TCP and passthrough"
  start_gatehouse off; G=$GPID
  $HAPROXY -f "$WORK/haproxy.cfg" -db >"$WORK/haproxy.log" 2>&1 &
  H=$!; PIDS+=("$H")
  wait_ok "http://127.0.0.1:$H_TCP/index.html" || { cat "$WORK/haproxy.log" >&2; exit 1; }
  for p in gatehouse haproxy; do
    if [ $p = gatehouse ]; then tcp=$G_TCP; tls=$G_TLS; else tcp=$H_TCP; tls=$H_TLS; fi
    add "$p tcp_mbps" "$(W -c4 "http://127.0.0.1:$tcp/big" | mbps)"
    add "$p tcp_conns" "$(W -c64 -H 'Connection: close' "http://127.0.0.1:$tcp/index.html" | rps)"
    add "$p tls_mbps" "$(W -c4 "https://localhost:$tls/big" | mbps)"
  done
  stop "$G"; stop "$H"
  fi
  log "round $r/$ROUNDS: access logging off/on"
  for mode in off on; do
    start_gatehouse "$mode"; G=$GPID
    wrk -t1 -c64 -d2s "http://127.0.0.1:$G_HTTP/index.html" >/dev/null 2>&1 || true
    measure_log gatehouse "$mode" "$G" "http://127.0.0.1:$G_HTTP/index.html"
    stop "$G"
    start_nginx "$mode"; N=$NPID
    wrk -t1 -c64 -d2s "http://127.0.0.1:$N_HTTP/index.html" >/dev/null 2>&1 || true
    measure_log nginx "$mode" "$N" "http://127.0.0.1:$N_HTTP/index.html"
    stop "$N"
  done
done

m() { echo "${R[$1]}" | median; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
cost() { awk -v off="$1" -v on="$2" 'BEGIN { if (off > 0) printf "%.1f %%", (1 - on / off) * 100; else print "-" }'; }
for k in "${!R[@]}"; do log "raw $k:${R[$k]}"; done
echo
echo "L4 and access-log benchmarks — $(date -u +%F), $(nproc) cores, ${DUR}s runs, median of $ROUNDS rounds, commit $(cd "$ROOT" && git rev-parse --short HEAD)"
echo
if [ -z "$LOGS_ONLY" ]; then
echo "| test | gatehouse | HAProxy (mode tcp) | gatehouse / HAProxy |"
echo "|---|---|---|---|"
TESTS=("tcp_mbps|TCP throughput, MB/s (16 MB file, 4 conns)"
       "tcp_conns|TCP new connections/s (Connection: close)"
       "tls_mbps|TLS passthrough throughput, MB/s (16 MB file, 4 conns)")
for t in "${TESTS[@]}"; do
  k=${t%%|*}; label=${t#*|}
  g=$(m "gatehouse $k"); h=$(m "haproxy $k")
  echo "| $label | $g | $h | $(ratio "$g" "$h") |"
done
fi
echo
echo "| access logging | off: req/s, CPU µs/req | on: req/s, CPU µs/req | cost in req/s | cost in CPU/req |"
echo "|---|---|---|---|---|"
for p in gatehouse nginx; do
  off=$(m "$p log_off"); on=$(m "$p log_on")
  coff=$(m "$p cpu_off"); con=$(m "$p cpu_on")
  echo "| $p (HTTP/1.1, 64 conns, 100 B) | $off, $coff | $on, $con | $(cost "$off" "$on") | $(awk -v a="$coff" -v b="$con" 'BEGIN { if (a > 0) printf "%+.1f %%", (b / a - 1) * 100; else print "-" }') |"
done
