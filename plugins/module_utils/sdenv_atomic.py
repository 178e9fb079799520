"""The toolkit's one atomic file write, and its one way into a tree another account controls.

Atomic: temp file beside the destination (same filesystem, so the rename is atomic), mode and owner set
before any byte is written (a secret is never briefly world-readable), fsync, rename, fsync the directory
(so the rename survives a power cut).

No link followed that another account could have made: root provisions into the dummy's home and the
WebUI tree, where the dummy (or anything it runs) can put a symbolic link at any name to send root's write
or read to /etc or to a root-only file. So a path is walked one component at a time from / through
directory descriptors (openat with O_NOFOLLOW): a link is followed only where neither it nor the directory
holding it can be changed by anyone but root or the account running this code (/var -> private/var on
macOS is root's; a link in the dummy's home is refused, whoever made it). Everything after that works
relative to the directory descriptor, so swapping a directory for a link afterwards changes nothing.

Every role's modules use this one (`ansible.module_utils.sdenv_atomic` on a host; plain `sdenv_atomic` in
unit tests).
"""

import contextlib
import errno
import os
import secrets
import stat

MAX_LINKS = 40  # as the kernel's own limit on links followed in one lookup
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _CLOEXEC


class LinkRefused(OSError):
    """A path reaches a symbolic link this code must not follow; str() is one sentence saying what to do."""

    def __init__(self, path, what="a symbolic link"):
        super().__init__(
            errno.ELOOP,
            f"{path} is {what} that another account can change, and the toolkit does not follow links there "
            "(it could send root's read or write anywhere): replace it with a real directory or file and run "
            "again",
        )
        self.filename = path

    def __str__(self):
        return self.strerror


def _runner_controls(st, euid):
    """Only root or the running account can change this directory's entries (sticky: only their own)."""
    if st.st_uid not in (0, euid):
        return False
    return not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) or bool(st.st_mode & stat.S_ISVTX)


def _join(shown, name):
    return "/" + name if shown == "/" else shown + "/" + name


def open_dir_nofollow(path):
    """A descriptor of the directory at absolute `path`, reached with no link another account could have made.

    Raises LinkRefused for such a link (or a component swapped for one while walking), FileNotFoundError /
    NotADirectoryError as os.open would.
    """
    path = os.path.abspath(path)
    euid = os.geteuid()
    fd = os.open("/", _DIR_FLAGS)
    parts = [p for p in path.split("/") if p and p != "."]
    parts.reverse()  # a stack: the next component last
    shown, followed = "/", 0
    try:
        while parts:
            name = parts.pop()
            if name == "..":
                nfd = os.open("..", _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd, shown = nfd, os.path.dirname(shown) or "/"
                continue
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                if not (st.st_uid in (0, euid) and _runner_controls(os.fstat(fd), euid)):
                    raise LinkRefused(_join(shown, name))
                followed += 1
                if followed > MAX_LINKS:
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
                target = os.readlink(name, dir_fd=fd)
                parts.extend(reversed([p for p in target.split("/") if p and p != "."]))
                if target.startswith("/"):
                    nfd = os.open("/", _DIR_FLAGS)
                    os.close(fd)
                    fd, shown = nfd, "/"
                continue
            try:
                nfd = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if _refused_link(exc, name, fd):  # it became a link after the stat above
                    raise LinkRefused(_join(shown, name)) from None
                exc.filename = _join(shown, name)
                raise
            os.close(fd)
            fd, shown = nfd, _join(shown, name)
    except BaseException:
        os.close(fd)
        raise
    return fd


def makedirs_nofollow(path, below, mode=0o755, uid=-1, gid=-1):
    """A descriptor of directory `path`, first making the missing directories between `below` (which must
    exist) and it: `below` is reached as open_dir_nofollow does, everything under it with no link at all,
    and each directory made is given `mode` and owner through its own descriptor (never a chown by name)."""
    path, below = os.path.abspath(path), os.path.abspath(below)
    rel = os.path.relpath(path, below)
    if rel == os.pardir or rel.startswith(os.pardir + os.sep):
        raise ValueError(f"{path} is not below {below}")
    fd = open_dir_nofollow(below)
    shown = below
    try:
        for name in [] if rel == os.curdir else rel.split(os.sep):
            shown = _join(shown, name)
            made = False
            try:
                os.mkdir(name, 0o700, dir_fd=fd)  # private until it has its owner and mode
                made = True
            except FileExistsError:
                pass
            try:
                nfd = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if _refused_link(exc, name, fd):
                    raise LinkRefused(shown) from None
                exc.filename = shown
                raise
            os.close(fd)
            fd = nfd
            if made:
                if uid != -1 or gid != -1:
                    os.fchown(fd, uid, gid)
                os.fchmod(fd, mode)
    except BaseException:
        os.close(fd)
        raise
    return fd


def own_dir_nofollow(path, uid, gid, mode_bits, check_mode=False):
    """Make directory `path` exist, owned by uid:gid with at least `mode_bits`, through descriptors: its
    parent reached as open_dir_nofollow does, `path` itself never a link (LinkRefused). Root hands
    directories to the dummy this way (Homebrew's prefix): a chown by name would follow a link the dummy put
    there and hand it /etc. Returns whether anything changed (or would, in check mode)."""
    path = os.path.abspath(path)
    name = os.path.basename(path)
    pfd = open_dir_nofollow(os.path.dirname(path))
    try:
        try:
            st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        if st is not None and stat.S_ISLNK(st.st_mode):
            raise LinkRefused(path)
        if st is not None and (st.st_uid, st.st_gid) == (uid, gid) and st.st_mode & mode_bits == mode_bits:
            return False
        if check_mode:
            return True
        if st is None:
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o700, dir_fd=pfd)  # private until it has its owner and mode
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=pfd)
        except OSError as exc:
            if _refused_link(exc, name, pfd):
                raise LinkRefused(path) from None
            raise
        try:
            os.fchown(fd, uid, gid)  # before the mode: a chown clears setuid/setgid bits
            os.fchmod(fd, stat.S_IMODE(os.fstat(fd).st_mode) | mode_bits)
        finally:
            os.close(fd)
        return True
    finally:
        os.close(pfd)


def open_nofollow(path, flags=os.O_RDONLY, mode=0o600, dir_fd=None):
    """os.open of `path` with no link another account could have made in its directories, none at all at
    its last component. `dir_fd`: `path` is a name in that (already safely opened) directory instead."""
    if dir_fd is None:
        dfd = open_dir_nofollow(os.path.dirname(os.path.abspath(path)))
        name = os.path.basename(os.path.abspath(path))
    else:
        dfd, name = dir_fd, path
    try:
        return os.open(name, flags | os.O_NOFOLLOW | _CLOEXEC, mode, dir_fd=dfd)
    except OSError as exc:
        if exc.errno == errno.ELOOP or (exc.errno == errno.EMLINK and _is_link(name, dfd)):
            raise LinkRefused(path) from None  # EMLINK: FreeBSD's O_NOFOLLOW on a link; macOS says ELOOP
        raise
    finally:
        if dir_fd is None:
            os.close(dfd)


def _refused_link(exc, name, dir_fd):
    """Whether an O_NOFOLLOW|O_DIRECTORY open failed because `name` is a link (Linux says ENOTDIR for a
    link to a directory there, ELOOP for others; macOS says ELOOP)."""
    return exc.errno == errno.ELOOP or (exc.errno == errno.ENOTDIR and _is_link(name, dir_fd))


def _is_link(name, dir_fd):
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def read_bytes_nofollow(path):
    """The bytes of the regular file at `path` (see open_nofollow); FileNotFoundError when absent."""
    fd = open_nofollow(path)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    finally:
        os.close(fd)


def fsync_dir(directory):
    """Make a rename in directory durable; filesystems that refuse fsync on a directory are tolerated."""
    try:
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        fsync_dir_fd(dfd)
    finally:
        os.close(dfd)


def fsync_dir_fd(dfd):
    try:
        os.fsync(dfd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EBADF, errno.ENOTSUP):
            raise


def write_bytes_in_dir(dir_fd, name, data, mode=0o644, uid=-1, gid=-1):
    """Replace `name` in the open directory `dir_fd` with data (bytes) atomically, with the given mode and
    owner. The temp file is created new (O_EXCL|O_NOFOLLOW) in that directory and renamed over `name`, so a
    link at `name` is replaced, never written through."""
    tmp = f".{name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | _CLOEXEC, 0o600, dir_fd=dir_fd)
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
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        fsync_dir_fd(dir_fd)
    except BaseException:
        if fd != -1:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise


def write_bytes_atomic(path, data, mode=0o644, uid=-1, gid=-1):
    """Replace path with data (bytes) atomically, with the given mode and (optionally) owner; its directory
    is reached with no link another account could have made (LinkRefused otherwise)."""
    path = os.path.abspath(path)
    dfd = open_dir_nofollow(os.path.dirname(path))
    try:
        write_bytes_in_dir(dfd, os.path.basename(path), data, mode=mode, uid=uid, gid=gid)
    finally:
        os.close(dfd)


def regular_file_state(path):
    """(bytes, mode bits) of the regular file at `path` (see open_nofollow); (None, None) when there is none
    there (absent, or not a regular file: a write replaces it)."""
    try:
        fd = open_nofollow(path)
    except FileNotFoundError:
        return None, None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None, None
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks), stat.S_IMODE(st.st_mode)
    finally:
        os.close(fd)


def ensure_file_content(path, data, mode=0o644, below=None, check_mode=False):
    """Make the file at `path` hold exactly `data` with `mode`, written atomically only when either differs;
    `below`: an existing folder from which the missing folders down to the file's are made first (0755).
    Returns (changed, the bytes it held before or None)."""
    before, before_mode = regular_file_state(path)
    changed = before != data or before_mode != mode
    if changed and not check_mode:
        if below:
            os.close(makedirs_nofollow(os.path.dirname(os.path.abspath(path)), below))
        write_bytes_atomic(path, data, mode=mode)
    return changed, before
