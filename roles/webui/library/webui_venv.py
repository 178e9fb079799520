#!/usr/bin/python
"""Ansible module: the WebUI's venv, built from the lock's pins and left alone while they hold."""

DOCUMENTATION = r"""
module: webui_venv
short_description: Build the WebUI's venv from its hashed lock with uv, then run the WebUI's own preparation
description:
  - The venv's inputs (interpreter real path and version, the lock file's sha256, the sha256 of
    requirements_versions.txt, the CLIP archive's tree, uv's version) are recorded in a marker file written last.
    While they are unchanged the venv is not touched and nothing is installed or fetched.
  - Otherwise the venv is removed and built again - C(uv pip sync --require-hashes) of the lock (exactly the
    locked set, every file checked), CLIP from its pinned archive (--no-deps, --no-build-isolation) - and the
    WebUI's own webui.sh --exit finishes the preparation. A kill at any point leaves no marker, so the next run
    starts over and converges.
  - The lock must have been resolved from this tree's requirements_versions.txt (its header says), else the
    run stops with one sentence (run make lock-venv).
  - With I(wheelhouse) every package comes from that directory and nothing uses the network.
  - Run it as the WebUI's user (become_user).
options:
  webui_dir: {description: The WebUI tree., type: path, required: true}
  venv_dir: {description: The venv., type: path, required: true}
  python: {description: The interpreter the venv is made with., type: str, required: true}
  lock_path: {description: "The platform's venv lock for this Python's X.Y, or a directory holding
    <platform>-py<X.Y>.txt files.", type: path, required: true}
  platform: {description: "This host's platform key (<system>-<machine>), to pick the lock file.", type: str,
    required: true}
  uv: {description: The uv executable., type: path, required: true}
  uv_cache_dir: {description: uv's cache (kept outside the home so a reset-dummy keeps it warm)., type: path,
    required: true}
  clip: {description: "The pinned CLIP archive {url, file, tree, sha256}.", type: dict, required: true}
  archive_dir: {description: A local directory holding the archive (no network)., type: path, default: ""}
  index_url: {description: A package index instead of PyPI., type: str, default: ""}
  torch_index_url: {description: An extra index for torch (lock.yml's torch index_url)., type: str, default: ""}
  wheelhouse: {description: A local directory of wheels; no network when set., type: path, default: ""}
  bundle: {description: "An offline bundle: the wheels it built from locked sdists (its manifest's built list)
    are accepted besides the lock's hashes.", type: path, default: ""}
  cache_dir: {description: Where downloaded archives are kept., type: path, required: true}
  log_path: {description: uv's and the launcher's output for the last bootstrap., type: path, required: true}
  launch: {description: Finish with the WebUI's own webui.sh --exit., type: bool, default: true}
  progress_file: {description: "A file to write the install's progress to (the action plugin names it and
    shows it): uv cache growth in MB and the lock's package count.", type: path, default: ""}
"""

EXAMPLES = r"""
- name: The WebUI's venv
  webui_venv:
    webui_dir: /home/dummy/stable-diffusion-webui
    venv_dir: /home/dummy/stable-diffusion-webui/venv
    python: /usr/bin/python3.11
    lock_path: /home/dummy/.cache/sdenv/venv-lock
    platform: Linux-x86_64
    uv: /var/lib/sdenv/tools/uv-0.13.8/uv
    uv_cache_dir: /var/lib/sdenv/uv-cache/dummy
    clip: "{{ sdenv_lock.webui_venv.clip }}"
    cache_dir: /home/dummy/.cache/sdenv/archives
    log_path: /home/dummy/.cache/sdenv/webui-venv-bootstrap.log
"""

RETURN = r"""
inputs: {description: The venv's recorded inputs., type: dict, returned: always}
digest: {description: Digest of the inputs (recorded in the provision record)., type: str, returned: always}
lock: {description: The lock file the venv holds., type: str, returned: always}
rebuilt_because: {description: Why the venv was (or would be) built; empty when it was left alone., type: str,
  returned: always}
"""

import json
import os
import shutil
import subprocess
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.step_progress import CacheWatch, lock_packages
from ansible.module_utils.venv_lock import LockError, lock_file_name, parse_header
from ansible.module_utils.webui_venv_plan import (
    VenvError,
    build_steps,
    digest,
    effective_lock,
    inputs,
    is_current,
    locate_archive,
    pip_source_env,
    read_marker,
    run_launch,
    run_step,
    sha256_file,
    tail,
    uv_source_args,
    write_marker,
)


def interpreter_identity(module, python):
    path = python if os.path.isabs(python) else module.get_bin_path(python)
    if not path or not os.access(path, os.X_OK):
        module.fail_json(msg=f"The WebUI's Python {python} is not an executable on this host: run the python role "
                         "first or set sdenv_webui_python.")  # fmt: skip
    completed = subprocess.run(
        [path, "-c", "import sys, venv; print('%d.%d.%d' % sys.version_info[:3])"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if completed.returncode != 0:
        module.fail_json(msg=f"The WebUI's Python {path} cannot make a venv ({completed.stderr.strip()[-200:]}): "
                         "install its venv module (Debian: python3-venv).")  # fmt: skip
    return os.path.realpath(path), completed.stdout.strip()


def lock_for(module, lock_path, platform, version, requirements_sha256):
    """(path, text) of the lock for this platform and Python, checked against the tree's requirements."""
    python = ".".join(version.split(".")[:2])
    path = (
        os.path.join(lock_path, lock_file_name(platform, python)) if os.path.isdir(lock_path) else lock_path
    )
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError:
        module.fail_json(msg=f"There is no venv lock for {platform} / Python {python} ({path}): run make lock-venv "
                         "(it needs PyPI) and commit the new file.")  # fmt: skip
    try:
        _, recorded = parse_header(text)
    except LockError as exc:
        module.fail_json(
            msg=f"The venv lock {path} is not one make lock-venv wrote ({exc}): run make lock-venv."
        )
    if recorded.get("requirements_sha256") != requirements_sha256 or recorded.get("python") != python:
        module.fail_json(msg=f"The venv lock {os.path.basename(path)} was resolved from another requirements_versions.txt "
                         "or Python than this WebUI tree has: run make lock-venv (it needs PyPI) and commit the new files.")  # fmt: skip
    return path, text


def built_wheels(module, bundle):
    """{package: [wheel sha256]} the bundle built from locked sdists (recorded in its manifest)."""
    if not bundle:
        return {}
    try:
        with open(os.path.join(bundle, "manifest.json"), encoding="utf-8") as handle:
            rows = json.load(handle).get("built", [])
    except (OSError, ValueError) as exc:
        module.fail_json(
            msg=f"The bundle {bundle} has no readable manifest.json ({exc}): run make bundle-check."
        )
    extra = {}
    for row in rows:
        extra.setdefault(row["package"], []).append(row["wheel_sha256"])
    return extra


def uv_version(module, uv):
    completed = subprocess.run([uv, "--version"], capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        module.fail_json(msg=f"uv at {uv} does not run ({completed.stderr.strip()[-200:]}): provision again.")
    return completed.stdout.split()[1]


def main():
    module = AnsibleModule(
        argument_spec={
            "webui_dir": {"type": "path", "required": True},
            "venv_dir": {"type": "path", "required": True},
            "python": {"type": "str", "required": True},
            "lock_path": {"type": "path", "required": True},
            "platform": {"type": "str", "required": True},
            "uv": {"type": "path", "required": True},
            "uv_cache_dir": {"type": "path", "required": True},
            "clip": {"type": "dict", "required": True},
            "archive_dir": {"type": "path", "default": ""},
            "index_url": {"type": "str", "default": ""},
            "torch_index_url": {"type": "str", "default": ""},
            "wheelhouse": {"type": "path", "default": ""},
            "bundle": {"type": "path", "default": ""},
            "cache_dir": {"type": "path", "required": True},
            "log_path": {"type": "path", "required": True},
            "launch": {"type": "bool", "default": True},
            "progress_file": {"type": "path", "default": ""},
        },
        supports_check_mode=True,
    )
    p = module.params
    requirements = os.path.join(p["webui_dir"], "requirements_versions.txt")
    if not os.path.isfile(requirements):
        module.fail_json(msg=f"The WebUI tree {p['webui_dir']} has no requirements_versions.txt: it is not the "
                         "pinned WebUI.")  # fmt: skip
    python, version = interpreter_identity(module, p["python"])
    requirements_sha256 = sha256_file(requirements)
    lock_path, lock_text = lock_for(module, p["lock_path"], p["platform"], version, requirements_sha256)
    wanted = inputs(python, version, sha256_file(lock_path), requirements_sha256, p["clip"].get("tree", ""),
                    uv_version(module, p["uv"]), built_wheels(module, p["bundle"]))  # fmt: skip
    result = {"inputs": wanted, "digest": digest(wanted), "lock": lock_path, "rebuilt_because": ""}
    if is_current(p["venv_dir"], wanted):
        module.exit_json(changed=False, **result)
    marker = read_marker(p["venv_dir"])
    if marker is None:
        why = "no completed bootstrap recorded" if os.path.exists(p["venv_dir"]) else "no venv yet"
    else:
        old = marker.get("inputs", {})
        why = "changed: " + ", ".join(sorted(k for k in wanted if old.get(k) != wanted[k]))
    result["rebuilt_because"] = why
    if module.check_mode:
        module.exit_json(changed=True, **result)

    env = dict(os.environ)
    env.update({"PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONUNBUFFERED": "1", "UV_CACHE_DIR": p["uv_cache_dir"],
                "UV_NO_CONFIG": "1", "UV_PYTHON_DOWNLOADS": "never", "UV_NO_PROGRESS": "1"})  # fmt: skip
    env.update(pip_source_env(p["index_url"], p["wheelhouse"]))
    try:
        if os.path.lexists(p["venv_dir"]):
            shutil.rmtree(p["venv_dir"])
        clip, _, _ = locate_archive(p["clip"], p["archive_dir"], p["cache_dir"])
        os.makedirs(os.path.dirname(p["log_path"]), exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="sdenv-venv-") as tmp:
            lock_file = os.path.join(tmp, os.path.basename(lock_path))
            with open(lock_file, "w", encoding="utf-8") as handle:
                handle.write(effective_lock(lock_text, built_wheels(module, p["bundle"])))
            source = uv_source_args(p["index_url"], p["wheelhouse"], p["torch_index_url"])
            # uv prints no progress without a terminal: the action shows the cache's growth instead.
            watch = CacheWatch(p["progress_file"], p["uv_cache_dir"], "WebUI venv", "install",
                               lock_packages(lock_text))  # fmt: skip
            if p["progress_file"]:
                watch.start()
            try:
                with open(p["log_path"], "w", encoding="utf-8") as log:
                    for description, argv, cwd in build_steps(python, p["venv_dir"], p["webui_dir"], p["uv"],
                                                              lock_file, clip, source):  # fmt: skip
                        watch.phase = description.split(" (")[0]
                        run_step(description, argv, cwd, env, log)
                    if p["launch"]:
                        watch.phase = "the WebUI's own preparation (webui.sh --exit)"
                        run_launch(["bash", "webui.sh", "--exit"], p["webui_dir"], env, log)
            finally:
                watch.stop()
        write_marker(p["venv_dir"], wanted)
    except (VenvError, OSError) as exc:
        module.fail_json(msg=str(exc), log_tail=tail(p["log_path"]))
    module.exit_json(changed=True, **result)


if __name__ == "__main__":
    main()
