"""make lock-venv, make bundle and make bundle-check: the controller side of the air-gapped provision.

Bundle layout (one platform key per bundle; format and invariants also in roles/offline_bundle/README.md):

    manifest.json          what the bundle holds, for which platform, from which pins
    SHA256SUMS             sha256 of every other file, `sha256sum -c` format; written last
    git/<name>.git         the WebUI and each sub-repository: a bare repository whose branch sdenv-pinned is the
                           pinned commit, with its history (only the commit when the source lacks history);
                           git/ComfyUI.git too when comfyui is in sdenv_apps
    archives/<file>        the CLIP and open_clip archives, checked by git tree id
    locks/<name>.txt       the venv locks of this platform (one per Python), as make lock-venv wrote them;
                           ComfyUI's in locks/comfyui/ when it is carried
    wheelhouse/*.whl       one file per locked package and Python: the best wheel for the target, or a wheel
                           built from a pure-Python sdist (recorded under "built" in the manifest)
    tools/<uv wheel>       the uv installer for the target
    tokenizer/<file>       the CLIP tokenizer files (vocab.json, merges.txt derived from the CLIP archive)
    models/<file>          every enabled model, verified by the models role while the bundle was made
    controller/            the controller's requirements as wheels (Python 3.11-3.13) + a hashed requirements.txt

The manifest's "apps" names the apps the bundle serves (["webui"], or ["webui", "comfyui"]); ComfyUI's pin, locks
and wheel rows sit under its "comfyui" key, apart from the WebUI's "wheels" (the two venvs may lock one package at
two versions; one wheelhouse holds both files, each fetched once).

A bundle is written in place and made valid by its last step (SHA256SUMS): a bundle without it is
incomplete, and running make bundle again into the same directory reuses every file that still verifies.
"""

import datetime
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import warnings

# Controller only: the CLI (files/sdenv_bundle.py) puts every module_utils directory on sys.path.
from bundle_layout import MANIFEST, SUMS, BundleError, read_manifest, verify_sums, write_json, write_sums
from bundle_sources import (
    SourceError,
    archive_cache,
    archive_member,
    file_at,
    git_cache,
    git_mirror_head,
    write_git_mirror,
)
from clip_tokenizer_files import check_hashes, derived_files
from package_index import PackageIndexError, copy_verified, fetch, list_files
from venv_lock import (
    PYTHONS,
    UV_PLATFORMS,
    LockError,
    check_lock_text,
    comfyui_lock_inputs,
    comfyui_requirements_in,
    header,
    lock_file_name,
    lock_inputs,
    normalize,
    parse_packages,
    requirements_in,
)
from webui_files import sha256_file
from webui_venv_plan import VenvError, check_archive
from wheel_tags import choose_file, is_pure_wheel, target_tags

BUNDLE_ERRORS = (BundleError, SourceError, PackageIndexError, LockError, VenvError, OSError)
CONTROLLER_PYTHONS = ["3.11", "3.12", "3.13"]
WEBUI_GIT_NAME = "stable-diffusion-webui"
COMFYUI_GIT_NAME = "ComfyUI"
# ComfyUI's venv locks sit in this subdirectory of the WebUI's (role comfyui reads them there).
COMFYUI_LOCK_DIR = "comfyui"


def say(message):
    print(f"sdenv: {message}", file=sys.stderr, flush=True)


def uv_command():
    """The controller's uv (pinned in requirements.txt, so it sits next to this Python)."""
    candidate = os.path.join(os.path.dirname(sys.executable), "uv")
    if os.access(candidate, os.X_OK):
        return candidate
    found = shutil.which("uv")
    if not found:
        raise BundleError("uv is not installed in the controller environment: run make controller.")
    return found


def uv_version(uv):
    return subprocess.run([uv, "--version"], capture_output=True, text=True, check=True).stdout.split()[1]


def write_text_atomic(path, text):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".sdenv-", dir=os.path.dirname(os.path.abspath(path)))
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def webui_requirements(sdenv_lock, cache):
    webui = sdenv_lock["webui"]
    repo = git_cache(cache, WEBUI_GIT_NAME, webui["repo"], webui["commit"])
    return file_at(repo, webui["commit"], "requirements_versions.txt")


def platforms_of(sdenv_lock, wanted):
    known = sorted(set(sdenv_lock["webui_venv"]["torch"]) & set(UV_PLATFORMS))
    unknown = sorted(set(wanted) - set(known))
    if unknown:
        raise BundleError(
            f"The platform key {unknown[0]} is not one the lock pins torch for: use one of {', '.join(known)}."
        )
    return list(wanted) or known


# --- make lock-venv ---------------------------------------------------------------------------------------


def lock_venv(sdenv_lock, lock_dir, cache, index_url="", platforms=(), reuse_dir=None):
    """Resolve every platform + Python into lock_dir/<platform>-py<X.Y>.txt with uv; with a ComfyUI pin in the
    lock, its venv too, into lock_dir/comfyui/<platform>-py<X.Y>.txt (role comfyui). reuse_dir: a venv-lock
    directory whose ComfyUI locks are copied where their header still matches today's inputs (make upgrade
    WEBUI=: ComfyUI's pin has not moved, so neither its repository nor PyPI is needed for it)."""
    uv = uv_command()
    version = uv_version(uv)
    raw = webui_requirements(sdenv_lock, cache)
    requirements = raw.decode("utf-8")
    archive_requirements = {
        name: archive_member(archive_cache(cache, sdenv_lock["webui_venv"][name]), "requirements.txt")
        for name in ("clip", "open_clip")
    }
    comfyui = ComfyuiLocker(sdenv_lock, lock_dir, cache, index_url, uv, version)
    for platform in platforms_of(sdenv_lock, platforms):
        for python in PYTHONS[platform]:
            inputs = lock_inputs(sdenv_lock, platform, python, hashlib.sha256(raw).hexdigest())
            source = requirements_in(inputs, requirements, archive_requirements)
            resolve(
                uv,
                version,
                inputs,
                source,
                os.path.join(lock_dir, lock_file_name(platform, python)),
                index_url,
            )
            if "comfyui" in sdenv_lock:
                comfyui.lock(platform, python, reuse_dir)


def lock_comfyui_venv(
    sdenv_lock, lock_dir, cache, index_url="", platforms=(), requirements=None, reuse_dir=None
):
    """ComfyUI's venv locks alone, into lock_dir/comfyui/ (make upgrade COMFYUI=: the WebUI's locks are kept
    byte for byte, since re-resolving them would float their unpinned packages). `requirements`: the pinned
    commit's requirements.txt as the caller read it already (the upgrade's plan: not cloned a second time into
    make bundle's cache); `reuse_dir`: a venv-lock directory whose ComfyUI locks are kept where their inputs
    have not moved (a COMFYUI= of the commit already pinned re-resolves nothing)."""
    uv = uv_command()
    comfyui = ComfyuiLocker(sdenv_lock, lock_dir, cache, index_url, uv, uv_version(uv))
    comfyui.raw = requirements
    for platform in platforms_of(sdenv_lock, platforms):
        for python in PYTHONS[platform]:
            comfyui.lock(platform, python, reuse_dir)


class ComfyuiLocker:
    """Resolves ComfyUI's lock for one platform + Python; its requirements.txt is read once, when needed."""

    def __init__(self, sdenv_lock, lock_dir, cache, index_url, uv, version):
        self.sdenv_lock, self.lock_dir, self.cache, self.index_url = sdenv_lock, lock_dir, cache, index_url
        self.uv, self.version, self.raw = uv, version, None

    def lock(self, platform, python, reuse_dir=None):
        path = os.path.join(self.lock_dir, COMFYUI_LOCK_DIR, lock_file_name(platform, python))
        if reuse_comfyui_lock(self.sdenv_lock, platform, python, reuse_dir, path):
            return
        if self.raw is None:
            self.raw = comfyui_requirements(self.sdenv_lock, self.cache)
        inputs = comfyui_lock_inputs(self.sdenv_lock, platform, python, hashlib.sha256(self.raw).hexdigest())
        source = comfyui_requirements_in(inputs, self.raw.decode("utf-8"))
        resolve(self.uv, self.version, inputs, source, path, self.index_url)


def reuse_comfyui_lock(sdenv_lock, platform, python, reuse_dir, path):
    """Copy reuse_dir's ComfyUI lock for platform + python to path when its header matches today's inputs
    (its commit, torch, pip and requires; the requirements' digest as recorded, since the commit is the same);
    False when there is none or it is stale, and the lock must be resolved."""
    if not reuse_dir:
        return False
    name = lock_file_name(platform, python)
    try:
        with open(os.path.join(reuse_dir, COMFYUI_LOCK_DIR, name), encoding="utf-8") as handle:
            text = handle.read()
        check_lock_text(text, sdenv_lock, platform, python, name, inputs_of=comfyui_lock_inputs)
    except (OSError, LockError):
        return False
    write_text_atomic(path, text)
    say(f"kept {COMFYUI_LOCK_DIR}/{name}: ComfyUI's inputs have not changed")
    return True


def resolve(uv, version, inputs, source, path, index_url):
    """uv pip compile of source for the inputs' platform and Python, written to path with its header."""
    platform, python = inputs["platform"], inputs["python"]
    argv = [uv, "pip", "compile", "-", "--quiet", "--no-header", "--generate-hashes",
            "--python-platform", UV_PLATFORMS[platform], "--python-version", python,
            "--index-url", index_url or "https://pypi.org/simple"]  # fmt: skip
    if inputs["torch"]["index_url"]:
        argv += ["--extra-index-url", inputs["torch"]["index_url"], "--index-strategy", "unsafe-best-match"]
    # uv compiles for a target Python with an interpreter of that version where it finds one; where none is
    # installed it would download a CPython into root's home (or, offline, spend 5-15 s retrying) and then use
    # the controller's anyway: the lock is the same, so it never downloads one.
    env = {
        **os.environ,
        "UV_NO_CONFIG": "1",
        "UV_PYTHON_DOWNLOADS": "never",
        "MACOSX_DEPLOYMENT_TARGET": "13.0",
    }
    what = "ComfyUI's venv" if inputs.get("app") == "comfyui" else "the venv"
    say(f"resolving {what} for {platform} / Python {python} ...")
    completed = subprocess.run(argv, input=source, capture_output=True, text=True, env=env, check=False)
    if completed.returncode != 0:
        detail = completed.stderr.strip().splitlines()
        raise BundleError(
            f"uv could not resolve {what} for {platform} / Python {python}: "
            f"{' '.join(detail[-3:]) if detail else 'no output'}"
        )
    packages = parse_packages(completed.stdout)
    write_text_atomic(path, header(inputs, version) + completed.stdout)
    name = os.path.basename(path)
    say(
        f"wrote {COMFYUI_LOCK_DIR + '/' + name if inputs.get('app') == 'comfyui' else name}: {len(packages)} packages"
    )


def comfyui_requirements(sdenv_lock, cache):
    comfyui = sdenv_lock["comfyui"]
    repo = git_cache(cache, COMFYUI_GIT_NAME, comfyui["repo"], comfyui["commit"])
    return file_at(repo, comfyui["commit"], "requirements.txt")


def read_locks(sdenv_lock, lock_dir, platform, inputs_of=None):
    """{python: (file name, text, packages)} for every Python of platform, each checked against the lock
    (inputs_of: comfyui_lock_inputs for ComfyUI's locks)."""
    locks = {}
    for python in PYTHONS[platform]:
        name = lock_file_name(platform, python)
        path = os.path.join(lock_dir, name)
        if not os.path.isfile(path):
            raise LockError(f"There is no venv lock {name} in {lock_dir}: run make lock-venv.")
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
        check_lock_text(text, sdenv_lock, platform, python, name, inputs_of=inputs_of)
        locks[python] = (name, text, parse_packages(text))
    return locks


# --- make bundle ------------------------------------------------------------------------------------------


class IndexListing:
    """Index pages read once per project name."""

    def __init__(self, index_url):
        self.index_url = index_url
        self.pages = {}

    def files(self, name):
        key = normalize(name)
        if key not in self.pages:
            self.pages[key] = list_files(self.index_url, key)
        return self.pages[key]


def progress_printer(label):
    def show(done, total):
        share = f"{done * 100 // total}% of {total / 1e6:.0f} MB" if total else f"{done / 1e6:.0f} MB"
        say(f"  {label}: {share}")

    return show


def add_wheelhouse(out, locks, platform, index, uv, index_url):
    """Fetch one file per package and Python; build pure-Python sdists into wheels. Returns manifest rows."""
    wheelhouse = os.path.join(out, "wheelhouse")
    os.makedirs(wheelhouse, exist_ok=True)
    rows, built, needs_compiler = {}, {}, []
    for python, (_, _, packages) in sorted(locks.items()):
        priority = target_tags(platform, python)
        for key, package in sorted(packages.items()):
            listed = [f for f in index.files(key) if f["sha256"]]
            entry = choose_file(listed, package["hashes"], priority)
            if entry is None:
                raise BundleError(
                    f"The index offers no file of {package['name']}=={package['version']} with a locked sha256 "
                    f"that installs on {platform} / Python {python}: run make lock-venv again."
                )
            dest = os.path.join(wheelhouse, entry["filename"])
            if entry["filename"] not in rows:
                fetch(entry["url"], dest, entry["sha256"], progress_printer(entry["filename"]))
                rows[entry["filename"]] = {"package": key, "version": package["version"], "sha256": entry["sha256"],
                                           "pythons": []}  # fmt: skip
            rows[entry["filename"]]["pythons"].append(python)
            if entry["filename"].endswith(".whl") or entry["filename"] in built:
                continue
            # Platform wheels for other targets mean compiled code: name it instead of starting a long build.
            same_version = [
                f["filename"]
                for f in listed
                if f["sha256"] in package["hashes"] and f["filename"].endswith(".whl")
            ]
            if any(not is_pure_wheel(name) for name in same_version):
                needs_compiler.append(f"{package['name']}=={package['version']}")
                continue
            wheel = build_pure_wheel(uv, dest, wheelhouse, index_url)
            if wheel is None:
                needs_compiler.append(f"{package['name']}=={package['version']}")
                continue
            built[entry["filename"]] = {"package": key, "version": package["version"], "sdist_sha256": entry["sha256"],
                                        "wheel": os.path.basename(wheel), "wheel_sha256": sha256_file(wheel)}  # fmt: skip
    if needs_compiler:
        raise BundleError(
            f"{', '.join(sorted(set(needs_compiler)))} has no wheel for {platform} and needs a compiler to build: "
            "build it on a machine of that platform into the bundle's wheelhouse, or pin a version with wheels."
        )
    return rows, list(built.values())


def build_pure_wheel(uv, sdist, wheelhouse, index_url):
    """Build sdist into a wheel next to it; the wheel's path, or None when it is not pure Python."""
    with tempfile.TemporaryDirectory(prefix="sdenv-build-") as tmp:
        argv = [uv, "build", "--quiet", "--wheel", "--out-dir", tmp, sdist,
                "--index-url", index_url or "https://pypi.org/simple"]  # fmt: skip
        completed = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "UV_NO_CONFIG": "1"},
                                   check=False)  # fmt: skip
        wheels = [name for name in os.listdir(tmp) if name.endswith(".whl")]
        if completed.returncode != 0 or len(wheels) != 1:
            raise BundleError(
                f"{os.path.basename(sdist)} could not be built into a wheel: {completed.stderr.strip()[-300:]}"
            )
        if not is_pure_wheel(wheels[0]):
            return None
        dest = os.path.join(wheelhouse, wheels[0])
        shutil.move(os.path.join(tmp, wheels[0]), dest)
        return dest


def git_pins(sdenv_lock, apps=("webui",)):
    """The repositories a bundle for apps carries: the WebUI, its sub-repositories, and ComfyUI when chosen."""
    pins = [{"dir": WEBUI_GIT_NAME, **sdenv_lock["webui"]}, *sdenv_lock["repositories"]]
    if "comfyui" in apps:
        pins.append({"dir": COMFYUI_GIT_NAME, "repo": sdenv_lock["comfyui"]["repo"],
                     "commit": sdenv_lock["comfyui"]["commit"]})  # fmt: skip
    return pins


def add_git(out, sdenv_lock, cache, apps=("webui",)):
    rows = []
    for entry in git_pins(sdenv_lock, apps):
        name = entry["dir"]
        dest = os.path.join(out, "git", f"{name}.git")
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        history = "full"
        if git_mirror_head(dest) != entry["commit"]:
            say(f"git repository {name} at {entry['commit'][:10]} ...")
            history = write_git_mirror(
                git_cache(cache, name, entry["repo"], entry["commit"]), entry["commit"], dest
            )
            if history == "shallow":
                say(
                    f"  {entry['repo']} lacks some history objects: {name} is carried as the pinned commit only"
                )
        elif os.path.exists(os.path.join(dest, "shallow")):
            history = "shallow"
        rows.append({"dir": name, "repo": entry["repo"], "commit": entry["commit"], "path": f"git/{name}.git",
                     "history": history})  # fmt: skip
    return rows


def add_archives(out, sdenv_lock, cache):
    rows = {}
    for name in ("clip", "open_clip"):
        spec = sdenv_lock["webui_venv"][name]
        dest = os.path.join(out, "archives", spec["file"])
        try:
            check_archive(dest, spec)
        except (VenvError, OSError):
            source = archive_cache(cache, spec)
            copy_verified(source, dest, sha256_file(source))
        rows[name] = {"file": f"archives/{spec['file']}", "tree": spec["tree"], "sha256": sha256_file(dest)}
    return rows


def add_uv(out, sdenv_lock, platform, index):
    pin = sdenv_lock["uv"]["wheels"].get(platform)
    if not pin:
        raise BundleError(f"lock.yml pins no uv wheel for {platform} (sdenv_lock.uv.wheels): add it.")
    listed = {f["filename"]: f for f in index.files("uv")}
    if pin["file"] not in listed:
        raise BundleError(f"The index has no {pin['file']}: check sdenv_lock.uv.")
    fetch(listed[pin["file"]]["url"], os.path.join(out, "tools", pin["file"]), pin["sha256"])
    return {"version": sdenv_lock["uv"]["version"], "file": f"tools/{pin['file']}", "sha256": pin["sha256"]}


def add_tokenizer(out, sdenv_lock, shipped_dir):
    clip = os.path.join(out, "archives", sdenv_lock["webui_venv"]["clip"]["file"])
    files = derived_files(clip)
    for name in os.listdir(shipped_dir):
        with open(os.path.join(shipped_dir, name), "rb") as handle:
            files[name] = handle.read()
    check_hashes(files, sdenv_lock["clip_tokenizer"]["sha256"])
    for name, data in files.items():
        path = os.path.join(out, "tokenizer", name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(data)
    return {"revision": sdenv_lock["clip_tokenizer"]["revision"], "files": sorted(files)}


def add_controller(out, requirements_path, platform, index):
    """The controller's requirements.txt as wheels for platform and Pythons 3.11-3.13, plus a hashed copy."""
    pins = []
    with open(requirements_path, encoding="utf-8") as handle:
        for line in handle:
            line = line.split("#", 1)[0].strip()
            if line:
                name, _, version = line.partition("==")
                pins.append((name, version))
    directory = os.path.join(out, "controller")
    os.makedirs(directory, exist_ok=True)
    lines = []
    for name, version in pins:
        files = [f for f in index.files(name) if f["sha256"] and f["filename"].endswith(".whl")]
        files = [f for f in files if version_of(f["filename"]) == version]
        chosen = {}
        for python in CONTROLLER_PYTHONS:
            entry = choose_file(files, [f["sha256"] for f in files], target_tags(platform, python))
            if entry is None:
                raise BundleError(
                    f"The index has no wheel of {name}=={version} for {platform} / Python {python}."
                )
            chosen[entry["filename"]] = entry
        for entry in chosen.values():
            fetch(entry["url"], os.path.join(directory, entry["filename"]), entry["sha256"])
        hashes = " ".join(
            f"--hash=sha256:{e['sha256']}" for e in sorted(chosen.values(), key=lambda e: e["sha256"])
        )
        lines.append(f"{name}=={version} {hashes}")
    write_text_atomic(os.path.join(directory, "requirements.txt"), "\n".join(lines) + "\n")
    return {
        "pythons": CONTROLLER_PYTHONS,
        "requirements": "controller/requirements.txt",
        "packages": len(pins),
    }


def version_of(filename):
    parts = filename.split("-")
    return parts[1] if len(parts) > 1 else ""


def bundle_apps(spec):
    """The apps a bundle serves, from the spec's sdenv_apps (the WebUI always; ComfyUI when chosen). The Mac
    apps are Homebrew casks, which no bundle carries (the preflight refuses them with BUNDLE=)."""
    apps = ["webui"] + (["comfyui"] if "comfyui" in spec.get("apps", []) else [])
    if "comfyui" in apps and "comfyui" not in spec["lock"]:
        raise BundleError(
            "comfyui is in sdenv_apps but lock.yml pins no ComfyUI (sdenv_lock.comfyui): add its pin, or take "
            "comfyui out of sdenv_apps."
        )
    return apps


def comfyui_locks(sdenv_lock, venv_lock_dir, platform):
    return read_locks(
        sdenv_lock, os.path.join(venv_lock_dir, COMFYUI_LOCK_DIR), platform, comfyui_lock_inputs
    )


def build_bundle(spec_path, out, cache, index_url="", archive=False):
    with open(spec_path, encoding="utf-8") as handle:
        spec = json.load(handle)
    sdenv_lock, platform = spec["lock"], spec["platform"]
    platforms_of(sdenv_lock, [platform])
    apps = bundle_apps(spec)
    os.makedirs(out, exist_ok=True)
    if os.path.exists(os.path.join(out, SUMS)):
        os.unlink(os.path.join(out, SUMS))  # the bundle is incomplete until its sums are written again
    uv = uv_command()
    locks = read_locks(sdenv_lock, spec["venv_lock_dir"], platform)
    for name, text, _ in locks.values():
        write_text_atomic(os.path.join(out, "locks", name), text)
    app_locks = comfyui_locks(sdenv_lock, spec["venv_lock_dir"], platform) if "comfyui" in apps else {}
    stale_app_locks = os.path.join(out, "locks", COMFYUI_LOCK_DIR)
    if not app_locks and os.path.isdir(stale_app_locks):
        shutil.rmtree(stale_app_locks)  # a bundle made again without comfyui must not look like one with it
    for name, text, _ in app_locks.values():
        write_text_atomic(os.path.join(out, "locks", COMFYUI_LOCK_DIR, name), text)
    index = IndexListing(index_url)
    manifest = {
        "format": 1,
        "platform": platform,
        "apps": apps,
        "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "locks": {python: f"locks/{name}" for python, (name, _, _) in locks.items()},
        # The git sources first: a missing commit or a partial mirror stops before gigabytes are fetched.
        "git": add_git(out, sdenv_lock, cache, apps),
        "archives": add_archives(out, sdenv_lock, cache),
        "uv": add_uv(out, sdenv_lock, platform, index),
    }
    manifest["tokenizer"] = add_tokenizer(out, sdenv_lock, spec["shipped_tokenizer_dir"])
    say(f"wheelhouse for {platform} ({', '.join(sorted(locks))}) ...")
    manifest["wheels"], manifest["built"] = add_wheelhouse(out, locks, platform, index, uv, index_url)
    if app_locks:
        say(f"ComfyUI's wheels for {platform} ({', '.join(sorted(app_locks))}) ...")
        wheels, built = add_wheelhouse(out, app_locks, platform, index, uv, index_url)
        # One "built" list for both venvs: each venv adds the built wheels' hashes to its own lock's entries.
        known = {row["wheel"] for row in manifest["built"]}
        manifest["built"] += [row for row in built if row["wheel"] not in known]
        manifest["comfyui"] = {
            "commit": sdenv_lock["comfyui"]["commit"],
            "locks": {
                python: f"locks/{COMFYUI_LOCK_DIR}/{name}" for python, (name, _, _) in app_locks.items()
            },
            "wheels": wheels,
        }
    manifest["models"] = [
        {"name": m["name"], "file": f"models/{m['file']}", "sha256": m["sha256"], "kind": m["kind"]}
        for m in spec.get("models", [])
    ]
    for model in manifest["models"]:
        if not os.path.isfile(os.path.join(out, model["file"])):
            raise BundleError(
                f"The model {model['name']} is not in {out}/models: run make bundle (it fetches it first)."
            )
    # The fleet cache (spec without controller_requirements) serves hosts the controller already reaches:
    # they need no controller environment of their own.
    if spec.get("controller_requirements"):
        say("controller requirements ...")
        manifest["controller"] = add_controller(out, spec["controller_requirements"], platform, index)
    write_json(os.path.join(out, MANIFEST), manifest)
    known = {m["file"]: m["sha256"] for m in manifest["models"]}
    total = write_sums(out, known)
    say(f"bundle for {platform} written to {out}: {total / 1e9:.2f} GB")
    if archive:
        tar_path = out.rstrip("/") + ".tar"
        with tarfile.open(tar_path + ".part", "w") as tar:
            tar.add(out, arcname=os.path.basename(out.rstrip("/")))
        os.replace(tar_path + ".part", tar_path)
        say(f"archive: {tar_path}")


# --- make bundle-check ------------------------------------------------------------------------------------


def check_wheels(bundle, locks, wheel_rows, prefix):
    """The bundle's copy of each lock (locks/<prefix><name>) equals the repository's, and its wheel rows offer a
    locked file of every package for every Python."""
    for python, (name, text, packages) in locks.items():
        try:
            with open(os.path.join(bundle, "locks", prefix + name), encoding="utf-8") as handle:
                same = handle.read() == text
        except FileNotFoundError:
            same = False
        if not same:
            raise BundleError(
                f"The bundle's {prefix}{name} differs from the repository's: make the bundle again."
            )
        offered = {}
        for row in wheel_rows.values():
            if python in row["pythons"]:
                offered[row["package"]] = row["sha256"]
        for key, package in packages.items():
            if offered.get(key) not in package["hashes"]:
                raise BundleError(f"The bundle has no locked file of {package['name']}=={package['version']} for "
                                  f"Python {python}: make the bundle again.")  # fmt: skip


def check_bundle(sdenv_lock, lock_dir, bundle):
    """Raise BundleError with one sentence unless the bundle verifies against its sums and today's lock."""
    count = verify_sums(bundle)
    manifest = read_manifest(bundle)
    platform = manifest["platform"]
    apps = manifest.get("apps", ["webui"])
    check_wheels(bundle, read_locks(sdenv_lock, lock_dir, platform), manifest["wheels"], "")
    if "comfyui" in apps:
        if "comfyui" not in sdenv_lock:
            raise BundleError("The bundle carries ComfyUI but lock.yml pins none: make the bundle again.")
        check_wheels(bundle, comfyui_locks(sdenv_lock, lock_dir, platform), manifest["comfyui"]["wheels"],
                     COMFYUI_LOCK_DIR + "/")  # fmt: skip
    entries = {e["dir"]: e for e in manifest["git"]}
    for pin in git_pins(sdenv_lock, apps):
        entry = entries.get(pin["dir"])
        if (
            not entry
            or entry["commit"] != pin["commit"]
            or git_mirror_head(os.path.join(bundle, entry["path"])) != pin["commit"]
        ):
            raise BundleError(
                f"The bundle's git/{pin['dir']}.git is not at the pinned {pin['commit'][:10]}: make the bundle again."
            )
    for name in ("clip", "open_clip"):
        check_archive(
            os.path.join(bundle, "archives", sdenv_lock["webui_venv"][name]["file"]),
            sdenv_lock["webui_venv"][name],
        )
    pinned = {m["name"]: m.get("sha256") for m in sdenv_lock.get("models", [])}
    for model in manifest["models"]:
        if pinned.get(model["name"]) != model["sha256"]:
            raise BundleError(
                f"The bundle's model {model['name']} is not the one the lock pins: make the bundle again."
            )
    uv_pin = sdenv_lock["uv"]["wheels"][platform]
    if manifest["uv"]["sha256"] != uv_pin["sha256"]:
        raise BundleError("The bundle's uv is not the version the lock pins: make the bundle again.")
    say(f"bundle {bundle} ({platform}) verifies: {count} files match SHA256SUMS and the lock.")
    return manifest


def built_hashes(manifest):
    """{package: [wheel sha256]} the bundle adds to its locks: wheels it built from locked sdists."""
    extra = {}
    for row in manifest.get("built", []):
        extra.setdefault(row["package"], []).append(row["wheel_sha256"])
    return extra


FLEET_CACHE_SETTING = "sdenv_fleet_cache_dir"


def fleet_cache_dir(inventory, root):
    """make fleet-cache-prune's cache when FLEET_CACHE_DIR= is not given: sdenv_fleet_cache_dir as make
    provision sees it, from the inventory's settings.yml (group_vars/all/settings.yml beside the inventory;
    for the default inventory, the repository's) when it is set there, else the role default
    (roles/offline_bundle/defaults/main.yml). A template is rendered by Ansible's own templating, with the
    settings file's variables (the default's `lookup('ansible.builtin.env', 'HOME')` is the controller's).
    Returns (path, where it came from). Raises BundleError naming the setting when it cannot be rendered
    here (it names a variable only a play knows)."""
    from ansible.parsing.dataloader import DataLoader
    from ansible.plugins.loader import init_plugin_loader
    from ansible.template import Templar

    base = inventory if os.path.isdir(inventory) else os.path.dirname(inventory)
    settings = os.path.join(base, "group_vars", "all", "settings.yml")
    loader = DataLoader()
    # Trusted as templates, as Ansible trusts its own group_vars files (ansible-core 2.19 renders only those).
    variables = (
        (loader.load_from_file(settings, trusted_as_template=True) or {}) if os.path.isfile(settings) else {}
    )
    source = f"{FLEET_CACHE_SETTING} in {settings}"
    if FLEET_CACHE_SETTING not in variables:
        defaults = os.path.join(root, "roles", "offline_bundle", "defaults", "main.yml")
        variables = {**loader.load_from_file(defaults, trusted_as_template=True), **variables}
        source = f"{FLEET_CACHE_SETTING}'s default"
    with warnings.catch_warnings():  # a second call in one process (the unit tests) only warns
        warnings.simplefilter("ignore")
        init_plugin_loader()  # the template's lookups (ansible.builtin.env) are collection plugins
    value = variables[FLEET_CACHE_SETTING]
    try:
        path = Templar(loader=loader, variables=variables).template(value)
    except Exception as exc:  # any templating failure (undefined, a lookup's) gets the same sentence
        raise BundleError(
            f"{source} ({value}) cannot be worked out outside a play ({exc}): give the cache's path as "
            "FLEET_CACHE_DIR=."
        ) from exc
    if not isinstance(path, str) or not path.strip():
        raise BundleError(
            f"{source} is {path!r}, not a directory: set it to the fleet cache's path or give FLEET_CACHE_DIR=."
        )
    return os.path.expanduser(path), source
