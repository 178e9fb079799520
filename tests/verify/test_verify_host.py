"""The static checks of `make verify`: everything provision put in place, per host, one row each.

Each check reads the settings and lock as Ansible resolved them for the host (target.vars) and looks at the
host through testinfra. Anything the dummy owns or runs (brew, git in its clone, the venv) is queried as the
dummy, never as root.
"""

import json
import shlex

import model_pending
import pytest
import sdenv_messages as say
import venv_lock
from verify_lib import AccountAbsent, NotProvisionedError, check, expect, quote

# Where huggingface_hub keeps openai/clip-vit-large-patch14 under HF_HOME (the lock pins revision and files).
CLIP_REPO_DIR = "hub/models--openai--clip-vit-large-patch14"
# Files the toolkit writes over tracked files of the WebUI clone: not local changes (role webui's rule).
WEBUI_MANAGED_FILES = {"webui-user.sh"}
# The venv lives in the WebUI tree and is built with the recorded Python: either missing explains its rows.
VENV_NEEDS = ["webui_commit", "python"]

# Run on the host with the Python Ansible uses there: stat + (optionally) sha256 of files, as JSON.
HASH_SCRIPT = r"""
import hashlib, json, os, sys
out = {}
for path in sys.argv[2:]:
    try:
        st = os.stat(path)
    except OSError as exc:
        out[path] = {"error": str(exc)}
        continue
    entry = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino, "dev": st.st_dev}
    if sys.argv[1] == "hash":
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        entry["sha256"] = digest.hexdigest()
    out[path] = entry
print(json.dumps(out))
"""


def host_python(target, script, *args):
    out = target.run(quote(target.facts["python"], "-c", script, *args))
    expect(out.rc == 0, f"the host's Python ({target.facts['python']}) failed: {out.stderr.strip()[-300:]}")
    return json.loads(out.stdout)


def stat_files(target, paths, hash_them):
    return host_python(target, HASH_SCRIPT, "hash" if hash_them else "stat", *paths)


def read_json(target, path, what):
    # As the dummy: the file is in its tree, and root reading a link it put there would show root's file.
    out = target.run_as_user("cat %s", path)
    expect(out.rc == 0, f"{what} {path} is missing ({out.stderr.strip()})")
    try:
        return json.loads(out.stdout)
    except ValueError as exc:
        raise AssertionError(f"{what} {path} is not valid JSON ({exc})") from exc


# --- The dummy account ----------------------------------------------------------------------------------


def absent_account(target, item, tool):
    """The account is gone: ABSENT when nothing of it is left (never provisioned, or make remove-dummy), a
    failure naming the leftover otherwise."""
    home = target.vars["sdenv_user_home"]
    entry, where = target.record_entry()
    expect(
        entry is None,
        f"the dummy user {item} does not exist ({tool} finds no such account), but the provision record {where}"
        " still has an entry for it (deleted by hand, or a deletion was interrupted): run make remove-dummy to"
        " finish removing it, or make provision to bring it back",
    )
    expect(
        not target.host.file(home).exists,
        f"the dummy user {item} does not exist ({tool} finds no such account), but its home {home} is still"
        " there: run make remove-dummy to finish removing it, or make provision to bring it back",
    )
    raise AccountAbsent(
        f"no account {item} on this host ({tool}), no home {home}, no entry in the provision record: not"
        " provisioned here, or removed with make remove-dummy; make provision sets it up"
    )


@check("dummy user {item} exists, home and shell", items=lambda t: [t.user], needs_account=False)
def test_user(target, item, note):
    found = target.account()
    tool = "dscl" if target.darwin else "getent"
    if found is None:
        absent_account(target, item, tool)
    home, shell = target.vars["sdenv_user_home"], target.vars["sdenv_user_shell"]
    expect(found["home"] == home, f"{item}'s home is {found['home']}, settings say {home}")
    expect(found["shell"] == shell, f"{item}'s shell is {found['shell']}, settings say {shell}")
    expect(target.host.file(home).is_directory, f"{item}'s home {home} does not exist")
    owner = target.host.file(home).user
    expect(owner == item, f"{item}'s home {home} belongs to {owner}, not {item}")
    note(f"uid {found['uid']}, home {home}, shell {shell} ({tool})")


@check("dummy user {item} is an admin (sudo)", items=lambda t: [t.user], depends=["user"])
def test_admin(target, item, note):
    if target.darwin:
        out = target.run("dseditgroup -o checkmember -m %s admin", item)
        expect(out.stdout.startswith("yes "), f"{item} is not a member of admin: {out.stdout.strip()}")
        note("member of admin (dseditgroup)")
        return
    groups = target.run("id -nG %s", item).stdout.split()
    admin = [g for g in ("sudo", "wheel", "admin") if g in groups]
    expect(admin, f"{item} is in none of sudo, wheel, admin (groups: {' '.join(groups)})")
    note(f"member of {admin[0]}")


# --- Homebrew / packages ------------------------------------------------------------------------------


def profile_lines(target):
    lines = target.var("sdenv_login_profile_lines", "role homebrew writes the login profile")
    return list(lines)


@check(
    "login profile line {item}",
    items=profile_lines,
    label=lambda item: item.split()[0][:20],
    depends=["user"],
)
def test_profile_line(target, item, note):
    path = target.var("sdenv_login_profile")
    out = target.run_as_user("cat %s", path)  # the dummy's file, read as the dummy (never through its links)
    expect(out.rc == 0, f"{path} is missing: the shellenv line {item!r} is not there")
    count = sum(1 for line in out.stdout.splitlines() if line.strip() == item)
    expect(count == 1, f"{path} has the line {item!r} {count} times (wanted exactly once)")
    note(f"once in {path}")


@check("brew present", items=lambda t: [t.var("sdenv_homebrew_brew")] if t.darwin else [], depends=["user"])
def test_brew(target, item, note):
    out = target.run_as_user(f"{shlex.quote(item)} --version")
    expect(out.rc == 0, f"{item} --version failed as {target.user}: {out.stderr.strip()[-200:]}")
    note(out.stdout.splitlines()[0])


@check(
    "formula {item}", items=lambda t: t.var("sdenv_homebrew_formulae") if t.darwin else [], depends=["brew"]
)
def test_formula(target, item, note):
    brew = target.var("sdenv_homebrew_brew")
    out = target.run_as_user(f"{shlex.quote(brew)} list --versions {shlex.quote(item)}")
    expect(
        out.rc == 0 and out.stdout.strip(),
        f"the formula {item} is not installed (brew list, as {target.user})",
    )
    note(out.stdout.strip())


# System packages are shared by every account: checked whether or not the dummy is there.
@check(
    "package {item}", items=lambda t: [] if t.darwin else t.var("sdenv_linux_packages"), needs_account=False
)
def test_linux_package(target, item, note):
    out = target.run("dpkg-query -W -f='${Status} ${Version}' %s", item)
    expect(
        out.rc == 0 and out.stdout.startswith("install ok installed"),
        f"the package {item} is not installed ({out.stdout.strip() or out.stderr.strip()})",
    )
    note(out.stdout.split()[-1])


# --- Python -------------------------------------------------------------------------------------------


@check("python runs at the chosen version", depends=["record"])
def test_python(target, item, note):
    python = target.component("python")
    path, version = python.get("path"), python.get("version")
    expect(path and version, f"the provision record's python component has no path/version: {python}")
    out = target.run_as_user(f"{shlex.quote(path)} -c 'import platform; print(platform.python_version())'")
    expect(out.rc == 0, f"{path} does not run as {target.user}: {out.stderr.strip()[-200:]}")
    actual = out.stdout.strip()
    expect(actual == version, f"{path} is Python {actual}, the record says {version}")
    low, high = target.vars.get("sdenv_python_minimum"), target.vars.get("sdenv_python_below")
    if low and high:
        as_tuple = tuple(int(x) for x in actual.split(".")[:2])
        expect(
            tuple(int(x) for x in low.split(".")) <= as_tuple < tuple(int(x) for x in high.split(".")),
            f"{path} is Python {actual}: the WebUI needs >= {low} and < {high}",
        )
    note(f"{path}: {actual}")


# --- The WebUI tree -------------------------------------------------------------------------------------


def git_as_user(target, directory, *args):
    # --no-optional-locks: a static check writes nothing, not even the index refresh git status would take
    # its lock for (the lock file comes and goes, and the .git directory's mtime with it: provision's fast
    # path would then see the tree as changed and run the webui role in full).
    return target.run_as_user(quote("git", "--no-optional-locks", "-C", directory, *args))


def porcelain_paths(text):
    import webui_git_tree  # plugins/module_utils: the role's own rule for what counts as a change

    return webui_git_tree.parse_porcelain(text)


def tree_state(target, directory, commit, managed=()):
    head = git_as_user(target, directory, "rev-parse", "HEAD")
    expect(head.rc == 0, f"{directory} is not a git clone ({head.stderr.strip()[-200:]})")
    actual = head.stdout.strip()
    expect(actual == commit, f"{directory} is at {actual[:12]}, the lock pins {commit[:12]}")
    status = git_as_user(target, directory, "status", "--porcelain=v1", "-z", "--untracked-files=no")
    expect(status.rc == 0, f"git status failed in {directory}: {status.stderr.strip()[-200:]}")
    changed = [p for p in porcelain_paths(status.stdout) if p not in set(managed)]
    expect(not changed, f"{directory} has local changes: {', '.join(changed[:5])}")
    return actual


@check("WebUI at the pinned commit, clean tree", depends=["user"])
def test_webui_commit(target, item, note):
    pin = target.lock("webui")
    directory = target.vars["sdenv_webui_dir"]
    commit = tree_state(target, directory, pin["commit"], WEBUI_MANAGED_FILES)
    note(f"{directory} at {commit[:12]} ({pin.get('version', '')}), no local changes")


@check("repositories/{item} at its pin", items=lambda t: t.lock("repositories"), depends=["webui_commit"])
def test_repository(target, item, note):
    directory = f"{target.vars['sdenv_webui_dir']}/repositories/{item['dir']}"
    tree_state(target, directory, item["commit"])
    note(f"at {item['commit'][:12]}")


def user_env_lines(target):
    if target.vars.get("sdenv_webui_commandline_args") is None:
        raise NotProvisionedError("role webui's sdenv_webui_commandline_args is not defined")
    return ["COMMANDLINE_ARGS"] + [
        f"{repo['env']}_{suffix}"
        for repo in target.lock("repositories")
        for suffix in ("REPO", "COMMIT_HASH")
    ]


def expected_user_env(target, name):
    if name == "COMMANDLINE_ARGS":
        return [str(a) for a in target.vars["sdenv_webui_commandline_args"]]
    for repo in target.lock("repositories"):
        if name == f"{repo['env']}_REPO":
            return repo["repo"]
        if name == f"{repo['env']}_COMMIT_HASH":
            return repo["commit"]
    raise KeyError(name)


def sourced_user_env(target):
    def read():
        path = f"{target.vars['sdenv_webui_dir']}/webui-user.sh"
        names = user_env_lines(target)
        # Sourced as the dummy in a clean bash (as webui.sh does), then each variable printed as JSON.
        script = f"set -e; . {shlex.quote(path)}; " + " ".join(
            f'printf "%s\\0" "${{{n}-__unset__}}";' for n in names
        )
        out = target.run_as_user(f"bash -c {shlex.quote(script)}")
        if out.rc != 0:
            return None, f"sourcing {path} failed: {out.stderr.strip()[-200:]}"
        return dict(zip(names, out.stdout.split("\0"))), path

    return target.cached("webui-user", read)


@check("webui-user.sh {item}", items=user_env_lines, depends=["webui_commit"])
def test_webui_user(target, item, note):
    values, path = sourced_user_env(target)
    expect(values is not None, path)
    value, wanted = values.get(item), expected_user_env(target, item)
    expect(value != "__unset__", f"{path} does not set {item}")
    if isinstance(wanted, list):
        expect(shlex.split(value) == wanted, f"{path}: {item} is {value!r}, wanted {' '.join(wanted)!r}")
    else:
        expect(value == wanted, f"{path}: {item} is {value!r}, wanted {wanted!r}")
    note(value)


def json_items(name):
    def items(target):
        values = target.vars.get(name)
        if values is None:
            raise NotProvisionedError(f"role webui's {name} is not defined")
        return sorted(values)

    return items


def check_json_value(target, file_name, values_var, key, note):
    path = f"{target.vars['sdenv_webui_dir']}/{file_name}"
    doc = target.cached(path, lambda: read_json(target, path, file_name))
    wanted = target.vars[values_var][key]
    expect(key in doc, f"{file_name} has no {key!r} (wanted {wanted!r})")
    got = doc[key]
    same = (
        str(got) == str(wanted)
        if isinstance(got, (int, float)) or isinstance(wanted, (int, float))
        else got == wanted
    )
    expect(same, f"{file_name}: {key} is {got!r}, settings say {wanted!r}")
    note(repr(got))


@check("config.json {item}", items=json_items("sdenv_webui_config_values"), depends=["webui_commit"])
def test_config_json(target, item, note):
    check_json_value(target, "config.json", "sdenv_webui_config_values", item, note)


@check("ui-config.json {item}", items=json_items("sdenv_webui_ui_config_values"), depends=["webui_commit"])
def test_ui_config_json(target, item, note):
    check_json_value(target, "ui-config.json", "sdenv_webui_ui_config_values", item, note)


# --- Models ---------------------------------------------------------------------------------------------


def model_path(target, model):
    kind_dirs = target.var("sdenv_models_kind_dirs")
    return f"{kind_dirs[model.get('kind', 'checkpoint')]}/{model['file']}"


def enabled_models(target):
    models = target.lock("models")
    enabled = target.vars.get("sdenv_models_enabled")
    return [m for m in models if enabled is None or m["name"] in enabled]


@check("model {item}", items=enabled_models, depends=["user"])
def test_model(target, item, note):
    path = model_path(target, item)
    if model_pending.is_pending(item):
        # One row, not a failure: the file is the user's to fetch (STRICT=1 refused it in the preflight).
        found = model_pending.pending([item], [item["name"]], target.vars.get("sdenv_models_bundle_dirs"))[0]
        pytest.skip(say.pending_verify(found["name"], found["file"], found["source"], found["bundle_dir"]))
    sha256 = (item.get("sha256") or "").lower()
    expect(len(sha256) == 64, f"the lock pins no sha256 for the model {item['name']}: run the pin step first")
    deep = target.options.deep
    found = stat_files(target, [path], hash_them=deep)[path]
    expect("error" not in found, f"the model {item['name']} is missing: {path} ({found.get('error')})")
    if item.get("size") is not None:
        expect(
            found["size"] == int(item["size"]),
            f"{path} is {found['size']} bytes, the lock pins {item['size']}",
        )
    how = "re-hashed (DEEP=1)"
    if not deep:
        cache_path = target.vars.get("sdenv_models_stat_cache")
        cache = {}
        if cache_path:
            out = target.run("cat %s", cache_path)
            cache = (json.loads(out.stdout).get("files") or {}) if out.rc == 0 else {}
        entry = cache.get(path) or {}
        same = all(entry.get(k) == found[k] for k in ("size", "mtime_ns", "ino", "dev"))
        if same and entry.get("sha256") == sha256:
            how = "stat cache (size, mtime, inode unchanged since it was hashed)"
        else:
            found = stat_files(target, [path], hash_them=True)[path]
            how = "re-hashed (the stat cache does not vouch for it)"
    if "sha256" in found:
        expect(
            found["sha256"] == sha256,
            f"the model {item['name']} ({path}) has sha256 {found['sha256']}, the lock pins {sha256}",
        )
    note(f"{path}: {found['size']} bytes, sha256 {sha256[:12]}..., {how}")


# --- Venv and offline caches ----------------------------------------------------------------------------


@check("venv has the pinned torch", depends=VENV_NEEDS)
def test_venv_torch(target, item, note):
    torch = target.vars.get("sdenv_webui_torch")
    if torch is None:
        raise NotProvisionedError("role webui's sdenv_webui_torch is not defined")
    expect(torch, f"lock.yml pins no torch for {target.vars.get('sdenv_webui_platform')}")
    python = f"{target.var('sdenv_webui_venv_dir')}/bin/python"
    out = target.run_as_user(
        quote(
            python,
            "-c",
            "import importlib.metadata as m; print(m.version('torch'), m.version('torchvision'))",
        )
    )
    expect(out.rc == 0, f"the venv {python} has no torch/torchvision: {out.stderr.strip()[-200:]}")
    versions = out.stdout.split()
    for name, got in zip(("torch", "torchvision"), versions):
        wanted = str(torch.get(name, ""))
        expect(
            not wanted or got.split("+")[0] == wanted.split("+")[0],
            f"the venv has {name} {got}, the lock pins {wanted}",
        )
    note(f"torch {versions[0]}, torchvision {versions[1]} in {python}")


# The venv's Python version and every installed distribution, as JSON (run with the venv's Python).
VENV_SET_SCRIPT = r"""
import importlib.metadata as m, json, sys
print(json.dumps({"python": "%d.%d" % sys.version_info[:2],
                  "dists": {d.metadata["Name"]: d.version for d in m.distributions()}}))
"""


@check("venv holds exactly the locked set", depends=VENV_NEEDS)
def test_venv_matches_lock(target, item, note):
    lock_dir = target.vars.get("sdenv_webui_host_lock_dir")
    if lock_dir is None or not target.vars.get("sdenv_webui_venv_bootstrap", True):
        raise NotProvisionedError("role webui builds no venv here (sdenv_webui_venv_bootstrap)")
    python = f"{target.var('sdenv_webui_venv_dir')}/bin/python"
    out = target.run_as_user(quote(python, "-B", "-c", VENV_SET_SCRIPT))
    expect(out.rc == 0, f"the venv's Python {python} does not run: {out.stderr.strip()[-200:]}")
    found = json.loads(out.stdout)
    name = venv_lock.lock_file_name(target.vars.get("sdenv_webui_platform"), found["python"])
    text = target.run("cat %s", f"{lock_dir}/{name}")
    expect(text.rc == 0, f"the host has no venv lock {lock_dir}/{name}: provision again")
    wanted = {key: p["version"] for key, p in venv_lock.parse_packages(text.stdout).items()}
    installed = {venv_lock.normalize(n): v for n, v in found["dists"].items()}
    extra = sorted(set(installed) - set(wanted) - set(venv_lock.ARCHIVE_PACKAGES))
    missing = sorted(set(wanted) - set(installed))
    other = sorted(
        f"{k} {installed[k]} (lock {v})" for k, v in wanted.items() if k in installed and installed[k] != v
    )
    absent_archives = sorted(set(venv_lock.ARCHIVE_PACKAGES) - set(installed))
    expect(not missing, f"the venv lacks locked packages: {', '.join(missing[:8])}")
    expect(not other, f"the venv has other versions than the lock: {', '.join(other[:8])}")
    expect(not extra, f"the venv has packages the lock does not list: {', '.join(extra[:8])}")
    expect(
        not absent_archives,
        f"the venv lacks {', '.join(absent_archives)} (installed from its pinned archive)",
    )
    note(
        f"{len(wanted)} locked packages + {', '.join(sorted(venv_lock.ARCHIVE_PACKAGES))} from its archive, as {name}"
    )


@check("venv passes pip check", depends=VENV_NEEDS)
def test_venv_pip_check(target, item, note):
    if not target.vars.get("sdenv_webui_venv_bootstrap", True):
        raise NotProvisionedError("role webui builds no venv here (sdenv_webui_venv_bootstrap)")
    python = f"{target.var('sdenv_webui_venv_dir')}/bin/python"
    # -B: verify must not change the venv (pip, installed by uv without bytecode, would write its .pyc files).
    out = target.run_as_user(quote(python, "-B", "-m", "pip", "check", "--disable-pip-version-check"))
    expect(out.rc == 0, f"pip check in {python}: {(out.stdout or out.stderr).strip()[-300:]}")
    note(out.stdout.strip() or "pip check: no broken requirements")


# --- ComfyUI (role comfyui), when settings.yml sdenv_apps names it ----------------------------------------


def comfyui_chosen(target):
    """One row when the host's sdenv_apps names comfyui, none otherwise (the WebUI alone is the default)."""
    return ["ComfyUI"] if "comfyui" in (target.vars.get("sdenv_apps") or []) else []


@check("{item} at the pinned commit, clean tree", items=comfyui_chosen, depends=["user"])
def test_comfyui_commit(target, item, note):
    pin = target.lock("comfyui")
    directory = target.var("sdenv_comfyui_dir")
    commit = tree_state(target, directory, pin["commit"])
    note(f"{directory} at {commit[:12]} ({pin.get('version', '')}), no local changes")


@check("{item} venv holds exactly its locked set", items=comfyui_chosen, depends=["comfyui_commit"])
def test_comfyui_venv_matches_lock(target, item, note):
    python = f"{target.var('sdenv_comfyui_venv_dir')}/bin/python"
    out = target.run_as_user(quote(python, "-B", "-c", VENV_SET_SCRIPT))
    expect(out.rc == 0, f"ComfyUI's venv Python {python} does not run: {out.stderr.strip()[-200:]}")
    found = json.loads(out.stdout)
    name = venv_lock.lock_file_name(target.vars.get("sdenv_webui_platform"), found["python"])
    lock_dir = target.var("sdenv_comfyui_host_lock_dir")
    text = target.run("cat %s", f"{lock_dir}/{name}")
    expect(text.rc == 0, f"the host has no ComfyUI venv lock {lock_dir}/{name}: provision again")
    wanted = {key: p["version"] for key, p in venv_lock.parse_packages(text.stdout).items()}
    installed = {venv_lock.normalize(n): v for n, v in found["dists"].items()}
    differ = sorted(
        f"{k} {installed.get(k, 'missing')} (lock {wanted.get(k, 'none')})"
        for k in set(wanted) | set(installed)
        if installed.get(k) != wanted.get(k)
    )
    expect(not differ, f"ComfyUI's venv is not its lock: {', '.join(differ[:8])}")
    note(f"{len(wanted)} locked packages, as comfyui/{name}")


@check("{item} venv passes pip check", items=comfyui_chosen, depends=["comfyui_commit"])
def test_comfyui_pip_check(target, item, note):
    python = f"{target.var('sdenv_comfyui_venv_dir')}/bin/python"
    out = target.run_as_user(quote(python, "-B", "-m", "pip", "check", "--disable-pip-version-check"))
    expect(out.rc == 0, f"pip check in {python}: {(out.stdout or out.stderr).strip()[-300:]}")
    note(out.stdout.strip() or "pip check: no broken requirements")


@check(
    "{item} extra_model_paths.yaml points at the model store",
    items=comfyui_chosen,
    depends=["comfyui_commit"],
)
def test_comfyui_model_paths(target, item, note):
    import comfyui_model_paths  # roles/comfyui/module_utils: the role's own reading of the file

    path = target.var("sdenv_comfyui_model_paths_file")
    out = target.run_as_user("cat %s", path)
    expect(out.rc == 0, f"{path} is missing ({out.stderr.strip()}): provision again")
    try:
        section = comfyui_model_paths.read_section(out.stdout, path)
    except comfyui_model_paths.ModelPathsError as exc:
        expect(False, str(exc))
    store, folders = target.var("sdenv_model_store"), target.var("sdenv_comfyui_model_folders")
    wanted = {"base_path": store, **folders}
    expect(section == wanted, f"{path} has the section {section}, expected {wanted}: provision again")
    note(f"sdenv: base_path {store} ({', '.join(sorted(folders))})")


def clip_pins(target):
    pinned = target.lock("clip_tokenizer")
    return pinned["revision"], dict(pinned["sha256"])


@check("Hugging Face CLIP tokenizer cache", depends=["user"])
def test_hf_cache(target, item, note):
    hf_home = target.var("sdenv_webui_hf_home", "role webui seeds the Hugging Face cache")
    revision, files = clip_pins(target)
    repo = f"{hf_home}/{CLIP_REPO_DIR}"
    ref = target.run("cat %s", f"{repo}/refs/main")
    expect(ref.rc == 0, f"the CLIP tokenizer cache is missing: no {repo}/refs/main")
    expect(ref.stdout.strip() == revision, f"{repo}/refs/main is {ref.stdout.strip()}, wanted {revision}")
    paths = {name: f"{repo}/snapshots/{revision}/{name}" for name in files}
    found = stat_files(target, list(paths.values()), hash_them=True)
    for name, path in paths.items():
        expect("error" not in found[path], f"the CLIP tokenizer file {path} is missing")
        expect(
            found[path]["sha256"] == files[name],
            f"{path} has sha256 {found[path]['sha256']}, pinned {files[name]}",
        )
    readable = target.run_as_user(quote("test", "-r", paths["vocab.json"]))
    expect(readable.rc == 0, f"{target.user} cannot read {paths['vocab.json']}")
    note(f"{len(files)} files at revision {revision[:12]} in {repo}")


# --- Record and snapshot --------------------------------------------------------------------------------


@check("provision record consistent", depends=["user"])
def test_record(target, item, note):
    entry, where = target.record_entry()
    expect(entry is not None, where)
    found = target.account()
    expect(
        str(entry.get("uid")) == str(found["uid"]),
        f"{where}: uid {entry.get('uid')}, the account has {found['uid']}",
    )
    expect(
        entry.get("home") == found["home"],
        f"{where}: home {entry.get('home')}, the account has {found['home']}",
    )
    components = entry.get("components") or {}
    webui = components.get("webui")
    if webui is not None:
        pin = target.lock("webui")["commit"]
        expect(
            webui.get("commit") == pin, f"{where}: webui commit {webui.get('commit')}, the lock pins {pin}"
        )
        expect(
            webui.get("path") in (None, target.vars["sdenv_webui_dir"]),
            f"{where}: webui path {webui.get('path')}, settings say {target.vars['sdenv_webui_dir']}",
        )
    python = components.get("python")
    if python is not None:
        expect(target.host.file(python["path"]).exists, f"{where}: python {python['path']} does not exist")
    for path in entry.get("created_paths") or []:
        expect(target.host.file(path).exists, f"{where} lists {path} as created, but it does not exist")
    note(f"{where}: uid {entry.get('uid')}, components {', '.join(sorted(components)) or 'none'}")


LIST_SNAPSHOTS = r"""
import glob, json, os, sys
out = []
for path in sorted(glob.glob(os.path.join(sys.argv[1], "snapshots", "*.json"))):
    try:
        with open(path) as handle:
            doc = json.load(handle)
        out.append({k: doc.get(k) for k in ("id", "time", "label", "kind", "pinned")})
    except (OSError, ValueError) as exc:
        out.append({"id": os.path.basename(path), "error": str(exc)})
print(json.dumps({"exists": os.path.isdir(sys.argv[1]), "snapshots": out}))
"""


@check("pinned known-good snapshot", depends=["user"])
def test_snapshot(target, item, note):
    store = target.var("sdenv_snapshot_store", "role snapshot keeps the snapshots")
    if target.vars.get("sdenv_snapshot_known_good") is False:
        raise NotProvisionedError("sdenv_snapshot_known_good is false in the settings")
    found = host_python(target, LIST_SNAPSHOTS, store)
    expect(found["exists"], f"the snapshot store {store} does not exist")
    good = [s for s in found["snapshots"] if s.get("kind") == "known-good" and s.get("pinned")]
    expect(good, f"no pinned known-good snapshot in {store} ({len(found['snapshots'])} snapshots)")
    note(f"{good[-1]['id']} ({good[-1].get('time')}), {len(found['snapshots'])} snapshots in {store}")
