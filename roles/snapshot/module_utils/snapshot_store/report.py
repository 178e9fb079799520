"""The words a user reads: the snapshot table, a rollback's plan and its result, as plain sentences.

Kept apart from the operations so the module and the command line say the same thing, and so the wording is
unit-tested without a store. Pure functions of what the operations return (Store.list, rollback's summary).
"""

from __future__ import annotations

COLUMNS = ("id", "time", "kind", "label", "files", "size", "new", "pinned")
RIGHT = {"files", "size", "new"}  # numbers line up on their last digit


def human_bytes(n: int) -> str:
    """1536 -> '1.5 KiB': binary units, one decimal below 10 of a unit."""
    n = int(n or 0)
    if n < 1024:
        return f"{n} B"
    size = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        size /= 1024
        if size < 1024 or unit == "TiB":
            break
    return f"{size:.1f} {unit}" if size < 10 else f"{size:.0f} {unit}"


def snapshot_table(snapshots: list[dict]) -> list[str]:
    """Store.list() as lines of an aligned table: a header and one row per snapshot, the same columns."""
    rows = [list(COLUMNS)]
    for s in snapshots:
        rows.append(
            [
                s["id"],
                s["time"],
                s.get("kind") or "-",
                s.get("label") or "-",
                str(s.get("files", 0)),
                human_bytes(s.get("logical_bytes", 0)),
                human_bytes(s.get("new_bytes", 0)),
                "yes" if s.get("pinned") else "no",
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    out = []
    for r in rows:
        cells = [
            (cell.rjust(w) if COLUMNS[i] in RIGHT else cell.ljust(w))
            for i, (cell, w) in enumerate(zip(r, widths))
        ]
        out.append("  ".join(cells).rstrip())
    return out


def _count(n: int, bytes_: int, word: str = "file") -> str:
    return f"{n} {word}{'' if n == 1 else 's'} ({human_bytes(bytes_)})"


def _group_words(g: dict) -> str:
    parts = []
    for op, verb in (("replace", "replace"), ("add", "add"), ("delete", "delete")):
        n, b = g[op]
        if n:
            parts.append(f"{verb} {_count(n, b)}")
    for op, verb in (("dirs_add", "create"), ("dirs_delete", "remove")):
        if g[op]:
            parts.append(f"{verb} {g[op]} director{'y' if g[op] == 1 else 'ies'}")
    if g["meta"]:
        parts.append(f"reset the mode, owner or time of {g['meta']}")
    return ", ".join(parts)


def _place(root: str, top: str, dir_root: bool = False) -> str:
    if top == ".":
        return f"{root} (the files directly in it)" if dir_root else root
    return f"{root}/{top}"


def plan_lines(summary: dict) -> list[str]:
    """A rollback's plan (its `plan` result: per root, per top-level directory) in words, one line each."""
    out = []
    for root, s in summary.items():
        groups = s.get("groups", {})
        changing = {top: g for top, g in groups.items() if _group_words(g)}
        if not changing:
            out.append(f"{root}: already as in the snapshot, nothing to change.")
        for top, g in sorted(changing.items()):
            dir_root = any(x.get("dir") for x in groups.values()) or bool(s.get("kept"))
            out.append(f"{_place(root, top, dir_root)}{'/' if g.get('dir') else ''}: {_group_words(g)}.")
    out += kept_lines(summary)
    return out


def kept_lines(summary: dict) -> list[str]:
    """One sentence per user-data path a rollback keeps as it is, saying what differs from the snapshot."""
    out = []
    for root, s in summary.items():
        for rel, k in s.get("kept", {}).items():
            since = []
            for key, words in (("added", "new"), ("changed", "changed"), ("deleted", "deleted")):
                n, b = k[key]
                if n:
                    since.append(f"{n} file{'' if n == 1 else 's'} {words} ({human_bytes(b)})")
            what = "; ".join(since) + " since the snapshot" if since else "the same as in the snapshot"
            out.append(
                f"Kept as it is (user data, not rolled back; name it in PATHS= to roll it back): "
                f"{_place(root, rel)}: {what}."
            )
    return out


def totals(summary: dict) -> dict:
    """Sums over every root and group: replace, add, delete as [files, bytes]."""
    t = {"replace": [0, 0], "add": [0, 0], "delete": [0, 0]}
    for s in summary.values():
        for g in s.get("groups", {}).values():
            for op in t:
                t[op][0] += g[op][0]
                t[op][1] += g[op][1]
    return t


def target_words(manifest: dict) -> str:
    """'snapshot ID (label base, 2026-01-01T00:00:00Z)'."""
    extra = [f"label {manifest['label']}"] if manifest.get("label") else []
    extra.append(manifest.get("time", "?"))
    return f"snapshot {manifest['id']} ({', '.join(extra)})"


def plan_text(summary: dict, target: dict, note: str = "") -> list[str]:
    """The plan a rollback prints before it changes anything: a heading line, then plan_lines."""
    head = f"Rollback plan, to {target_words(target)}:"
    return ([note] if note else []) + [head] + ["  " + ln for ln in plan_lines(summary)]


def result_lines(res: dict, target: dict) -> list[str]:
    """What a rollback did (its result and target manifest), and how to undo it, as sentences."""
    t = totals(res.get("plan", {}))
    done = [
        f"{verb} {_count(n, b)}"
        for (n, b), verb in ((t["replace"], "replaced"), (t["add"], "added"), (t["delete"], "deleted"))
        if n
    ]
    lines = []
    if res.get("changed"):
        lines.append(f"Rolled back to {target_words(target)}: {', '.join(done) or 'metadata only'}.")
    else:
        lines.append(f"Nothing to roll back: everything already matches {target_words(target)}.")
    lines += kept_lines(res.get("plan", {}))
    if res.get("before"):
        lines.append(
            f"The state before this rollback is snapshot {res['before']} (label before-rollback); "
            f"to go back to it: make rollback TO={res['before']}"
        )
    return lines
