"""The store on disk: layout, configuration, locking, atomic writes, the index, blobs, trees, manifests.

The operations (snapshot, restore, rollback, check, prune) live in modules of their own and are imported
when called, so a no-change snapshot loads only what it runs. Invariants kept here:
- Write once: every file under packs/ objects/ trees/ index/ is written to tmp/, fsynced, renamed to its
  content-addressed name (`publish`, `atomic_write`) and the directory fsynced; an existing name is never
  rewritten. A manifest is written last, so a snapshot exists exactly when its manifest does.
- Locking: every operation holds flock on STORE/lock, exclusive to write, shared to read; the holder's pid
  and host are written into the lock file so a waiting run can say who holds it.
- Recovery: an exclusive operation first undoes what an interrupted one left (journal/), before anything else.
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
    FORMAT,
    REF_RE,
    SNAPID_RE,
    VERSION,
    SnapshotError,
    hostname,
    parse_line,
    token,
    tree_text,
)


class Store:
    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        self.tmpdir = os.path.join(self.path, "tmp")
        self._index = None  # blob id -> (pack id, offset, length); loaded only on a stat-cache miss
        self._lock_mode = None
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
            for d in ("packs", "objects", "trees", "index", "snapshots", "journal", "tmp"):
                os.makedirs(os.path.join(self.path, d), mode=0o700, exist_ok=True)
            with open(os.path.join(self.path, "lock"), "a"):
                pass
            data = json.dumps({"format": FORMAT, "version": VERSION, "id": token(16)}).encode()
            self.atomic_write(cfg, data, mode=0o444)
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
        if c.get("format") != FORMAT or c.get("version") != VERSION:
            raise SnapshotError(
                f"{self.path} is not an sdenv snapshot store of format version {VERSION}: "
                "point sdenv_snapshot_store at an sdenv store or at a new directory."
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
        os.rename(tmp, final)
        fsync_dir(d)
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

    def copy_blob_to(self, blob: str, size: int, dst_fd: int, pack_fds: dict) -> None:
        from .fileio import clone, copy_fd

        if size == 0:
            return
        if blob not in self.load_index():
            path = self.p("objects", blob)
            try:
                src = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                raise SnapshotError(
                    f"Content {blob[:12]} is missing from the store at {self.path}: run make snapshot-check."
                ) from None
            try:
                if not clone(src, dst_fd):
                    copy_fd(src, dst_fd)
            finally:
                os.close(src)
            return
        write_all(dst_fd, self.read_blob(blob, size, pack_fds))

    # -- trees ---------------------------------------------------------------------------------------------
    def read_tree(self, tree: str) -> list[str]:
        try:
            with open(self.p("trees", tree), "rb") as f:
                raw = tree_text(f.read())
        except FileNotFoundError:
            raise SnapshotError(
                f"Tree {tree[:12]} is missing from {self.path}: run make snapshot-check."
            ) from None
        text = raw.decode("utf-8", "surrogateescape")
        return text.splitlines(keepends=True)

    def read_tree_map(self, tree: str | None) -> dict:
        if not tree:
            return {}
        return {t[0]: t for t in map(parse_line, self.read_tree(tree))}

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
        """'latest', a full id or a unique prefix -> id; one clear sentence otherwise."""
        ids = self.snapshot_ids()
        if not ids:
            raise SnapshotError(
                f"The snapshot store at {self.path} holds no snapshot yet: run make snapshot first."
            )
        if ref in (None, "", "latest"):
            return ids[-1]
        if not REF_RE.fullmatch(str(ref)) or ".." in str(ref):
            raise SnapshotError(f"{ref!r} is not a snapshot id: use an id from make snapshots, or latest.")
        hits = [i for i in ids if i.startswith(ref)]
        if len(hits) == 1:
            return hits[0]
        if not hits:
            raise SnapshotError(
                f"There is no snapshot {ref!r} in {self.path}: run make snapshots to list them."
            )
        raise SnapshotError(f"Snapshot id {ref!r} is ambiguous ({len(hits)} match): give more of the id.")

    def write_manifest(self, manifest: dict) -> None:
        data = json.dumps(manifest, indent=1, sort_keys=True).encode()
        self.atomic_write(os.path.join(self.path, "snapshots", manifest["id"] + ".json"), data, mode=0o444)

    def set_pinned(self, ref: str, pinned: bool) -> dict:
        with self.locked(True):
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

    # -- journal (rollbacks in progress) -------------------------------------------------------------------
    def recover(self) -> list[str]:
        """Undo what interrupted runs left in live trees; return what was found (one sentence each)."""
        d = os.path.join(self.path, "journal")
        names = sorted(n for n in os.listdir(d) if n.endswith(".json")) if os.path.isdir(d) else []
        if not names:
            return []
        from .rollback import recover_rollback

        return [recover_rollback(os.path.join(d, name)) for name in names]

    # ======================================================================================================
    # Operations (each in its own module, imported when called)

    def snapshot(
        self,
        roots: list[str],
        label: str = "",
        kind: str = "manual",
        pinned: bool = False,
        facts: dict | None = None,
        dry_run: bool = False,
        only_if_changed: bool = False,
        _locked: bool = False,
        _listings: dict | None = None,
    ) -> dict:
        from .snapshotter import take

        return take(self, roots, label, kind, pinned, facts, dry_run, only_if_changed, _locked, _listings)

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
    ) -> dict:
        from .rollback import rollback

        return rollback(self, ref, only_paths, dry_run, facts, before_snapshot)

    def restore(self, ref: str, dest: str, threads: int = 2, sync: bool = True) -> dict:
        """Restore one snapshot's roots under a new directory DEST (DEST/<root path without leading '/'>)."""
        from .restore import restore

        return restore(self, ref, dest, threads, sync)
