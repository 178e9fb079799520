"""Interrupted runs: what a killed run left is found without a mark and sweep, and the next run removes it.

A run that writes to the store (a snapshot, prune, a rollback's record of what it wrote) journals every
store file before creating it, in journal/<token>.files, one line each, PATH relative to the store:
    +PATH   created by this run: removed on recovery unless the run committed
    =PATH   the run commits when this file exists (a snapshot's manifest)
    !       the run committed (prune: its new index is durable; a rollback: its stat cache names its tree)
    -PATH   to delete in any case (prune: a forgotten manifest, then what only forgotten snapshots reached)
    ~PATH   to delete once committed (prune: the old index files, then the packs they alone named)
The journal goes when the run completes. Lines are appended without fsync: kill -9 loses nothing written,
and after a power loss the lines not yet on disk leave garbage that only prune's mark and sweep finds.

Invariants kept here (recover, run at the start of every exclusive operation, before anything else):
- tmp/ is emptied: only the exclusive lock holder writes there, so whatever is in it belongs to a run that
  is gone (the 1 GiB copies of a killed snapshot's large files included).
- A journaled run is settled exactly as its lines say; then a stat-cache file naming a tree that is no longer
  there is dropped, so no snapshot ever reuses a tree that does not exist.
- An interrupted rollback's temp files in the live trees are removed (rollback.recover_rollback).
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading

from .fileio import rmtree, write_all
from .format import token


class RunJournal:
    """The journal of one writing run; created with its first line, so a run that creates nothing has none."""

    def __init__(self, store, kind: str):
        self.store = store
        self.kind = kind
        self.path = None
        self.fd = None
        self._lock = threading.Lock()

    def _append(self, line: str) -> None:
        with self._lock:
            if self.fd is None:
                d = os.path.join(self.store.path, "journal")
                os.makedirs(d, mode=0o700, exist_ok=True)
                self.path = os.path.join(d, f"{token(6)}.files")
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
                self.fd = os.open(self.path, flags, 0o600)
                write_all(self.fd, f"# {self.kind}, pid {os.getpid()}\n".encode())
            write_all(self.fd, line.encode())

    def _rel(self, path: str) -> str:
        return os.path.relpath(path, self.store.path)

    def created(self, path: str) -> None:
        self._append(f"+{self._rel(path)}\n")

    def commits_with(self, path: str) -> None:
        self._append(f"={self._rel(path)}\n")

    def committed(self) -> None:
        if self.fd is not None:  # nothing created: nothing to keep
            self._append("!\n")

    def delete(self, path: str, once_committed: bool = False) -> None:
        self._append(f"{'~' if once_committed else '-'}{self._rel(path)}\n")

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


def remove(path: str) -> int:
    """Remove a file (or a directory tree) if it is there; its size in bytes."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return 0
    if stat.S_ISDIR(st.st_mode):
        rmtree(path)
    else:
        os.unlink(path)
    return st.st_size


def settle(store, path: str) -> dict:
    """Finish or undo one run's journal as its lines say, then remove the journal."""
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        lines = [ln.rstrip("\n") for ln in f if ln.strip() and not ln.startswith("#")]
    committed = "!" in lines or any(
        os.path.exists(os.path.join(store.path, ln[1:])) for ln in lines if ln.startswith("=")
    )
    out = {"committed": committed, "files": 0, "bytes": 0}
    for ln in lines:
        op, rel = ln[:1], ln[1:]
        if op == "-" or (op == "~" and committed) or (op == "+" and not committed):
            target = os.path.normpath(os.path.join(store.path, rel))
            if not target.startswith(store.path + os.sep):
                continue  # a journal only ever names files inside the store
            size = remove(target) if os.path.lexists(target) else -1
            if size >= 0:
                out["files"] += 1
                out["bytes"] += size
    os.unlink(path)
    return out


def recover(store) -> list[str]:
    notes = []
    if os.path.isdir(store.tmpdir):
        names = os.listdir(store.tmpdir)
        freed = sum(remove(os.path.join(store.tmpdir, n)) for n in names)
        if names:
            notes.append(
                f"An interrupted run left {len(names)} temp file(s) ({freed / 1e6:.1f} MB) in {store.tmpdir}: "
                "removed."
            )
    d = os.path.join(store.path, "journal")
    names = sorted(os.listdir(d)) if os.path.isdir(d) else []
    settled = False
    for name in (n for n in names if n.endswith(".files")):
        done = settle(store, os.path.join(d, name))
        settled = True
        if done["files"]:
            notes.append(
                f"An interrupted run left {done['files']} store file(s) ({done['bytes'] / 1e6:.1f} MB) that no "
                "snapshot uses: removed."
            )
    if settled:
        for path, cache in store.caches():
            if cache is None or not os.path.exists(store.p("trees", cache["tree"])):
                os.unlink(path)
        store._trees.clear()
        store._index = None
    rollbacks = [n for n in names if n.endswith(".json")]
    if rollbacks:
        from .rollback import recover_rollback

        notes += [recover_rollback(os.path.join(d, n)) for n in rollbacks]
    return notes
