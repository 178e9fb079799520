"""The store on disk: layout, configuration, locking, atomic writes, the index, blobs, trees, manifests.

The operations (snapshot, restore, rollback, check, prune) live in modules of their own and are imported
when called, so a no-change snapshot loads only what it runs. Invariants kept here:
- Write once: every file under packs/ objects/ trees/ index/ is written to tmp/, fsynced, renamed to its
  content-addressed name (`publish`, `write_content`) and the directory fsynced; an existing name is never
  rewritten. A manifest is written last, so a snapshot exists exactly when its manifest does.
- Journaled: while a run holds `self.run` (journal.RunJournal), each such file is journaled before it is
  created, so what a killed run created can be found and removed without a mark and sweep.
- A tree name always stands for the same listing, stored whole or as a delta from another stored tree.
- A stat-cache file names a stored tree and holds exactly its listing (`write_cache`).
- Locking: every operation holds flock on STORE/lock, exclusive to write, shared to read; the holder's pid
  and host are written into the lock file so a waiting run can say who holds it.
- Recovery: an exclusive operation first removes what an interrupted one left (journal.recover), before
  anything else; a writing operation on a version-1 store records version 2 first (`upgrade`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import time

from .fileio import fsync_dir, read_all, write_all
from .format import (
    DELTA_MAX_DEPTH,
    DELTA_MAX_SHARE,
    FORMAT,
    READABLE_VERSIONS,
    REF_RE,
    SNAPID_RE,
    VERSION,
    SnapshotError,
    apply_delta,
    cache_bytes,
    cache_name,
    delta_header,
    encode_delta,
    hostname,
    parse_cache,
    parse_line,
    split_lines,
    token,
    tree_header,
    tree_text,
    unesc,
)

LAYOUT = ("packs", "objects", "trees", "index", "snapshots", "journal", "tmp", "cache")


class Store:
    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        self.tmpdir = os.path.join(self.path, "tmp")
        self._index = None  # blob id -> (pack id, offset, length); loaded only on a stat-cache miss
        self._trees: dict = {}  # tree id -> (lines, depth, chain bytes): the few read by this process
        self._lock_mode = None
        self.config: dict = {}
        self.run = None  # the journal of the writing run in progress (journal.RunJournal), if any
        self.warnings: list[str] = []

    # -- layout --------------------------------------------------------------------------------------------
    def p(self, kind: str, name: str) -> str:
        """The path of a content-addressed file: STORE/kind/XX/name."""
        return os.path.join(self.path, kind, name[:2], name)

    def walk_files(self, kind: str):
        """(name, path) of every file under STORE/kind/XX/, sorted."""
        base = os.path.join(self.path, kind)
        for d in sorted(os.listdir(base)) if os.path.isdir(base) else []:
            sub = os.path.join(base, d)
            if os.path.isdir(sub):
                for n in sorted(os.listdir(sub)):
                    yield n, os.path.join(sub, n)

    def init(self) -> bool:
        """Create the store layout if missing; True when something was created."""
        cfg = os.path.join(self.path, "config.json")
        if os.path.exists(cfg):
            self._check_config(cfg)
            return False
        parent = os.path.dirname(self.path)
        if not os.path.isdir(parent):
            raise SnapshotError(
                f"The snapshot store's parent directory {parent} does not exist: create it or set "
                "sdenv_snapshot_store to a path whose parent exists."
            )
        try:
            os.makedirs(self.path, mode=0o700, exist_ok=True)
            os.chmod(self.path, 0o700)
            for d in LAYOUT:
                os.makedirs(os.path.join(self.path, d), mode=0o700, exist_ok=True)
            with open(os.path.join(self.path, "lock"), "a"):
                pass
            self.config = {"format": FORMAT, "version": VERSION, "id": token(16)}
            self.atomic_write(cfg, json.dumps(self.config).encode(), mode=0o444)
        except OSError as e:
            raise self.oserror(e, "initialise the snapshot store") from None
        return True

    def _check_config(self, cfg: str) -> None:
        try:
            with open(cfg, "rb") as f:
                c = json.load(f)
        except (OSError, ValueError) as e:
            raise SnapshotError(
                f"The snapshot store's {cfg} cannot be read ({e}): check the store path."
            ) from None
        if c.get("format") != FORMAT:
            raise SnapshotError(
                f"{self.path} is not an sdenv snapshot store: point sdenv_snapshot_store at an sdenv store or "
                "at a new directory."
            )
        if c.get("version") not in READABLE_VERSIONS:
            raise SnapshotError(
                f"The snapshot store at {self.path} has format version {c.get('version')!r}, which this toolkit "
                f"does not read (it reads {', '.join(map(str, READABLE_VERSIONS))}): use the toolkit that wrote "
                "it, or point sdenv_snapshot_store at a new directory."
            )
        self.config = c

    def upgrade(self) -> None:
        """Before a version-1 store is first written to (exclusive lock held): record version 2, whose
        additions (delta trees, cache/, run journals) a version-1 toolkit cannot read."""
        if self.config.get("version", VERSION) >= VERSION:
            return
        for d in LAYOUT:
            os.makedirs(os.path.join(self.path, d), mode=0o700, exist_ok=True)
        old = self.config["version"]
        self.config = dict(self.config, version=VERSION)
        self.atomic_write(
            os.path.join(self.path, "config.json"), json.dumps(self.config).encode(), mode=0o444
        )
        self.warnings.append(
            f"The snapshot store at {self.path} now has format version {VERSION} (it had {old}): its "
            "snapshots are all kept, and toolkits from before version 2 no longer open it."
        )

    def require(self) -> None:
        cfg = os.path.join(self.path, "config.json")
        if not os.path.exists(cfg):
            raise SnapshotError(f"There is no snapshot store at {self.path}: run make snapshot first.")
        self._check_config(cfg)

    def oserror(self, e: OSError, doing: str) -> SnapshotError:
        if e.errno == errno.ENOSPC:
            return SnapshotError(
                f"The snapshot store at {self.path} ran out of disk space while trying to {doing}: free space "
                "(make snapshot-prune) or move the store; nothing was recorded."
            )
        if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return SnapshotError(
                f"The snapshot store at {self.path} is not writable ({e.strerror}) while trying to {doing}: "
                "make it writable or set sdenv_snapshot_store to a writable path."
            )
        return SnapshotError(f"Could not {doing} in the snapshot store at {self.path}: {e}.")

    # -- locking -------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self, exclusive: bool, timeout: float = 600.0):
        path = os.path.join(self.path, "lock")
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
        except OSError as e:
            if exclusive or e.errno not in (errno.EACCES, errno.EROFS, errno.EPERM):
                raise self.oserror(e, "open its lock file") from None
            fd = os.open(path, os.O_RDONLY)
        op = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    fcntl.flock(fd, op | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        holder = ""
                        with contextlib.suppress(OSError):
                            holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
                        raise SnapshotError(
                            f"The snapshot store at {self.path} is busy (held by {holder or 'another run'}) for "
                            f"more than {int(timeout)} s: wait for that run to finish and try again."
                        ) from None
                    time.sleep(0.05)
            if exclusive:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, f"pid {os.getpid()} on {hostname()}\n".encode(), 0)
            self._lock_mode = "ex" if exclusive else "sh"
            yield
        finally:
            self._lock_mode = None
            os.close(fd)  # closing releases the flock

    # -- atomic writes -------------------------------------------------------------------------------------
    def tmpfile(self) -> tuple[int, str]:
        name = os.path.join(self.tmpdir, f"{os.getpid()}-{token(8)}")
        return os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600), name

    def atomic_write(self, final: str, data: bytes, mode: int = 0o444) -> None:
        """temp -> fsync -> rename -> fsync dir; the temp lives next to the final name's store."""
        d = os.path.dirname(final)
        os.makedirs(d, mode=0o700, exist_ok=True)
        tmp = os.path.join(d if not os.path.isdir(self.tmpdir) else self.tmpdir, f".{token(8)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            write_all(fd, data)
            os.fchmod(fd, mode)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        os.close(fd)
        os.rename(tmp, final)
        fsync_dir(d)

    def publish(self, tmp: str, final: str) -> bool:
        """Move a fsynced temp to its content-addressed name; False (temp dropped) when it already exists."""
        d = os.path.dirname(final)
        if os.path.exists(final):
            os.unlink(tmp)
            return False
        os.makedirs(d, mode=0o700, exist_ok=True)
        if self.run is not None:
            self.run.created(final)
        os.rename(tmp, final)
        fsync_dir(d)
        return True

    def write_content(self, final: str, data: bytes) -> bool:
        """A write-once file (tree, index file) from bytes in memory; False when the name exists already."""
        if os.path.exists(final):
            return False
        if self.run is not None:
            self.run.created(final)
        self.atomic_write(final, data)
        return True

    # -- index ---------------------------------------------------------------------------------------------
    def index_files(self) -> list[str]:
        d = os.path.join(self.path, "index")
        return sorted(n for n in os.listdir(d) if n.endswith(".json")) if os.path.isdir(d) else []

    def load_index(self) -> dict:
        if self._index is None:
            idx = {}
            for name in self.index_files():
                for packid, info in self.read_index_file(name)["packs"].items():
                    for blob, off, length in info["blobs"]:
                        idx[blob] = (packid, off, length)
            self._index = idx
        return self._index

    def read_index_file(self, name: str) -> dict:
        with open(os.path.join(self.path, "index", name), "rb") as f:
            return json.loads(f.read())

    def has_blob(self, blob: str) -> bool:
        return blob in self.load_index() or os.path.exists(self.p("objects", blob))

    # -- blobs ---------------------------------------------------------------------------------------------
    def read_blob(self, blob: str, size: int, pack_fds: dict) -> bytes:
        loc = self.load_index().get(blob)
        if loc is not None:
            packid, off, length = loc
            fd = pack_fds.get(packid)
            if fd is None:
                fd = pack_fds[packid] = os.open(self.p("packs", packid), os.O_RDONLY)
            data = os.pread(fd, length, off)
        else:
            fd = os.open(self.p("objects", blob), os.O_RDONLY)
            try:
                data = read_all(fd)
            finally:
                os.close(fd)
        if len(data) != size:
            raise SnapshotError(
                f"Blob {blob[:12]} in {self.path} is damaged (size): run make snapshot-check."
            )
        return data

    def open_object(self, blob: str) -> int:
        """An fd of a large blob's object file; one sentence when it is missing."""
        try:
            return os.open(self.p("objects", blob), os.O_RDONLY)
        except FileNotFoundError:
            raise SnapshotError(
                f"Content {blob[:12]} is missing from the store at {self.path}: run make snapshot-check."
            ) from None

    def copy_blob_to(self, blob: str, size: int, dst_fd: int, pack_fds: dict) -> None:
        from .fileio import clone, copy_fd

        if size == 0:
            return
        if blob not in self.load_index():
            src = self.open_object(blob)
            try:
                if not clone(src, dst_fd):
                    copy_fd(src, dst_fd)
            finally:
                os.close(src)
            return
        write_all(dst_fd, self.read_blob(blob, size, pack_fds))

    # -- trees ---------------------------------------------------------------------------------------------
    def read_tree(self, tree: str) -> list[str]:
        return self.read_tree_info(tree)[0]

    def read_tree_info(self, tree: str) -> tuple[list, int, int]:
        """(listing lines, delta depth, delta chain bytes) of a stored tree, following its chain of deltas."""
        got = self._trees.get(tree)
        if got is not None:
            return got
        chain = []
        name = tree
        while True:
            info = self._trees.get(name)  # a base read just before (check and prune read trees in order)
            if info is not None:
                break
            data = self._tree_file(name, tree)
            base, depth, chain_bytes = tree_header(data)
            if base is None:
                info = (split_lines(tree_text(data).decode("utf-8", "surrogateescape")), 0, 0)
                break
            chain.append((data, depth, chain_bytes))
            if len(chain) > DELTA_MAX_DEPTH:
                raise SnapshotError(
                    f"Tree {tree[:12]} in {self.path} has a chain of deltas longer than {DELTA_MAX_DEPTH} "
                    "(damaged): run make snapshot-check."
                )
            name = base
        for data, depth, chain_bytes in reversed(chain):
            info = (apply_delta(info[0], data), depth, chain_bytes)
        self._remember(tree, info)
        return info

    def _remember(self, tree: str, info: tuple) -> None:
        """Keep the last few listings read or written (each a few MB): the next tree is often a delta of one."""
        if len(self._trees) >= 4:
            self._trees.pop(next(iter(self._trees)))
        self._trees[tree] = info

    def _tree_file(self, name: str, wanted: str) -> bytes:
        try:
            with open(self.p("trees", name), "rb") as f:
                return f.read()
        except FileNotFoundError:
            via = "" if name == wanted else f" (the base of tree {wanted[:12]})"
            raise SnapshotError(
                f"Tree {name[:12]}{via} is missing from {self.path}: run make snapshot-check."
            ) from None

    def tree_header(self, tree: str) -> tuple:
        """(base, depth, chain bytes) of a stored tree file, from its first line."""
        with open(self.p("trees", tree), "rb") as f:
            return tree_header(f.read(4096))

    def read_tree_map(self, tree: str | None) -> dict:
        if not tree:
            return {}
        return {t[0]: t for t in map(parse_line, self.read_tree(tree))}

    def write_tree(self, tree: str, lines: list, text: bytes, base: tuple | None) -> tuple[int, int, int]:
        """Store the listing `lines` (whose bytes are `text`, whose name is `tree`) unless it is there; as a
        delta from base = (tree id, lines, depth, chain bytes) while the chain stays short (DELTA_MAX_DEPTH,
        DELTA_MAX_SHARE), else whole. Returns (depth, chain bytes, bytes written)."""
        path = self.p("trees", tree)
        if os.path.exists(path):
            _, depth, chain_bytes = self.tree_header(tree)
            return depth, chain_bytes, 0
        data, depth, chain_bytes = text, 0, 0
        if base is not None and base[2] < DELTA_MAX_DEPTH:
            room = len(text) * DELTA_MAX_SHARE - base[3]
            body = encode_delta(lines, base[1], by_identity=True)
            if len(body) > room:  # lines equal to the base's but read apart from it: compare by text
                body = encode_delta(lines, base[1])
            if len(body) <= room:
                depth, chain_bytes = base[2] + 1, base[3] + len(body)
                data = delta_header(base[0], depth, chain_bytes) + body
        self.write_content(path, data)
        self._remember(tree, (lines, depth, chain_bytes))
        return depth, chain_bytes, len(data)

    # -- stat cache ----------------------------------------------------------------------------------------
    def cache_path(self, root: str) -> str:
        return os.path.join(self.path, "cache", cache_name(root))

    def read_cache(self, root: str) -> dict | None:
        """The stat-cache file of root ({"tree", "depth", "chain", "time_ns", "lines"}), or None."""
        try:
            with open(self.cache_path(root), "rb") as f:
                return parse_cache(root, f.read())
        except (OSError, ValueError):
            return None

    def write_cache(
        self, root: str, tree: str, depth: int, chain_bytes: int, text: bytes, recorded: bool = False
    ) -> None:
        """Replace root's stat-cache file with the listing `text` of the stored tree `tree` (temp, fsync,
        rename): the next snapshot of root compares its walk with it. `recorded`: a rollback wrote that tree
        for this file alone; the snapshot that moves the file on removes it unless something else uses it."""
        data = cache_bytes(root, tree, depth, chain_bytes, time.time_ns(), recorded, text)
        os.makedirs(os.path.join(self.path, "cache"), mode=0o700, exist_ok=True)
        self.atomic_write(self.cache_path(root), data, mode=0o600)

    def drop_cache(self, root: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.cache_path(root))

    def caches(self) -> list[tuple[str, dict | None]]:
        """(path, parsed or None) of every stat-cache file; parsed with its own root from the header."""
        d = os.path.join(self.path, "cache")
        out = []
        for n in sorted(os.listdir(d)) if os.path.isdir(d) else []:
            path = os.path.join(d, n)
            try:
                with open(path, "rb") as f:
                    data = f.read()
                head = data[: data.index(b"\n")].decode("utf-8", "surrogateescape")  # root: the last field
                out.append((path, parse_cache(unesc(head.rsplit("\t", 1)[1]), data)))
            except (OSError, ValueError, IndexError):
                out.append((path, None))
        return out

    # -- manifests -----------------------------------------------------------------------------------------
    def snapshot_ids(self) -> list[str]:
        d = os.path.join(self.path, "snapshots")
        if not os.path.isdir(d):
            return []
        return sorted(n[:-5] for n in os.listdir(d) if n.endswith(".json") and SNAPID_RE.fullmatch(n[:-5]))

    def load_manifest(self, snapid: str) -> dict:
        try:
            with open(os.path.join(self.path, "snapshots", snapid + ".json"), "rb") as f:
                return json.loads(f.read())
        except FileNotFoundError:
            raise SnapshotError(
                f"There is no snapshot {snapid} in {self.path}: run make snapshots to list them."
            ) from None

    def manifests(self) -> list[dict]:
        return [self.load_manifest(i) for i in self.snapshot_ids()]

    def resolve(self, ref: str) -> str:
        """'latest', a full id, a label or a unique id prefix -> id; one clear sentence otherwise."""
        return self.resolve_ref(ref)[0]

    def resolve_ref(self, ref: str) -> tuple[str, str]:
        """(id, note) for 'latest', a full id, a label (the newest snapshot carrying it) or a unique id prefix,
        in that order; the note is a sentence when the choice needs saying (a label on several snapshots),
        else "". One clear sentence naming what exists otherwise."""
        ids = self.snapshot_ids()
        if not ids:
            raise SnapshotError(
                f"The snapshot store at {self.path} holds no snapshot yet: run make snapshot first."
            )
        if ref in (None, "", "latest"):
            return ids[-1], ""
        if not REF_RE.fullmatch(str(ref)) or ".." in str(ref):
            raise SnapshotError(
                f"{ref!r} is not a snapshot id or label: use an id or a label from make snapshots, or latest."
            )
        if ref in ids:
            return ref, ""
        labels = self.labels()
        named = [i for i, label in labels if label == ref]
        if named:
            if len(named) == 1:
                return named[0], ""
            return named[-1], (
                f"The label {ref!r} names {len(named)} snapshots ({', '.join(named)}): the newest, {named[-1]}, "
                "is used (give an id to choose another)."
            )
        hits = [i for i in ids if i.startswith(ref)]
        if len(hits) == 1:
            return hits[0], ""
        if not hits:
            names = sorted({label for _, label in labels if label}, key=str.lower)
            known = f"the labels there are {', '.join(names)}" if names else "no snapshot there has a label"
            raise SnapshotError(
                f"There is no snapshot {ref!r} in {self.path} (no id or label matches): {known}; the newest id "
                f"is {ids[-1]} (make snapshots lists all {len(ids)}); or use latest."
            )
        raise SnapshotError(f"Snapshot id {ref!r} is ambiguous ({len(hits)} match): give more of the id.")

    def labels(self) -> list[tuple[str, str]]:
        """(id, label) of every snapshot, oldest first (a manifest that cannot be read has no label)."""
        out = []
        for snapid in self.snapshot_ids():
            try:
                out.append((snapid, self.load_manifest(snapid).get("label", "") or ""))
            except (SnapshotError, ValueError):
                out.append((snapid, ""))
        return out

    def write_manifest(self, manifest: dict) -> None:
        data = json.dumps(manifest, indent=1, sort_keys=True).encode()
        self.atomic_write(os.path.join(self.path, "snapshots", manifest["id"] + ".json"), data, mode=0o444)

    def set_pinned(self, ref: str, pinned: bool) -> dict:
        with self.locked(True):
            self.warnings += self.recover()
            m = self.load_manifest(self.resolve(ref))
            changed = bool(m.get("pinned")) != bool(pinned)
            if changed:
                m["pinned"] = bool(pinned)
                self.write_manifest(m)
            return {"changed": changed, "id": m["id"], "pinned": m["pinned"]}

    def parent_trees(self, roots: list[str]) -> dict:
        """For each root, the tree of the newest snapshot that captured it (the stat cache)."""
        found: dict[str, str] = {}
        for snapid in reversed(self.snapshot_ids()):
            try:
                m = self.load_manifest(snapid)
            except (SnapshotError, ValueError):
                continue
            for r in m.get("roots", []):
                if r["path"] in roots and r["path"] not in found and r.get("tree"):
                    found[r["path"]] = (r["tree"], snapid)
            if len(found) == len(roots):
                break
        return found

    # -- interrupted runs ----------------------------------------------------------------------------------
    def recover(self) -> list[str]:
        """Remove what interrupted runs left (temp files, files a killed run created, rollback temp files in
        live trees); one sentence per finding. Only under the exclusive lock."""
        from .journal import recover

        return recover(self)

    def begin_run(self, kind: str):
        """Journal the store files this run creates (self.run) until end_run()."""
        from .journal import RunJournal

        self.run = RunJournal(self, kind)
        return self.run

    def end_run(self) -> None:
        """The run is complete: its journal goes."""
        run, self.run = self.run, None
        if run is not None:
            run.close()

    def abort_run(self) -> None:
        """The run failed (an exception): settle its journal now, as the next run's recovery would."""
        from .journal import settle

        run, self.run = self.run, None
        if run is not None and run.fd is not None:
            os.close(run.fd)
            run.fd = None
            settle(self, run.path)
            self._trees.clear()
            self._index = None

    # ======================================================================================================
    # Operations (each in its own module, imported when called)

    def snapshot(self, roots: list[str], *args, **kwargs) -> dict:
        """Take a snapshot of roots (label, kind, pinned, facts, dry_run, only_if_changed): snapshotter.take."""
        from .snapshotter import take

        return take(self, roots, *args, **kwargs)

    def list(self) -> list[dict]:
        if not os.path.exists(os.path.join(self.path, "config.json")):
            return []
        with self.locked(False):
            out = []
            for m in self.manifests():
                s = m.get("stats", {})
                out.append(
                    {
                        "id": m["id"],
                        "time": m["time"],
                        "label": m.get("label", ""),
                        "kind": m.get("kind", ""),
                        "files": s.get("files", 0),
                        "logical_bytes": s.get("logical_bytes", 0),
                        "new_bytes": s.get("new_bytes", 0),
                        "pinned": bool(m.get("pinned")),
                    }
                )
            return out

    def check(self, deep: bool = False) -> dict:
        from .check import check

        self.require()
        with self.locked(False):
            return check(self, deep)

    def prune(self, policy: dict | None = None, dry_run: bool = False, now_ns: int | None = None) -> dict:
        from .prune import prune

        self.require()
        with self.locked(not dry_run):
            notes = [] if dry_run else self.recover()
            result = prune(self, policy, dry_run, time.time_ns() if now_ns is None else now_ns)
            result["warnings"] = notes + result.get("warnings", [])
            return result

    def rollback(
        self,
        ref: str,
        only_paths: list[str] | None = None,
        dry_run: bool = False,
        facts: dict | None = None,
        before_snapshot: bool = True,
        keep: list[str] | None = None,
    ) -> dict:
        """Roll the live roots (or only_paths in them) back to a snapshot; `keep` (user data) stays as it is."""
        from .rollback import rollback

        return rollback(self, ref, only_paths, dry_run, facts, before_snapshot, keep)

    def restore(self, ref: str, dest: str, threads: int | None = None, sync: bool = True) -> dict:
        """Restore one snapshot's roots under a new directory DEST (DEST/<root path without leading '/'>)."""
        from .restore import restore

        return restore(self, ref, dest, threads, sync)
