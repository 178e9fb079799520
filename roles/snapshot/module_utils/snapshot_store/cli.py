"""The store's command line, for the benchmark and for debugging on a host:
    python3 -m snapshot_store STORE snapshot ROOT... [--label L]
    python3 -m snapshot_store STORE list | check [--deep] | prune | restore ID DEST | rollback ID [--path P] [--keep P]
(or `python3 .../module_utils/snapshot_store STORE ...`). Output is JSON; an error is one line on stderr.
"""

from __future__ import annotations

import json
import sys

from .format import SnapshotError
from .repository import Store


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="snapshot_store", description="The sdenv snapshot store.")
    ap.add_argument("store")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("snapshot")
    s.add_argument("roots", nargs="+")
    s.add_argument("--label", default="")
    s.add_argument("--kind", default="manual")
    sub.add_parser("list")
    c = sub.add_parser("check")
    c.add_argument("--deep", action="store_true")
    p = sub.add_parser("prune")
    p.add_argument("--keep-last", type=int)
    r = sub.add_parser("restore")
    r.add_argument("id")
    r.add_argument("dest")
    r.add_argument("--threads", type=int, default=None)
    b = sub.add_parser("rollback")
    b.add_argument("id")
    b.add_argument("--path", action="append")
    b.add_argument("--keep", action="append", help="an absolute path of user data left as it is")
    a = ap.parse_args(argv)
    st = Store(a.store)
    try:
        if a.cmd == "snapshot":
            out = st.snapshot(a.roots, label=a.label, kind=a.kind)
            out = {"id": out["id"], "stats": out["manifest"]["stats"], "warnings": out["warnings"]}
        elif a.cmd == "list":
            out = st.list()
        elif a.cmd == "check":
            out = st.check(a.deep)
        elif a.cmd == "prune":
            out = st.prune({"keep_last": a.keep_last} if a.keep_last is not None else None)
        elif a.cmd == "restore":
            out = st.restore(a.id, a.dest, threads=a.threads)
        else:
            out = st.rollback(a.id, a.path, keep=a.keep)
    except SnapshotError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(out, indent=1, default=str))
    return 0 if not (a.cmd == "check" and not out["ok"]) else 1
