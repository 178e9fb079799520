"""The WebUI's venv: what it is built from, how, and when it is left alone.

A venv is rebuilt only when its recorded inputs change: the interpreter (real path and version), the
digest of the lock entries that go into it (WebUI commit, this platform's torch pins, setuptools/wheel
pins, CLIP/open_clip archives) and the digest of the WebUI's requirements_versions.txt. The record is a
marker file written last, after the WebUI's own `--exit` preparation succeeded; a venv without a matching
marker (a killed bootstrap, a venv made by hand) is removed and built again from nothing, so every run
converges on the same result.

Pinned source archives (CLIP, open_clip) come from the wheelhouse when one is configured (no network),
else from the lock's URL into a per-user download cache, checked against the lock's sha256 when it pins one.
"""

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import urllib.parse
import urllib.request

try:
    from ansible.module_utils.webui_files import sha256_file
except ImportError:  # unit tests import the module_utils directories directly
    from webui_files import sha256_file

MARKER = ".sdenv-venv.json"


class VenvError(Exception):
    """A bootstrap step that failed, named in one sentence."""


def canonical(data):
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def digest(data):
    return hashlib.sha256(canonical(data).encode("utf-8")).hexdigest()


def inputs(interpreter, interpreter_version, lock_pins, requirements_sha256):
    return {
        "interpreter": interpreter,
        "interpreter_version": interpreter_version,
        "lock_digest": digest(lock_pins),
        "requirements_sha256": requirements_sha256,
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


def pip_source_args(index_url="", wheelhouse=""):
    """pip options choosing where packages come from; a wheelhouse means no network at all."""
    if wheelhouse:
        return ["--no-index", "--find-links", wheelhouse]
    if index_url:
        return ["--index-url", index_url]
    return []


def pip_source_env(index_url="", wheelhouse=""):
    """The same choice for pip runs the WebUI's launcher makes itself (it reads PIP_* variables)."""
    if wheelhouse:
        return {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": wheelhouse}
    if index_url:
        return {"PIP_INDEX_URL": index_url}
    return {}


def build_steps(
    python, venv_dir, webui_dir, pins, archives, source, requirements="requirements_versions.txt"
):
    """[(description, argv, cwd)] for everything after the venv itself is created."""
    vpy = os.path.join(venv_dir, "bin", "python")
    pip = [vpy, "-m", "pip", "install", "--disable-pip-version-check", "--prefer-binary", *source]
    torch = pins["torch"]
    torch_extra = (
        ["--extra-index-url", torch["index_url"]]
        if torch.get("index_url") and "--no-index" not in source
        else []
    )
    return [
        ("create the venv", [python, "-m", "venv", venv_dir], webui_dir),
        ("install wheel and setuptools", [*pip, f"wheel=={pins['wheel']}", f"setuptools=={pins['setuptools']}"], webui_dir),
        ("install torch and torchvision", [*pip, *torch_extra, f"torch=={torch['torch']}", f"torchvision=={torch['torchvision']}"], webui_dir),
        # setuptools >= 82 dropped pkg_resources, which CLIP's setup.py imports: build against the pinned one.
        ("install CLIP", [*pip, "--no-build-isolation", archives["clip"]], webui_dir),
        ("install open_clip", [*pip, "--no-build-isolation", archives["open_clip"]], webui_dir),
        ("install requirements_versions.txt", [*pip, "-r", requirements], webui_dir),
    ]  # fmt: skip


def run_step(description, argv, cwd, env, log):
    log.write(f"\n### {description}: {' '.join(argv)}\n")
    log.flush()
    completed = subprocess.run(argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, check=False)
    if completed.returncode != 0:
        raise VenvError(f"The WebUI venv bootstrap could not {description} (exit {completed.returncode}): "
                        f"see {log.name} for pip's output.")  # fmt: skip


def tail(path, lines=15):
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return "".join(handle.readlines()[-lines:])
    except OSError:
        return ""


def locate_archive(spec, wheelhouse, cache_dir, check_mode=False):
    """(path, sha256, fetched) for a pinned archive {url, file, sha256}."""
    name = spec["file"]
    wanted = spec.get("sha256") or ""
    if wheelhouse:
        path = os.path.join(wheelhouse, name)
        if not os.path.isfile(path):
            raise VenvError(
                f"The wheelhouse {wheelhouse} has no {name}: add it (from {spec['url']}) or unset the wheelhouse."
            )
        actual = sha256_file(path)
        if wanted and actual != wanted:
            raise VenvError(
                f"{path} has sha256 {actual}, the lock pins {wanted}: replace it with the pinned archive."
            )
        return path, actual, False
    path = os.path.join(cache_dir, name)
    if os.path.isfile(path):
        actual = sha256_file(path)
        if not wanted or actual == wanted:
            return path, actual, False
    if check_mode:
        return path, wanted, True
    if urllib.parse.urlsplit(spec["url"]).scheme not in ("https", "http", "file"):
        raise VenvError(f"The archive URL {spec['url']} is not http(s) or file: fix the lock.")
    os.makedirs(cache_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".sdenv-dl-", dir=cache_dir)
    try:
        with os.fdopen(fd, "wb") as handle, urllib.request.urlopen(spec["url"], timeout=60) as response:  # noqa: S310 - scheme checked above
            shutil.copyfileobj(response, handle, 1 << 20)
            handle.flush()
            os.fsync(handle.fileno())
        actual = sha256_file(tmp)
        if wanted and actual != wanted:
            raise VenvError(
                f"{spec['url']} gave a file with sha256 {actual}, the lock pins {wanted}: nothing was kept."
            )
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        raise VenvError(
            f"{spec['url']} could not be downloaded ({exc}): check the network or use a wheelhouse."
        ) from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path, actual, True
