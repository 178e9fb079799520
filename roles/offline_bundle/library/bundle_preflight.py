#!/usr/bin/python
"""Ansible module: can this host be provisioned from the bundle, with no network? (Before anything changes.)"""

DOCUMENTATION = r"""
module: bundle_preflight
short_description: Name, in one sentence each, what stops a provision from an offline bundle on this host
description:
  - Checks the bundle is a finished one (manifest, SHA256SUMS), for this host's platform, readable by the dummy
    user, carries a venv for a Python the host has and every enabled model; and names what no bundle carries
    that the host lacks (Debian packages; on macOS Homebrew, its formulae, python@3.10).
  - Changes nothing. Run it as root on the host, first thing in the provision.
options:
  bundle: {description: The bundle directory on this host., type: path, required: true}
  platform: {description: "This host's <system>-<machine>.", type: str, required: true}
  pythons: {description: Interpreters the python role may choose, in its order., type: list, elements: str,
    required: true}
  models: {description: The enabled model entries of the lock., type: list, elements: dict, default: []}
  packages: {description: Debian packages provision installs (Linux)., type: list, elements: str, default: []}
  homebrew_prefix: {description: Homebrew's prefix (macOS)., type: str, default: ""}
  formulae: {description: The formulae provision installs (macOS)., type: list, elements: str, default: []}
  locks: {description: "{file name: sha256} of the controller's venv locks for this platform (ComfyUI's as
    comfyui/<name>).", type: dict, default: {}}
  comfyui_commit: {description: "The ComfyUI commit lock.yml pins when comfyui is in sdenv_apps; empty otherwise.",
    type: str, default: ""}
"""

EXAMPLES = r"""
- name: The bundle can serve this host
  bundle_preflight:
    bundle: /srv/sdenv-bundle
    platform: Linux-x86_64
    pythons: [python3.10, /usr/bin/python3.11]
"""

RETURN = r"""
manifest: {description: The bundle's manifest (without its file lists)., type: dict, returned: success}
"""

import os
import shutil
import subprocess

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.bundle_layout import preflight_problems, read_manifest
from ansible.module_utils.system_package_status import package_status


def python_versions(candidates):
    versions = []
    for candidate in candidates:
        path = candidate if os.path.isabs(candidate) else shutil.which(candidate)
        if not path or not os.access(path, os.X_OK):
            continue
        completed = subprocess.run([path, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                                   capture_output=True, text=True, check=False)  # fmt: skip
        if completed.returncode == 0:
            versions.append(completed.stdout.strip())
    return versions


def main():
    module = AnsibleModule(
        argument_spec={
            "bundle": {"type": "path", "required": True},
            "platform": {"type": "str", "required": True},
            "pythons": {"type": "list", "elements": "str", "required": True},
            "models": {"type": "list", "elements": "dict", "default": []},
            "packages": {"type": "list", "elements": "str", "default": []},
            "homebrew_prefix": {"type": "str", "default": ""},
            "formulae": {"type": "list", "elements": "str", "default": []},
            "locks": {"type": "dict", "default": {}},
            "comfyui_commit": {"type": "str", "default": ""},
        },
        supports_check_mode=True,
    )
    p = module.params
    system = p["platform"].split("-", 1)[0]
    missing = []
    if system == "Darwin":
        prefix = p["homebrew_prefix"]
        if not os.path.exists(os.path.join(prefix, "bin", "brew")):
            missing.append(f"Homebrew ({prefix})")
        missing += [
            f"the formula {f}" for f in p["formulae"] if not os.path.exists(os.path.join(prefix, "opt", f))
        ]
    elif p["packages"]:
        try:
            _, absent = package_status(module.run_command, p["packages"])
        except OSError as exc:
            module.fail_json(msg=str(exc))
        missing += [f"the package {name}" for name in absent]
    versions = python_versions(p["pythons"])
    if not versions and system != "Darwin":
        missing.append(f"a Python the WebUI can use ({', '.join(p['pythons'])})")
    problems = preflight_problems(
        p["bundle"], p["platform"], versions, p["models"], missing, system, p["locks"], p["comfyui_commit"]
    )
    if problems:
        module.fail_json(msg=" ".join(problems), problems=problems)
    manifest = read_manifest(p["bundle"])
    module.exit_json(
        changed=False, manifest={k: manifest[k] for k in ("platform", "created", "locks", "built")}
    )


if __name__ == "__main__":
    main()
