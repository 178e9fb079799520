# Write a model's SHA256 and size into lock.yml by editing only those two lines of its entry, so every
# comment and the layout of the file a person maintains stay as they are (a YAML round trip would drop
# them). Used by `make pin-models` on the controller. Stdlib only.
from __future__ import annotations

import re

_SHA = re.compile(r"^[0-9a-f]{64}$")


class LockEditError(ValueError):
    """One sentence: why the lock could not be edited."""


def _indent(line):
    return len(line) - len(line.lstrip(" "))


def _find_models_block(lines):
    for i, line in enumerate(lines):
        if re.match(r"^\s+models:\s*(#.*)?$", line):
            return i, _indent(line)
    raise LockEditError("lock.yml has no `models:` list under sdenv_lock")


def _find_entry(lines, name, start, models_indent):
    pattern = re.compile(r"^(\s*)- name:\s*(['\"]?)" + re.escape(name) + r"\2\s*(#.*)?$")
    for i in range(start + 1, len(lines)):
        line = lines[i]
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and _indent(line) <= models_indent:
            break  # left the models list
        m = pattern.match(line)
        if m:
            item_indent = len(m.group(1)) + 2
            end = i + 1
            while end < len(lines):
                text = lines[end].strip()
                if text and _indent(lines[end]) < item_indent:
                    break
                end += 1
            return i, end, item_indent
    raise LockEditError(f"lock.yml has no model named {name!r} under sdenv_lock.models")


def pin(text, name, sha256, size, note):
    """The lock text with `name`'s sha256 and size set; `note` becomes the trailing comment."""
    if not _SHA.match(sha256 or ""):
        raise LockEditError(f"refusing to pin {name}: {sha256!r} is not a SHA256")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise LockEditError(f"refusing to pin {name}: {size!r} is not a size in bytes")
    if "\n" in note:
        raise LockEditError("the pin note must be one line")
    lines = text.splitlines(keepends=True)
    start, models_indent = _find_models_block(lines)
    first, end, indent = _find_entry(lines, name, start, models_indent)
    pad = " " * indent
    values = {"sha256": f"{sha256}  # {note}", "size": str(size)}
    found = {}
    for i in range(first, end):
        for key in values:
            if re.match(r"^" + pad + key + r":(\s|$)", lines[i]) or (
                i == first and re.match(r"^\s*- " + key + r":", lines[i])
            ):
                found[key] = i
    if "sha256" in found:
        lines[found["sha256"]] = f"{pad}sha256: {values['sha256']}\n"
    else:
        lines.insert(end, f"{pad}sha256: {values['sha256']}\n")
        end += 1
    if "size" in found:
        lines[found["size"]] = f"{pad}size: {values['size']}\n"
    else:
        after = found.get("sha256", end - 1)
        lines.insert(after + 1, f"{pad}size: {values['size']}\n")
    return "".join(lines)
