"""The WebUI's venv: what it is built from, how, and when it is left alone.

The venv holds exactly the platform's hashed lock (venv_lock: `<platform>-py<X.Y>.txt`), installed by uv
(`uv pip sync --require-hashes`, which also removes anything not in the lock), plus CLIP from its pinned
archive (--no-deps, --no-build-isolation: setuptools >= 82 broke its setup.py). A venv is rebuilt only
when its recorded inputs change: the interpreter (real path and version), the sha256 of the lock file, the
sha256 of the WebUI's requirements_versions.txt (which must be the one the lock was resolved from), the
CLIP archive's tree and uv's version. The record is a marker file written last, after the WebUI's own
`--exit` preparation succeeded; a venv without a matching marker (a killed bootstrap, a venv made by hand)
is removed and built again from nothing, so every run converges on the same result.

The CLIP archive comes from a local directory when one is configured (a bundle's archives/, a wheelhouse;
no network), else from the lock's URL into a per-user download cache. Either way it is checked by the git
tree its files reproduce (git_tree_id), and by sha256 too when the lock pins one.
"""

import hashlib
import json
import os
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request

try:
    from ansible.module_utils.git_tree_id import TreeIdError, zip_tree_id
    from ansible.module_utils.package_index import PackageIndexError, fetch, normalize
    from ansible.module_utils.webui_files import sha256_file
except ImportError:  # unit tests import the module_utils directories directly
    from git_tree_id import TreeIdError, zip_tree_id
    from package_index import PackageIndexError, fetch, normalize
    from webui_files import sha256_file

MARKER = ".sdenv-venv.json"


class VenvError(Exception):
    """A bootstrap step that failed, named in one sentence."""


def canonical(data):
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def digest(data):
    return hashlib.sha256(canonical(data).encode("utf-8")).hexdigest()


def inputs(
    interpreter, interpreter_version, lock_sha256, requirements_sha256, clip_tree, uv_version, extra=None
):
    return {
        "interpreter": interpreter,
        "interpreter_version": interpreter_version,
        "lock_sha256": lock_sha256,
        "requirements_sha256": requirements_sha256,
        "clip_tree": clip_tree,
        "uv_version": uv_version,
        "built_wheels": digest(extra or {}),
    }


def read_marker(venv_dir):
    try:
        with open(os.path.join(venv_dir, MARKER), encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_current(venv_dir, wanted_inputs):
    marker = read_marker(venv_dir)
    return bool(marker) and marker.get("digest") == digest(wanted_inputs)


def write_marker(venv_dir, wanted_inputs):
    path = os.path.join(venv_dir, MARKER)
    fd, tmp = tempfile.mkstemp(prefix=".sdenv-venv.", dir=venv_dir)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(
            {"digest": digest(wanted_inputs), "inputs": wanted_inputs}, handle, indent=2, sort_keys=True
        )
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def uv_source_args(index_url="", wheelhouse="", torch_index_url=""):
    """uv options choosing where packages come from; a wheelhouse means no network at all."""
    if wheelhouse:
        return ["--offline", "--no-index", "--find-links", wheelhouse]
    args = ["--index-url", index_url] if index_url else []
    if torch_index_url:
        args += ["--extra-index-url", torch_index_url, "--index-strategy", "unsafe-best-match"]
    return args


def pip_source_env(index_url="", wheelhouse=""):
    """The same choice for pip runs the WebUI's launcher makes itself (it reads PIP_* variables)."""
    if wheelhouse:
        return {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": wheelhouse}
    if index_url:
        return {"PIP_INDEX_URL": index_url}
    return {}


def effective_lock(text, extra_hashes):
    """The lock text with the sha256 of wheels a bundle built from locked sdists added to their entries
    (right after the `name==version \\` line, so the entry's continuation stays whole)."""
    if not extra_hashes:
        return text
    out = []
    for line in text.splitlines():
        out.append(line)
        if line and not line[0].isspace() and "==" in line and line.rstrip().endswith("\\"):
            for sha in extra_hashes.get(normalize(line.split("==", 1)[0].strip()), []):
                out.append(f"    --hash=sha256:{sha} \\")
    return "\n".join(out) + "\n"


def build_steps(python, venv_dir, webui_dir, uv, lock_file, clip_archive, source):
    """[(description, argv, cwd)] for everything the venv is built with."""
    vpy = os.path.join(venv_dir, "bin", "python")
    return [
        ("create the venv", [python, "-m", "venv", "--without-pip", venv_dir], webui_dir),
        ("install the locked packages (uv pip sync --require-hashes)",
         [uv, "pip", "sync", "--require-hashes", "--python", vpy, *source, lock_file], webui_dir),
        # setuptools >= 82 dropped pkg_resources, which CLIP's setup.py imports: build against the locked one.
        ("install CLIP from its pinned archive",
         [uv, "pip", "install", "--no-deps", "--no-build-isolation", "--offline", "--no-index", "--python", vpy,
          clip_archive], webui_dir),
    ]  # fmt: skip


def run_step(description, argv, cwd, env, log):
    log.write(f"\n### {description}: {' '.join(argv)}\n")
    log.flush()
    started = time.monotonic()
    completed = subprocess.run(argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, check=False)
    log.write(f"### exit {completed.returncode} after {time.monotonic() - started:.1f} s\n")
    log.flush()
    if completed.returncode != 0:
        raise VenvError(f"The WebUI venv bootstrap could not {description} (exit {completed.returncode}): "
                        f"see {log.name} for its output.")  # fmt: skip


# What v1.10.1's prepare_environment() prints last with --exit (modules/launch_utils.py). webui.sh's own exit
# status says nothing: its restart loop ends with a test, so it exits 0 even when launch.py failed.
LAUNCH_FINISHED = "Exiting because of --exit argument"


def run_launch(argv, cwd, env, log):
    """The WebUI's own preparation, judged by what launch.py prints, not by webui.sh's exit status."""
    log.flush()
    start = log.tell()
    run_step("finish with the WebUI's own preparation (webui.sh --exit)", argv, cwd, env, log)
    with open(log.name, encoding="utf-8", errors="replace") as handle:
        handle.seek(start)
        if LAUNCH_FINISHED not in handle.read():
            raise VenvError(
                "The WebUI's own preparation (webui.sh --exit) did not finish (launch.py never said "
                f"{LAUNCH_FINISHED!r}; webui.sh exits 0 regardless): see {log.name} for its output."
            )


def tail(path, lines=15):
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return "".join(handle.readlines()[-lines:])
    except OSError:
        return ""


def check_archive(path, spec):
    """Raise VenvError unless the archive reproduces the lock's git tree (and its sha256, when pinned)."""
    try:
        tree, _ = zip_tree_id(path)
    except TreeIdError as exc:
        raise VenvError(
            f"The archive {path} cannot be checked ({exc}): replace it with the pinned one."
        ) from exc
    if spec.get("tree") and tree != spec["tree"]:
        raise VenvError(
            f"The archive {path} holds git tree {tree}, the lock pins {spec['tree']}: it is not the pinned "
            f"source ({spec['url']}); nothing was installed from it."
        )
    actual = sha256_file(path)
    if spec.get("sha256") and actual != spec["sha256"]:
        raise VenvError(
            f"The archive {path} has sha256 {actual}, the lock pins {spec['sha256']}: replace it with the pinned archive."
        )
    return actual


def locate_archive(spec, local_dir, cache_dir, check_mode=False):
    """(path, sha256, fetched) for a pinned archive {url, file, tree, sha256}: from local_dir (no network) when
    given, else the download cache, else the lock's URL."""
    name = spec["file"]
    if local_dir:
        path = os.path.join(local_dir, name)
        if not os.path.isfile(path):
            raise VenvError(
                f"The directory {local_dir} has no {name}: add it (from {spec['url']}) or unset it."
            )
        return path, check_archive(path, spec), False
    path = os.path.join(cache_dir, name)
    if os.path.isfile(path):
        try:
            return path, check_archive(path, spec), False
        except VenvError:
            pass
    if check_mode:
        return path, spec.get("sha256") or "", True
    if urllib.parse.urlsplit(spec["url"]).scheme not in ("https", "http", "file"):
        raise VenvError(f"The archive URL {spec['url']} is not http(s) or file: fix the lock.")
    checked = {}

    def pinned(tmp):
        try:
            checked["sha256"] = check_archive(tmp, spec)
        except VenvError as exc:
            raise VenvError(
                f"{spec['url']} gave an archive that is not the pinned one ({exc}); nothing was kept."
            ) from exc

    try:
        fetch(spec["url"], path, check=pinned)
    except PackageIndexError as exc:
        raise VenvError(str(exc)) from exc
    actual = checked["sha256"]
    return path, actual, True
