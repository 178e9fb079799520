#!/usr/bin/python
"""Ansible module: which of the named Debian/Ubuntu packages are installed (read-only)."""

DOCUMENTATION = r"""
module: system_packages_status
short_description: Report which of the named Debian/Ubuntu packages are installed, from dpkg's database
description:
  - Read-only (never changes anything; runs in check mode). Needs no python3-apt.
  - Lets the role install only the missing packages, so a second provision runs no apt at all, and record
    which packages the toolkit newly installed.
options:
  names: {description: Package names., type: list, elements: str, required: true}
"""

EXAMPLES = r"""
- name: Read which packages are installed
  system_packages_status:
    names: [cmake, protobuf-compiler]
  register: status
"""

RETURN = r"""
installed: {description: "{name: version} of the installed ones.", type: dict, returned: success}
missing: {description: The names not installed, in the order given., type: list, returned: success}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.system_package_status import package_status


def main():
    module = AnsibleModule(
        argument_spec={"names": {"type": "list", "elements": "str", "required": True}},
        supports_check_mode=True,
    )
    try:
        installed, missing = package_status(module.run_command, module.params["names"])
    except OSError as exc:
        module.fail_json(msg=f"Cannot read the installed packages: {exc}.")
    module.exit_json(changed=False, installed=installed, missing=missing)


if __name__ == "__main__":
    main()
