#!/usr/bin/env bash
# Two gatehouse builds against each other in the same run: HTTP/1.1 keep-alive requests/s and
# CPU per request, alternating A and B for N rounds (medians). Absolute figures move by ±15 %
# between runs on this machine; an A/B in one run is what tells a change from noise.
#
#   bench/ab.sh BINARY_A BINARY_B [ROUNDS]
#
# A side may also be `nginx` or `haproxy` (Debian's, as bench/run.sh configures them: 2
# workers, upstream keep-alive): gatehouse against them with both sides adjacent in time.
# This machine's speed drifts by ±20 % within minutes (bench/run.sh's rounds, where the
# proxies run a minute apart, move that much); a ratio taken per round of two 10 s runs side
# by side is what resolves a few per cent.
#
# bench/run.sh's route (one VirtualService to an nginx backend, 100-byte body), plain HTTP,
# 2 workers, `wrk -t1 -c64 -d10s` after a 2 s warm-up; CPU = utime+stime of the proxy from
# /proc over the measured run ÷ requests, and its user-space share alone (utime), which is
# what a change to gatehouse's code moves: the kernel's share is most of the noise. ROUNDS
# defaults to 3; odd rounds run A first, even rounds B first. Two 5-round runs of the same pair differed by 5 % in CPU per request here
# (an A/A run gave 0.984): smaller differences need bench/instructions.sh.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
side() { case "$1" in nginx | haproxy) echo "$1" ;; *) realpath "$1" ;; esac; }
A=$(side "$1") B=$(side "$2") ROUNDS=${3:-3}
cd "$HERE/.."
BASE=${BENCH_PORT_BASE:-18100}
BACKEND=$BASE H1=$((BASE + 1)) ADMIN=$((BASE + 9))
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"
# shellcheck source=bench/haproxy-cfg.sh
. "$HERE/haproxy-cfg.sh"
bench_need wrk=wrk nginx=nginx-light curl=curl python3=python3
[ "$A" != haproxy ] && [ "$B" != haproxy ] || bench_need haproxy=haproxy
bench_init ab
W=$WORK
start_backend "$BACKEND"
one_route_repo "$W/repo" "$H1" "$BACKEND"
# utime+stime and utime in ticks of the process and its children (nginx's workers).
ticks() {
  python3 - "$1" <<'PY'
import os, sys
root = int(sys.argv[1])
kids = {}
for d in filter(str.isdigit, os.listdir("/proc")):
    try:
        f = open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        continue
    kids.setdefault(int(f[1]), []).append((int(d), int(f[11]), int(f[12])))
total = user = 0
try:
    f = open(f"/proc/{root}/stat").read().rsplit(")", 1)[1].split()
    total, user = int(f[11]) + int(f[12]), int(f[11])
except OSError:
    pass
todo = [root]
while todo:
    for pid, u, s in kids.get(todo.pop(), []):
        total, user = total + u + s, user + u
        todo.append(pid)
print(total, user)
PY
}
HZ=$(getconf CLK_TCK)
run_one() { # SIDE LABEL ROUND
  local pid
  start_proxy "$@"
  wait_ok "http://localhost:$H1/index.html"
  wrk -t1 -c64 -d2s "http://localhost:$H1/index.html" >/dev/null
  local t0 u0; read -r t0 u0 < <(ticks "$pid")
  wrk -t1 -c64 -d10s --latency "http://localhost:$H1/index.html" >"$W/$2-$3.wrk"
  local t1 u1; read -r t1 u1 < <(ticks "$pid")
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  python3 - "$W/$2-$3.wrk" "$((t1 - t0))" "$HZ" "$2" "$((u1 - u0))" >>"$W/rows" <<'PY'
import re, sys
text, ticks, hz, label = open(sys.argv[1]).read(), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
reqs = int(re.search(r"(\d+) requests in", text).group(1))
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", text)
ms = float(p99.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[p99.group(2)]
user = int(sys.argv[5])
print(label, rps, ms, ticks / hz * 1e6 / reqs, user / hz * 1e6 / reqs)
PY
}
# A B, then B A: whichever runs second in a round would otherwise always get the machine as
# the first left it.
for r in $(seq "$ROUNDS"); do
  if ((r % 2)); then
    run_one "$A" A "$r"
    run_one "$B" B "$r"
  else
    run_one "$B" B "$r"
    run_one "$A" A "$r"
  fi
done
python3 - "$W/rows" "$A" "$B" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
def med(label, i):
    return statistics.median(float(r[i]) for r in rows if r[0] == label)
def per_round(i):
    a = [float(r[i]) for r in rows if r[0] == "A"]
    b = [float(r[i]) for r in rows if r[0] == "B"]
    return [y / x for x, y in zip(a, b)]
print("| side | req/s | p99 ms | CPU µs/req | of it user µs/req |")
print("|---|---|---|---|---|")
for label, path in (("A", sys.argv[2]), ("B", sys.argv[3])):
    print(f"| {label}: {path} | {med(label, 1):,.0f} | {med(label, 2):.2f} | {med(label, 3):.1f} | {med(label, 4):.2f} |")
print("| B ÷ A | " + " | ".join(f"{med('B', i) / med('A', i):.3f}" for i in (1, 2, 3, 4)) + " |")
# The spread of the per-round ratios says how far apart two builds must be for this run to
# tell them apart: an A/A run (the same binary twice) measures it.
span = lambda i: f"{min(per_round(i)):.3f}–{max(per_round(i)):.3f}"  # noqa: E731
print(f"| B ÷ A per round, min–max | {span(1)} | {span(2)} | {span(3)} | {span(4)} |")
PY
