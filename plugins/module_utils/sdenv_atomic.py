"""The toolkit's one atomic file write: nothing half-written ever sits at a final path.

Temp file beside the destination (same filesystem, so the rename is atomic), mode and owner set before
any byte is written (a secret is never briefly world-readable), fsync, rename, fsync the directory (so
the rename survives a power cut). Every role's modules use this one (`ansible.module_utils.sdenv_atomic`
on a host; plain `sdenv_atomic` in unit tests).
"""

import contextlib
import errno
import os
import tempfile


def fsync_dir(directory):
    """Make a rename in directory durable; filesystems that refuse fsync on a directory are tolerated."""
    try:
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EBADF, errno.ENOTSUP):
            raise
    finally:
        os.close(dfd)


def write_bytes_atomic(path, data, mode=0o644, uid=-1, gid=-1):
    """Replace path with data (bytes) atomically, with the given mode and (optionally) owner."""
    directory = os.path.dirname(os.path.abspath(path)) or "."
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, mode)
        if uid != -1 or gid != -1:
            os.fchown(fd, uid, gid)
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.rename(tmp, path)
        fsync_dir(directory)
    except BaseException:
        if fd != -1:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
