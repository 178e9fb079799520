"""Rollback: bring live roots (or PATHS= inside them) back to a snapshot, touching only what differs.

Invariants kept here:
- A before-rollback snapshot is taken first (under the same exclusive lock), so every rollback can be undone.
- Every live path holds either its old or its new version: a file or symlink is written to
  `.sdenv-rb.<token>.N.tmp` next to it, made durable, then renamed over its name; the temp names are
  journaled (journal/<token>.json) before the first is created, and the next operation removes them.
- Never through a symlink: directories are opened component by component with O_NOFOLLOW (_Tree); a path
  beyond a symlink is refused, and a symlink where the snapshot has a directory is replaced, not followed.
- Only paths inside the target's roots are touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat

from .fileio import (
    DIR_FLAGS,
    fsync_dir,
    remove_temp_files,
    rmtree,
    rmtree_at,
    set_meta_fd,
    syncfs,
    xattrs_get,
    xattrs_set,
)
from .format import TMP_PREFIX, SnapshotError, comparable, esc, parse_line, token


def rollback(store, ref, only_paths=None, dry_run=False, facts=None, before_snapshot=True) -> dict:
    """The rollback operation (Store.rollback)."""
    from .snapshotter import Snapshotter

    store.require()
    if dry_run:
        with store.locked(False):
            target = store.load_manifest(store.resolve(ref))
            selection = _selection(target, only_paths)
            live = Snapshotter(store, [r["path"] for r in target["roots"]], dry_run=True)
            live.run()
            plan = _plan(store, target, live.listings, selection)
            return {
                "changed": plan["count"] > 0,
                "dry_run": True,
                "target": target["id"],
                "plan": plan["summary"],
            }
    with store.locked(True):
        notes = store.recover()
        target = store.load_manifest(store.resolve(ref))
        selection = _selection(target, only_paths)
        roots = [r["path"] for r in target["roots"]]
        before = None
        current: dict = {}
        if before_snapshot:
            b = store.snapshot(
                roots,
                label="before-rollback",
                kind="before-rollback",
                facts=facts,
                _locked=True,
                _listings=current,
            )
            before = b["manifest"]
        else:
            live = Snapshotter(store, roots, dry_run=True)
            live.run()
            current = live.listings
        plan = _plan(store, target, current, selection)
        result = _apply(store, target, plan, before["id"] if before else None)
        result.update(
            changed=plan["count"] > 0,
            target=target["id"],
            before=before["id"] if before else None,
            plan=plan["summary"],
            warnings=notes + store.warnings + result.get("warnings", []),
        )
        return result


def recover_rollback(journal: str) -> str:
    """Remove the temp files an interrupted rollback left in live trees, then its journal; one sentence."""
    try:
        with open(journal, "rb") as f:
            j = json.loads(f.read())
    except (OSError, ValueError):
        j = {}
    tok = j.get("token", "")
    removed = 0
    for root in j.get("roots", []):
        removed += remove_temp_files(root, TMP_PREFIX + tok + ".") if tok else 0
        staging = j.get("staging", {}).get(root)
        if staging and os.path.lexists(staging):
            rmtree(staging)
    os.unlink(journal)
    return (
        f"A rollback to {j.get('target', '?')} was interrupted: {removed} temp files removed; the tree mixes "
        f"old and new files (each complete): run the rollback again, or roll back to {j.get('before', '?')}."
    )


def _selection(target: dict, only_paths: list[str] | None) -> dict:
    """root -> list of relative prefixes to restore (None = the whole root); refuses paths outside the roots."""
    roots = [r["path"] for r in target["roots"]]
    if not only_paths:
        return {r: None for r in roots}
    sel: dict = {}
    for p in only_paths:
        if not isinstance(p, str) or not p.startswith("/"):
            raise SnapshotError(f"Rollback path {p!r} is not absolute: give absolute paths in PATHS.")
        n = os.path.normpath(p)
        root = next((r for r in roots if n == r or n.startswith(r + "/")), None)
        if root is None:
            raise SnapshotError(
                f"Rollback path {p} is outside the snapshot's roots ({', '.join(roots)}): give a path inside one."
            )
        rel = "." if n == root else n[len(root) + 1 :]
        if sel.get(root, []) is None or rel == ".":
            sel[root] = None
        else:
            sel.setdefault(root, []).append(rel)
    return sel


def _in_selection(p: str, prefixes) -> bool:
    if prefixes is None:
        return True
    return any(p == q or p.startswith(q + "/") for q in prefixes)


def _ancestors(rel: str) -> list[str]:
    out = ["."]
    parts = rel.split("/")
    for i in range(1, len(parts)):
        out.append("/".join(parts[:i]))
    return out


def _parent(rel: str) -> str:
    return rel.rsplit("/", 1)[0] if "/" in rel else "."


def _plan(store, target: dict, current: dict, selection: dict) -> dict:
    """What a rollback does to each root: `current` holds each root's listing lines as they are now."""
    roots = []
    count = 0
    summary = {}
    for r in target["roots"]:
        root = r["path"]
        if root not in selection:
            continue
        prefixes = selection[root]
        want_lines = store.read_tree(r["tree"]) if r.get("present") and r.get("tree") else []
        have_lines = current.get(root, [])
        if prefixes is None:
            # A whole root: a path whose line is the same in both listings needs nothing, so only the lines
            # that differ are parsed (~1% of a tree after a day's work, instead of all of them twice). A path
            # then sits in both maps (changed), in `have` only (to remove) or in `want` only (to create).
            have_set, want_set = set(have_lines), set(want_lines)
            want = {t[0]: t for t in map(parse_line, (ln for ln in want_lines if ln not in have_set))}
            have = {t[0]: t for t in map(parse_line, (ln for ln in have_lines if ln not in want_set))}
        else:
            want = {t[0]: t for t in map(parse_line, want_lines)}
            have = {t[0]: t for t in map(parse_line, have_lines)}
        if prefixes is not None:
            for q in prefixes:
                if q not in want:
                    # A path the snapshot does not have: restoring it means removing it, unless a
                    # symlink of the live tree is in the way, which is never followed.
                    for a in _ancestors(q)[1:]:
                        if want.get(a, ("", ""))[1] == "l" or have.get(a, ("", ""))[1] == "l":
                            raise SnapshotError(
                                f"Rollback path {root}/{q} lies beyond the symlink {root}/{a}: give the symlink "
                                "itself or a path inside a real directory."
                            )
        ensure = set()
        if prefixes is not None:
            for q in prefixes:
                ensure.update(a for a in _ancestors(q) if a in want and a != q)
        removals = [
            p for p, c in have.items() if _in_selection(p, prefixes) and (p not in want or want[p][1] != c[1])
        ]
        removals.sort(key=lambda p: (-1 if p == "." else p.count("/"), p), reverse=True)
        removed = set(removals)
        ops = []
        for p, t in want.items():
            if not (_in_selection(p, prefixes) or p in ensure):
                continue
            c = None if p in removed else have.get(p)
            typ = t[1]
            if c is None:
                ops.append(({"d": "mkdir", "f": "write", "l": "link"}[typ], p, t))
            elif p in ensure and not _in_selection(p, prefixes):
                continue
            elif typ == "f" and (c[9] != t[9] or c[5] != t[5]):
                ops.append(("write", p, t))
            elif typ == "l" and c[9] != t[9]:
                ops.append(("link", p, t))
            elif comparable(c) != comparable(t):
                ops.append(("meta", p, t))
        if prefixes is None:
            # Directory metadata is set again where the rollback changes the directory (its own line or
            # its entries); every other directory's line is the same as the target's.
            touched = {esc(_parent(p)) for p in removals} | {esc(_parent(p)) for _, p, _ in ops}
            touched |= {esc(p) for p, t in want.items() if t[1] == "d"}
            dirs = [parse_line(ln) for ln in want_lines if ln[: ln.index("\t")] in touched]
            dirs = [t for t in dirs if t[1] == "d"]
        else:
            dirs = [t for p, t in want.items() if t[1] == "d" and (_in_selection(p, prefixes) or p in ensure)]
        roots.append({"root": root, "have": have, "removals": removals, "ops": ops, "dirs": dirs})
        kinds: dict = {"remove": len(removals)}
        for op, _, _ in ops:
            kinds[op] = kinds.get(op, 0) + 1
        kinds["examples"] = [f"remove {p}" for p in removals[:5]] + [f"{op} {p}" for op, p, _ in ops[:10]]
        summary[root] = kinds
        count += len(removals) + len(ops)
    return {"roots": roots, "count": count, "summary": summary}


class _Tree:
    """Directory fds of one live root, opened component by component with O_NOFOLLOW (never through a link)."""

    def __init__(self, root: str):
        self.root = root
        self.parent, self.base = os.path.split(root)
        self.pfd = os.open(self.parent, os.O_RDONLY | os.O_DIRECTORY)
        self.fds: dict = {}

    def loc(self, rel: str) -> tuple[str, str]:
        if rel == ".":
            return "", self.base
        d, _, name = rel.rpartition("/")
        return (self.base + "/" + d if d else self.base), name

    def dirfd(self, drel: str) -> int:
        if drel == "":
            return self.pfd
        fd = self.fds.get(drel)
        if fd is not None:
            return fd
        up, _, name = drel.rpartition("/")
        try:
            fd = os.open(name, DIR_FLAGS, dir_fd=self.dirfd(up))
        except OSError as e:
            raise SnapshotError(
                f"{os.path.join(self.parent, drel)} is not a real directory any more ({e.strerror}): something "
                "changed the tree during the rollback; stop it and run the rollback again."
            ) from None
        if len(self.fds) > 200:
            self.forget("")
        self.fds[drel] = fd
        return fd

    def forget(self, drel: str) -> None:
        for k in [k for k in self.fds if k == drel or k.startswith(drel + "/") or drel == ""]:
            os.close(self.fds.pop(k))

    def close(self) -> None:
        self.forget("")
        os.close(self.pfd)


def _apply(store, target: dict, plan: dict, before_id: str | None) -> dict:
    tok = token(6)
    is_root = os.geteuid() == 0
    warnings: list[str] = []
    journal = os.path.join(store.path, "journal", tok + ".json")
    roots = [r["root"] for r in plan["roots"]]
    store.atomic_write(
        journal,
        json.dumps({"token": tok, "target": target["id"], "before": before_id, "roots": roots}).encode(),
        mode=0o600,
    )
    stats = {"removed": 0, "written": 0, "bytes_written": 0, "linked": 0, "metadata": 0}
    pack_fds: dict = {}
    counter = [0]

    def tmpname() -> str:
        counter[0] += 1
        return f"{TMP_PREFIX}{tok}.{counter[0]}.tmp"

    try:
        for rp in plan["roots"]:
            if not rp["removals"] and not rp["ops"]:
                continue
            tree = _Tree(rp["root"])
            try:
                for p in rp["removals"]:
                    drel, name = tree.loc(p)
                    dfd = tree.dirfd(drel)
                    if rp["have"][p][1] == "d":
                        tree.forget(drel + "/" + name if drel else name)
                        rmtree_at(dfd, name)
                    else:
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(name, dir_fd=dfd)
                    stats["removed"] += 1
                pending = []  # (drel, tmp, name): complete temp files waiting for their rename
                batch_bytes = 0
                for op, p, t in rp["ops"]:
                    drel, name = tree.loc(p)
                    dfd = tree.dirfd(drel)
                    if op == "mkdir":
                        os.mkdir(name, 0o700, dir_fd=dfd)
                    elif op == "write":
                        tmp = tmpname()
                        fd = os.open(
                            tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dfd
                        )
                        try:
                            store.copy_blob_to(t[9], t[5], fd, pack_fds)
                            set_meta_fd(fd, t, warnings, is_root)
                        finally:
                            os.close(fd)
                        pending.append((drel, tmp, name))
                        stats["written"] += 1
                        stats["bytes_written"] += t[5]
                        batch_bytes += t[5]
                    elif op == "link":
                        tmp = tmpname()
                        os.symlink(t[9], tmp, dir_fd=dfd)
                        if is_root:
                            os.chown(tmp, t[3], t[4], dir_fd=dfd, follow_symlinks=False)
                        with contextlib.suppress(NotImplementedError, OSError):
                            os.utime(tmp, ns=(t[6], t[6]), dir_fd=dfd, follow_symlinks=False)
                        pending.append((drel, tmp, name))
                        stats["linked"] += 1
                    elif op == "meta":
                        stats["metadata"] += 1
                        if t[1] == "l":
                            if is_root:
                                os.chown(name, t[3], t[4], dir_fd=dfd, follow_symlinks=False)
                            with contextlib.suppress(NotImplementedError, OSError):
                                os.utime(name, ns=(t[6], t[6]), dir_fd=dfd, follow_symlinks=False)
                        elif t[1] == "f":
                            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dfd)
                            try:
                                set_meta_fd(fd, t, warnings, is_root)
                            finally:
                                os.close(fd)
                        # directories: the final pass below sets their metadata
                    if len(pending) >= 4096 or batch_bytes >= 1 << 30:
                        _commit(tree, pending)
                        pending, batch_bytes = [], 0
                _commit(tree, pending)
                # Directory metadata last, deepest first: creating entries above changed their mtimes.
                for t in reversed(rp["dirs"]):
                    drel, name = tree.loc(t[0])
                    fd = os.open(name, DIR_FLAGS, dir_fd=tree.dirfd(drel))
                    try:
                        st = os.fstat(fd)
                        if is_root and (st.st_uid, st.st_gid) != (t[3], t[4]):
                            os.fchown(fd, t[3], t[4])
                        if stat.S_IMODE(st.st_mode) != t[2]:
                            os.fchmod(fd, t[2])
                        if xattrs_get(None, fd=fd) != t[10]:
                            xattrs_set(fd, t[10], True, warnings)
                        if st.st_mtime_ns != t[6]:
                            os.utime(fd, ns=(t[6], t[6]))
                    finally:
                        os.close(fd)
                syncfs(tree.pfd)
            finally:
                tree.close()
    except OSError as e:
        raise SnapshotError(
            f"The rollback to {target['id']} stopped at an error ({e}); every file is complete (old or new): "
            f"fix the cause and run it again, or roll back to {before_id}."
        ) from None
    finally:
        for fd in pack_fds.values():
            os.close(fd)
    os.unlink(journal)
    fsync_dir(os.path.dirname(journal))
    return {"stats": stats, "warnings": warnings}


def _commit(tree: _Tree, pending: list) -> None:
    """Make a batch of complete temp files durable with one syncfs, then rename each over its final name."""
    if not pending:
        return
    syncfs(tree.pfd)
    for drel, tmp, name in pending:
        dfd = tree.dirfd(drel)
        os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
