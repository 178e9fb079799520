"""`make bench`: run every tests/bench/bench_*.py module's main(), or only those named on the command line.

Benchmarks measure the toolkit against named peers in the same run and print ratios; they are never part
of `make test` (the machine is shared and noisy, so a timed assertion would be a flaky test).
"""

import importlib
import pkgutil
import sys
import time
from pathlib import Path


def main(argv):
    here = Path(__file__).parent
    names = sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))
    wanted = [n if n.startswith("bench_") else f"bench_{n}" for n in argv] or names
    unknown = sorted(set(wanted) - set(names))
    if unknown:
        print(f"No benchmark named {', '.join(unknown)}; there are: {', '.join(names) or 'none'}.")
        return 2
    failures = 0
    for name in wanted:
        print(f"\n=== {name} ===", flush=True)
        started = time.monotonic()
        status = importlib.import_module(f"tests.bench.{name}").main()
        failures += 1 if status else 0
        print(f"=== {name}: {time.monotonic() - started:.0f} s ===", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
