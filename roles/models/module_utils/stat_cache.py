# The stat cache: what a model file's SHA256 was the last time it was read end to end, keyed on the
# file's identity, so a re-run accepts an unchanged file without reading it.
#
# Identity is size + mtime (ns) + inode + device. ctime is deliberately left out: the snapshot role may
# hard-link model files into its store, and every new link changes ctime, which would make each provision
# after a snapshot re-read every model. The price: a file rewritten in place by its owner who then sets
# mtime back with `touch -d` passes the fast path; DEEP=1 (deep: true) re-hashes everything.
# The cache file lives in a root-only state directory, out of reach of the user who owns the models.
# Stdlib only: this runs on the target host.
from __future__ import annotations

import fcntl
import json
import os
import stat

# sdenv_atomic is imported only where a cache is written: the re-run fast path (model_fastpath) only reads
# one, and every module it loads costs the target host time on each task.

FORMAT = 1


def identity(st):
    return {
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "ino": st.st_ino,
        "dev": st.st_dev,
    }


class StatCache:
    """A JSON map path -> {identity..., sha256, extra...}; load, look up, record, save atomically."""

    def __init__(self, path):
        self.path = path
        self.entries = {}
        self.problem = None
        self._dirty = False
        self._load()

    def _load(self):
        try:
            with open(self.path, encoding="utf-8") as fh:
                doc = json.load(fh)
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            # A damaged cache only costs a re-hash; say so and start empty.
            self.problem = f"the stat cache {self.path} could not be read ({exc}); files will be hashed again"
            return
        if isinstance(doc, dict) and doc.get("format") == FORMAT and isinstance(doc.get("files"), dict):
            self.entries = doc["files"]

    def lookup(self, path, st, sha256):
        """The entry for `path` when `st` matches it and it records `sha256`, else None."""
        entry = self.entries.get(os.path.abspath(path))
        if not entry or not stat.S_ISREG(st.st_mode):
            return None
        if entry.get("sha256") != sha256:
            return None
        if any(entry.get(k) != v for k, v in identity(st).items()):
            return None
        return entry

    def record(self, path, st, sha256, **extra):
        entry = identity(st)
        entry["sha256"] = sha256
        entry.update({k: v for k, v in extra.items() if v is not None})
        key = os.path.abspath(path)
        if self.entries.get(key) != entry:
            self.entries[key] = entry
            self._dirty = True
        return entry

    def forget(self, path):
        if self.entries.pop(os.path.abspath(path), None) is not None:
            self._dirty = True

    def save(self):
        """Write the cache atomically (temp, fsync, rename, fsync dir), merging with concurrent writers."""
        if not self._dirty:
            return False
        directory = os.path.dirname(os.path.abspath(self.path)) or "."
        os.makedirs(directory, mode=0o700, exist_ok=True)
        lock_path = self.path + ".lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            # Another run (another task, another fork) may have saved meanwhile: keep its other entries.
            mine = self.entries
            self.entries = {}
            self._load()
            merged = dict(self.entries)
            merged.update(mine)
            self.entries = merged
            write_json_atomic(self.path, {"format": FORMAT, "files": merged}, mode=0o600)
        finally:
            os.close(fd)
        self._dirty = False
        return True


def write_json_atomic(path, doc, mode=0o644, uid=-1, gid=-1):
    """Write JSON to `path` atomically: temp file in the same directory, fsync, rename, fsync directory."""
    try:
        from ansible.module_utils.sdenv_atomic import write_bytes_atomic
    except ImportError:
        try:  # installed as the Ansible collection sdenv.toolkit
            from ansible_collections.sdenv.toolkit.plugins.module_utils.sdenv_atomic import write_bytes_atomic
        except ImportError:  # unit tests import module_utils directly
            from sdenv_atomic import write_bytes_atomic

    write_bytes_atomic(path, json_bytes(doc), mode=mode, uid=uid, gid=gid)


def json_bytes(doc):
    """The toolkit's JSON files as bytes: one key a line, sorted, so a diff shows what changed."""
    return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode("utf-8")
