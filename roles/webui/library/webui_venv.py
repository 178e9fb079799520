#!/usr/bin/python
"""Ansible module: the WebUI's venv, built from the lock's pins and left alone while they hold."""

DOCUMENTATION = r"""
module: webui_venv
short_description: Build the WebUI's venv from pinned inputs, then run the WebUI's own preparation with --exit
description:
  - The venv's inputs (interpreter real path and version, a digest of the lock entries it is built from, the
    sha256 of requirements_versions.txt) are recorded in a marker file written last. While they are unchanged
    the venv is not touched and pip never runs.
  - Otherwise the venv is removed and built again, in order - wheel and the pinned setuptools, this platform's
    torch/torchvision pins, the pinned CLIP and open_clip archives with --no-build-isolation (setuptools >= 82
    broke them), requirements_versions.txt - and the WebUI's own webui.sh --exit finishes the preparation.
    A kill at any point leaves no marker, so the next run starts over and converges.
  - With I(wheelhouse) every package and archive comes from that directory and nothing uses the network.
  - Run it as the WebUI's user (become_user).
options:
  webui_dir: {description: The WebUI tree., type: path, required: true}
  venv_dir: {description: The venv., type: path, required: true}
  python: {description: The interpreter the venv is made with., type: str, required: true}
  pins:
    description: "The lock's pins - webui_commit, wheel, setuptools, torch {torch, torchvision, index_url},
      clip and open_clip {url, file, sha256}."
    type: dict
    required: true
  index_url: {description: A pip index instead of PyPI., type: str, default: ""}
  wheelhouse: {description: A local directory of wheels and the archives; no network when set., type: path, default: ""}
  cache_dir: {description: Where downloaded archives are kept., type: path, required: true}
  log_path: {description: pip's and the launcher's output for the last bootstrap., type: path, required: true}
  launch: {description: Finish with the WebUI's own webui.sh --exit., type: bool, default: true}
"""

EXAMPLES = r"""
- name: The WebUI's venv
  webui_venv:
    webui_dir: /home/dummy/stable-diffusion-webui
    venv_dir: /home/dummy/stable-diffusion-webui/venv
    python: /opt/homebrew/bin/python3.10
    pins: "{{ sdenv_webui_venv_pins }}"
    cache_dir: /home/dummy/.cache/sdenv/archives
    log_path: /home/dummy/.cache/sdenv/webui-venv-bootstrap.log
"""

RETURN = r"""
inputs: {description: The venv's recorded inputs., type: dict, returned: always}
digest: {description: Digest of the inputs (recorded in the provision record)., type: str, returned: always}
rebuilt_because: {description: Why the venv was (or would be) built; empty when it was left alone., type: str,
  returned: always}
"""

import os
import shutil
import subprocess

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.webui_venv_plan import (
    VenvError,
    build_steps,
    digest,
    inputs,
    is_current,
    locate_archive,
    pip_source_args,
    pip_source_env,
    read_marker,
    run_step,
    sha256_file,
    tail,
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


def main():
    module = AnsibleModule(
        argument_spec={
            "webui_dir": {"type": "path", "required": True},
            "venv_dir": {"type": "path", "required": True},
            "python": {"type": "str", "required": True},
            "pins": {"type": "dict", "required": True},
            "index_url": {"type": "str", "default": ""},
            "wheelhouse": {"type": "path", "default": ""},
            "cache_dir": {"type": "path", "required": True},
            "log_path": {"type": "path", "required": True},
            "launch": {"type": "bool", "default": True},
        },
        supports_check_mode=True,
    )
    p = module.params
    requirements = os.path.join(p["webui_dir"], "requirements_versions.txt")
    if not os.path.isfile(requirements):
        module.fail_json(msg=f"The WebUI tree {p['webui_dir']} has no requirements_versions.txt: it is not the "
                         "pinned WebUI.")  # fmt: skip
    python, version = interpreter_identity(module, p["python"])
    wanted = inputs(python, version, p["pins"], sha256_file(requirements))
    result = {"inputs": wanted, "digest": digest(wanted), "rebuilt_because": ""}
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
    env.update({"PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONUNBUFFERED": "1"})
    env.update(pip_source_env(p["index_url"], p["wheelhouse"]))
    try:
        if os.path.lexists(p["venv_dir"]):
            shutil.rmtree(p["venv_dir"])
        archives = {
            key: locate_archive(p["pins"][key], p["wheelhouse"], p["cache_dir"])[0]
            for key in ("clip", "open_clip")
        }
        source = pip_source_args(p["index_url"], p["wheelhouse"])
        os.makedirs(os.path.dirname(p["log_path"]), exist_ok=True)
        with open(p["log_path"], "w", encoding="utf-8") as log:
            for description, argv, cwd in build_steps(
                python, p["venv_dir"], p["webui_dir"], p["pins"], archives, source
            ):
                run_step(description, argv, cwd, env, log)
            if p["launch"]:
                run_step("finish with the WebUI's own preparation (webui.sh --exit)",
                         ["bash", "webui.sh", "--exit"], p["webui_dir"], env, log)  # fmt: skip
        write_marker(p["venv_dir"], wanted)
    except (VenvError, OSError) as exc:
        module.fail_json(msg=str(exc), log_tail=tail(p["log_path"]))
    module.exit_json(changed=True, **result)


if __name__ == "__main__":
    main()
