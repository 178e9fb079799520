"""Restore: one snapshot's roots into a directory that does not exist yet (the benchmark, checks, a lost root).

Invariants kept here:
- The destination appears only complete: everything is written under a staging name next to it, made
  durable (syncfs), then renamed to the destination.
- Files are created with O_EXCL and never through a symlink; directory metadata is set last, deepest first,
  since creating entries changes a directory's mtime.
"""

from __future__ import annotations

import contextlib
import os

from .fileio import DIR_FLAGS, executor, set_meta_fd, syncfs, xattrs_set
from .format import SnapshotError, parse_line, token


def restore(store, ref: str, dest: str, threads: int = 2, sync: bool = True) -> dict:
    """The restore operation (Store.restore): DEST/<root path without its leading '/'> for each root."""
    store.require()
    with store.locked(False):
        m = store.load_manifest(store.resolve(ref))
        if os.path.lexists(dest):
            raise SnapshotError(
                f"The restore destination {dest} exists: give a path that does not exist yet."
            )
        staging = dest + ".sdenv-restore-" + token(4)
        os.makedirs(staging, mode=0o700)
        total = 0
        for r in m["roots"]:
            if not r.get("present"):
                continue
            rel = r["path"].lstrip("/")
            parent = os.path.join(staging, os.path.dirname(rel))
            os.makedirs(parent, exist_ok=True)
            total += _restore_fresh(store, store.read_tree(r["tree"]), os.path.join(staging, rel), threads)
        if sync:
            fd = os.open(staging, os.O_RDONLY)
            try:
                syncfs(fd)
            finally:
                os.close(fd)
        os.rename(staging, dest)
        return {"changed": True, "id": m["id"], "files": total, "dest": dest}


def _restore_fresh(store, lines: list, dest: str, threads: int) -> int:
    entries = [parse_line(ln) for ln in lines]
    is_root = os.geteuid() == 0
    warnings: list = []
    first = entries[0]
    if first[1] != "d":
        _restore_leaf(store, first, os.path.dirname(dest), os.path.basename(dest), {}, is_root, warnings)
        return 1
    os.mkdir(dest, 0o700)
    groups: dict = {}
    dirs = []
    for e in entries:
        p = e[0]
        if e[1] == "d":
            if p != ".":
                os.mkdir(os.path.join(dest, p), 0o700)
            dirs.append(e)
        else:
            d, _, name = p.rpartition("/")
            groups.setdefault(d, []).append((name, e))
    # File creation is almost all kernel time: two threads on separate directories overlap it.
    work = sorted(groups.items(), key=lambda g: -len(g[1]))
    shares = [work[i::threads] for i in range(max(1, threads))]

    def worker(share):
        pack_fds: dict = {}
        try:
            for d, items in share:
                dfd = os.open(os.path.join(dest, d) if d else dest, DIR_FLAGS)
                try:
                    for name, e in items:
                        _restore_leaf(store, e, None, name, pack_fds, is_root, warnings, dfd)
                finally:
                    os.close(dfd)
        finally:
            for fd in pack_fds.values():
                os.close(fd)

    store.load_index()
    with executor(max(1, threads), "restore") as pool:
        for fut in [pool.submit(worker, s) for s in shares]:
            fut.result()
    for e in reversed(dirs):
        path = dest if e[0] == "." else os.path.join(dest, e[0])
        fd = os.open(path, DIR_FLAGS)
        try:
            if is_root:
                os.fchown(fd, e[3], e[4])
            os.fchmod(fd, e[2])
            if e[10]:
                xattrs_set(fd, e[10], True, warnings)
            os.utime(fd, ns=(e[6], e[6]))
        finally:
            os.close(fd)
    return len(entries)


def _restore_leaf(store, e, parent, name, pack_fds, is_root, warnings, dfd=None) -> None:
    own_fd = dfd is None
    if own_fd:
        dfd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if e[1] == "l":
            os.symlink(e[9], name, dir_fd=dfd)
            if is_root:
                os.chown(name, e[3], e[4], dir_fd=dfd, follow_symlinks=False)
            with contextlib.suppress(NotImplementedError, OSError):
                os.utime(name, ns=(e[6], e[6]), dir_fd=dfd, follow_symlinks=False)
            return
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dfd)
        try:
            store.copy_blob_to(e[9], e[5], fd, pack_fds)
            set_meta_fd(fd, e, warnings, is_root)
        finally:
            os.close(fd)
    finally:
        if own_fd:
            os.close(dfd)
