"""Checking the store: structure always, content with deep=True; garbage is counted, never an error.

Invariants kept here:
- Read only, under the shared lock: check never changes the store.
- An error is something a snapshot needs and cannot get (a manifest that does not parse, a missing or
  damaged tree or base of a delta, pack or object), or content a stat-cache file names that is not there
  (the next snapshot would record it). What nothing reaches (tmp files, unindexed packs, unused blobs and
  trees) is garbage: the next writing run removes what a killed run left (journal/*.files), prune the rest.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import zlib

from .format import CHUNK, SnapshotError, parse_line, read_trailer


def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(CHUNK):
            h.update(b)
    return h.hexdigest()


def check(store, deep: bool) -> dict:
    errors: list[str] = []
    garbage: dict = {
        "tmp_files": 0,
        "unindexed_packs": 0,
        "unused_blobs": 0,
        "unused_trees": 0,
        "unreadable_caches": 0,
        "bytes": 0,
    }
    index: dict = {}
    pack_sizes: dict = {}
    for name in store.index_files():
        path = os.path.join(store.path, "index", name)
        try:
            with open(path, "rb") as f:
                raw = f.read()
            if deep and hashlib.sha256(raw).hexdigest() + ".json" != name:
                errors.append(f"index file {name} does not match its name (damaged)")
            for packid, info in json.loads(raw)["packs"].items():
                pack_sizes[packid] = info["size"]
                for blob, off, length in info["blobs"]:
                    index[blob] = (packid, off, length)
        except (OSError, ValueError, KeyError, TypeError) as e:
            errors.append(f"index file {name} cannot be read: {e}")
    on_disk_packs = dict(store.walk_files("packs"))
    for packid, size in pack_sizes.items():
        p = on_disk_packs.get(packid)
        if p is None:
            errors.append(f"pack {packid[:12]} named by the index is missing")
        elif os.path.getsize(p) != size:
            errors.append(f"pack {packid[:12]} has {os.path.getsize(p)} bytes, the index says {size}")
        elif deep:
            if _sha256_file(p) != packid:
                errors.append(f"pack {packid[:12]} does not match its name (damaged)")
            else:
                _deep_check_pack(p, packid, index, errors)
    for packid, p in on_disk_packs.items():
        if packid not in pack_sizes:
            garbage["unindexed_packs"] += 1
            garbage["bytes"] += os.path.getsize(p)
    objects = dict(store.walk_files("objects"))
    trees_on_disk = dict(store.walk_files("trees"))
    used_blobs: set = set()
    used_trees: set = set()  # named by a manifest or a stat-cache file, or the base of a delta of one
    listed: set = set()

    def listing(tree: str, who: str) -> list | None:
        """The parsed listing of a tree named by `who` (None: reported, or read already)."""
        if tree in listed:
            return None
        listed.add(tree)
        name = tree
        while name is not None:
            if name not in trees_on_disk:
                via = "" if name == tree else f" (the base of the delta {tree[:12]})"
                errors.append(f"{who}: tree {str(name)[:12]}{via} is missing")
                return None
            used_trees.add(name)
            try:
                name = store.tree_header(name)[0]
            except (OSError, ValueError) as e:
                errors.append(f"{who}: tree {name[:12]} cannot be read ({e})")
                return None
        try:
            lines = store.read_tree(tree)
            if deep and hashlib.sha256("".join(lines).encode("utf-8", "surrogateescape")).hexdigest() != tree:
                errors.append(f"tree {tree[:12]} does not match its name (damaged)")
            return [parse_line(ln) for ln in lines]
        except (OSError, ValueError, SnapshotError, zlib.error) as e:
            errors.append(f"{who}: tree {tree[:12]} cannot be read ({e})")
            return None

    def check_content(entries: list, root: str, who: str) -> None:
        for e in entries:
            if e[1] != "f" or e[5] == 0:
                continue
            blob, size = e[9], e[5]
            if blob in used_blobs:
                continue
            used_blobs.add(blob)
            loc = index.get(blob)
            if loc is not None:
                if loc[2] != size:
                    errors.append(f"content of {root}/{e[0]} has the wrong size in pack {loc[0][:12]}")
            elif blob in objects:
                if os.path.getsize(objects[blob]) != size:
                    errors.append(f"object {blob[:12]} ({root}/{e[0]}) has the wrong size")
            else:
                errors.append(f"{who}: content of {root}/{e[0]} ({blob[:12]}) is missing")

    snapshots = 0
    for snapid in store.snapshot_ids():
        try:
            m = store.load_manifest(snapid)
            roots = m["roots"]
        except (SnapshotError, ValueError, KeyError) as e:
            errors.append(f"snapshot {snapid}: manifest cannot be read ({e})")
            continue
        snapshots += 1
        for r in roots:
            if r.get("present"):
                entries = listing(r.get("tree"), f"snapshot {snapid}")
                if entries is not None:
                    check_content(entries, r["path"], f"snapshot {snapid}")
    caches = store.caches()
    for path, cache in caches:
        if cache is None:
            garbage["unreadable_caches"] += 1
            continue
        who = f"the stat-cache file {os.path.basename(path)}"
        if listing(cache["tree"], who) is not None and deep:
            text = "".join(cache["lines"]).encode("utf-8", "surrogateescape")
            if hashlib.sha256(text).hexdigest() != cache["tree"]:
                errors.append(f"{who} does not hold the listing of tree {cache['tree'][:12]} (damaged)")
        try:
            check_content([parse_line(ln) for ln in cache["lines"]], "", who)
        except ValueError as e:
            errors.append(f"{who} cannot be read ({e})")
    for blob, p in objects.items():
        if blob not in used_blobs:
            garbage["unused_blobs"] += 1
            garbage["bytes"] += os.path.getsize(p)
        elif deep and _sha256_file(p) != blob:
            errors.append(f"object {blob[:12]} does not match its content (damaged)")
    garbage["unused_blobs"] += sum(1 for b in index if b not in used_blobs)
    for tree, p in trees_on_disk.items():
        if tree not in used_trees:
            garbage["unused_trees"] += 1
            garbage["bytes"] += os.path.getsize(p)
    for n in os.listdir(store.tmpdir) if os.path.isdir(store.tmpdir) else []:
        garbage["tmp_files"] += 1
        with contextlib.suppress(OSError):
            garbage["bytes"] += os.lstat(os.path.join(store.tmpdir, n)).st_size
    journal = os.path.join(store.path, "journal")
    journals = os.listdir(journal) if os.path.isdir(journal) else []
    return {
        "ok": not errors,
        "errors": errors,
        "garbage": garbage,
        "interrupted_rollbacks": sum(n.endswith(".json") for n in journals),
        "interrupted_runs": sum(n.endswith(".files") for n in journals),
        "caches": len(caches),
        "version": store.config.get("version"),
        "snapshots": snapshots,
        "trees": len(used_trees),
        "blobs": len(used_blobs),
        "deep": deep,
    }


def _deep_check_pack(path: str, packid: str, index: dict, errors: list) -> None:
    try:
        trailer = read_trailer(path)
    except (OSError, ValueError) as e:
        errors.append(f"pack {packid[:12]} has no readable trailer ({e})")
        return
    with open(path, "rb") as f:
        for blob, off, length in trailer:
            f.seek(off)
            if hashlib.sha256(f.read(length)).hexdigest() != blob:
                errors.append(f"blob {blob[:12]} in pack {packid[:12]} does not match its content (damaged)")
            loc = index.get(blob)
            if loc is not None and loc[0] == packid and (loc[1], loc[2]) != (off, length):
                errors.append(f"index and trailer of pack {packid[:12]} disagree on blob {blob[:12]}")
