#!/usr/bin/env python3
"""Write each role's variable tables into its README from its meta/argument_specs.yml.

The tables sit between two marker lines in roles/<role>/README.md, so the prose around them is the
author's and the tables are the spec's: they can never drift (`make lint` runs this with --check, which
exits 1 naming every README whose tables differ from what the spec gives). Usage:

    scripts/role_docs.py           rewrite the tables in place
    scripts/role_docs.py --check   change nothing; exit 1 when a README is missing, unmarked or stale
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

BEGIN = "<!-- BEGIN variables: generated from meta/argument_specs.yml by scripts/role_docs.py -->"
END = "<!-- END variables -->"

# Ansible's documentation markup, as argument_specs descriptions use it, to Markdown.
_MARKUP = [
    (re.compile(r"[CV]\(([^)]*)\)"), r"`\1`"),
    (re.compile(r"I\(([^)]*)\)"), r"*\1*"),
    (re.compile(r"B\(([^)]*)\)"), r"**\1**"),
    (re.compile(r"[OL]\(([^),]*)(?:,[^)]*)?\)"), r"`\1`"),
]


def markdown(text: str) -> str:
    for pattern, replacement in _MARKUP:
        text = pattern.sub(replacement, text)
    # A table cell is one line; a literal pipe would end the cell.
    return " ".join(text.split()).replace("|", "\\|")


def describe(description) -> str:
    if description is None:
        return ""
    if isinstance(description, list):
        return " ".join(markdown(str(part)) for part in description)
    return markdown(str(description))


def type_of(option: dict) -> str:
    kind = option.get("type", "str")
    if kind == "list" and option.get("elements"):
        return f"list of {option['elements']}"
    return kind


def default_of(option: dict) -> str:
    if option.get("required"):
        return "required"
    if "default" not in option:
        return ""
    return (
        "`"
        + yaml.safe_dump(option["default"], default_flow_style=True).strip().removesuffix("...").strip()
        + "`"
    )


def tables(spec: dict) -> str:
    """The Markdown for every entry point of one role's argument_specs, in the file's order."""
    out = []
    for entry, body in spec["argument_specs"].items():
        out.append(f"### Entry point `{entry}`")
        if body.get("short_description"):
            out.append("")
            out.append(describe(body["short_description"]))
        out.append("")
        out.append("| variable | type | default | description |")
        out.append("|---|---|---|---|")
        for name, option in (body.get("options") or {}).items():
            secret = " (secret: never logged)" if option.get("no_log") else ""
            out.append(
                f"| `{name}` | {type_of(option)} | {default_of(option)} | {describe(option.get('description'))}{secret} |"
            )
        out.append("")
    return "\n".join(out).rstrip("\n")


def render(readme: str, generated: str) -> str | None:
    """The README with its marked section replaced, or None when the markers are missing."""
    start, end = readme.find(BEGIN), readme.find(END)
    if start < 0 or end < start:
        return None
    return readme[: start + len(BEGIN)] + "\n" + generated + "\n" + readme[end:]


def main(argv: list[str]) -> int:
    check = "--check" in argv
    root = Path(__file__).resolve().parent.parent
    problems = []
    for spec_file in sorted(root.glob("roles/*/meta/argument_specs.yml")):
        role = spec_file.parent.parent
        readme_file = role / "README.md"
        relative = readme_file.relative_to(root)
        if not readme_file.exists():
            problems.append(f"{relative} is missing: every role has a README with its variable tables.")
            continue
        readme = readme_file.read_text()
        spec = yaml.safe_load(spec_file.read_text())
        updated = render(readme, tables(spec))
        if updated is None:
            problems.append(f"{relative} has no '{BEGIN}' ... '{END}' section for its variable tables.")
        elif updated != readme:
            if check:
                problems.append(
                    f"{relative}: its variable tables differ from meta/argument_specs.yml; run scripts/role_docs.py."
                )
            else:
                readme_file.write_text(updated)
                print(f"wrote {relative}")
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
