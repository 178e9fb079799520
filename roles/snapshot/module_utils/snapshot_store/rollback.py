"""Rollback: bring live roots (or PATHS= inside them) back to a snapshot, touching only what differs.

Invariants kept here:
- A before-rollback snapshot is taken first (under the same exclusive lock), so every rollback can be undone.
- Every live path holds either its old or its new version: a file or symlink is written to
  `.sdenv-rb.<token>.N.tmp` next to it, made durable, then renamed over its name; the temp names are
  journaled (journal/<token>.json) before the first is created, and the next operation removes them.
- Never through a symlink: directories are opened component by component with O_NOFOLLOW (restore.LiveTree); a path
  beyond a symlink is refused, and a symlink where the snapshot has a directory is replaced, not followed.
- Only paths inside the target's roots are touched.
- Afterwards the rollback records what each root holds now (_record): the lines of what it wrote carry the
  keys it stat'ed once they had settled (snapshotter.settled_ctime), the rest are the lines it compared,
  stored as a tree (a delta from the target's) that the root's stat-cache file names. The next snapshot
  then reads nothing the rollback wrote. Store files are journaled, so a kill leaves nothing to redo.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import stat
import time

from .fileio import fsync_dir, remove_temp_files, rmtree, rmtree_at, set_meta_fd, syncfs, xattrs_get
from .format import TMP_PREFIX, SnapshotError, comparable, esc, parse_line, token, unesc
from .restore import LiveTree, set_dir_meta, write_entries

# Temp files are written, synced and renamed in batches: a batch's files and large ones are written together
# (by bytes, restore.write_entries), and a batch bounds the extra disk space temp copies take at once.
BATCH_FILES = 4096
BATCH_BYTES = 4 << 30


def rollback(store, ref, only_paths=None, dry_run=False, facts=None, before_snapshot=True, keep=None) -> dict:
    """The rollback operation (Store.rollback). `keep`: absolute paths of user data (the WebUI's outputs/,
    log/) left as they are, unless only_paths names them or a path inside them."""
    from .snapshotter import Snapshotter

    store.require()
    if dry_run:
        with store.locked(False):
            target = store.load_manifest(store.resolve(ref))
            selection = _selection(target, only_paths, keep)
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
        store.upgrade()  # its record of what it wrote is a version-2 tree and stat-cache file
        target = store.load_manifest(store.resolve(ref))
        selection = _selection(target, only_paths, keep)
        roots = [r["path"] for r in target["roots"]]
        before = None
        walked: list = []
        if before_snapshot:
            b = store.snapshot(
                roots,
                label="before-rollback",
                kind="before-rollback",
                facts=facts,
                _locked=True,
                _walked=walked,
            )
            before = b["manifest"]
            current = walked[0].listings
        else:
            live = Snapshotter(store, roots, dry_run=True)
            live.run()
            current = live.listings
        try:
            plan = _plan(store, target, current, selection)
            result = _apply(store, target, plan, before["id"] if before else None)
            recorded = _record(store, target, plan, result["warnings"])
        except BaseException:
            with contextlib.suppress(OSError):
                for snap in walked:
                    snap.write_caches()
            raise
        for snap in walked:  # the before-rollback snapshot's stat cache, for the roots the record left
            snap.write_caches(skip=recorded)
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


def _selection(target: dict, only_paths: list[str] | None, keep: list[str] | None = None) -> dict:
    """root -> (relative prefixes to restore (None = the whole root), relative prefixes kept as they are);
    refuses paths outside the roots. A kept path (user data) inside a root stays kept unless only_paths names
    it or a path inside it: naming the WebUI directory does not roll back its outputs."""
    roots = [r["path"] for r in target["roots"]]
    named = [os.path.normpath(p) for p in only_paths or [] if isinstance(p, str)]
    kept: dict = {}
    for k in keep or []:
        k = os.path.normpath(k)
        root = next((r for r in roots if k.startswith(r + "/")), None)
        if root is None or any(n == k or n.startswith(k + "/") for n in named):
            continue
        kept.setdefault(root, []).append(k[len(root) + 1 :])
    out = {}
    for r, prefixes in _prefixes(roots, only_paths).items():
        # Only what the selection reaches is kept (and reported): PATHS=<webui>/venv says nothing of outputs/.
        out[r] = (prefixes, [k for k in kept.get(r, []) if prefixes is None or _in_selection(k, prefixes)])
    return out


def _prefixes(roots: list[str], only_paths: list[str] | None) -> dict:
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
        prefixes, kept = selection[root]
        want_lines = store.read_tree(r["tree"]) if r.get("present") and r.get("tree") else []
        have_lines = current.get(root, [])
        if prefixes is None:
            # A whole root: a path whose line is the same in both listings needs nothing, so only the lines
            # that differ are parsed (~1% of a tree after a day's work, instead of all of them twice). A path
            # then sits in both maps (changed), in `have` only (to remove) or in `want` only (to create).
            have_set, want_set = set(have_lines), set(want_lines)
            diff_at = [i for i, ln in enumerate(want_lines) if ln not in have_set]
            have_other = {ln[: ln.index("\t")]: ln for ln in have_lines if ln not in want_set}
            want = {t[0]: t for t in map(parse_line, (want_lines[i] for i in diff_at))}
            have = {t[0]: t for t in map(parse_line, have_other.values())}
        else:
            diff_at, have_other = [], {}
            want = {t[0]: t for t in map(parse_line, want_lines)}
            have = {t[0]: t for t in map(parse_line, have_lines)}
        kept_report = {}
        holders = set()
        if kept:
            # User data is left as it is: out of both maps, so nothing below removes, writes or re-dates it.
            kept_report = _kept_report(root, kept, want, have)
            # The live directories that hold kept data stay, whatever the snapshot has there: removing one
            # would take the user's data with it (a snapshot from before the app's tree existed, or from
            # before the user made a kept folder deeper down).
            holders = {a for k in kept if k in have for a in _ancestors(k) if have.get(a, ("", ""))[1] == "d"}
            want = {p: t for p, t in want.items() if not _in_selection(p, kept)}
            have = {p: t for p, t in have.items() if not _in_selection(p, kept)}
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
            p
            for p, c in have.items()
            if _in_selection(p, prefixes) and (p not in want or want[p][1] != c[1]) and p not in holders
        ]
        removals.sort(key=lambda p: (-1 if p == "." else p.count("/"), p), reverse=True)
        removed = set(removals)
        ops = []
        for p, t in want.items():
            if not (_in_selection(p, prefixes) or p in ensure):
                continue
            c = None if p in removed else have.get(p)
            typ = t[1]
            if p in holders and typ != "d":
                continue  # a file or link in the snapshot where a directory now holds the user's data
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
            dir_at = [i for i, ln in enumerate(want_lines) if ln[: ln.index("\t")] in touched]
            dir_at = [i for i in dir_at if want_lines[i].split("\t", 2)[1] == "d"]
            dirs = [parse_line(want_lines[i]) for i in dir_at]
        else:
            dir_at = []
            dirs = [t for p, t in want.items() if t[1] == "d" and (_in_selection(p, prefixes) or p in ensure)]
        roots.append(
            {
                "root": root,
                "tree": r.get("tree") if want_lines else None,
                "have": have,
                "removals": removals,
                "ops": ops,
                "dirs": dirs,
                "prefixes": prefixes,
                # the listing after the rollback is the target's (in its order) only when nothing was kept
                "exact": prefixes is None and not kept,
                "want_lines": want_lines,
                "have_lines": have_lines,
                # whole root: the positions in want_lines of what may differ now (lines unlike the ones
                # compared with, directories whose metadata is set again) and the lines compared with there
                "changed_at": diff_at + dir_at,
                "have_other": have_other,
            }
        )
        kinds: dict = {"remove": len(removals)}
        for op, _, _ in ops:
            kinds[op] = kinds.get(op, 0) + 1
        kinds["examples"] = [f"remove {p}" for p in removals[:5]] + [f"{op} {p}" for op, p, _ in ops[:10]]
        kinds["groups"] = _groups(want, have, removals, ops)
        kinds["kept"] = kept_report
        summary[root] = kinds
        count += len(removals) + len(ops)
    return {"roots": roots, "count": count, "summary": summary}


def _top(p: str, t: tuple) -> str:
    """The top-level entry of the root a path belongs to for the plan's words: its first component, or "."
    for the root itself and the files directly in it."""
    if "/" in p:
        return p.split("/", 1)[0]
    return p if t[1] == "d" else "."


def _group(groups: dict, p: str, t: tuple) -> dict:
    top = _top(p, t)
    if top not in groups:
        groups[top] = {
            "dir": top != ".",
            "replace": [0, 0],
            "add": [0, 0],
            "delete": [0, 0],
            "dirs_add": 0,
            "dirs_delete": 0,
            "meta": 0,
        }
    return groups[top]


def _groups(want: dict, have: dict, removals: list, ops: list) -> dict:
    """Per top-level entry: files (and symlinks) to replace, add and delete as [count, bytes]; directories
    to create and remove; entries whose mode, owner or time alone is set back. Bytes are the snapshot's size
    of a file written and the live size of a file deleted."""
    groups: dict = {}
    for p in removals:
        c = have[p]
        t = want.get(p)
        if t is not None and t[1] != "d" and c[1] != "d":
            continue  # a file or symlink of another kind: counted as replaced with its write below
        g = _group(groups, p, c)
        if c[1] == "d":
            g["dirs_delete"] += 1
        else:
            g["delete"][0] += 1
            g["delete"][1] += c[5] if c[1] == "f" else 0
    for op, p, t in ops:
        g = _group(groups, p, t)
        if op == "mkdir":
            g["dirs_add"] += 1
        elif op == "meta":
            g["meta"] += 1
        else:
            c = have.get(p)
            slot = g["replace" if c is not None and c[1] != "d" else "add"]
            slot[0] += 1
            slot[1] += t[5] if t[1] == "f" else 0
    return groups


def _kept_report(root: str, kept: list, want: dict, have: dict) -> dict:
    """Per kept path (relative): its files new, changed and deleted since the snapshot, as [count, bytes]
    (the live size; a deleted file's the snapshot's). A kept path that exists in neither is not reported."""
    out = {}
    for k in kept:
        r = {"added": [0, 0], "changed": [0, 0], "deleted": [0, 0]}
        under = [p for p in set(want) | set(have) if p == k or p.startswith(k + "/")]
        for p in under:
            c, t = have.get(p), want.get(p)
            x = c or t
            if x[1] == "d" and (c is None or t is None or c[1] == t[1]):
                continue
            if t is None:
                key, size = "added", c
            elif c is None:
                key, size = "deleted", t
            elif c[1] != t[1] or c[9] != t[9] or c[5] != t[5] or comparable(c) != comparable(t):
                key, size = "changed", c
            else:
                continue
            r[key][0] += 1
            r[key][1] += size[5] if size[1] == "f" else 0
        if under or os.path.lexists(os.path.join(root, k)):
            out[k] = r
    return out


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
    counter = itertools.count(1)
    try:
        for rp in plan["roots"]:
            if not rp["removals"] and not rp["ops"]:
                continue
            tree = LiveTree(rp["root"])
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
                # Directories first (parents before children, in walk order), so the files can be written
                # into them by several threads at once; each file and symlink to a temp name next to its own.
                batch, batch_bytes = [], 0  # (drel, temp name, parsed line, name)
                for op, p, t in rp["ops"]:
                    drel, name = tree.loc(p)
                    if op == "mkdir":
                        os.mkdir(name, 0o700, dir_fd=tree.dirfd(drel))
                    elif op in ("write", "link"):
                        batch.append((drel, f"{TMP_PREFIX}{tok}.{next(counter)}.tmp", t, name))
                        stats["written" if op == "write" else "linked"] += 1
                        stats["bytes_written"] += t[5] if op == "write" else 0
                        batch_bytes += t[5] if op == "write" else 0
                        if len(batch) >= BATCH_FILES or batch_bytes >= BATCH_BYTES:
                            _write_and_commit(store, tree, batch, is_root, warnings)
                            batch, batch_bytes = [], 0
                    else:
                        stats["metadata"] += 1
                        _set_meta(tree.dirfd(drel), name, t, is_root, warnings)
                _write_and_commit(store, tree, batch, is_root, warnings)
            finally:
                tree.close()
            # Directory metadata last, deepest first: creating entries above changed their mtimes.
            set_dir_meta(LiveTree(rp["root"]), rp["dirs"], is_root, warnings, fresh=False)
            rp["written_ns"] = time.time_ns()  # nothing in this root changes after this
            tree = LiveTree(rp["root"])
            try:
                syncfs(tree.pfd)
            finally:
                tree.close()
    except OSError as e:
        raise SnapshotError(
            f"The rollback to {target['id']} stopped at an error ({e}); every file is complete (old or new): "
            f"fix the cause and run it again, or roll back to {before_id}."
        ) from None
    os.unlink(journal)
    fsync_dir(os.path.dirname(journal))
    return {"stats": stats, "warnings": warnings}


def _set_meta(dfd: int, name: str, t: tuple, is_root: bool, warnings: list) -> None:
    """Metadata of an entry whose content is already right (directories: set_dir_meta, last)."""
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


def _write_and_commit(store, tree: LiveTree, batch: list, is_root: bool, warnings: list) -> None:
    """Write a batch of files and symlinks to their temp names (in parallel, by bytes), make them durable with
    one syncfs, then rename each over its final name."""
    if not batch:
        return
    write_entries(
        store,
        tree.root,
        [(drel, tmp, t) for drel, tmp, t, _ in batch],
        None,
        is_root,
        warnings,
        make_dirs=False,
    )
    syncfs(tree.pfd)
    for drel, tmp, _, name in batch:
        dfd = tree.dirfd(drel)
        os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)


def _record(store, target: dict, plan: dict, warnings: list) -> set:
    """Record what each changed root holds now, as a stored tree named by the root's stat-cache file; returns
    the roots recorded."""
    from .snapshotter import SETTLE_NS

    run = store.begin_run("rollback record")
    recorded = set()
    try:
        for rp in plan["roots"]:
            if "written_ns" not in rp:
                continue  # nothing changed in this root: its stat-cache file is the before-rollback listing
            wait = rp["written_ns"] + SETTLE_NS - time.time_ns()
            if wait > 0:
                time.sleep(wait / 1e9)
            lines = _now_listing(rp, _restat(rp, warnings))
            recorded.add(rp["root"])
            if not lines:
                store.drop_cache(rp["root"])
                continue
            text = "".join(lines).encode("utf-8", "surrogateescape")
            tree = hashlib.sha256(text).hexdigest()
            base = (rp["tree"], *store.read_tree_info(rp["tree"])) if rp["tree"] else None
            depth, chain, _ = store.write_tree(tree, lines, text, base if base and base[0] != tree else None)
            store.write_cache(rp["root"], tree, depth, chain, text, recorded=True)
        run.committed()
    except OSError as e:
        store.abort_run()
        warnings.append(
            f"The rollback is complete, but what it wrote could not be recorded in {store.path} ({e}): the next "
            "snapshot reads those files again."
        )
        return set()
    store.end_run()
    return recorded


def _restat(rp: dict, warnings: list) -> dict:
    """{escaped path: line} of every entry the rollback created or changed in this root, as a walk would
    write it: the stat of the entry now, with the content it was given (a file's blob, a link's target)."""
    from .snapshotter import settled_ctime

    touched = {p: t for _, p, t in rp["ops"]}
    touched.update((t[0], t) for t in rp["dirs"])
    tree = LiveTree(rp["root"])
    out = {}
    try:
        for p, t in touched.items():
            drel, name = tree.loc(p)
            try:
                dfd = tree.dirfd(drel)
                st = os.lstat(name, dir_fd=dfd)
                xattrs = xattrs_get(name, dir_fd=dfd)
            except (OSError, SnapshotError) as e:
                warnings.append(
                    f"{os.path.join(rp['root'], p)} changed during the rollback ({e}); it is read again by the next snapshot"
                )
                continue
            now = time.time_ns()
            typ = {stat.S_IFREG: "f", stat.S_IFDIR: "d", stat.S_IFLNK: "l"}.get(stat.S_IFMT(st.st_mode))
            size = st.st_size if typ == "f" else 0
            # The content is the one written only while the entry is what was written (type, and a file's size
            # and mtime, which the rollback set); otherwise the line cannot match the next walk's key.
            same = typ == t[1] and (typ != "f" or (size, st.st_mtime_ns) == (t[5], t[6]))
            ctime = settled_ctime(st.st_ctime_ns, now) if same else 0
            out[esc(p)] = (
                f"{esc(p)}\t{typ or t[1]}\t{stat.S_IMODE(st.st_mode):o}\t{st.st_uid}\t{st.st_gid}\t{size}"
                f"\t{st.st_mtime_ns}\t{ctime}\t{st.st_ino}\t{esc(t[9])}\t{xattrs}\n"
            )
    finally:
        tree.close()
    return out


def _now_listing(rp: dict, fresh: dict) -> list:
    """The root's listing now: the lines compared with (have), less what was removed, with the fresh lines
    of what was written; in walk order."""
    have_lines, want_lines = rp["have_lines"], rp["want_lines"]
    if rp["exact"]:
        # Whole root: every path now is a path of the target, in the target's order. A path the rollback did
        # not touch has the line compared with (the target's line, or one equal to it but for its key).
        out = list(want_lines)
        have_other = rp["have_other"]
        for i in rp["changed_at"]:
            ln = want_lines[i]
            pe = ln[: ln.index("\t")]
            got = fresh.get(pe) or have_other.get(pe)
            if got is not None:
                out[i] = got
        return out
    now = {ln[: ln.index("\t")]: ln for ln in have_lines}
    for p in rp["removals"]:
        now.pop(esc(p), None)
    now.update(fresh)
    return sorted(now.values(), key=lambda ln: _walk_key(ln[: ln.index("\t")]))


def _walk_key(path_e: str) -> tuple:
    """Walk order (depth first, siblings by name) as a sort key: the path's components."""
    return () if path_e == "." else tuple(unesc(path_e).split("/"))
