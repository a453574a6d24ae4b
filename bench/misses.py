#!/usr/bin/env python3
"""Where a callgrind event happens, by inlined source position.

    CACHE_SIM=1 CALLGRIND_ARGS=--dump-instr=yes bench/instructions.sh BINARY
    bench/misses.py DUMP BINARY [EVENT] [TOP] [DEPTH] [REQUESTS]

A release build inlines nearly everything into the task's poll, so callgrind's per-function
view names one function; with `--dump-instr=yes` the dump has costs per instruction address,
and `addr2line -i` gives each address its chain of inlined frames. This sums EVENT (default
D1mr; any of the dump's events: Ir, D1mw, Bcm...) per address of BINARY, groups the addresses
by their innermost DEPTH frames (default 3) and prints the TOP (default 30) groups per request
(REQUESTS, default 20,000 as instructions.sh runs). Costs inside other objects (libc's memcpy)
are printed per object: find their callers with the call lines of the dump.
"""
import collections
import re
import subprocess
import sys


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    path, binary = sys.argv[1:3]
    event = sys.argv[3] if len(sys.argv) > 3 else "D1mr"
    top = int(sys.argv[4]) if len(sys.argv) > 4 else 30
    depth = int(sys.argv[5]) if len(sys.argv) > 5 else 3
    requests = int(sys.argv[6]) if len(sys.argv) > 6 else 20000
    objs, last, npos, idx, obj, skip = {}, [0, 0], 2, None, None, False
    cost = collections.Counter()

    def name(v):
        m = re.match(r"\((\d+)\)(?: (.*))?", v)
        if not m:
            return v
        if m.group(2) is not None:
            objs[m.group(1)] = m.group(2)
        return objs.get(m.group(1), "?")

    for line in open(path):
        line = line.rstrip("\n")
        if line.startswith("positions:"):
            npos = len(line.split()) - 1
            if "instr" not in line:
                sys.exit("no instruction addresses in the dump: run with CALLGRIND_ARGS=--dump-instr=yes")
        elif line.startswith("events:"):
            idx = line.split()[1:].index(event)
        elif line.startswith("ob="):
            obj = name(line[3:])
        elif line.startswith("cob="):
            name(line[4:])
        elif line.startswith("calls="):
            # The next line is the call's inclusive cost: not this address's own.
            skip = True
        elif line and (line[0].isdigit() or line[0] in "+-*"):
            parts = line.split()
            for i in range(npos):
                t, base = parts[i], 16 if i == 0 else 10
                if t.startswith("+"):
                    last[i] += int(t[1:], base)
                elif t.startswith("-"):
                    last[i] -= int(t[1:], base)
                elif t != "*":
                    last[i] = int(t, 0) if i == 0 else int(t)
            if skip:
                skip = False
                continue
            c = parts[npos:]
            if idx < len(c) and int(c[idx]):
                cost[(obj, last[0])] += int(c[idx])
    own = binary.split("/")[-1]
    mine = {a: v for (o, a), v in cost.items() if o and o.endswith(own)}
    other = collections.Counter()
    for (o, _), v in cost.items():
        if not (o and o.endswith(own)):
            other[o] += v
    print(f"{event} per request: {sum(cost.values()) / requests:.1f}, in {own}: {sum(mine.values()) / requests:.1f}")
    for o, v in other.most_common(5):
        print(f"  in {o}: {v / requests:.1f}")
    out = subprocess.run(
        ["addr2line", "-i", "-f", "-C", "-a", "-e", binary] + [hex(a) for a in mine],
        capture_output=True, text=True, check=True,
    ).stdout.split("\n")
    chains, cur, frames, i = {}, None, [], 0
    while i < len(out):
        if out[i].startswith("0x"):
            if cur is not None:
                chains[cur] = frames
            cur, frames, i = int(out[i], 16), [], i + 1
            continue
        if i + 1 < len(out):
            fn = re.sub(r"<.*", "<>", out[i])[:70]
            frames.append(f"{fn} @{'/'.join(out[i + 1].split('/')[-2:])}")
        i += 2
    if cur is not None:
        chains[cur] = frames
    groups = collections.Counter()
    for a, v in mine.items():
        groups[tuple(chains.get(a, ["?"])[:depth])] += v
    for chain, v in groups.most_common(top):
        print(f"{v / requests:7.2f}")
        for f in chain:
            print(f"        {f}")


if __name__ == "__main__":
    main()
