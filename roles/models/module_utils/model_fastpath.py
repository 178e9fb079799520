# The re-run fast path of model_file, kept in a module of its own: a present file that the stat cache vouches
# for (same size, mtime and inode as when it was last hashed against the pinned SHA256) and whose owner and
# mode are already right is accepted without reading it and without loading the download machinery. The
# model_file_check module (run first by the model_file action plugin) ships only this and the stat cache:
# the target is <= 10 ms per model on top of Ansible's fixed per-task cost, and a module's cost grows with
# what its AnsiballZ payload carries. model_download uses cached_entry for the same test. Stdlib only.
from __future__ import annotations

import os
import stat

try:
    from ansible.module_utils.sdenv_atomic import open_dir_nofollow
    from ansible.module_utils.stat_cache import StatCache
except ImportError:
    try:  # installed as the Ansible collection sdenv.toolkit
        from ansible_collections.sdenv.toolkit.plugins.module_utils.sdenv_atomic import open_dir_nofollow
        from ansible_collections.sdenv.toolkit.plugins.module_utils.stat_cache import StatCache
    except ImportError:  # unit tests import the module_utils directories directly
        from sdenv_atomic import open_dir_nofollow
        from stat_cache import StatCache


def resolve_ids(owner, group):
    """(uid, gid) for an owner and group name; -1 keeps the current value. Raises KeyError for an unknown one."""
    import grp
    import pwd

    uid = gid = -1
    if owner:
        entry = pwd.getpwnam(owner)
        uid, gid = entry.pw_uid, entry.pw_gid
    if group:
        gid = grp.getgrnam(group).gr_gid
    return uid, gid


def parse_mode(mode):
    """A file mode from '0644' (octal text) or an int. Raises ValueError."""
    return int(mode, 8) if isinstance(mode, str) else int(mode)


def default_stat_cache(dest):
    return os.path.join(os.path.dirname(os.path.abspath(dest)), ".sdenv-stat-cache.json")


def cached_entry(cache, dest, st, sha256, size=None, addnet=False):
    """The stat-cache entry that vouches for `dest` (stat `st`) holding `sha256`, else None."""
    if st is None or not stat.S_ISREG(st.st_mode):
        return None
    if size is not None and st.st_size != size:
        return None
    entry = cache.lookup(dest, st, sha256)
    if entry is None or (addnet and not entry.get("addnet_sha256")):
        return None
    return entry


def settled_result(
    dest, sha256, name=None, size=None, stat_cache=None, addnet=False, uid=-1, gid=-1, mode=None
):
    """The module's result when nothing needs doing (not even reading the file), else None."""
    dest = os.path.abspath(dest)
    if not sha256:
        return None
    try:
        # Its folder reached as model_download reaches it (no link in the dummy's tree): a folder linked
        # elsewhere is no fast path, and the full module refuses it in a sentence.
        dir_fd = open_dir_nofollow(os.path.dirname(dest))
    except OSError:
        return None
    try:
        st = os.stat(os.path.basename(dest), dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    finally:
        os.close(dir_fd)
    cache = StatCache(stat_cache or default_stat_cache(dest))
    entry = cached_entry(cache, dest, st, sha256.strip().lower(), size, addnet)
    if entry is None:
        return None
    if (uid != -1 and st.st_uid != uid) or (gid != -1 and st.st_gid != gid):
        return None
    if mode is not None and stat.S_IMODE(st.st_mode) != mode:
        return None
    name = name or os.path.basename(dest)
    result = {
        "changed": False,
        "dest": dest,
        "name": name,
        "sha256": entry["sha256"],
        "verified_by": "stat-cache",
        "needs_download": False,
        "source": None,
        "bytes_downloaded": 0,
        "resumed_from": 0,
        "attempts": [],
        "size": st.st_size,
        "mtime": st.st_mtime,
        "msg": f"{name} is present and verified (stat-cache)",
        "warnings": [cache.problem] if cache.problem else [],
    }
    if entry.get("addnet_sha256"):
        result["addnet_sha256"] = entry["addnet_sha256"]
    return result
