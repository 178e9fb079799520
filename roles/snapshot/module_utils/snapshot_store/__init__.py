"""Content-addressed snapshot store for the sdenv working environment (format: roles/snapshot/README.md).

Pure standard library; runs on the target host (Python >= 3.9), shipped by Ansible as
`ansible.module_utils.snapshot_store` (a package: Ansible's module_utils discovery follows the relative
imports below), imported directly as `snapshot_store` by the unit tests and the benchmark. Split by concern,
as restic splits internal/; each module's docstring states the invariants it keeps:

    format       the on-disk format: tree lines, tree files, packs, labels and ids (pure functions)
    fileio       durable writes, copies through the toolkit's pipeline, clones, xattrs, safe removal
    repository   Store: layout, locking, atomic writes, index, blobs, trees, manifests, recovery
    packs        pack files and index files
    snapshotter  the walk, the stat cache, the split walk, taking a snapshot
    restore      a snapshot into a new directory
    rollback     a live tree back to a snapshot: plan, apply, recovery of an interrupted one
    check        structure and (deep) content
    prune        retention, then mark and sweep
    cli          the command line (`python3 -m snapshot_store`)

Start-up cost matters: a no-change snapshot is a fresh process whose real work is ~50 ms of lstat, so the
operations' modules are imported when called, and modules only some operations need (concurrent.futures,
the retention policy, argparse, ctypes) are imported where they are used.
"""

from .format import LARGE, TMP_PREFIX, SnapshotError, diff_listings, parse_line, validate_label
from .repository import Store

__all__ = ["LARGE", "TMP_PREFIX", "SnapshotError", "Store", "diff_listings", "parse_line", "validate_label"]
