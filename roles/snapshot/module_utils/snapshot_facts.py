"""The facts a snapshot manifest records, their diff, and whether the WebUI is running from a tree.

Facts are gathered as the user who owns the environment (git refuses a root caller on another user's
repository, brew refuses root). The snapshot and rollback runs of `env_snapshot` gather them themselves:
the module runs as root, and every command it starts for the facts runs as the owner (its uid, gid and
groups, the environment `sudo -u` gives), so one module run does what a become_user task plus the
snapshot did in two. A fact that cannot be gathered is null, with the reason under "absent".
"""

from __future__ import annotations

import json
import os
import pwd
import re
import stat
import subprocess
import sys

try:
    from ansible.module_utils.sdenv_atomic import open_nofollow
except ImportError:  # unit tests import module_utils directly
    from sdenv_atomic import open_nofollow

# The WebUI's launchers, and ComfyUI's main.py (make run APP=comfyui starts <ComfyUI>/main.py): only a launcher
# whose path lies inside the tree asked about counts.
LAUNCHERS = ("launch.py", "webui.sh", "webui.py", "main.py")
# The PATH sudo's secure_path gives a become_user task (Debian's and macOS's default), so the owner's
# commands resolve as they did when the facts were a become_user task of their own.
SECURE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# The marker a venv built from a lock carries: webui_venv_plan.MARKER, not imported, which would bring urllib
# and the package index into every snapshot's module run (a unit test keeps the two names equal). At most
# this much of it is read: it is a few hundred bytes.
VENV_MARKER = ".sdenv-venv.json"
MARKER_MAX_BYTES = 65536
# What diff_facts says for a fact a manifest has no key for (taken before the fact was recorded).
NOT_RECORDED = "not recorded"


def account(name: str) -> dict | None:
    """The account the facts are read as ({name, uid, gid, groups, home}), or None when there is none."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    groups = os.getgrouplist(name, entry.pw_gid)
    limit = os.sysconf("SC_NGROUPS_MAX") if "SC_NGROUPS_MAX" in os.sysconf_names else len(groups)
    return {
        "name": name,
        "uid": entry.pw_uid,
        "gid": entry.pw_gid,
        "groups": groups[: max(limit, 1)],  # macOS caps setgroups at 16
        "home": entry.pw_dir,
    }


def as_user_args(owner: dict | None, environ=None, euid: int | None = None) -> dict:
    """subprocess.run arguments that run a command as `owner` with the environment `sudo -u` gives (HOME,
    USER, LOGNAME, secure PATH, the locale), in its home; {} when no owner is given or this process is the
    owner already. A caller that is neither root nor the owner cannot switch: ValueError names both."""
    if owner is None:
        return {}
    environ = os.environ if environ is None else environ
    euid = os.geteuid() if euid is None else euid
    env = {"HOME": owner["home"], "USER": owner["name"], "LOGNAME": owner["name"], "PATH": SECURE_PATH}
    env.update({k: v for k, v in environ.items() if k in ("LANG", "LC_ALL", "LC_CTYPE")})
    cwd = owner["home"] if os.path.isdir(owner["home"]) else "/"
    if euid == owner["uid"]:
        return {"env": env, "cwd": cwd}
    if euid != 0:
        raise ValueError(
            f"uid {euid} cannot run commands as {owner['name']} (uid {owner['uid']}): run as root"
        )
    return {
        "env": env,
        "cwd": cwd,
        "user": owner["uid"],
        "group": owner["gid"],
        "extra_groups": owner["groups"],
    }


def _run(
    argv: list[str], cwd: str | None = None, timeout: int = 120, owner: dict | None = None
) -> tuple[int, str, str]:
    try:
        extra = as_user_args(owner)
    except ValueError as e:
        return 126, "", str(e)
    if cwd is not None:
        extra["cwd"] = cwd
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, **extra)
    except FileNotFoundError:
        return 127, "", f"{argv[0]} not found"
    except subprocess.TimeoutExpired:
        return 124, "", f"{' '.join(argv)} timed out after {timeout} s"
    except OSError as e:  # switching to the owner failed (setgroups, setuid)
        return 126, "", f"{argv[0]} could not run as {owner['name'] if owner else 'this user'}: {e.strerror}"
    return p.returncode, p.stdout, p.stderr.strip()


def git_state(path: str, owner: dict | None = None) -> tuple[dict | None, str | None]:
    """({"commit", "dirty", "changes"} or None, reason when absent)."""
    if not os.path.isdir(os.path.join(path, ".git")) and not os.path.isfile(os.path.join(path, ".git")):
        return None, f"{path} is not a git checkout"
    rc, out, err = _run(["git", "-C", path, "rev-parse", "HEAD"], owner=owner)
    if rc != 0:
        return None, f"git rev-parse failed in {path}: {err}"
    commit = out.strip()
    # --no-optional-locks: a snapshot only reads; git status would otherwise take the index lock to refresh
    # it, and the .git directory's changed mtime would make the next provision run the webui role in full.
    rc, out, err = _run(
        ["git", "--no-optional-locks", "-C", path, "status", "--porcelain", "--untracked-files=no"],
        owner=owner,
    )
    if rc != 0:
        return None, f"git status failed in {path}: {err}"
    changes = [ln for ln in out.splitlines() if ln.strip()]
    return {"commit": commit, "dirty": bool(changes), "changes": len(changes)}, None


def parse_pip_freeze(text: str) -> dict:
    """'name==version' lines (and 'name @ url') -> {normalized name: version or url}."""
    out = {}
    for ln in text.splitlines():
        ln = ln.strip()
        if not ln or ln.startswith("#"):
            continue
        if "==" in ln:
            name, _, ver = ln.partition("==")
        elif " @ " in ln:
            name, _, ver = ln.partition(" @ ")
        else:
            name, ver = ln, ""
        out[re.sub(r"[-_.]+", "-", name.strip()).lower()] = ver.strip()
    return out


def parse_brew_versions(text: str) -> dict:
    """`brew list --versions` ('name v1 v2') -> {name: 'v1 v2'}."""
    out = {}
    for ln in text.splitlines():
        parts = ln.split()
        if parts:
            out[parts[0]] = " ".join(parts[1:])
    return out


def venv_lock_sha256(venv_dir: str) -> tuple[str | None, str | None]:
    """(the sha256 of the lock file the venv was built from, as its marker records it, or None; why not).

    The marker lies in a tree the dummy owns and this runs as root: it is opened without following a link the
    dummy could have made anywhere on its path (the venv, the app tree), only as a regular file, and only a
    64-hex value is taken from it, so a link or a fifo the dummy put there reads as "no marker", never as
    another file's contents."""
    path = os.path.join(venv_dir, VENV_MARKER)
    try:
        fd = open_nofollow(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:  # LinkRefused too
        return None, f"no venv marker at {path} ({e.strerror})"
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None, f"the venv marker {path} is not a regular file"
        data = json.loads(os.read(fd, MARKER_MAX_BYTES).decode("utf-8"))
    except (OSError, ValueError) as e:
        return None, f"the venv marker {path} cannot be read: {e}"
    finally:
        os.close(fd)
    value = ((data.get("inputs") if isinstance(data, dict) else None) or {}).get("lock_sha256")
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-f]{64}", value):
        return None, f"the venv marker {path} records no lock sha256"
    return value, None


def gather(
    webui_dir: str,
    venv_dir: str | None = None,
    brew: str | None = None,
    owner: dict | None = None,
    comfyui_dir: str | None = None,
    comfyui_venv_dir: str | None = None,
) -> dict:
    """Everything the manifest records that can be found on this host; null + reason for the rest. With
    `owner` (account()), every command runs as that account. With `comfyui_dir` (ComfyUI is chosen), ComfyUI's
    commit and the sha256 of the lock its venv was built from too; without it the two keys are left out, as
    in a manifest from before they were recorded (diff_facts says "not recorded")."""
    facts: dict = {"absent": {}}
    absent = facts["absent"]
    facts["webui"], why = git_state(webui_dir, owner)
    if why:
        absent["webui"] = why
    if comfyui_dir:
        facts["comfyui"], why = git_state(comfyui_dir, owner)
        if why:
            absent["comfyui"] = why
        facts["comfyui_venv_lock"], why = venv_lock_sha256(
            comfyui_venv_dir or os.path.join(comfyui_dir, "venv")
        )
        if why:
            absent["comfyui_venv_lock"] = why
    repos = {}
    rdir = os.path.join(webui_dir, "repositories")
    for name in sorted(os.listdir(rdir)) if os.path.isdir(rdir) else []:
        state, why = git_state(os.path.join(rdir, name), owner)
        repos[name] = state
        if why:
            absent[f"repositories/{name}"] = why
    facts["repositories"] = repos
    venv = venv_dir or os.path.join(webui_dir, "venv")
    py = os.path.join(venv, "bin", "python")
    if os.path.exists(py):
        rc, out, err = _run([py, "-VV"], owner=owner)
        facts["python"] = out.strip() if rc == 0 else None
        if rc != 0:
            absent["python"] = f"{py} -VV failed: {err}"
        rc, out, err = _run([py, "-m", "pip", "freeze", "--all"], timeout=300, owner=owner)
        facts["pip_freeze"] = parse_pip_freeze(out) if rc == 0 else None
        if rc != 0:
            absent["pip_freeze"] = f"pip freeze failed: {err[:200]}"
    else:
        facts["python"] = facts["pip_freeze"] = None
        absent["python"] = absent["pip_freeze"] = f"no venv at {venv}"
    if brew and os.path.exists(brew):
        rc, out, err = _run([brew, "list", "--versions"], owner=owner)
        facts["brew"] = parse_brew_versions(out) if rc == 0 else None
        if rc != 0:
            absent["brew"] = f"brew list failed: {err[:200]}"
    else:
        facts["brew"] = None
        absent["brew"] = "Homebrew is not installed by the toolkit on this host"
    return facts


def _changes(a: dict | None, b: dict | None, what: str) -> list[str]:
    a, b = a or {}, b or {}
    out = []
    for k in sorted(set(a) | set(b)):
        if k not in a:
            out.append(f"{what}: + {k} {b[k]}".rstrip())
        elif k not in b:
            out.append(f"{what}: - {k} {a[k]}".rstrip())
        elif a[k] != b[k]:
            out.append(f"{what}: {k} {a[k]} -> {b[k]}")
    return out


def _git_line(v) -> str:
    if not v:
        return "absent"
    return v["commit"][:12] + (" (dirty)" if v.get("dirty") else "")


def _digest_line(v) -> str:
    return v[:12] if isinstance(v, str) and v else "absent"


def diff_facts(old: dict, new: dict) -> list[str]:
    """Human lines for what differs between two manifests' facts, from old to new."""
    old, new = old or {}, new or {}
    out = []
    if _git_line(old.get("webui")) != _git_line(new.get("webui")):
        out.append(f"webui: {_git_line(old.get('webui'))} -> {_git_line(new.get('webui'))}")
    # ComfyUI's facts exist where it is chosen, in manifests from after they were recorded: an older one (or
    # one taken without ComfyUI) says "not recorded" rather than "absent", which would claim there was no tree.
    for key, line in (("comfyui", _git_line), ("comfyui_venv_lock", _digest_line)):
        if key in old or key in new:
            a = line(old[key]) if key in old else NOT_RECORDED
            b = line(new[key]) if key in new else NOT_RECORDED
            if a != b:
                out.append(f"{key.replace('_', ' ')}: {a} -> {b}")
    ra, rb = old.get("repositories") or {}, new.get("repositories") or {}
    for name in sorted(set(ra) | set(rb)):
        if _git_line(ra.get(name)) != _git_line(rb.get(name)):
            out.append(f"repositories/{name}: {_git_line(ra.get(name))} -> {_git_line(rb.get(name))}")
    for key in ("python", "lock_digest"):
        if old.get(key) != new.get(key):
            out.append(f"{key}: {old.get(key)} -> {new.get(key)}")
    out += _changes(old.get("pip_freeze"), new.get("pip_freeze"), "pip")
    out += _changes(old.get("brew"), new.get("brew"), "brew")
    ma = {k: v[:12] for k, v in (old.get("models") or {}).items()}
    mb = {k: v[:12] for k, v in (new.get("models") or {}).items()}
    out += _changes(ma, mb, "model")
    return out


# ---------------------------------------------------------------------------------------------------------
# Is the WebUI running from this tree?


def _launcher_hits(argv: list[str], cwd: str, webui_dir: str) -> bool:
    root = os.path.normpath(webui_dir)
    for arg in argv:
        if os.path.basename(arg) in LAUNCHERS:
            path = os.path.normpath(os.path.join(cwd or "/", arg))
            if path.startswith(root + "/"):
                return True
    return False


def running_webui_linux(webui_dir: str, proc: str = "/proc") -> list[dict]:
    found = []
    for pid in os.listdir(proc):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open(os.path.join(proc, pid, "cmdline"), "rb") as f:
                argv = [os.fsdecode(a) for a in f.read().split(b"\0") if a]
            if not any(os.path.basename(a) in LAUNCHERS for a in argv):
                continue
            cwd = os.readlink(os.path.join(proc, pid, "cwd"))
        except OSError:
            continue
        if _launcher_hits(argv, cwd, webui_dir):
            found.append({"pid": int(pid), "command": " ".join(argv)[:200]})
    return found


def parse_ps(text: str) -> list[tuple[int, str]]:
    """`ps -axww -o pid=,command=` -> [(pid, command)]."""
    out = []
    for ln in text.splitlines():
        m = re.match(r"\s*(\d+)\s+(.*)$", ln)
        if m:
            out.append((int(m.group(1)), m.group(2)))
    return out


def parse_lsof_cwd(text: str) -> str:
    """`lsof -a -p PID -d cwd -Fn` -> the cwd path ('' when absent)."""
    for ln in text.splitlines():
        if ln.startswith("n"):
            return ln[1:]
    return ""


def running_webui_darwin(webui_dir: str) -> list[dict]:
    # macOS has no /proc: ps gives the command lines (split on spaces, as ps prints them), lsof the cwd.
    rc, out, _ = _run(["ps", "-axww", "-o", "pid=,command="])
    found = []
    for pid, command in parse_ps(out) if rc == 0 else []:
        argv = command.split()
        if pid == os.getpid() or not any(os.path.basename(a) in LAUNCHERS for a in argv):
            continue
        _, lout, _ = _run(["lsof", "-a", "-p", str(pid), "-d", "cwd", "-Fn"])
        if _launcher_hits(argv, parse_lsof_cwd(lout), webui_dir):
            found.append({"pid": pid, "command": command[:200]})
    return found


def running_webui(webui_dir: str) -> list[dict]:
    if not webui_dir:
        return []
    if sys.platform == "darwin":
        return running_webui_darwin(webui_dir)
    return running_webui_linux(webui_dir)


def homebrew_roots(record_path: str | None, user: str | None) -> list[str]:
    """The Homebrew prefix, when the provision record says the toolkit created it (else nothing).

    Homebrew cannot install old versions, so a prefix the toolkit installed is captured at file level; a
    Homebrew the user had before is theirs and is left out.
    """
    if not record_path or not user or not os.path.exists(record_path):
        return []
    try:
        with open(record_path, encoding="utf-8") as f:
            entry = json.load(f).get("users", {}).get(user) or {}
    except (OSError, ValueError):
        return []
    created = [p for p in entry.get("created_paths", []) if isinstance(p, str)]
    prefix = ((entry.get("components") or {}).get("homebrew") or {}).get("prefix")
    if prefix in created:
        return [prefix]
    # Intel Macs: the toolkit creates Homebrew's own directories under /usr/local, not the prefix itself.
    return [p for p in created if prefix and p.startswith(prefix.rstrip("/") + "/")]
