# Structural check of a safetensors file, and recognition of the things that arrive instead of a model.
# Stdlib only: this runs on the target host (Python >= 3.9).
#
# Format (huggingface/safetensors): u64 little-endian header length N, N bytes of UTF-8 JSON (may be
# space-padded), then the tensor data. The reference loader's limits are applied here so that a file this
# check accepts is one the WebUI can load: N <= 100,000,000; every tensor has dtype, shape and data_offsets;
# the offsets, sorted, are contiguous from 0 with no holes; END-BEGIN = numel x dtype size;
# 8 + N + last END == the file size; `__metadata__` is a str->str map.
from __future__ import annotations

import json
import struct

MAX_HEADER_BYTES = 100_000_000

# Bytes per element. F4/F6 packed types are left out on purpose: SD 1.x/SDXL checkpoints and LoRAs never
# use them, and an unknown dtype is refused rather than guessed.
DTYPE_SIZES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "F8_E8M0": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}

LFS_POINTER_PREFIX = b"version https://git-lfs.github.com/spec/"


class SafetensorsError(ValueError):
    """The file is not a usable safetensors file; str(exc) is one sentence saying why."""


def describe_non_model(head):
    """Say what `head` (the first bytes of a body) is when it is clearly not a model, else None.

    An HTML page, a JSON error or a Git LFS pointer read as a header length gives N > 100 MB, so the
    structural check would refuse them anyway; naming what they are tells the user what to do.
    """
    stripped = head.lstrip()
    lowered = stripped[:512].lower()
    if lowered.startswith(b"<!doctype html") or lowered.startswith(b"<html") or b"<html" in lowered[:256]:
        return "a web page (HTML)"
    if stripped.startswith(LFS_POINTER_PREFIX):
        return "a Git LFS pointer file (the repository was cloned without git-lfs)"
    if stripped.startswith(b"{") or stripped.startswith(b"["):
        # A safetensors file starts with 8 length bytes, never with '{'; this is a JSON message.
        return "a JSON message" + _json_summary(stripped)
    return None


def _json_summary(body):
    try:
        doc = json.loads(body.decode("utf-8", "replace"))
    except ValueError:
        return ""
    if isinstance(doc, dict):
        for key in ("error", "message", "detail"):
            if isinstance(doc.get(key), str):
                return f" ({key}: {doc[key][:200]})"
    return ""


def parse_header(prefix, file_size):
    """Check the header in `prefix` (at least the first 8 + N bytes) against `file_size`.

    Returns a dict: header_bytes, tensors, data_bytes, metadata. Raises SafetensorsError.
    """
    if file_size < 8 or len(prefix) < 8:
        raise SafetensorsError("it is %d bytes long, too short for a safetensors file" % file_size)
    (n,) = struct.unpack("<Q", prefix[:8])
    if n > MAX_HEADER_BYTES:
        what = describe_non_model(prefix)
        if what:
            raise SafetensorsError(f"it is {what}, not a safetensors model")
        raise SafetensorsError(
            "its header claims %d bytes, more than the safetensors limit of %d bytes" % (n, MAX_HEADER_BYTES)
        )
    if 8 + n > file_size:
        raise SafetensorsError("its header claims %d bytes but the file has only %d bytes" % (n, file_size))
    if len(prefix) < 8 + n:
        raise SafetensorsError("the header was cut short (%d of %d bytes read)" % (len(prefix) - 8, n))
    raw = prefix[8 : 8 + n]
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise SafetensorsError(f"its header is not valid UTF-8 JSON ({exc})") from None
    if not isinstance(header, dict):
        raise SafetensorsError("its header is JSON but not an object")

    metadata = header.pop("__metadata__", None)
    if metadata is not None and (
        not isinstance(metadata, dict)
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
    ):
        raise SafetensorsError("its __metadata__ is not a map of strings to strings")

    spans = []
    for name, info in header.items():
        spans.append(_tensor_span(name, info))
    spans.sort(key=lambda s: (s[0], s[1]))
    expected = 0
    for begin, end, name in spans:
        if begin != expected:
            if begin < expected:
                raise SafetensorsError("tensor %r overlaps the previous tensor (offset %d)" % (name, begin))
            raise SafetensorsError(
                "there is a hole before tensor %r (offset %d, expected %d)" % (name, begin, expected)
            )
        expected = end
    data_bytes = expected
    if 8 + n + data_bytes != file_size:
        raise SafetensorsError(
            "its tensors end at byte %d but the file has %d bytes" % (8 + n + data_bytes, file_size)
        )
    return {"header_bytes": n, "tensors": len(spans), "data_bytes": data_bytes, "metadata": metadata or {}}


def _tensor_span(name, info):
    if not isinstance(info, dict):
        raise SafetensorsError(f"tensor {name!r} has no description object")
    dtype = info.get("dtype")
    shape = info.get("shape")
    offsets = info.get("data_offsets")
    if dtype not in DTYPE_SIZES:
        raise SafetensorsError(f"tensor {name!r} has unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise SafetensorsError(f"tensor {name!r} has an invalid shape {shape!r}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_count(o) for o in offsets)):
        raise SafetensorsError(f"tensor {name!r} has invalid data_offsets {offsets!r}")
    begin, end = offsets
    if end < begin:
        raise SafetensorsError("tensor %r ends (%d) before it begins (%d)" % (name, end, begin))
    numel = 1
    for d in shape:
        numel *= d
    if end - begin != numel * DTYPE_SIZES[dtype]:
        raise SafetensorsError(
            "tensor %r spans %d bytes but shape %s of %s needs %d"
            % (name, end - begin, shape, dtype, numel * DTYPE_SIZES[dtype])
        )
    return begin, end, name


def _is_count(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def check_file(path):
    """Structural check of the safetensors file at `path` (or an open binary file); reads only the header."""
    import contextlib
    import os

    opened = contextlib.nullcontext(path) if hasattr(path, "read") else open(path, "rb")  # noqa: SIM115 - the with below closes it
    with opened as fh:
        fh.seek(0)
        size = os.fstat(fh.fileno()).st_size
        head = fh.read(8)
        if len(head) == 8:
            (n,) = struct.unpack("<Q", head)
            if n <= MAX_HEADER_BYTES:
                head += fh.read(n)
            else:
                head += fh.read(504)
    return parse_header(head, size)


def data_offset(prefix):
    """Where the tensor data starts (8 + N), from the first 8 bytes; None when not yet known."""
    if len(prefix) < 8:
        return None
    return 8 + struct.unpack("<Q", prefix[:8])[0]
