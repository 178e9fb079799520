"""A bundle's bookkeeping: manifest.json, SHA256SUMS, and the checks a provision makes before it changes
anything (plain Python, usable on the controller and on a host).
"""

import json
import os
import stat
import tempfile

try:
    from ansible.module_utils.webui_files import sha256_file
except ImportError:  # the controller's tools and unit tests import module_utils directly
    from webui_files import sha256_file

MANIFEST = "manifest.json"
SUMS = "SHA256SUMS"


class BundleError(Exception):
    """A bundle that cannot serve a provision, named in one sentence."""


def write_json(path, data):
    fd, tmp = tempfile.mkstemp(prefix=".sdenv-", dir=os.path.dirname(os.path.abspath(path)))
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def bundle_files(bundle):
    """Every regular file under bundle except SHA256SUMS and temp leftovers, as sorted relative paths."""
    found = []
    for dirpath, dirnames, filenames in os.walk(bundle):
        dirnames.sort()
        for name in filenames:
            relative = os.path.relpath(os.path.join(dirpath, name), bundle)
            if relative == SUMS or name.startswith(".sdenv-") or name.endswith(".part"):
                continue
            # model_file's download lock (.<model>.lock, beside its .sdenv- stat cache): it names the last
            # holder, so it changes every run, and it is no part of what a host installs.
            if name.startswith(".") and name.endswith(".lock"):
                continue
            found.append(relative)
    return sorted(found)


def write_sums(bundle, known=None):
    """Write SHA256SUMS last (temp, rename). known: {relative path: sha256} already verified (models), used
    as is when the file's size is unchanged since. Returns the bundle's total size in bytes."""
    known = known or {}
    lines, total = [], 0
    for relative in bundle_files(bundle):
        path = os.path.join(bundle, relative)
        total += os.path.getsize(path)
        lines.append(f"{known.get(relative) or sha256_file(path)}  {relative}")
    fd, tmp = tempfile.mkstemp(prefix=".sdenv-", dir=bundle)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, os.path.join(bundle, SUMS))
    return total


def read_sums(bundle):
    path = os.path.join(bundle, SUMS)
    if not os.path.isfile(path):
        raise BundleError(f"{bundle} has no {SUMS}: it is not a finished bundle; run make bundle again.")
    sums = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            digest, _, relative = line.rstrip("\n").partition("  ")
            if len(digest) != 64 or not relative:
                raise BundleError(
                    f"{path} has a malformed line {line.strip()[:80]!r}: run make bundle again."
                )
            sums[relative] = digest
    return sums


def verify_sums(bundle):
    """Re-hash every file against SHA256SUMS; a changed, missing or extra file is one sentence."""
    sums = read_sums(bundle)
    present = set(bundle_files(bundle))
    for relative in sorted(set(sums) - present):
        raise BundleError(f"{bundle}/{relative} is listed in {SUMS} but missing: copy the bundle again.")
    for relative in sorted(present - set(sums)):
        raise BundleError(f"{bundle}/{relative} is not listed in {SUMS}: remove it or make the bundle again.")
    for relative, digest in sorted(sums.items()):
        if sha256_file(os.path.join(bundle, relative)) != digest:
            raise BundleError(
                f"{bundle}/{relative} does not match its sha256 in {SUMS}: copy the bundle again."
            )
    return len(sums)


def read_manifest(bundle):
    try:
        with open(os.path.join(bundle, MANIFEST), encoding="utf-8") as handle:
            manifest = json.load(handle)
    except (OSError, ValueError) as exc:
        raise BundleError(
            f"{bundle} has no readable {MANIFEST} ({exc}): it is not a bundle from make bundle."
        ) from exc
    if manifest.get("format") != 1 or "platform" not in manifest:
        raise BundleError(f"{bundle}/{MANIFEST} is not a bundle manifest this toolkit knows (format 1).")
    return manifest


def unreadable_ancestor(path):
    """The first directory from / to path that other users cannot enter, or None (the dummy reads the bundle)."""
    current = os.path.sep
    for part in os.path.abspath(path).split(os.path.sep)[1:]:
        current = os.path.join(current, part)
        try:
            mode = os.stat(current).st_mode
        except OSError:
            return current
        if stat.S_ISDIR(mode) and not mode & stat.S_IXOTH:
            return current
    return None


def preflight_problems(
    bundle, platform, pythons, models, missing_system, system, locks=None, comfyui_commit=""
):
    """Sentences naming what stops a provision from this bundle on this host, before anything changes.

    platform: the host's `<system>-<machine>`; pythons: the Pythons the host may use (major.minor);
    models: the enabled model entries of the lock; missing_system: what the host lacks that no bundle can
    carry (Debian packages not installed, on macOS Homebrew, formulae or python@3.10 not there yet);
    system: Darwin or Linux, for the advice; locks: {file name: sha256} of the controller's venv locks for
    the platform, which the bundle's locks/ must equal (ComfyUI's as comfyui/<name>); comfyui_commit: the
    ComfyUI commit lock.yml pins when comfyui is in sdenv_apps, else empty.
    """
    problems = []
    try:
        manifest = read_manifest(bundle)
        read_sums(bundle)
    except BundleError as exc:
        return [str(exc)]
    if manifest["platform"] != platform:
        problems.append(
            f"The bundle {bundle} is for {manifest['platform']}, this host is {platform}: make a bundle with "
            f"make bundle PLATFORM={platform}."
        )
    blocked = unreadable_ancestor(bundle)
    if blocked:
        problems.append(
            f"The bundle {bundle} is not readable by other users ({blocked} is closed to them) and the dummy "
            "user installs from it: move it (e.g. under /srv or /var/tmp) or open that directory (chmod o+rx)."
        )
    if pythons and not any(p in manifest.get("locks", {}) for p in pythons):
        problems.append(
            f"The bundle carries the venv for Python {', '.join(sorted(manifest.get('locks', {})))}, this host would "
            f"use {', '.join(pythons)}: make the bundle from a lock that has {pythons[0]}."
        )
    stale = []
    for name, digest in sorted((locks or {}).items()):
        path = os.path.join(bundle, "locks", name)
        if not os.path.isfile(path) or sha256_file(path) != digest:
            stale.append(name)
    if stale and manifest["platform"] == platform:
        problems.append(
            f"The bundle was made from other venv locks than this checkout's ({', '.join(stale)}): make the bundle "
            "again from this checkout."
        )
    if comfyui_commit:
        carried_comfyui = (
            manifest.get("comfyui", {}).get("commit") if "comfyui" in manifest.get("apps", []) else None
        )
        if not carried_comfyui:
            problems.append(
                f"The bundle {bundle} does not carry ComfyUI (it was made without comfyui in sdenv_apps): make the "
                "bundle again with comfyui in sdenv_apps, or take comfyui out of sdenv_apps."
            )
        elif carried_comfyui != comfyui_commit:
            problems.append(
                f"The bundle {bundle} carries ComfyUI at {carried_comfyui[:10]}, lock.yml pins {comfyui_commit[:10]}: "
                "make the bundle again from this checkout."
            )
    carried = {m["name"] for m in manifest.get("models", [])}
    missing_models = [m["name"] for m in models if m["name"] not in carried]
    if missing_models:
        problems.append(
            f"The bundle does not carry the enabled model(s) {', '.join(missing_models)}: make the bundle with them "
            "enabled, or disable them in sdenv_models_enabled."
        )
    if missing_system:
        advice = (
            "install them while the machine still has a network (Homebrew's bottles and python@3.10 cannot be "
            "carried in a bundle)"
            if system == "Darwin"
            else "install them from the distribution's packages first (apt-get install, or a local apt mirror: "
            "Debian packages are not carried in a bundle)"
        )
        problems.append(f"This host lacks {', '.join(missing_system)}, which no bundle carries: {advice}.")
    return problems
