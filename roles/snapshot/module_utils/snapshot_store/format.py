"""The on-disk format (roles/snapshot/README.md, "On-disk format"): names, tree lines, tree files, packs.

Pure functions from bytes and strings to bytes and strings; no store I/O. Invariants kept here:
- A tree line's first nine fields are the stat-cache key; `parse_line` agrees with the writer
  (`snapshotter`) on every field, and `esc`/`unesc` round-trip any file name (TAB, newline, backslash).
- A label or a snapshot id is checked as a whole string (fullmatch), never by a prefix.
- A pack file is its blobs, then a trailer from which its index entry can be rebuilt.
- A tree's name is the SHA-256 of its whole listing, whether the file holds the listing or a delta from
  another tree (`encode_delta` / `apply_delta` are exact inverses); a listing is split at "\n" only.
- The stat-cache file of a root holds exactly the listing of the tree its header names.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import zlib

FORMAT = "sdenv-snapshot-store"
# Version 2 added trees stored as deltas, the stat-cache files (cache/) and the journals of writing runs
# (journal/*.files). Every version-1 store is a valid version-2 store: the first run that writes to one
# records version 2 in its config.json (a version-1 toolkit then refuses it instead of misreading a delta).
VERSION = 2
READABLE_VERSIONS = (1, 2)
INDEX_VERSION = 1
PACK_SIZE = 16 * 1024 * 1024
LARGE = 1024 * 1024
CHUNK = 4 * 1024 * 1024
PACK_MAGIC = b"SDENVPK1"
TMP_PREFIX = ".sdenv-rb."
# Matched with fullmatch: `$` also matches before a trailing newline, so re.match(r"^...$") accepted "base\n".
LABEL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
SNAPID_RE = re.compile(r"\d{8}T\d{6}\.\d{6}Z-[0-9a-f]{4}")
REF_RE = re.compile(r"[0-9A-Za-z._-]{1,64}")  # an id, a prefix of one, or a label
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
# Where a root holds models: a WebUI tree's models/, the model store's kind folders (module_utils/
# model_store.py KIND_DIRS; this package is stdlib-only and standalone, tests/unit/test_model_store.py keeps
# the two equal).
MODEL_DIRS = ("models/", "checkpoints/", "loras/")


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


def path_index(lines: list) -> dict:
    """{escaped path: position} of a listing (paths are unique in one)."""
    return {ln[: ln.index("\t")]: i for i, ln in enumerate(lines)}


def split_lines(text: str) -> list[str]:
    """A listing's lines, each with its "\n". str.splitlines also splits at \r, \x85, \u2028 and others,
    which a file name may hold (a listing escapes only TAB, newline and backslash), so its result is used
    only when it found exactly one line per "\n"."""
    lines = text.splitlines(keepends=True)
    if len(lines) == text.count("\n") and (not lines or lines[-1].endswith("\n")):
        return lines
    parts = text.split("\n")
    out = [p + "\n" for p in parts[:-1]]
    if parts[-1]:
        out.append(parts[-1])
    return out


# A tree file holds either a whole listing (plain text, starting with its root's line ".\t"; version 1 also
# wrote zlib streams) or a delta from another tree: this header, then one operation per line.
DELTA_MAGIC = b"sdenv-tree-delta 2\t"
# A chain of deltas is cut (the tree written whole) when it would grow deeper than this or when its deltas
# would add up to more than DELTA_MAX_SHARE of the whole listing: reading a tree then costs at most one
# whole listing, a few dozen small files and half a listing's worth of operations.
DELTA_MAX_DEPTH = 64
DELTA_MAX_SHARE = 0.5


def tree_header(data: bytes) -> tuple:
    """(base tree id, depth, chain bytes) of a delta tree file's bytes; (None, 0, 0) for a whole listing."""
    if not data.startswith(DELTA_MAGIC):
        return None, 0, 0
    end = data.index(b"\n")
    base, depth, chain = data[len(DELTA_MAGIC) : end].decode().split("\t")
    return base, int(depth), int(chain)


def tree_text(data: bytes) -> bytes:
    """The listing of a tree file that holds a whole listing. Trees are written as plain text (every snapshot
    reads its parent's listing, and inflating one took 13 ms of a ~100 ms no-change snapshot while zlib only
    halved it: the blob ids are hex); version-1 stores may hold zlib streams."""
    return data if data.startswith(b".\t") else zlib.decompress(data)


def encode_delta(lines: list, base_lines: list, by_identity: bool = False) -> bytes:
    """The operations (a delta file's body, after `delta_header`) that turn base_lines into lines: "=N" keeps
    the next N base lines, "-N" skips N, "+LINE" adds LINE. Lines are unique within a listing (each names its
    own path) and a listing is in walk order, so a base line that comes back is found by its text and the
    operations follow both listings in order. `by_identity`: find base lines by object identity instead of
    text (a walk or a rollback reuses the base's line objects: no 4 MB of strings to hash); a line equal in
    text but not the same object is then written out, which costs bytes, never correctness."""
    if by_identity:
        pos = {id(ln): j for j, ln in enumerate(base_lines)}
        find = pos.get
        keys = map(id, lines)
    else:
        pos = {ln: j for j, ln in enumerate(base_lines)}
        find = pos.get
        keys = iter(lines)
    ops: list[str] = []
    expect = run = 0
    for ln, key in zip(lines, keys):
        j = find(key)
        if j is not None and j >= expect:
            if j > expect:
                if run:
                    ops.append(f"={run}\n")
                    run = 0
                ops.append(f"-{j - expect}\n")
            run += 1
            expect = j + 1
        else:
            if run:
                ops.append(f"={run}\n")
                run = 0
            ops.append("+" + ln)
    if run:
        ops.append(f"={run}\n")
    return "".join(ops).encode("utf-8", "surrogateescape")


def delta_header(base: str, depth: int, chain: int) -> bytes:
    return DELTA_MAGIC + f"{base}\t{depth}\t{chain}\n".encode()


def apply_delta(base_lines: list, data: bytes) -> list:
    """The listing a delta tree file (its bytes, header included) makes of its base's listing."""
    body = data[data.index(b"\n") + 1 :].decode("utf-8", "surrogateescape")
    out: list = []
    extend, append = out.extend, out.append
    i = 0
    for op in split_lines(body):
        c = op[0]
        if c == "+":
            append(op[1:])
        elif c == "=":
            n = int(op[1:])
            extend(base_lines[i : i + n])
            i += n
        elif c == "-":
            i += int(op[1:])
        else:
            raise ValueError(f"malformed delta operation {op[:40]!r}")
    return out


# The stat-cache file of a root (cache/<cache_name(root)>): this header, then the listing of the tree it
# names. It is the listing a snapshot compares its walk with (as git's index is to its trees): written after
# each snapshot that changed the root and after each rollback, so it is read as one file, never rebuilt
# from a chain of deltas, and it knows the files a rollback wrote.
CACHE_MAGIC = "sdenv-stat-cache 2\t"


def cache_name(root: str) -> str:
    return hashlib.sha256(root.encode("utf-8", "surrogateescape")).hexdigest()[:32]


def cache_bytes(
    root: str, tree: str, depth: int, chain: int, time_ns: int, recorded: bool, text: bytes
) -> bytes:
    """`recorded`: the tree was written by a rollback for this file alone (no manifest named it then)."""
    head = f"{CACHE_MAGIC}{tree}\t{depth}\t{chain}\t{time_ns}\t{'r' if recorded else 's'}\t{esc(root)}\n"
    return head.encode("utf-8", "surrogateescape") + text


def parse_cache(root: str, data: bytes) -> dict | None:
    """{"root", "tree", "depth", "chain", "time_ns", "recorded", "lines"} of a stat-cache file; None when it is
    not one for root."""
    text = data.decode("utf-8", "surrogateescape")
    if not text.startswith(CACHE_MAGIC) or "\n" not in text:
        return None
    end = text.index("\n")
    fields = text[len(CACHE_MAGIC) : end].split("\t")
    if len(fields) != 6 or unesc(fields[5]) != root or len(fields[0]) != 64 or fields[4] not in ("r", "s"):
        return None
    return {
        "root": root,
        "tree": fields[0],
        "depth": int(fields[1]),
        "chain": int(fields[2]),
        "time_ns": int(fields[3]),
        "recorded": fields[4] == "r",
        "lines": split_lines(text[end + 1 :]),
    }


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
        if ln.startswith(MODEL_DIRS):
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
