#!/usr/bin/python
"""Ansible module: ComfyUI's venv, exactly its hashed lock, built with uv and left alone while it holds."""

DOCUMENTATION = r"""
module: comfyui_venv
short_description: Build ComfyUI's venv from its hashed lock with uv
description:
  - The same rules as the WebUI's venv (role webui, module_utils/webui_venv_plan.py, whose helpers this
    module uses) - the inputs (interpreter real path and version, the lock file's sha256, the sha256 of the
    tree's requirements.txt, uv's version) are recorded in a marker written last; while they hold nothing is
    touched or fetched. Otherwise the venv is made again and C(uv pip sync --require-hashes) installs exactly
    the locked set (every file checked by its sha256).
  - The lock must have been resolved from this tree's requirements.txt and this Python (its header says),
    else one sentence says to run make lock-venv. With I(wheelhouse) nothing uses the network.
  - Run it as the tree's user (become_user).
options:
  comfyui_dir: {description: The ComfyUI tree., type: path, required: true}
  venv_dir: {description: The venv., type: path, required: true}
  python: {description: The interpreter the venv is made with., type: str, required: true}
  lock_dir: {description: "The directory of ComfyUI's locks (<platform>-py<X.Y>.txt).", type: path,
    required: true}
  platform: {description: "This host's platform key (<system>-<machine>).", type: str, required: true}
  uv: {description: The uv executable., type: path, required: true}
  uv_cache_dir: {description: uv's cache., type: path, required: true}
  index_url: {description: A package index instead of PyPI., type: str, default: ""}
  torch_index_url: {description: An extra index for torch., type: str, default: ""}
  wheelhouse: {description: A local directory of wheels; no network when set., type: path, default: ""}
  log_path: {description: uv's output for the last build., type: path, required: true}
"""

EXAMPLES = r"""
- name: ComfyUI's venv
  comfyui_venv:
    comfyui_dir: /home/dummy/ComfyUI
    venv_dir: /home/dummy/ComfyUI/venv
    python: /usr/bin/python3.11
    lock_dir: /home/dummy/.cache/sdenv/venv-lock/comfyui
    platform: Linux-x86_64
    uv: /var/lib/sdenv/tools/uv-0.13.8/uv
    uv_cache_dir: /var/lib/sdenv/uv-cache/dummy
    log_path: /home/dummy/.cache/sdenv/comfyui-venv.log
"""

RETURN = r"""
digest: {description: Digest of the inputs (recorded in the provision record)., type: str, returned: always}
lock: {description: The lock file the venv holds., type: str, returned: always}
rebuilt_because: {description: Why the venv was (or would be) built; empty when left alone., type: str,
  returned: always}
"""

import os
import shutil
import subprocess

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.venv_lock import LockError, lock_file_name, parse_header
from ansible.module_utils.webui_venv_plan import (
    VenvError,
    digest,
    inputs,
    is_current,
    read_marker,
    run_step,
    sha256_file,
    tail,
    uv_source_args,
    write_marker,
)


def identity(module, python):
    path = python if os.path.isabs(python) else module.get_bin_path(python)
    ran = subprocess.run([path or python, "-c", "import sys, venv; print('%d.%d.%d' % sys.version_info[:3])"],
                         capture_output=True, text=True, check=False) if path else None  # fmt: skip
    if ran is None or ran.returncode != 0:
        module.fail_json(msg=f"ComfyUI's Python {python} cannot make a venv on this host: run the python role first "
                         "(Debian: install python3-venv).")  # fmt: skip
    return os.path.realpath(path), ran.stdout.strip()


def main():
    module = AnsibleModule(
        argument_spec={
            "comfyui_dir": {"type": "path", "required": True},
            "venv_dir": {"type": "path", "required": True},
            "python": {"type": "str", "required": True},
            "lock_dir": {"type": "path", "required": True},
            "platform": {"type": "str", "required": True},
            "uv": {"type": "path", "required": True},
            "uv_cache_dir": {"type": "path", "required": True},
            "index_url": {"type": "str", "default": ""},
            "torch_index_url": {"type": "str", "default": ""},
            "wheelhouse": {"type": "path", "default": ""},
            "log_path": {"type": "path", "required": True},
        },
        supports_check_mode=True,
    )
    p = module.params
    requirements = os.path.join(p["comfyui_dir"], "requirements.txt")
    if not os.path.isfile(requirements):
        module.fail_json(msg=f"The ComfyUI tree {p['comfyui_dir']} has no requirements.txt: it is not the pinned "
                         "ComfyUI.")  # fmt: skip
    python, version = identity(module, p["python"])
    xy = ".".join(version.split(".")[:2])
    lock = os.path.join(p["lock_dir"], lock_file_name(p["platform"], xy))
    try:
        with open(lock, encoding="utf-8") as handle:
            _, recorded = parse_header(handle.read())
    except OSError:
        module.fail_json(msg=f"There is no ComfyUI venv lock for {p['platform']} / Python {xy} ({lock}): run make "
                         "lock-venv (it needs PyPI) and commit the new file.")  # fmt: skip
    except LockError as exc:
        module.fail_json(msg=f"The ComfyUI venv lock {lock} is not one make lock-venv wrote ({exc}): run make "
                         "lock-venv.")  # fmt: skip
    requirements_sha256 = sha256_file(requirements)
    if recorded.get("app") != "comfyui" or recorded.get("requirements_sha256") != requirements_sha256:
        module.fail_json(msg=f"The ComfyUI venv lock {os.path.basename(lock)} was resolved from another "
                         "requirements.txt than this ComfyUI tree has: run make lock-venv (it needs PyPI) and "
                         "commit the new files.")  # fmt: skip
    uv = subprocess.run([p["uv"], "--version"], capture_output=True, text=True, check=False)
    if uv.returncode != 0:
        module.fail_json(msg=f"uv at {p['uv']} does not run ({uv.stderr.strip()[-200:]}): provision again.")
    wanted = inputs(python, version, sha256_file(lock), requirements_sha256, "", uv.stdout.split()[1])
    result = {"digest": digest(wanted), "lock": lock, "rebuilt_because": ""}
    if is_current(p["venv_dir"], wanted):
        module.exit_json(changed=False, **result)
    marker = read_marker(p["venv_dir"])
    old = (marker or {}).get("inputs", {})
    result["rebuilt_because"] = (
        "changed: " + ", ".join(sorted(k for k in wanted if old.get(k) != wanted[k]))
        if marker
        else "no venv yet"
    )
    if module.check_mode:
        module.exit_json(changed=True, **result)
    env = dict(os.environ, UV_CACHE_DIR=p["uv_cache_dir"], UV_NO_CONFIG="1", UV_PYTHON_DOWNLOADS="never",
               UV_NO_PROGRESS="1", PIP_DISABLE_PIP_VERSION_CHECK="1")  # fmt: skip
    vpy = os.path.join(p["venv_dir"], "bin", "python")
    source = uv_source_args(p["index_url"], p["wheelhouse"], p["torch_index_url"])
    try:
        if os.path.lexists(p["venv_dir"]):
            shutil.rmtree(p["venv_dir"])
        os.makedirs(os.path.dirname(p["log_path"]), exist_ok=True)
        with open(p["log_path"], "w", encoding="utf-8") as log:
            run_step("create ComfyUI's venv", [python, "-m", "venv", "--without-pip", p["venv_dir"]],
                     p["comfyui_dir"], env, log)  # fmt: skip
            run_step("install ComfyUI's locked packages (uv pip sync --require-hashes)",
                     [p["uv"], "pip", "sync", "--require-hashes", "--python", vpy, *source, lock],
                     p["comfyui_dir"], env, log)  # fmt: skip
        write_marker(p["venv_dir"], wanted)
    except (VenvError, OSError) as exc:
        module.fail_json(msg=str(exc).replace("The WebUI venv bootstrap", "ComfyUI's venv build"),
                         log_tail=tail(p["log_path"]))  # fmt: skip
    module.exit_json(changed=True, **result)


if __name__ == "__main__":
    main()
