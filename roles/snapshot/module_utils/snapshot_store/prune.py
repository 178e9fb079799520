"""Prune: forget snapshots by the retention policy, then mark what the rest reach and sweep the others.

Invariants kept here:
- Runs under the exclusive lock (Store.prune), after recovery.
- Marked live: every tree a remaining manifest or a stat-cache file names, the bases of their deltas, and
  every blob their listings name (a stat-cache file's listing is what the next snapshot reuses, so its blobs
  must stay). A stat-cache file of a root no remaining snapshot captures is removed.
- Repack order: new packs durable -> new index durable -> old index files deleted -> old packs deleted, so
  at every moment each live blob is named by an index file whose pack exists (a blob listed twice after an
  interrupted prune is valid in either place).
- Journaled (journal.RunJournal) before anything is deleted: a killed prune is finished, or its new packs
  removed, by the next writing run. Only whole files are deleted; nothing is modified in place.
"""

from __future__ import annotations

import hashlib
import os

from .fileio import fsync_dir
from .format import INDEX_VERSION, SnapshotError, json_dumps_compact
from .journal import remove
from .packs import PackWriter, read_index


def prune(store, policy: dict | None, dry_run: bool, now_ns: int) -> dict:
    try:
        from ansible.module_utils.snapshot_retention import plan as retention_plan
    except ImportError:  # unit tests and the command line import module_utils directly
        from snapshot_retention import plan as retention_plan

    manifests = store.manifests()
    keep, forget = retention_plan(manifests, now_ns, policy)
    forget_ids = {f["id"] for f in forget}
    live = [m for m in manifests if m["id"] not in forget_ids]
    live_roots = {r["path"] for m in live for r in m["roots"]}
    used_blobs: set = set()
    used_trees: set = set()  # tree files to keep: named, or the base of a delta of one
    listed: set = set()  # trees whose blobs are marked

    def mark(tree: str, lines: list | None = None) -> None:
        if tree in listed:
            return
        listed.add(tree)
        name = tree
        while name is not None and name not in used_trees:
            used_trees.add(name)
            name = store.tree_header(name)[0]
        for ln in lines if lines is not None else store.read_tree(tree):
            f = ln.split("\t", 10)
            if f[1] == "f" and f[5] != "0":
                used_blobs.add(f[9])

    for m in live:
        for r in m["roots"]:
            if r.get("present"):
                mark(r["tree"])
    stale_caches = []
    for path, cache in store.caches():
        if cache is None or cache["root"] not in live_roots:
            stale_caches.append(path)
        else:
            mark(cache["tree"], cache["lines"])
    index_files, packs = read_index(store)
    on_disk_packs = dict(store.walk_files("packs"))
    dead_packs, repack, kept_packs = [], [], {}
    freed = 0
    for packid, info in packs.items():
        live_blobs = [b for b in info["blobs"] if b[0] in used_blobs]
        live_bytes = sum(b[2] for b in live_blobs)
        total = sum(b[2] for b in info["blobs"])
        if not live_blobs:
            dead_packs.append(packid)
            freed += info["size"]
        elif live_bytes * 2 < total:
            repack.append((packid, live_blobs))
        else:
            kept_packs[packid] = {"size": info["size"], "blobs": live_blobs}
    unindexed = [p for p in on_disk_packs if p not in packs]
    dead_objects = [p for b, p in store.walk_files("objects") if b not in used_blobs]
    dead_trees = [p for t, p in store.walk_files("trees") if t not in used_trees]
    tmp_files = os.listdir(store.tmpdir) if os.path.isdir(store.tmpdir) else []
    freed += sum(os.path.getsize(on_disk_packs[p]) for p in unindexed)
    freed += sum(os.path.getsize(p) for p in dead_objects + dead_trees)
    # An index that lists blobs nothing uses any more is rewritten even when every pack stays.
    stale_index = any(
        len(kept_packs.get(p, {}).get("blobs", [])) != len(packs[p]["blobs"]) for p in kept_packs
    )
    rewrite_index = bool(repack or dead_packs or stale_index or (kept_packs and len(index_files) > 1))
    work = bool(
        forget or unindexed or dead_objects or dead_trees or tmp_files or stale_caches or rewrite_index
    )
    result = {
        "changed": work,
        "dry_run": dry_run,
        "keep": keep,
        "forget": [f["id"] for f in forget],
        "packs_deleted": len(dead_packs) + len(unindexed),
        "packs_repacked": len(repack),
        "objects_deleted": len(dead_objects),
        "trees_deleted": len(dead_trees),
        "tmp_deleted": len(tmp_files),
        "bytes_freed": freed,
    }
    if dry_run or not work:
        return result
    run = store.begin_run("prune")
    try:
        # What only the forgotten snapshots reach can go at once, once their manifests are gone (first).
        now = [os.path.join(store.path, "snapshots", i + ".json") for i in sorted(forget_ids)]
        now += stale_caches + dead_objects + dead_trees + [on_disk_packs[p] for p in unindexed]
        now += [os.path.join(store.tmpdir, n) for n in tmp_files]
        for path in now:
            run.delete(path)
        for path in now:
            remove(path)
        fsync_dir(os.path.join(store.path, "snapshots"))
        if rewrite_index or not kept_packs:
            freed += _rewrite_index(
                store, run, packs, repack, kept_packs, index_files, dead_packs, on_disk_packs
            )
            result["bytes_freed"] = freed
    except BaseException:
        store.run = None  # the journal stays: the next writing run finishes or undoes this prune
        raise
    store.end_run()
    store._index = None
    store._trees.clear()
    return result


def _rewrite_index(store, run, packs, repack, kept_packs, index_files, dead_packs, on_disk_packs) -> int:
    """Repack what is left of mostly-dead packs, write one index of the kept packs, then delete the old index
    files and packs; returns the bytes this freed beyond the dead packs (counted by the caller)."""
    freed = 0
    if repack:
        packer = PackWriter(store)
        seen: set = set()
        fds: dict = {}
        try:
            for packid, live_blobs in repack:
                for blob, off, length in live_blobs:
                    if blob in seen:
                        continue
                    seen.add(blob)
                    fd = fds.setdefault(packid, os.open(on_disk_packs[packid], os.O_RDONLY))
                    data = os.pread(fd, length, off)
                    if hashlib.sha256(data).hexdigest() != blob:
                        raise SnapshotError(
                            f"Blob {blob[:12]} in pack {packid[:12]} is damaged: run make snapshot-check DEEP=1 "
                            "before pruning."
                        )
                    packer.add(blob, data)
            packer.flush()
            packer.finish()
        finally:
            for fd in fds.values():
                os.close(fd)
            packer.close()
        kept_packs.update(packer.new_packs)
        freed -= packer.new_bytes
        freed += sum(packs[packid]["size"] for packid, _ in repack)
    new_name = None
    if kept_packs:
        data = json_dumps_compact({"version": INDEX_VERSION, "packs": kept_packs})
        new_name = hashlib.sha256(data).hexdigest() + ".json"
        store.write_content(os.path.join(store.path, "index", new_name), data)
    run.committed()
    old_index = [os.path.join(store.path, "index", n) for n in index_files if n != new_name]
    old_packs = [on_disk_packs[p] for p in dead_packs + [p for p, _ in repack] if p in on_disk_packs]
    for path in old_index + old_packs:
        run.delete(path, once_committed=True)
    for path in old_index:
        remove(path)
    fsync_dir(os.path.join(store.path, "index"))
    for path in old_packs:
        remove(path)
    return freed
