#!/usr/bin/python
"""Ansible module: which of the named Debian/Ubuntu packages are installed (read-only)."""

DOCUMENTATION = r"""
module: system_packages_status
short_description: Report which of the named Debian/Ubuntu packages are installed, from dpkg's database
description:
  - Read-only (never changes anything; runs in check mode). Needs no python3-apt.
  - Lets the role install only the missing packages, so a second provision runs no apt at all, and record
    which packages the toolkit newly installed.
  - A named package another dpkg/apt run is installing (any state but installed or not installed) is
    waited for up to I(wait_seconds), so that it is never taken as missing and recorded as the toolkit's.
options:
  names: {description: Package names., type: list, elements: str, required: true}
  wait_seconds: {description: How long to wait for another dpkg/apt run's packages., type: int, default: 600}
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
from ansible.module_utils.system_package_status import PackagesBusy, package_status


def main():
    module = AnsibleModule(
        argument_spec={
            "names": {"type": "list", "elements": "str", "required": True},
            "wait_seconds": {"type": "int", "default": 600},
        },
        supports_check_mode=True,
    )
    try:
        installed, missing = package_status(
            module.run_command, module.params["names"], wait_seconds=module.params["wait_seconds"]
        )
    except PackagesBusy as exc:
        module.fail_json(msg=f"{exc}.")
    except OSError as exc:
        module.fail_json(msg=f"Cannot read the installed packages: {exc}.")
    module.exit_json(changed=False, installed=installed, missing=missing)


if __name__ == "__main__":
    main()
