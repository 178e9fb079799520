# Set values in lock.yml by rewriting only the lines that hold them, so every comment and the layout of the
# file a person maintains stay as they are (a YAML round trip would drop them). make upgrade uses it on the
# controller; model_lock_edit.py does the same for one model's sha256/size. Stdlib only; the caller checks
# the result with a YAML parser (set_values does, when given a loader).
#
# A path is a tuple of keys under sdenv_lock: ("webui", "commit"); a list item is named by its identifying
# key, ("repositories", "dir=BLIP", "commit"); a key inside a one-line flow mapping ({torch: "2.1.2", ...})
# is reached the same way, ("webui_venv", "torch", "Linux-x86_64", "torch").
from __future__ import annotations

import json
import re


class LockTextError(ValueError):
    """One sentence: why the lock could not be edited."""


_PLAIN = re.compile(r"^[A-Za-z0-9_./:+-]+$")
_YAML_WORDS = {"null", "true", "false", "yes", "no", "on", "off", "y", "n", "~", ""}
# What YAML 1.1 (PyYAML, Ansible) reads as a number: such text is quoted to stay a string.
_NUMBER = re.compile(
    r"^[-+]?(0x[0-9a-fA-F_]+|0b[01_]+|[0-9][0-9_]*(:[0-5]?[0-9])*|([0-9][0-9_]*)?\.[0-9_]*([eE][-+]?[0-9]+)?"
    r"|\.(inf|Inf|INF|nan|NaN|NAN))$"
)


def scalar(value, quoted):
    """value as YAML text: quoted when the original was, or when plain text would read as something else."""
    if value is None:
        return "null"
    text = str(value)
    if quoted or not _PLAIN.match(text) or text.lower() in _YAML_WORDS or _NUMBER.match(text):
        return json.dumps(text)
    return text


def _indent(line):
    return len(line) - len(line.lstrip(" "))


def _content(line):
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#")


def _block_end(lines, start, parent_indent, key_value=False):
    """The index after the block that starts at start, whose lines are indented deeper than parent_indent.
    key_value: the block is a key's value, which may be a sequence whose dashes sit at the key's own indent
    (`key:` then `- item` below it, as PyYAML writes it)."""
    end = start
    while end < len(lines):
        line = lines[end]
        dash_at_key = key_value and _indent(line) == parent_indent and line.lstrip().startswith("- ")
        if _content(line) and _indent(line) <= parent_indent and not dash_at_key:
            break
        end += 1
    return end


def _own_indent(line):
    """Where a line's key starts: a list item's first key sits two columns after its dash."""
    m = re.match(r"^(\s*)(- )?", line)
    return len(m.group(1)) + (2 if m.group(2) else 0)


def _find_key(lines, begin, end, key, name):
    """(line, first child line, end of block, indent) of `key:` at the block's own indentation in [begin, end);
    key "field=value" is the list item whose field is value."""
    indents = [_own_indent(lines[i]) for i in range(begin, end) if _content(lines[i])]
    indent = min(indents) if indents else 0
    if "=" in key:
        field, wanted = key.split("=", 1)
        pattern = re.compile(
            r"^\s*- " + re.escape(field) + r":\s*(['\"]?)" + re.escape(wanted) + r"\1\s*(#.*)?$"
        )
        for i in range(begin, end):
            if pattern.match(lines[i]):
                own = _own_indent(lines[i])
                return i, i, _block_end(lines, i + 1, own - 1), own
        raise LockTextError(f"lock.yml has no item with {field}: {wanted} under {name}")
    pattern = re.compile(r"^\s*(- )?" + re.escape(key) + r":(\s|$)")
    for i in range(begin, end):
        if pattern.match(lines[i]) and _own_indent(lines[i]) == indent:
            return i, i + 1, _block_end(lines, i + 1, indent, key_value=True), indent
    raise LockTextError(f"lock.yml has no key {key} under {name}")


_VALUE_LINE = re.compile(
    r"^(?P<head>\s*(?:- )?[^:#]+:[ \t]*)(?P<value>(\"[^\"]*\"|'[^']*'|[^#\s][^#]*?)?)(?P<tail>[ \t]*(#.*)?)$"
)


def _set_block_value(line, value):
    m = _VALUE_LINE.match(line.rstrip("\n"))
    if not m or (m.group("value") or "").startswith(("{", "[", "|", ">")):
        raise LockTextError(f"the lock line {line.strip()!r} does not hold a single value to replace")
    old = m.group("value") or ""
    text = scalar(value, old[:1] in "\"'" and old != "")
    tail = m.group("tail") or ""
    if old == "" and tail.strip() == "":
        tail = ""
    return m.group("head") + text + tail + ("\n" if line.endswith("\n") else "")


def _set_flow_value(line, key, value):
    pattern = re.compile(
        r"(?P<head>[{,]\s*" + re.escape(key) + r":\s*)(?P<value>\"[^\"]*\"|'[^']*'|[^,}\s]+)"
    )
    m = pattern.search(line)
    if not m:
        raise LockTextError(f"the lock line {line.strip()!r} has no {key} to replace")
    old = m.group("value")
    return line[: m.start("value")] + scalar(value, old[:1] in "\"'") + line[m.end("value") :]


def set_value(text, path, value, root="sdenv_lock"):
    """The lock text with the value at path (under root) replaced; only that line changes."""
    lines = text.splitlines(keepends=True)
    begin, end = 0, len(lines)
    name = root
    line_no, begin, end, _ = _find_key(lines, begin, end, root, name)
    for depth, key in enumerate(path):
        last = depth == len(path) - 1
        line = lines[line_no]
        if depth > 0 and re.search(r":\s*\{.*\}\s*(#.*)?$", line):  # a one-line {key: value, ...} mapping
            if not last:
                raise LockTextError(f"lock.yml: {name} is a one-line mapping; {'.'.join(path)} goes deeper")
            lines[line_no] = _set_flow_value(line, key, value)
            return "".join(lines)
        line_no, begin, end, _ = _find_key(lines, begin, end, key, name)
        name = f"{name}.{key}"
        if last:
            if "=" in key:
                raise LockTextError(f"lock.yml: {name} is a list item, not a value")
            if any(_content(lines[i]) for i in range(begin, end)):
                raise LockTextError(
                    f"the lock line {lines[line_no].strip()!r} does not hold a single value to replace"
                )
            lines[line_no] = _set_block_value(lines[line_no], value)
            return "".join(lines)
    raise LockTextError("an empty lock path")  # pragma: no cover - path is never empty


def get_value(document, path, root="sdenv_lock"):
    """The value at path in a parsed lock document (the same path syntax as set_value); KeyError if absent."""
    node = document[root]
    for key in path:
        if "=" in key:
            field, wanted = key.split("=", 1)
            matches = [item for item in node if isinstance(item, dict) and str(item.get(field)) == wanted]
            if not matches:
                raise KeyError(key)
            node = matches[0]
        else:
            node = node[key]
    return node


def set_values(text, changes, load):
    """The lock text with every (path, value) of changes set; load(text) -> document parses the result, and
    each value is read back through it, so an edit that lands anywhere else is an error, not a broken lock."""
    for path, value in changes:
        text = set_value(text, path, value)
    document = load(text)
    for path, value in changes:
        try:
            found = get_value(document, path)
        except (KeyError, TypeError, IndexError) as exc:
            raise LockTextError(f"after the edit lock.yml has no {'.'.join(path)}") from exc
        if str(found if found is not None else "") != str(value if value is not None else ""):
            raise LockTextError(
                f"after the edit lock.yml's {'.'.join(path)} reads {found!r}, not {value!r}: nothing was written"
            )
    return text
