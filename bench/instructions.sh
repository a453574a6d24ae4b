#!/usr/bin/env bash
# User-space instructions per proxied HTTP/1.1 request, counted by callgrind: deterministic,
# so two builds can be compared on this noisy machine where CPU time per request moves by
# ±10 % between runs (and the VM exposes no hardware counters to `perf stat`).
#
#   bench/instructions.sh [BINARY] [REQUESTS]
#
# BINARY defaults to target/release/gatehouse (built if missing). The setup is bench/run.sh's
# route (one VirtualService to an nginx backend, 100-byte body), plain HTTP, one worker.
# 2,000 warm-up requests are not counted; then REQUESTS (default 20,000) with
# `h2load --h1 -c8`. Prints Ir/request; the callgrind dump stays in the work directory for
# `callgrind_annotate --inclusive=yes`.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/gatehouse}
N=${2:-20000}
BASE=${BENCH_PORT_BASE:-18100}
BACKEND=$BASE H1=$((BASE + 1)) ADMIN=$((BASE + 9))
for tool in valgrind callgrind_control h2load nginx curl; do
  command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install valgrind nghttp2-client nginx-light curl)" >&2; exit 1; }
done
[ -x "$BIN" ] || cargo build --release -p appliance
BIN=$(realpath "$BIN")
W=$(mktemp -d /tmp/gatehouse-instructions.XXXXXX)
chmod 755 "$W" # nginx workers read www/ as an unprivileged user
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

mkdir -p "$W/www" "$W/backend/logs" "$W/backend/tmp" "$W/repo/tenants/bench"
python3 -c "import sys; sys.stdout.write(('hello from the benchmark backend ' * 4)[:99] + '\n')" > "$W/www/index.html"
cat > "$W/backend/nginx.conf" <<EOF
worker_processes 1;
pid $W/backend/nginx.pid;
error_log $W/backend/logs/error.log warn;
events { worker_connections 1024; }
http { access_log off; keepalive_requests 100000000; client_body_temp_path $W/backend/tmp;
  server { listen 127.0.0.1:$BACKEND; root $W/www; location / { } } }
EOF
cat > "$W/repo/gatehouse.yaml" <<EOF
apiVersion: install.istio.io/v1alpha1
kind: IstioOperator
metadata: {name: appliance}
spec:
  components:
    ingressGateways:
    - name: public-gw
      label: {istio: public-gw}
      k8s:
        service:
          loadBalancerIP: 127.0.0.1
          ports:
          - {name: http, port: 80, targetPort: $H1}
---
apiVersion: gatehouse.dev/v1
kind: Tenant
metadata: {name: bench}
spec:
  hosts: ["*"]
  gateways: [public-gw]
EOF
cat > "$W/repo/tenants/bench/bench.yaml" <<EOF
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: bench}
spec:
  selector: {istio: public-gw}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: backend}
spec:
  hosts: ["backend.bench.internal"]
  location: MESH_INTERNAL
  ports:
  - {number: 80, name: http, protocol: HTTP}
  resolution: STATIC
  endpoints:
  - {address: 127.0.0.1, ports: {http: $BACKEND}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bench}
spec:
  hosts: ["*"]
  gateways: [bench]
  http:
  - route: [{destination: {host: backend.bench.internal}}]
EOF

nginx -p "$W/backend" -c "$W/backend/nginx.conf" -e "$W/backend/logs/error.log" -g 'daemon off;' &
PIDS+=($!)
valgrind --tool=callgrind --callgrind-out-file="$W/callgrind.out" \
  "$BIN" run --repo "$W/repo" --admin "127.0.0.1:$ADMIN" --workers 1 >"$W/gatehouse.log" 2>&1 &
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
dump=$(ls "$W"/callgrind.out.* | head -1)
ir=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/{gsub(",", "", $1); print $1; exit}')
printf '| binary | requests | user-space instructions per request |\n|---|---|---|\n'
printf '| %s | %s | %s |\n' "$BIN" "$N" "$((ir / N))"
echo "callgrind dump: $dump"
