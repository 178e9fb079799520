"""Content-addressed snapshot store for the sdenv working environment (format: roles/snapshot/README.md).

Pure standard library; runs on the target host (Python >= 3.9). The README states the on-disk format and
the invariants this code keeps: write-once content named by SHA-256, data before index before manifest, flock
locking, and a live tree that only ever sees complete files (temp + rename).

Also a small command line for the benchmark and for debugging on a host:
    python3 snapshot_store.py STORE snapshot ROOT... [--label L]
    python3 snapshot_store.py STORE list | check [--deep] | prune | restore ID DEST | rollback ID [--path P]
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import operator
import os
import re
import stat
import sys
import threading
import time
import zlib

# Start-up cost matters: a no-change snapshot is a fresh process whose real work is ~70 ms of lstat, so
# modules only some operations need (concurrent.futures, the retention policy, argparse, ctypes) are imported
# where they are used, and secrets/socket/calendar are replaced by os.urandom, os.uname and _timegm below.

FORMAT = "sdenv-snapshot-store"
VERSION = 1
PACK_SIZE = 16 * 1024 * 1024
LARGE = 1024 * 1024
CHUNK = 4 * 1024 * 1024
PACK_MAGIC = b"SDENVPK1"
RACY_NS = 2 * 10**9
TMP_PREFIX = ".sdenv-rb."
LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
SNAPID_RE = re.compile(r"^\d{8}T\d{6}\.\d{6}Z-[0-9a-f]{4}$")
HEX64_RE = re.compile(r"^[0-9a-f]{64}$")
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_HAS_XATTR = hasattr(os, "listxattr")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_entry_name = operator.attrgetter("name")
_FICLONE = 0x40049409  # Linux ioctl number (btrfs, XFS); ext4 and tmpfs answer EOPNOTSUPP.


class SnapshotError(Exception):
    """A failure the user can act on; str() is one sentence naming the thing and what to do."""


# ---------------------------------------------------------------------------------------------------------
# Small helpers


def _esc(s: str) -> str:
    if "\\" in s or "\t" in s or "\n" in s:
        return s.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
    return s


def _unesc(s: str) -> str:
    if "\\" not in s:
        return s
    out, i = [], 0
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            n = s[i + 1]
            out.append({"t": "\t", "n": "\n", "\\": "\\"}.get(n, n))
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _token(nbytes: int) -> str:
    """Random hex, as secrets.token_hex (which is os.urandom too) without importing secrets."""
    return os.urandom(nbytes).hex()


def _hostname() -> str:
    # What socket.gethostname() returns on Linux and macOS (both read the uname nodename).
    return os.uname().nodename


def _timegm(tm) -> int:
    """calendar.timegm for a UTC struct_time (days from the civil date), without importing calendar."""
    y, m = tm.tm_year, tm.tm_mon
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + tm.tm_mday - 1
    days = era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468
    return days * 86400 + tm.tm_hour * 3600 + tm.tm_min * 60 + tm.tm_sec


def _executor(workers: int, prefix: str):
    import concurrent.futures

    return concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix=prefix)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        b = os.read(fd, CHUNK)
        if not b:
            return b"".join(chunks)
        chunks.append(b)


def _xattrs_get(name, dir_fd=None, fd=None) -> str:
    """Extended attributes as 'hexname:hexvalue,...'; empty where the platform has none."""
    if not _HAS_XATTR:
        return ""
    target = fd if fd is not None else name
    kwargs = {} if fd is not None else {"follow_symlinks": False}
    try:
        if dir_fd is not None and fd is None:
            # os.listxattr has no dir_fd: go through /proc/self/fd for a race-free path on Linux.
            target = f"/proc/self/fd/{dir_fd}/{name}"
        names = os.listxattr(target, **kwargs)
        if not names:
            return ""
        pairs = []
        for n in sorted(names):
            v = os.getxattr(target, n, **kwargs)
            pairs.append(f"{n.encode('utf-8', 'surrogateescape').hex()}:{v.hex()}")
        return ",".join(pairs)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOENT, getattr(errno, "ENODATA", 61)):
            return ""
        raise


def _xattrs_set(target, encoded: str, follow: bool, warnings: list) -> None:
    if not _HAS_XATTR:
        return
    want = {}
    for pair in encoded.split(",") if encoded else []:
        n, _, v = pair.partition(":")
        want[bytes.fromhex(n).decode("utf-8", "surrogateescape")] = bytes.fromhex(v)
    kwargs = {} if isinstance(target, int) else {"follow_symlinks": follow}
    try:
        have = set(os.listxattr(target, **kwargs))
        for n in have - set(want):
            os.removexattr(target, n, **kwargs)
        for n, v in want.items():
            os.setxattr(target, n, v, **kwargs)
    except OSError as e:
        warnings.append(f"extended attributes not restored on {target}: {e.strerror}")


def _clone(src_fd: int, dst_fd: int) -> bool:
    """A copy-on-write clone of src into dst where the filesystem has them (FICLONE: btrfs, XFS)."""
    if sys.platform.startswith("linux"):
        try:
            fcntl.ioctl(dst_fd, _FICLONE, src_fd)
            return True
        except OSError:
            pass
    return False


def _pipeline():
    """The toolkit's sdenv_pipeline module (HashWritePipeline, cpus), imported where it is used. Run as a
    module on a host it sits beside this one in ansible.module_utils; run anywhere else (unit tests, the
    command line) it is imported from the toolkit's plugins/module_utils, without first trying (and paying
    ~10 ms for) an import of ansible, which a no-change snapshot must not."""
    if __name__.startswith("ansible.module_utils."):
        from ansible.module_utils import sdenv_pipeline
    else:
        toolkit = os.path.join(
            os.path.dirname(os.path.abspath(__file__)), *[".."] * 3, "plugins", "module_utils"
        )
        if toolkit not in sys.path:
            sys.path.append(toolkit)
        import sdenv_pipeline
    return sdenv_pipeline


def _copy_fd(src_fd: int, dst_fd: int, dst_path: str | None = None, h=None) -> None:
    """Copy src (from its start) into dst, feeding h with exactly the bytes written when given; dst written
    with O_DIRECT where possible, so the fsync that follows finds little to do (sdenv_pipeline)."""
    pipe = _pipeline().HashWritePipeline(dst_fd, dst_path, 0, h)
    try:
        off = 0
        while n := os.preadv(src_fd, [pipe.take()], off):
            pipe.give(n)
            off += n
    finally:
        pipe.close()


def _syncfs(fd: int) -> None:
    """Flush the filesystem holding fd in one call (Linux syncfs); elsewhere fall back to a global sync."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if hasattr(libc, "syncfs") and libc.syncfs(fd) == 0:
            return
    except (OSError, AttributeError):
        pass
    os.sync()


def parse_line(line: str) -> tuple:
    """One tree line -> (path, type, mode, uid, gid, size, mtime_ns, ctime_ns, ino, ref, xattrs)."""
    f = line.rstrip("\n").split("\t")
    if len(f) != 11 or f[1] not in ("f", "d", "l"):
        raise ValueError(f"malformed tree line {line[:80]!r}")
    return (
        _unesc(f[0]),
        f[1],
        int(f[2], 8),
        int(f[3]),
        int(f[4]),
        int(f[5]),
        int(f[6]),
        int(f[7]),
        int(f[8]),
        _unesc(f[9]),
        f[10],
    )


def _tree_text(data: bytes) -> bytes:
    """A tree file's listing. Trees are written as plain text (every snapshot reads its parent's tree, and
    inflating one took 13 ms of a ~100 ms no-change snapshot while zlib only halved it: the blob ids are hex);
    trees of stores written before that are zlib streams. A listing starts with its root's line (".\t")."""
    return data if data.startswith(b".\t") else zlib.decompress(data)


def _key_of(line: str) -> str:
    j = line.rfind("\t", 0, line.rfind("\t"))
    return line[:j]


def _id_time_ns(snapid: str) -> int:
    """The time an id names, in ns (ids are validated by SNAPID_RE; time.strptime would cost 5 ms of imports)."""
    secs = time.struct_time(
        (
            int(snapid[0:4]),
            int(snapid[4:6]),
            int(snapid[6:8]),
            int(snapid[9:11]),
            int(snapid[11:13]),
            int(snapid[13:15]),
            0,
            0,
            0,
        )
    )
    return _timegm(secs) * 10**9 + int(snapid[16:22]) * 1000


def validate_label(label: str) -> str:
    if label is None or label == "":
        return ""
    if not isinstance(label, str) or not LABEL_RE.match(label) or ".." in label:
        raise SnapshotError(
            f"The snapshot label {label!r} is not allowed: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit and without '..'."
        )
    return label


# ---------------------------------------------------------------------------------------------------------
# Tree diff (also what rollback acts on)


def _comparable(t: tuple) -> tuple:
    # Everything that restore reproduces; ctime and inode only serve the stat cache.
    _path, typ, mode, uid, gid, size, mtime, _c, _i, ref, xattrs = t
    return (typ, mode, uid, gid, size if typ == "f" else 0, mtime if typ != "d" else 0, ref, xattrs)


def diff_listings(old: dict, new: dict) -> dict:
    """Compare two {path: parsed line} maps: paths added, removed, with new content, with new metadata."""
    added = sorted(p for p in new if p not in old)
    removed = sorted(p for p in old if p not in new)
    content, meta = [], []
    for p, n in new.items():
        o = old.get(p)
        if o is None:
            continue
        if o[1] != n[1] or o[9] != n[9] or (n[1] == "f" and o[5] != n[5]):
            content.append(p)
        elif _comparable(o) != _comparable(n):
            meta.append(p)
    return {"added": added, "removed": removed, "content": sorted(content), "metadata": sorted(meta)}


# ---------------------------------------------------------------------------------------------------------
# The store


class Store:
    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        self.tmpdir = os.path.join(self.path, "tmp")
        self._index = None  # blob id -> (pack id, offset, length); loaded only on a stat-cache miss
        self._lock_fd = None
        self._lock_mode = None
        self.warnings: list[str] = []

    # -- layout --------------------------------------------------------------------------------------------
    def _p(self, kind: str, name: str) -> str:
        return os.path.join(self.path, kind, name[:2], name)

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
            data = json.dumps({"format": FORMAT, "version": VERSION, "id": _token(16)}).encode()
            self._atomic_write(cfg, data, mode=0o444)
        except OSError as e:
            raise self._oserror(e, "initialise the snapshot store") from None
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

    def _require(self) -> None:
        cfg = os.path.join(self.path, "config.json")
        if not os.path.exists(cfg):
            raise SnapshotError(f"There is no snapshot store at {self.path}: run make snapshot first.")
        self._check_config(cfg)

    def _oserror(self, e: OSError, doing: str) -> SnapshotError:
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
                raise self._oserror(e, "open its lock file") from None
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
                    os.pwrite(fd, f"pid {os.getpid()} on {_hostname()}\n".encode(), 0)
            self._lock_mode = "ex" if exclusive else "sh"
            yield
        finally:
            self._lock_mode = None
            os.close(fd)  # closing releases the flock

    # -- atomic writes -------------------------------------------------------------------------------------
    def _tmpfile(self) -> tuple[int, str]:
        name = os.path.join(self.tmpdir, f"{os.getpid()}-{_token(8)}")
        return os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600), name

    def _atomic_write(self, final: str, data: bytes, mode: int = 0o444) -> None:
        """temp -> fsync -> rename -> fsync dir; the temp lives next to the final name's store."""
        d = os.path.dirname(final)
        os.makedirs(d, mode=0o700, exist_ok=True)
        tmp = os.path.join(d if not os.path.isdir(self.tmpdir) else self.tmpdir, f".{_token(8)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            _write_all(fd, data)
            os.fchmod(fd, mode)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        os.close(fd)
        os.rename(tmp, final)
        _fsync_dir(d)

    def _publish(self, tmp: str, final: str) -> bool:
        """Move a fsynced temp to its content-addressed name; False (temp dropped) when it already exists."""
        d = os.path.dirname(final)
        if os.path.exists(final):
            os.unlink(tmp)
            return False
        os.makedirs(d, mode=0o700, exist_ok=True)
        os.rename(tmp, final)
        _fsync_dir(d)
        return True

    # -- index ---------------------------------------------------------------------------------------------
    def _index_files(self) -> list[str]:
        d = os.path.join(self.path, "index")
        return sorted(n for n in os.listdir(d) if n.endswith(".json")) if os.path.isdir(d) else []

    def load_index(self) -> dict:
        if self._index is None:
            idx = {}
            for name in self._index_files():
                for packid, info in self._read_index_file(name)["packs"].items():
                    for blob, off, length in info["blobs"]:
                        idx[blob] = (packid, off, length)
            self._index = idx
        return self._index

    def _read_index_file(self, name: str) -> dict:
        with open(os.path.join(self.path, "index", name), "rb") as f:
            return json.loads(f.read())

    def has_blob(self, blob: str) -> bool:
        return blob in self.load_index() or os.path.exists(self._p("objects", blob))

    # -- blobs ---------------------------------------------------------------------------------------------
    def read_blob(self, blob: str, size: int, pack_fds: dict) -> bytes:
        loc = self.load_index().get(blob)
        if loc is not None:
            packid, off, length = loc
            fd = pack_fds.get(packid)
            if fd is None:
                fd = pack_fds[packid] = os.open(self._p("packs", packid), os.O_RDONLY)
            data = os.pread(fd, length, off)
        else:
            fd = os.open(self._p("objects", blob), os.O_RDONLY)
            try:
                data = _read_all(fd)
            finally:
                os.close(fd)
        if len(data) != size:
            raise SnapshotError(
                f"Blob {blob[:12]} in {self.path} is damaged (size): run make snapshot-check."
            )
        return data

    def copy_blob_to(self, blob: str, size: int, dst_fd: int, pack_fds: dict) -> None:
        if size == 0:
            return
        if blob not in self.load_index():
            path = self._p("objects", blob)
            try:
                src = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                raise SnapshotError(
                    f"Content {blob[:12]} is missing from the store at {self.path}: run make snapshot-check."
                ) from None
            try:
                if not _clone(src, dst_fd):
                    _copy_fd(src, dst_fd)
            finally:
                os.close(src)
            return
        _write_all(dst_fd, self.read_blob(blob, size, pack_fds))

    # -- trees ---------------------------------------------------------------------------------------------
    def read_tree(self, tree: str) -> list[str]:
        try:
            with open(self._p("trees", tree), "rb") as f:
                raw = _tree_text(f.read())
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
        return sorted(n[:-5] for n in os.listdir(d) if n.endswith(".json") and SNAPID_RE.match(n[:-5]))

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
        if not re.match(r"^[0-9A-Za-z.-]{1,40}$", str(ref)) or ".." in str(ref):
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
        self._atomic_write(os.path.join(self.path, "snapshots", manifest["id"] + ".json"), data, mode=0o444)

    def set_pinned(self, ref: str, pinned: bool) -> dict:
        with self.locked(True):
            m = self.load_manifest(self.resolve(ref))
            changed = bool(m.get("pinned")) != bool(pinned)
            if changed:
                m["pinned"] = bool(pinned)
                self.write_manifest(m)
            return {"changed": changed, "id": m["id"], "pinned": m["pinned"]}

    # -- journal (rollbacks in progress) -------------------------------------------------------------------
    def recover(self) -> list[str]:
        """Remove temp files an interrupted rollback left in live trees; return what was found."""
        notes = []
        d = os.path.join(self.path, "journal")
        for name in sorted(os.listdir(d)) if os.path.isdir(d) else []:
            if not name.endswith(".json"):
                continue
            try:
                with open(os.path.join(d, name), "rb") as f:
                    j = json.loads(f.read())
            except (OSError, ValueError):
                j = {}
            token = j.get("token", "")
            removed = 0
            for root in j.get("roots", []):
                removed += _remove_temp_files(root, TMP_PREFIX + token + ".") if token else 0
                staging = j.get("staging", {}).get(root)
                if staging and os.path.lexists(staging):
                    _rmtree(staging)
            notes.append(
                f"A rollback to {j.get('target', '?')} was interrupted: {removed} temp files removed; the tree mixes "
                f"old and new files (each complete): run the rollback again, or roll back to {j.get('before', '?')}."
            )
            os.unlink(os.path.join(d, name))
        return notes

    # ======================================================================================================
    # Snapshot

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
        label = validate_label(label)
        roots = _normalize_roots(roots)
        if dry_run:
            if not os.path.exists(os.path.join(self.path, "config.json")):
                return {"changed": True, "dry_run": True, "would_create_store": True, "roots": roots}
            with self.locked(False):
                return _Snapshotter(self, roots, dry_run=True).run()
        if not _locked:
            self.init()
            with self.locked(True):
                self.warnings += self.recover()
                return self.snapshot(roots, label, kind, pinned, facts, False, only_if_changed, _locked=True)
        t0 = time.monotonic()
        snap = _Snapshotter(self, roots)
        try:
            result = snap.run()
        except OSError as e:
            snap.abort()
            raise self._oserror(e, "write the snapshot") from None
        except BaseException:
            snap.abort()
            raise
        if _listings is not None:
            _listings.update(snap.listings)
        if only_if_changed:
            same = self._same_as_latest(kind, result["roots"])
            if same:
                return {
                    "changed": False,
                    "id": same,
                    "manifest": self.load_manifest(same),
                    "warnings": snap.warnings,
                }
        now_ns = time.time_ns()
        # Ids sort by time (to the microsecond) so "latest" and the listing order need no manifest reads;
        # a clock that went backwards still yields an id after the newest one.
        ids = self.snapshot_ids()
        now_ns = max(now_ns, _id_time_ns(ids[-1]) + 1000) if ids else now_ns
        secs, frac = divmod(now_ns, 10**9)
        snapid = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime(secs))}.{frac // 1000:06d}Z-{_token(2)}"
        facts = dict(facts or {})
        facts.setdefault("models", result.pop("models"))
        manifest = {
            "version": VERSION,
            "id": snapid,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now_ns / 1e9)),
            "time_ns": now_ns,
            "label": label,
            "kind": kind,
            "pinned": bool(pinned),
            "host": _hostname(),
            "parent": result.pop("parent"),
            "roots": result["roots"],
            "stats": dict(result["stats"], seconds=round(time.monotonic() - t0, 3)),
            "facts": facts,
        }
        try:
            self.write_manifest(manifest)
        except OSError as e:
            raise self._oserror(e, "write the snapshot manifest") from None
        return {
            "changed": True,
            "id": snapid,
            "manifest": manifest,
            "warnings": self.warnings + snap.warnings,
        }

    def _same_as_latest(self, kind: str, roots: list) -> str | None:
        """Id of the newest snapshot of this kind when it holds exactly these contents (ctime/inode aside)."""
        for snapid in reversed(self.snapshot_ids()):
            m = self.load_manifest(snapid)
            if m.get("kind") != kind:
                continue
            old = {r["path"]: r.get("tree") for r in m["roots"]}
            if set(old) != {r["path"] for r in roots}:
                return None
            for r in roots:
                a, b = old[r["path"]], r.get("tree")
                if a == b:
                    continue
                if not a or not b:
                    return None
                ma, mb = self.read_tree_map(a), self.read_tree_map(b)
                if ma.keys() != mb.keys() or any(_comparable(ma[k]) != _comparable(mb[k]) for k in ma):
                    return None
            return snapid
        return None

    # ======================================================================================================
    # Listing, check, prune

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
        self._require()
        with self.locked(False):
            return _check(self, deep)

    def prune(self, policy: dict | None = None, dry_run: bool = False, now_ns: int | None = None) -> dict:
        self._require()
        with self.locked(not dry_run):
            notes = [] if dry_run else self.recover()
            result = _prune(self, policy, dry_run, time.time_ns() if now_ns is None else now_ns)
            result["warnings"] = notes + result.get("warnings", [])
            return result

    # ======================================================================================================
    # Restore and rollback

    def rollback(
        self,
        ref: str,
        only_paths: list[str] | None = None,
        dry_run: bool = False,
        facts: dict | None = None,
        before_snapshot: bool = True,
    ) -> dict:
        self._require()
        if dry_run:
            with self.locked(False):
                target = self.load_manifest(self.resolve(ref))
                selection = _selection(target, only_paths)
                live = _Snapshotter(self, [r["path"] for r in target["roots"]], dry_run=True)
                live.run()
                plan = _plan(self, target, live.listings, selection)
                return {
                    "changed": plan["count"] > 0,
                    "dry_run": True,
                    "target": target["id"],
                    "plan": plan["summary"],
                }
        with self.locked(True):
            notes = self.recover()
            target = self.load_manifest(self.resolve(ref))
            selection = _selection(target, only_paths)
            roots = [r["path"] for r in target["roots"]]
            before = None
            current: dict = {}
            if before_snapshot:
                b = self.snapshot(
                    roots,
                    label="before-rollback",
                    kind="before-rollback",
                    facts=facts,
                    _locked=True,
                    _listings=current,
                )
                before = b["manifest"]
            else:
                live = _Snapshotter(self, roots, dry_run=True)
                live.run()
                current = live.listings
            plan = _plan(self, target, current, selection)
            result = _apply(self, target, plan, before["id"] if before else None)
            result.update(
                changed=plan["count"] > 0,
                target=target["id"],
                before=before["id"] if before else None,
                plan=plan["summary"],
                warnings=notes + self.warnings + result.get("warnings", []),
            )
            return result

    def restore(self, ref: str, dest: str, threads: int = 2, sync: bool = True) -> dict:
        """Restore one snapshot's roots under a new directory DEST (DEST/<root path without leading '/'>)."""
        self._require()
        with self.locked(False):
            m = self.load_manifest(self.resolve(ref))
            if os.path.lexists(dest):
                raise SnapshotError(
                    f"The restore destination {dest} exists: give a path that does not exist yet."
                )
            staging = dest + ".sdenv-restore-" + _token(4)
            os.makedirs(staging, mode=0o700)
            total = 0
            for r in m["roots"]:
                if not r.get("present"):
                    continue
                rel = r["path"].lstrip("/")
                parent = os.path.join(staging, os.path.dirname(rel))
                os.makedirs(parent, exist_ok=True)
                total += _restore_fresh(self, self.read_tree(r["tree"]), os.path.join(staging, rel), threads)
            if sync:
                fd = os.open(staging, os.O_RDONLY)
                try:
                    _syncfs(fd)
                finally:
                    os.close(fd)
            os.rename(staging, dest)
            return {"changed": True, "id": m["id"], "files": total, "dest": dest}


# ---------------------------------------------------------------------------------------------------------
# Snapshot engine


def _normalize_roots(roots: list[str]) -> list[str]:
    out = []
    for r in roots:
        if not isinstance(r, str) or not r.startswith("/"):
            raise SnapshotError(
                f"Snapshot path {r!r} is not absolute: give absolute paths in sdenv_snapshot_paths."
            )
        n = os.path.normpath(r)
        if n == "/":
            raise SnapshotError("Snapshot path / is too wide: list the directories to capture instead.")
        if n not in out:
            out.append(n)
    for a in out:
        for b in out:
            if a != b and b.startswith(a + "/"):
                raise SnapshotError(f"Snapshot paths {a} and {b} overlap: list only {a}.")
    return out


def _scan(dfd: int) -> list:
    """[(name, lstat result)] of one open directory, sorted by name; entries that vanish are left out."""
    with os.scandir(dfd) as it:
        entries = sorted(it, key=_entry_name)
    out = []
    for e in entries:
        try:
            out.append((e.name, e.stat(follow_symlinks=False)))
        except FileNotFoundError:
            continue
    return out


# A walk whose parent listing has at least this many lines is split in two halves by walk order: a forked
# child checks that the second half is unchanged while this process walks the first (one lstat per entry
# is most of a no-change snapshot; fork costs ~2 ms).
SPLIT_MIN_LINES = 5000


class _Mismatch(Exception):
    pass


def _walk_suffix(pfd: int, base: str, path: list, visit) -> None:
    """Call visit(dfd, name, rel, st) for every entry at or after `path` (components below the root) in walk
    order (DFS, siblings by name), deepest level first: `path` itself and its later siblings (subtrees
    included), then each ancestor's later siblings. Ancestors that are no longer directories are skipped,
    as the walk that stopped before `path` did not descend into them either."""
    fds = []
    try:
        fd = os.open(base, _DIR_FLAGS, dir_fd=pfd)
        fds.append(fd)
        for comp in path[:-1]:
            try:
                fd = os.open(comp, _DIR_FLAGS, dir_fd=fds[-1])
            except OSError:
                break
            fds.append(fd)
        for level in reversed(range(len(fds))):
            start, inclusive = path[level], level == len(path) - 1
            prefix = "".join(c + "/" for c in path[:level])
            for ename, est in _scan(fds[level]):
                if ename > start or (inclusive and ename == start):
                    visit(fds[level], ename, prefix + ename, est)
    finally:
        for fd in fds:
            os.close(fd)


_COUNTED_AS = {"f": "files", "d": "dirs", "l": "symlinks"}


def _stat_key(rel_e: str, st):
    """(type, size, stat-cache key) of an entry; None for what a tree does not hold (sockets, FIFOs,
    devices). The key is a line's first nine fields and the TAB after them, so it is a prefix of exactly the
    lines with those fields: equal key => same content as recorded (ctime catches writes, chmod, xattrs).
    The walk's fast path for files and symlinks (_walk_root) builds the same string inline, for speed."""
    mode = st.st_mode
    if stat.S_ISREG(mode):
        t, size = "f", st.st_size
    elif stat.S_ISDIR(mode):
        t, size = "d", 0
    elif stat.S_ISLNK(mode):
        t, size = "l", 0
    else:
        return None
    key = (
        f"{rel_e}\t{t}\t{mode & 0o7777:o}\t{st.st_uid}\t{st.st_gid}\t{size}\t{st.st_mtime_ns}"
        f"\t{st.st_ctime_ns}\t{st.st_ino}\t"
    )
    return t, size, key


def _verify_unchanged(pfd: int, base: str, path: list, prev_lines: list, line: int, racy_before: int):
    """Counts of the entries at or after `path` when each one's stat-cache key is, in order, the one on
    prev_lines[line:] (the test a walk applies to reuse a parent line), and nothing else is there; else None."""
    counts = {"files": 0, "dirs": 0, "symlinks": 0, "bytes": 0}
    cursor = line
    nprev = len(prev_lines)

    def check(dfd: int, name: str, rel: str, st) -> None:
        nonlocal cursor
        got = _stat_key(_esc(rel), st)
        if got is None or cursor >= nprev or st.st_ctime_ns >= racy_before:
            raise _Mismatch
        t, size, key = got
        if not prev_lines[cursor].startswith(key):
            raise _Mismatch
        cursor += 1
        counts[_COUNTED_AS[t]] += 1
        counts["bytes"] += size
        if t == "d":
            cfd = os.open(name, _DIR_FLAGS, dir_fd=dfd)
            try:
                for ename, est in _scan(cfd):
                    check(cfd, ename, rel + "/" + ename, est)
            finally:
                os.close(cfd)

    try:
        _walk_suffix(pfd, base, path, check)
    except (_Mismatch, OSError):
        return None
    return counts if cursor == nprev else None


class _Split:
    """The second half of a walk, checked by a forked child; result() is its counts, or None (walk it)."""

    def __init__(self, pid: int, rfd: int, path: list, line: int):
        self.pid, self.rfd, self.path, self.line = pid, rfd, path, line

    def result(self):
        chunks = []
        try:
            while chunk := os.read(self.rfd, 65536):
                chunks.append(chunk)
        finally:
            os.close(self.rfd)
            os.waitpid(self.pid, 0)
        try:
            return json.loads(b"".join(chunks))
        except ValueError:  # the child died: walk that half here
            return None


class _Snapshotter:
    """One walk over the roots: stat cache from the parent, packing, large objects in worker threads."""

    def __init__(self, store: Store, roots: list[str], dry_run: bool = False):
        self.store = store
        self.roots = roots
        self.dry_run = dry_run
        self.warnings: list[str] = []
        self.start_ns = time.time_ns()
        self.pack = bytearray()
        self.pack_blobs: list = []
        self.run_blobs: set = set()
        self.new_packs: dict = {}
        self.new_bytes = 0
        self.new_blobs = 0
        self.read_files = 0
        self.read_bytes = 0
        self.skipped = 0
        self.tmp_names: list[str] = []
        self.pool = None
        self.pack_pool = None
        self.pending: list = []
        self.listings: dict = {}  # root -> listing lines (what a rollback compares with its target)
        self.models: dict = {}
        self._lock = threading.Lock()

    # -- blob sinks ----------------------------------------------------------------------------------------
    def _known(self, blob: str) -> bool:
        return blob in self.run_blobs or self.store.has_blob(blob)

    def _add_small(self, blob: str, data: bytes) -> None:
        if self.dry_run or self._known(blob):
            return
        self.run_blobs.add(blob)
        self.pack_blobs.append([blob, len(self.pack), len(data)])
        self.pack += data
        self.new_blobs += 1
        if len(self.pack) >= PACK_SIZE:
            self._flush_pack()

    def _flush_pack(self) -> None:
        if not self.pack_blobs:
            return
        trailer = json.dumps(self.pack_blobs, separators=(",", ":")).encode()
        data = bytes(self.pack) + trailer + len(trailer).to_bytes(8, "little") + PACK_MAGIC
        blobs = self.pack_blobs
        self.pack = bytearray()
        self.pack_blobs = []
        if self.pack_pool is None:
            self.pack_pool = _executor(1, "pack")
        self.pending.append(self.pack_pool.submit(self._write_pack, data, blobs))

    def _write_pack(self, data: bytes, blobs: list) -> None:
        packid = hashlib.sha256(data).hexdigest()
        fd, tmp = self.store._tmpfile()
        with self._lock:
            self.tmp_names.append(tmp)
        try:
            _write_all(fd, data)
            os.fchmod(fd, 0o444)
            os.fsync(fd)
        finally:
            os.close(fd)
        if self.store._publish(tmp, self.store._p("packs", packid)):
            with self._lock:
                self.new_bytes += len(data)
        with self._lock:
            self.new_packs[packid] = {"size": len(data), "blobs": blobs}

    def _large(self, fd: int, size: int) -> tuple[str, bool]:
        """Hash a large file and store it as an object: (blob id, racy). Runs in a worker thread; closes fd."""
        tmp = None
        try:
            before = os.fstat(fd)
            buf = bytearray(CHUNK)
            view = memoryview(buf)
            h = hashlib.sha256()
            if self.dry_run:
                while n := os.readv(fd, [buf]):
                    h.update(view[:n])
                blob = h.hexdigest()
            else:
                # Copy and hash at once, even when the file is probably stored already (same path and size
                # as last time, e.g. after a rollback): the copy runs in the kernel on the other core while
                # this thread hashes, so it costs no wall time, and the copy is dropped unsynced when the
                # blob turns out to be known (a file stored already used to be hashed first, copied after).
                otmp, tmp = self._new_tmp()
                try:
                    cloned = _clone(fd, otmp)
                    # Hash exactly the bytes that go into the store (the clone itself, or the copy as it is
                    # written), so an object's name is the SHA-256 of its content even when the live file
                    # changes meanwhile (that is then only a racy entry, re-read next time).
                    if cloned:
                        src = os.open(tmp, os.O_RDONLY)
                        try:
                            while n := os.readv(src, [buf]):
                                h.update(view[:n])
                        finally:
                            os.close(src)
                    else:
                        _copy_fd(fd, otmp, tmp, h)
                    blob = h.hexdigest()
                    os.fchmod(otmp, 0o444)
                    if not (blob in self.run_blobs or os.path.exists(self.store._p("objects", blob))):
                        os.fsync(otmp)  # invariant 1: durable before the index/tree/manifest naming it
                finally:
                    os.close(otmp)
            after = os.fstat(fd)
            racy = (before.st_mtime_ns, before.st_ctime_ns, before.st_size) != (
                after.st_mtime_ns,
                after.st_ctime_ns,
                after.st_size,
            )
            if tmp is not None:
                with self._lock:
                    duplicate = blob in self.run_blobs
                    self.run_blobs.add(blob)
                if duplicate:
                    os.unlink(tmp)
                elif self.store._publish(tmp, self.store._p("objects", blob)):
                    with self._lock:
                        self.new_bytes += size
                        self.new_blobs += 1
            return blob, racy
        finally:
            os.close(fd)

    def _new_tmp(self) -> tuple[int, str]:
        fd, tmp = self.store._tmpfile()
        with self._lock:
            self.tmp_names.append(tmp)
        return fd, tmp

    # -- walk ----------------------------------------------------------------------------------------------
    def _read_small(self, dfd: int, name: str) -> tuple:
        """Read a small file: (data, stat after reading, racy) or None when it vanished."""
        for attempt in range(3):
            try:
                fd = os.open(name, _READ_FLAGS, dir_fd=dfd)
            except OSError:
                return None
            try:
                before = os.fstat(fd)
                data = _read_all(fd)
                after = os.fstat(fd)
            finally:
                os.close(fd)
            same = (before.st_mtime_ns, before.st_ctime_ns, before.st_size) == (
                after.st_mtime_ns,
                after.st_ctime_ns,
                len(data),
            )
            if same or attempt == 2:
                return data, after, not same
        return None

    def _line(self, rel_e: str, t: str, st, size: int, ref: str, xattrs: str, racy: bool = False) -> str:
        ctime = st.st_ctime_ns
        if racy or ctime >= self.start_ns - RACY_NS:
            ctime = 0
        return (
            f"{rel_e}\t{t}\t{stat.S_IMODE(st.st_mode):o}\t{st.st_uid}\t{st.st_gid}\t{size}\t{st.st_mtime_ns}"
            f"\t{ctime}\t{st.st_ino}\t{_esc(ref)}\t{xattrs}\n"
        )

    def _fork_verifier(self, pfd: int, base: str, prev_lines: list, racy_before: int) -> _Split | None:
        """Fork a child that checks the second half of the walk (from the parent listing's middle line on)
        while this process walks the first; None where that cannot help or is not safe (small tree, one
        CPU, no fork, threads already running)."""
        if len(prev_lines) < SPLIT_MIN_LINES or not hasattr(os, "fork") or threading.active_count() > 1:
            return None
        if _pipeline().cpus() < 2:
            return None
        line = len(prev_lines) // 2
        path = _unesc(prev_lines[line][: prev_lines[line].index("\t")]).split("/")
        if path == ["."]:
            return None
        sys.stdout.flush()
        sys.stderr.flush()
        rfd, wfd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: read-only checks, then _exit (no cleanup handlers of the parent run twice)
            status = 1
            try:
                os.close(rfd)
                _write_all(
                    wfd,
                    json.dumps(_verify_unchanged(pfd, base, path, prev_lines, line, racy_before)).encode(),
                )
                status = 0
            finally:
                os._exit(status)
        os.close(wfd)
        return _Split(pid, rfd, path, line)

    def _walk_root(self, root: str, prev_lines: list) -> tuple[list, dict]:
        """Listing lines of one root (DFS, siblings sorted by name) and its counts; [] when absent."""
        lines: list = []
        counts = {"files": 0, "dirs": 0, "symlinks": 0, "bytes": 0}
        parent, base = os.path.split(root)
        try:
            pfd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
        except (FileNotFoundError, NotADirectoryError):
            return lines, counts
        racy_before = self.start_ns - RACY_NS
        append = lines.append
        # Stat cache lookup. The parent listing is in the same order as this walk (DFS, siblings sorted), so
        # the next unmatched parent line is almost always the one to compare with: check it first, and build
        # the {key: line number} map of the whole listing only on the first entry that is not there (a new or
        # removed path). A no-change walk then never builds the map. Either way a hit means the same thing:
        # the parent holds a line whose first nine fields (the key) are equal.
        nprev = len(prev_lines)
        cursor = 0
        prev_at = None

        def lookup(key: str):
            nonlocal cursor, prev_at
            if cursor < nprev and prev_lines[cursor].startswith(key):
                cursor += 1
                return prev_lines[cursor - 1]
            if prev_at is None:
                prev_at = {_key_of(ln) + "\t": i for i, ln in enumerate(prev_lines)}
            i = prev_at.get(key)
            if i is None:
                return None
            cursor = i + 1
            return prev_lines[i]

        def visit(dfd: int, name: str, rel: str, st, limit: list | None = None) -> None:
            """One entry (and a directory's subtree). With `limit` (the path, as components below this
            directory, where the other half of a split walk starts) only what comes before it in walk order."""
            nonlocal cursor
            rel_e = _esc(rel)
            got = _stat_key(rel_e, st)
            if got is None:
                self.skipped += 1
                self.warnings.append(f"{os.path.join(root, rel)} skipped: not a file, directory or symlink")
                return
            t, size, key = got
            counts[_COUNTED_AS[t]] += 1
            counts["bytes"] += size
            hit = lookup(key)
            if hit is not None and st.st_ctime_ns < racy_before:
                append(hit)
            elif t == "d":
                append(self._line(rel_e, t, st, 0, "", _xattrs_get(name, dir_fd=dfd)))
            elif t == "l":
                target = os.fsdecode(os.readlink(name, dir_fd=dfd))
                append(self._line(rel_e, t, st, 0, target, _xattrs_get(name, dir_fd=dfd)))
            elif size >= LARGE:
                try:
                    fd = os.open(name, _READ_FLAGS, dir_fd=dfd)
                except OSError as e:
                    self.warnings.append(f"{os.path.join(root, rel)} skipped: {e.strerror}")
                    return
                fst = os.fstat(fd)
                xattrs = _xattrs_get(None, fd=fd)
                self.read_files += 1
                self.read_bytes += fst.st_size
                if self.pool is None:
                    self.pool = _executor(2, "large")
                fut = self.pool.submit(self._large, fd, fst.st_size)
                append((rel_e, fst, fut, xattrs))
            else:
                got = self._read_small(dfd, name) if size else (b"", st, False)
                if got is None:
                    self.warnings.append(f"{os.path.join(root, rel)} vanished while being read: not recorded")
                    counts["files"] -= 1
                    counts["bytes"] -= size
                    return
                data, fst, racy = got
                if racy:
                    self.warnings.append(
                        f"{os.path.join(root, rel)} changed while being read: recorded as read"
                    )
                self.read_files += 1
                self.read_bytes += len(data)
                blob = ""
                if data:
                    blob = hashlib.sha256(data).hexdigest()
                    self._add_small(blob, data)
                xattrs = _xattrs_get(name, dir_fd=dfd)
                append(self._line(rel_e, t, fst, len(data), blob, xattrs, racy))
            if t == "d":
                try:
                    cfd = os.open(name, _DIR_FLAGS, dir_fd=dfd)
                except OSError as e:
                    self.warnings.append(f"{os.path.join(root, rel)} not readable: {e.strerror}")
                    return
                try:
                    entries = _scan(cfd)
                    prefix = "" if rel == "." else rel + "/"
                    prefix_e = _esc(prefix)
                    for ename, est in entries:
                        if limit is not None:
                            if ename > limit[0] or (ename == limit[0] and len(limit) == 1):
                                break  # the other half's
                            if ename == limit[0]:
                                visit(cfd, ename, prefix + ename, est, limit[1:])
                                continue
                        # Fast path for the common case, a file or symlink equal to the next parent line: the
                        # same key and the same test as visit() + lookup(), without the calls. Anything else
                        # (directories, misses, racy ctimes, other types) goes through visit().
                        m = est.st_mode
                        is_reg = stat.S_ISREG(m)
                        if (is_reg or stat.S_ISLNK(m)) and cursor < nprev and est.st_ctime_ns < racy_before:
                            size = est.st_size if is_reg else 0
                            ln = prev_lines[cursor]
                            if ln.startswith(
                                f"{prefix_e}{_esc(ename)}\t{'f' if is_reg else 'l'}\t{m & 0o7777:o}\t{est.st_uid}"
                                f"\t{est.st_gid}\t{size}\t{est.st_mtime_ns}\t{est.st_ctime_ns}\t{est.st_ino}\t"
                            ):
                                cursor += 1
                                append(ln)
                                if is_reg:
                                    counts["files"] += 1
                                    counts["bytes"] += size
                                else:
                                    counts["symlinks"] += 1
                                continue
                        visit(cfd, ename, prefix + ename, est)
                finally:
                    os.close(cfd)

        try:
            try:
                st = os.lstat(base, dir_fd=pfd)
            except FileNotFoundError:
                return lines, counts
            split = self._fork_verifier(pfd, base, prev_lines, racy_before)
            if split is None:
                visit(pfd, base, ".", st)
            else:
                try:
                    visit(pfd, base, ".", st, split.path)
                finally:
                    verified = split.result()
                if verified is not None:
                    lines.extend(prev_lines[split.line :])
                    for k, v in verified.items():
                        counts[k] += v
                else:  # the other half changed: walk it here, as a serial walk would
                    cursor = split.line
                    _walk_suffix(pfd, base, split.path, visit)
            out = []
            for x in lines:
                if isinstance(x, tuple):
                    rel_e, fst, fut, xattrs = x
                    blob, racy = fut.result()
                    if racy:
                        self.warnings.append(f"{os.path.join(root, _unesc(rel_e))} changed while being read")
                    out.append(self._line(rel_e, "f", fst, fst.st_size, blob, xattrs, racy))
                else:
                    out.append(x)
            return out, counts
        finally:
            os.close(pfd)

    def run(self) -> dict:
        store = self.store
        parents = (
            store.parent_trees(self.roots) if os.path.isdir(os.path.join(store.path, "snapshots")) else {}
        )
        roots_out = []
        new_trees = []
        totals = {"files": 0, "logical_bytes": 0}
        try:
            for root in self.roots:
                prev_tree, _ = parents.get(root, (None, None))
                prev_lines = store.read_tree(prev_tree) if prev_tree else []
                lines, counts = self._walk_root(root, prev_lines)
                self.listings[root] = lines
                present = bool(lines)
                tree = None
                if present:
                    _collect_models(root, lines, self.models)
                    if len(lines) == len(prev_lines) and all(map(operator.is_, lines, prev_lines)):
                        tree = prev_tree  # every parent line reused as it was: the same listing, no re-hash
                    else:
                        text = "".join(lines).encode("utf-8", "surrogateescape")
                        tree = hashlib.sha256(text).hexdigest()
                    if tree != prev_tree and not self.dry_run and not os.path.exists(store._p("trees", tree)):
                        new_trees.append((tree, text))
                roots_out.append(dict(path=root, present=present, tree=tree, **counts))
                totals["files"] += counts["files"]
                totals["logical_bytes"] += counts["bytes"]
            if not self.dry_run:
                self._flush_pack()
            for fut in self.pending:
                fut.result()
        finally:
            if self.pool:
                self.pool.shutdown(wait=True)
            if self.pack_pool:
                self.pack_pool.shutdown(wait=True)
        if not self.dry_run:
            # Invariant 1: packs are durable (fsynced in _write_pack) before the index that names them ...
            if self.new_packs:
                data = json.dumps(
                    {"version": VERSION, "packs": self.new_packs}, separators=(",", ":")
                ).encode()
                name = hashlib.sha256(data).hexdigest() + ".json"
                store._atomic_write(os.path.join(store.path, "index", name), data)
                self.new_bytes += len(data)
                idx = store.load_index()
                for packid, info in self.new_packs.items():
                    for blob, off, length in info["blobs"]:
                        idx[blob] = (packid, off, length)
            # ... and trees before the manifest that names them (written by the caller).
            for tree, text in new_trees:
                store._atomic_write(store._p("trees", tree), text)
                self.new_bytes += len(text)
        return {
            "roots": roots_out,
            "parent": max((p[1] for p in parents.values()), default=None),
            "models": dict(sorted(self.models.items())),
            "stats": {
                "files": totals["files"],
                "logical_bytes": totals["logical_bytes"],
                "new_bytes": self.new_bytes,
                "new_blobs": self.new_blobs,
                "read_files": self.read_files,
                "read_bytes": self.read_bytes,
                "skipped": self.skipped,
            },
        }

    def abort(self) -> None:
        """Drop this run's temp files (an exception, not a kill: after kill -9 prune collects them)."""
        for name in self.tmp_names:
            with contextlib.suppress(OSError):
                os.unlink(name)


MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")


def _collect_models(root: str, lines: list, out: dict) -> None:
    """Model SHA-256s straight from the listing: a file's blob id is the SHA-256 of its content."""
    for ln in lines:
        if ln.startswith("models/"):
            f = ln.split("\t")
            if f[1] == "f" and f[0].endswith(MODEL_SUFFIXES):
                out[os.path.join(root, _unesc(f[0]))] = f[9] or EMPTY_SHA256


# ---------------------------------------------------------------------------------------------------------
# Check


def _walk_store_files(store: Store, kind: str):
    base = os.path.join(store.path, kind)
    for d in sorted(os.listdir(base)) if os.path.isdir(base) else []:
        sub = os.path.join(base, d)
        if os.path.isdir(sub):
            for n in sorted(os.listdir(sub)):
                yield n, os.path.join(sub, n)


def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(CHUNK):
            h.update(b)
    return h.hexdigest()


def _read_trailer(path: str) -> list:
    with open(path, "rb") as f:
        f.seek(-16, os.SEEK_END)
        tail = f.read(16)
        if tail[8:] != PACK_MAGIC:
            raise ValueError("no pack trailer")
        n = int.from_bytes(tail[:8], "little")
        f.seek(-16 - n, os.SEEK_END)
        return json.loads(f.read(n))


def _check(store: Store, deep: bool) -> dict:
    errors: list[str] = []
    garbage: dict = {"tmp_files": 0, "unindexed_packs": 0, "unused_blobs": 0, "unused_trees": 0, "bytes": 0}
    index: dict = {}
    pack_sizes: dict = {}
    for name in store._index_files():
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
    on_disk_packs = {n: p for n, p in _walk_store_files(store, "packs")}
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
    objects = {n: p for n, p in _walk_store_files(store, "objects")}
    trees_on_disk = {n: p for n, p in _walk_store_files(store, "trees")}
    used_blobs: set = set()
    used_trees: set = set()
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
            tree = r.get("tree")
            if not r.get("present") or tree in used_trees:
                continue
            used_trees.add(tree)
            if tree not in trees_on_disk:
                errors.append(f"snapshot {snapid}: tree {str(tree)[:12]} of {r.get('path')} is missing")
                continue
            try:
                with open(trees_on_disk[tree], "rb") as f:
                    text = _tree_text(f.read())
                if deep and hashlib.sha256(text).hexdigest() != tree:
                    errors.append(f"tree {tree[:12]} does not match its name (damaged)")
                entries = [parse_line(ln) for ln in text.decode("utf-8", "surrogateescape").splitlines(True)]
            except (OSError, ValueError, zlib.error) as e:
                errors.append(f"snapshot {snapid}: tree {tree[:12]} cannot be read ({e})")
                continue
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
                        errors.append(
                            f"content of {r['path']}/{e[0]} has the wrong size in pack {loc[0][:12]}"
                        )
                elif blob in objects:
                    if os.path.getsize(objects[blob]) != size:
                        errors.append(f"object {blob[:12]} ({r['path']}/{e[0]}) has the wrong size")
                else:
                    errors.append(
                        f"snapshot {snapid}: content of {r['path']}/{e[0]} ({blob[:12]}) is missing"
                    )
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
    interrupted = (
        len([n for n in os.listdir(journal) if n.endswith(".json")]) if os.path.isdir(journal) else 0
    )
    return {
        "ok": not errors,
        "errors": errors,
        "garbage": garbage,
        "interrupted_rollbacks": interrupted,
        "snapshots": snapshots,
        "trees": len(used_trees),
        "blobs": len(used_blobs),
        "deep": deep,
    }


def _deep_check_pack(path: str, packid: str, index: dict, errors: list) -> None:
    try:
        trailer = _read_trailer(path)
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


# ---------------------------------------------------------------------------------------------------------
# Prune: forget by policy, then mark and sweep


def _prune(store: Store, policy: dict | None, dry_run: bool, now_ns: int) -> dict:
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
    index_files = store._index_files()
    packs: dict = {}
    for name in index_files:
        for packid, info in store._read_index_file(name)["packs"].items():
            packs[packid] = info
    on_disk_packs = dict(_walk_store_files(store, "packs"))
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
    dead_objects = [(b, p) for b, p in _walk_store_files(store, "objects") if b not in used_blobs]
    dead_trees = [(t, p) for t, p in _walk_store_files(store, "trees") if t not in used_trees]
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
    _fsync_dir(os.path.join(store.path, "snapshots"))
    # Repack: new packs durable -> new index durable -> old index files deleted -> old packs deleted.
    if repack:
        sn = _Snapshotter(store, [])
        fds: dict = {}
        try:
            for packid, live_blobs in repack:
                for blob, off, length in live_blobs:
                    if blob in sn.run_blobs:
                        continue
                    sn.run_blobs.add(blob)
                    fd = fds.setdefault(packid, os.open(on_disk_packs[packid], os.O_RDONLY))
                    data = os.pread(fd, length, off)
                    if hashlib.sha256(data).hexdigest() != blob:
                        raise SnapshotError(
                            f"Blob {blob[:12]} in pack {packid[:12]} is damaged: run make snapshot-check DEEP=1 "
                            "before pruning."
                        )
                    sn.pack_blobs.append([blob, len(sn.pack), length])
                    sn.pack += data
                    if len(sn.pack) >= PACK_SIZE:
                        sn._flush_pack()
            sn._flush_pack()
            for fut in sn.pending:
                fut.result()
        finally:
            for fd in fds.values():
                os.close(fd)
            if sn.pack_pool:
                sn.pack_pool.shutdown(wait=True)
        kept_packs.update(sn.new_packs)
        freed -= sn.new_bytes
        for packid, _ in repack:
            freed += packs[packid]["size"]
        result["bytes_freed"] = freed
    if kept_packs and (repack or dead_packs or stale_index or len(index_files) > 1):
        data = json.dumps({"version": VERSION, "packs": kept_packs}, separators=(",", ":")).encode()
        new_name = hashlib.sha256(data).hexdigest() + ".json"
        store._atomic_write(os.path.join(store.path, "index", new_name), data)
        for name in index_files:
            if name != new_name:
                os.unlink(os.path.join(store.path, "index", name))
    elif not kept_packs:
        for name in index_files:
            os.unlink(os.path.join(store.path, "index", name))
    _fsync_dir(os.path.join(store.path, "index"))
    for packid in dead_packs + [p for p, _ in repack] + unindexed:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(on_disk_packs[packid])
    for _, p in dead_objects + dead_trees:
        os.unlink(p)
    for n in tmp_files:
        _rmtree(os.path.join(store.tmpdir, n))
    store._index = None
    return result


# ---------------------------------------------------------------------------------------------------------
# Rollback: selection, plan, apply


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


def _plan(store: Store, target: dict, current: dict, selection: dict) -> dict:
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
            elif _comparable(c) != _comparable(t):
                ops.append(("meta", p, t))
        if prefixes is None:
            # Directory metadata is set again where the rollback changes the directory (its own line or
            # its entries); every other directory's line is the same as the target's.
            touched = {_esc(_parent(p)) for p in removals} | {_esc(_parent(p)) for _, p, _ in ops}
            touched |= {_esc(p) for p, t in want.items() if t[1] == "d"}
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
            fd = os.open(name, _DIR_FLAGS, dir_fd=self.dirfd(up))
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


def _set_meta_fd(fd: int, t: tuple, warnings: list, is_root: bool) -> None:
    if is_root:
        os.fchown(fd, t[3], t[4])  # before chmod: chown clears setuid/setgid bits
    os.fchmod(fd, t[2])
    _xattrs_set(fd, t[10], True, warnings)
    os.utime(fd, ns=(t[6], t[6]))


def _apply(store: Store, target: dict, plan: dict, before_id: str | None) -> dict:
    token = _token(6)
    is_root = os.geteuid() == 0
    warnings: list[str] = []
    journal = os.path.join(store.path, "journal", token + ".json")
    roots = [r["root"] for r in plan["roots"]]
    store._atomic_write(
        journal,
        json.dumps({"token": token, "target": target["id"], "before": before_id, "roots": roots}).encode(),
        mode=0o600,
    )
    stats = {"removed": 0, "written": 0, "bytes_written": 0, "linked": 0, "metadata": 0}
    pack_fds: dict = {}
    counter = [0]

    def tmpname() -> str:
        counter[0] += 1
        return f"{TMP_PREFIX}{token}.{counter[0]}.tmp"

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
                        _rmtree_at(dfd, name)
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
                            _set_meta_fd(fd, t, warnings, is_root)
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
                                _set_meta_fd(fd, t, warnings, is_root)
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
                    fd = os.open(name, _DIR_FLAGS, dir_fd=tree.dirfd(drel))
                    try:
                        st = os.fstat(fd)
                        if is_root and (st.st_uid, st.st_gid) != (t[3], t[4]):
                            os.fchown(fd, t[3], t[4])
                        if stat.S_IMODE(st.st_mode) != t[2]:
                            os.fchmod(fd, t[2])
                        if _xattrs_get(None, fd=fd) != t[10]:
                            _xattrs_set(fd, t[10], True, warnings)
                        if st.st_mtime_ns != t[6]:
                            os.utime(fd, ns=(t[6], t[6]))
                    finally:
                        os.close(fd)
                _syncfs(tree.pfd)
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
    _fsync_dir(os.path.dirname(journal))
    return {"stats": stats, "warnings": warnings}


def _commit(tree: _Tree, pending: list) -> None:
    """Make a batch of complete temp files durable with one syncfs, then rename each over its final name."""
    if not pending:
        return
    _syncfs(tree.pfd)
    for drel, tmp, name in pending:
        dfd = tree.dirfd(drel)
        os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)


def _rmtree_at(dfd: int, name: str) -> None:
    """Remove name under dfd, recursively, never following a symlink."""
    try:
        st = os.lstat(name, dir_fd=dfd)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=dfd)
        return
    cfd = os.open(name, _DIR_FLAGS, dir_fd=dfd)
    try:
        for n in os.listdir(cfd):
            _rmtree_at(cfd, n)
    finally:
        os.close(cfd)
    os.rmdir(name, dir_fd=dfd)


def _rmtree(path: str) -> None:
    parent, name = os.path.split(os.path.abspath(path))
    fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        _rmtree_at(fd, name)
    finally:
        os.close(fd)


def _remove_temp_files(root: str, prefix: str) -> int:
    """Remove this toolkit's rollback temp files (name prefix) under root, never following symlinks."""
    removed = 0
    if not os.path.isdir(root) or os.path.islink(root):
        parent, base = os.path.split(root)
        if base.startswith(prefix):
            return 0
        with contextlib.suppress(OSError):
            for n in os.listdir(parent):
                if n.startswith(prefix):
                    os.unlink(os.path.join(parent, n))
                    removed += 1
        return removed
    for dirpath, dirnames, filenames in os.walk(root):
        for n in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            if n.startswith(prefix):
                os.unlink(os.path.join(dirpath, n))
                removed += 1
    return removed


# ---------------------------------------------------------------------------------------------------------
# Restore into a new directory


def _restore_fresh(store: Store, lines: list, dest: str, threads: int) -> int:
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
                dfd = os.open(os.path.join(dest, d) if d else dest, _DIR_FLAGS)
                try:
                    for name, e in items:
                        _restore_leaf(store, e, None, name, pack_fds, is_root, warnings, dfd)
                finally:
                    os.close(dfd)
        finally:
            for fd in pack_fds.values():
                os.close(fd)

    store.load_index()
    with _executor(max(1, threads), "restore") as pool:
        for fut in [pool.submit(worker, s) for s in shares]:
            fut.result()
    for e in reversed(dirs):
        path = dest if e[0] == "." else os.path.join(dest, e[0])
        fd = os.open(path, _DIR_FLAGS)
        try:
            if is_root:
                os.fchown(fd, e[3], e[4])
            os.fchmod(fd, e[2])
            if e[10]:
                _xattrs_set(fd, e[10], True, warnings)
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
            _set_meta_fd(fd, e, warnings, is_root)
        finally:
            os.close(fd)
    finally:
        if own_fd:
            os.close(dfd)


# ---------------------------------------------------------------------------------------------------------
# Command line (benchmark, debugging on a host)


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="snapshot_store", description=__doc__.splitlines()[0])
    ap.add_argument("store")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("snapshot")
    s.add_argument("roots", nargs="+")
    s.add_argument("--label", default="")
    s.add_argument("--kind", default="manual")
    sub.add_parser("list")
    c = sub.add_parser("check")
    c.add_argument("--deep", action="store_true")
    p = sub.add_parser("prune")
    p.add_argument("--keep-last", type=int)
    r = sub.add_parser("restore")
    r.add_argument("id")
    r.add_argument("dest")
    r.add_argument("--threads", type=int, default=2)
    b = sub.add_parser("rollback")
    b.add_argument("id")
    b.add_argument("--path", action="append")
    a = ap.parse_args(argv)
    st = Store(a.store)
    try:
        if a.cmd == "snapshot":
            out = st.snapshot(a.roots, label=a.label, kind=a.kind)
            out = {"id": out["id"], "stats": out["manifest"]["stats"], "warnings": out["warnings"]}
        elif a.cmd == "list":
            out = st.list()
        elif a.cmd == "check":
            out = st.check(a.deep)
        elif a.cmd == "prune":
            out = st.prune({"keep_last": a.keep_last} if a.keep_last is not None else None)
        elif a.cmd == "restore":
            out = st.restore(a.id, a.dest, threads=a.threads)
        else:
            out = st.rollback(a.id, a.path)
    except SnapshotError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(out, indent=1, default=str))
    return 0 if not (a.cmd == "check" and not out["ok"]) else 1


if __name__ == "__main__":
    sys.exit(main())
