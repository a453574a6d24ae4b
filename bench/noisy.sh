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
# backend: read B's change against the control, not against zero.
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

log "building gatehouse (cargo build --release -p appliance)"
(cd "$ROOT" && cargo build --release -p appliance >/dev/null 2>&1)

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
  for mode in quota none; do
    if [ "$mode" = quota ]; then what="past a quota of 10"; else what="without a quota"; fi
    log "round $r/$ROUNDS: A $what"
    if [ "$mode" = quota ]; then start_gatehouse "  quotas: {maxConnections: 10}"; else start_gatehouse ""; fi
    wrk -t1 -c16 -d2s -H 'Host: b.example.com' "http://127.0.0.1:$GW/index.html" >/dev/null 2>&1 || true
    out=$(B)
    add "alone p99" "$(echo "$out" | p99)"; add "alone rps" "$(echo "$out" | rps)"
    A > "$WORK/a.txt" &
    apid=$!
    sleep 1
    out=$(B)
    wait "$apid" || true
    add "$mode p99" "$(echo "$out" | p99)"; add "$mode rps" "$(echo "$out" | rps)"
    add "$mode b_non2xx" "$(echo "$out" | non2xx)"
    add "$mode a_rps" "$(rps < "$WORK/a.txt")"; add "$mode a_non2xx" "$(non2xx < "$WORK/a.txt")"
    stop "$GPID"
  done
done

m() { echo "${R[$1]}" | median; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0) printf "%+.1f %%", (b / a - 1) * 100; else print "-" }'; }
echo
echo "Noisy neighbour — $(date -u +%F), $(nproc) cores, ${DUR}s runs, median of $ROUNDS rounds, commit $(cd "$ROOT" && git rev-parse --short HEAD)"
echo
echo "| B (16 keep-alive conns) | B req/s | B p99 ms | B p99 vs alone | B non-2xx | A conns/s (Connection: close) | A answered 503 |"
echo "|---|---|---|---|---|---|---|"
echo "| alone | $(m 'alone rps') | $(m 'alone p99') | | | | |"
echo "| A past its quota (refused) | $(m 'quota rps') | $(m 'quota p99') | $(pct "$(m 'alone p99')" "$(m 'quota p99')") | $(m 'quota b_non2xx') | $(m 'quota a_rps') | $(m 'quota a_non2xx') |"
echo "| control: same flood, no quota (served) | $(m 'none rps') | $(m 'none p99') | $(pct "$(m 'alone p99')" "$(m 'none p99')") | $(m 'none b_non2xx') | $(m 'none a_rps') | $(m 'none a_non2xx') |"
