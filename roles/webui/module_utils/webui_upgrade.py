# make upgrade's plan: read every pin a WebUI commit names for itself, map it onto lock.yml's values, and
# list the changes old -> new. Plain Python (stdlib only) that the controller script
# (roles/webui/files/sdenv_upgrade.py) wires to git and the network, and unit tests call with recorded text.
#
# Where upstream keeps its pins (read from its files, not guessed): modules/launch_utils.py
# prepare_environment() assigns each one as `name = os.environ.get('ENV', <default>)` at the top of the
# function (the IPEX/Windows branches below are nested in `if` and are not this toolkit's platforms), the
# torch command being an f-string over torch_index_url; webui-macos-env.sh exports TORCH_COMMAND per CPU kind
# (Intel: the first branch); requirements_versions.txt pins setuptools among the rest. What the launcher
# installs before the pinned packages, and how, is read from the same function (build_steps): the dev branch
# (2025-) defines ensure_build_dependencies() inside it, which installs wheel and forces setuptools==69.5.1, and
# installs CLIP with --no-build-isolation; XFORMERS_PACKAGE is one of the top-level assignments.
from __future__ import annotations

import ast
import re
import shlex

# (launch_utils variable prefix, lock repositories[].dir): the five sub-repositories, in the launcher's order.
SUBREPOS = (
    ("assets", "stable-diffusion-webui-assets"),
    ("stable_diffusion", "stable-diffusion-stability-ai"),
    ("stable_diffusion_xl", "generative-models"),
    ("k_diffusion", "k-diffusion"),
    ("blip", "BLIP"),
)
ARCHIVES = (("clip_package", "clip"), ("openclip_package", "open_clip"))
LINUX = ("Linux-x86_64", "Linux-aarch64")
DARWIN = {"intel": "Darwin-x86_64", "arm": "Darwin-arm64"}
_SHA = re.compile(r"^[0-9a-f]{40}$")
_LOCK_FILE = re.compile(r"^(.+)-py\d+\.\d+\.txt$")
# An archive pinned by commit: GitHub's /<owner>/<repo>/archive/<commit>.zip, or a file <name>-<commit>.zip.
_ARCHIVE = re.compile(
    r"^https?://[^\s?#]+/(?:(?P<repo>[^/\s]+)/archive/(?P<commit>[0-9a-f]{40})|(?P<file>[A-Za-z0-9_.]+-[0-9a-f]{40}))\.zip$"
)


class UpgradeError(ValueError):
    """One sentence: why the plan could not be made; nothing was changed."""


# --- Reading the new commit's files -------------------------------------------------------------------------


def _evaluate(node, names):
    """The value of a launcher assignment: a string literal, os.environ.get(NAME, default) -> default, an
    f-string over names assigned before it; None for anything else (left alone, never guessed)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return names.get(node.id)
    if isinstance(node, ast.JoinedStr):
        parts = []
        for value in node.values:
            if isinstance(value, ast.Constant):
                parts.append(str(value.value))
            elif (
                isinstance(value, ast.FormattedValue) and value.conversion == -1 and value.format_spec is None
            ):
                inner = _evaluate(value.value, names)
                if inner is None:
                    return None
                parts.append(inner)
            else:
                return None
        return "".join(parts)
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "get"
        and ast.unparse(node.func.value) == "os.environ"
        and len(node.args) == 2
        and not node.keywords
    ):
        return _evaluate(node.args[1], names)
    return None


def launcher_pins(source):
    """{variable: value} of the top-level assignments in launch_utils.py's prepare_environment()."""
    names = {}
    for statement in _prepare_environment(source).body:
        if (
            isinstance(statement, ast.Assign)
            and len(statement.targets) == 1
            and isinstance(statement.targets[0], ast.Name)
        ):
            value = _evaluate(statement.value, names)
            if value is not None:
                names[statement.targets[0].id] = value
    return names


def _prepare_environment(source):
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise UpgradeError(f"modules/launch_utils.py does not parse as Python (line {exc.lineno}).") from exc
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "prepare_environment":
            return node
    raise UpgradeError(
        "modules/launch_utils.py has no prepare_environment(): it is not shaped like the WebUI's."
    )


def _run_pip_text(call):
    """The command of a run_pip(...) call as (its constant words, the names its f-string formats), or None."""
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "run_pip"):
        return None
    if not call.args:
        return None
    arg = call.args[0]
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value.split(), []
    if isinstance(arg, ast.JoinedStr):
        words, names = [], []
        for value in arg.values:
            if isinstance(value, ast.Constant):
                words += str(value.value).split()
            elif isinstance(value, ast.FormattedValue) and isinstance(value.value, ast.Name):
                names.append(value.value.id)
        return words, names
    return None


def build_steps(source):
    """What prepare_environment() installs before the packages the lock pins, and how: {"build": {package:
    version, "" for any}, from the run_pip("install ...") calls of the functions it defines inside itself and
    calls (dev's ensure_build_dependencies()); "clip_flags": the pip flags of its CLIP install (dev:
    --no-build-isolation); "xformers": XFORMERS_PACKAGE's default, or None}."""
    function = _prepare_environment(source)
    nested = {n.name: n for n in function.body if isinstance(n, ast.FunctionDef)}
    called = [
        s.value.func.id
        for s in function.body
        if isinstance(s, ast.Expr) and isinstance(s.value, ast.Call) and isinstance(s.value.func, ast.Name)
    ]
    build = {}
    for name in called:
        for node in ast.walk(nested.get(name, ast.Pass())):
            text = _run_pip_text(node)
            if text and text[0][:1] == ["install"] and not text[1]:
                for word in text[0][1:]:
                    if not word.startswith("-"):
                        package, _, version = word.partition("==")
                        build[_normalize(package)] = version
    clip_flags = []
    for node in ast.walk(function):
        text = _run_pip_text(node)
        if text and "clip_package" in text[1]:
            clip_flags = [w for w in text[0] if w.startswith("-")]
    return {
        "build": build,
        "clip_flags": clip_flags,
        "xformers": launcher_pins(source).get("xformers_package"),
    }


def build_notes(old, new, lock_venv, requirements_setuptools=None):
    """The plan's notes, old -> new, for what build_steps reads (old None: the current commit's launcher could
    not be read), and what the toolkit does with each; lock_venv is the lock's webui_venv,
    requirements_setuptools the new requirements_versions.txt's setuptools pin."""
    before = old or {"build": {}, "clip_flags": [], "xformers": None}
    notes = []
    forced = new["build"].get("setuptools")
    if forced and requirements_setuptools and forced != requirements_setuptools:
        notes.append(
            f"the launcher forces setuptools=={forced} before CLIP, then requirements_versions.txt installs "
            f"{requirements_setuptools}: the lock follows requirements_versions.txt (installed last)"
        )

    def words(build):
        return (
            ", ".join(f"{p}=={v}" if v else f"{p} (any version)" for p, v in sorted(build.items()))
            or "(none)"
        )

    if new["build"] != before["build"]:
        # The toolkit's venv step installs the lock's setuptools and wheel before CLIP whatever the launcher does;
        # another build package the launcher named would be said as one the toolkit does not install.
        pinned = [
            f"{p} {lock_venv[p]}"
            if lock_venv.get(p)
            else f"{p} (not in the lock: the toolkit does not install it)"
            for p in sorted({"setuptools", "wheel", *new["build"]})
        ]
        notes.append(
            f"build dependencies the launcher installs before CLIP: {(words(before['build']) if old else '?')} -> "
            f"{words(new['build'])}; the toolkit installs the lock's {', '.join(pinned)} into the venv before it "
            "builds CLIP either way"
        )
    if new["clip_flags"] != before["clip_flags"]:
        flags = " ".join(new["clip_flags"]) or "(no flags)"
        notes.append(
            f"the launcher installs CLIP with {((' '.join(before['clip_flags']) or '(no flags)') if old else '?')} -> "
            f"{flags}; the toolkit builds CLIP from the lock's archive with --no-deps --no-build-isolation already"
        )
    if new["xformers"] != before["xformers"]:
        notes.append(
            f"XFORMERS_PACKAGE {((before['xformers'] or '(none)') if old else '?')} -> {new['xformers'] or '(none)'}: "
            "not installed: the WebUI installs it only under --xformers, which the toolkit does not pass (CPU and "
            "Mac hosts; sdenv_webui_extra_args could add it), so the lock carries no xformers pin"
        )
    return notes


def macos_torch_commands(source):
    """{platform key: TORCH_COMMAND} from webui-macos-env.sh: the `if ... Intel` branch is Darwin-x86_64, its
    else Darwin-arm64; one unconditional export is both."""
    found = {}
    branch = None
    for raw in source.splitlines():
        line = raw.strip()
        if line.startswith("if ") and "Intel" in line:
            branch = "intel"
        elif line == "else" and branch == "intel":
            branch = "arm"
        elif line == "fi":
            branch = None
        elif line.startswith("export TORCH_COMMAND="):
            words = shlex.split(line[len("export ") :])
            command = words[0].split("=", 1)[1] if words else ""
            for key in [DARWIN[branch]] if branch else DARWIN.values():
                found[key] = command
    return found


def torch_pins(command):
    """{torch, torchvision, index_url} from a `pip install torch==X torchvision==Y [--extra-index-url U]`."""
    pins = {"torch": None, "torchvision": None, "index_url": ""}
    words = shlex.split(command or "")
    for i, word in enumerate(words):
        for name in ("torch", "torchvision"):
            if word.startswith(f"{name}=="):
                pins[name] = word.split("==", 1)[1]
        if word in ("--extra-index-url", "--index-url") and i + 1 < len(words):
            pins["index_url"] = words[i + 1]
    return pins


def _normalize(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_pin(text, name):
    """The version `name==X` pins in a requirements file, or None."""
    for line in text.splitlines():
        m = re.match(r"^\s*([A-Za-z0-9_.-]+)\s*==\s*([^\s;#]+)", line)
        if m and _normalize(m.group(1)) == _normalize(name):
            return m.group(2)
    return None


# --- From pins to lock values -------------------------------------------------------------------------------


def wanted_values(launcher, macos, requirements, version, commit, build=None):
    """[(lock path, value, where it was read)] the new commit asks for. A pin the commit does not name (a
    missing variable) is left out, so the lock keeps its value, and the plan says so in `unread`. `build` is
    build_steps()'s "build": a setuptools requirements_versions.txt does not pin is taken from there (its pip
    install -r runs last, so where both pin it, the file wins: build_notes says so), and a pinned wheel."""
    values, unread = [], []

    def want(path, value, source):
        if value in (None, ""):
            unread.append(source)
        else:
            values.append((path, value, source))

    if not _SHA.match(commit or ""):
        raise UpgradeError(f"the WebUI commit {commit!r} is not a full 40-hex commit id.")
    values.append((("webui", "commit"), commit, "the WebUI"))
    values.append((("webui", "version"), version, "the WebUI"))
    for prefix, directory in SUBREPOS:
        want(("repositories", f"dir={directory}", "repo"), launcher.get(f"{prefix}_repo"), f"{prefix}_repo")
        commit_hash = launcher.get(f"{prefix}_commit_hash")
        if commit_hash is not None and not _SHA.match(commit_hash):
            raise UpgradeError(
                f"launch_utils.py's {prefix}_commit_hash {commit_hash!r} is not a 40-hex commit id."
            )
        want(("repositories", f"dir={directory}", "commit"), commit_hash, f"{prefix}_commit_hash")
    for variable, key in ARCHIVES:
        url = launcher.get(variable)
        if url is not None and not _ARCHIVE.match(url):
            raise UpgradeError(
                f"launch_utils.py's {variable} {url!r} is not a GitHub archive pinned by commit: pin it by hand."
            )
        want(("webui_venv", key, "url"), url, variable)
    linux = torch_pins(launcher.get("torch_command"))
    for platform in LINUX:
        for name in ("torch", "torchvision"):
            want(("webui_venv", "torch", platform, name), linux[name], f"torch_command ({name})")
    for platform in DARWIN.values():
        pins = torch_pins(macos.get(platform))
        for name in ("torch", "torchvision"):
            want(
                ("webui_venv", "torch", platform, name), pins[name], f"webui-macos-env.sh ({platform} {name})"
            )
    build = build or {}
    setuptools = requirement_pin(requirements, "setuptools")
    if setuptools is None and build.get("setuptools"):
        want(
            ("webui_venv", "setuptools"),
            build["setuptools"],
            "the launcher's build dependencies (setuptools)",
        )
    else:
        want(("webui_venv", "setuptools"), setuptools, "requirements_versions.txt")
    if build.get("wheel"):
        want(("webui_venv", "wheel"), build["wheel"], "the launcher's build dependencies (wheel)")
    return values, sorted(set(unread)), linux["index_url"]


def archive_file(url):
    """The lock's `file` for an archive URL: GitHub's is <repo name>-<commit>.zip, as GitHub names its top
    directory; any other is its own file name."""
    m = _ARCHIVE.match(url)
    return f"{m.group('file')}.zip" if m.group("file") else f"{m.group('repo')}-{m.group('commit')}.zip"


class Change:
    """One lock value: old -> new, where the new one was read, and a note (a vanished repository ...)."""

    def __init__(self, path, old, new, source, note=""):
        self.path, self.old, self.new, self.source, self.note = path, old, new, source, note

    @property
    def name(self):
        return ".".join(part.split("=", 1)[1] if "=" in part else part for part in self.path)

    def __repr__(self):
        return f"Change({self.name}: {self.old!r} -> {self.new!r})"


def plan_changes(lock, wanted, get, serves, archive_tree, strict=True):
    """The changes to lock (a parsed sdenv_lock) for the wanted values.

    get(path) -> the lock's current value (KeyError when absent); serves(repo, commit) -> True/False/None
    (None: could not be reached); archive_tree(url) -> the archive's git tree id (make lock-venv's check).
    A sub-repository URL that does not serve its commit is replaced by the lock's own URL for that directory
    when that one does (the way the lock already carries github.com/w-e-w/stablediffusion for the deleted
    Stability-AI repository); when neither does, the plan stops with one sentence. strict=False (CHECK=1)
    turns a repository that could not be reached at all into a note instead."""
    changes, notes = [], []
    by_path = {}
    for path, value, source in wanted:
        by_path[path] = (value, source)
    for path, (value, source) in by_path.items():
        try:
            old = get(path)
        except KeyError:
            old = None
        if path[0] == "repositories" and path[2] == "commit":
            continue  # planned with its repo below
        if path[0] == "repositories" and path[2] == "repo":
            commit, commit_source = by_path.get((*path[:2], "commit"), (None, None))
            current_commit = get((*path[:2], "commit"))
            commit = commit or current_commit
            chosen, note = _choose_repo(path[1].split("=", 1)[1], value, old, commit, serves, strict)
            if note:
                notes.append(note)
            if chosen != old:
                changes.append(Change(path, old, chosen, source, note))
            if commit != current_commit:
                changes.append(Change((*path[:2], "commit"), current_commit, commit, commit_source, note))
            continue
        if str(old) != str(value):
            changes.append(Change(path, old, value, source))
            if path[0] == "webui_venv" and path[-1] == "url":
                key = path[1]
                changes.append(Change(("webui_venv", key, "file"), get(("webui_venv", key, "file")),
                                      archive_file(value), source))  # fmt: skip
                changes.append(Change(("webui_venv", key, "tree"), get(("webui_venv", key, "tree")),
                                      archive_tree(value), f"{source} (git tree of the archive)"))  # fmt: skip
                changes.append(Change(("webui_venv", key, "sha256"), get(("webui_venv", key, "sha256")), "",
                                      "recorded again by make lock-venv"))  # fmt: skip
    return changes, notes


def _choose_repo(directory, wanted, current, commit, serves, strict):
    """(repo, note) for one sub-repository: the wanted URL when it serves commit, else the lock's own."""
    where = f"repositories/{directory}"
    state = serves(wanted, commit)
    if state:
        return wanted, ""
    if wanted != current and serves(current, commit):
        gone = "does not serve it" if state is False else "could not be reached"
        return (
            current,
            f"{where}: {wanted} {gone}; kept the lock's replacement {current}, which serves {commit[:10]}",
        )
    if state is None and not strict:
        return wanted, f"{where}: {wanted} could not be reached from here: {commit[:10]} was not checked"
    if wanted == current:
        raise UpgradeError(
            f"{current} {'does not serve' if state is False else 'could not be reached to check'} {commit[:10]} "
            f"for {where}: reach it (or a mirror through git's url.<base>.insteadOf) or pin a repository that does."
        )
    raise UpgradeError(
        f"Neither {wanted} nor the lock's {current} serves {commit[:10]} for {where}: "
        "find a copy that carries it and put its URL in lock.yml."
    )


def plan_text(changes, notes, unread, old_version, new_version, extra=()):
    """The plan as a diff of pins, old -> new, one line each, then what the plan found."""
    lines = [f"Upgrade plan: WebUI {old_version} -> {new_version}"]
    if not changes:
        lines.append("  (no pin changes: the lock already pins this commit)")
    width = max((len(c.name) for c in changes), default=0)
    for change in changes:
        old = "(none)" if change.old in (None, "") else change.old
        new = "(none)" if change.new in (None, "") else change.new
        lines.append(f"  {change.name.ljust(width)}  {old} -> {new}")
    for note in notes:
        lines.append(f"  note: {note}")
    for source in unread:
        lines.append(f"  note: the new commit does not name {source}; the lock keeps its value")
    lines.extend(f"  note: {line}" for line in extra)
    return "\n".join(lines)


def snapshot_label(old_version, new_version):
    """A snapshot label naming both versions, within the store's rule (letters, digits, . _ -, <= 64)."""

    def clean(text):
        return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip(".-_")[:26] or "x"

    label = f"upgrade-{clean(old_version)}-to-{clean(new_version)}"
    return re.sub(r"\.\.+", ".", label)[:64]


# --- The journal: where an interrupted upgrade stopped ------------------------------------------------------

STEPS = ("planned", "locked", "snapshot", "provision", "verify", "done")


def recovery(journal):
    """What the next make upgrade / make rollback does with a journal an interrupted upgrade left.

    Returns (action, hosts): ("none", []) when there is nothing to recover; ("discard", []) when the new lock
    was never put in place (the staged files are dropped); ("restore", hosts) when the old lock goes back and
    each host in hosts (those whose snapshot was taken) is rolled back to its upgrade snapshot, then verified.
    A host whose step is only "snapshot" started its snapshot but had not finished it: provision had not
    begun, so it needs no rollback, only the verify."""
    if not journal:
        return "none", []
    if journal.get("step") == "planned":
        return "discard", []
    hosts = [host for host, step in sorted(journal.get("hosts", {}).items()) if step in STEPS[3:]]
    return "restore", hosts


def locked_platforms(file_names):
    """The platforms a venv-lock directory holds, from its <platform>-py<X.Y>.txt names, for the re-lock:
    what was locked is locked again (the repository's holds every platform the lock pins torch for). An
    empty result means every platform."""
    return sorted({m.group(1) for name in file_names if (m := _LOCK_FILE.match(name))})
