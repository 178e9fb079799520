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

import json
import os
import re

try:
    from ansible.module_utils.stat_cache import write_json_atomic
except ImportError:  # unit tests import the module_utils directories directly
    from stat_cache import write_json_atomic

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

    Returns {changed, skipped (reason or None), path, titles}.
    """
    path = os.path.join(webui_dir, "cache.json")
    result = {"changed": False, "skipped": None, "path": path, "titles": []}
    if os.path.isdir(os.path.join(webui_dir, "cache")):
        result["skipped"] = "the WebUI has its own hash cache (cache/) already; cache.json would be ignored"
        return result
    if not os.path.isdir(webui_dir):
        if check_mode:
            result["skipped"] = f"{webui_dir} does not exist yet (check mode)"
            return result
        raise HashCacheError(f"the WebUI directory {webui_dir} does not exist")
    doc = _load(path)
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
        write_json_atomic(path, doc, mode=0o644, uid=uid, gid=gid)
    return result


def _load(path):
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise HashCacheError(
            f"{path} is not readable JSON ({exc}); move it aside and run again, or let the WebUI rebuild it"
        ) from None
    if not isinstance(doc, dict):
        raise HashCacheError(f"{path} is JSON but not an object; move it aside and run again")
    return doc
