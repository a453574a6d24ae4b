#!/usr/bin/env bash
# What the kernel does for each proxied request: syscalls, context switches and packets per
# HTTP/1.1 request for gatehouse, nginx and HAProxy under bench/ab.sh's load, and the TCP
# segments on each side of the proxy. About three quarters of each proxy's CPU here is the
# kernel's (BENCHMARKS.md, stop 26), so this is where a difference in kernel time shows its
# cause: an extra write, an extra segment, a pure ACK, a wake-up.
#
#   bench/packets.sh [BINARY] [SECONDS]
#
# BINARY defaults to target/release/gatehouse; SECONDS (default 5) is each measured run.
# Each proxy runs alone (2 workers, upstream keep-alive, as bench/run.sh configures it) in
# front of the nginx backend, driven by `wrk -t1 -c64` after a 2 s warm-up, twice:
#  - under `perf stat`: its syscalls (by kind), context switches and packets it sent
#    (net:net_dev_xmit, which on loopback includes ACKs its sends cause the receiver to
#    send), each divided by the run's requests;
#  - under `tcpdump` (20,000 packets from the middle of the run): data segments and pure
#    ACKs per request on the client side and on the backend side.
# Counts, not times: they vary far less than times from run to run (a context switch or an
# epoll_wait more or less as the scheduler has it), so one run shows a difference of a tenth
# of a syscall or segment per request.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BIN=$(realpath "${1:-$HERE/../target/release/gatehouse}")
cd "$HERE/.."
SECS=${2:-5}
BASE=${BENCH_PORT_BASE:-18200}
BACKEND=$BASE H1=$((BASE + 1)) ADMIN=$((BASE + 9))
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"
# shellcheck source=bench/haproxy-cfg.sh
. "$HERE/haproxy-cfg.sh"
bench_need wrk=wrk nginx=nginx-light curl=curl python3=python3 haproxy=haproxy \
  tcpdump=tcpdump perf=linux-perf
[ -x "$BIN" ] || { echo "no gatehouse binary at $BIN (scripts/release-build.sh)" >&2; exit 1; }
bench_init packets
W=$WORK
start_backend "$BACKEND"
one_route_repo "$W/repo" "$H1" "$BACKEND"
URL="http://localhost:$H1/index.html"
EVENTS=raw_syscalls:sys_enter,sched:sched_switch,net:net_dev_xmit
for s in sendto recvfrom writev readv write read epoll_wait epoll_pwait epoll_ctl futex; do
  EVENTS+=",syscalls:sys_enter_$s"
done

for side in "$BIN" nginx haproxy; do
  label=$(case "$side" in nginx | haproxy) echo "$side" ;; *) echo gatehouse ;; esac)
  log "$label"
  start_proxy "$side" "$label" 1
  wait_ok "$URL"
  wrk -t1 -c64 -d2s "$URL" >/dev/null
  # The proxy and its children (nginx's workers); perf follows every thread of each.
  pids=$({ pgrep -P "$pid" || true; } | tr '\n' ,)$pid
  perf stat -x, -e "$EVENTS" -p "$pids" -o "$W/$label.stat" -- sleep "$SECS" 2>"$W/$label.perf-err" &
  st=$!
  wrk -t1 -c64 -d"${SECS}s" "$URL" >"$W/$label.wrk"
  wait "$st" || true
  grep -q raw_syscalls "$W/$label.stat" 2>/dev/null || {
    echo "perf stat counted nothing for $label (root and tracepoints needed):" >&2
    cat "$W/$label.perf-err" >&2
    exit 1
  }
  # The capture starts a second into its run and stops at 20,000 packets.
  wrk -t1 -c64 -d"${SECS}s" "$URL" >/dev/null &
  w=$!
  sleep 1
  timeout "$SECS" tcpdump -i lo -nn -c 20000 -w "$W/$label.pcap" \
    "tcp port $H1 or tcp port $BACKEND" 2>"$W/$label.tcpdump-err" || true
  wait "$w"
  [ -s "$W/$label.pcap" ] || { echo "tcpdump captured nothing for $label:" >&2; cat "$W/$label.tcpdump-err" >&2; exit 1; }
  # A capture that lost packets would undercount; its own summary says so.
  grep -h "dropped by kernel" "$W/$label.tcpdump-err" | sed "s/^/$label: /" >&2 || true
  tcpdump -nn -r "$W/$label.pcap" 2>/dev/null >"$W/$label.txt"
  kill -TERM "$pid"
  wait "$pid" 2>/dev/null || true
done

python3 - "$W" "$H1" "$BACKEND" <<'PY'
import collections, re, sys
work, front, back = sys.argv[1], sys.argv[2], sys.argv[3]
names = ["gatehouse", "nginx", "haproxy"]

def stat(label):
    reqs = int(re.search(r"(\d+) requests in", open(f"{work}/{label}.wrk").read()).group(1))
    counts = collections.Counter()
    for line in open(f"{work}/{label}.stat"):
        f = line.strip().split(",")
        if len(f) > 2 and f[0].replace(".", "").isdigit():
            counts[f[2]] += float(f[0])
    return reqs, counts

def segments(label):
    # "IP a.b.c.d.PORT > e.f.g.h.PORT: Flags [...], ..., length N"
    c = collections.Counter()
    for line in open(f"{work}/{label}.txt"):
        m = re.search(r"\.(\d+) > [\d.]+\.(\d+): .* length (\d+)", line)
        if not m:
            continue
        sport, dport, n = m.group(1), m.group(2), int(m.group(3))
        side = ("client>proxy" if dport == front else "proxy>client" if sport == front
                else "proxy>backend" if dport == back else "backend>proxy" if sport == back
                else None)
        if side:
            c[(side, "data" if n else "ack")] += 1
    return c

rows = [
    ("syscalls", "raw_syscalls:sys_enter"),
    ("  sendto + writev + write", ("syscalls:sys_enter_sendto", "syscalls:sys_enter_writev", "syscalls:sys_enter_write")),
    ("  recvfrom + readv + read", ("syscalls:sys_enter_recvfrom", "syscalls:sys_enter_readv", "syscalls:sys_enter_read")),
    ("  epoll_wait + epoll_pwait", ("syscalls:sys_enter_epoll_wait", "syscalls:sys_enter_epoll_pwait")),
    ("  epoll_ctl", "syscalls:sys_enter_epoll_ctl"),
    ("  futex", "syscalls:sys_enter_futex"),
    ("  other syscalls", None),
    ("context switches", "sched:sched_switch"),
    ("packets sent in its context", "net:net_dev_xmit"),
]
stats = {n: stat(n) for n in names}
segs = {n: segments(n) for n in names}
print("| per request | " + " | ".join(names) + " |")
print("|---|" + "---|" * len(names))
named = [k for _, keys in rows[1:6] for k in ((keys,) if isinstance(keys, str) else keys)]
for title, keys in rows:
    cells = []
    for n in names:
        reqs, c = stats[n]
        if keys is None:
            total = c["raw_syscalls:sys_enter"] - sum(c[k] for k in named)
        else:
            total = sum(c[k] for k in ((keys,) if isinstance(keys, str) else keys))
        cells.append(f"{total / reqs:.3f}")
    print(f"| {title} | " + " | ".join(cells) + " |")
for side, kind, title in [
    ("proxy>client", "data", "segments to the client"),
    ("client>proxy", "ack", "pure ACKs from the client"),
    ("proxy>backend", "data", "segments to the backend"),
    ("proxy>backend", "ack", "pure ACKs to the backend"),
    ("backend>proxy", "data", "segments from the backend"),
]:
    cells = []
    for n in names:
        requests = segs[n][("client>proxy", "data")] or 1
        cells.append(f"{segs[n][(side, kind)] / requests:.3f}")
    print(f"| {title} | " + " | ".join(cells) + " |")
print()
print("Requests: " + ", ".join(f"{n} {stats[n][0]:,} in the perf run" for n in names)
      + "; segment rows are per request the capture saw (client-to-proxy data segments).")
PY
