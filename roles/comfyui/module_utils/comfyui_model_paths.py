"""ComfyUI's extra_model_paths.yaml: the one section the toolkit owns, every other byte the user's.

ComfyUI (utils/extra_config.py at the pinned commit) reads the file as a mapping of sections; in each, an
optional `base_path` (relative folders resolve against it), an optional `is_default`, and one key per model
folder name of folder_paths.py (`checkpoints`, `loras`, ...) whose value is a folder or a `|` block of them.
A folder name it does not know becomes a new, empty list silently, so a wrong key shows no model: the keys
written here are ComfyUI's own names, and the model store's layout uses the same names.

The toolkit's section is `sdenv:` between two marker comments. Only the text between the markers is ever
replaced; the rest of the file (other sections, comments, blank lines, the user's own order and quoting) is
kept byte for byte, and the result must parse to the same other sections as before. Refused with one
sentence, the file untouched: a file that does not parse, a top level that is not a mapping, and a section
named `sdenv` outside the markers (someone else's, which the toolkit will not take over).
"""

import json
import re

import yaml

SECTION = "sdenv"
BEGIN = "# BEGIN sdenv: the model store (written by the toolkit; edit settings.yml, not this block)"
END = "# END sdenv"
# The toolkit's own key at the top level, outside its markers: `sdenv:` at column 0 (quoted or not).
_PLAIN = re.compile(r"[A-Za-z0-9_./~-]+")
_OWN_KEY = re.compile(r"""^(?:sdenv|'sdenv'|"sdenv")\s*:""")


class ModelPathsError(Exception):
    """A yaml the toolkit will not change, named in one sentence."""


def section_text(base_path, folders):
    """The marked block: base_path, then one line per ComfyUI folder name (sorted, stable)."""
    lines = [BEGIN, f"{SECTION}:", f"    base_path: {yaml_scalar(base_path)}"]
    lines += [f"    {name}: {yaml_scalar(folders[name])}" for name in sorted(folders)]
    lines.append(END)
    return "\n".join(lines) + "\n"


def yaml_scalar(value):
    """A plain scalar when yaml reads it back as exactly this string, else a JSON string (valid YAML)."""
    text = str(value)
    if _PLAIN.fullmatch(text) and yaml.safe_load(text) == text:
        return text
    return json.dumps(text)


def parse(text, path):
    """The file's mapping ({} for an empty file); ModelPathsError when ComfyUI could not read it either."""
    try:
        data = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ModelPathsError(
            f"{path} is not valid YAML{where}: fix or move it, then run again (the toolkit adds its own "
            "`sdenv:` section to it and changes nothing else; nothing was changed)."
        ) from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ModelPathsError(
            f"{path} holds a {type(data).__name__}, not a mapping of sections as ComfyUI expects: fix or move "
            "it, then run again (nothing was changed)."
        )
    return data


def split_block(text, path):
    """(before, block, after): the text around the toolkit's marked block (block '' when there is none)."""
    lines = text.splitlines(keepends=True)
    begins = [i for i, line in enumerate(lines) if line.rstrip("\r\n") == BEGIN]
    ends = [i for i, line in enumerate(lines) if line.rstrip("\r\n") == END]
    if len(begins) > 1 or len(ends) > 1 or len(begins) != len(ends) or (begins and ends[0] < begins[0]):
        raise ModelPathsError(
            f"{path} has its `{BEGIN[:13]}` / `{END}` marker lines broken or repeated: leave one pair (or none), "
            "then run again (nothing was changed)."
        )
    if not begins:
        outside = lines
        before, block, after = text, "", ""
    else:
        b, e = begins[0], ends[0]
        before, block, after = "".join(lines[:b]), "".join(lines[b : e + 1]), "".join(lines[e + 1 :])
        outside = lines[:b] + lines[e + 1 :]
    if any(_OWN_KEY.match(line) for line in outside):
        raise ModelPathsError(
            f"{path} has a section named `{SECTION}` the toolkit did not write: rename it (the toolkit keeps "
            f"its own `{SECTION}:` section between its marker lines), then run again (nothing was changed)."
        )
    return before, block, after


def merged_text(current, base_path, folders, path="extra_model_paths.yaml"):
    """The file's new text (== current when nothing changes). current is None for a missing file."""
    text = current or ""
    others = parse(text, path)
    before, _block, after = split_block(text, path)
    others.pop(SECTION, None)
    if before and not before.endswith("\n"):
        before += "\n"
    new = before + section_text(base_path, folders) + after
    result = parse(new, path)
    wanted = {"base_path": str(base_path), **{k: str(v) for k, v in folders.items()}}
    if result.get(SECTION) != wanted or {k: v for k, v in result.items() if k != SECTION} != others:
        raise ModelPathsError(  # a guard: the text edit must never change what another section means
            f"Adding the `{SECTION}:` section to {path} would change how its other sections read: fix or move "
            "the file, then run again (nothing was changed)."
        )
    return new


def read_section(text, path="extra_model_paths.yaml"):
    """The toolkit's section as ComfyUI reads it ({} when absent)."""
    value = parse(text, path).get(SECTION)
    return value if isinstance(value, dict) else {}
