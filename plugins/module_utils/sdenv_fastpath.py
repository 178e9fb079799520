"""The fast path of make provision: a role whose inputs and outputs match what the host recorded does no more.

A role that ran in full records a stamp in the provision record (the user's entry, key `fastpath`):
{role: {"inputs": {"lock": digest, "settings": digest, "code": digest}, "outputs": [[spec, fingerprint]]}}.
The next provision skips the role when
- its inputs are the same: the lock's digest, the digest of every value its argument specs name (as the
  preflight resolved them for this host; secrets left out, see SECRET), and the digest of the toolkit's own
  code that runs it (the role's files and plugins/), so an edited setting or an updated toolkit runs it;
- and every output it recorded has the same fingerprint: a stat (type, mode, owner, size, mtime, ctime,
  inode) of each path, of everything below a tree (no link followed), or the account's user-database entry.
  In a tree, a directory counts by its entries, not its times, and an empty one not at all; __pycache__ is
  left out and a git index counts by its bytes, so starting the app (make run, make verify LIVE=1) leaves a
  converged tree converged.
  A file changed in the WebUI tree, a package removed (dpkg's status file changes), a model touched, a
  setting edited: each makes the role run in full, which then reports its own changes as always.
DEEP=1 (sdenv_deep) takes no fast path. A role another role feeds (python sets sdenv_python for webui) runs
whenever the fed one does. The stamps are written after the run's known-good snapshot, so a run that failed
before its end leaves no stamp, and the next one runs in full.

Plain Python (no Ansible): the preflight action plans (plan()), module provision_fastpath measures and
compares on the host (fingerprint(), fast_roles()); tests/unit/test_fastpath.py tests both.
"""

import grp
import hashlib
import json
import os
import pwd
import stat

try:
    from ansible.module_utils.app_data import COMFYUI_KEPT, WEBUI_KEPT
except ImportError:  # the preflight action and unit tests import module_utils directly
    from app_data import COMFYUI_KEPT, WEBUI_KEPT

ROLES = ("dummy_user", "homebrew", "python", "webui", "comfyui", "models", "known_good")
# role -> the roles that need it to run when they run (it sets a fact they use).
# ComfyUI uses the interpreter, uv and caches the webui role's defaults name (the playbook makes them public).
FEEDS = {"python": ("webui", "comfyui"), "webui": ("comfyui",)}
# dpkg's database: the status and version of each package the role installs are read from it.
DPKG_STATUS = "/var/lib/dpkg/status"
SECRET = ("password", "token", "secret")
# How this run works, not what it makes: a DEEP=1 run must not make the next plain run go the full path again.
RUN_MODES = ("sdenv_deep", "sdenv_models_deep")
# The values outputs() reads (the preflight resolves each, whether a spec names it or a role default makes it).
OUTPUT_VALUES = (
    "sdenv_user_name", "sdenv_user_home", "sdenv_user_password_file", "sdenv_homebrew_prefix",
    "sdenv_login_profile", "sdenv_webui_dir", "sdenv_models_kind_dirs", "sdenv_snapshot_user_data",
    "sdenv_webui_hf_home", "sdenv_webui_cache_dir", "sdenv_webui_venv_dir", "sdenv_webui_uv", "sdenv_user_shell",
    "sdenv_linux_packages", "sdenv_python_fallback", "sdenv_apps", "sdenv_comfyui_dir", "sdenv_comfyui_venv_dir",
    "sdenv_snapshot_comfyui_user_data",
)  # fmt: skip


def digest(value):
    """sha256 of a value's canonical JSON (plain data: dicts, lists, strings, numbers)."""
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def settings_digest(values):
    """The digest of a role's resolved settings, secrets left out: a password is set on creation only, and
    even its hash has no place in a file others may read."""
    kept = {k: v for k, v in values.items() if not any(word in k for word in SECRET) or k.endswith("_env")}
    return digest(kept)


def code_digest(paths):
    """The digest of the files under `paths` (the role's directory, plugins/): names and contents."""
    sha = hashlib.sha256()
    for top in paths:
        for directory, dirs, files in os.walk(top):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(files):
                if name.endswith((".pyc", ".md")):
                    continue
                path = os.path.join(directory, name)
                sha.update(os.path.relpath(path, os.path.dirname(top)).encode() + b"\0")
                with open(path, "rb") as handle:
                    sha.update(hashlib.sha256(handle.read()).digest())
    return sha.hexdigest()


def outputs(role, values, system):
    """The output specs of `role` on this host: [kind, path, excludes] with kind path (a stat of it), tree
    (of it and everything below it), owner (its type, mode and owner only), account (a user name) or packages
    (dpkg's status and version of the names in excludes: an unrelated package installed elsewhere is not
    this role's change)."""
    name, home = values.get("sdenv_user_name"), values.get("sdenv_user_home")
    linux = system != "Darwin"

    def packages(names):
        names = [n for n in names if isinstance(n, str) and n]
        return [["packages", DPKG_STATUS, sorted(names)]] if linux and names else []

    shell = values.get("sdenv_user_shell")
    if role == "dummy_user":
        # The home's owner and mode, not its times: every other role writes in it.
        return [
            ["account", name, []],
            ["owner", home, []],
            ["path", values.get("sdenv_user_password_file"), []],
            *packages(["sudo", os.path.basename(shell) if isinstance(shell, str) else ""]),
        ]
    if role == "homebrew":
        prefix = values.get("sdenv_homebrew_prefix")
        brew = (
            [] if linux or not prefix else [["path", f"{prefix}/Cellar", []], ["path", f"{prefix}/bin", []]]
        )
        return [
            *packages(values.get("sdenv_linux_packages") or []),
            *brew,
            ["path", values.get("sdenv_login_profile"), []],
        ]
    if role == "python":
        prefix = values.get("sdenv_homebrew_prefix")
        brew = [] if linux or not prefix else [["path", f"{prefix}/opt", []]]
        # The interpreters the role may choose: python3.10 (its package) and the configured fallback.
        fallback = values.get("sdenv_python_fallback")
        paths = [
            ["path", p, []] for p in ("/usr/bin/python3.10", fallback) if linux and isinstance(p, str) and p
        ]
        return [*packages(["python3.10", "python3.10-venv"]), *paths, *brew]
    if role == "comfyui":
        comfyui = values.get("sdenv_comfyui_dir")
        if not isinstance(comfyui, str) or not comfyui:
            return [["tree", None, []]]
        # What ComfyUI writes as it runs: the user's folders (as the snapshot keeps them) and its scratch.
        kept = [
            *(values.get("sdenv_snapshot_comfyui_user_data") or ["output", "input", "user"]),
            *COMFYUI_KEPT,
        ]
        specs = [["tree", comfyui, [f"{comfyui}/{d}" for d in kept]]]
        venv = values.get("sdenv_comfyui_venv_dir")
        if isinstance(venv, str) and venv and not (venv + "/").startswith(comfyui + "/"):
            specs.append(["tree", venv, []])
        return specs
    if role not in ("webui", "models"):
        return []  # the known-good snapshot: what it records is the other roles' outputs
    webui = values.get("sdenv_webui_dir")
    if not isinstance(webui, str) or not webui:
        return [["tree", None, []]]  # no usable plan: the role runs in full
    kind_dirs = sorted((values.get("sdenv_models_kind_dirs") or {}).values())
    if role == "webui":
        # The models' folders are the models role's; the user's outputs and logs are the user's, and what the
        # WebUI writes for itself as it runs (params.txt, cache/, ...: app_data.py) is no work for the role.
        kept = [*(values.get("sdenv_snapshot_user_data") or ["outputs", "log"]), *WEBUI_KEPT]
        user_data = [f"{webui}/{d}" for d in kept]
        specs = [["tree", webui, sorted({*kind_dirs, *user_data})]]
        for extra in (
            "sdenv_webui_hf_home",
            "sdenv_webui_cache_dir",
            "sdenv_webui_venv_dir",
            "sdenv_webui_uv",
        ):
            path = values.get(extra)
            if isinstance(path, str) and path and not (path + "/").startswith(webui + "/"):
                specs.append(["tree", path, []])
        return specs
    if role == "models":
        return [["tree", d, []] for d in kind_dirs] + [["path", f"{webui}/cache.json", []]]
    return []


def plan(role_values, lock, system, code):
    """{role: {"inputs": {...}, "outputs": [specs]}} for the roles of this run; `role_values` is
    {role: {setting: resolved value}}, `code` {role: code digest}. A role with an unusable output (a path
    that is not an absolute string) gets None: it always runs in full."""
    everything = {}
    for values in role_values.values():
        everything.update({k.removeprefix("output "): v for k, v in values.items()})
    result = {}
    for role, values in role_values.items():
        if role == "comfyui" and "comfyui" not in (everything.get("sdenv_apps") or ()):
            continue  # not chosen: the playbook skips it, and it feeds nothing
        specs = outputs(role, everything, system)
        usable = all(isinstance(s[1], str) and s[1] for s in specs)
        if not usable or any(s[0] != "account" and not s[1].startswith("/") for s in specs):
            result[role] = None
            continue
        result[role] = {
            "inputs": {
                "lock": digest(lock),
                "settings": settings_digest(
                    {k: v for k, v in values.items() if k != "sdenv_lock" and k not in RUN_MODES}
                ),
                "code": code.get(role, ""),
            },
            "outputs": specs,
        }
    return result


# --- on the host ------------------------------------------------------------------------------------------


def _line(path, st):
    return (
        f"{path}\0{st.st_mode:o}\0{st.st_uid}\0{st.st_gid}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}"
        f"\0{st.st_ino}\n"
    ).encode("utf-8", "surrogateescape")


def _tree_line(path, st):
    """A directory inside a walked tree without its times and size: those move whenever an entry is added or
    removed, and the walk sees every entry that counts by itself. Python's __pycache__ or the WebUI's params.txt
    appearing must not make the tree look changed through its parent's mtime."""
    if not stat.S_ISDIR(st.st_mode):
        return _line(path, st)
    return f"{path}\0{st.st_mode:o}\0{st.st_uid}\0{st.st_gid}\0{st.st_ino}\n".encode(
        "utf-8", "surrogateescape"
    )


def _git_index_line(path, fd, name, st):
    """A git index by its bytes: `git status` as the dummy (make verify, the snapshot's facts) rewrites it with
    the same bytes and a new mtime; staged changes still change the bytes. The dummy could swap it for a fifo
    or a directory after its stat: opened non-blocking, read only as a regular file, any error its own line."""
    sha = hashlib.sha256()
    try:
        index = os.open(
            name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0), dir_fd=fd
        )
    except OSError as exc:
        return _unreadable(path, exc)
    with os.fdopen(index, "rb") as handle:
        try:
            if not stat.S_ISREG(os.fstat(index).st_mode):
                return f"{path}\0not a regular file\n".encode("utf-8", "surrogateescape")
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                sha.update(chunk)
        except OSError as exc:
            return _unreadable(path, exc)
    return f"{path}\0{st.st_mode:o}\0{st.st_uid}\0{st.st_gid}\0{sha.hexdigest()}\n".encode(
        "utf-8", "surrogateescape"
    )


def _unreadable(path, exc):
    return f"{path}\0unreadable {exc.errno}\n".encode("utf-8", "surrogateescape")


# Root walks the dummy's trees here: every directory is opened relative to its parent (held open) with
# O_NOFOLLOW, so a directory the dummy swaps for a link after its stat is never entered (the open fails and the
# line says so).
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def _tree(top, excludes, sha):
    try:
        top_fd = os.open(top, _DIR_FLAGS)
    except OSError as exc:
        sha.update(_unreadable(top, exc))
        return
    try:
        sha.update(_directory(top_fd, top, set(excludes), False) or b"")
    finally:
        os.close(top_fd)


def _directory(fd, directory, excluded, in_git):
    """The digest of what counts below the open directory `fd`, or None when nothing does: a folder that is
    empty, or holds only empty folders, is no output (the WebUI makes extensions/ and models/ folders at its
    first start; the known-good snapshot does not count new empty folders either)."""
    try:
        with os.scandir(fd) as it:
            names = sorted(entry.name for entry in it)
    except OSError as exc:
        return _unreadable(directory, exc)
    sha, counted = hashlib.sha256(), False
    for name in names:
        path = os.path.join(directory, name)
        if path in excluded:
            continue
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except OSError as exc:
            sha.update(_unreadable(path, exc))
            counted = True
            continue
        if stat.S_ISDIR(st.st_mode):
            if name == "__pycache__":
                continue  # Python's bytecode, written wherever the dummy imports: no output of a role
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                sha.update(_unreadable(path, exc))
                counted = True
                continue
            try:
                below = _directory(child, path, excluded, name == ".git")
            finally:
                os.close(child)
            if below is None:
                continue
            sha.update(_tree_line(path, st) + below)
        elif in_git and name == "index" and stat.S_ISREG(st.st_mode):
            sha.update(_git_index_line(path, fd, name, st))
        else:
            sha.update(_line(path, st))
        counted = True
    return sha.digest() if counted else None


def _account(name):
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return "absent"
    groups = sorted(g.gr_name for g in grp.getgrall() if name in g.gr_mem or g.gr_gid == entry.pw_gid)
    shadow = ""
    try:
        with open("/etc/shadow", encoding="utf-8", errors="replace") as handle:
            shadow = next((line for line in handle if line.startswith(name + ":")), "")
    except OSError:  # macOS, or no permission: the password is not part of the fingerprint there
        pass
    return digest([tuple(entry), groups, hashlib.sha256(shadow.encode()).hexdigest()])


def dpkg_packages(text, names):
    """{name: "status version"} of `names` in the text of dpkg's status file (absent ones left out)."""
    wanted, found = set(names), {}
    for paragraph in text.split("\n\n"):
        fields = dict(
            line.split(": ", 1)
            for line in paragraph.splitlines()
            if ": " in line and not line.startswith(" ")
        )
        name = fields.get("Package")
        if name in wanted:
            arch = fields.get("Architecture", "")
            found[f"{name}:{arch}"] = f"{fields.get('Status', '')} {fields.get('Version', '')}"
    return found


def fingerprint(spec):
    """The fingerprint of one output spec [kind, path, excludes] as it is now (for kind packages, the
    excludes are the package names)."""
    kind, path, excludes = spec
    if kind == "account":
        return _account(path)
    if kind == "packages":
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                return digest(dpkg_packages(handle.read(), excludes))
        except FileNotFoundError:
            return "absent"
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return "absent"
    if kind == "owner":
        return f"{st.st_mode:o} {st.st_uid} {st.st_gid}"
    if kind == "tree" and stat.S_ISDIR(st.st_mode):
        sha = hashlib.sha256(_tree_line(path, st))
        _tree(path, excludes, sha)
    else:
        sha = hashlib.sha256(_line(path, st))
    return sha.hexdigest()


def stamp(planned):
    """The record's stamp of one role that just ran in full: its inputs and its outputs' fingerprints now."""
    return {
        "inputs": dict(planned["inputs"]),
        "outputs": [[spec, fingerprint(spec)] for spec in planned["outputs"]],
    }


def why_not(planned, recorded):
    """None when the role may skip its work, else a short reason (for the run's output)."""
    if planned is None:
        return "no usable plan"
    if not recorded:
        return "no record of an earlier full run"
    if recorded.get("inputs") != planned["inputs"]:
        changed = sorted(
            k for k, v in planned["inputs"].items() if (recorded.get("inputs") or {}).get(k) != v
        )
        return "its inputs changed: " + ", ".join(changed)
    kept = recorded.get("outputs") or []
    if [spec for spec, _ in kept] != planned["outputs"]:
        return "its outputs are other paths now"
    for spec, was in kept:
        if fingerprint(spec) != was:
            return f"{spec[1]} changed"
    return None


def fast_roles(planned_roles, stamps, deep=False):
    """({role: None} for the roles that may skip their work, {role: reason} for the others)."""
    reasons = {}
    for role in ROLES:
        if role not in planned_roles:
            continue
        if deep:
            reasons[role] = "DEEP=1"
        else:
            reasons[role] = why_not(planned_roles[role], (stamps or {}).get(role))
    # Until nothing changes: a feeder made to run may feed another (comfyui -> webui -> python).
    fed_one = True
    while fed_one:
        fed_one = False
        for feeder, fed in FEEDS.items():
            if feeder in reasons and reasons[feeder] is None and any(reasons.get(f) for f in fed):
                reasons[feeder] = "it feeds " + ", ".join(f for f in fed if reasons.get(f))
                fed_one = True
    # The known-good snapshot records what the roles made: it is taken again whenever any of them ran.
    if "known_good" in reasons and reasons["known_good"] is None:
        ran = [r for r, why in reasons.items() if why and r != "known_good"]
        if ran:
            reasons["known_good"] = "roles ran: " + ", ".join(ran)
    fast = sorted(r for r, why in reasons.items() if why is None)
    return fast, {r: why for r, why in reasons.items() if why}
