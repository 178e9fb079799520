#!/usr/bin/python
"""Ansible module: installed and candidate versions of Debian/Ubuntu packages (read-only)."""

DOCUMENTATION = r"""
module: apt_candidates
short_description: Report the installed and candidate versions of the named packages (apt-cache policy)
description:
  - Read-only. Tells whether the distribution offers a package at all (C(python3.10) on Ubuntu 22.04 yes,
    on Debian 12 no), matching package names exactly (apt's regular-expression fallback is ignored).
options:
  names: {description: Package names., type: list, elements: str, required: true}
"""

EXAMPLES = r"""
- name: Does the distribution have python3.10?
  apt_candidates:
    names: [python3.10, python3.10-venv]
  register: offered
"""

RETURN = r"""
packages: {description: "{name: {installed: version|null, candidate: version|null}}.", type: dict, returned: success}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.python_resolution import ResolutionError, apt_status


def main():
    module = AnsibleModule(
        argument_spec={"names": {"type": "list", "elements": "str", "required": True}},
        supports_check_mode=True,
    )
    try:
        packages = apt_status(module.run_command, module.params["names"])
    except ResolutionError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=False, packages=packages)


if __name__ == "__main__":
    main()
