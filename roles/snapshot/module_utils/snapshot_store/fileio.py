"""File primitives the store builds on: durable writes, copies, clones, extended attributes, safe removal.

Invariants kept here:
- Nothing is ever opened through a symlink of a live tree: directories are opened with O_NOFOLLOW relative
  to a directory fd (DIR_FLAGS), files with READ_FLAGS, and removal (`rmtree_at`) never follows a link.
- `copy_fd` writes exactly the bytes it feeds to the hasher (the toolkit's hash-and-write pipeline), so an
  object's name is the SHA-256 of what was stored even when the source changes meanwhile.
- Durability is the caller's: these helpers fsync only where their name says so.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import sys

from .format import CHUNK

_HAS_XATTR = hasattr(os, "listxattr")
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_FICLONE = 0x40049409  # Linux ioctl number (btrfs, XFS); ext4 and tmpfs answer EOPNOTSUPP.


def executor(workers: int, prefix: str):
    import concurrent.futures

    return concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix=prefix)


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def read_all(fd: int) -> bytes:
    chunks = []
    while True:
        b = os.read(fd, CHUNK)
        if not b:
            return b"".join(chunks)
        chunks.append(b)


def xattrs_get(name, dir_fd=None, fd=None) -> str:
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


def xattrs_set(target, encoded: str, follow: bool, warnings: list) -> None:
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


def set_meta_fd(fd: int, t: tuple, warnings: list, is_root: bool, fresh: bool = False) -> None:
    """Owner (as root), mode, extended attributes and mtime of an open file, from a parsed tree line. A
    `fresh` file (just created) has no extended attributes to remove: none are read when it should have none."""
    if is_root:
        os.fchown(fd, t[3], t[4])  # before chmod: chown clears setuid/setgid bits
    os.fchmod(fd, t[2])
    if t[10] or not fresh:
        xattrs_set(fd, t[10], True, warnings)
    os.utime(fd, ns=(t[6], t[6]))


def clone(src_fd: int, dst_fd: int) -> bool:
    """A copy-on-write clone of src into dst where the filesystem has them (FICLONE: btrfs, XFS)."""
    if sys.platform.startswith("linux"):
        try:
            fcntl.ioctl(dst_fd, _FICLONE, src_fd)
            return True
        except OSError:
            pass
    return False


def pipeline():
    """The toolkit's sdenv_pipeline module (HashWritePipeline, cpus), imported where it is used. Run as a
    module on a host it sits beside this package in ansible.module_utils; run anywhere else (unit tests, the
    command line) it is imported from the toolkit's plugins/module_utils, without first trying (and paying
    ~10 ms for) an import of ansible, which a no-change snapshot must not."""
    if __name__.startswith("ansible.module_utils."):
        from ansible.module_utils import sdenv_pipeline
    else:
        toolkit = os.path.join(
            os.path.dirname(os.path.abspath(__file__)), *[".."] * 4, "plugins", "module_utils"
        )
        if toolkit not in sys.path:
            sys.path.append(toolkit)
        import sdenv_pipeline
    return sdenv_pipeline


def copy_fd(src_fd: int, dst_fd: int, dst_path: str | None = None, h=None) -> None:
    """Copy src (from its start) into dst, feeding h with exactly the bytes written when given; dst written
    with O_DIRECT where possible, so the fsync that follows finds little to do (sdenv_pipeline)."""
    pipe = pipeline().HashWritePipeline(dst_fd, dst_path, 0, h)
    try:
        off = 0
        while n := os.preadv(src_fd, [pipe.take()], off):
            pipe.give(n)
            off += n
    finally:
        pipe.close()


ALIGN = 4096


def open_direct(path: str, flags: int) -> int | None:
    """The file opened once more with O_DIRECT (reads and writes straight to the disk, by DMA: no page-cache
    copy on the CPU), or None where there is no O_DIRECT (macOS) or the filesystem refuses it (tmpfs)."""
    direct = getattr(os, "O_DIRECT", 0)
    if not direct:
        return None
    try:
        return os.open(path, flags | direct | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None


def copy_range(src: tuple, dst: tuple, off: int, end: int, buf: memoryview) -> None:
    """Copy bytes [off, end) of src into dst at the same offsets. src and dst are (fd, O_DIRECT fd or None);
    buf is page-aligned (an mmap) and a multiple of ALIGN long, and off is a multiple of ALIGN. Whole blocks go
    through the O_DIRECT fds; a file's unaligned tail is written through the page cache."""
    while off < end:
        want = min(len(buf), end - off)
        if src[1] is not None:
            n = os.preadv(src[1], [buf[: -(-want // ALIGN) * ALIGN]], off)  # O_DIRECT reads whole blocks
            n = min(n, want)
        else:
            n = os.preadv(src[0], [buf[:want]], off)
        if n <= 0:
            raise OSError(errno.EIO, f"short read at offset {off} of a stored object")
        whole = n - n % ALIGN if dst[1] is not None else 0
        if whole:
            write_at(dst[1], buf[:whole], off)
        if whole < n:
            write_at(dst[0], buf[whole:n], off + whole)
        off += n


def write_at(fd: int, view, offset: int) -> None:
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def syncfs(fd: int) -> None:
    """Flush the filesystem holding fd in one call (Linux syncfs); elsewhere fall back to a global sync."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if hasattr(libc, "syncfs") and libc.syncfs(fd) == 0:
            return
    except (OSError, AttributeError):
        pass
    os.sync()


def rmtree_at(dfd: int, name: str) -> None:
    """Remove name under dfd, recursively, never following a symlink."""
    try:
        st = os.lstat(name, dir_fd=dfd)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=dfd)
        return
    cfd = os.open(name, DIR_FLAGS, dir_fd=dfd)
    try:
        for n in os.listdir(cfd):
            rmtree_at(cfd, n)
    finally:
        os.close(cfd)
    os.rmdir(name, dir_fd=dfd)


def rmtree(path: str) -> None:
    parent, name = os.path.split(os.path.abspath(path))
    fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        rmtree_at(fd, name)
    finally:
        os.close(fd)


def remove_temp_files(root: str, prefix: str) -> int:
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
