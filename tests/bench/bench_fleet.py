"""A fleet against one host: `make bench BENCH=fleet` (as root: it makes throwaway accounts).

Each measurement provisions from a fresh fixture upstream (tests/fixtures/fixture_host.py, served on loopback)
with nothing cached anywhere, through the real `make provision`; the hosts are throwaway accounts on this
machine (tests/fixtures/fleet_cache_fixtures.py; ansible_connection=local).

Parts (each a function measure_<part>(...) -> rows, printed by main(); add a part the same way):
- bytes: bytes fetched from upstream (the fixture server's request log, file sizes of what it served) for
  N hosts (the fleet cache on: auto, N > 1) against one host (fetching for itself). Target: <= 1.05x. Also
  the bytes the controller delivered to the N hosts (their copies of the cache), and the wall-time ratio for
  reference (the hosts share this machine's cores, so no target applies to it here).
SDENV_BENCH_FLEET_HOSTS sets N (default 4).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
for path in (ROOT / "tests" / "fixtures", ROOT / "tests" / "integration"):
    sys.path.insert(0, str(path))

from fleet_cache_fixtures import fleet, request_counts, served_bytes  # noqa: E402
from sdenv_testlib import run_make  # noqa: E402

BYTES_TARGET = 1.05


def tree_bytes(directory):
    """Bytes of the regular files under directory (0 when it is not there)."""
    return sum(p.stat().st_size for p in Path(directory).rglob("*") if p.is_file() and not p.is_symlink())


def provisioned(count):
    """{upstream, requests, repeated, delivered, seconds} for one cold provision of count hosts: bytes the
    upstream served, its request count, files fetched more than once, bytes the hosts' copies of the fleet
    cache hold (what the controller delivered; 0 when the cache is off), and the make's wall time."""
    with fleet(count) as built:
        start = len(built.server.requests)  # the fixture's own venv lock resolution is not the provision's
        began = time.monotonic()
        result = run_make("provision", built.inventory())
        seconds = time.monotonic() - began
        if result.returncode != 0:
            raise RuntimeError(f"make provision of {count} hosts failed:\n{result.output[-3000:]}")
        requests = built.server.requests[start:]
        return {
            "upstream": served_bytes(built.fixture.served, requests),
            "requests": len(requests),
            "repeated": {p: n for p, n in request_counts(requests).items() if n > 1 and not p.endswith("/")},
            "delivered": sum(tree_bytes(built.host_copy(name)) for name in built.hosts),
            "seconds": seconds,
        }


def measure_bytes(hosts):
    one = provisioned(1)
    many = provisioned(hosts)
    ratio = many["upstream"] / one["upstream"] if one["upstream"] else float("inf")
    fanout = many["delivered"] / many["upstream"] if many["upstream"] else float("inf")
    return [
        ("bytes from upstream, 1 host", f"{one['upstream']:,} B in {one['requests']} requests", ""),
        (f"bytes from upstream, {hosts} hosts", f"{many['upstream']:,} B in {many['requests']} requests",
         f"{len(many['repeated'])} files fetched twice or more" if many["repeated"] else "every file once"),
        (f"bytes delivered to {hosts} hosts", f"{many['delivered']:,} B",
         f"{fanout:.2f}x what came from upstream (the controller's cache, copied to each host)"),
        (f"ratio upstream {hosts} hosts / 1 host", f"{ratio:.3f}x", f"target <= {BYTES_TARGET}x: "
         + ("met" if ratio <= BYTES_TARGET else "NOT met")),
        # For reference only: these hosts are accounts sharing this machine's cores, not separate machines.
        (f"wall time {hosts} hosts / 1 host", f"{many['seconds'] / one['seconds']:.2f}x",
         f"{many['seconds']:.0f} s vs {one['seconds']:.0f} s; local accounts on one machine, no target here"),
    ]  # fmt: skip


def main():
    if os.geteuid() != 0:
        print("bench_fleet makes throwaway accounts: run it as root (sudo make bench BENCH=fleet).")
        return 1
    hosts = int(os.environ.get("SDENV_BENCH_FLEET_HOSTS", "4"))
    rows = measure_bytes(hosts)
    width = max(len(r[0]) for r in rows)
    for name, value, note in rows:
        print(f"{name.ljust(width)}  {value}  {note}".rstrip(), flush=True)
    return 0 if all("NOT met" not in r[2] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
