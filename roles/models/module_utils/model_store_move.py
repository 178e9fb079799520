# Bring the model store into shape before model_file installs into it (module model_store):
#  - a model the lock pins that still sits in the WebUI tree (the layout before the store:
#    models/Stable-diffusion, models/Lora) moves into the store without a download: its SHA256 is checked
#    against the lock, then it is linked into the store under its name (a hard link never replaces a file
#    that appeared meanwhile; across filesystems a copy that is hashed again), and only then removed from
#    the WebUI tree, so the WebUI never lists it twice (it scans models/Stable-diffusion beside --ckpt-dir);
#  - a copy left in the WebUI tree of a model the store already holds is removed once its bytes are the
#    lock's;
#  - a file already at a model's place in the store that the toolkit did not put there (no stat-cache entry
#    for it) is kept: the same bytes as the lock's are adopted, other bytes stop the run with one sentence
#    before anything changes. So are other bytes under a model's name in the WebUI tree, a link or a folder
#    at either place.
# Every path is reached as sdenv_atomic reaches the dummy's tree (no link another account could make is
# followed): this runs as root in the dummy's home. Stdlib only.
from __future__ import annotations

import contextlib
import errno
import os
import stat

try:
    from ansible.module_utils.model_download import CHUNK, hash_file
    from ansible.module_utils.model_store import store_path, webui_kind_dirs
    from ansible.module_utils.sdenv_atomic import (
        LinkRefused,
        fsync_dir_fd,
        makedirs_nofollow,
        open_dir_nofollow,
    )
    from ansible.module_utils.stat_cache import StatCache
except ImportError:
    try:  # installed as the Ansible collection sdenv.toolkit
        from ansible_collections.sdenv.toolkit.plugins.module_utils.model_download import CHUNK, hash_file
        from ansible_collections.sdenv.toolkit.plugins.module_utils.model_store import (
            store_path,
            webui_kind_dirs,
        )
        from ansible_collections.sdenv.toolkit.plugins.module_utils.sdenv_atomic import (
            LinkRefused,
            fsync_dir_fd,
            makedirs_nofollow,
            open_dir_nofollow,
        )
        from ansible_collections.sdenv.toolkit.plugins.module_utils.stat_cache import StatCache
    except ImportError:  # unit tests import the module_utils directories directly
        from model_download import CHUNK, hash_file
        from model_store import store_path, webui_kind_dirs
        from sdenv_atomic import LinkRefused, fsync_dir_fd, makedirs_nofollow, open_dir_nofollow
        from stat_cache import StatCache


class StoreError(Exception):
    """One sentence per problem; nothing was changed."""


class Step:
    """What happens to one model: `move` (WebUI tree -> store), `drop` (a copy in the WebUI tree of what the
    store holds), `adopt` (the store holds the lock's bytes the toolkit did not put there) or `keep`."""

    def __init__(self, model, action, dest, source=None, sha256=None, addnet=None, source_st=None):
        self.model, self.action, self.dest, self.source = model, action, dest, source
        self.sha256, self.addnet, self.source_st = sha256, addnet, source_st

    def line(self):
        if self.action == "move":
            return f"move {self.source} -> {self.dest} (SHA256 checked, no download)"
        if self.action == "drop":
            return f"remove {self.source} (the same bytes as {self.dest}, which the WebUI reads through its flags)"
        if self.action == "adopt":
            return f"keep {self.dest} (already the lock's bytes)"
        return f"keep {self.dest}"


def _lstat(dir_fd, name):
    if dir_fd is None:
        return None
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _open_dir(path):
    """The folder at `path` reached with no link the dummy could make, or None when it does not exist."""
    try:
        return open_dir_nofollow(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except LinkRefused as exc:
        raise StoreError(str(exc)) from None


def _same_file(a, b):
    return a is not None and b is not None and (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _identity(st):
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class StoreMover:
    """Plan (read only, everything hashed that needs it), then apply; `models` are lock entries (name, kind,
    file, sha256, size)."""

    def __init__(self, store, webui_dir, models, stat_cache, uid=-1, gid=-1):
        self.store, self.webui_dir, self.models = store, webui_dir, models
        self.cache = StatCache(stat_cache)
        self.uid, self.gid = uid, gid
        self.legacy = webui_kind_dirs(webui_dir) if webui_dir else {}

    # --- plan -----------------------------------------------------------------------------------------

    def plan(self):
        steps, problems = [], []
        fds = {}
        try:
            for model in self.models:
                try:
                    steps.append(self._plan_one(model, fds))
                except StoreError as exc:
                    problems.append(str(exc))
        finally:
            for fd in fds.values():
                if fd is not None:
                    os.close(fd)
        if problems:
            more = f" (and {len(problems) - 1} more: {'; '.join(problems[1:])})" if len(problems) > 1 else ""
            raise StoreError(problems[0] + more)
        return steps

    def _dir(self, fds, path):
        if path not in fds:
            fds[path] = _open_dir(path)
        return fds[path]

    def _hash(self, dir_fd, name, kind):
        hasher = hash_file(
            name, addnet=kind == "lora" and name.lower().endswith(".safetensors"), dir_fd=dir_fd
        )
        return hasher.hexdigest(), hasher.addnet_hexdigest()

    def _plan_one(self, model, fds):
        name, kind, file = model["name"], model["kind"], model["file"]
        want = model["sha256"].strip().lower()
        dest = store_path(self.store, kind, file)
        dest_fd = self._dir(fds, os.path.dirname(dest))
        dest_st = _lstat(dest_fd, file)
        action = "keep"
        dest_sha = addnet = None
        if dest_st is not None:
            if not stat.S_ISREG(dest_st.st_mode):
                raise StoreError(
                    f"{dest} is not a regular file but model {name} of the lock goes there: move it out of the"
                    " model store (the toolkit follows no link there), then run again"
                )
            if os.path.abspath(dest) not in self.cache.entries:
                # Not the toolkit's (it records every file it installs or checks; one it installed and the
                # lock now pins anew is model_file's to replace): the lock's bytes are adopted, others are
                # the user's and stay.
                dest_sha, addnet = self._hash(dest_fd, file, kind)
                if dest_sha != want:
                    raise StoreError(
                        f"{dest} holds other bytes than model {name} of the lock (SHA256 {dest_sha}, the lock pins"
                        f" {want}) and the toolkit did not put it there: move your file elsewhere or give it"
                        " another name, then run again (nothing was changed)"
                    )
                action = "adopt"
        legacy_dir = self.legacy.get(kind)
        if not legacy_dir:
            return Step(model, action, dest, sha256=dest_sha, addnet=addnet)
        source = os.path.join(legacy_dir, file)
        src_fd = self._dir(fds, legacy_dir)
        src_st = _lstat(src_fd, file)
        if src_st is None:
            return Step(model, action, dest, sha256=dest_sha, addnet=addnet)
        if not stat.S_ISREG(src_st.st_mode):
            raise StoreError(
                f"{source} is not a regular file, where the WebUI would list it beside model {name} of the"
                " store: remove it (the toolkit follows no link in the WebUI tree), then run again"
            )
        if _same_file(src_st, dest_st):
            return Step(model, "drop", dest, source=source, sha256=want, source_st=src_st)
        src_sha, src_addnet = self._hash(src_fd, file, kind)
        if src_sha != want:
            raise StoreError(
                f"{source} holds other bytes than model {name} of the lock (SHA256 {src_sha}, the lock pins {want})"
                " and the WebUI would list it beside the store's copy: move it out of the WebUI tree or delete"
                " it, then run again (nothing was changed)"
            )
        if dest_st is not None:
            return Step(model, "drop", dest, source=source, sha256=want, source_st=src_st)
        return Step(model, "move", dest, source=source, sha256=want, addnet=src_addnet, source_st=src_st)

    # --- apply ----------------------------------------------------------------------------------------

    def apply(self, steps):
        """Carry out the plan; returns the steps that changed something."""
        done = []
        for step in steps:
            if step.action == "move":
                self._move(step)
            elif step.action == "drop":
                self._drop(step)
            elif step.action == "adopt":
                self._record(step.dest, step.sha256, step.addnet)
                continue
            else:
                continue
            done.append(step)
        self.cache.save()
        return done

    def _source_fd(self, step):
        """The source's folder, the source checked to be the very file that was hashed."""
        fd = open_dir_nofollow(os.path.dirname(step.source))
        st = _lstat(fd, os.path.basename(step.source))
        if st is None or not stat.S_ISREG(st.st_mode) or _identity(st) != _identity(step.source_st):
            os.close(fd)
            raise StoreError(
                f"{step.source} changed while the toolkit was moving it into the model store: run again"
            )
        return fd

    def _move(self, step):
        name = os.path.basename(step.dest)
        src_fd = self._source_fd(step)
        try:
            dst_fd = makedirs_nofollow(os.path.dirname(step.dest), self.store, 0o755, self.uid, self.gid)
            try:
                try:
                    # A hard link never replaces a file that appeared at dest meanwhile (EEXIST), unlike rename.
                    os.link(name, name, src_dir_fd=src_fd, dst_dir_fd=dst_fd, follow_symlinks=False)
                except OSError as exc:
                    if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                        raise
                    self._copy(step, src_fd, dst_fd, name)
                fsync_dir_fd(dst_fd)
                self._record(step.dest, step.sha256, step.addnet, dir_fd=dst_fd)
            finally:
                os.close(dst_fd)
            os.unlink(name, dir_fd=src_fd)
            fsync_dir_fd(src_fd)
            self.cache.forget(step.source)
        except FileExistsError:
            raise StoreError(
                f"{step.dest} appeared while the toolkit was moving {step.source} there: run again"
            ) from None
        finally:
            os.close(src_fd)

    def _copy(self, step, src_fd, dst_fd, name):
        """Another filesystem: copy to a temporary name, hash the copy, then link it in (never replacing)."""
        temp = f".{name}.{os.getpid()}.sdenv-move"
        src = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=src_fd)
        try:
            dst = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dst_fd)
            try:
                while True:
                    block = os.read(src, CHUNK)
                    if not block:
                        break
                    while block:
                        block = block[os.write(dst, block) :]
                os.fsync(dst)
                st = os.fstat(src)
                os.fchown(dst, st.st_uid, st.st_gid)
                os.fchmod(dst, stat.S_IMODE(st.st_mode))
                # The WebUI's hash cache trusts an entry while the file's mtime is not newer: keep it.
                os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
            finally:
                os.close(dst)
            copied, _ = self._hash(dst_fd, temp, step.model["kind"])
            if copied != step.sha256:
                raise StoreError(
                    f"the copy of {step.source} into {step.dest} read back with SHA256 {copied}, not the lock's"
                    f" {step.sha256}: check the disk, then run again"
                )
            os.link(temp, name, src_dir_fd=dst_fd, dst_dir_fd=dst_fd, follow_symlinks=False)
        finally:
            os.close(src)
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=dst_fd)

    def _drop(self, step):
        src_fd = self._source_fd(step)
        try:
            os.unlink(os.path.basename(step.source), dir_fd=src_fd)
            fsync_dir_fd(src_fd)
        finally:
            os.close(src_fd)
        self.cache.forget(step.source)

    def _record(self, path, sha256, addnet, dir_fd=None):
        """A stat-cache entry for a store file whose bytes were just hashed, so model_file does not hash it
        again (the LoRA's addnet hash with it, which model_file_check asks for)."""
        own = dir_fd is None
        if own:
            dir_fd = open_dir_nofollow(os.path.dirname(path))
        try:
            st = os.stat(os.path.basename(path), dir_fd=dir_fd, follow_symlinks=False)
        finally:
            if own:
                os.close(dir_fd)
        self.cache.record(path, st, sha256, addnet_sha256=addnet)


def lines(steps):
    """What the plan does, one line a step that changes something (for CHECK=1's diff and the result)."""
    return [step.line() for step in steps if step.action != "keep"]
