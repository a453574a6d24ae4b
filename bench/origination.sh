#!/usr/bin/env bash
# TLS origination to an upstream that never resumes a session, so every upstream connection
# is a full handshake that checks the upstream's certificate against a CA and a CRL: two
# gatehouse builds in the same run, alternating A and B for ROUNDS rounds (medians).
#
#   bench/origination.sh BINARY_A BINARY_B [ROUNDS]
#
# The route of bench/run.sh, with a DestinationRule that originates TLS to nginx
# (`credentialName` with ca.crt and ca.crl) and `maxRequestsPerConnection: 1`, so each
# request opens a new upstream connection; nginx has session tickets and its session cache
# off. Rows: the CRL with 1 revoked certificate, and with 10,000 (a CA that has revoked
# many). `wrk -t1 -c16 -d10s` after a 2 s warm-up; CPU = utime+stime of gatehouse ÷ requests.
# ROUNDS defaults to 3; odd rounds run A first.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
A=$(realpath "$1") B=$(realpath "$2") ROUNDS=${3:-3}
cd "$HERE/.."
BASE=${BENCH_PORT_BASE:-18300}
BACKEND=$BASE TLS_BACKEND=$((BASE + 1)) H1=$((BASE + 2)) ADMIN=$((BASE + 9))
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"
bench_need wrk=wrk nginx=nginx-light curl=curl python3=python3 openssl=openssl
bench_init origination
W=$WORK

# A CA, the upstream's certificate, and CRLs of 1 and 10,000 revoked serials.
pki() {
  local d=$W/pki
  mkdir -p "$d/newcerts"
  cd "$d"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
    -subj "/CN=bench upstream CA" -keyout ca.key -out ca.crt 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=backend.internal" \
    -keyout be.key -out be.csr 2>/dev/null
  printf 'subjectAltName=DNS:backend.internal\n' >be.ext
  openssl x509 -req -in be.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 \
    -extfile be.ext -out be.crt 2>/dev/null
  cat >ca.cnf <<EOF
[ca]
default_ca = bench
[bench]
database = $d/index.txt
crlnumber = $d/crlnumber
default_md = sha256
default_crl_days = 30
EOF
  for n in 1 10000; do
    python3 - "$n" >index.txt <<'PY'
import sys
for i in range(int(sys.argv[1])):
    print(f"R\t300101000000Z\t260101000000Z\t{0x10000000 + i:X}\tunknown\t/CN=revoked{i}")
PY
    echo 01 >crlnumber
    openssl ca -config ca.cnf -gencrl -keyfile ca.key -cert ca.crt -out "crl-$n.pem" 2>/dev/null
  done
  cd - >/dev/null
}
pki
start_backend "$BACKEND" "$TLS_BACKEND" "$W/pki/be.crt" "$W/pki/be.key"
# Full handshakes only: the point is the certificate check on every connection.
sed -i 's/ssl_certificate_key/ssl_session_tickets off; ssl_session_cache off; ssl_certificate_key/' "$W/be/nginx.conf"
kill -HUP "${PIDS[0]}"
wait_ok "https://127.0.0.1:$TLS_BACKEND/index.html"

# bench/run.sh's route, its ServiceEntry on the TLS port, and the DestinationRule.
one_route_repo "$W/repo" "$H1" "$TLS_BACKEND"
sed -i -e 's/^  - {number: 80, name: http, protocol: HTTP}/  - {number: 443, name: https, protocol: HTTPS}/' \
  -e 's/ports: {http: /ports: {https: /' "$W/repo/tenants/bench/bench.yaml"
cat >>"$W/repo/tenants/bench/bench.yaml" <<EOF
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: backend}
spec:
  host: backend.bench.internal
  trafficPolicy:
    connectionPool: {http: {maxRequestsPerConnection: 1}}
    tls: {mode: SIMPLE, credentialName: upstream-ca, sni: backend.internal}
EOF
mkdir -p "$W/creds/bench/upstream-ca"
cp "$W/pki/ca.crt" "$W/creds/bench/upstream-ca/ca.crt"

ticks() { # utime+stime of PID
  awk '{ print $14 + $15 }' "/proc/$1/stat"
}
HZ=$(getconf CLK_TCK)
run_one() { # BINARY LABEL CRL ROUND
  "$1" run --repo "$W/repo" --credentials "$W/creds" --admin "127.0.0.1:$ADMIN" --workers 2 \
    >"$W/$2-$3-$4.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  wait_ok "http://localhost:$H1/index.html"
  wrk -t1 -c16 -d2s "http://localhost:$H1/index.html" >/dev/null
  local t0; t0=$(ticks "$pid")
  wrk -t1 -c16 -d10s "http://localhost:$H1/index.html" >"$W/$2-$3-$4.wrk"
  local t1; t1=$(ticks "$pid")
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  python3 - "$W/$2-$3-$4.wrk" "$((t1 - t0))" "$HZ" "$2" "$3" >>"$W/rows" <<'PY'
import re, sys
text, ticks, hz, label, crl = open(sys.argv[1]).read(), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
reqs = int(re.search(r"(\d+) requests in", text).group(1))
bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
if bad:
    sys.exit(f"{label} CRL {crl}: {bad.group(1)} non-2xx responses")
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
print(label, crl, rps, ticks / hz * 1e6 / reqs)
PY
}
for crl in 1 10000; do
  cp "$W/pki/crl-$crl.pem" "$W/creds/bench/upstream-ca/ca.crl"
  for r in $(seq "$ROUNDS"); do
    log "CRL $crl, round $r"
    if ((r % 2)); then
      run_one "$A" A "$crl" "$r"; run_one "$B" B "$crl" "$r"
    else
      run_one "$B" B "$crl" "$r"; run_one "$A" A "$crl" "$r"
    fi
  done
done
python3 - "$W/rows" "$A" "$B" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
def med(label, crl, i):
    return statistics.median(float(r[i]) for r in rows if r[0] == label and r[1] == crl)
print(f"A: {sys.argv[2]}\nB: {sys.argv[3]}\n")
print("| revoked in the CRL | A req/s | B req/s | B ÷ A | A CPU µs/req | B CPU µs/req | B ÷ A |")
print("|---|---|---|---|---|---|---|")
for crl in ("1", "10000"):
    ra, rb, ca, cb = med("A", crl, 2), med("B", crl, 2), med("A", crl, 3), med("B", crl, 3)
    print(f"| {int(crl):,} | {ra:,.0f} | {rb:,.0f} | {rb / ra:.2f} | {ca:.0f} | {cb:.0f} | {cb / ca:.2f} |")
PY
