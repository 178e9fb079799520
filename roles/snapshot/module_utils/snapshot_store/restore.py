"""Writing snapshot content into live directories, in parallel by bytes: a restore into a new directory, and
the writing half of a rollback (rollback.py).

The work is cut by bytes, not by directory. Creating files is kernel CPU time (~0.05-0.45 ms a file on the
project's VMs), copying a large file is disk time; so the small entries of a listing (directories, small files,
symlinks), in walk order, are cut into chunks of about equal cost that CPU-many threads take in turn, creating
directories as they meet them, while large files (stored as objects) are cut into ranges that their own threads
copy disk to disk with O_DIRECT (DMA, no page-cache copy on the CPU), from the start. Two models in one
directory no longer leave one thread copying 2 GiB while the other idles, and 1,766 directories are no longer
made one by one before any file.

Invariants kept here:
- The destination of a restore appears only complete: everything is written under a staging name next to it,
  made durable (syncfs), then renamed to the destination.
- Entries are created with O_EXCL and never through a symlink (directory fds opened with O_NOFOLLOW, component
  by component); a file gets its metadata once its content is complete; directory metadata is set last,
  deepest first (creating entries changes a directory's mtime).
- Every byte written is the blob's: a large file's ranges are read from its object file at the same offsets,
  a small file is read from its pack and checked for size.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import stat
import threading

from .fileio import (
    DIR_FLAGS,
    clone,
    copy_range,
    open_direct,
    rmtree,
    set_meta_fd,
    syncfs,
    xattrs_get,
    xattrs_set,
)
from .format import LARGE, SnapshotError, parse_line, token

RANGE = 64 << 20  # a large file is copied in ranges of this size, by whichever thread is free
BUFFER = 8 << 20  # each range thread's aligned buffer
# A chunk of small entries costs about this much: one entry counts as ENTRY_COST bytes (creating it) plus its
# size, so chunks are even in time whatever the mix of many tiny files or few bigger ones.
CHUNK_COST = 8 << 20
ENTRY_COST = 64 << 10
RANGE_THREADS = 2


def restore(store, ref: str, dest: str, threads: int | None = None, sync: bool = True) -> dict:
    """The restore operation (Store.restore): DEST/<root path without its leading '/'> for each root."""
    store.require()
    with store.locked(False):
        m = store.load_manifest(store.resolve(ref))
        if os.path.lexists(dest):
            raise SnapshotError(
                f"The restore destination {dest} exists: give a path that does not exist yet."
            )
        staging = dest + ".sdenv-restore-" + token(4)
        os.makedirs(staging, mode=0o700)
        is_root = os.geteuid() == 0
        warnings: list = []
        total = 0
        try:
            for r in m["roots"]:
                if not r.get("present"):
                    continue
                rel = r["path"].lstrip("/")
                os.makedirs(os.path.join(staging, os.path.dirname(rel)), exist_ok=True)
                root = os.path.join(staging, rel)
                entries = [parse_line(ln) for ln in store.read_tree(r["tree"])]
                base = os.path.basename(root)
                jobs = [(*locate(base, e[0]), e) for e in entries]
                write_entries(store, root, jobs, threads, is_root, warnings, make_dirs=True)
                set_dir_meta(
                    LiveTree(root), [e for e in entries if e[1] == "d"], is_root, warnings, fresh=True
                )
                total += len(entries)
            if sync:
                fd = os.open(staging, os.O_RDONLY)
                try:
                    syncfs(fd)
                finally:
                    os.close(fd)
            os.rename(staging, dest)
        except BaseException:
            rmtree(staging)  # nothing half-written stays behind
            raise
        return {"changed": True, "id": m["id"], "files": total, "dest": dest, "warnings": warnings}


def locate(base: str, rel: str) -> tuple[str, str]:
    """(directory relative to the root's parent, name) of a path relative to a root named base."""
    if rel == ".":
        return "", base
    d, _, name = rel.rpartition("/")
    return (base + "/" + d if d else base), name


class LiveTree:
    """Directory fds of one live root, opened component by component with O_NOFOLLOW (never through a link),
    relative to the root's parent. One per thread. With create=True a missing directory is made (0700; its
    metadata comes last), as a restore does for a chunk that starts inside a directory another thread makes."""

    def __init__(self, root: str):
        self.root = root
        self.parent, self.base = os.path.split(root)
        self.pfd = os.open(self.parent, os.O_RDONLY | os.O_DIRECTORY)
        self.fds: dict = {}

    def loc(self, rel: str) -> tuple[str, str]:
        return locate(self.base, rel)

    def dirfd(self, drel: str, create: bool = False) -> int:
        if drel == "":
            return self.pfd
        fd = self.fds.get(drel)
        if fd is not None:
            return fd
        up, _, name = drel.rpartition("/")
        ufd = self.dirfd(up, create)
        try:
            fd = os.open(name, DIR_FLAGS, dir_fd=ufd)
        except FileNotFoundError:
            if not create:
                raise self._gone(drel, "No such file or directory") from None
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o700, dir_fd=ufd)
            fd = os.open(name, DIR_FLAGS, dir_fd=ufd)
        except OSError as e:
            raise self._gone(drel, e.strerror) from None
        if len(self.fds) > 200:
            self.forget("")
        self.fds[drel] = fd
        return fd

    def _gone(self, drel: str, why: str) -> SnapshotError:
        return SnapshotError(
            f"{os.path.join(self.parent, drel)} is not a real directory any more ({why}): something changed the "
            "tree while it was being written; stop it and run the rollback again."
        )

    def forget(self, drel: str) -> None:
        for k in [k for k in self.fds if k == drel or k.startswith(drel + "/") or drel == ""]:
            os.close(self.fds.pop(k))

    def close(self) -> None:
        self.forget("")
        os.close(self.pfd)


class _LargeFile:
    """A large file being copied by ranges: its fds, and how many ranges are still to come."""

    def __init__(self, fd: int, src: int, t: tuple, path: str, ranges: int):
        self.fd, self.src, self.t, self.ranges = fd, src, t, ranges
        self.direct_dst = open_direct(f"/proc/self/fd/{fd}", os.O_WRONLY)
        self.direct_src = open_direct(path, os.O_RDONLY)

    def close(self) -> None:
        for fd in (self.direct_dst, self.direct_src, self.src, self.fd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.fd = self.src = self.direct_dst = self.direct_src = None


def write_entries(
    store, root: str, jobs: list, threads: int | None, is_root: bool, warnings: list, make_dirs: bool
) -> None:
    """Create every entry of `jobs`, [(directory relative to root's parent, name to create, parsed line)]
    (directories, files, symlinks; parents listed before children), in parallel by bytes. With make_dirs (a
    restore) a missing parent directory is made; otherwise (a rollback, which makes its directories first) it
    must exist. Every entry is new, so it has no extended attributes to remove. File metadata is set here,
    directory metadata by the caller (set_dir_meta)."""
    fresh = True
    index = store.load_index()
    large, stream = [], []
    for job in jobs:
        t = job[2]
        (large if t[1] == "f" and t[5] >= LARGE and t[9] not in index else stream).append(job)
    creators = max(1, threads or _cpus())
    errors: list = []
    lock = threading.Lock()
    files, ranges = [], []
    tree = LiveTree(root)
    try:
        for drel, name, t in large:
            state = _open_large(store, tree.dirfd(drel, make_dirs), name, t, warnings, is_root, fresh)
            if state is not None:
                files.append(state)
                ranges += [(state, off, min(off + RANGE, t[5])) for off in range(0, t[5], RANGE)]
    except BaseException:
        for state in files:
            state.close()
        tree.close()
        raise
    tree.close()
    chunks = _chunks(stream)
    next_chunk, next_range = itertools.count(), itertools.count()

    def copy_ranges(buf) -> None:
        while not errors and (i := next(next_range)) < len(ranges):
            state, off, end = ranges[i]
            copy_range((state.src, state.direct_src), (state.fd, state.direct_dst), off, end, buf)
            with lock:
                state.ranges -= 1
                done = state.ranges == 0
            if done:
                set_meta_fd(state.fd, state.t, warnings, is_root, fresh)
                state.close()

    def creator() -> None:
        mine = LiveTree(root)
        pack_fds: dict = {}
        try:
            while not errors and (i := next(next_chunk)) < len(chunks):
                for drel, name, t in chunks[i]:
                    _create(store, mine.dirfd(drel, make_dirs), name, t, pack_fds, is_root, warnings, fresh)
            if ranges:
                copy_ranges(_buffer())
        except BaseException as e:
            errors.append(e)
        finally:
            for fd in pack_fds.values():
                os.close(fd)
            mine.close()

    def mover() -> None:
        try:
            copy_ranges(_buffer())
        except BaseException as e:
            errors.append(e)

    workers = [
        threading.Thread(target=mover, name="sdenv-range") for _ in range(min(RANGE_THREADS, len(ranges)))
    ]
    workers += [threading.Thread(target=creator, name="sdenv-create") for _ in range(creators)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    for state in files:
        state.close()
    if errors:
        raise errors[0]


def _cpus() -> int:
    from .fileio import pipeline

    return pipeline().cpus()


def _buffer() -> memoryview:
    import mmap

    return memoryview(mmap.mmap(-1, BUFFER))  # page-aligned, as O_DIRECT needs


def _chunks(stream: list) -> list:
    """The small entries in walk order, cut where the running cost passes CHUNK_COST."""
    chunks, chunk, cost = [], [], 0
    for job in stream:
        chunk.append(job)
        cost += ENTRY_COST + (job[2][5] if job[2][1] == "f" else 0)
        if cost >= CHUNK_COST:
            chunks.append(chunk)
            chunk, cost = [], 0
    if chunk:
        chunks.append(chunk)
    return chunks


def _open_large(store, dfd: int, name: str, t: tuple, warnings: list, is_root: bool, fresh: bool):
    """Create a large file and open its object; a _LargeFile to copy by ranges, or None when a copy-on-write
    clone already made it whole."""
    src = store.open_object(t[9])
    try:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dfd)
    except BaseException:
        os.close(src)
        raise
    if clone(src, fd):
        try:
            set_meta_fd(fd, t, warnings, is_root, fresh)
        finally:
            os.close(fd)
            os.close(src)
        return None
    try:
        # Allocated up front, so ranges written at the same time land in one extent, not interleaved.
        if hasattr(os, "posix_fallocate"):
            os.posix_fallocate(fd, 0, t[5])
        else:
            os.ftruncate(fd, t[5])
    except OSError as e:
        if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            os.close(fd)
            os.close(src)
            raise
        os.ftruncate(fd, t[5])
    return _LargeFile(fd, src, t, store.p("objects", t[9]), -(-t[5] // RANGE))


def _create(store, dfd: int, name: str, t: tuple, pack_fds: dict, is_root: bool, warnings: list, fresh: bool):
    """One small entry: a directory (metadata later), a symlink, or a file from its pack."""
    if t[1] == "d":
        with contextlib.suppress(FileExistsError):  # made already as the parent of another chunk's entry
            os.mkdir(name, 0o700, dir_fd=dfd)
        return
    if t[1] == "l":
        os.symlink(t[9], name, dir_fd=dfd)
        if is_root:
            os.chown(name, t[3], t[4], dir_fd=dfd, follow_symlinks=False)
        with contextlib.suppress(NotImplementedError, OSError):
            os.utime(name, ns=(t[6], t[6]), dir_fd=dfd, follow_symlinks=False)
        return
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dfd)
    try:
        if t[5]:
            store.copy_blob_to(t[9], t[5], fd, pack_fds)
        set_meta_fd(fd, t, warnings, is_root, fresh)
    finally:
        os.close(fd)


def set_dir_meta(tree: LiveTree, dirs: list, is_root: bool, warnings: list, fresh: bool) -> None:
    """Directory metadata from parsed lines (in walk order), deepest first; what already matches is left."""
    try:
        for t in reversed(dirs):
            drel, name = tree.loc(t[0])
            fd = os.open(name, DIR_FLAGS, dir_fd=tree.dirfd(drel))
            try:
                st = os.fstat(fd)
                if is_root and (st.st_uid, st.st_gid) != (t[3], t[4]):
                    os.fchown(fd, t[3], t[4])
                if stat.S_IMODE(st.st_mode) != t[2]:
                    os.fchmod(fd, t[2])
                if (t[10] or not fresh) and xattrs_get(None, fd=fd) != t[10]:
                    xattrs_set(fd, t[10], True, warnings)
                if st.st_mtime_ns != t[6]:
                    os.utime(fd, ns=(t[6], t[6]))
            finally:
                os.close(fd)
    finally:
        tree.close()
