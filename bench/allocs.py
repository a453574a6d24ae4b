#!/usr/bin/env python3
"""Heap allocations per request from a DHAT profile (`ALLOCS=1 bench/instructions.sh`).

    bench/allocs.py DHAT_OUT REQUESTS

Prints the allocations per request and, for every allocation site made at least once per two
requests, how often, how large, and the first frames of its stack outside the standard
library. Sites made less often (startup, reloads, the first requests) are left out of the
per-request total. Standard library only.
"""

from __future__ import annotations

import json
import re
import sys

# Frames that only say "an allocation": the allocator, the standard library's collections.
SKIP = re.compile(r"library/(std|alloc|core)/|vgpreload|^\s*malloc|^\s*calloc|^\s*realloc")


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    with open(sys.argv[1]) as f:
        d = json.load(f)
    n = float(sys.argv[2])
    ftbl = d["ftbl"]
    sites = [p for p in d["pps"] if p["tbk"] >= n / 2]
    sites.sort(key=lambda p: (-p["tbk"], -p["tb"]))
    per_req = sum(p["tbk"] for p in sites) / n
    bytes_req = sum(p["tb"] for p in sites) / n
    print(f"| binary's heap, per request | allocations | bytes |\n|---|---|---|")
    print(f"| sites made at least every other request | {per_req:.2f} | {bytes_req:,.0f} |")
    if per_req < 1:
        print("(under one: was the binary built with mimalloc? DHAT needs --no-default-features)")
        return 1
    print("\n| per request | bytes each | where (innermost first) |\n|---|---|---|")
    for p in sites:
        frames = [re.sub(r"^0x[0-9A-Fa-f]+: ", "", ftbl[i]) for i in p["fs"]]
        own = [f for f in frames if not SKIP.search(f)][:3]
        where = " ← ".join(re.sub(r"\s+", " ", f)[:110] for f in own)
        print(f"| {p['tbk'] / n:.2f} | {p['tb'] / p['tbk']:,.0f} | {where} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
