"""Prune: forget snapshots by the retention policy, then mark what the rest reach and sweep the others.

Invariants kept here:
- Runs under the exclusive lock (Store.prune), after recovery.
- Repack order: new packs durable -> new index durable -> old index files deleted -> old packs deleted, so
  at every moment each live blob is named by an index file whose pack exists (a blob listed twice after an
  interrupted prune is valid in either place).
- Only whole files are deleted; nothing is modified in place.
"""

from __future__ import annotations

import contextlib
import hashlib
import os

from .fileio import fsync_dir, rmtree
from .format import VERSION, SnapshotError, json_dumps_compact
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
    used_blobs: set = set()
    used_trees: set = set()
    for m in live:
        for r in m["roots"]:
            if r.get("present") and r["tree"] not in used_trees:
                used_trees.add(r["tree"])
                for ln in store.read_tree(r["tree"]):
                    f = ln.split("\t", 10)
                    if f[1] == "f" and f[5] != "0":
                        used_blobs.add(f[9])
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
    dead_objects = [(b, p) for b, p in store.walk_files("objects") if b not in used_blobs]
    dead_trees = [(t, p) for t, p in store.walk_files("trees") if t not in used_trees]
    tmp_files = os.listdir(store.tmpdir) if os.path.isdir(store.tmpdir) else []
    freed += sum(os.path.getsize(on_disk_packs[p]) for p in unindexed)
    freed += sum(os.path.getsize(p) for _, p in dead_objects + dead_trees)
    # An index that lists blobs nothing uses any more is rewritten even when every pack stays.
    stale_index = any(
        len(kept_packs.get(p, {}).get("blobs", [])) != len(packs[p]["blobs"]) for p in kept_packs
    )
    work = bool(
        forget or dead_packs or repack or unindexed or dead_objects or dead_trees or tmp_files or stale_index
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
    for snapid in forget_ids:
        os.unlink(os.path.join(store.path, "snapshots", snapid + ".json"))
    fsync_dir(os.path.join(store.path, "snapshots"))
    # Repack: new packs durable -> new index durable -> old index files deleted -> old packs deleted.
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
        for packid, _ in repack:
            freed += packs[packid]["size"]
        result["bytes_freed"] = freed
    if kept_packs and (repack or dead_packs or stale_index or len(index_files) > 1):
        data = json_dumps_compact({"version": VERSION, "packs": kept_packs})
        new_name = hashlib.sha256(data).hexdigest() + ".json"
        store.atomic_write(os.path.join(store.path, "index", new_name), data)
        for name in index_files:
            if name != new_name:
                os.unlink(os.path.join(store.path, "index", name))
    elif not kept_packs:
        for name in index_files:
            os.unlink(os.path.join(store.path, "index", name))
    fsync_dir(os.path.join(store.path, "index"))
    for packid in dead_packs + [p for p, _ in repack] + unindexed:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(on_disk_packs[packid])
    for _, p in dead_objects + dead_trees:
        os.unlink(p)
    for n in tmp_files:
        rmtree(os.path.join(store.tmpdir, n))
    store._index = None
    return result
