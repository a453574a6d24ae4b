#!/usr/bin/env bash
# Noisy neighbour: tenant B's latency while tenant A, past its `quotas.maxConnections`, keeps
# opening connections on the same port. Release build, nginx backend, all on 127.0.0.1.
#
#   bench/noisy.sh [--rounds N] [--quick]
#
# Per round: B alone (wrk -t1 -c16 --latency, keep-alive, Host b.example.com), then B again
# while A runs `wrk -t1 -c64 -H 'Connection: close'` with Host a.example.com against a quota
# of 10 connections (so most of A's connections are refused with 503 and closed), and — as
# the control — B while A sends the same flood with no quota (every A request served).
# Medians over the rounds. The load generators share the two cores with the gateway and the
# backend: read B's change against the control, not against zero. nginx runs the same rounds
# as the reference: two `server` blocks on one port, team A's with `limit_conn` 10 keyed by
# `$server_name` (`limit_conn_status 503`), both proxying to the backend over keep-alive.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
ROUNDS=3
DUR=10
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS="$2"; shift ;;
    --quick) ROUNDS=1; DUR=3 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done

PB=${BENCH_PORT_BASE:-19500}
BE=$PB; GW=$((PB+1)); ADMIN=$((PB+2))
GATEHOUSE="$ROOT/target/release/gatehouse"
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"
bench_init noisy

log "building gatehouse (scripts/release-build.sh -p appliance)"
(cd "$ROOT" && scripts/release-build.sh -p appliance >/dev/null 2>&1)

start_backend "$BE"

start_gatehouse() { # quota line for team-a ("" for none)
  local d="$WORK/g"
  rm -rf "$d"; mkdir -p "$d/repo/tenants/team-a" "$d/repo/tenants/team-b" "$d/creds"
  { operator_yaml "[{name: http, port: 80, targetPort: $GW}]"
    cat <<EOF
---
apiVersion: gatehouse.dev/v1
kind: Tenant
metadata: {name: team-a}
spec:
  hosts: [a.example.com]
  gateways: [public-gw]
$1
---
apiVersion: gatehouse.dev/v1
kind: Tenant
metadata: {name: team-b}
spec:
  hosts: [b.example.com]
  gateways: [public-gw]
EOF
  } > "$d/repo/gatehouse.yaml"
  for t in a b; do
    cat > "$d/repo/tenants/team-$t/web.yaml" <<EOF
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: web}
spec:
  selector: {istio: public-gw}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: [$t.example.com]}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: backend}
spec:
  hosts: [backend.team-$t.internal]
  location: MESH_INTERNAL
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1, ports: {http: $BE}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web}
spec:
  hosts: [$t.example.com]
  gateways: [web]
  http: [{route: [{destination: {host: backend.team-$t.internal}}]}]
EOF
  done
  "$GATEHOUSE" run --repo "$d/repo" --credentials "$d/creds" --admin "127.0.0.1:$ADMIN" \
    --workers 2 > "$d/log" 2>&1 &
  GPID=$!
  PIDS+=("$GPID")
  wait_ok "http://127.0.0.1:$ADMIN/ready"
  wait_ok "http://127.0.0.1:$GW/index.html" -H "Host: b.example.com"
}
start_nginx() { # "limit" to limit team A, "" for none
  local d="$WORK/n" limit=""
  rm -rf "$d"; mkdir -p "$d"
  [ -n "$1" ] && limit="limit_conn perserver 10;"
  { nginx_head "$d" 2
  cat <<EOF
http {
  access_log off;
  client_body_temp_path $d;
  proxy_temp_path $d;
  limit_conn_zone \$server_name zone=perserver:1m;
  limit_conn_status 503;
  upstream be { server 127.0.0.1:$BE; keepalive 64; }
  server {
    listen 127.0.0.1:$GW reuseport;
    server_name a.example.com;
    $limit
    location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
  server {
    listen 127.0.0.1:$GW;
    server_name b.example.com;
    location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
EOF
  } > "$d/nginx.conf"
  "$NGINX" -p "$d" -c "$d/nginx.conf" -e "$d/error.log" -g 'daemon off;' &
  GPID=$!
  PIDS+=("$GPID")
  wait_ok "http://127.0.0.1:$GW/index.html" -H "Host: b.example.com"
}
stop() { kill -TERM "$1" 2>/dev/null; wait "$1" 2>/dev/null || true; }

# wrk's p99 in ms and its non-2xx count.
p99() { awk '$1 == "99%" { v=$2; if (v ~ /us$/) { sub(/us/,"",v); v/=1000 } else if (v ~ /ms$/) sub(/ms/,"",v); else if (v ~ /s$/) { sub(/s/,"",v); v*=1000 }; print v }'; }
non2xx() { awk '/Non-2xx/ {n=$NF} END {print n+0}'; }
rps() { awk '/Requests\/sec/ {print $2}'; }
B() { wrk -t1 -c16 -d"${DUR}s" --latency -H 'Host: b.example.com' "http://127.0.0.1:$GW/index.html" 2>&1; }
A() { wrk -t1 -c64 -d"$((DUR + 3))s" -H 'Host: a.example.com' -H 'Connection: close' "http://127.0.0.1:$GW/index.html" 2>&1; }

declare -A R
add() { R[$1]="${R[$1]:-} $2"; }
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

for r in $(seq "$ROUNDS"); do
  for proxy in gatehouse nginx; do
    for mode in quota none; do
      if [ "$mode" = quota ]; then what="past a quota of 10"; else what="without a quota"; fi
      log "round $r/$ROUNDS: $proxy, A $what"
      case "$proxy/$mode" in
        gatehouse/quota) start_gatehouse "  quotas: {maxConnections: 10}" ;;
        gatehouse/none) start_gatehouse "" ;;
        nginx/quota) start_nginx limit ;;
        nginx/none) start_nginx "" ;;
      esac
      wrk -t1 -c16 -d2s -H 'Host: b.example.com' "http://127.0.0.1:$GW/index.html" >/dev/null 2>&1 || true
      out=$(B)
      add "$proxy alone p99" "$(echo "$out" | p99)"; add "$proxy alone rps" "$(echo "$out" | rps)"
      A > "$WORK/a.txt" &
      apid=$!
      sleep 1
      out=$(B)
      wait "$apid" || true
      add "$proxy $mode p99" "$(echo "$out" | p99)"; add "$proxy $mode rps" "$(echo "$out" | rps)"
      add "$proxy $mode b_non2xx" "$(echo "$out" | non2xx)"
      add "$proxy $mode a_rps" "$(rps < "$WORK/a.txt")"; add "$proxy $mode a_non2xx" "$(non2xx < "$WORK/a.txt")"
      stop "$GPID"
    done
  done
done

m() { echo "${R[$1]}" | median; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0) printf "%+.1f %%", (b / a - 1) * 100; else print "-" }'; }
echo
echo "Noisy neighbour — $(date -u +%F), $(nproc) cores, ${DUR}s runs, median of $ROUNDS rounds, commit $(cd "$ROOT" && git rev-parse --short HEAD)"
echo
echo "| proxy | B (16 keep-alive conns) | B req/s | B p99 ms | B p99 vs alone | B non-2xx | A conns/s (Connection: close) | A answered 503 |"
echo "|---|---|---|---|---|---|---|---|"
for proxy in gatehouse nginx; do
  echo "| $proxy | alone | $(m "$proxy alone rps") | $(m "$proxy alone p99") | | | | |"
  echo "| $proxy | A past its quota (refused) | $(m "$proxy quota rps") | $(m "$proxy quota p99") | $(pct "$(m "$proxy alone p99")" "$(m "$proxy quota p99")") | $(m "$proxy quota b_non2xx") | $(m "$proxy quota a_rps") | $(m "$proxy quota a_non2xx") |"
  echo "| $proxy | control: same flood, no quota (served) | $(m "$proxy none rps") | $(m "$proxy none p99") | $(pct "$(m "$proxy alone p99")" "$(m "$proxy none p99")") | $(m "$proxy none b_non2xx") | $(m "$proxy none a_rps") | $(m "$proxy none a_non2xx") |"
done
