# make upgrade COMFYUI=<ref>'s plan: what a ComfyUI commit asks of its venv, checked against lock.yml's pins,
# and the changes old -> new. The controller script (roles/webui/files/sdenv_upgrade.py) wires it to git and
# make lock-venv's code; unit tests call it with upstream's recorded files.
#
# Where upstream pins its venv (read from its files at v0.3.64 and later, not guessed): requirements.txt names
# every package, with `==` for its own front-end packages and lower bounds or nothing for the rest (torch,
# torchvision and torchaudio unpinned: the lock's comfyui_venv.torch pins them per platform); pyproject.toml's
# [project] requires-python bounds the interpreter; comfyui_version.py holds the version it calls itself
# (`__version__ = "0.3.64"`, generated from pyproject.toml). Nothing else in the tree installs packages at start
# (its frontend check only compares the installed front-end with requirements.txt). Runs on the controller,
# so packaging (an Ansible dependency) parses the requirement lines as pip does.
from __future__ import annotations

import re

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name

TORCH_TRIO = ("torch", "torchvision", "torchaudio")


class ComfyUpgradeError(ValueError):
    """One sentence: why the plan could not be made; nothing was changed."""


def requirements(text):
    """{canonical name: (name as written, the rest of the line: specifier, extras, marker)} of a
    requirements.txt, in its order; comments, blank lines and pip options are skipped."""
    found = {}
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith(("#", "-")):
            continue
        try:
            req = Requirement(line)
        except InvalidRequirement as exc:
            raise ComfyUpgradeError(
                f"ComfyUI's requirements.txt line {line!r} is not a requirement pip reads: pin it by hand."
            ) from exc
        rest = "".join(
            [
                f"[{','.join(sorted(req.extras))}]" if req.extras else "",
                str(req.specifier),
                f"; {req.marker}" if req.marker else "",
            ]
        )
        found[canonicalize_name(req.name)] = (req.name, rest)
    return found


def requirement_changes(old_text, new_text):
    """['name old -> new', 'name (added)', 'name (removed)'] between two requirements.txt texts."""
    old, new = requirements(old_text), requirements(new_text)
    lines = []
    for key in [*old, *[k for k in new if k not in old]]:
        if key not in new:
            lines.append(f"{old[key][0]}{old[key][1]} (removed)")
        elif key not in old:
            lines.append(f"{new[key][0]}{new[key][1]} (added)")
        elif old[key][1] != new[key][1]:
            lines.append(f"{new[key][0]} {old[key][1] or '(any)'} -> {new[key][1] or '(any)'}")
    return lines


def check_torch(new_text, torch_pins):
    """Raise when the new requirements.txt bounds torch, torchvision or torchaudio so that a platform's pin in
    lock.yml (comfyui_venv.torch: {platform: {torch, torchvision, torchaudio}}) falls outside: the lock is
    never moved to a torch the plan did not read from upstream. Returns notes on bounds that the pins meet."""
    wanted, notes = requirements(new_text), []
    for name in TORCH_TRIO:
        # The version bound alone: the extras before it and the marker after it bound nothing.
        spec = re.sub(r"^\[[^\]]*\]", "", wanted.get(name, ("", ""))[1]).split(";", 1)[0].strip()
        if not spec:
            continue
        allowed = SpecifierSet(spec)
        for platform, pins in sorted(torch_pins.items()):
            pin = str(pins.get(name, ""))
            if pin and not allowed.contains(pin, prereleases=True):
                raise ComfyUpgradeError(
                    f"the new ComfyUI's requirements.txt asks for {name}{spec}, but lock.yml pins {name} {pin} "
                    f"for {platform} (sdenv_lock.comfyui_venv.torch): pin a release that fits there, then run "
                    "make upgrade again."
                )
        notes.append(f"requirements.txt bounds {name}{spec}; every platform's pin in lock.yml fits it")
    return notes


def check_python(pyproject_text, pythons):
    """Raise when pyproject.toml's requires-python excludes a Python the toolkit builds the venv with."""
    if not pyproject_text:
        return
    # The [project] table's requires-python line (a regex, not tomllib: module_utils keep to Python 3.9).
    project = re.search(r"^\[project\]\s*$(.*?)(?=^\[|\Z)", pyproject_text, re.M | re.S)
    m = re.search(r"""^requires-python\s*=\s*["']([^"']*)["']""", project.group(1) if project else "", re.M)
    spec = m.group(1) if m else ""
    try:
        allowed = SpecifierSet(spec)
    except InvalidSpecifier as exc:
        raise ComfyUpgradeError(
            f"the new ComfyUI's pyproject.toml gives requires-python {spec!r}, which does not parse."
        ) from exc
    refused = sorted({p for p in pythons if not allowed.contains(p, prereleases=True)})
    if refused:
        raise ComfyUpgradeError(
            f"the new ComfyUI needs Python {spec} (pyproject.toml), but the toolkit builds its venv with Python "
            f"{', '.join(refused)}: choose a ComfyUI commit that still runs there."
        )


def requires_notes(requires, new_text):
    """Notes on lock.yml's comfyui_venv.requires (packages upstream imports without naming them) that the new
    requirements.txt now names itself: they stay (harmless), and could be dropped."""
    named = requirements(new_text)
    return [
        f"the new requirements.txt names {r} itself; comfyui_venv.requires may drop it"
        for r in requires
        if canonicalize_name(re.split(r"[<>=!~;\[ ]", str(r), maxsplit=1)[0]) in named
    ]


def version_name(exact_tag, version_file_text, commit):
    """The lock's comfyui.version for commit: its own tag when it has one; otherwise the version its
    comfyui_version.py gives plus the commit (v0.3.64-ga125cd84b0: between releases); else the commit."""
    if exact_tag:
        return exact_tag
    m = re.search(r"""^__version__\s*=\s*["']([^"']+)["']""", version_file_text or "", re.M)
    if m:
        return f"v{m.group(1)}-g{commit[:10]}"
    return commit[:10]


def pin_changes(lock, commit, version):
    """[(path, old, new)] for lock.yml's comfyui section: its commit and version."""
    comfyui = lock["comfyui"]
    return [
        (("comfyui", key), comfyui.get(key), value)
        for key, value in (("commit", commit), ("version", version))
        if str(comfyui.get(key)) != str(value)
    ]


def torch_lines(old_locks, new_locks):
    """'torch per platform' lines from ComfyUI's venv locks, {file name: {canonical name: {version...}}} (the
    parsed packages) before and after: the torch trio each lock file resolved to, old -> new."""
    lines = []
    for name in sorted(new_locks):
        before, after = old_locks.get(name) or {}, new_locks[name]

        def trio(packages):
            return " ".join(f"{p} {(packages.get(p) or {}).get('version', '(none)')}" for p in TORCH_TRIO)

        old, new = trio(before), trio(after)
        lines.append(f"{name}: {old} -> {new}" if old != new else f"{name}: {new} (unchanged)")
    return lines


def plan_text(pins, requirement_lines, torch, notes, old_version, new_version):
    """The plan as a diff of pins old -> new, the requirement changes, torch per platform, then notes."""
    lines = [f"Upgrade plan: ComfyUI {old_version} -> {new_version}"]
    if not pins:
        lines.append("  (no pin changes: the lock already pins this commit)")
    width = max((len(".".join(path)) for path, _, _ in pins), default=0)
    for path, old, new in pins:
        lines.append(f"  {'.'.join(path).ljust(width)}  {old or '(none)'} -> {new}")
    lines.append("  requirements.txt:" + ("" if requirement_lines else " unchanged"))
    lines.extend(f"    {line}" for line in requirement_lines)
    lines.append("  torch per platform (ComfyUI's venv locks):")
    lines.extend(f"    {line}" for line in torch)
    lines.extend(f"  note: {note}" for note in notes)
    return "\n".join(lines)


def apps_refusal(apps_by_host):
    """One sentence when a host the upgrade would touch does not run ComfyUI ({host: sdenv_apps}); else None."""
    without = sorted(host for host, apps in apps_by_host.items() if "comfyui" not in (apps or ["webui"]))
    if not without:
        return None
    return (
        f"COMFYUI= moves ComfyUI, but sdenv_apps does not name comfyui for {', '.join(without)}: add comfyui "
        "to sdenv_apps in settings.yml and make provision first, or leave COMFYUI= out."
    )
