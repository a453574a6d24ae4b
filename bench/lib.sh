# shellcheck shell=bash
# Shared by bench/l4-logs.sh, bench/noisy.sh, bench/instructions.sh, bench/ab.sh,
# bench/packets.sh and bench/idle.sh (sourced, not run): the work folder and its cleanup, the
# nginx backend every proxy sits in front of, the IstioOperator of a one-group gatehouse on
# 127.0.0.1, and gatehouse, nginx or HAProxy started as bench/run.sh configures them.

NGINX=${NGINX:-/usr/sbin/nginx}

# bench_init NAME: a work folder (removed on exit unless KEEP is set), the PIDS to stop on
# exit, the open-files limit raised, and the backend's 100-byte /index.html.
bench_init() {
  BENCH_NAME=$1
  PIDS=()
  WORK=$(mktemp -d "/tmp/gatehouse-$1.XXXXXX")
  chmod 755 "$WORK" # nginx workers read www/ as an unprivileged user
  trap bench_cleanup EXIT
  ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
  mkdir -p "$WORK/www"
  head -c 99 /dev/zero | tr '\0' 'x' > "$WORK/www/index.html"
  echo >> "$WORK/www/index.html"
}

bench_cleanup() {
  set +e
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}

# bench_need TOOL=PACKAGE...: installs the Debian packages of the tools that are missing (from
# PATH and /usr/sbin), as bench/run.sh does; RUNLEVEL=1 keeps their services from starting.
bench_need() {
  local missing=() pair
  for pair in "$@"; do
    command -v "${pair%%=*}" >/dev/null || [ -x "/usr/sbin/${pair%%=*}" ] || missing+=("${pair#*=}")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "installing ${missing[*]}" >&2
  apt-get update -qq
  RUNLEVEL=1 DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

log() { printf '[%s %s] %s\n' "$BENCH_NAME" "$(date +%T)" "$*" >&2; }

# wait_ok URL [curl args...]: until it answers 200, for up to 20 s.
wait_ok() {
  local url=$1; shift
  for _ in $(seq 200); do
    [ "$(curl -sk -o /dev/null -w '%{http_code}' --max-time 2 "$@" "$url" 2>/dev/null)" = 200 ] && return 0
    sleep 0.1
  done
  echo "not answering: $url" >&2; return 1
}

# nginx_head DIR WORKERS: the first lines of an nginx.conf whose pid and error log live in DIR.
nginx_head() {
  cat <<EOF
worker_processes $2;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 10000; }
EOF
}

# start_backend PORT [TLS_PORT CERT KEY]: nginx with one worker serving $WORK/www, plain (and
# TLS when asked), no access log, keep-alive without a request limit; waits until it answers.
start_backend() {
  local port=$1 tls=""
  if [ $# -ge 4 ]; then
    tls="listen 127.0.0.1:$2 ssl; ssl_certificate $3; ssl_certificate_key $4;"
  fi
  mkdir -p "$WORK/be"
  { nginx_head "$WORK/be" 1
  cat <<EOF
http {
  access_log off;
  keepalive_requests 100000000;
  sendfile on;
  client_body_temp_path $WORK/be;
  server {
    listen 127.0.0.1:$port reuseport backlog=4096;
    $tls
    root $WORK/www;
  }
}
EOF
  } > "$WORK/be/nginx.conf"
  "$NGINX" -p "$WORK/be" -c "$WORK/be/nginx.conf" -e "$WORK/be/error.log" -g 'daemon off;' &
  PIDS+=($!)
  wait_ok "http://127.0.0.1:$port/index.html"
}

# operator_yaml PORTS [MESH]: gatehouse.yaml's IstioOperator with the one ingress group
# `public-gw` on 127.0.0.1. PORTS is a YAML flow sequence of port maps; MESH, when given, is
# a `meshConfig:` block indented by two spaces.
operator_yaml() {
  cat <<EOF
apiVersion: install.istio.io/v1alpha1
kind: IstioOperator
metadata: {name: appliance}
spec:
  profile: empty
${2:+$2
}  components:
    ingressGateways:
    - name: public-gw
      label: {istio: public-gw}
      k8s:
        service:
          loadBalancerIP: 127.0.0.1
          ports: $1
EOF
}

# one_route_repo DIR H1_PORT BACKEND_PORT: a repository with bench/run.sh's route: one tenant,
# every host on the plain port H1_PORT forwarded to the backend.
one_route_repo() {
  local W=$1 H1=$2 BACKEND=$3
  mkdir -p "$W/tenants/bench"
  { operator_yaml "[{name: http, port: 80, targetPort: $H1}]"
    cat <<EOF
---
apiVersion: gatehouse.dev/v1
kind: Tenant
metadata: {name: bench}
spec:
  hosts: ["*"]
  gateways: [public-gw]
EOF
  } > "$W/gatehouse.yaml"
  cat > "$W/tenants/bench/bench.yaml" <<EOF
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

}

# start_proxy SIDE LABEL ROUND: SIDE (a gatehouse binary, `nginx` or `haproxy`) as bench/run.sh
# configures it for plain HTTP/1.1 (2 workers, upstream keep-alive) on 127.0.0.1:$H1, in front
# of the backend on $BACKEND; gatehouse serves $WORK/repo (one_route_repo) with its admin on
# $ADMIN. Logs go to $WORK/LABEL-ROUND.log. Sets pid and adds it to PIDS; needs
# bench/haproxy-cfg.sh sourced.
start_proxy() {
  local W=$WORK
  case "$1" in
    nginx)
      mkdir -p "$W/nginx-$2"
      { nginx_head "$W/nginx-$2" 2
        cat <<EOF
http {
  access_log off;
  keepalive_requests 100000000;
  client_body_temp_path $W/nginx-$2;
  proxy_temp_path $W/nginx-$2;
  upstream backend { server 127.0.0.1:$BACKEND; keepalive 64; keepalive_requests 100000000; }
  server {
    listen 127.0.0.1:$H1 reuseport;
    location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
EOF
      } >"$W/nginx-$2/nginx.conf"
      "$NGINX" -p "$W/nginx-$2" -c "$W/nginx-$2/nginx.conf" -e "$W/nginx-$2/error.log" \
        -g 'daemon off;' >"$W/$2-$3.log" 2>&1 &
      pid=$! ;;
    haproxy)
      haproxy_cfg 2 4000 "$BACKEND" "127.0.0.1:$H1" >"$W/haproxy.cfg"
      haproxy -f "$W/haproxy.cfg" -db >"$W/$2-$3.log" 2>&1 &
      pid=$! ;;
    *)
      "$1" run --repo "$W/repo" --admin "127.0.0.1:$ADMIN" --workers 2 >"$W/$2-$3.log" 2>&1 &
      pid=$! ;;
  esac
  PIDS+=("$pid")
}

# proxy_args BINARY REPO H1_PORT BACKEND_PORT ADMIN_PORT: sets ARGS to run BINARY with one
# worker on that repository; appliance/examples/floor.rs (the bare hyper proxy, the floor
# these measurements are read against) takes its three addresses instead.
proxy_args() {
  # shellcheck disable=SC2034 # ARGS is what this function returns
  if [ "$(basename "$1")" = floor ]; then
    ARGS=("127.0.0.1:$3" "127.0.0.1:$4" "127.0.0.1:$5")
  else
    ARGS=(run --repo "$2" --admin "127.0.0.1:$5" --workers 1)
  fi
}
