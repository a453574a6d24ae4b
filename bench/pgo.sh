#!/usr/bin/env bash
# Regenerates packaging/pgo/gatehouse.profdata, the profile that release builds of gatehouse
# are optimised with (profile-guided optimisation: LLVM lays out and inlines the hot paths by
# what a real run executed).
#
#   bench/pgo.sh
#
# Builds an instrumented gatehouse (target/pgo-gen, about 10 minutes from scratch, 6 after a
# change), runs it with two workers
# in front of the benchmark's nginx backend — HTTP/1.1 keep-alive (wrk), HTTP/2 prior knowledge
# (h2load), TLS handshakes with HTTP/1.1 and HTTP/2 over TLS — and merges what it recorded with
# the llvm-profdata of the LLVM that rustc uses. Run it again after a change to the data path:
# a function whose code changed since the profile was taken is built without the profile
# (silently: scripts/release-build.sh turns LLVM's warning off), so a stale profile costs
# speed, never correctness.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$HERE/.."
BASE=${BENCH_PORT_BASE:-18100}
BACKEND=$BASE H1=$((BASE + 1)) TLS=$((BASE + 2)) ADMIN=$((BASE + 9))
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"
bench_need wrk=wrk h2load=nghttp2-client nginx=nginx-light curl=curl openssl=openssl
# shellcheck source=packaging/pgo/profdata.sh
. packaging/pgo/profdata.sh
PROFDATA=$(llvm_profdata)
bench_init pgo
W=$WORK
RAW=$W/raw
# The folder given at build time only names a default: LLVM_PROFILE_FILE below decides where
# this run writes, and the fixed flag keeps a second run's build incremental.
RUSTFLAGS="-Cprofile-generate=/tmp/pgo-data" cargo build --release -p appliance --bin gatehouse --target-dir target/pgo-gen
BIN=target/pgo-gen/release/gatehouse

start_backend "$BACKEND"
one_route_repo "$W/repo" "$H1" "$BACKEND"
# The same repository with bench/run.sh's TLS server beside the plain one.
sed -i "s|ports: \[{name: http, port: 80, targetPort: $H1}\]|ports: [{name: http, port: 80, targetPort: $H1}, {name: https, port: 443, targetPort: $TLS}]|" "$W/repo/gatehouse.yaml"
sed -i 's|    hosts: \["\*"\]$|&\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: ["*"]\n    tls: {mode: SIMPLE, credentialName: bench-cert}|' "$W/repo/tenants/bench/bench.yaml"
mkdir -p "$W/credentials/bench/bench-cert"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 7 \
  -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
  -keyout "$W/credentials/bench/bench-cert/tls.key" -out "$W/credentials/bench/bench-cert/tls.crt" 2>/dev/null

LLVM_PROFILE_FILE="$RAW/gatehouse-%p-%m.profraw" "$BIN" run --repo "$W/repo" --credentials "$W/credentials" --admin "127.0.0.1:$ADMIN" --workers 2 \
  >"$W/gatehouse.log" 2>&1 &
GH=$!
wait_ok "http://localhost:$H1/index.html"
wait_ok "https://localhost:$TLS/index.html"
log "training: HTTP/1.1 keep-alive"
wrk -t1 -c64 -d15s "http://localhost:$H1/index.html" | grep -E 'Requests/sec|Non-2xx|Socket errors' || true
log "training: HTTP/2 prior knowledge"
all_ok() { # a profile of error paths would optimise the wrong code
  local out; out=$("$@") || true
  echo "$out" | grep -E '^requests:' >&2
  echo "$out" | grep -Eq ' 0 failed, 0 errored' || { echo "training requests failed: $*" >&2; exit 1; }
}
all_ok h2load -n 200000 -c16 -m10 "http://localhost:$H1/index.html"
log "training: TLS handshakes"
wrk -t1 -c64 -d5s -H 'Connection: close' "https://localhost:$TLS/index.html" | grep -E 'Requests/sec|Non-2xx|Socket errors' || true
log "training: HTTP/2 over TLS"
all_ok h2load -n 100000 -c16 -m10 "https://localhost:$TLS/index.html"
# The profile is written when the process exits normally: SIGTERM drains and returns from main.
kill -TERM "$GH"
wait "$GH"
ls "$RAW"/*.profraw >/dev/null
mkdir -p packaging/pgo
"$PROFDATA" merge -o packaging/pgo/gatehouse.profdata "$RAW"/*.profraw
cat >packaging/pgo/SOURCE <<EOF
Recorded by bench/pgo.sh on $(date -u +%F) from commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- appliance tenants alloc Cargo.lock || echo " with uncommitted changes")
with $(rustc -V), LLVM $(rustc -vV | sed -n 's/^LLVM version: //p').
Functions changed since then are built without the profile (stale is slower, never wrong).
EOF
log "wrote packaging/pgo/gatehouse.profdata ($(stat -c %s packaging/pgo/gatehouse.profdata) bytes) from $(git rev-parse --short HEAD)"
