"""Choose the Python the WebUI's venv is built with, by running each candidate.

A name on PATH proves nothing: pyenv shims and the macOS Command Line Tools stub exist and fail when run.
So every candidate is run (as the dummy user, who will run the WebUI) with a small probe that prints its
version and checks that it can create a virtual environment, and the first acceptable one wins.
Stdlib only, Python >= 3.9 (it runs on the host).
"""

import os
import shutil

# Prints the version and executable, then fails if `python -m venv` could not bootstrap pip
# (Debian splits ensurepip into python3.X-venv).
PROBE = (
    "import sys; print('%d.%d.%d' % sys.version_info[:3]); print(sys.executable); "
    "import ensurepip, venv; print('venv-ok')"
)


class ResolutionError(Exception):
    """No candidate is usable; the message lists why each was rejected and what to do."""


def parse_version(text):
    """'3.10.14' -> (3, 10, 14); anything else -> None."""
    parts = text.strip().split(".")
    if len(parts) < 2 or not all(part.isdigit() for part in parts):
        return None
    return tuple(int(part) for part in parts)


def parse_probe(rc, out, err):
    """The probe's output -> (version tuple or None, venv_ok, failure text or '')."""
    lines = out.splitlines()
    version = parse_version(lines[0]) if lines else None
    venv_ok = rc == 0 and "venv-ok" in lines[2:]
    failure = ""
    if version is None or not venv_ok:
        detail = [line.strip() for line in (err or out).strip().splitlines() if line.strip()]
        failure = detail[-1] if detail else "no output"
    return version, venv_ok, failure


def version_text(version):
    return ".".join(str(part) for part in version)


def locate(candidate, search_path):
    """A candidate path or bare name -> absolute path, or None when it is not there."""
    if "/" in candidate:
        return candidate if os.path.isfile(candidate) else None
    return shutil.which(candidate, path=search_path)


def resolve(candidates, run, minimum, below, preferred, why, context="", search_path=None):
    """Run the candidates in order; return {path, version, preferred, rejected, warning}.

    `minimum` and `below` bound the accepted versions (minimum <= version < below), `preferred` is the
    version the guide names (a (major, minor) tuple); choosing anything else carries a warning that
    gives `context` (e.g. that the distribution has no such package) and `why`. Raises ResolutionError when no candidate is acceptable.
    """
    rejected = []
    for candidate in candidates:
        path = locate(candidate, search_path if search_path is not None else os.environ.get("PATH", ""))
        if path is None:
            rejected.append({"candidate": candidate, "reason": "not found"})
            continue
        rc, out, err = run([path, "-c", PROBE])
        version, venv_ok, failure = parse_probe(rc, out, err)
        if version is None:
            rejected.append({"candidate": path, "reason": f"exists but does not run (exit {rc}: {failure})"})
            continue
        shown = version_text(version)
        if not minimum <= version[:2] < below:
            rejected.append(
                {
                    "candidate": path,
                    "reason": f"is Python {shown}, outside >= {version_text(minimum)}, < {version_text(below)}",
                }
            )
            continue
        if not venv_ok:
            rejected.append(
                {
                    "candidate": path,
                    "reason": f"is Python {shown} but cannot create virtual environments ({failure}); on"
                    f" Debian/Ubuntu install python{version[0]}.{version[1]}-venv",
                }
            )
            continue
        warning = ""
        if version[:2] != preferred:
            skipped = "; ".join(
                [context] * bool(context) + [f"{r['candidate']} {r['reason']}" for r in rejected]
            )
            warning = (
                f"Using {path} (Python {shown}) instead of Python {version_text(preferred)}, because no"
                f" Python {version_text(preferred)} is usable here ({skipped or 'none was offered'}): {why}."
            )
        return {
            "path": path,
            "version": shown,
            "preferred": not warning,
            "rejected": rejected,
            "warning": warning,
        }
    reasons = "; ".join(f"{r['candidate']} {r['reason']}" for r in rejected) or "no candidate was given"
    raise ResolutionError(
        f"No usable Python >= {version_text(minimum)}, < {version_text(below)} for the WebUI ({reasons}):"
        " install one, or set sdenv_python_fallback to one the dummy user can run."
    )


def parse_apt_policy(text):
    """`apt-cache policy NAME...` -> {name: {"installed": version|None, "candidate": version|None}}.

    Only blocks headed exactly `name:` count: when a name is unknown, apt falls back to reading it as a
    regular expression (`python3.10` then matches `libpython3.10-stdlib`), and that block is not the
    package asked for.
    """
    packages, current = {}, None
    for line in text.splitlines():
        if line and not line[0].isspace() and line.rstrip().endswith(":"):
            current = line.rstrip()[:-1]
            packages[current] = {"installed": None, "candidate": None}
        elif current and line.strip().startswith(("Installed:", "Candidate:")):
            key, _, value = line.strip().partition(":")
            value = value.strip()
            packages[current][key.lower()] = None if value in ("", "(none)") else value
    return packages


def apt_status(run, names):
    """{name: {installed, candidate}} for exactly the names asked (both None when apt does not know it)."""
    rc, out, err = run(["apt-cache", "policy", *names])
    if rc != 0:
        raise ResolutionError(f"apt-cache policy failed (exit {rc}): {(err or out).strip()}.")
    found = parse_apt_policy(out)
    return {name: found.get(name, {"installed": None, "candidate": None}) for name in names}
