#!/usr/bin/env python3
"""Helpers for bench/run.sh: /proc sampling, the idle-connection client, load-tool output
parsing, and the Markdown report. Standard library only (Python >= 3.9).

Results are JSON lines, one object per (proxy, test), appended to a results file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import statistics
import sys
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- /proc


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    # The command name may contain spaces and parentheses: split after the last ')'.
    rest = s[s.rindex(")") + 2 :].split()
    return rest  # rest[0] is field 3 (state)


def tree(root: int) -> list[int]:
    """`root` and all its descendants (processes, not threads)."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        f = _stat_fields(int(d))
        if f is None:
            continue
        children.setdefault(int(f[1]), []).append(int(d))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        if os.path.exists(f"/proc/{p}"):
            out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(root: int, kernel_only: bool = False) -> float:
    """utime + stime (or stime alone) of `root` and its descendants, all threads included."""
    total = 0
    for p in tree(root):
        f = _stat_fields(p)
        if f is not None:
            total += (0 if kernel_only else int(f[11])) + int(f[12])  # fields 14 and 15
    return total / CLK_TCK


def rss_kb(root: int) -> int:
    """Sum of VmRSS (kB) over `root` and its descendants."""
    total = 0
    for p in tree(root):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


def machine_busy_seconds() -> float:
    """Busy CPU time of the whole machine (all CPUs) from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal ...
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / CLK_TCK


def run_measured(cmd: list[str], stdout_path: str, proxy_pid: int, backend_pid: int) -> tuple[int, dict]:
    """Runs `cmd` (the load generator) and measures CPU of the proxy tree, the backend tree,
    the client itself (rusage) and the whole machine over the run."""
    k0 = cpu_seconds(proxy_pid, kernel_only=True)
    p0, b0, m0, t0 = cpu_seconds(proxy_pid), cpu_seconds(backend_pid), machine_busy_seconds(), time.monotonic()
    with open(stdout_path, "w") as out:
        pid = os.fork()
        if pid == 0:
            os.dup2(out.fileno(), 1)
            os.dup2(out.fileno(), 2)
            try:
                os.execvp(cmd[0], cmd)
            finally:
                os._exit(127)
        _, status, ru = os.wait4(pid, 0)
    t1 = time.monotonic()
    p1, b1, m1 = cpu_seconds(proxy_pid), cpu_seconds(backend_pid), machine_busy_seconds()
    k1 = cpu_seconds(proxy_pid, kernel_only=True)
    client = ru.ru_utime + ru.ru_stime
    wall = t1 - t0
    other = (m1 - m0) - (p1 - p0) - (b1 - b0 if backend_pid != proxy_pid else 0) - client
    meas = {
        "cpu0": p0,
        "cpu1": p1,
        "kernel_cpu_s": k1 - k0,
        "backend_cpu_s": round(b1 - b0, 2),
        "client_cpu_s": round(client, 2),
        "machine_busy_s": round(m1 - m0, 2),
        "wall_s": round(wall, 2),
        # CPU used by anything else on the machine, as % of all CPUs over the run.
        "other_cpu_pct": round(max(0.0, other) * 100 / (wall * (os.cpu_count() or 1)), 1),
    }
    return os.waitstatus_to_exitcode(status), meas


# ---------------------------------------------------------------- parsing

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _wrk_time_ms(s: str) -> float:
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", s)
    if not m:
        raise ValueError(f"bad wrk time {s!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(text: str) -> dict:
    r: dict = {"non2xx": 0, "socket_errors": 0}
    m = re.search(r"Requests/sec:\s+([0-9.]+)", text)
    if not m:
        raise ValueError("wrk output has no Requests/sec line")
    r["rps"] = float(m.group(1))
    m = re.search(r"(\d+) requests in ([0-9.]+\w+),", text)
    r["requests"] = int(m.group(1)) if m else 0
    for pct, key in (("50", "p50_ms"), ("99", "p99_ms")):
        m = re.search(rf"^\s+{pct}%\s+(\S+)", text, re.M)
        if m:
            r[key] = _wrk_time_ms(m.group(1))
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    if m:
        r["non2xx"] = int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        r["socket_errors"] = sum(int(x) for x in m.groups())
        r["socket_errors_detail"] = "connect {}, read {}, write {}, timeout {}".format(*m.groups())
    return r


def percentile(sorted_vals: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_vals:
        return float("nan")
    k = max(0, min(len(sorted_vals) - 1, int(round(q / 100.0 * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[k]


def parse_h2load(text: str, log_path: str | None) -> dict:
    r: dict = {}
    m = re.search(r"finished in ([0-9.]+)(\w+), ([0-9.]+) req/s", text)
    if not m:
        raise ValueError("h2load output has no 'finished in' line")
    r["rps"] = float(m.group(3))
    m = re.search(
        r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
        r"(\d+) errored, (\d+) timeout",
        text,
    )
    if m:
        total, _started, done, ok, failed, errored, timeout = (int(x) for x in m.groups())
        r.update(requests=done, succeeded=ok, failed=failed, errored=errored, timeout=timeout)
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    if m:
        c2, c3, c4, c5 = (int(x) for x in m.groups())
        r["non2xx"] = c3 + c4 + c5
    for key, pat in (("alpn", r"Application protocol: (\S+)"), ("tls", r"TLS Protocol: (\S+)"),
                     ("kex", r"Server Temp Key: (.+)")):
        m = re.search(pat, text)
        if m:
            r[key] = m.group(1).strip()
    if log_path:
        lat = []
        with open(log_path) as f:
            for line in f:
                parts = line.split("\t")
                if len(parts) >= 3 and parts[1].strip().startswith("2"):
                    lat.append(int(parts[2]) / 1000.0)  # µs -> ms
        lat.sort()
        r["latency_samples"] = len(lat)
        r["p50_ms"] = percentile(lat, 50)
        r["p99_ms"] = percentile(lat, 99)
    return r


# ---------------------------------------------------------------- idle connections


async def _idle(host: str, port: int, authority: str, n: int, conc: int, pid: int,
                settle: float) -> dict:
    req = (f"GET /index.html HTTP/1.1\r\nHost: {authority}\r\n"
           "Connection: keep-alive\r\nUser-Agent: idle-bench\r\n\r\n").encode()
    sem = asyncio.Semaphore(conc)
    conns: list = []
    statuses: dict[str, int] = {}
    errors: dict[str, int] = {}

    async def one() -> None:
        async with sem:
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
                writer.write(req)
                await writer.drain()
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                status = head.split(b" ", 2)[1].decode()
                m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
                if m:
                    await asyncio.wait_for(reader.readexactly(int(m.group(1))), 10)
                statuses[status] = statuses.get(status, 0) + 1
                conns.append((reader, writer))
            except Exception as e:  # noqa: BLE001 - counted and reported
                k = type(e).__name__
                errors[k] = errors.get(k, 0) + 1

    await asyncio.sleep(settle)
    base = rss_kb(pid)
    t0 = time.monotonic()
    await asyncio.gather(*(one() for _ in range(n)))
    open_secs = time.monotonic() - t0
    await asyncio.sleep(settle)
    samples = []
    for _ in range(3):
        samples.append(rss_kb(pid))
        await asyncio.sleep(0.5)
    held = samples[-1]
    await asyncio.sleep(0.2)
    still_open = sum(1 for r, _ in conns if not r.at_eof())
    for _, w in conns:
        w.close()
    await asyncio.sleep(settle)
    after = rss_kb(pid)
    opened = len(conns)
    return {
        "connections": n,
        "opened": opened,
        "still_open": still_open,
        "statuses": statuses,
        "errors": errors,
        "open_secs": round(open_secs, 2),
        "rss_base_kb": base,
        "rss_held_kb": held,
        "rss_after_close_kb": after,
        "bytes_per_conn": round((held - base) * 1024 / opened) if opened else None,
        "non2xx": sum(v for k, v in statuses.items() if not k.startswith("2")),
    }


# ---------------------------------------------------------------- report


_SUM_KEYS = {"non2xx", "socket_errors", "failed", "errored", "timeout"}


def _fmt(v, nd=0, unit=""):
    if v is None:
        return "–"
    if isinstance(v, float) and v != v:
        return "–"
    if nd == 0:
        return f"{v:,.0f}{unit}"
    return f"{v:,.{nd}f}{unit}"


def report(results_path: str, meta_path: str, load_end: str | None = None) -> str:
    runs: dict[str, dict[str, list[dict]]] = {}
    order: list[str] = []
    with open(results_path) as f:
        for line in f:
            if not line.strip():
                continue
            o = json.loads(line)
            p = o.pop("proxy")
            t = o.pop("test")
            if p not in runs:
                runs[p] = {}
                order.append(p)
            runs[p].setdefault(t, []).append(o)
    # One row per (proxy, test): the median of each number over the rounds; error counts
    # are added up; texts are joined.
    rows: dict[str, dict[str, dict]] = {}
    spread: dict[tuple[str, str], tuple[float, float]] = {}
    for p, tests in runs.items():
        rows[p] = {}
        for t, lst in tests.items():
            if t == "end":
                lst = lst[:1]  # RSS after the tests: round 1, the process that held the idle connections
            merged: dict = {}
            for k in dict.fromkeys(k for d in lst for k in d):
                vals = [d[k] for d in lst if k in d]
                if k in _SUM_KEYS:
                    merged[k] = sum(vals)
                elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
                    merged[k] = statistics.median(vals)
                elif all(isinstance(v, str) for v in vals):
                    merged[k] = "; ".join(dict.fromkeys(vals))
                else:
                    merged[k] = vals[-1]
            merged["rounds"] = len(lst)
            rows[p][t] = merged
            if len(lst) > 1 and all("rps" in d for d in lst):
                spread[(p, t)] = (min(d["rps"] for d in lst), max(d["rps"] for d in lst))
    with open(meta_path) as f:
        meta = json.load(f)

    def g(p, t, k):
        return rows.get(p, {}).get(t, {}).get(k)

    def ratio(p, t, k="rps"):
        a, b = g(p, t, k), g("nginx", t, k)
        if a is None or not b:
            return "–"
        return f"{a / b:.2f}"

    out = []
    out.append(f"### Proxy benchmark, {meta['date']}{' (--quick)' if meta.get('quick') else ''}")
    out.append("")
    out.append(f"- machine: {meta['machine']}; load average at start {meta.get('load_start', '?')}, "
               f"at end {load_end or '?'}")
    out.append(f"- command: `{meta['command']}`")
    if meta.get("rounds", 1) > 1:
        out.append(f"- {meta['rounds']} rounds, proxies in turn within each round; every figure is the "
                   "median over the rounds (idle memory: first round only)")
    out.append("- versions: " + "; ".join(f"{k} {v}" for k, v in meta["versions"].items()))
    out.append(f"- workers: {meta['workers']} per proxy; backend: nginx, 1 worker, {meta['body_bytes']}-byte "
               f"file; client and backend on the same {meta['cpus']} vCPUs, 127.0.0.1 only")
    out.append(f"- HTTP/1.1: `{meta['h1_cmd']}` after a {meta['warmup']} s warm-up")
    out.append(f"- HTTP/2 (TLS, ALPN h2): `{meta['h2_cmd']}` after a {meta['warmup']} s warm-up; "
               "percentiles from `--log-file`")
    if meta.get("h3_cmd"):
        out.append(f"- HTTP/3 (QUIC, same port over UDP; gatehouse only): `{meta['h3_cmd']}` after a "
                   f"{meta['warmup']} s warm-up; percentiles from `--log-file`")
    out.append(f"- TLS handshakes: `{meta['tls_cmd']}` (every request on a new TLS 1.3 connection, "
               "full handshake, ECDSA P-256 certificate)")
    out.append(f"- idle memory: {meta['idle_n']:,} HTTP/1.1 keep-alive connections, one GET each, "
               "held open; RSS delta of the proxy process tree ÷ connections")
    out.append("")
    head = ("| proxy | H1 req/s | H1 ÷ nginx | H1 p50 ms | H1 p99 ms | H2 req/s | H2 ÷ nginx | "
            "H2 p50 ms | H2 p99 ms | H3 req/s | H3 p50 ms | H3 p99 ms | TLS handshakes/s | "
            "TLS ÷ nginx | idle B/conn | CPU µs/req (H1) | of it kernel | backend + client µs/req (H1) |")
    out.append(head)
    out.append("|" + "---|" * (head.count("|") - 1))
    for p in order:
        out.append("| " + " | ".join([
            p,
            _fmt(g(p, "h1", "rps")),
            ratio(p, "h1"),
            _fmt(g(p, "h1", "p50_ms"), 2),
            _fmt(g(p, "h1", "p99_ms"), 2),
            _fmt(g(p, "h2", "rps")),
            ratio(p, "h2"),
            _fmt(g(p, "h2", "p50_ms"), 2),
            _fmt(g(p, "h2", "p99_ms"), 2),
            _fmt(g(p, "h3", "rps")),
            _fmt(g(p, "h3", "p50_ms"), 2),
            _fmt(g(p, "h3", "p99_ms"), 2),
            _fmt(g(p, "tls", "rps")),
            ratio(p, "tls"),
            _fmt(g(p, "idle", "bytes_per_conn")),
            _fmt(g(p, "h1", "cpu_us_per_req"), 1),
            _fmt(g(p, "h1", "kernel_us_per_req"), 1),
            _fmt(g(p, "h1", "rest_us_per_req"), 1),
        ]) + " |")
    out.append("")
    out.append("Details. CPU = utime+stime of the proxy process tree from /proc over the measured run; "
               "\"of it kernel\" is its stime. Backend + client = the nginx backend's and wrk's CPU "
               "over the same run ÷ requests: as all share the same cores, H1 requests/s is about "
               "cores ÷ (proxy CPU + backend + client) per request. "
               "Other CPU % = busy CPU of the whole machine (/proc/stat) minus proxy, backend and client, "
               "as % of all CPUs: more than a few % means something else ran during the measurement.")
    out.append("")
    head2 = ("| proxy | H2 CPU µs/req | H3 CPU µs/req | TLS CPU µs/handshake | RSS start MB | RSS with idle conns MB | "
             "RSS end MB | idle conns still open | other CPU % (H1/H2/TLS/H3) | H1 req/s min–max | "
             "TLS (OpenSSL client) | errors |")
    out.append(head2)
    out.append("|" + "---|" * (head2.count("|") - 1))
    for p in order:
        errs = []
        for t in ("h1", "h2", "h3", "tls", "idle"):
            d = rows.get(p, {}).get(t)
            if not d:
                continue
            e = []
            if d.get("non2xx"):
                e.append(f"{d['non2xx']} non-2xx")
            if d.get("socket_errors"):
                e.append(f"socket errors: {d.get('socket_errors_detail', d['socket_errors'])}")
            for k in ("failed", "errored", "timeout"):
                if d.get(k):
                    e.append(f"{d[k]} {k}")
            if t == "idle" and d.get("errors"):
                e.append("connect/read: " + ", ".join(f"{k} {v}" for k, v in d["errors"].items()))
            if e:
                errs.append(f"{t}: " + "; ".join(e))
        for t, d in rows.get(p, {}).items():
            if t.startswith("fail"):
                errs.append(f"{t}: {d.get('message')}")
        idle = rows.get(p, {}).get("idle", {})
        still = (f"{idle.get('still_open'):,} / {idle.get('opened'):,}" if idle.get("opened") is not None
                 else "–")
        kb = lambda v: None if v is None else v / 1024  # noqa: E731
        out.append("| " + " | ".join([
            p,
            _fmt(g(p, "h2", "cpu_us_per_req"), 1),
            _fmt(g(p, "h3", "cpu_us_per_req"), 1),
            _fmt(g(p, "tls", "cpu_us_per_req"), 1),
            _fmt(kb(g(p, "idle", "rss_base_kb")), 1),
            _fmt(kb(g(p, "idle", "rss_held_kb")), 1),
            _fmt(kb(g(p, "end", "rss_kb")), 1),
            still,
            "/".join(_fmt(g(p, t, "other_cpu_pct")) for t in ("h1", "h2", "tls", "h3")),
            (f"{spread[(p, 'h1')][0]:,.0f}–{spread[(p, 'h1')][1]:,.0f}" if (p, "h1") in spread else "–"),
            g(p, "tlsinfo", "info") or "–",
            "; ".join(errs) if errs else "none",
        ]) + " |")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- CLI


def _append(args, obj: dict) -> None:
    obj = {"proxy": args.proxy, "test": args.test, **obj}
    for kv in args.set or []:
        k, v = kv.split("=", 1)
        try:
            obj[k] = float(v)
        except ValueError:
            obj[k] = v
    if "cpu0" in obj and "cpu1" in obj and obj.get("requests"):
        obj["cpu_us_per_req"] = (obj["cpu1"] - obj["cpu0"]) * 1e6 / obj["requests"]
        if "kernel_cpu_s" in obj:
            obj["kernel_us_per_req"] = obj["kernel_cpu_s"] * 1e6 / obj["requests"]
        if "backend_cpu_s" in obj and "client_cpu_s" in obj:
            # What the backend and the load generator cost per request: with everything on
            # the same cores, requests/s is about cores / (proxy CPU + this).
            obj["rest_us_per_req"] = (obj["backend_cpu_s"] + obj["client_cpu_s"]) * 1e6 / obj["requests"]
    line = json.dumps(obj)
    with open(args.out, "a") as f:
        f.write(line + "\n")
    print(line)


def main() -> int:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("cpu", "rss"):
        s = sub.add_parser(name)
        s.add_argument("pid", type=int)
    s = sub.add_parser("portfree")
    s.add_argument("port", type=int)

    def rec(s):
        s.add_argument("--out", required=True)
        s.add_argument("--proxy", required=True)
        s.add_argument("--test", required=True)
        s.add_argument("--set", action="append")

    s = sub.add_parser("run")
    s.add_argument("--stdout", required=True)
    s.add_argument("--meas", required=True)
    s.add_argument("--proxy-pid", type=int, required=True)
    s.add_argument("--backend-pid", type=int, required=True)
    s.add_argument("command", nargs=argparse.REMAINDER)
    s = sub.add_parser("wrk")
    s.add_argument("file")
    s.add_argument("--meas")
    rec(s)
    s = sub.add_parser("h2load")
    s.add_argument("file")
    s.add_argument("--log")
    s.add_argument("--meas")
    rec(s)
    s = sub.add_parser("record")
    rec(s)
    s = sub.add_parser("idle")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--authority", required=True)
    s.add_argument("-n", type=int, default=5000)
    s.add_argument("--concurrency", type=int, default=64)
    s.add_argument("--pid", type=int, required=True)
    s.add_argument("--settle", type=float, default=2.0)
    rec(s)
    s = sub.add_parser("report")
    s.add_argument("results")
    s.add_argument("meta")
    s.add_argument("--load-end")
    a = ap.parse_args()

    if a.cmd == "cpu":
        print(f"{cpu_seconds(a.pid):.2f}")
    elif a.cmd == "rss":
        print(rss_kb(a.pid))
    elif a.cmd == "portfree":
        with socket.socket() as s:
            # As the servers do: TIME_WAIT leftovers from an earlier run do not count.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", a.port))
            except OSError:
                return 1
    elif a.cmd == "run":
        cmd = a.command[1:] if a.command and a.command[0] == "--" else a.command
        rc, meas = run_measured(cmd, a.stdout, a.proxy_pid, a.backend_pid)
        with open(a.meas, "w") as f:
            json.dump(meas, f)
        return rc
    elif a.cmd in ("wrk", "h2load"):
        with open(a.file) as f:
            text = f.read()
        r = parse_wrk(text) if a.cmd == "wrk" else parse_h2load(text, a.log)
        if a.meas:
            with open(a.meas) as f:
                r.update(json.load(f))
        _append(a, r)
    elif a.cmd == "record":
        _append(a, {})
    elif a.cmd == "idle":
        r = asyncio.run(_idle(a.host, a.port, a.authority, a.n, a.concurrency, a.pid, a.settle))
        _append(a, r)
    elif a.cmd == "report":
        sys.stdout.write(report(a.results, a.meta, a.load_end))
    return 0


if __name__ == "__main__":
    sys.exit(main())
