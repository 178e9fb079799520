#!/usr/bin/python
"""Ansible module: uv, the venv's installer, from the lock's pinned wheel into the toolkit's tools directory."""

DOCUMENTATION = r"""
module: uv_tool
short_description: Install the pinned uv binary into the toolkit's tools directory
description:
  - Takes the wheel lock.yml pins for this platform from the bundle's tools directory or the package index,
    checks its sha256 and keeps only the uv executable (C(<tools_dir>/uv-<version>/uv), mode 0755).
  - A marker records the wheel's sha256 and the binary's size and mtime; while they hold nothing is read.
options:
  tools_dir: {description: The toolkit's tools directory., type: path, required: true}
  version: {description: uv's version., type: str, required: true}
  wheel: {description: "The wheel for this platform {file, sha256}.", type: dict, required: true}
  local_dir: {description: "A directory holding the wheel (a bundle's tools/, a wheelhouse): no network when set.",
    type: path, default: ""}
  index_url: {description: A package index instead of PyPI., type: str, default: ""}
"""

EXAMPLES = r"""
- name: uv
  uv_tool:
    tools_dir: /var/lib/sdenv/tools
    version: 0.13.8
    wheel: {file: uv-0.13.8-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl, sha256: e18a57b8...}
"""

RETURN = r"""
path: {description: The uv executable., type: str, returned: always}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.uv_install import UvInstallError, binary_path, install, is_current


def main():
    module = AnsibleModule(
        argument_spec={
            "tools_dir": {"type": "path", "required": True},
            "version": {"type": "str", "required": True},
            "wheel": {"type": "dict", "required": True},
            "local_dir": {"type": "path", "default": ""},
            "index_url": {"type": "str", "default": ""},
        },
        supports_check_mode=True,
    )
    p = module.params
    path = binary_path(p["tools_dir"], p["version"])
    if is_current(p["tools_dir"], p["version"], p["wheel"]["sha256"]):
        module.exit_json(changed=False, path=path)
    if module.check_mode:
        module.exit_json(changed=True, path=path)
    try:
        install(p["tools_dir"], p["version"], p["wheel"], p["local_dir"], p["index_url"])
    except (UvInstallError, OSError) as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=True, path=path)


if __name__ == "__main__":
    main()
