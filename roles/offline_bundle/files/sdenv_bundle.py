#!/usr/bin/env python3
"""make lock-venv / make bundle / make bundle-check, on the controller.

    sdenv_bundle.py lock-venv --lock LOCK.yml [--index-url URL] [--platform KEY ...]
    sdenv_bundle.py bundle --spec SPEC.json --out DIR [--index-url URL]
    sdenv_bundle.py check --lock LOCK.yml --bundle DIR
    sdenv_bundle.py prune-cache [--cache-dir DIR] [--inventory INVENTORY]

The logic lives in the roles' module_utils (unit-tested there); this file only wires it to a command line.
Progress goes to stderr; one sentence and exit 1 on any failure.
"""

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
for path in [ROOT / "plugins" / "module_utils", *sorted(ROOT.glob("roles/*/module_utils"))]:
    sys.path.insert(0, str(path))

import bundle_build  # noqa: E402
import bundle_cache  # noqa: E402
import sdenv_run_lock  # noqa: E402
import yaml  # noqa: E402


def read_lock(path):
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)["sdenv_lock"]


def main(argv):
    parser = argparse.ArgumentParser(prog="sdenv_bundle")
    sub = parser.add_subparsers(dest="command", required=True)
    lock = sub.add_parser("lock-venv")
    lock.add_argument("--lock", required=True)
    lock.add_argument("--index-url", default="")
    lock.add_argument("--platform", action="append", default=[])
    lock.add_argument("--cache", default=os.path.expanduser("~/.cache/sdenv"))
    build = sub.add_parser("bundle")
    build.add_argument("--spec", required=True)
    build.add_argument("--out", required=True)
    build.add_argument("--index-url", default="")
    build.add_argument("--cache", default=os.path.expanduser("~/.cache/sdenv"))
    build.add_argument("--archive", action="store_true")
    check = sub.add_parser("check")
    check.add_argument("--lock", required=True)
    check.add_argument("--bundle", required=True)
    prune = sub.add_parser("prune-cache")
    prune.add_argument("--cache-dir", default="", help="FLEET_CACHE_DIR=; empty: sdenv_fleet_cache_dir")
    prune.add_argument("--inventory", default=str(ROOT / "inventory" / "localhost.yml"))
    args = parser.parse_args(argv)
    if args.command == "prune-cache":
        if args.cache_dir:
            return prune_cache(args.cache_dir, "FLEET_CACHE_DIR=")
        try:
            return prune_cache(*bundle_build.fleet_cache_dir(args.inventory, str(ROOT)))
        except bundle_build.BundleError as exc:
            print(f"sdenv: {exc}", file=sys.stderr)
            return 2
    try:
        if args.command == "lock-venv":
            lock_path = Path(args.lock)
            bundle_build.lock_venv(
                read_lock(lock_path),
                lock_path.parent / "venv-lock",
                args.cache,
                args.index_url,
                args.platform,
            )
        elif args.command == "bundle":
            bundle_build.build_bundle(args.spec, args.out, args.cache, args.index_url, args.archive)
        else:
            lock_path = Path(args.lock)
            bundle_build.check_bundle(read_lock(lock_path), lock_path.parent / "venv-lock", args.bundle)
    except bundle_build.BUNDLE_ERRORS as exc:
        print(f"sdenv: {exc}", file=sys.stderr)
        return 1
    return 0


def prune_cache(cache_dir, source):
    """make fleet-cache-prune: under the cache's lock (the one make provision holds while it uses the cache),
    or a refusal naming the run that holds it. source says where cache_dir came from."""
    if not os.path.isdir(cache_dir):
        print(f"sdenv: there is no fleet cache at {cache_dir} (from {source}): nothing to prune "
              "(FLEET_CACHE_DIR= names another one).")  # fmt: skip
        return 0
    fd, path = sdenv_run_lock.open_lock(cache_dir)
    try:
        if not sdenv_run_lock.try_flock(fd):
            holder = sdenv_run_lock.describe(sdenv_run_lock.read_record(fd))
            print(f"sdenv: {holder} is using the fleet cache {cache_dir}: run make fleet-cache-prune again "
                  "after it ends.", file=sys.stderr)  # fmt: skip
            return 1
        try:
            removed, freed = bundle_cache.prune_controller(cache_dir)
        except (OSError, bundle_cache.BundleError) as exc:
            print(f"sdenv: pruning the fleet cache {cache_dir} stopped: {exc}", file=sys.stderr)
            return 1
        finally:
            sdenv_run_lock.clear(fd, path, cache_dir, created_dir=False)
    finally:
        os.close(fd)
    for relative in removed:
        print(f"removed {relative}")
    files = f"{len(removed)} file" + ("" if len(removed) == 1 else "s")
    print(f"sdenv: pruned the fleet cache {cache_dir}: {files} no lock names any more, {freed / 1e6:.1f} MB "
          "freed.")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
