"""Taking a snapshot: the walk over the roots, the stat cache, small blobs into packs, large ones into objects.

Invariants kept here:
- The listing of a root is the one a single serial walk gives: depth first, siblings sorted by name, one
  line per entry (format.parse_line), whether the walk was split in two halves or not.
- A line is reused from the parent listing (the root's stat-cache file, else the newest snapshot's tree)
  only when its stat-cache key (the first nine fields) is equal. Whoever records a key makes sure no later
  change can leave it equal: the walk records ctime 0 for an entry whose ctime is within RACY_NS of the
  snapshot's start (so it is read again next time), a rollback only keys it recorded after a safe margin
  (rollback._record). A key equal to a recorded one is therefore trusted whatever its age.
- Write order: blobs (packs, objects) are durable before the index naming them, trees before the manifest,
  the manifest next, the stat-cache files last (a stat-cache file only names trees that exist).
- Every store file the run creates is journaled first (journal.RunJournal): an exception removes them with
  the run's temp files, a kill leaves them for the next run's recovery.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import operator
import os
import stat
import sys
import threading
import time

from .fileio import DIR_FLAGS, READ_FLAGS, clone, copy_fd, executor, pipeline, read_all, write_all, xattrs_get
from .format import (
    CHUNK,
    LARGE,
    VERSION,
    SnapshotError,
    collect_models,
    comparable,
    esc,
    hostname,
    id_time_ns,
    new_snapshot_id,
    path_index,
    unesc,
    validate_label,
)
from .packs import PackWriter

RACY_NS = 2 * 10**9
# A key read by a stat taken at least SETTLE_NS after the entry's last change cannot be matched by a later
# change on a filesystem with sub-second timestamps: the kernel stamps a change from a clock at most one timer
# tick (10 ms at HZ=100) behind the one time.time_ns reads, so two ticks are enough. Where timestamps are whole
# seconds (a ctime that is a multiple of 1 s: HFS+, FAT, ext4 with small inodes) RACY_NS applies instead.
SETTLE_NS = 20 * 10**6


def settled_ctime(ctime_ns: int, stat_ns: int) -> int:
    """The ctime to record for a key read by a stat at stat_ns: itself when no later change can leave the
    key equal, else 0 (the entry is read again next time)."""
    margin = RACY_NS if ctime_ns % 10**9 == 0 else SETTLE_NS
    return ctime_ns if stat_ns - ctime_ns >= margin else 0


# A walk whose parent listing has at least this many lines is split in two halves by walk order: a forked
# child checks that the second half is unchanged while this process walks the first (one lstat per entry
# is most of a no-change snapshot; fork costs ~2 ms).
SPLIT_MIN_LINES = 5000

_entry_name = operator.attrgetter("name")
_COUNTED_AS = {"f": "files", "d": "dirs", "l": "symlinks"}


def take(
    store,
    roots: list[str],
    label: str = "",
    kind: str = "manual",
    pinned: bool = False,
    facts: dict | None = None,
    dry_run: bool = False,
    only_if_changed: bool = False,
    _locked: bool = False,
    _walked: list | None = None,
    app_writes: dict | None = None,
) -> dict:
    """The snapshot operation (Store.snapshot): lock, recover, walk, write, manifest last. With
    only_if_changed, app_writes {root: {"kept": [relative paths], "restored": [...]}} names what the running
    apps write for themselves (app_data.app_writes): a difference only in kept paths takes no new snapshot; one
    in restored paths takes it, so a rollback to it puts back the newest copy, but reports changed=False (the
    environment is the one the newest snapshot of this kind holds; `refreshed` names that one). A rollback passes
    _walked (its lock held): the Snapshotter is appended to it, with its listings, and writes its stat-cache
    files when the rollback calls write_caches (the rollback's own record replaces those of the roots it
    changes: one 4 MB write saved per root)."""
    label = validate_label(label)
    roots = normalize_roots(roots)
    if dry_run:
        if not os.path.exists(os.path.join(store.path, "config.json")):
            return {"changed": True, "dry_run": True, "would_create_store": True, "roots": roots}
        with store.locked(False):
            return Snapshotter(store, roots, dry_run=True).run()
    if not _locked:
        store.init()
        with store.locked(True):
            store.warnings += store.recover()
            return take(
                store, roots, label, kind, pinned, facts, False, only_if_changed, True, _walked, app_writes
            )
    t0 = time.monotonic()
    snap = Snapshotter(store, roots)
    run = store.begin_run("snapshot")
    try:
        store.upgrade()
        result = snap.run()
        stale = snap.stale_records()
        for path in stale:
            run.delete(path, once_committed=True)
        same = refresh = None
        if only_if_changed:
            same, refresh = _same_as_latest(store, kind, result["roots"], app_writes)
            if same and not refresh:
                # No new snapshot; the trees this walk wrote (fresher keys) are kept for the stat cache.
                snap.write_caches()
                run.committed()
                _remove(stale)
                store.end_run()
                return {
                    "changed": False,
                    "id": same,
                    "manifest": store.load_manifest(same),
                    "warnings": snap.warnings,
                }
        manifest = _manifest(store, result, label, kind, pinned, facts, t0)
        run.commits_with(os.path.join(store.path, "snapshots", manifest["id"] + ".json"))
        try:
            store.write_manifest(manifest)
        except OSError as e:
            raise store.oserror(e, "write the snapshot manifest") from None
        if _walked is not None and not stale:
            _walked.append(snap)
        else:
            snap.write_caches()
            _remove(stale)
            if _walked is not None:
                _walked.append(snap)
                snap.trees = {}  # written already
    except OSError as e:
        snap.abort()
        raise store.oserror(e, "write the snapshot") from None
    except BaseException:
        snap.abort()
        raise
    store.end_run()
    return {
        "changed": not refresh,
        "id": manifest["id"],
        "manifest": manifest,
        "warnings": store.warnings + snap.warnings,
        **({"refreshed": same} if refresh else {}),
    }


def _manifest(
    store, result: dict, label: str, kind: str, pinned: bool, facts: dict | None, t0: float
) -> dict:
    now_ns = time.time_ns()
    # Ids sort by time (to the microsecond) so "latest" and the listing order need no manifest reads;
    # a clock that went backwards still yields an id after the newest one.
    ids = store.snapshot_ids()
    now_ns = max(now_ns, id_time_ns(ids[-1]) + 1000) if ids else now_ns
    snapid = new_snapshot_id(now_ns)
    facts = dict(facts or {})
    facts.setdefault("models", result.pop("models"))
    return {
        "version": VERSION,
        "id": snapid,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now_ns / 1e9)),
        "time_ns": now_ns,
        "label": label,
        "kind": kind,
        "pinned": bool(pinned),
        "host": hostname(),
        "parent": result.pop("parent"),
        "roots": result["roots"],
        "stats": dict(result["stats"], seconds=round(time.monotonic() - t0, 3)),
        "facts": facts,
    }


def _remove(paths: list) -> None:
    from .journal import remove

    for path in paths:
        remove(path)


def _same_as_latest(store, kind: str, roots: list, app_writes: dict | None = None) -> tuple:
    """(id of the newest snapshot of this kind when it holds the same environment, else None; whether it is
    the same only once the restored paths of app_writes are left out too: then a fresher copy is due).
    Contents are compared with ctime/inode aside, and what only running the apps changes left out (see
    same_environment)."""
    for snapid in reversed(store.snapshot_ids()):
        m = store.load_manifest(snapid)
        if m.get("kind") != kind:
            continue
        old = {r["path"]: r.get("tree") for r in m["roots"]}
        if set(old) != {r["path"] for r in roots}:
            return None, False
        refresh = False
        for r in roots:
            a, b = old[r["path"]], r.get("tree")
            if a == b:
                continue
            if not a or not b:
                return None, False
            writes = (app_writes or {}).get(r["path"]) or {}
            kept, restored = list(writes.get("kept", ())), list(writes.get("restored", ()))
            ma, mb = store.read_tree_map(a), store.read_tree_map(b)
            if not same_environment(ma, mb, kept + restored):
                return None, False
            refresh = refresh or (bool(restored) and not same_environment(ma, mb, kept))
        return snapid, refresh
    return None, False


def _counter(ignored):
    """A test of a listing's path: True when it counts (see same_environment). A real venv has some 10^5
    paths, so the usual case, an ignored top-level name, is one set lookup."""
    top = {p for p in ignored if "/" not in p}
    deeper = [p for p in ignored if "/" in p]

    def counted(path: str) -> bool:
        # __pycache__ anywhere (the tree's modules, repositories/, extensions, the venv: uv installs without
        # compiling): the bytecode CPython writes beside each source it imports, derived from that source and
        # checked against it at import, so never the environment's change. Not kept by a rollback either: put
        # back with the sources it was compiled from, or removed, it stays right.
        if "__pycache__" in path and "__pycache__" in path.split("/"):
            return False
        if path.partition("/")[0] in top:
            return False
        return not any(path == p or path.startswith(p + "/") for p in deeper)

    return counted


def _environment_key(path: str, line: tuple) -> tuple:
    # A git index (the tree's, each sub-repository's) caches the stat data of the files it stages: git writes
    # it again, the same bytes at a new mtime, whenever `git status` runs as the dummy after the files' times
    # moved (the snapshot's facts, make verify's checks). What it stages is its content.
    key = comparable(line)
    if path == ".git/index" or path.endswith("/.git/index"):
        return key[:5] + key[6:]
    return key


def same_environment(old: dict, new: dict, ignored=()) -> bool:
    """Whether two listings of one root ({path: parsed line}) hold the same environment: equal (comparable; a
    git index by its content) once paths under `ignored` (relative: what the app writes for itself) and
    __pycache__ are left out, and directories that are new and hold nothing else counted: the WebUI makes its
    empty folders as it starts (extensions/, config_states/, the models' folders: modules/extensions.py,
    modelloader.py, sd_models.py), and an empty folder a rollback removes is made again at the next start."""
    counted = _counter(ignored)
    for p, t in old.items():
        u = new.get(p)
        if u is not None and (u is t or u == t):
            continue  # the same line: most of a tree, so tested before the path is
        if counted(p) and (u is None or _environment_key(p, u) != _environment_key(p, t)):
            return False
    # Added entries: counted only when not a directory (an added directory holding a counted file or link has
    # that entry added too).
    return not any(u[1] != "d" and p not in old and counted(p) for p, u in new.items())


def normalize_roots(roots: list[str]) -> list[str]:
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


def scan(dfd: int) -> list:
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


class _Mismatch(Exception):
    pass


def walk_suffix(pfd: int, base: str, path: list, visit) -> None:
    """Call visit(dfd, name, rel, st) for every entry at or after `path` (components below the root) in walk
    order (DFS, siblings by name), deepest level first: `path` itself and its later siblings (subtrees
    included), then each ancestor's later siblings. Ancestors that are no longer directories are skipped,
    as the walk that stopped before `path` did not descend into them either."""
    fds = []
    try:
        fd = os.open(base, DIR_FLAGS, dir_fd=pfd)
        fds.append(fd)
        for comp in path[:-1]:
            try:
                fd = os.open(comp, DIR_FLAGS, dir_fd=fds[-1])
            except OSError:
                break
            fds.append(fd)
        for level in reversed(range(len(fds))):
            start, inclusive = path[level], level == len(path) - 1
            prefix = "".join(c + "/" for c in path[:level])
            for ename, est in scan(fds[level]):
                if ename > start or (inclusive and ename == start):
                    visit(fds[level], ename, prefix + ename, est)
    finally:
        for fd in fds:
            os.close(fd)


def stat_key(rel_e: str, st):
    """(type, size, stat-cache key) of an entry; None for what a tree does not hold (sockets, FIFOs,
    devices). The key is a line's first nine fields and the TAB after them, so it is a prefix of exactly the
    lines with those fields: equal key => same content as recorded (ctime catches writes, chmod, xattrs).
    The walk's fast path for files and symlinks (Snapshotter._walk_root) builds the same string inline."""
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


def match_suffix(pfd: int, base: str, path: list, prev_lines: list, line: int) -> dict | None:
    """The second half of a split walk, as the forked child does it: every entry at or after `path`, in walk
    order, as either the parent line with its stat-cache key (consecutive ones as runs [first line, count]),
    or what the parent needs to record it afresh (["m", rel, type, size, mode, uid, gid, mtime, ctime, inode]),
    or ["s", rel] (not a file, directory or symlink) or ["u", rel, why] (a directory that cannot be read);
    with the counts of them all. The lookup is the walk's (Snapshotter._walk_root.lookup); None when the walk
    itself failed (the parent then walks that half)."""
    counts = {"files": 0, "dirs": 0, "symlinks": 0, "bytes": 0}
    items: list = []
    nprev = len(prev_lines)
    cursor = line
    prev_at = None

    def each(dfd: int, name: str, rel: str, st) -> None:
        nonlocal cursor, prev_at
        got = stat_key(esc(rel), st)
        if got is None:
            items.append(["s", rel])
            return
        t, size, key = got
        counts[_COUNTED_AS[t]] += 1
        counts["bytes"] += size
        if cursor < nprev and prev_lines[cursor].startswith(key):
            hit = cursor
        else:
            if prev_at is None:
                prev_at = path_index(prev_lines)
            hit = prev_at.get(key[: key.index("\t")])
            if hit is not None and not prev_lines[hit].startswith(key):
                hit = None
        if hit is None:
            items.append(
                [
                    "m",
                    rel,
                    t,
                    size,
                    st.st_mode,
                    st.st_uid,
                    st.st_gid,
                    st.st_mtime_ns,
                    st.st_ctime_ns,
                    st.st_ino,
                ]
            )
        else:
            cursor = hit + 1
            last = items[-1] if items else None
            if last is not None and isinstance(last[0], int) and last[0] + last[1] == hit:
                last[1] += 1
            else:
                items.append([hit, 1])
        if t == "d":
            try:
                cfd = os.open(name, DIR_FLAGS, dir_fd=dfd)
            except OSError as e:
                items.append(["u", rel, e.strerror])
                return
            try:
                for ename, est in scan(cfd):
                    each(cfd, ename, rel + "/" + ename, est)
            finally:
                os.close(cfd)

    try:
        walk_suffix(pfd, base, path, each)
    except OSError:
        return None
    return {"counts": counts, "items": items}


class _Stat:
    """The fields of an lstat result a tree line records, as the split walk's child sent them."""

    __slots__ = ("st_ctime_ns", "st_gid", "st_ino", "st_mode", "st_mtime_ns", "st_size", "st_uid")

    def __init__(self, size, mode, uid, gid, mtime_ns, ctime_ns, ino):
        self.st_size, self.st_mode, self.st_uid, self.st_gid = size, mode, uid, gid
        self.st_mtime_ns, self.st_ctime_ns, self.st_ino = mtime_ns, ctime_ns, ino


class Split:
    """The second half of a walk, done by a forked child; result() is match_suffix's answer, or None."""

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


class Snapshotter:
    """One walk over the roots: stat cache from the parent, packing, large objects in worker threads."""

    def __init__(self, store, roots: list[str], dry_run: bool = False):
        self.store = store
        self.roots = roots
        self.dry_run = dry_run
        self.warnings: list[str] = []
        self.start_ns = time.time_ns()
        self.packer = PackWriter(store)
        self.run_blobs: set = set()
        self.new_bytes = 0
        self.new_blobs = 0
        self.read_files = 0
        self.read_bytes = 0
        self.skipped = 0
        self.tmp_names: list[str] = []
        self.pool = None
        self.listings: dict = {}  # root -> listing lines (what a rollback compares with its target)
        self.trees: dict = {}  # root -> {"tree", "base", "lines", "text", "depth", "chain"}
        self.caches: dict = {}  # root -> its stat-cache file as read (None: no such file)
        self.models: dict = {}
        self._lock = threading.Lock()

    # -- blob sinks ----------------------------------------------------------------------------------------
    def _known(self, blob: str) -> bool:
        return blob in self.run_blobs or self.store.has_blob(blob)

    def _add_small(self, blob: str, data: bytes) -> None:
        if self.dry_run or self._known(blob):
            return
        self.run_blobs.add(blob)
        self.packer.add(blob, data)
        self.new_blobs += 1

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
                    cloned = clone(fd, otmp)
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
                        copy_fd(fd, otmp, tmp, h)
                    blob = h.hexdigest()
                    os.fchmod(otmp, 0o444)
                    if not (blob in self.run_blobs or os.path.exists(self.store.p("objects", blob))):
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
                elif self.store.publish(tmp, self.store.p("objects", blob)):
                    with self._lock:
                        self.new_bytes += size
                        self.new_blobs += 1
            return blob, racy
        finally:
            os.close(fd)

    def _new_tmp(self) -> tuple[int, str]:
        fd, tmp = self.store.tmpfile()
        with self._lock:
            self.tmp_names.append(tmp)
        return fd, tmp

    # -- walk ----------------------------------------------------------------------------------------------
    def _read_small(self, dfd: int, name: str) -> tuple:
        """Read a small file: (data, stat after reading, racy) or None when it vanished."""
        for attempt in range(3):
            try:
                fd = os.open(name, READ_FLAGS, dir_fd=dfd)
            except OSError:
                return None
            try:
                before = os.fstat(fd)
                data = read_all(fd)
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
            f"\t{ctime}\t{st.st_ino}\t{esc(ref)}\t{xattrs}\n"
        )

    def _fork_second_half(self, pfd: int, base: str, prev_lines: list) -> Split | None:
        """Fork a child that walks the second half of the walk (from the parent listing's middle line on),
        read-only, while this process walks the first; None where that cannot help or is not safe (small
        tree, one CPU, no fork, threads already running)."""
        if len(prev_lines) < SPLIT_MIN_LINES or not hasattr(os, "fork") or threading.active_count() > 1:
            return None
        if pipeline().cpus() < 2:
            return None
        line = len(prev_lines) // 2
        path = unesc(prev_lines[line][: prev_lines[line].index("\t")]).split("/")
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
                write_all(
                    wfd,
                    json.dumps(match_suffix(pfd, base, path, prev_lines, line)).encode(),
                )
                status = 0
            finally:
                os._exit(status)
        os.close(wfd)
        return Split(pid, rfd, path, line)

    def _walk_root(self, root: str, prev_lines: list) -> tuple[list, dict]:
        """Listing lines of one root (DFS, siblings sorted by name) and its counts; [] when absent."""
        lines: list = []
        counts = {"files": 0, "dirs": 0, "symlinks": 0, "bytes": 0}
        parent, base = os.path.split(root)
        try:
            pfd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
        except (FileNotFoundError, NotADirectoryError):
            return lines, counts
        append = lines.append
        # Stat cache lookup. The parent listing is in the same order as this walk (DFS, siblings sorted), so
        # the next unmatched parent line is almost always the one to compare with: check it first, and build
        # the {path: line number} map of the whole listing only on the first entry that is not there (a new or
        # removed path). A no-change walk then never builds the map. Either way a hit means the same thing:
        # the parent holds a line whose first nine fields (the key, which starts with the path) are equal.
        nprev = len(prev_lines)
        cursor = 0
        prev_at = None

        def lookup(key: str, rel_e: str):
            nonlocal cursor, prev_at
            if cursor < nprev and prev_lines[cursor].startswith(key):
                cursor += 1
                return prev_lines[cursor - 1]
            if prev_at is None:
                prev_at = path_index(prev_lines)
            i = prev_at.get(rel_e)
            if i is None or not prev_lines[i].startswith(key):
                return None
            cursor = i + 1
            return prev_lines[i]

        def visit(dfd: int, name: str, rel: str, st, limit: list | None = None) -> None:
            """One entry (and a directory's subtree). With `limit` (the path, as components below this
            directory, where the other half of a split walk starts) only what comes before it in walk order."""
            rel_e = esc(rel)
            got = stat_key(rel_e, st)
            if got is None:
                self.skipped += 1
                self.warnings.append(f"{os.path.join(root, rel)} skipped: not a file, directory or symlink")
                return
            t, size, key = got
            counts[_COUNTED_AS[t]] += 1
            counts["bytes"] += size
            hit = lookup(key, rel_e)
            if hit is not None:
                append(hit)
            else:
                record(dfd, name, rel, rel_e, t, size, st)
            if t == "d":
                descend(dfd, name, rel, limit)

        def record(dfd: int, name: str, rel: str, rel_e: str, t: str, size: int, st) -> None:
            """The line of an entry the parent listing does not hold as it is (read, hashed, stored)."""
            if t == "d":
                append(self._line(rel_e, t, st, 0, "", xattrs_get(name, dir_fd=dfd)))
            elif t == "l":
                target = os.fsdecode(os.readlink(name, dir_fd=dfd))
                append(self._line(rel_e, t, st, 0, target, xattrs_get(name, dir_fd=dfd)))
            elif size >= LARGE:
                try:
                    fd = os.open(name, READ_FLAGS, dir_fd=dfd)
                except OSError as e:
                    self.warnings.append(f"{os.path.join(root, rel)} skipped: {e.strerror}")
                    return
                fst = os.fstat(fd)
                xattrs = xattrs_get(None, fd=fd)
                self.read_files += 1
                self.read_bytes += fst.st_size
                if self.pool is None:
                    self.pool = executor(2, "large")
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
                xattrs = xattrs_get(name, dir_fd=dfd)
                append(self._line(rel_e, t, fst, len(data), blob, xattrs, racy))

        def descend(dfd: int, name: str, rel: str, limit: list | None) -> None:
            """A directory's entries, in order (up to `limit`, as in visit)."""
            nonlocal cursor
            try:
                cfd = os.open(name, DIR_FLAGS, dir_fd=dfd)
            except OSError as e:
                self.warnings.append(f"{os.path.join(root, rel)} not readable: {e.strerror}")
                return
            try:
                entries = scan(cfd)
                prefix = "" if rel == "." else rel + "/"
                prefix_e = esc(prefix)
                for ename, est in entries:
                    if limit is not None:
                        if ename > limit[0] or (ename == limit[0] and len(limit) == 1):
                            break  # the other half's
                        if ename == limit[0]:
                            visit(cfd, ename, prefix + ename, est, limit[1:])
                            continue
                    # Fast path for the common case, a file or symlink equal to the next parent line: the
                    # same key and the same test as visit() + lookup(), without the calls. Anything else
                    # (directories, misses, other types) goes through visit().
                    m = est.st_mode
                    is_reg = stat.S_ISREG(m)
                    if (is_reg or stat.S_ISLNK(m)) and cursor < nprev:
                        size = est.st_size if is_reg else 0
                        ln = prev_lines[cursor]
                        if ln.startswith(
                            f"{prefix_e}{esc(ename)}\t{'f' if is_reg else 'l'}\t{m & 0o7777:o}\t{est.st_uid}"
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
            split = self._fork_second_half(pfd, base, prev_lines)
            if split is None:
                visit(pfd, base, ".", st)
            else:
                try:
                    visit(pfd, base, ".", st, split.path)
                finally:
                    second = split.result()
                if second is None:  # the child failed: walk that half here, as a serial walk would
                    cursor = split.line
                    walk_suffix(pfd, base, split.path, visit)
                else:
                    for k, v in second["counts"].items():
                        counts[k] += v
                    self._replay(root, base, second["items"], prev_lines, lines, record, counts)
            out = []
            for x in lines:
                if isinstance(x, tuple):
                    rel_e, fst, fut, xattrs = x
                    blob, racy = fut.result()
                    if racy:
                        self.warnings.append(f"{os.path.join(root, unesc(rel_e))} changed while being read")
                    out.append(self._line(rel_e, "f", fst, fst.st_size, blob, xattrs, racy))
                else:
                    out.append(x)
            return out, counts
        finally:
            os.close(pfd)

    def _replay(self, root, base, items, prev_lines, lines, record, counts) -> None:
        """Add the second half of a split walk to `lines` as the child found it: its runs of parent lines
        reused as they are, its other entries recorded here (an entry gone meanwhile is left out, as a walk
        that came later would)."""
        from .restore import LiveTree, locate

        tree = None
        try:
            for item in items:
                kind = item[0]
                if not isinstance(kind, str):
                    lines.extend(prev_lines[kind : kind + item[1]])
                elif kind == "s":
                    self.skipped += 1
                    self.warnings.append(
                        f"{os.path.join(root, item[1])} skipped: not a file, directory or symlink"
                    )
                elif kind == "u":
                    self.warnings.append(f"{os.path.join(root, item[1])} not readable: {item[2]}")
                else:
                    rel, t, size = item[1], item[2], item[3]
                    if tree is None:
                        tree = LiveTree(root)
                    drel, name = locate(base, rel)
                    try:
                        record(tree.dirfd(drel), name, rel, esc(rel), t, size, _Stat(size, *item[4:]))
                    except (OSError, SnapshotError):
                        counts[_COUNTED_AS[t]] -= 1
                        counts["bytes"] -= size
                        self.warnings.append(
                            f"{os.path.join(root, rel)} vanished during the snapshot: not recorded"
                        )
        finally:
            if tree is not None:
                tree.close()

    def _parent(self, root: str, parents: dict) -> tuple | None:
        """(tree, lines, depth, chain bytes) this walk compares with: the root's stat-cache file when it is as
        new as the newest snapshot of the root (it then also knows what a later rollback wrote), else that
        snapshot's tree (a version-1 store, or a cache lost to a crash); None for a root never captured."""
        tree, snapid = parents.get(root, (None, None))
        cache = self.store.read_cache(root)
        self.caches[root] = cache
        if cache and (snapid is None or cache["tree"] == tree or cache["time_ns"] > id_time_ns(snapid)):
            return cache["tree"], cache["lines"], cache["depth"], cache["chain"]
        if tree is None:
            return None
        return (tree, *self.store.read_tree_info(tree))

    def run(self) -> dict:
        store = self.store
        parents = (
            store.parent_trees(self.roots) if os.path.isdir(os.path.join(store.path, "snapshots")) else {}
        )
        roots_out = []
        totals = {"files": 0, "logical_bytes": 0}
        try:
            for root in self.roots:
                base = self._parent(root, parents)
                prev_tree, prev_lines = (base[0], base[1]) if base else (None, [])
                lines, counts = self._walk_root(root, prev_lines)
                self.listings[root] = lines
                present = bool(lines)
                rec = {"tree": None, "base": base, "lines": lines, "text": None, "depth": 0, "chain": 0}
                if present:
                    collect_models(root, lines, self.models)
                    if (
                        len(lines) == len(prev_lines)
                        and all(map(operator.is_, lines, prev_lines))
                        and os.path.exists(store.p("trees", prev_tree))
                    ):
                        # Every parent line reused as it was: the parent's listing, neither joined nor hashed.
                        rec.update(tree=prev_tree, depth=base[2], chain=base[3])
                    else:
                        rec["text"] = "".join(lines).encode("utf-8", "surrogateescape")
                        rec["tree"] = hashlib.sha256(rec["text"]).hexdigest()
                self.trees[root] = rec
                roots_out.append(dict(path=root, present=present, tree=rec["tree"], **counts))
                totals["files"] += counts["files"]
                totals["logical_bytes"] += counts["bytes"]
            if not self.dry_run:
                self.packer.flush()
            self.packer.finish()
        finally:
            if self.pool:
                self.pool.shutdown(wait=True)
            self.packer.close()
        if not self.dry_run:
            # Packs are durable (fsynced by the packer) before the index that names them ...
            self.new_bytes += self.packer.write_index() + self.packer.new_bytes
            # ... and trees before the manifest that names them (written by the caller).
            for rec in self.trees.values():
                if rec["text"] is not None:
                    base = rec["base"] if rec["base"] and rec["base"][0] != rec["tree"] else None
                    rec["depth"], rec["chain"], written = store.write_tree(
                        rec["tree"], rec["lines"], rec["text"], base
                    )
                    self.new_bytes += written
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

    def write_caches(self, skip=()) -> None:
        """After the manifest: each root's stat-cache file names the tree just recorded (rewritten only when
        that tree is not the one it names already; removed for an absent root). Roots in skip are left."""
        for root, rec in self.trees.items():
            if root in skip:
                continue
            cached = (self.caches.get(root) or {}).get("tree")
            if rec["tree"] is None:
                if cached:
                    self.store.drop_cache(root)
            elif rec["tree"] != cached:
                text = rec["text"]
                if text is None:
                    text = "".join(rec["lines"]).encode("utf-8", "surrogateescape")
                self.store.write_cache(root, rec["tree"], rec["depth"], rec["chain"], text)

    def stale_records(self) -> list[str]:
        """Trees a rollback wrote for a stat-cache file alone that nothing uses once this snapshot moves that
        file on: not this snapshot's tree nor the base of its delta, and named by no manifest written since
        (a no-change snapshot right after the rollback names it). Removed with the run, so no garbage stays."""
        stale = []
        for root, rec in self.trees.items():
            cache = self.caches.get(root)
            if not cache or not cache["recorded"] or rec["tree"] == cache["tree"]:
                continue
            old = cache["tree"]
            if rec["tree"] is not None and self.store.tree_header(rec["tree"])[0] == old:
                continue
            named = False
            for snapid in reversed(self.store.snapshot_ids()):
                if id_time_ns(snapid) < cache["time_ns"]:
                    break
                m = self.store.load_manifest(snapid)
                named = any(r.get("tree") == old for r in m.get("roots", []))
                if named:
                    break
            if not named:
                stale.append(self.store.p("trees", old))
        return stale

    def abort(self) -> None:
        """After an exception (not a kill, which the next run's recovery handles): drop this run's temp files
        and the store files it created, unless its manifest was written."""
        for name in self.tmp_names + self.packer.tmp_names:
            with contextlib.suppress(OSError):
                os.unlink(name)
        self.store.abort_run()
