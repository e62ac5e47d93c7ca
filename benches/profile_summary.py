"""Where the CPU went, from a whole-machine `perf record` (benches/compare.sh
with BENCH_PROFILE=1): the share of each process kind, then the server's own
time by crate (the first segment of each Rust symbol, the kernel and libc
apart) and its hottest symbols.

Usage: profile_summary.py PERF_DATA SERVER_PID PRODUCTS
"""

import collections
import re
import subprocess
import sys


def report(data, *args):
    out = subprocess.run(
        ["perf", "report", "-i", data, "--stdio", "--no-children", "-q", *args],
        check=True, capture_output=True, text=True,
    ).stdout
    rows = []
    for line in out.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(.*)$", line)
        if m:
            rows.append((float(m.group(1)), m.group(2).strip()))
    return rows


def crate_of(dso, symbol):
    if symbol.startswith("[k]"):
        return "kernel"
    if "libc" in dso:
        return "libc"
    name = symbol.removeprefix("[.] ").strip()
    name = re.sub(r"^<", "", name)
    name = re.sub(r"^(impl )?", "", name)
    head = re.split(r"::|<| as ", name, maxsplit=1)[0].strip("&* ")
    return head or dso


def main():
    data, pid, products = sys.argv[1], sys.argv[2], sys.argv[3]
    by_process = collections.Counter()
    for share, rest in report(data, "--sort", "pid"):
        m = re.match(r"(\d+):(.*)", rest)
        if m:
            who = "stockroom (server)" if m.group(1) == pid else m.group(2).strip()
            by_process[re.sub(r"\d+$", "", who).strip()] += share
    print(f"# Where the CPU went: productBySku, {int(products):,} products, whole machine")
    print()
    print("| process | share of all samples |")
    print("|---|---|")
    for who, share in by_process.most_common(8):
        print(f"| {who} | {share:.1f} % |")

    rows = report(data, "--pid", pid, "--sort", "dso,sym")
    total = sum(share for share, _ in rows) or 1.0
    crates = collections.Counter()
    symbols = []
    for share, rest in rows:
        dso, _, symbol = rest.partition(" ")
        crates[crate_of(dso, symbol.strip())] += share
        symbols.append((share, symbol.strip()))
    print()
    print("| the server's time, by crate | share |")
    print("|---|---|")
    for crate, share in crates.most_common(16):
        print(f"| {crate} | {100 * share / total:.1f} % |")
    print()
    print("| the server's hottest symbols | share |")
    print("|---|---|")
    for share, symbol in sorted(symbols, reverse=True)[:25]:
        print(f"| `{symbol[:110]}` | {100 * share / total:.1f} % |")


main()
