"""The on-disk format (roles/snapshot/README.md, "On-disk format"): names, tree lines, tree files, packs.

Pure functions from bytes and strings to bytes and strings; no store I/O. Invariants kept here:
- A tree line's first nine fields are the stat-cache key; `key_of` and `parse_line` agree with the writer
  (`snapshotter`) on every field, and `esc`/`unesc` round-trip any file name (TAB, newline, backslash).
- A label or a snapshot id is checked as a whole string (fullmatch), never by a prefix.
- A pack file is its blobs, then a trailer from which its index entry can be rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import zlib

FORMAT = "sdenv-snapshot-store"
VERSION = 1
PACK_SIZE = 16 * 1024 * 1024
LARGE = 1024 * 1024
CHUNK = 4 * 1024 * 1024
PACK_MAGIC = b"SDENVPK1"
TMP_PREFIX = ".sdenv-rb."
# Matched with fullmatch: `$` also matches before a trailing newline, so re.match(r"^...$") accepted "base\n".
LABEL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
SNAPID_RE = re.compile(r"\d{8}T\d{6}\.\d{6}Z-[0-9a-f]{4}")
REF_RE = re.compile(r"[0-9A-Za-z.-]{1,40}")
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")


class SnapshotError(Exception):
    """A failure the user can act on; str() is one sentence naming the thing and what to do."""


def esc(s: str) -> str:
    if "\\" in s or "\t" in s or "\n" in s:
        return s.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
    return s


def unesc(s: str) -> str:
    if "\\" not in s:
        return s
    out, i = [], 0
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            n = s[i + 1]
            out.append({"t": "\t", "n": "\n", "\\": "\\"}.get(n, n))
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def token(nbytes: int) -> str:
    """Random hex, as secrets.token_hex (which is os.urandom too) without importing secrets."""
    return os.urandom(nbytes).hex()


def hostname() -> str:
    # What socket.gethostname() returns on Linux and macOS (both read the uname nodename).
    return os.uname().nodename


def timegm(tm) -> int:
    """calendar.timegm for a UTC struct_time (days from the civil date), without importing calendar."""
    y, m = tm.tm_year, tm.tm_mon
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + tm.tm_mday - 1
    days = era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468
    return days * 86400 + tm.tm_hour * 3600 + tm.tm_min * 60 + tm.tm_sec


def id_time_ns(snapid: str) -> int:
    """The time an id names, in ns (ids are validated by SNAPID_RE; time.strptime would cost 5 ms of imports)."""
    secs = time.struct_time(
        (
            int(snapid[0:4]),
            int(snapid[4:6]),
            int(snapid[6:8]),
            int(snapid[9:11]),
            int(snapid[11:13]),
            int(snapid[13:15]),
            0,
            0,
            0,
        )
    )
    return timegm(secs) * 10**9 + int(snapid[16:22]) * 1000


def new_snapshot_id(now_ns: int) -> str:
    secs, frac = divmod(now_ns, 10**9)
    return f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime(secs))}.{frac // 1000:06d}Z-{token(2)}"


def validate_label(label: str) -> str:
    if label is None or label == "":
        return ""
    if not isinstance(label, str) or not LABEL_RE.fullmatch(label) or ".." in label:
        raise SnapshotError(
            f"The snapshot label {label!r} is not allowed: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit and without '..'."
        )
    return label


def parse_line(line: str) -> tuple:
    """One tree line -> (path, type, mode, uid, gid, size, mtime_ns, ctime_ns, ino, ref, xattrs)."""
    f = line.rstrip("\n").split("\t")
    if len(f) != 11 or f[1] not in ("f", "d", "l"):
        raise ValueError(f"malformed tree line {line[:80]!r}")
    return (
        unesc(f[0]),
        f[1],
        int(f[2], 8),
        int(f[3]),
        int(f[4]),
        int(f[5]),
        int(f[6]),
        int(f[7]),
        int(f[8]),
        unesc(f[9]),
        f[10],
    )


def key_of(line: str) -> str:
    """A line's stat-cache key: its first nine fields (without the TAB that follows them)."""
    j = line.rfind("\t", 0, line.rfind("\t"))
    return line[:j]


def tree_text(data: bytes) -> bytes:
    """A tree file's listing. Trees are written as plain text (every snapshot reads its parent's tree, and
    inflating one took 13 ms of a ~100 ms no-change snapshot while zlib only halved it: the blob ids are hex);
    trees of stores written before that are zlib streams. A listing starts with its root's line (".\t")."""
    return data if data.startswith(b".\t") else zlib.decompress(data)


def comparable(t: tuple) -> tuple:
    """Everything that restore reproduces; ctime and inode only serve the stat cache."""
    _path, typ, mode, uid, gid, size, mtime, _c, _i, ref, xattrs = t
    return (typ, mode, uid, gid, size if typ == "f" else 0, mtime if typ != "d" else 0, ref, xattrs)


def diff_listings(old: dict, new: dict) -> dict:
    """Compare two {path: parsed line} maps: paths added, removed, with new content, with new metadata."""
    added = sorted(p for p in new if p not in old)
    removed = sorted(p for p in old if p not in new)
    content, meta = [], []
    for p, n in new.items():
        o = old.get(p)
        if o is None:
            continue
        if o[1] != n[1] or o[9] != n[9] or (n[1] == "f" and o[5] != n[5]):
            content.append(p)
        elif comparable(o) != comparable(n):
            meta.append(p)
    return {"added": added, "removed": removed, "content": sorted(content), "metadata": sorted(meta)}


def collect_models(root: str, lines: list, out: dict) -> None:
    """Model SHA-256s straight from a listing: a file's blob id is the SHA-256 of its content."""
    for ln in lines:
        if ln.startswith("models/"):
            f = ln.split("\t")
            if f[1] == "f" and f[0].endswith(MODEL_SUFFIXES):
                out[os.path.join(root, unesc(f[0]))] = f[9] or EMPTY_SHA256


def pack_bytes(data: bytes, blobs: list) -> bytes:
    """A pack file: the blobs, then a trailer [[blobid, offset, length], ...], its length, the magic."""
    trailer = json_dumps_compact(blobs)
    return data + trailer + len(trailer).to_bytes(8, "little") + PACK_MAGIC


def read_trailer(path: str) -> list:
    with open(path, "rb") as f:
        f.seek(-16, os.SEEK_END)
        tail = f.read(16)
        if tail[8:] != PACK_MAGIC:
            raise ValueError("no pack trailer")
        n = int.from_bytes(tail[:8], "little")
        f.seek(-16 - n, os.SEEK_END)
        return json.loads(f.read(n))


def json_dumps_compact(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()
