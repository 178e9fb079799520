# Pre-seed the WebUI's legacy hash cache so its first start does not re-hash a 2 GB checkpoint.
#
# AUTOMATIC1111 v1.10 (modules/cache.py) keeps hashes in <data>/cache/ (diskcache); when that directory does
# not exist and <data>/cache.json does, it imports cache.json once. modules/hashes.py trusts an entry while
# the file's mtime <= the entry's "mtime":
#   {"hashes": {"checkpoint/<path under models/Stable-diffusion>": {"mtime": float, "sha256": hex}},
#    "hashes-addnet": {"lora/<file stem>": {"mtime": float, "sha256": <sha256 of the data after the header>}}}
# So entries are written only while cache/ is absent; afterwards the WebUI owns its cache and this leaves it
# alone. Stdlib only: this runs on the target host.
from __future__ import annotations

import errno
import json
import os
import re
import stat

try:
    from ansible.module_utils.sdenv_atomic import (
        LinkRefused,
        open_dir_nofollow,
        open_nofollow,
        write_bytes_in_dir,
    )
    from ansible.module_utils.stat_cache import json_bytes
except ImportError:  # unit tests import the module_utils directories directly
    from sdenv_atomic import LinkRefused, open_dir_nofollow, open_nofollow, write_bytes_in_dir
    from stat_cache import json_bytes

SUBSECTIONS = ("hashes", "hashes-addnet")
_SHA = re.compile(r"^[0-9a-f]{64}$")


class HashCacheError(ValueError):
    """One sentence: which entry is unusable and why."""


def entry_for(kind, relpath, sha256, addnet_sha256, mtime):
    """(subsection, title, value) the WebUI looks up for a model of `kind` at `relpath` under its folder."""
    if kind == "checkpoint":
        return "hashes", "checkpoint/" + relpath, {"mtime": mtime, "sha256": sha256}
    if kind == "lora":
        if not relpath.lower().endswith(".safetensors"):
            # The WebUI hashes other LoRA files whole; the lookup key is the same.
            return (
                "hashes",
                "lora/" + os.path.splitext(os.path.basename(relpath))[0],
                {"mtime": mtime, "sha256": sha256},
            )
        if not addnet_sha256:
            raise HashCacheError(
                f"the LoRA {relpath} has no addnet hash to seed (install it with addnet_hash: true)"
            )
        stem = os.path.splitext(os.path.basename(relpath))[0]
        return "hashes-addnet", "lora/" + stem, {"mtime": mtime, "sha256": addnet_sha256}
    raise HashCacheError(f"unknown model kind {kind!r} for {relpath} (expected checkpoint or lora)")


def entries_from_installed(installed, kind_dirs):
    """Cache entries from model_file results (dest, sha256, addnet_sha256, mtime) and the kinds' folders."""
    entries = []
    for result in installed:
        dest = os.path.abspath(result.get("dest") or "")
        kind, relpath = _locate(dest, kind_dirs)
        entries.append(
            {
                "kind": kind,
                "relpath": relpath.replace(os.sep, "/"),
                "sha256": result.get("sha256"),
                "addnet_sha256": result.get("addnet_sha256"),
                "mtime": result.get("mtime"),
            }
        )
    return entries


def _locate(dest, kind_dirs):
    for kind, folder in kind_dirs.items():
        folder = os.path.abspath(folder)
        if dest.startswith(folder + os.sep):
            return kind, os.path.relpath(dest, folder)
    raise HashCacheError(f"{dest} is in none of the WebUI's model folders ({', '.join(kind_dirs.values())})")


def seed(webui_dir, entries, uid=-1, gid=-1, check_mode=False):
    """Merge `entries` (dicts: kind, relpath, sha256, addnet_sha256, mtime) into <webui_dir>/cache.json.

    Runs as root in the dummy's tree: the WebUI directory is reached and cache.json read and replaced with
    no symbolic link followed (sdenv_atomic). A link at cache.json is refused, not replaced: it is not
    something the WebUI makes, it may point at the user's own file, and reading through it could copy a
    root-only file into the dummy's tree. Returns {changed, skipped (reason or None), path, titles}.
    """
    path = os.path.join(webui_dir, "cache.json")
    result = {"changed": False, "skipped": None, "path": path, "titles": []}
    try:
        dir_fd = open_dir_nofollow(webui_dir)
    except LinkRefused as exc:
        raise HashCacheError(str(exc)) from None
    except (FileNotFoundError, NotADirectoryError):
        if check_mode:
            result["skipped"] = f"{webui_dir} does not exist yet (check mode)"
            return result
        raise HashCacheError(f"the WebUI directory {webui_dir} does not exist") from None
    try:
        return _seed_in(dir_fd, path, entries, uid, gid, check_mode, result)
    finally:
        os.close(dir_fd)


def _seed_in(dir_fd, path, entries, uid, gid, check_mode, result):
    if _is_dir(dir_fd, "cache"):
        result["skipped"] = "the WebUI has its own hash cache (cache/) already; cache.json would be ignored"
        return result
    doc = _load(dir_fd, path)
    before = json.dumps(doc, sort_keys=True)
    for item in entries:
        sha = item.get("sha256") or ""
        if not _SHA.match(sha):
            raise HashCacheError(f"the SHA256 for {item.get('relpath')} is not 64 hex digits")
        mtime = item.get("mtime")
        if not isinstance(mtime, (int, float)) or isinstance(mtime, bool):
            raise HashCacheError(f"the mtime for {item.get('relpath')} is not a number")
        subsection, title, value = entry_for(
            item.get("kind"), item["relpath"], sha, item.get("addnet_sha256"), float(mtime)
        )
        doc.setdefault(subsection, {})[title] = value
        result["titles"].append(title)
    if json.dumps(doc, sort_keys=True) == before:
        return result
    result["changed"] = True
    if not check_mode:
        # The WebUI rewrites this file as its user: it must belong to that user.
        write_bytes_in_dir(dir_fd, "cache.json", json_bytes(doc), mode=0o644, uid=uid, gid=gid)
    return result


def _is_dir(dir_fd, name):
    try:
        return stat.S_ISDIR(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except FileNotFoundError:
        return False


def _load(dir_fd, path):
    try:
        fd = open_nofollow("cache.json", dir_fd=dir_fd)
    except FileNotFoundError:
        return {}
    except LinkRefused:
        raise HashCacheError(
            f"{path} is a symbolic link, and root never reads or writes through the dummy's links: replace it "
            "with a regular file (or remove it; the WebUI rebuilds it) and run again"
        ) from None
    except OSError as exc:
        raise HashCacheError(
            f"{path} is not readable ({exc.strerror}); move it aside and run again"
        ) from None
    try:
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise OSError(errno.EINVAL, "not a regular file")
            doc = json.loads(fh.read().decode("utf-8"))
    except (OSError, ValueError) as exc:
        raise HashCacheError(
            f"{path} is not readable JSON ({exc}); move it aside and run again, or let the WebUI rebuild it"
        ) from None
    if not isinstance(doc, dict):
        raise HashCacheError(f"{path} is JSON but not an object; move it aside and run again")
    return doc
